"""MXNet RecordIO (``.rec`` + ``.idx``) read and written with numpy only; ``insightface_rec.py`` holds the insightface
dataset layout on top of it (header record, class ranges, ``property``).

A ``.rec`` file is a sequence of records: magic ``0xCED7230A``, a uint32 ``lrec`` (3-bit continuation
flag, 29-bit length), the payload and zero padding to 4 bytes. Payloads holding the magic at an aligned
offset are split into parts there (the magic itself is dropped and re-inserted on read), as dmlc does.
An image record's payload is an ``IRHeader`` (``<IfQQ``), optional float32 labels, then the JPEG bytes.

The ``.idx`` (``key<TAB>offset`` lines) is only a cache of where records start: when it is missing or does
not fit the ``.rec`` it is rebuilt by one sequential scan (``rebuild_index``), keys numbered 0..n-1 in file
order as im2rec and insightface number them.

Example:
    >>> path = getfixture("tmp_path") / "x.rec"
    >>> with RecordWriter(path, path.with_suffix(".idx")) as writer:
    ...     writer.write(0, pack_header(3.0) + b"jpeg bytes")
    >>> reader = RecordReader(path)
    >>> flag, label, _, _, payload = unpack(reader.read(0))
    >>> label, payload
    (3.0, b'jpeg bytes')
    >>> reader.close()
"""

import contextlib
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
RECORD_HEADER = struct.Struct("<II")
IR_HEADER = struct.Struct("<IfQQ")
FLOAT32_EXACT = 1 << 24


def pack_header(label, id=0, id2=0):
    """Return IRHeader bytes: a scalar label gives flag 0, a sequence gives flag=len plus float32 labels."""
    if np.ndim(label) == 0:
        return IR_HEADER.pack(0, float(label), int(id), int(id2))
    values = np.asarray(label, dtype="<f4").ravel()
    if values.size == 0:
        raise DataError("pack_header: an array label must hold at least one value")
    return IR_HEADER.pack(values.size, 0.0, int(id), int(id2)) + values.tobytes()


def unpack(record):
    """Split a record payload into ``(flag, label, id, id2, payload)``; label is a float or float32 array."""
    if len(record) < IR_HEADER.size:
        raise DataError(f"IRHeader: record of {len(record)} bytes is shorter than {IR_HEADER.size}")
    flag, label, id_, id2 = IR_HEADER.unpack_from(record)
    start = IR_HEADER.size
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
    return RECORD_HEADER.size + length + (-length % 4)


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
            self._rec.write(RECORD_HEADER.pack(MAGIC, (cflag << 29) | len(part)))
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
            head = f.read(RECORD_HEADER.size)
            if len(head) < RECORD_HEADER.size:
                raise DataError(f"{rec_path}: truncated record header at offset {pos} (the file ends at byte {size})")
            magic, lrec = RECORD_HEADER.unpack(head)
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
        head = self._pread(RECORD_HEADER.size, offset)
        if len(head) < RECORD_HEADER.size:
            raise DataError(f"{self.rec_path}: key {key} at offset {offset}: truncated record header")
        magic, lrec = RECORD_HEADER.unpack(head)
        if magic != MAGIC:
            raise DataError(
                f"{self.rec_path}: key {key} at offset {offset}: bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}"
            )
        return lrec >> 29, lrec & _LENGTH_MASK

    def _part_data(self, key, offset, size):
        """Read ``size`` bytes of the part data at offset."""
        data = self._pread(size, offset + RECORD_HEADER.size)
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
