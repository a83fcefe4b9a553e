"""Atomic file writes: every output (models, histories, configs, plots, caches, packs) is written to a hidden
temporary file in the same folder and renamed over the target, so a crash or a full disk never leaves a half
file under the real name: the previous file stays, and the error names the file and why.

Example:
    >>> path = getfixture("tmp_path") / "hist.json"
    >>> write_json_atomic(path, {"loss": [1.5]})
    >>> path.read_text()
    '{\\n "loss": [\\n  1.5\\n ]\\n}'
    >>> with atomic_path(path) as tmp:
    ...     raise OSError(28, "No space left on device")
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: ...hist.json: cannot write (No space left on device); the previous file is kept
"""

import contextlib
import json
import os

from keras_insightface.errors import DataError


@contextlib.contextmanager
def atomic_path(path, what="write"):
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by it still do); on
    success it replaces ``path``, on any error it is removed and an ``OSError`` becomes a ``DataError``."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    stem, suffix = os.path.splitext(name)
    tmp = os.path.join(directory, f".{stem}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        raise DataError(f"{path}: cannot {what} ({error.strerror or error}); the previous file is kept") from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json_atomic(path, data, indent=1):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=indent)


def savefig_atomic(fig, path, **kwargs):
    """``fig.savefig(path)`` through a temporary file (the format from ``path``'s suffix)."""
    with atomic_path(path, "save the plot") as tmp:
        fig.savefig(tmp, format=kwargs.pop("format", None) or os.path.splitext(os.fspath(path))[1][1:] or None,
                    **kwargs)
