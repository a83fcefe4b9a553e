"""Random-access training sources: ``i -> (encoded image bytes, int label)``.

``open_source(path)`` picks the reader from what is at ``path``:
    - a folder holding ``train.rec`` (or a ``.rec`` file): insightface RecordIO,
    - a folder of class subfolders ``root/<class>/*.jpg|png``,
    - a list file of ``image_path<TAB>label`` lines (paths relative to the list file's folder).
Every problem is a ``DataError`` naming the path, raised before training starts.

Example:
    >>> from keras_insightface.data.sources import open_source
    >>> source = open_source("datasets/faces_emore")          # doctest: +SKIP
    >>> image_bytes, label = source[0]                         # doctest: +SKIP
"""

import os
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class FileListSource:
    """Images listed as files with integer labels; reads bytes on access (picklable for workers)."""

    def __init__(self, paths, labels, name):
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.name = name

    def __len__(self):
        return len(self.paths)

    def describe(self, index):
        return self.paths[index]

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                return f.read(), int(self.labels[index])
        except OSError as error:
            raise DataError(f"{path}: cannot read image ({error.strerror})") from None


def _class_sort_key(name):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def folder_source(root):
    """``root/<class>/<image>``; classes numbered in numeric order when all names are numbers, else by name."""
    root = Path(root)
    classes = sorted((d.name for d in os.scandir(root) if d.is_dir()), key=_class_sort_key)
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected root/<class>/*.jpg, a train.rec or a list file)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            e.path for e in os.scandir(root / name) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{root}: {len(classes)} class subfolders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FileListSource(paths, labels, root.name)


def list_source(list_path):
    """A text file of ``path<TAB>label`` lines (also space-separated); relative paths are under its folder."""
    list_path = Path(list_path)
    base = list_path.parent
    paths, labels = [], []
    with open(list_path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").rsplit("\t", 1) if "\t" in line else line.split()
            if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit():
                raise DataError(f"{list_path}:{line_no}: expected 'image_path<TAB>label', got {line.strip()!r}")
            label = int(parts[1])
            if label < 0:
                raise DataError(f"{list_path}:{line_no}: negative label {label}")
            paths.append(base / parts[0].strip())
            labels.append(label)
    if not paths:
        raise DataError(f"{list_path}: list file holds no images")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{list_path}: {len(missing)} listed images are missing, first: {missing[0]}")
    return FileListSource(paths, labels, list_path.stem)


def open_source(path):
    """The training source at ``path`` (RecordIO folder or file, class folders, or list file)."""
    from keras_insightface.data.recordio import InsightfaceRec

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset path does not exist")
    if path.is_dir() and (path / "train.rec").exists() or path.suffix == ".rec":
        return InsightfaceRec(path)
    if path.is_dir():
        return folder_source(path)
    return list_source(path)
