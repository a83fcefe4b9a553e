"""The insightface dataset layout in RecordIO: ``train.rec`` / ``train.idx`` / ``property`` as ``InsightfaceRec``
(random access ``i -> (jpeg bytes, label)``) and ``write_insightface_rec``.

Record 0's header holds ``[images + 1, images + 1 + classes)``: the keys of one record per class with its
``[start, end)`` image keys; images are keys ``1..images``, grouped by class. ``property`` is ``classes,h,w``.
Our packs may add ``classes.txt`` (line ``i``: the name of class ``i``, UTF-8), which insightface's readers
ignore: ``folders2rec`` writes the class folder names there and ``rec2folders`` names the folders back from it.

Example:
    >>> from keras_insightface.data.insightface_rec import InsightfaceRec
    >>> ds = InsightfaceRec("datasets/faces_emore")    # doctest: +SKIP
    >>> jpeg_bytes, label = ds[0]                       # doctest: +SKIP
"""

import collections
import contextlib
import functools
import warnings
from pathlib import Path

import numpy as np

from keras_insightface.atomic import atomic_path
from keras_insightface.data.progress import progress_bar
from keras_insightface.data.recordio import (
    FLOAT32_EXACT, IR_HEADER, RECORD_HEADER, RecordReader, RecordWriter, pack_header, unpack,
)
from keras_insightface.errors import DataError, DatasetError


def read_property(path):
    """Read ``num_classes,height,width`` from a ``property`` file (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "property"
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise DataError(f"{path}: property file missing") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: property file is not ASCII text") from None
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise DataError(f"{path}: property is {text!r}, expected 'num_classes,height,width'")
    num_classes, height, width = (int(f) for f in fields)
    return num_classes, height, width


def write_property(path, num_classes, h, w):
    """Write ``num_classes,height,width`` to a ``property`` file (or into a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "property"
    path.write_text(f"{int(num_classes)},{int(h)},{int(w)}\n", encoding="ascii")


CLASS_NAMES_FILE = "classes.txt"
_NOT_IN_NAMES = ("/", "\\", "\0", "\n", "\r")


def check_class_names(names, where):
    """``names`` as a list of strings, each usable as a folder name (not empty, ``.`` or ``..``, no path separator,
    NUL or line break) and unique; ``where`` names the source in errors."""
    names = [str(name) for name in names]
    for i, name in enumerate(names):
        if name in ("", ".", "..") or any(c in name for c in _NOT_IN_NAMES):
            raise DataError(f"{where}: class {i} has the name {name!r}, which cannot be a folder name")
    twice = [name for name, count in collections.Counter(names).items() if count > 1]
    if twice:
        raise DataError(f"{where}: the class name {twice[0]!r} is given to more than one class")
    return names


def read_class_names(rec_dir, num_classes):
    """Class names from ``classes.txt`` beside ``train.rec`` (a folder, or the ``.rec`` file's folder), checked to
    name ``num_classes`` classes; ``None`` when the pack has no such file (insightface's packs)."""
    rec_dir = Path(rec_dir)
    path = (rec_dir if rec_dir.is_dir() else rec_dir.parent) / CLASS_NAMES_FILE
    try:
        names = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise DataError(f"{path}: class names file is not UTF-8 text") from None
    if names and names[-1] == "":
        names.pop()
    if len(names) != num_classes:
        raise DataError(f"{path}: {len(names)} class names for {num_classes} classes, expected one line per class")
    return check_class_names(names, path)


def _write_class_names(path, names):
    Path(path).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def _label_error(rec_path, index, label, num_classes):
    return DataError(f"{rec_path}: sample {index} has label {label}, expected 0..{num_classes - 1}")


def _by_label(samples, rec_path, num_classes):
    """A sequence's samples grouped by label (stable), read one at a time; labels are checked up front."""
    labels = getattr(samples, "labels", None)
    labels = np.array([int(label) for _, label in samples] if labels is None else labels, dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise _label_error(rec_path, int(bad[0]), int(labels[bad[0]]), num_classes)
    if labels.size + 1 + num_classes > FLOAT32_EXACT:
        raise DataError(f"{rec_path}: {labels.size} images + {num_classes} classes exceed float32-exact header keys")
    for i in np.argsort(labels, kind="stable").tolist():
        item = samples[i]
        if item is None:  # left out by the sequence (folders2rec --skip-bad)
            continue
        data, label = item
        if int(label) != labels[i]:
            raise DataError(f"{rec_path}: sample {i} has label {label} but the sample labels say {labels[i]}")
        yield data, label


def write_insightface_rec(out_dir, samples, num_classes, image_size=(112, 112), progress=False, class_names=None,
                          before_commit=None):
    """Write ``train.rec``/``train.idx``/``property`` in the insightface layout (header, images, identities).

    ``samples`` yields ``(image_bytes, label)``; bytes are stored as given (JPEG, PNG: no re-encoding). A
    sequence (``len`` and indexing: a list, a source) is written grouped by label through random access, one
    image in memory at a time, its labels taken from its ``labels`` array when it has one; an item that is
    ``None`` is left out. Any other iterable is streamed in its own order and must hold each class in one
    contiguous run. ``progress`` shows a progress line on stderr. ``class_names`` (one per class) go to
    ``classes.txt``; without them a ``classes.txt`` left from an earlier pack is removed, so it cannot name
    other classes. ``before_commit()`` runs once every record is written, before the files take their names: an
    error it raises leaves no new file behind.

    Example:
        >>> write_insightface_rec("out", [(jpeg_bytes, 0), (jpeg_bytes, 1)], num_classes=2)  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    rec_path = out_dir / "train.rec"
    num_classes = int(num_classes)
    if class_names is not None:
        class_names = check_class_names(class_names, out_dir / CLASS_NAMES_FILE)
        if len(class_names) != num_classes:
            raise DataError(f"{out_dir / CLASS_NAMES_FILE}: {len(class_names)} class names for {num_classes} classes")
    if hasattr(samples, "__len__") and hasattr(samples, "__getitem__"):
        total, items = len(samples), _by_label(samples, rec_path, num_classes)
    else:
        total, items = None, iter(samples)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as temps:  # written under temporary names, renamed once complete
        tmp_rec, tmp_idx, tmp_property = (temps.enter_context(atomic_path(out_dir / name, "write the dataset"))
                                          for name in ("train.rec", "train.idx", "property"))
        _write_records(tmp_rec, tmp_idx, rec_path, total, items, num_classes, progress)
        write_property(tmp_property, num_classes, image_size[0], image_size[1])
        if class_names is not None:
            _write_class_names(temps.enter_context(atomic_path(out_dir / CLASS_NAMES_FILE, "write the dataset")),
                               class_names)
        if before_commit is not None:
            before_commit()
    if class_names is None:
        (out_dir / CLASS_NAMES_FILE).unlink(missing_ok=True)


def _write_records(tmp_rec, tmp_idx, rec_path, total, items, num_classes, progress):
    """The records of ``items`` then the header and identity records, to ``tmp_rec``/``tmp_idx``."""
    starts = np.zeros(num_classes, dtype=np.int64)
    counts = np.zeros(num_classes, dtype=np.int64)
    key, previous = 1, None
    bar = progress_bar(total, f"writing {rec_path}") if progress else contextlib.nullcontext(lambda n=1: None)
    with RecordWriter(tmp_rec, tmp_idx) as writer, bar as advance:
        writer.write(0, pack_header([0, 0]))  # placeholder of the same size, patched once the counts are known
        for data, label in items:
            label = int(label)
            if not 0 <= label < num_classes:
                raise _label_error(rec_path, key - 1, label, num_classes)
            if label != previous:
                if counts[label]:
                    raise DataError(
                        f"{rec_path}: sample {key - 1} has label {label} again after other labels; "
                        "a streamed iterable must hold each class in one contiguous run"
                    )
                starts[label], previous = key, label
            if key + 1 + num_classes > FLOAT32_EXACT:
                raise DataError(f"{rec_path}: {key} images + {num_classes} classes exceed float32-exact header keys")
            writer.write(key, pack_header(float(label), id=key) + bytes(data))
            counts[label] += 1
            key += 1
            advance()
        num_images = key - 1
        empty = counts == 0
        starts[empty] = (1 + np.cumsum(counts) - counts)[empty]
        for c in range(num_classes):
            writer.write(num_images + 1 + c, pack_header([starts[c], starts[c] + counts[c]]))
    with open(tmp_rec, "r+b") as f:
        f.seek(RECORD_HEADER.size)
        f.write(pack_header([num_images + 1, num_images + 1 + num_classes]))


def _class_of(label, where):
    """Integer class from a scalar label or the first element of a label array."""
    value = float(label) if np.ndim(label) == 0 else float(label[0])
    if not value.is_integer():
        raise DataError(f"{where}: label {value} is not an integer class id")
    return int(value)


class InsightfaceRec:
    """An insightface ``train.rec`` as a sequence of ``(jpeg_bytes, label)``; also reads header-less files.

    Pickles as paths and sizes only (it is sent to grain workers); the key and label arrays are not copied.

    Example:
        >>> ds = InsightfaceRec("datasets/faces_emore")    # doctest: +SKIP
        >>> len(ds), ds.num_classes                         # doctest: +SKIP
        (5822653, 85742)
    """

    def __init__(self, rec_dir_or_rec_path):
        path = Path(rec_dir_or_rec_path)
        if path.is_dir():
            rec_path = path / "train.rec"
            if not rec_path.is_file():
                raise DataError(f"{path}: folder has no train.rec")
        elif path.is_file():
            rec_path = path
        else:
            raise DataError(f"{path}: no such record file or folder")
        self.rec_path = self.name = str(rec_path)
        self.reader = RecordReader(rec_path, rec_path.with_suffix(".idx"))
        property_path = rec_path.parent / "property"
        self.property = read_property(property_path) if property_path.is_file() else None
        header = self._header()
        if header is None:
            self._image_keys = self.reader.sorted_keys
            self.has_header = False
            header_classes = None
        else:
            first_identity, end_identity = header
            self._image_keys = np.arange(1, first_identity, dtype=np.int64)
            self.has_header = True
            header_classes = end_identity - first_identity
            indexed = np.isin(self._image_keys, self.reader.sorted_keys)
            if not indexed.all():
                key = int(self._image_keys[np.argmin(indexed)])
                raise DataError(
                    f"{self.rec_path}: header says images are keys 1..{first_identity - 1} "
                    f"but key {key} is not in the index"
                )
        self.num_images = int(self._image_keys.size)
        self.checks_ids = self._ids_track_keys()
        if self.property is not None and header_classes is not None and self.property[0] != header_classes:
            raise DataError(
                f"{property_path}: num_classes {self.property[0]} "
                f"but the header record holds {header_classes} identities"
            )
        if header_classes is not None:
            self.num_classes = header_classes
            return
        labels = self._read_labels()
        if self.property is not None:
            self.num_classes = self.property[0]
        else:
            self.num_classes = int(labels.max()) + 1 if labels.size else 0
        self._check_range(labels)
        self._check_class_count(labels, property_path)
        self.__dict__["labels"] = labels

    def _check_class_count(self, labels, property_path):
        """A header-less file's classes are ``property``'s count, or max label + 1: every class needs images, so a
        stray label (99 among 0..9) cannot silently make a 100-class head."""
        present = np.unique(labels)
        if present.size == self.num_classes:
            return
        empty = np.setdiff1d(np.arange(self.num_classes), present)
        source = f"{property_path} says {self.num_classes}" if self.property is not None else \
            f"the largest label is {self.num_classes - 1}, so {self.num_classes} are counted"
        raise DataError(
            f"{self.rec_path}: the images hold {present.size} distinct labels but {source} classes; "
            f"{empty.size} classes have no image (first: {int(empty[0])}); renumber the labels 0..C-1 or fix the "
            "property file"
        )

    def _ids_track_keys(self, samples=8):
        """Whether image records store their own key as the header id (insightface's writers and ours do; two
        of the first images matching is no chance): then every read checks it, so a stale ``.idx`` (records
        moved) is detected, not silently misread."""
        keys = self._image_keys[: min(samples, self.num_images)].tolist()
        heads = [self.reader.read_head(key, IR_HEADER.size) for key in keys]
        ids = [IR_HEADER.unpack(head)[2] if len(head) == IR_HEADER.size else -1 for head in heads]
        return bool(keys) and sum(i == k for i, k in zip(ids, keys)) >= min(2, len(keys))

    def _header(self):
        """Return (first identity key, end key) from record 0, or None when there is no header record."""
        if 0 not in self.reader:
            return None
        flag, label, _, _, payload = self._unpack(0, self.reader.read(0))
        if flag != 2 or payload:
            return None
        first, end = (_class_of(v, f"{self.rec_path}: key 0") for v in label)
        if end > FLOAT32_EXACT:
            warnings.warn(
                f"{self.rec_path}: key 0: header labels [{first}, {end}] pass 2**24, where float32 labels lose "
                "exactness: image and identity keys past 2**24 may be wrong",
                stacklevel=3,
            )
        if first < 1 or end < first:
            raise DataError(f"{self.rec_path}: key 0: header labels [{first}, {end}] are not a valid layout")
        if first > len(self.reader):
            raise DataError(
                f"{self.rec_path}: key 0: header says there are {first - 1} images "
                f"but the index holds only {len(self.reader)} records"
            )
        return first, end

    def _unpack(self, key, record):
        try:
            return unpack(record)
        except DataError as error:
            raise DataError(f"{self.rec_path}: key {key}: {error}") from None

    def _read_labels(self):
        """Class of every image, from the record headers only (the image bytes are not read)."""
        out = np.empty(self.num_images, dtype=np.int64)
        for i, key in enumerate(self._image_keys.tolist()):
            head = self.reader.read_head(key, IR_HEADER.size)
            flag = IR_HEADER.unpack(head)[0] if len(head) == IR_HEADER.size else 0
            if flag > 0:
                head = self.reader.read_head(key, IR_HEADER.size + 4 * flag)
            _, label, _, _, _ = self._unpack(key, head)
            out[i] = _class_of(label, f"{self.rec_path}: key {key}")
        return out

    @functools.cached_property
    def labels(self):
        """Labels of all images (np.int64, in image order), read once from the record headers."""
        labels = self._read_labels()
        self._check_range(labels)
        return labels

    def _check_range(self, labels):
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{self.rec_path}: image {i} (key {int(self._image_keys[i])}) has label {int(labels[i])}, "
                f"expected 0..{self.num_classes - 1}"
            )

    def _check_labels(self):
        self._check_range(self.labels)

    def __len__(self):
        return self.num_images

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("labels", None)
        state.pop("_image_keys")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.has_header:
            self._image_keys = np.arange(1, self.num_images + 1, dtype=np.int64)
        else:
            self._image_keys = self.reader.sorted_keys

    def __getitem__(self, i):
        """Return ``(jpeg_bytes, label)`` of image ``i`` (record key ``i + 1`` with a header)."""
        i = int(i)
        if i < 0:
            i += self.num_images
        if not 0 <= i < self.num_images:
            raise IndexError(f"{self.rec_path}: image index {i} out of range 0..{self.num_images - 1}")
        key = int(self._image_keys[i])
        _, label, record_id, _, payload = self._unpack(key, self.reader.read(key))
        if self.checks_ids and record_id != key:
            raise DatasetError(
                f"{self.rec_path}: index key {key} points at the record of image {record_id}: "
                f"{self.reader.idx_path or 'the index'} does not match the .rec (stale or from another file); "
                "rebuild it (remove the .idx: it is rebuilt by scanning the .rec)"
            )
        label = _class_of(label, f"{self.rec_path}: key {key}")
        if not 0 <= label < self.num_classes:
            raise DataError(f"{self.rec_path}: key {key} has label {label}, expected 0..{self.num_classes - 1}")
        return payload, label
