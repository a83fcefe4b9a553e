"""Paths written inside data files stay inside the folder they belong to.

A list file, an npz list, a scan cache or IJB meta file names images by path. Read as given, ``../`` or an
absolute path in such a file reads any file the user can read (and ``convert`` would copy it into a new
dataset), so every such entry must stay, after normalising, under its folder: the list file's folder, the npz
list's folder, the IJB image folder. Lists that legitimately point elsewhere (the seed's npz lists hold absolute
paths) are read with ``allow_outside=True`` (``allow_outside_paths``, ``--allow-outside-paths``).

Symlinks inside the folder are followed: they are part of the tree the user pointed at, not text in a file.

Example:
    >>> confined("data", "a/1.jpg", "list.txt:1").as_posix()
    'data/a/1.jpg'
    >>> confined("data", "../secret.txt", "list.txt:2")
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: list.txt:2: '../secret.txt' points outside data; entries must stay inside \
the list's folder (allow_outside_paths=True, --allow-outside-paths, reads lists that point elsewhere)
"""

import os
from pathlib import Path

from keras_insightface.errors import DataError

ALLOW_HINT = "allow_outside_paths=True, --allow-outside-paths, reads lists that point elsewhere"


def escapes(entry):
    """Whether the path text ``entry`` leaves its folder: absolute, or ``..`` above it once normalised."""
    text = str(entry)
    if os.path.isabs(text) or text.startswith(("\\", "~")) or (len(text) > 1 and text[1] == ":"):
        return True
    normal = os.path.normpath(text)
    return normal == ".." or normal.startswith(".." + os.sep)


def confined(base, entry, where, allow_outside=False):
    """``base / entry``, or a ``DataError`` naming ``where`` (file and line or record) when ``entry`` escapes
    ``base`` and ``allow_outside`` is not set. Empty entries and NUL bytes are always errors."""
    text = str(entry)
    if not text.strip() or "\0" in text:
        raise DataError(f"{where}: {text!r} is not a file path")
    if not allow_outside and escapes(text):
        raise DataError(f"{where}: {text!r} points outside {base}; entries must stay inside the list's folder "
                        f"({ALLOW_HINT})")
    return Path(base) / os.path.expanduser(text) if allow_outside else Path(base) / text
