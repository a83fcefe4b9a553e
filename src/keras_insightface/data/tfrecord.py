"""TFRecord datasets read without TensorFlow: the record framing (``scan_records``, ``read_record``) and
``TFRecordSource``, random access ``i -> (image bytes, label)`` over one ``.tfrecord`` file or a glob of them.

Framing (TensorFlow's record writer): each record is a little-endian uint64 payload length, the masked CRC-32C of
those 8 bytes, the payload, and the masked CRC-32C of the payload (``crc32c``). Both CRCs are checked when the
files are indexed (one sequential pass) and again on every read; a bad CRC or a truncated record is a
``DataError`` naming the file and the record number. The payload is a ``tf.train.Example`` (``example_proto``).

The seed's layouts (feature keys):
    - images: ``image_raw`` (the encoded image) and ``label`` (int64), the data_path ``*.tfrecord`` branch of the
      seed's ``prepare_dataset`` (the Kaggle MS1M-V2 TFRecords).
    - distillation (the seed's ``data_distiller.py``): ``image_names`` (an image *path*, read relative to the
      TFRecord's folder and kept inside it unless ``allow_outside``, as npz lists are), ``image_classes`` (int64)
      and ``embeddings`` (the teacher embedding as raw bytes: float16 when the file's first record says
      ``use_fp16``, else float32; a ``float_list`` is read too). The first record also holds ``classes``,
      ``emb_shape``, ``total`` and ``use_fp16``: ``classes`` sets the class count, ``emb_shape`` must match.

Records are indexed once (file, offset, length per record) when the source is opened, so access is random;
labels and teacher embeddings (``.embeddings``, N x D float32) are read in that pass. Multi-file globs are read
in sorted file order.

Example:
    >>> from keras_insightface.data.tfrecord import TFRecordSource
    >>> source = TFRecordSource("datasets/ms1m/part-*.tfrecord")   # doctest: +SKIP
    >>> image_bytes, label = source[0]                              # doctest: +SKIP
"""

import contextlib
import glob
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from keras_insightface.data.confine import confined
from keras_insightface.data.crc32c import masked_crc32c
from keras_insightface.data.example_proto import parse_example
from keras_insightface.data.progress import progress_bar
from keras_insightface.errors import DataError, DatasetError

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
RECORD_HEAD = struct.Struct("<QI")  # payload length, masked CRC of the length
RECORD_CRC = struct.Struct("<I")
FRAMING = RECORD_HEAD.size + RECORD_CRC.size
IMAGE_BYTES_KEYS = ("image_raw",)
IMAGE_PATH_KEYS = ("image_names",)
LABEL_KEYS = ("label", "image_classes")
EMBEDDING_KEY = "embeddings"
GZIP_MAGIC = b"\x1f\x8b"
PROGRESS_BYTES = 1 << 26  # files above 64 MiB show a progress bar while they are indexed


def is_tfrecord_path(path):
    """Whether ``path`` (a file or a glob pattern) names TFRecord files by its suffix."""
    return str(path).lower().endswith(TFRECORD_SUFFIXES)


def tfrecord_files(pattern):
    """The files of ``pattern``: the file itself, or the sorted matches of a glob (``part-*.tfrecord``)."""
    text = os.fspath(pattern)
    if os.path.isfile(text):
        return [text]
    if not glob.has_magic(text):
        raise DataError(f"{text}: TFRecord file does not exist")
    files = sorted(p for p in glob.glob(text) if os.path.isfile(p))
    if not files:
        raise DataError(f"{text}: no TFRecord file matches the pattern")
    return files


def _where(path, index, offset):
    return f"{path}: record {index} (offset {offset})"


def _check_payload(path, index, offset, payload, stored_crc):
    if masked_crc32c(payload) != stored_crc:
        raise DataError(f"{_where(path, index, offset)}: payload CRC mismatch, the record is corrupt")


def _check_length(path, index, offset, head):
    length, stored_crc = RECORD_HEAD.unpack(head)
    if masked_crc32c(head[:8]) == stored_crc:
        return length
    hint = ("the file is gzip-compressed: decompress it first (gunzip)" if index == 0 and head.startswith(GZIP_MAGIC)
            else "the record is corrupt" if index else "corrupt, or not a TFRecord file")
    raise DataError(f"{_where(path, index, offset)}: length CRC mismatch, {hint}")


def scan_records(path, progress=True):
    """Yield ``(index, offset, payload)`` of every record of ``path`` in order, both CRCs checked."""
    size = os.path.getsize(path)
    offset, index, shown = 0, 0, 0
    quiet = contextlib.nullcontext(lambda n=1: None)
    bar = progress_bar(size, f"indexing {path}") if progress and size > PROGRESS_BYTES else quiet
    with open(path, "rb", buffering=1 << 20) as f, bar as advance:
        while offset < size:
            head = f.read(RECORD_HEAD.size)
            if len(head) < RECORD_HEAD.size:
                raise DataError(f"{_where(path, index, offset)}: truncated record header "
                                f"({len(head)} of {RECORD_HEAD.size} bytes before the end of the file)")
            length = _check_length(path, index, offset, head)
            end = offset + FRAMING + length
            if end > size:
                raise DataError(f"{_where(path, index, offset)}: truncated record: it needs {FRAMING + length} "
                                f"bytes but the file ends at byte {size}")
            payload = f.read(length)
            _check_payload(path, index, offset, payload, RECORD_CRC.unpack(f.read(RECORD_CRC.size))[0])
            yield index, offset, payload
            offset, index = end, index + 1
            if index % 4096 == 0 or offset == size:
                advance(offset - shown)
                shown = offset


def read_record(fd, path, index, offset, length):
    """The payload of record ``index`` at ``offset`` of the open file ``fd``, ``length`` bytes as indexed; CRCs
    checked. A record of another length is a ``DatasetError``: the file changed since it was indexed."""
    data = _pread(fd, FRAMING + length, offset)
    if len(data) < RECORD_HEAD.size:
        raise DatasetError(f"{_where(path, index, offset)}: the file ends before this record: it changed since it "
                           "was indexed; open the dataset again")
    stored_length = _check_length(path, index, offset, data[:RECORD_HEAD.size])
    if stored_length != length or len(data) < FRAMING + length:
        raise DatasetError(f"{_where(path, index, offset)}: the record is not the one indexed (length "
                           f"{stored_length}, indexed {length}): the file changed since it was indexed; open the "
                           "dataset again")
    payload = data[RECORD_HEAD.size:RECORD_HEAD.size + length]
    _check_payload(path, index, offset, payload, RECORD_CRC.unpack_from(data, RECORD_HEAD.size + length)[0])
    return payload


def _pread(fd, size, offset):
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def _keys_present(features):
    return ", ".join(sorted(features)) or "none"


def _single(features, key, kind, where):
    """The one value of feature ``key``, which must be a ``kind`` holding exactly one value."""
    feature = features[key]
    if feature.kind != kind or len(feature.values) != 1:
        count = len(feature.values)
        raise DataError(f"{where}: feature {key!r} is a {feature.kind or 'empty feature'} of {count} values, "
                        f"expected a {kind} of one value")
    return feature.values[0]


def _first_key(features, keys):
    return next((key for key in keys if key in features), None)


def _header_int(features, key, where):
    return int(_single(features, key, "int64_list", where)) if key in features else None


class _FileHeader:
    """The distillation header of a file (its first record): ``classes``, ``emb_shape``, ``total``, ``use_fp16``."""

    def __init__(self, features, where):
        self.classes = _header_int(features, "classes", where)
        self.emb_shape = _header_int(features, "emb_shape", where)
        self.total = _header_int(features, "total", where)
        self.emb_dtype = np.dtype("<f2" if _header_int(features, "use_fp16", where) else "<f4")


class _Index:
    """What one pass over the files collects: where each record is, its label, image path and embedding."""

    def __init__(self):
        self.file_starts, self.offsets, self.lengths, self.labels = [], [], [], []
        self.paths, self.embeddings, self.classes = [], [], 0
        self.image_key = self.label_key = None
        self.has_embeddings = False


class TFRecordSource:
    """Records of one TFRecord file or a sorted glob of them as ``(image bytes, label)``; ``embeddings`` holds
    the teacher embeddings of distillation records (else None). ``allow_outside`` lets ``image_names`` paths
    point outside the TFRecord's folder (the seed wrote them as given, possibly absolute).

    Picklable for loader workers: file descriptors are reopened lazily in each process.
    """

    def __init__(self, pattern, allow_outside=False, progress=True):
        self.name = os.fspath(pattern)
        self.files = tfrecord_files(pattern)
        index = _Index()
        for path in self.files:
            index.file_starts.append(len(index.offsets))
            self._index_file(index, path, allow_outside, progress)
        if not index.offsets:
            raise DataError(f"{self.name}: no records in {len(self.files)} TFRecord file(s)")
        self._file_starts = np.asarray(index.file_starts, dtype=np.int64)
        self._offsets = np.asarray(index.offsets, dtype=np.int64)
        self._lengths = np.asarray(index.lengths, dtype=np.int64)
        self.labels = np.asarray(index.labels, dtype=np.int64)
        self.num_classes = max(index.classes, int(self.labels.max()) + 1)
        self.image_key, self.label_key = index.image_key, index.label_key
        self.paths = index.paths if index.image_key in IMAGE_PATH_KEYS else None
        self.embeddings = np.stack(index.embeddings).astype(np.float32) if index.has_embeddings else None
        if self.paths is not None:
            missing = [p for p in self.paths if not os.path.isfile(p)]
            if missing:
                raise DataError(f"{self.name}: {len(missing)} images named by image_names are missing, "
                                f"first: {missing[0]}")
        self._fds = {}

    def _index_file(self, index, path, allow_outside, progress):
        header = None
        count = 0
        for number, offset, payload in scan_records(path, progress):
            where = _where(path, number, offset)
            try:
                features = parse_example(payload)
            except DataError as error:
                raise DataError(f"{where}: not a tf.train.Example ({error})") from None
            if header is None:
                header = _FileHeader(features, where)
            self._index_record(index, features, header, path, where, allow_outside)
            index.offsets.append(offset)
            index.lengths.append(len(payload))
            count += 1
        if header is not None and header.classes is not None:
            index.classes = max(index.classes, header.classes)
        if header is not None and header.total is not None and header.total != count:
            warnings.warn(f"{path}: the first record says total={header.total} but the file holds {count} records "
                          "(an interrupted distill-data run?); the records present are read", stacklevel=3)

    def _index_record(self, index, features, header, path, where, allow_outside):
        if index.image_key is None:
            index.image_key = _first_key(features, IMAGE_BYTES_KEYS + IMAGE_PATH_KEYS)
            index.label_key = _first_key(features, LABEL_KEYS)
            index.has_embeddings = EMBEDDING_KEY in features
            if index.image_key is None or index.label_key is None:
                raise DataError(
                    f"{where}: no {'image' if index.image_key is None else 'label'} feature: expected one of "
                    f"{', '.join(IMAGE_BYTES_KEYS + IMAGE_PATH_KEYS if index.image_key is None else LABEL_KEYS)}; "
                    f"the record has: {_keys_present(features)}"
                )
        wanted = [index.image_key, index.label_key] + ([EMBEDDING_KEY] if index.has_embeddings else [])
        lacking = [key for key in wanted if key not in features]
        if lacking:
            raise DataError(f"{where}: lacks feature {lacking[0]!r} (the dataset's first record has "
                            f"{', '.join(wanted)}); the record has: {_keys_present(features)}")
        label = int(_single(features, index.label_key, "int64_list", where))
        if label < 0:
            raise DataError(f"{where}: negative label {label}")
        if header.classes is not None and label >= header.classes:
            raise DataError(f"{where}: label {label}, but the file's first record says classes={header.classes}")
        index.labels.append(label)
        image = _single(features, index.image_key, "bytes_list", where)
        if index.image_key in IMAGE_PATH_KEYS:
            index.paths.append(str(confined(Path(path).parent, _path_text(image, where), f"{where}: image_names",
                                            allow_outside)))
        if index.has_embeddings:
            index.embeddings.append(self._embedding(features[EMBEDDING_KEY], header, index, where))

    @staticmethod
    def _embedding(feature, header, index, where):
        """One teacher embedding: raw bytes of ``header.emb_dtype`` (the seed's), or a float_list."""
        if feature.kind == "float_list":
            values = feature.values
        elif feature.kind == "bytes_list" and len(feature.values) == 1:
            raw = feature.values[0]
            if len(raw) % header.emb_dtype.itemsize:
                raise DataError(f"{where}: embeddings of {len(raw)} bytes are not whole {header.emb_dtype.name} "
                                "values")
            values = np.frombuffer(raw, dtype=header.emb_dtype)
        else:
            raise DataError(f"{where}: feature 'embeddings' is a {feature.kind or 'empty feature'} of "
                            f"{len(feature.values)} values, expected one bytes value or a float_list")
        if header.emb_shape is not None and values.size != header.emb_shape:
            raise DataError(f"{where}: embedding of {values.size} {values.dtype.name} values, but the file's first "
                            f"record says emb_shape={header.emb_shape}")
        if values.size == 0:
            raise DataError(f"{where}: empty embedding")
        if index.embeddings and values.size != index.embeddings[0].size:
            raise DataError(f"{where}: embedding of {values.size} values, the dataset's first record's has "
                            f"{index.embeddings[0].size}")
        return values

    def __len__(self):
        return int(self.labels.size)

    def _locate(self, i):
        """``(file number, record number in the file)`` of record ``i``."""
        file_number = int(np.searchsorted(self._file_starts, i, side="right")) - 1
        return file_number, i - int(self._file_starts[file_number])

    def describe(self, index):
        """An image's path (distillation layout) or ``<file>: record <n>``."""
        if self.paths is not None:
            return self.paths[index]
        file_number, number = self._locate(int(index))
        return f"{self.files[file_number]}: record {number}"

    def _fd(self, file_number):
        fd = self._fds.get(file_number)
        if fd is None:
            path = self.files[file_number]
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as error:
                raise DataError(f"{path}: cannot open the TFRecord file ({error.strerror})") from None
            self._fds[file_number] = fd
        return fd

    def __getitem__(self, i):
        """``(image bytes, label)`` of record ``i``: the record's image, or the file its ``image_names`` names."""
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name}: record index {i} out of range 0..{len(self) - 1}")
        label = int(self.labels[i])
        if self.paths is not None:
            try:
                with open(self.paths[i], "rb") as f:
                    return f.read(), label
            except OSError as error:
                raise DataError(f"{self.paths[i]}: cannot read image ({error.strerror})") from None
        file_number, number = self._locate(i)
        path, offset = self.files[file_number], int(self._offsets[i])
        payload = read_record(self._fd(file_number), path, number, offset, int(self._lengths[i]))
        where = _where(path, number, offset)
        try:
            features = parse_example(payload)
        except DataError as error:
            raise DatasetError(f"{where}: not a tf.train.Example ({error}): the file changed since it was indexed; "
                               "open the dataset again") from None
        if self.image_key not in features or self.label_key not in features:
            raise DatasetError(f"{where}: lacks {self.image_key!r} or {self.label_key!r}: the file changed since it "
                               "was indexed; open the dataset again")
        if int(_single(features, self.label_key, "int64_list", where)) != label:
            raise DatasetError(f"{where}: label differs from the one indexed: the file changed since it was "
                               "indexed; open the dataset again")
        return _single(features, self.image_key, "bytes_list", where), label

    def close(self, _os_close=os.close):
        """Close the open files; a later read reopens them (``os.close`` is bound early for ``__del__``)."""
        fds, self._fds = getattr(self, "_fds", {}), {}
        for fd in fds.values():
            _os_close(fd)

    def __del__(self):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


def _path_text(value, where):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where}: image_names {value[:60]!r} is not a UTF-8 path") from None
