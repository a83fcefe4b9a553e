"""The cached scan of a class-folder tree: which files are images of which class, so a second run skips the walk.

The cache sits beside the tree (``.keras_insightface_scan.npz``) when it is writable, else under the user cache
dir. A cache is data from disk like any other: one planted in a dataset folder could list files outside the tree.
So each cache is signed with this user's key (``signing``), and every entry is checked to be ``<class>/<file>``
of a class of the tree with that class's label. A cache failing either check is ignored with a warning naming it, and the tree is scanned again.

Example:
    >>> import numpy as np
    >>> root = getfixture("tmp_path")
    >>> save_scan(root, "key", ["a/1.jpg"], np.array([0]), [])
    >>> load_scan(root, "key", ["a"])
    (['a/1.jpg'], array([0]), [])
"""

import hashlib
import warnings
import zipfile
from pathlib import Path

import numpy as np

from keras_insightface.atomic import atomic_path
from keras_insightface.data.signing import cache_home, sign, signed
from keras_insightface.errors import DataError

SCAN_CACHE_NAME = ".keras_insightface_scan.npz"


def _signed_parts(key, files, labels, ignored):
    return key, "\0".join(files), np.asarray(labels, np.int64).tobytes(), "\0".join(ignored)


def cache_paths(root):
    """Where the scan of ``root`` is cached: beside it when writable, else under the user cache dir."""
    root = Path(root)
    elsewhere = cache_home() / "scans" / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".npz")
    return [root / SCAN_CACHE_NAME, elsewhere]


def _valid_entries(files, labels, classes):
    """Every file is ``<class>/<name>`` of a class of the tree, with that class's label."""
    index = {name: label for label, name in enumerate(classes)}
    for entry, label in zip(files, labels.tolist()):
        folder, _, name = entry.partition("/")
        if index.get(folder) != label or not name or "/" in name or name in (".", ".."):
            return False
    return len(files) == len(labels)


def load_scan(root, key, classes):
    """``(files, labels, ignored)`` of the cached scan of ``root`` made for ``key``, or None. A cache that is not
    signed by this user or lists entries outside ``classes`` is reported and skipped."""
    for path in cache_paths(root):
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["key"]) != key:
                    continue
                files, labels = cached["files"].astype(str).tolist(), cached["labels"].astype(np.int64)
                ignored, mac = cached["ignored"].astype(str).tolist(), str(cached["mac"]) if "mac" in cached else ""
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # none, old or damaged: scanned again
            continue
        is_signed = signed(mac, *_signed_parts(key, files, labels, ignored))
        if is_signed and _valid_entries(files, labels, classes):
            return files, labels, ignored
        why = "it lists files outside the class folders" if is_signed else "it is not signed by this user"
        warnings.warn(f"{path}: scan cache ignored ({why}); the tree is scanned again", stacklevel=3)
    return None


def save_scan(root, key, files, labels, ignored):
    """Write the signed scan beside ``root``, or under the user cache dir when that fails; silent when neither
    can be written (the next run scans again)."""
    mac = sign(*_signed_parts(key, files, labels, ignored))
    if not mac:
        return
    for path in cache_paths(root):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                np.savez(tmp, key=key, files=np.asarray(files, dtype=str), labels=labels,
                         ignored=np.asarray(ignored, dtype=str), mac=np.asarray(mac))
            return
        except (OSError, DataError):  # not writable here: the next place
            continue
