"""MXNet RecordIO (``.rec`` + ``.idx``) read and written with numpy only, in the insightface layout.

A ``.rec`` file is a sequence of records: magic ``0xCED7230A``, a uint32 ``lrec`` (3-bit continuation
flag, 29-bit length), the payload and zero padding to 4 bytes. Payloads holding the magic at an aligned
offset are split into parts there (the magic itself is dropped and re-inserted on read), as dmlc does.
An image record's payload is an ``IRHeader`` (``<IfQQ``), optional float32 labels, then the JPEG bytes.

The ``.idx`` (``key<TAB>offset`` lines) is only a cache of where records start: when it is missing or does
not fit the ``.rec`` it is rebuilt by one sequential scan (``rebuild_index``), keys numbered 0..n-1 in file
order as im2rec and insightface number them.

Example:
    >>> from keras_insightface.data.recordio import InsightfaceRec
    >>> ds = InsightfaceRec("datasets/faces_emore")    # doctest: +SKIP
    >>> jpeg_bytes, label = ds[0]                       # doctest: +SKIP
"""

import contextlib
import functools
import hashlib
import io
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.data.progress import progress_bar

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_RECORD_HEADER = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
_FLOAT32_EXACT = 1 << 24


def pack_header(label, id=0, id2=0):
    """Return IRHeader bytes: a scalar label gives flag 0, a sequence gives flag=len plus float32 labels."""
    if np.ndim(label) == 0:
        return _IR_HEADER.pack(0, float(label), int(id), int(id2))
    values = np.asarray(label, dtype="<f4").ravel()
    if values.size == 0:
        raise DataError("pack_header: an array label must hold at least one value")
    return _IR_HEADER.pack(values.size, 0.0, int(id), int(id2)) + values.tobytes()


def unpack(record):
    """Split a record payload into ``(flag, label, id, id2, payload)``; label is a float or float32 array."""
    if len(record) < _IR_HEADER.size:
        raise DataError(f"IRHeader: record of {len(record)} bytes is shorter than {_IR_HEADER.size}")
    flag, label, id_, id2 = _IR_HEADER.unpack_from(record)
    start = _IR_HEADER.size
    if flag == 0:
        return flag, float(label), id_, id2, bytes(record[start:])
    end = start + 4 * flag
    if len(record) < end:
        raise DataError(f"IRHeader: flag {flag} needs {end} bytes but the record has {len(record)}")
    labels = np.frombuffer(record, dtype="<f4", count=flag, offset=start).astype(np.float32)
    return flag, labels, id_, id2, bytes(record[end:])


def _split_at_magic(payload):
    """Cut a payload at each 4-byte aligned magic occurrence, dropping the magic, as the dmlc writer does."""
    aligned = len(payload) // 4 * 4
    words = np.frombuffer(payload, dtype="<u4", count=aligned // 4)
    cuts = (np.flatnonzero(words == MAGIC) * 4).tolist()
    parts, start = [], 0
    for cut in cuts:
        parts.append(payload[start:cut])
        start = cut + 4
    parts.append(payload[start:])
    return parts


def _padding(length):
    return b"\x00" * (-length % 4)


def _part_size(length):
    """Bytes one part takes in the file: header, data and padding to 4 bytes."""
    return _RECORD_HEADER.size + length + (-length % 4)


class RecordWriter:
    """Write keyed records to a ``.rec`` file and its ``.idx`` (``key\\toffset`` lines)."""

    def __init__(self, rec_path, idx_path):
        self.rec_path = str(rec_path)
        self.idx_path = str(idx_path)
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii")
        self._keys = set()

    def write(self, key, payload):
        """Append one record (split into parts where the payload holds the magic) and index it."""
        key = int(key)
        if key in self._keys:
            raise DataError(f"{self.rec_path}: key {key} written twice")
        payload = bytes(payload)
        parts = _split_at_magic(payload)
        for part in parts:
            if len(part) > _LENGTH_MASK:
                raise DataError(f"{self.rec_path}: key {key}: a record part of {len(part)} bytes exceeds 2**29 - 1")
        offset = self._rec.tell()
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if last == 0:
                cflag = 0
            elif i == 0:
                cflag = 1
            elif i == last:
                cflag = 3
            else:
                cflag = 2
            self._rec.write(_RECORD_HEADER.pack(MAGIC, (cflag << 29) | len(part)))
            self._rec.write(part)
            self._rec.write(_padding(len(part)))
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)

    def close(self):
        """Flush and close both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_IDX_LINE = re.compile(r"[ \t]*-?\d+[ \t]+\d+[ \t]*\r?")


def _parse_idx(idx_path):
    """Read an ``.idx`` file into (keys, offsets) int64 arrays, in file order (numpy's C parser: fast)."""
    try:
        text = Path(idx_path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise DataError(f"{idx_path}: index file missing") from None
    except UnicodeDecodeError:
        raise DataError(f"{idx_path}: index file is not ASCII text") from None
    if not text.strip():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    try:
        pairs = np.loadtxt(io.StringIO(text), dtype=np.int64, ndmin=2, comments=None)
    except ValueError as error:
        pairs, problem = None, str(error).split(";")[0]
    if pairs is not None and pairs.shape[1] == 2 and (pairs[:, 1] >= 0).all():
        return pairs[:, 0].copy(), pairs[:, 1].copy()
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() and not _IDX_LINE.fullmatch(line):
            raise DataError(f"{idx_path}: line {number} is {line[:80]!r}, expected 'key<TAB>offset'")
    raise DataError(f"{idx_path}: unreadable index ({problem if pairs is None else 'not two integer columns'})")


def _scan_offsets(rec_path):
    """Offset of every record's first part, by one sequential pass; corrupt or truncated files raise."""
    size = os.path.getsize(rec_path)
    offsets, pos, record_start, shown = [], 0, None, 0
    with open(rec_path, "rb") as f, progress_bar(size, f"indexing {rec_path}") as advance:
        while pos < size:
            head = f.read(_RECORD_HEADER.size)
            if len(head) < _RECORD_HEADER.size:
                raise DataError(f"{rec_path}: truncated record header at offset {pos} (the file ends at byte {size})")
            magic, lrec = _RECORD_HEADER.unpack(head)
            if magic != MAGIC:
                raise DataError(f"{rec_path}: offset {pos}: bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
            cflag, end = lrec >> 29, pos + _part_size(lrec & _LENGTH_MASK)
            if end > size:
                raise DataError(
                    f"{rec_path}: truncated record at offset {pos}: it needs {end - pos} bytes "
                    f"but the file ends at byte {size}"
                )
            if cflag > 3 or (cflag in (0, 1)) != (record_start is None):
                raise DataError(f"{rec_path}: offset {pos}: continuation flag {cflag} out of sequence")
            if cflag in (0, 1):
                offsets.append(pos)
            record_start = pos if cflag == 1 else record_start if cflag == 2 else None
            f.seek(end)
            if len(offsets) % 4096 == 0 or end == size:  # a bar update costs microseconds: not one per record
                advance(end - shown)
                shown = end
            pos = end
    if record_start is not None:
        raise DataError(f"{rec_path}: truncated record at offset {record_start}: its last part is missing")
    return np.array(offsets, dtype=np.int64)


def _cache_idx_path(rec_path):
    """Where an index goes when the ``.rec`` folder is read-only: the user cache, keyed by path, size, mtime."""
    stat = os.stat(rec_path)
    key = f"{os.path.abspath(rec_path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "keras_insightface" / "idx" / f"{hashlib.sha256(key).hexdigest()[:32]}.idx"


def _write_idx(idx_path, offsets, chunk=1 << 16):
    """Write ``ordinal<TAB>offset`` lines atomically: a temp file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{idx_path.name}.", suffix=".tmp", dir=idx_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            for start in range(0, offsets.size, chunk):
                f.write("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets[start : start + chunk].tolist(), start)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, idx_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def rebuild_index(rec_path, idx_path=None):
    """Scan ``rec_path`` once and write its index (keys 0..n-1 in file order); returns the index path.

    The index goes to ``idx_path`` (default: beside the ``.rec``) when that folder is writable, else to
    ``$XDG_CACHE_HOME/keras_insightface/idx/<hash>.idx`` (``~/.cache`` by default), so read-only datasets work.

    Example:
        >>> rebuild_index("datasets/faces_emore/train.rec")    # doctest: +SKIP
        'datasets/faces_emore/train.idx'
    """
    rec_path = Path(rec_path)
    if not rec_path.is_file():
        raise DataError(f"{rec_path}: record file missing")
    target = Path(idx_path) if idx_path is not None else rec_path.with_suffix(".idx")
    offsets = _scan_offsets(rec_path)
    try:
        _write_idx(target, offsets)
    except OSError:
        target = _cache_idx_path(rec_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_idx(target, offsets)
        except OSError as error:
            raise DataError(
                f"{rec_path}: cannot write a rebuilt index beside it nor to {target} ({error.strerror})"
            ) from None
    return str(target)


class RecordReader:
    """Random access to a ``.rec`` through its ``.idx``; picklable (workers reopen the file lazily).

    A missing ``.idx``, or one that does not fit the ``.rec``, is replaced: first by a matching index in the
    user cache, else by ``rebuild_index`` (with a warning saying why).

    Example:
        >>> reader = RecordReader("datasets/faces_emore/train.rec")    # doctest: +SKIP
        >>> payload = reader.read(1)                                    # doctest: +SKIP
    """

    def __init__(self, rec_path, idx_path=None):
        self._fd = None
        self.rec_path = str(rec_path)
        requested = str(idx_path) if idx_path is not None else str(Path(rec_path).with_suffix(".idx"))
        if not os.path.isfile(self.rec_path):
            raise DataError(f"{self.rec_path}: record file missing")
        problem = self._load_index(requested)
        if problem is None or self._cached_index_fits():
            return
        warnings.warn(f"{requested}: {problem}; rebuilding the index from {self.rec_path}", stacklevel=2)
        rebuilt = rebuild_index(self.rec_path, requested)
        problem = self._load_index(rebuilt)
        if problem is not None:
            raise DataError(f"{rebuilt}: the rebuilt index still does not fit ({problem}); was the file changing?")

    def _cached_index_fits(self):
        """Load the user-cache index of this ``.rec`` when there is one that fits; True if so."""
        cached = _cache_idx_path(self.rec_path)
        try:
            return cached.is_file() and self._load_index(cached) is None
        except DataError:
            return False

    def _load_index(self, idx_path):
        """Parse ``idx_path`` into the lookup arrays; return why it does not fit the ``.rec``, or None."""
        if not os.path.isfile(idx_path):
            return "index file missing"
        keys, offsets = _parse_idx(idx_path)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
        if repeated.size:
            raise DataError(f"{idx_path}: key {int(repeated[0])} appears more than once")
        self.idx_path = str(idx_path)
        self._file_keys = keys
        self._sorted_keys = sorted_keys
        self._sorted_offsets = offsets[order]
        return self._index_mismatch()

    def _index_mismatch(self, samples=33):
        """Why the index does not fit the ``.rec`` (None when it does).

        Cheap on purpose (a full check is a full scan): every offset within the file, the magic at up to
        ``samples`` offsets spread over the file, and the last record ending exactly at the end of the file.
        Reads check each record's magic anyway.
        """
        size = os.path.getsize(self.rec_path)
        if self._sorted_offsets.size == 0:
            return None if size == 0 else f"the index is empty but the record file holds {size} bytes"
        by_offset = np.argsort(self._sorted_offsets, kind="stable")
        offsets, keys = self._sorted_offsets[by_offset], self._sorted_keys[by_offset]
        last, last_key = int(offsets[-1]), int(keys[-1])
        if last >= size:
            return f"key {last_key} has offset {last}, past the end of the {size}-byte record file"
        picks = np.unique(np.linspace(0, offsets.size - 1, min(offsets.size, samples)).astype(np.int64))
        try:
            for key, offset in zip(keys[picks].tolist(), offsets[picks].tolist()):
                self._part_header(key, offset)
            cflag, length = self._part_header(last_key, last)
            if cflag not in (0, 1):
                return f"key {last_key} at offset {last} points into the middle of a multi-part record"
            end = last + _part_size(length)
            while cflag in (1, 2):
                cflag, length = self._part_header(last_key, end)
                end += _part_size(length)
        except DataError as error:
            return str(error)
        if end != size:
            return f"the last record (key {last_key} at offset {last}) ends at byte {end}, the file has {size} bytes"
        return None

    @property
    def keys(self):
        """Keys in ``.idx`` file order."""
        return self._file_keys.tolist()

    @property
    def sorted_keys(self):
        """Keys as an ascending int64 array (read-only view)."""
        view = self._sorted_keys.view()
        view.flags.writeable = False
        return view

    def __len__(self):
        return int(self._file_keys.size)

    def __contains__(self, key):
        return self._find(key) is not None

    def _find(self, key):
        pos = int(np.searchsorted(self._sorted_keys, key))
        if pos < self._sorted_keys.size and self._sorted_keys[pos] == key:
            return int(self._sorted_offsets[pos])
        return None

    def offset(self, key):
        """Byte offset of the record's first part."""
        offset = self._find(int(key))
        if offset is None:
            raise DataError(f"{self.idx_path}: key {key} is not in the index")
        return offset

    def _pread(self, size, offset):
        if self._fd is None:
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        if hasattr(os, "pread"):
            return os.pread(self._fd, size, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        return os.read(self._fd, size)

    def _part_header(self, key, offset):
        """Check the part header at offset: returns (cflag, length)."""
        head = self._pread(_RECORD_HEADER.size, offset)
        if len(head) < _RECORD_HEADER.size:
            raise DataError(f"{self.rec_path}: key {key} at offset {offset}: truncated record header")
        magic, lrec = _RECORD_HEADER.unpack(head)
        if magic != MAGIC:
            raise DataError(
                f"{self.rec_path}: key {key} at offset {offset}: bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}"
            )
        return lrec >> 29, lrec & _LENGTH_MASK

    def _part_data(self, key, offset, size):
        """Read ``size`` bytes of the part data at offset."""
        data = self._pread(size, offset + _RECORD_HEADER.size)
        if len(data) < size:
            raise DataError(
                f"{self.rec_path}: key {key} at offset {offset}: truncated record "
                f"({len(data)} of its {size} bytes before the end of the file)"
            )
        return data

    def _part(self, key, offset):
        """Read one part at offset: returns (cflag, data, next_offset)."""
        cflag, length = self._part_header(key, offset)
        data = self._part_data(key, offset, length)
        return cflag, data, offset + _part_size(length)

    def read(self, key):
        """Return the payload of ``key``, joining multi-part records with the magic between parts."""
        offset = self.offset(key)
        cflag, data, offset = self._part(key, offset)
        if cflag == 0:
            return data
        if cflag != 1:
            raise DataError(f"{self.rec_path}: key {key}: record starts with continuation flag {cflag}")
        parts = [data]
        while cflag != 3:
            cflag, data, next_offset = self._part(key, offset)
            if cflag not in (2, 3):
                raise DataError(
                    f"{self.rec_path}: key {key} at offset {offset}: part has flag {cflag}, expected 2 or 3"
                )
            parts.append(data)
            offset = next_offset
        return _MAGIC_BYTES.join(parts)

    def read_head(self, key, size):
        """Return the first ``size`` payload bytes (fewer if the payload is shorter) without reading the rest."""
        offset = self.offset(key)
        cflag, length = self._part_header(key, offset)
        if cflag == 0 or (cflag == 1 and length >= size):
            return self._part_data(key, offset, min(length, size))
        return self.read(key)[:size]

    def close(self, _os_close=os.close):
        """Close the file descriptor; a later read reopens it (``os.close`` is bound early for ``__del__``)."""
        if self._fd is not None:
            _os_close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def __getstate__(self):
        return {"rec_path": self.rec_path, "idx_path": self.idx_path}

    def __setstate__(self, state):
        self.__init__(state["rec_path"], state["idx_path"])


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


def _label_error(rec_path, index, label, num_classes):
    return DataError(f"{rec_path}: sample {index} has label {label}, expected 0..{num_classes - 1}")


def _by_label(samples, rec_path, num_classes):
    """A sequence's samples grouped by label (stable), read one at a time; labels are checked up front."""
    labels = getattr(samples, "labels", None)
    labels = np.array([int(label) for _, label in samples] if labels is None else labels, dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise _label_error(rec_path, int(bad[0]), int(labels[bad[0]]), num_classes)
    if labels.size + 1 + num_classes > _FLOAT32_EXACT:
        raise DataError(f"{rec_path}: {labels.size} images + {num_classes} classes exceed float32-exact header keys")
    for i in np.argsort(labels, kind="stable").tolist():
        data, label = samples[i]
        if int(label) != labels[i]:
            raise DataError(f"{rec_path}: sample {i} has label {label} but the sample labels say {labels[i]}")
        yield data, label


def write_insightface_rec(out_dir, samples, num_classes, image_size=(112, 112), progress=False):
    """Write ``train.rec``/``train.idx``/``property`` in the insightface layout (header, images, identities).

    ``samples`` yields ``(image_bytes, label)``; bytes are stored as given (JPEG, PNG: no re-encoding). A
    sequence (``len`` and indexing: a list, a source) is written grouped by label through random access, one
    image in memory at a time, its labels taken from its ``labels`` array when it has one. Any other iterable
    is streamed in its own order and must hold each class in one contiguous run. ``progress`` shows a
    progress line on stderr.

    Example:
        >>> write_insightface_rec("out", [(jpeg_bytes, 0), (jpeg_bytes, 1)], num_classes=2)  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    rec_path = out_dir / "train.rec"
    num_classes = int(num_classes)
    if hasattr(samples, "__len__") and hasattr(samples, "__getitem__"):
        total, items = len(samples), _by_label(samples, rec_path, num_classes)
    else:
        total, items = None, iter(samples)
    starts = np.zeros(num_classes, dtype=np.int64)
    counts = np.zeros(num_classes, dtype=np.int64)
    key, previous = 1, None
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total, f"writing {rec_path}") if progress else contextlib.nullcontext(lambda n=1: None)
    with RecordWriter(rec_path, out_dir / "train.idx") as writer, bar as advance:
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
            if key + 1 + num_classes > _FLOAT32_EXACT:
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
    with open(rec_path, "r+b") as f:
        f.seek(_RECORD_HEADER.size)
        f.write(pack_header([num_images + 1, num_images + 1 + num_classes]))
    write_property(out_dir / "property", num_classes, image_size[0], image_size[1])


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
        self.__dict__["labels"] = labels

    def _header(self):
        """Return (first identity key, end key) from record 0, or None when there is no header record."""
        if 0 not in self.reader:
            return None
        flag, label, _, _, payload = self._unpack(0, self.reader.read(0))
        if flag != 2 or payload:
            return None
        first, end = (_class_of(v, f"{self.rec_path}: key 0") for v in label)
        if end > _FLOAT32_EXACT:
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
            head = self.reader.read_head(key, _IR_HEADER.size)
            flag = _IR_HEADER.unpack(head)[0] if len(head) == _IR_HEADER.size else 0
            if flag > 0:
                head = self.reader.read_head(key, _IR_HEADER.size + 4 * flag)
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
        _, label, _, _, payload = self._unpack(key, self.reader.read(key))
        label = _class_of(label, f"{self.rec_path}: key {key}")
        if not 0 <= label < self.num_classes:
            raise DataError(f"{self.rec_path}: key {key} has label {label}, expected 0..{self.num_classes - 1}")
        return payload, label
