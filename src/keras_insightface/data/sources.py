"""Random-access training sources: ``i -> (encoded image bytes, int label)``.

``open_source(path)`` picks the reader from what is at ``path``:
    - a folder holding ``train.rec`` (or a ``.rec`` file): insightface RecordIO,
    - a folder of class subfolders ``root/<class>/*.jpg|png``,
    - a list file of ``image_path<TAB>label`` lines (paths relative to the list file's folder),
    - an ``.npz`` list with ``image_names`` (or ``rec_path``), ``image_classes`` and optionally ``embeddings``
      (distillation, written by ``keras-insightface distill-data``),
    - a ``.tfrecord`` file or a glob of them (``data/part-*.tfrecord``): the seed's TFRecord layouts, read without
      TensorFlow (``tfrecord``).
``image_per_class`` drops identities with fewer images and renumbers the rest ``0..C-1``.
Every problem is a ``DataError`` naming the path, raised before training starts.

Scanning a class-folder tree is cached (``scan_cache``: signed, its entries checked) and the cache is rebuilt
automatically when the tree changes: its key holds the class names and every class folder's mtime, which change
whenever a file or class is added, removed or renamed. Paths inside list files and npz lists must stay inside
the list's folder unless ``allow_outside`` (``confine``).

Example:
    >>> from keras_insightface.data.sources import open_source
    >>> source = open_source("datasets/faces_emore", image_per_class=4)   # doctest: +SKIP
    >>> image_bytes, label = source[0]                                    # doctest: +SKIP
"""

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from keras_insightface.data.confine import confined
from keras_insightface.data.npz_list import signed_by_user
from keras_insightface.data.scan_cache import load_scan, save_scan
from keras_insightface.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class FileListSource:
    """Images listed as files with integer labels; reads bytes on access (picklable for workers).

    ``embeddings`` (optional, one row per image) are teacher embeddings for distillation.
    """

    def __init__(self, paths, labels, name, embeddings=None):
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.name = name
        self.embeddings = embeddings

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


class SubsetSource:
    """The images ``indices`` of ``source`` with labels renumbered through ``label_map`` (old -> new)."""

    def __init__(self, source, indices, label_map):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.label_map = np.asarray(label_map, dtype=np.int64)
        self.labels = self.label_map[np.asarray(source.labels)[self.indices]]
        self.num_classes = int(self.label_map.max()) + 1 if len(self.indices) else 0
        self.name = getattr(source, "name", type(source).__name__)
        embeddings = getattr(source, "embeddings", None)
        self.embeddings = None if embeddings is None else embeddings[self.indices]

    def __len__(self):
        return len(self.indices)

    def describe(self, index):
        inner = int(self.indices[index])
        describe = getattr(self.source, "describe", None)
        return describe(inner) if describe else f"{self.name} record {inner}"

    def __getitem__(self, index):
        data, _ = self.source[int(self.indices[index])]
        return data, int(self.labels[index])


def filter_image_per_class(source, image_per_class):
    """Keep identities with at least ``image_per_class`` images, renumbered 0..C-1 in their old order."""
    labels = np.asarray(source.labels)
    counts = np.bincount(labels, minlength=source.num_classes)
    keep = counts >= image_per_class
    if not keep.any():
        raise DataError(f"{getattr(source, 'name', 'dataset')}: no identity has {image_per_class} or more images")
    label_map = np.where(keep, np.cumsum(keep) - 1, -1)
    return SubsetSource(source, np.flatnonzero(keep[labels]), label_map)


def _class_sort_key(name):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def _tree_key(root, classes):
    """A digest of the class names and class-folder mtimes: any added/removed/renamed file or class changes it.

    (The root's own mtime is left out: writing the cache beside the classes changes it.)
    """
    digest = hashlib.sha1()
    for name in classes:
        digest.update(f"{name}\0{os.stat(os.path.join(root, name)).st_mtime_ns}\0".encode())
    return digest.hexdigest()


def folder_source(root, strict=False):
    """``root/<class>/<image>``; classes numbered in numeric order when all names are numbers, else by name.

    Files that are not images (by extension) are left out with a warning naming how many and the first;
    with ``strict`` they are an error.
    """
    root = Path(root)
    classes = sorted((d.name for d in os.scandir(root) if d.is_dir()), key=_class_sort_key)
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected root/<class>/*.jpg, a train.rec or a list file)")
    key = _tree_key(root, classes)
    cached = load_scan(root, key, classes)
    if cached is None:
        files, labels, ignored = [], [], []
        for label, name in enumerate(classes):
            entries = sorted(e.name for e in os.scandir(root / name) if e.is_file())
            images = [n for n in entries if n.lower().endswith(IMAGE_EXTENSIONS)]
            ignored += [f"{name}/{n}" for n in entries if not n.lower().endswith(IMAGE_EXTENSIONS)]
            files += [f"{name}/{n}" for n in images]
            labels += [label] * len(images)
        labels = np.asarray(labels, dtype=np.int64)
        save_scan(root, key, files, labels, ignored)
    else:
        files, labels, ignored = cached
    if ignored:
        message = f"{root}: {len(ignored)} files in class folders are not images ({', '.join(IMAGE_EXTENSIONS)}), first: {ignored[0]}"
        if strict:
            raise DataError(message)
        warnings.warn(message + "; they are left out", stacklevel=2)
    if not files:
        raise DataError(f"{root}: {len(classes)} class subfolders but no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FileListSource([root / f for f in files], labels, root.name)


def _check_listed(list_path, paths):
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{list_path}: {len(missing)} listed images are missing, first: {missing[0]}")


def list_source(list_path, allow_outside=False):
    """A text file of ``path<TAB>label`` lines (also space-separated); paths are under its folder (``confine``)."""
    list_path = Path(list_path)
    base = list_path.parent
    paths, labels = [], []
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise DataError(
            f"{list_path}: not a text list file of 'image_path<TAB>label' lines (nor a .rec, .npz or class folder)"
        ) from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").rsplit("\t", 1) if "\t" in line else line.split()
        if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit():
            raise DataError(f"{list_path}:{line_no}: expected 'image_path<TAB>label', got {line.strip()!r}")
        label = int(parts[1])
        if label < 0:
            raise DataError(f"{list_path}:{line_no}: negative label {label}")
        paths.append(confined(base, parts[0].strip(), f"{list_path}:{line_no}", allow_outside))
        labels.append(label)
    if not paths:
        raise DataError(f"{list_path}: list file holds no images")
    _check_listed(list_path, paths)
    return FileListSource(paths, labels, list_path.stem)


def _read_npz(npz_path):
    """Every array of an npz list file (no pickles), as a dict."""
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # missing, text, empty, truncated
        raise DataError(f"{npz_path}: not a readable npz list ({error})") from None


def _rec_label_map(npz_path, record_labels, labels, num_classes):
    """old -> new label array for an npz whose ``image_classes`` renumber the records' labels one to one."""
    pairs = np.unique(np.stack([record_labels, labels], axis=1), axis=0)
    for column, other, what in ((0, 1, "record label"), (1, 0, "image_classes value")):
        values, counts = np.unique(pairs[:, column], return_counts=True)
        if (counts > 1).any():
            value = int(values[np.argmax(counts > 1)])
            seen = pairs[pairs[:, column] == value, other].tolist()
            raise DataError(
                f"{npz_path}: {what} {value} is paired with {seen}; "
                "image_classes must renumber the records' classes one to one"
            )
    label_map = np.full(num_classes, -1, dtype=np.int64)
    label_map[pairs[:, 0]] = pairs[:, 1]
    return label_map


def _npz_rec_source(npz_path, data, labels, embeddings, allow_outside):
    """An npz naming a ``.rec`` (``rec_path``, relative to the npz folder), optionally a subset ``image_indices``."""
    from keras_insightface.data.insightface_rec import InsightfaceRec

    entry = str(data["rec_path"])
    rec_path = Path(os.path.normpath(confined(npz_path.parent, entry, f"{npz_path}: rec_path", allow_outside)))
    try:
        rec = InsightfaceRec(rec_path)
    except DataError as error:
        raise DataError(f"{npz_path}: rec_path {str(data['rec_path'])!r}: {error}") from None
    record_labels = np.asarray(rec.labels)
    if "image_indices" not in data:
        if len(labels) != len(rec):
            raise DataError(
                f"{npz_path}: image_classes holds {len(labels)} labels but {rec.rec_path} has {len(rec)} images"
            )
        wrong = np.flatnonzero(labels != record_labels)
        if wrong.size:
            i = int(wrong[0])
            raise DataError(
                f"{npz_path}: image_classes[{i}] is {labels[i]} "
                f"but {rec.rec_path} image {i} has label {record_labels[i]}"
            )
        rec.embeddings = embeddings
        return rec
    indices = np.asarray(data["image_indices"]).astype(np.int64)
    if indices.shape != labels.shape:
        raise DataError(f"{npz_path}: image_indices and image_classes must be equally long")
    outside = np.flatnonzero((indices < 0) | (indices >= len(rec)))
    if outside.size:
        raise DataError(
            f"{npz_path}: image_indices holds {indices[outside[0]]}, outside 0..{len(rec) - 1} of {rec.rec_path}"
        )
    subset = SubsetSource(rec, indices, _rec_label_map(npz_path, record_labels[indices], labels, rec.num_classes))
    subset.embeddings = embeddings
    return subset


def npz_source(npz_path, allow_outside=False):
    """An npz list: ``image_classes`` with ``image_names`` (paths, relative to the npz folder; the seed's format)
    or ``rec_path`` (a ``.rec``, relative to the npz folder) and optionally ``image_indices`` (which records),
    and optionally ``embeddings`` (one row per image, for distillation)."""
    npz_path = Path(npz_path)
    data = _read_npz(npz_path)
    if "rec_path" in data and "image_names" in data:
        raise DataError(f"{npz_path}: npz list holds both image_names and rec_path; keep one")
    missing = {"rec_path" if "rec_path" in data else "image_names", "image_classes"} - set(data)
    if missing:
        raise DataError(f"{npz_path}: npz list lacks {', '.join(sorted(missing))}")
    classes = data["image_classes"]
    try:
        labels = classes.astype(np.int64)
        embeddings = np.asarray(data["embeddings"], dtype=np.float32) if "embeddings" in data else None
    except (TypeError, ValueError) as error:
        raise DataError(f"{npz_path}: image_classes or embeddings are not numbers ({error})") from None
    fractional = np.flatnonzero(labels != classes) if classes.dtype.kind == "f" else []
    if len(fractional):  # astype truncates: 0.5 would silently become class 0
        i = int(fractional[0])
        raise DataError(f"{npz_path}: image_classes[{i}] is {classes.flat[i]}, not an integer class")
    names = data["image_names"].astype(str) if "image_names" in data else None
    allow_outside = allow_outside or signed_by_user(data)
    if labels.ndim != 1 or (embeddings is not None and embeddings.ndim != 2):
        raise DataError(f"{npz_path}: image_classes must be 1-D and embeddings 2-D (images, dims)")
    count = len(labels)
    lengths = {len(a) for a in (names, embeddings) if a is not None} | {count}
    if count == 0 or len(lengths) > 1:
        first = "image_names, image_classes" if names is not None else "image_classes"
        raise DataError(f"{npz_path}: {first} (and embeddings) must be non-empty and equally long")
    if labels.min() < 0:
        raise DataError(f"{npz_path}: negative label {labels.min()} in image_classes")
    if names is None:
        return _npz_rec_source(npz_path, data, labels, embeddings, allow_outside)
    paths = [confined(npz_path.parent, n, f"{npz_path}: image_names[{i}]", allow_outside) for i, n in enumerate(names)]
    _check_listed(npz_path, paths)
    return FileListSource(paths, labels, npz_path.stem, embeddings)


def open_source(path, image_per_class=0, strict=False, allow_outside=False):
    """The training source at ``path`` (RecordIO, class folders, list file, npz list, TFRecord file or glob).

    ``strict`` turns skippable problems (non-image files in class folders) into errors; ``allow_outside`` lets
    list and npz entries point outside the list's folder (``confine``). A source object is returned as it is.
    """
    from keras_insightface.data.insightface_rec import InsightfaceRec
    from keras_insightface.data.tfrecord import TFRecordSource, is_tfrecord_path

    if not isinstance(path, (str, os.PathLike)):
        return path

    path = Path(path)
    if is_tfrecord_path(path) and not path.is_dir():  # a file, or a glob such as part-*.tfrecord
        source = TFRecordSource(path, allow_outside)
    elif not path.exists():
        raise DataError(f"{path}: dataset path does not exist")
    elif path.is_dir() and (path / "train.rec").exists() or path.suffix == ".rec":
        source = InsightfaceRec(path)
    elif path.is_dir():
        source = folder_source(path, strict)
    elif path.suffix == ".npz":
        source = npz_source(path, allow_outside)
    else:
        source = list_source(path, allow_outside)
    if source.num_classes == 0:
        raise DataError(f"{path}: zero classes")
    return filter_image_per_class(source, image_per_class) if image_per_class > 1 else source
