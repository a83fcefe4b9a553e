"""Issue 15's corpus of bad and tricky inputs ("a run never loses, overwrites or leaks data"): every reader and
command of the project fed small broken files, built in a temporary folder.

Each ``Case`` names its reader, the outcome it must have and a regex on the message that shows it:
    - ``error``: a ``DataError`` (a ``ValueError`` for config problems; exit code 2 and one line for the CLI) whose
      message names the bad input; a traceback from inside (KeyError, struct.error, BadZipFile...) fails the case;
    - ``skip``: the bad item is left out, counted and reported, and the work goes on;
    - ``recovered``: the bad input is detected and repaired or fallen back from, with a message;
    - ``ok``: a tricky but valid input is read correctly, without a warning (the regex is on the run's summary).
A builder returns a ``Probe``: the call to make, ``after`` (what must hold afterwards whatever happened: the
previous files intact, nothing half-written left, no planted file read) and ``cleanup``.

``tests/robustness/test_robustness.py`` runs the cases; ``python -m tests.robustness.corpus`` prints the table.
"""

import collections
import dataclasses
import errno
import functools
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from keras_insightface.errors import DatasetError

READERS = ("decode", "recordio", "sources", "convert", "binpack", "ijb_meta", "config", "checkpoint", "run_files",
           "atomic", "models", "gallery", "cli", "inference")
OUTCOMES = ("error", "skip", "recovered", "ok")


@dataclasses.dataclass(frozen=True)
class Case:
    """One input and what must happen to it; ``raises`` narrows an ``error`` to a subclass (``DatasetError``)."""

    name: str
    reader: str
    outcome: str
    build: Callable
    check: str
    raises: type = None


@dataclasses.dataclass
class Probe:
    """``run()`` reads the input (returns a summary, or raises); ``after()`` asserts what must hold afterwards;
    ``cleanup()`` always runs (a helper process to stop)."""

    run: Callable
    after: Callable = None
    cleanup: Callable = None


@dataclasses.dataclass
class Context:
    """What a builder gets: its folder, pytest's ``monkeypatch`` and ``capsys``, and a folder shared by all cases
    (the tiny model file, built once)."""

    tmp: Path
    monkeypatch: object
    capsys: object
    shared: Path

    def tiny_model(self):
        return tiny_model(self.shared)


class CliExit(Exception):
    """A command that returned a non-zero exit code, with what it printed; its message is the last stderr line."""

    def __init__(self, code, out, err):
        super().__init__(code)
        self.code, self.out, self.err = code, out, err

    def __str__(self):
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------------------- input makers


@functools.lru_cache(maxsize=None)
def face(seed=0, size=(112, 112), quality=90):
    """A JPEG of blocky random colours (one per seed), ``size`` = (height, width)."""
    import simplejpeg

    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((size[0] // 8 + 1, size[1] // 8 + 1, 1), np.uint8))[: size[0], : size[1]]
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality)


def pillow(fmt, size=(112, 112), mode="RGB", **options):
    """``face()``'s pixels saved by Pillow as ``fmt`` in ``mode`` (L, P, RGBA, CMYK...)."""
    from PIL import Image

    image = Image.fromarray(pillow_decode(face(0, size))).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pillow_decode(data):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def jpeg_claiming(height, width):
    """A small valid JPEG whose frame header (SOF0) claims ``height`` x ``width``: a decompression bomb's header."""
    data = bytearray(face(1, (16, 16)))
    at = data.index(b"\xff\xc0") + 5
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(height, width):
    """A small valid PNG whose header (IHDR, its CRC recomputed) claims ``height`` x ``width``."""
    data = bytearray(pillow("PNG", (16, 16)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def corrupt_jpeg():
    return b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(5).integers(0, 256, 400, dtype=np.uint8))


def random_bytes(count=600, seed=3):
    return bytes(np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8))


def truncated(data, keep=0.5):
    return data[: int(len(data) * keep)]


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write(path, data):
    """Write ``data`` (bytes or text) at ``path``, creating its folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def make_tree(root, files, links_to=None):
    """A folder ``root`` of ``files``: ``{relative path: bytes or text}``, ``None`` for an empty folder,
    ``("link", target)`` for a symlink to the folder ``links_to / target``."""
    root.mkdir(parents=True)
    for name, data in files.items():
        if data is None:
            (root / name).mkdir(parents=True)
        elif isinstance(data, tuple):
            (root / name).symlink_to(links_to / data[1], target_is_directory=True)
        else:
            write(root / name, data)
    return root


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder`` (hidden ones included)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unchanged(folder):
    """An ``after`` check: every file under ``folder`` is as it is now, and no file was added."""
    before = snapshot(folder)

    def after():
        now = snapshot(folder)
        assert now == before, f"{folder}: files changed, added or lost: {sorted(set(now) ^ set(before))} " \
                              f"{[k for k in before if k in now and now[k] != before[k]]}"

    return after


DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def tiny_model(shared):
    """A 112x112 -> 8 Keras model file (global average pooling and a dense layer), saved once in ``shared``."""
    path = Path(shared) / "tiny.keras"
    if not path.is_file():
        import keras

        inputs = keras.Input((112, 112, 3))
        outputs = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(inputs))
        keras.Model(inputs, outputs).save(path)
    return path


def mean_colour(images):
    """A batch callable 'model' for galleries: the mean colour of each face."""
    return np.asarray(images, "float32").mean(axis=(1, 2)) - 127.5


CASES = []


def table(reader, *rows):
    """Register the ``(name, outcome, build, check[, raises])`` rows of one reader."""
    for name, outcome, build, check, *raises in rows:
        CASES.append(Case(f"{reader}:{name}", reader, outcome, build, check, *raises))


# ------------------------------------------------------------------------------------------ 1. data/decode.py


def decoding(make, check_only=False, env=None, **kwargs):
    """Decode (or only check the header of) ``make()``'s bytes named ``face.jpg``; ``env`` sets the pixel limit
    variable. A decoded image is compared with Pillow's decoding of the same bytes."""
    def build(ctx):
        from keras_insightface.data.decode import MAX_PIXELS_VARIABLE, check_image, decode_image

        if env is not None:
            ctx.monkeypatch.setenv(MAX_PIXELS_VARIABLE, env)
        data = make()

        def run():
            if check_only:
                return f"header {check_image(data, 'face.jpg', **kwargs)}"
            image = decode_image(data, where="face.jpg", **kwargs)
            same = int(np.abs(image.astype(int) - pillow_decode(data)).max()) <= 8
            return f"decoded {image.shape} {image.dtype}, same pixels as Pillow: {same}"

        return Probe(run)

    return build


DECODED = r"decoded \(112, 112, 3\) uint8, same pixels as Pillow: True"
CANNOT = r"face\.jpg: cannot decode image"
NOT_AN_IMAGE = r"face\.jpg: cannot decode image \(not a JPEG, PNG or BMP image\)"
NOT_READABLE = r"face\.jpg: not a readable JPEG, PNG or BMP image"

table(
    "decode",
    ("corrupt-jpeg", "error", decoding(corrupt_jpeg), CANNOT),
    ("truncated-jpeg", "error", decoding(lambda: truncated(face())), CANNOT + r" \(ValueError: Premature end"),
    ("jpeg-header-only", "error", decoding(lambda: face()[:100]), CANNOT + r" \(unreadable JPEG header"),
    ("empty", "error", decoding(lambda: b""), NOT_AN_IMAGE),
    ("random-bytes", "error", decoding(random_bytes), NOT_AN_IMAGE),
    ("text", "error", decoding(lambda: b"name,label\nalice,0\n"), NOT_AN_IMAGE),
    ("gif", "error", decoding(lambda: pillow("GIF")), NOT_AN_IMAGE),
    ("webp", "error", decoding(lambda: pillow("WEBP")), NOT_AN_IMAGE),
    ("tiff", "error", decoding(lambda: pillow("TIFF")), NOT_AN_IMAGE),
    ("jpeg-wrong-size", "error", decoding(lambda: face(0, (112, 96))),
     r"face\.jpg: image is 96x112, expected aligned 112x112"),
    ("png-wrong-size", "error", decoding(lambda: pillow("PNG", (100, 100))), r"face\.jpg: image is 100x100, expected"),
    ("bmp-wrong-size", "error", decoding(lambda: pillow("BMP", (64, 112))), r"face\.jpg: image is 112x64, expected"),
    ("truncated-png", "error", decoding(lambda: truncated(pillow("PNG"))), CANNOT),
    ("bomb-header-any-size", "error", decoding(lambda: jpeg_claiming(20000, 20000), image_size=None),
     r"face\.jpg: image is 20000x20000 = 400000000 pixels, above the limit of 64000000 .*refused before decoding"),
    ("bomb-header-aligned", "error", decoding(lambda: jpeg_claiming(20000, 20000)),
     r"face\.jpg: image is 20000x20000, expected aligned 112x112"),
    ("bomb-png", "error", decoding(lambda: png_claiming(9000, 8000), image_size=None),
     r"face\.jpg: image is 8000x9000 = 72000000 pixels, above the limit of 64000000"),
    ("bomb-png-huge", "error", decoding(lambda: png_claiming(20000, 20000), image_size=None),
     CANNOT + r" \(DecompressionBombError: Image size \(400000000 pixels\) exceeds limit"),
    ("check-bomb-png", "error", decoding(lambda: png_claiming(9000, 8000), check_only=True),
     r"face\.jpg: image is 8000x9000 = 72000000 pixels, above the limit"),
    ("max-pixels-garbage", "error", decoding(face, env="lots"),
     r"KERAS_INSIGHTFACE_MAX_PIXELS='lots': expected a positive"),
    ("max-pixels-negative", "error", decoding(face, env="-5"),
     r"KERAS_INSIGHTFACE_MAX_PIXELS='-5': expected a positive"),
    ("max-pixels-small", "error", decoding(face, env="1000", image_size=None),
     r"face\.jpg: image is 112x112 = 12544 pixels, above the limit of 1000"),
    ("jpeg-trailing-bytes", "ok", decoding(lambda: face() + b"camera maker notes" * 10), DECODED),
    ("progressive-jpeg", "ok", decoding(lambda: pillow("JPEG", progressive=True)), DECODED),
    ("grey-jpeg", "ok", decoding(lambda: pillow("JPEG", mode="L")), DECODED),
    ("cmyk-jpeg", "ok", decoding(lambda: pillow("JPEG", mode="CMYK")), DECODED),
    ("grey-png", "ok", decoding(lambda: pillow("PNG", mode="L")), DECODED),
    ("palette-png", "ok", decoding(lambda: pillow("PNG", mode="P")), DECODED),
    ("rgba-png", "ok", decoding(lambda: pillow("PNG", mode="RGBA")), DECODED),
    ("bmp", "ok", decoding(lambda: pillow("BMP")), DECODED),
    ("max-pixels-large", "ok", decoding(face, env="100000000"), DECODED),
    ("check-gif", "error", decoding(lambda: pillow("GIF"), check_only=True), NOT_READABLE),
    ("check-tiff", "error", decoding(lambda: pillow("TIFF"), check_only=True), NOT_READABLE),
    ("check-text", "error", decoding(lambda: b"#!/bin/sh\necho hello\n", check_only=True), NOT_READABLE),
    ("check-empty", "error", decoding(lambda: b"", check_only=True), NOT_READABLE),
    ("check-corrupt-jpeg", "error", decoding(corrupt_jpeg, check_only=True), NOT_READABLE),
    ("check-bomb", "error", decoding(lambda: jpeg_claiming(20000, 20000), check_only=True),
     r"face\.jpg: image is 20000x20000 = 400000000 pixels, above the limit"),
    ("check-max-pixels-garbage", "error", decoding(face, check_only=True, env="1e6"),
     r"KERAS_INSIGHTFACE_MAX_PIXELS='1e6'"),
    ("check-png", "ok", decoding(lambda: pillow("PNG", (96, 80)), check_only=True), r"header \(96, 80\)"),
)


# ---------------------------------------------------------- 2. data/recordio.py, data/insightface_rec.py, loader

LABELS = (0, 0, 0, 0, 1, 1, 1, 1)
MAGIC = struct.pack("<I", 0xCED7230A)
SPLIT_PAYLOAD = face(0) + b"\0" * (-len(face(0)) % 4) + MAGIC + b"bytes after the end marker"


def rec_dataset(folder, labels=LABELS, payloads=None):
    """An insightface ``train.rec``/``.idx``/``property`` of ``face(i)`` images (``payloads`` replaces some)."""
    from keras_insightface.data.insightface_rec import write_insightface_rec

    payloads = payloads or {}
    write_insightface_rec(folder, [(payloads.get(i, face(i)), label) for i, label in enumerate(labels)],
                          max(labels) + 1)
    return Path(folder)


def image_record(key, label, data=None):
    from keras_insightface.data.recordio import pack_header

    return pack_header(label, id=key) + (face(key) if data is None else data)


def raw_rec(folder, records):
    """A ``train.rec``/``.idx`` of ``(key, payload)`` records as given (any layout)."""
    from keras_insightface.data.recordio import RecordWriter

    Path(folder).mkdir(parents=True, exist_ok=True)
    with RecordWriter(Path(folder) / "train.rec", Path(folder) / "train.idx") as writer:
        for key, payload in records:
            writer.write(key, payload)


def headerless(labels, property_text=None):
    """``make``: a header-less ``.rec``, image ``i`` under key ``i`` with label ``labels[i]`` (and a ``property``)."""
    def make(folder):
        raw_rec(folder, [(key, image_record(key, label)) for key, label in enumerate(labels)])
        if property_text is not None:
            write(Path(folder) / "property", property_text)

    return make


def with_header(first, end, image_keys=(1, 2, 3, 4), identities=()):
    """``make``: a ``.rec`` whose header record claims images ``[1, first)`` and identities ``[first, end)``."""
    from keras_insightface.data.recordio import pack_header

    def make(folder):
        records = [(0, pack_header([first, end]))] + [(key, image_record(key, 0)) for key in image_keys]
        raw_rec(folder, records + [(key, pack_header([1, 2])) for key in identities])

    return make


def idx_rows(folder):
    return [[int(v) for v in line.split("\t")] for line in (Path(folder) / "train.idx").read_text().splitlines()]


def set_idx(folder, rows):
    (Path(folder) / "train.idx").write_text("".join(f"{key}\t{offset}\n" for key, offset in rows))


def offset(folder, key):
    return dict(idx_rows(folder))[key]


def patch(path, at, data):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def cut(path, count):
    Path(path).write_bytes(Path(path).read_bytes()[:-count])


def swap_idx(folder, a, b):
    rows = dict(idx_rows(folder))
    rows[a], rows[b] = rows[b], rows[a]
    set_idx(folder, sorted(rows.items()))


def set_lrec(folder, key, cflag, length):
    patch(Path(folder) / "train.rec", offset(folder, key) + 4, struct.pack("<I", (cflag << 29) | length))


def valid(*damages, **kwargs):
    """``make``: ``rec_dataset(folder, **kwargs)``, then each ``damage(folder)``."""
    def make(folder):
        rec_dataset(folder, **kwargs)
        for damage in damages:
            damage(folder)

    return make


def read_rec(folder):
    """Open the ``.rec`` folder and decode every image."""
    from keras_insightface.data.decode import decode_image
    from keras_insightface.data.insightface_rec import InsightfaceRec

    ds = InsightfaceRec(folder)
    labels = []
    for i in range(len(ds)):
        data, label = ds[i]
        decode_image(data)
        labels.append(label)
    return f"{len(ds)} images, {ds.num_classes} classes, labels {labels}"


def read_split(folder):
    """``read_rec``, and whether image 0 was stored in parts and comes back whole."""
    from keras_insightface.data.insightface_rec import InsightfaceRec

    summary = read_rec(folder)
    head = (Path(folder) / "train.rec").read_bytes()[offset(folder, 1) :][:8]
    return (f"{summary}; key 1 starts with continuation flag {struct.unpack('<II', head)[1] >> 29}; "
            f"payload intact: {InsightfaceRec(folder)[0][0] == SPLIT_PAYLOAD}")


def decode_one(strict, index=0):
    """A reader: the training loader's ``_Decode.one(index)`` over the ``.rec`` folder."""
    def read(folder):
        from keras_insightface.data.insightface_rec import InsightfaceRec
        from keras_insightface.data.loader import _Decode

        image, label, skipped, record = _Decode(InsightfaceRec(folder), (112, 112), strict).one(index)
        read = f"record {record} read" if skipped < 0 else f"record {skipped} skipped, record {record} read instead"
        return f"{read}: {image.shape} label {label}"

    return read


def open_dataset(folder):
    from keras_insightface.data.sources import open_source

    source = open_source(folder)
    return f"{len(source)} images, {source.num_classes} classes"


def rec_case(make, read=read_rec):
    """Build the ``.rec`` folder ``case/rec`` with ``make`` and read it with ``read``."""
    def build(ctx):
        folder = ctx.tmp / "rec"
        make(folder)
        return Probe(lambda: read(folder))

    return build


def rewrite_rec(samples):
    """A writer case over a valid dataset: ``write_insightface_rec`` of the streamed ``samples`` fails and the
    previous dataset is left as it was, with no temporary file."""
    def build(ctx):
        from keras_insightface.data.insightface_rec import write_insightface_rec

        folder = rec_dataset(ctx.tmp / "rec")
        return Probe(lambda: write_insightface_rec(folder, iter(samples), 2), unchanged(folder))

    return build


def read_only_rec(ctx):
    """A dataset in a read-only folder with its ``.idx`` missing: the index is rebuilt into the user cache."""
    import pytest

    if is_root():
        pytest.skip("root ignores file permissions")
    folder = rec_dataset(ctx.tmp / "rec")
    (folder / "train.idx").unlink()
    folder.chmod(0o555)

    def after():
        assert not (folder / "train.idx").exists()
        assert list((Path(os.environ["XDG_CACHE_HOME"]) / "keras_insightface" / "idx").glob("*.idx"))

    return Probe(lambda: read_rec(folder), after, lambda: folder.chmod(0o755))


ALL_READ = r"8 images, 2 classes, labels \[0, 0, 0, 0, 1, 1, 1, 1\]"
REBUILT = r"train\.idx: {}; rebuilding the index from .*train\.rec.*" + ALL_READ
STALE = r"train\.rec: index key 1 points at the record of image 2: .*train\.idx does not match the \.rec"

table(
    "recordio",
    ("truncated-rec", "error", rec_case(valid(lambda f: cut(f / "train.rec", 30))),
     r"train\.rec: truncated record at offset \d+: it needs \d+ bytes but the file ends at byte \d+"),
    ("truncated-rec-no-idx", "error",
     rec_case(valid(lambda f: cut(f / "train.rec", 1000), lambda f: os.remove(f / "train.idx"))),
     r"train\.rec: truncated record at offset \d+"),
    ("bad-magic", "error", rec_case(valid(lambda f: patch(f / "train.rec", offset(f, 3), b"\0" * 4))),
     r"train\.rec: offset \d+: bad magic 0x00000000, expected 0xced7230a"),
    ("idx-missing", "recovered", rec_case(valid(lambda f: os.remove(f / "train.idx"))),
     REBUILT.format("index file missing")),
    ("idx-empty", "recovered", rec_case(valid(lambda f: set_idx(f, []))),
     REBUILT.format(r"the index is empty but the record file holds \d+ bytes")),
    ("idx-offset-past-end", "recovered", rec_case(valid(lambda f: set_idx(f, idx_rows(f)[:-1] + [[10, 10**9]]))),
     REBUILT.format(r"key 10 has offset 1000000000, past the end of the \d+-byte record file")),
    ("idx-last-line-missing", "recovered", rec_case(valid(lambda f: set_idx(f, idx_rows(f)[:-1]))),
     REBUILT.format(r"the last record \(key 9 at offset \d+\) ends at byte \d+, the file has \d+ bytes")),
    ("idx-into-a-record", "recovered",
     rec_case(valid(lambda f: set_idx(f, [[k, o + 8 * (k == 5)] for k, o in idx_rows(f)]))),
     REBUILT.format(r".*train\.rec: key 5 at offset \d+: bad magic 0x[0-9a-f]{8}, expected 0xced7230a")),
    ("idx-garbage-text", "error", rec_case(valid(lambda f: write(f / "train.idx", "this is not an index\n"))),
     r"train\.idx: line 1 is 'this is not an index', expected 'key<TAB>offset'"),
    ("idx-binary", "error", rec_case(valid(lambda f: write(f / "train.idx", random_bytes()))),
     r"train\.idx: index file is not ASCII text"),
    ("idx-duplicate-key", "error", rec_case(valid(lambda f: set_idx(f, [[k or 1, o] for k, o in idx_rows(f)]))),
     r"train\.idx: key 1 appears more than once"),
    ("idx-swapped-records", "error", rec_case(valid(lambda f: swap_idx(f, 1, 2))), STALE, DatasetError),
    ("idx-swapped-loader-lenient", "error", rec_case(valid(lambda f: swap_idx(f, 1, 2)), decode_one(strict=False)),
     STALE, DatasetError),
    ("loader-corrupt-image", "skip", rec_case(valid(payloads={0: corrupt_jpeg()}), decode_one(strict=False)),
     r"record 0 skipped, record 1 read instead: \(112, 112, 3\) label 0"),
    ("loader-wrong-size-image", "skip", rec_case(valid(payloads={2: face(0, (96, 96))}), decode_one(False, 2)),
     r"record 2 skipped, record 3 read instead: \(112, 112, 3\) label 0"),
    ("loader-png-payload", "ok", rec_case(valid(payloads={0: pillow("PNG")}), decode_one(False)),
     r"record 0 read: \(112, 112, 3\) label 0"),
    ("loader-strict", "error", rec_case(valid(payloads={0: corrupt_jpeg()}), decode_one(strict=True)),
     r"train\.rec record 0: cannot decode image"),
    ("loader-all-unreadable", "error",
     rec_case(valid(labels=(0,) * 9 + (1,) * 9, payloads=dict.fromkeys(range(18), b"GIF89a")), decode_one(False)),
     r"train\.rec record 0 and the 16 records after it are all unreadable"),
    ("header-impossible-range", "error", rec_case(with_header(5, 3)),
     r"train\.rec: key 0: header labels \[5, 3\] are not a valid layout"),
    ("header-more-images-than-records", "error", rec_case(with_header(99, 101)),
     r"train\.rec: key 0: header says there are 98 images but the index holds only 5 records"),
    ("header-image-key-missing", "error", rec_case(with_header(5, 7, (1, 2, 4), (5, 6))),
     r"train\.rec: header says images are keys 1\.\.4 but key 3 is not in the index"),
    ("header-fractional", "error", rec_case(with_header(2.5, 4)),
     r"train\.rec: key 0: label 2\.5 is not an integer class id"),
    ("property-not-numbers", "error", rec_case(valid(lambda f: write(f / "property", "abc,112,112\n"))),
     r"rec/property: property is 'abc,112,112', expected 'num_classes,height,width'"),
    ("property-binary", "error", rec_case(valid(lambda f: write(f / "property", b"\xff\xfe\x00"))),
     r"rec/property: property file is not ASCII text"),
    ("property-count-mismatch", "error", rec_case(valid(lambda f: write(f / "property", "5,112,112\n"))),
     r"rec/property: num_classes 5 but the header record holds 2 identities"),
    ("headerless", "ok", rec_case(headerless([0, 1, 0, 1])), r"4 images, 2 classes, labels \[0, 1, 0, 1\]"),
    ("headerless-stray-label", "error", rec_case(headerless([0, 1, 2, 9])),
     r"train\.rec: the images hold 4 distinct labels but the largest label is 9, so 10 are counted classes; "
     r"6 classes have no image \(first: 3\)"),
    ("headerless-property-too-many", "error",
     rec_case(headerless([0, 1, 2], "5,112,112")),
     r"train\.rec: the images hold 3 distinct labels but .*rec/property says 5 classes; 2 classes have no image"),
    ("negative-label", "error", rec_case(headerless([0, -1, 1])),
     r"train\.rec: image 1 \(key 1\) has label -1, expected 0\.\.1"),
    ("fractional-label", "error", rec_case(headerless([0, 1.5, 1])),
     r"train\.rec: key 1: label 1\.5 is not an integer class id"),
    ("label-out-of-range", "error",
     rec_case(valid(lambda f: patch(f / "train.rec", offset(f, 3) + 12, struct.pack("<f", 7.0)))),
     r"train\.rec: key 3 has label 7, expected 0\.\.1"),
    ("short-record", "error", rec_case(lambda f: raw_rec(f, [(0, image_record(0, 0)), (1, b"short")])),
     r"train\.rec: key 1: IRHeader: record of 5 bytes is shorter than 24"),
    ("label-count-overclaims", "error",
     rec_case(lambda f: raw_rec(f, [(0, image_record(0, 0)), (1, struct.pack("<IfQQ", 1000, 0, 1, 0) + b"x" * 8)])),
     r"train\.rec: key 1: IRHeader: flag 1000 needs 4024 bytes but the record has 32"),
    ("empty-rec", "error", rec_case(lambda f: write(f / "train.rec", b""), open_dataset), r"rec: zero classes"),
    ("folder-without-rec", "error", rec_case(lambda f: write(f / "property", "2,112,112")),
     r"rec: folder has no train\.rec"),
    ("record-in-parts", "ok", rec_case(valid(payloads={0: SPLIT_PAYLOAD}), read_split),
     ALL_READ + r"; key 1 starts with continuation flag 1; payload intact: True"),
    ("length-overflow", "error", rec_case(valid(lambda f: set_lrec(f, 3, 0, 2**29 - 1))),
     r"train\.rec: key 3 at offset \d+: truncated record \(\d+ of its 536870911 bytes before the end of the file\)"),
    ("length-overflow-no-idx", "error",
     rec_case(valid(lambda f: set_lrec(f, 3, 0, 2**29 - 1), lambda f: os.remove(f / "train.idx"))),
     r"train\.rec: truncated record at offset \d+: it needs 536870920 bytes but the file ends at byte \d+"),
    ("continuation-flag-out-of-sequence", "error",
     rec_case(valid(lambda f: set_lrec(f, 3, 2, len(image_record(3, 0))), lambda f: os.remove(f / "train.idx"))),
     r"train\.rec: offset \d+: continuation flag 2 out of sequence"),
    ("continuation-flag-at-record-start", "error",
     rec_case(valid(lambda f: set_lrec(f, 3, 2, len(image_record(3, 0))))),
     r"train\.rec: key 3: record starts with continuation flag 2"),
    ("writer-label-out-of-range", "error", rewrite_rec([(face(0), 0), (face(1), 5)]),
     r"train\.rec: sample 1 has label 5, expected 0\.\.1"),
    ("writer-class-not-contiguous", "error", rewrite_rec([(face(0), 0), (face(1), 1), (face(2), 0)]),
     r"train\.rec: sample 2 has label 0 again after other labels"),
    ("read-only-folder-idx-missing", "recovered", read_only_rec, REBUILT.format("index file missing")),
)


# ------------------------------------------------------------------------------------------ 3. data/sources.py

TREE = {"a/1.jpg": 0, "a/2.jpg": 1, "b/1.jpg": 2, "b/2.jpg": 3}  # file -> face seed
NAMES = np.array(list(TREE))
CLASSES = np.array([0, 0, 1, 1])


def data_tree(ctx, extra=None):
    """``case/data`` with the ``TREE`` images (and ``extra`` files), ``case/outside.jpg`` and ``case/secret.txt``."""
    data = ctx.tmp / "data"
    for name, seed in TREE.items():
        write(data / name, face(seed))
    for name, content in (extra or {}).items():
        write(data / name, content)
    write(ctx.tmp / "outside.jpg", face(9))
    write(ctx.tmp / "secret.txt", "password")
    return data


def describe_source(source):
    """Read every item; name the files by their last two path parts. A file outside the tree is an error here."""
    items = [source[i] for i in range(len(source))]
    assert all(not data.startswith(b"password") for data, _ in items), "a file outside the dataset was read"
    files = ["/".join(Path(os.path.normpath(p)).parts[-2:]) for p in getattr(source, "paths", [])]
    labels = np.asarray(source.labels).tolist()
    return f"{len(items)} images, {source.num_classes} classes, labels {labels}, files {files}"


def listing(text, allow_outside=False, extra=None):
    """A ``list.txt`` (``TMP`` stands for the case folder) beside the ``data_tree``, read by ``list_source``."""
    def build(ctx):
        from keras_insightface.data.sources import list_source

        data = data_tree(ctx, extra)
        path = write(data / "list.txt", text.replace("TMP", str(ctx.tmp)) if isinstance(text, str) else text)
        return Probe(lambda: describe_source(list_source(path, allow_outside)))

    return build


def npz_list(arrays=None, raw=None, allow_outside=False, signed=False, edit=None, rec=None):
    """A ``list.npz`` beside the ``data_tree`` read by ``npz_source``: ``arrays`` (or ``raw`` bytes) written by
    ``np.savez`` or, ``signed``, by ``save_npz`` (then ``edit`` changes the stored arrays, keeping the signature);
    ``rec`` puts the ``.rec`` dataset in that folder under the case folder."""
    def build(ctx):
        from keras_insightface.data.npz_list import save_npz
        from keras_insightface.data.sources import npz_source

        data = data_tree(ctx)
        if rec:
            rec_dataset(ctx.tmp / rec)
        path = data / "list.npz"
        if raw is not None:
            write(path, raw())
        elif signed:
            save_npz(path, **arrays)
        else:
            np.savez(path, **arrays)
        if edit:
            with np.load(path) as stored:
                np.savez(path, **edit(dict(stored)))
        return Probe(lambda: describe_source(npz_source(path, allow_outside)))

    return build


def npz_from_another_user(ctx):
    """An npz list naming ``../secret.txt`` signed with another user's key (another cache folder): brought from
    another account, it is not trusted."""
    from keras_insightface.data.npz_list import save_npz
    from keras_insightface.data.sources import npz_source

    data, own = data_tree(ctx), os.environ["XDG_CACHE_HOME"]
    ctx.monkeypatch.setenv("XDG_CACHE_HOME", str(ctx.tmp / "other_user_cache"))
    save_npz(data / "list.npz", image_names=np.array(["../secret.txt"]), image_classes=np.array([0]))
    ctx.monkeypatch.setenv("XDG_CACHE_HOME", own)
    return Probe(lambda: describe_source(npz_source(data / "list.npz")))


def class_folders(files, strict=False, cache=None):
    """A ``faces`` root of ``files`` (``None``: an empty folder) read by ``folder_source``; ``cache(ctx, root)``
    plants or damages its scan cache first."""
    def build(ctx):
        from keras_insightface.data.sources import folder_source

        root = make_tree(ctx.tmp / "faces", files)
        write(ctx.tmp / "secret.txt", "password")
        if cache:
            cache(ctx, root)
        return Probe(lambda: describe_source(folder_source(root, strict)))

    return build


FACES = {name: face(seed) for name, seed in TREE.items()}


def plant_cache(entries, mac):
    """Plant a scan cache for the current tree listing ``entries`` (class ``a`` -> 0, else 1), signed with
    ``mac(key, files, labels, ignored)``."""
    def plant(ctx, root):
        from keras_insightface.data import scan_cache, sources

        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        key = sources._tree_key(root, classes)
        labels = np.array([0 if e.startswith("a/") else 1 for e in entries])
        np.savez(root / scan_cache.SCAN_CACHE_NAME, key=key, files=np.array(entries), labels=labels,
                 ignored=np.array([], dtype=str), mac=np.array(mac(key, entries, labels, [])))

    return plant


def sign_scan(key, files, labels, ignored):
    from keras_insightface.data.scan_cache import _signed_parts
    from keras_insightface.data.signing import sign

    return sign(*_signed_parts(key, files, labels, ignored))


def scan_then(damage):
    """Scan the tree once (a real, signed cache is written), then ``damage(cache path)``."""
    def cache(ctx, root):
        from keras_insightface.data.scan_cache import SCAN_CACHE_NAME
        from keras_insightface.data.sources import folder_source

        folder_source(root)
        damage(root / SCAN_CACHE_NAME)

    return cache


def open_path(make, **kwargs):
    """``open_source`` of the path ``make(ctx)`` returns."""
    def build(ctx):
        from keras_insightface.data.sources import open_source

        path = make(ctx)
        return Probe(lambda: describe_source(open_source(path, **kwargs)))

    return build


OUTSIDE = r"points outside .*data; entries must stay inside the list's folder \(allow_outside_paths=True"
FOUR = r"4 images, 2 classes, labels \[0, 0, 1, 1\]"
IGNORED = r"faces/\.keras_insightface_scan\.npz: scan cache ignored \({}\); the tree is scanned again.*" + FOUR
NOT_SIGNED = IGNORED.format("it is not signed by this user")
REC = {"rec_path": np.array("rec/train.rec"), "image_classes": np.array(LABELS)}

table(
    "sources",
    ("list", "ok", listing("a/1.jpg\t0\nb/1.jpg\t1\n"),
     r"2 images, 2 classes, labels \[0, 1\], files \['a/1\.jpg', 'b/1\.jpg'\]"),
    ("list-crlf-and-spaces", "ok", listing("a/1.jpg 0\r\n\r\nb/1.jpg   1\r\n"),
     r"2 images, 2 classes, labels \[0, 1\]"),
    ("list-name-with-spaces", "ok", listing("a/my face.jpg\t0\nb/1.jpg\t1\n", extra={"a/my face.jpg": face(4)}),
     r"files \['a/my face\.jpg', 'b/1\.jpg'\]"),
    ("list-dotdot", "error", listing("a/1.jpg\t0\n../outside.jpg\t1\n"),
     r"data/list\.txt:2: '\.\./outside\.jpg' " + OUTSIDE),
    ("list-dotdot-inside-path", "error", listing("a/../../secret.txt\t0\n"),
     r"list\.txt:1: 'a/\.\./\.\./secret\.txt' " + OUTSIDE),
    ("list-absolute", "error", listing("TMP/outside.jpg\t0\n"), r"list\.txt:1: '/.*/outside\.jpg' " + OUTSIDE),
    ("list-home", "error", listing("~/outside.jpg\t0\n"), r"list\.txt:1: '~/outside\.jpg' " + OUTSIDE),
    ("list-nul-byte", "error", listing("a/1.jpg\0.png\t0\n"), r"list\.txt:1: 'a/1\.jpg\\x00\.png' is not a file path"),
    ("list-missing-file", "error", listing("a/1.jpg\t0\na/9.jpg\t0\n"),
     r"list\.txt: 1 listed images are missing, first: .*data/a/9\.jpg"),
    ("list-folder-entry", "error", listing("a\t0\n"), r"list\.txt: 1 listed images are missing, first: .*data/a$"),
    ("list-label-word", "error", listing("a/1.jpg\tzero\n"),
     r"list\.txt:1: expected 'image_path<TAB>label', got 'a/1\.jpg\\tzero'"),
    ("list-label-fraction", "error", listing("a/1.jpg\t1.5\n"), r"list\.txt:1: expected 'image_path<TAB>label'"),
    ("list-negative-label", "error", listing("a/1.jpg\t0\nb/1.jpg\t-2\n"), r"list\.txt:2: negative label -2"),
    ("list-no-label", "error", listing("a/1.jpg\t0\nb/1.jpg\n"),
     r"list\.txt:2: expected 'image_path<TAB>label', got 'b/1\.jpg'"),
    ("list-three-fields", "error", listing("a/1.jpg 0 extra\n"), r"list\.txt:1: expected 'image_path<TAB>label'"),
    ("list-empty", "error", listing(""), r"list\.txt: list file holds no images"),
    ("list-blank-lines", "error", listing("\n  \n\t\n"), r"list\.txt: list file holds no images"),
    ("list-binary", "error", listing(random_bytes()),
     r"list\.txt: not a text list file of 'image_path<TAB>label' lines"),
    ("list-dotdot-allowed", "ok", listing("../outside.jpg\t0\na/1.jpg\t1\n", allow_outside=True),
     r"2 images, 2 classes, labels \[0, 1\], files \['case/outside\.jpg', 'a/1\.jpg'\]"),
    ("list-absolute-allowed", "ok", listing("TMP/outside.jpg\t0\na/1.jpg\t1\n", allow_outside=True),
     r"files \['case/outside\.jpg', 'a/1\.jpg'\]"),
    ("npz", "ok", npz_list({"image_names": NAMES, "image_classes": CLASSES}), FOUR + r", files \['a/1\.jpg'"),
    ("npz-with-embeddings", "ok",
     npz_list({"image_names": NAMES, "image_classes": CLASSES, "embeddings": np.ones((4, 8))}), FOUR),
    ("npz-integral-float-classes", "ok", npz_list({"image_names": NAMES, "image_classes": CLASSES.astype(float)}),
     FOUR),
    ("npz-rec-path", "ok", npz_list(REC, rec="data/rec"), ALL_READ),
    ("npz-rec-subset", "ok",
     npz_list({**REC, "image_indices": np.array([0, 5]), "image_classes": np.array([0, 1])}, rec="data/rec"),
     r"2 images, 2 classes, labels \[0, 1\]"),
    ("npz-name-dotdot", "error",
     npz_list({"image_names": np.array(["../outside.jpg"]), "image_classes": np.array([0])}),
     r"list\.npz: image_names\[0\]: '\.\./outside\.jpg' " + OUTSIDE),
    ("npz-name-absolute", "error", npz_list({"image_names": np.array(["/etc/passwd"]), "image_classes": np.array([0])}),
     r"list\.npz: image_names\[0\]: '/etc/passwd' " + OUTSIDE),
    ("npz-name-dotdot-allowed", "ok",
     npz_list({"image_names": np.array(["../outside.jpg", "a/1.jpg"]), "image_classes": np.array([0, 1])},
              allow_outside=True),
     r"2 images, 2 classes"),
    ("npz-rec-path-outside", "error", npz_list({**REC, "rec_path": np.array("../rec/train.rec")}, rec="rec"),
     r"list\.npz: rec_path: '\.\./rec/train\.rec' " + OUTSIDE),
    ("npz-rec-path-missing", "error", npz_list({**REC, "rec_path": np.array("nope/train.rec")}),
     r"list\.npz: rec_path 'nope/train\.rec': .*nope/train\.rec: no such record file or folder"),
    ("npz-missing-classes", "error", npz_list({"image_names": NAMES}), r"list\.npz: npz list lacks image_classes"),
    ("npz-missing-names", "error", npz_list({"image_classes": CLASSES}), r"list\.npz: npz list lacks image_names"),
    ("npz-both-names-and-rec", "error", npz_list({**REC, "image_names": NAMES}, rec="data/rec"),
     r"list\.npz: npz list holds both image_names and rec_path; keep one"),
    ("npz-length-mismatch", "error", npz_list({"image_names": NAMES, "image_classes": CLASSES[:3]}),
     r"list\.npz: image_names, image_classes \(and embeddings\) must be non-empty and equally long"),
    ("npz-embeddings-count", "error",
     npz_list({"image_names": NAMES, "image_classes": CLASSES, "embeddings": np.ones((3, 8))}),
     r"list\.npz: image_names, image_classes \(and embeddings\) must be non-empty and equally long"),
    ("npz-embeddings-1d", "error", npz_list({"image_names": NAMES, "image_classes": CLASSES, "embeddings": np.ones(4)}),
     r"list\.npz: image_classes must be 1-D and embeddings 2-D"),
    ("npz-classes-2d", "error", npz_list({"image_names": NAMES, "image_classes": CLASSES[:, None]}),
     r"list\.npz: image_classes must be 1-D"),
    ("npz-empty", "error", npz_list({"image_names": NAMES[:0], "image_classes": CLASSES[:0]}),
     r"list\.npz: .*must be non-empty"),
    ("npz-object-arrays", "error", npz_list({"image_names": NAMES.astype(object), "image_classes": CLASSES}),
     r"list\.npz: not a readable npz list \(Object arrays cannot be loaded when allow_pickle=False\)"),
    ("npz-classes-not-numbers", "error",
     npz_list({"image_names": NAMES, "image_classes": np.array(["x", "y", "z", "w"])}),
     r"list\.npz: image_classes or embeddings are not numbers"),
    ("npz-classes-fractional", "error", npz_list({"image_names": NAMES, "image_classes": np.array([0, 0.5, 1, 1])}),
     r"list\.npz: image_classes\[1\] is 0\.5, not an integer class"),
    ("npz-negative-class", "error", npz_list({"image_names": NAMES, "image_classes": np.array([0, -1, 1, 1])}),
     r"list\.npz: negative label -1 in image_classes"),
    ("npz-missing-image", "error",
     npz_list({"image_names": np.array(["a/1.jpg", "c/1.jpg"]), "image_classes": CLASSES[:2]}),
     r"list\.npz: 1 listed images are missing, first: .*data/c/1\.jpg"),
    ("npz-text-file", "error", npz_list(raw=lambda: b"image_names,image_classes\na/1.jpg,0\n"),
     r"list\.npz: not a readable npz list"),
    ("npz-empty-file", "error", npz_list(raw=lambda: b""), r"list\.npz: not a readable npz list"),
    ("npz-truncated", "error", npz_list(raw=lambda: truncated(npz_bytes(image_names=NAMES, image_classes=CLASSES))),
     r"list\.npz: not a readable npz list"),
    ("npz-indices-out-of-range", "error",
     npz_list({**REC, "image_indices": np.array([0, 99]), "image_classes": np.array([0, 1])}, rec="data/rec"),
     r"list\.npz: image_indices holds 99, outside 0\.\.7 of .*train\.rec"),
    ("npz-indices-length", "error", npz_list({**REC, "image_indices": np.array([0, 1, 2])}, rec="data/rec"),
     r"list\.npz: image_indices and image_classes must be equally long"),
    ("npz-classes-differ-from-rec", "error",
     npz_list({**REC, "image_classes": np.array([1] + list(LABELS[1:]))}, rec="data/rec"),
     r"list\.npz: image_classes\[0\] is 1 but .*train\.rec image 0 has label 0"),
    ("npz-classes-count-differs-from-rec", "error",
     npz_list({**REC, "image_classes": np.array([0, 0, 1])}, rec="data/rec"),
     r"list\.npz: image_classes holds 3 labels but .*train\.rec has 8 images"),
    ("npz-renumbering-not-one-to-one", "error",
     npz_list({**REC, "image_indices": np.array([0, 5]), "image_classes": np.array([0, 0])}, rec="data/rec"),
     r"list\.npz: image_classes value 0 is paired with \[0, 1\]; image_classes must renumber"),
    ("npz-signed-dotdot", "ok",
     npz_list({"image_names": np.array(["../outside.jpg", "a/1.jpg"]), "image_classes": np.array([0, 1])}, signed=True),
     r"2 images, 2 classes, labels \[0, 1\], files \['case/outside\.jpg', 'a/1\.jpg'\]"),
    ("npz-signed-then-edited", "error",
     npz_list({"image_names": np.array(["../outside.jpg", "a/1.jpg"]), "image_classes": np.array([0, 1])}, signed=True,
              edit=lambda a: {**a, "image_names": np.array(["../secret.txt", "a/1.jpg"])}),
     r"list\.npz: image_names\[0\]: '\.\./secret\.txt' " + OUTSIDE),
    ("npz-signed-by-another-user", "error", npz_from_another_user,
     r"list\.npz: image_names\[0\]: '\.\./secret\.txt' " + OUTSIDE),
    ("folders-no-subfolders", "error", class_folders({"1.jpg": face()}), r"faces: no class subfolders"),
    ("folders-empty-root", "error", class_folders({}), r"faces: no class subfolders"),
    ("folders-without-images", "error", class_folders({"a": None, "b": None}),
     r"faces: 2 class subfolders but no images"),
    ("folders-only-other-files", "error", class_folders({"a/notes.txt": "x", "b/1.gif": pillow("GIF")}),
     r"faces: 2 class subfolders but no images"),
    ("folders-non-image-files", "skip", class_folders({**FACES, "a/notes.txt": "x", "b/Thumbs.db": b"\0"}),
     r"faces: 2 files in class folders are not images \(\.jpg, \.jpeg, \.png, \.bmp\), first: a/notes\.txt; they are "
     r"left out.*" + FOUR),
    ("folders-non-image-files-strict", "error", class_folders({**FACES, "a/notes.txt": "x"}, strict=True),
     r"faces: 1 files in class folders are not images .*first: a/notes\.txt$"),
    ("folders-numeric-classes", "ok", class_folders({"10/1.jpg": face(1), "2/1.jpg": face(2), "1/1.jpg": face(3)}),
     r"labels \[0, 1, 2\], files \['1/1\.jpg', '2/1\.jpg', '10/1\.jpg'\]"),
    ("folders-upper-case-suffix", "ok", class_folders({"a/1.JPG": face(1), "b/1.Png": pillow("PNG")}),
     r"2 images, 2 classes, labels \[0, 1\]"),
    ("scan-cache-planted-unsigned", "skip",
     class_folders(FACES, cache=plant_cache(["a/1.jpg", "../secret.txt"], lambda *_: "0" * 64)),
     NOT_SIGNED),
    ("scan-cache-planted-signed-outside", "skip",
     class_folders(FACES, cache=plant_cache(["a/1.jpg", "../secret.txt"], sign_scan)),
     IGNORED.format("it lists files outside the class folders")),
    ("scan-cache-wrong-class", "skip", class_folders(FACES, cache=plant_cache(["a/1.jpg", "c/x.jpg"], sign_scan)),
     IGNORED.format("it lists files outside the class folders")),
    ("scan-cache-unsigned", "skip", class_folders(FACES, cache=plant_cache(list(TREE), lambda *_: "")), NOT_SIGNED),
    ("scan-cache-corrupt", "ok", class_folders(FACES, cache=scan_then(lambda p: write(p, random_bytes()))), FOUR),
    ("scan-cache-truncated", "ok", class_folders(FACES, cache=scan_then(lambda p: write(p, truncated(p.read_bytes())))),
     FOUR),
    ("scan-cache-stale", "ok",
     class_folders(FACES, cache=scan_then(lambda p: write(p.parent / "b" / "3.jpg", face(7)))),
     r"5 images, 2 classes, labels \[0, 0, 1, 1, 1\]"),
    ("open-missing-path", "error", open_path(lambda ctx: ctx.tmp / "nope"), r"case/nope: dataset path does not exist"),
    ("open-too-few-per-class", "error", open_path(data_tree, image_per_class=5),
     r"data: no identity has 5 or more images"),
)


# ------------------------------------------------------------------------------------------ 4. data/convert.py


def converting(files, convert, before=None, rec=False):
    """A ``faces`` tree of ``files`` (``rec``: with a ``.rec`` dataset in ``faces/rec``), then ``convert(faces,
    case/out)``; ``before(out)`` puts files in the output folder first. Afterwards the output folder holds exactly
    what it held before: nothing half-written, nothing lost."""
    def build(ctx):
        root, out = ctx.tmp / "faces", ctx.tmp / "out"
        for name, data in files.items():
            write(root / name, data)
        if rec:
            rec_dataset(root / "rec")
        out.mkdir(parents=True)
        if before:
            before(out)
        return Probe(lambda: convert(root, out), unchanged(out))

    return build


def folders2rec(root, out):
    from keras_insightface.data.convert import folders_to_rec

    return folders_to_rec(root, out)


def rec2folders(root, out):
    from keras_insightface.data.convert import rec_to_folders

    return rec_to_folders(root / "rec", out)


def make_bin(pairs):
    def convert(root, out):
        from keras_insightface.data.convert import make_bin

        return make_bin(root, out / "held_out.bin", pairs)

    return convert


def existing(name, data):
    return lambda out: write(out / name, data)


def round_trip(ctx):
    """folders -> rec -> folders: the same bytes come back (JPEG, PNG and BMP, no re-encoding)."""
    from keras_insightface.data.convert import folders_to_rec, rec_to_folders

    files = {"a/1.jpg": face(1), "a/2.png": pillow("PNG"), "b/1.bmp": pillow("BMP"), "b/2.jpg": face(2) + b"tail"}
    for name, data in files.items():
        write(ctx.tmp / "faces" / name, data)

    def run():
        count = folders_to_rec(ctx.tmp / "faces", ctx.tmp / "rec").images
        rec_to_folders(ctx.tmp / "rec", ctx.tmp / "back")
        back = sorted(snapshot(ctx.tmp / "back").values())
        return f"{count} images packed, same bytes back: {back == sorted(files.values())}"

    return Probe(run)


EIGHT = {f"{c}/{i}.jpg": face(4 * c + i) for c in range(2) for i in range(4)}
PNGS = {f"{c}/{i}.png": pillow("PNG") for c in range(4) for i in range(5)}

table(
    "convert",
    ("folders2rec-text-named-jpg", "error", converting({**FACES, "a/3.jpg": "<html>not found</html>"}, folders2rec),
     r"faces/a/3\.jpg: not a readable JPEG, PNG or BMP image"),
    ("folders2rec-gif-named-jpg", "error", converting({**FACES, "b/3.jpg": pillow("GIF")}, folders2rec),
     r"faces/b/3\.jpg: not a readable JPEG, PNG or BMP image"),
    ("folders2rec-bomb", "error", converting({**FACES, "b/3.jpg": jpeg_claiming(20000, 20000)}, folders2rec),
     r"faces/b/3\.jpg: image is 20000x20000 = 400000000 pixels, above the limit"),
    ("folders2rec-over-existing-rec", "error",
     converting(FACES, folders2rec, before=existing("train.rec", b"old data")),
     r"out/train\.rec: already exists, not overwritten"),
    ("rec2folders-into-non-empty", "error", converting({}, rec2folders, existing("keep.txt", "mine"), rec=True),
     r"out: output folder exists and is not empty"),
    ("make-bin-too-few-pairs", "error", converting(FACES, make_bin(10)),
     r"faces -> .*held_out\.bin: make_pairs: only 2 distinct genuine pairs, 10 needed"),
    ("make-bin-over-existing-pack", "error", converting(FACES, make_bin(10), existing("held_out.bin", b"old pack")),
     r"faces -> .*held_out\.bin: make_pairs: only 2 distinct genuine pairs"),
    ("make-bin-fewer-pairs-than-folds", "error", converting(EIGHT, make_bin(9)),
     r"make_pairs: num_pairs must be at least 10, got 9"),
    ("make-bin-png-images", "error", converting(PNGS, make_bin(10)),
     r"faces/\d/\d\.png: not a JPEG; \.bin packs hold JPEG bytes"),
    ("round-trip", "ok", round_trip, r"4 images packed, same bytes back: True"),
)


# ------------------------------------------------------------------------------------------ 5. data/binpack.py


class Call:
    """An object that unpickles as the call ``function(*args)``: what a malicious pack holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def load_pack(path):
    from keras_insightface.data.binpack import load_bin
    from keras_insightface.data.decode import is_jpeg

    images, issame = load_bin(path)
    return f"{len(images)} images, {len(issame)} pairs, issame {issame.tolist()}, JPEGs {all(map(is_jpeg, images))}"


def evaluation_set(path):
    """The evaluation path: ``VerificationSet`` decodes the pack into one array."""
    from keras_insightface.evaluation.verification import VerificationSet

    pack = VerificationSet(path)
    return f"images {pack.images.shape}, {len(pack.issame)} pairs, {int(pack.issame.sum())} genuine"


def pack(payload=None, raw=None, read=load_pack, protocol=4):
    """``case/pack.bin`` holding the pickle of ``payload`` (or of ``payload(ctx)``; or ``raw(ctx)`` bytes), read by
    ``read``. Nothing may appear in the case folder but the pack (a pickle that ran code would leave a file)."""
    def build(ctx):
        path = ctx.tmp / "pack.bin"
        if raw is not None:
            write(path, raw(ctx))
        else:
            write(path, pickle.dumps(payload(ctx) if callable(payload) else payload, protocol=protocol))

        def after():
            assert sorted(p.name for p in ctx.tmp.iterdir()) == ["pack.bin"], "the pack wrote a file: it ran code"

        return Probe(lambda: read(path), after)

    return build


def no_pack(folder):
    """``case/pack.bin`` missing, or (``folder``) a folder of that name."""
    def build(ctx):
        path = ctx.tmp / "pack.bin"
        if folder:
            path.mkdir(parents=True)
        return Probe(lambda: load_pack(path))

    return build


def pairs(count, genuine=None, images=None):
    """A pack payload of ``count`` pairs (the first half genuine), images ``face(i)`` or ``images(i)``."""
    genuine = count // 2 if genuine is None else genuine
    return [images(i) if images else face(i % 7) for i in range(2 * count)], [i < genuine for i in range(count)]


FOUR_JPEGS = [face(i) for i in range(4)]
TWO_PAIRS = r"4 images, 2 pairs, issame \[True, False\], JPEGs True"
REFUSED = r"pack\.bin: refusing to unpickle {}: a \.bin pack may only hold lists, tuples, bytes, bools and numpy arrays"
UNREADABLE = r"pack\.bin: not a readable pickle \({}"

table(
    "binpack",
    ("bytes", "ok", pack((FOUR_JPEGS, [True, False])), TWO_PAIRS),
    ("numpy-uint8-entries", "ok", pack(([np.frombuffer(j, np.uint8) for j in FOUR_JPEGS], [True, False])), TWO_PAIRS),
    ("numpy-issame", "ok", pack((FOUR_JPEGS, np.array([True, False]))), TWO_PAIRS),
    ("int-issame", "ok", pack((FOUR_JPEGS, [1, 0])), TWO_PAIRS),
    ("tuple-of-tuples", "ok", pack((tuple(FOUR_JPEGS), (True, False))), TWO_PAIRS),
    ("protocol-2", "ok", pack((FOUR_JPEGS, [True, False]), protocol=2), TWO_PAIRS),
    ("os-system", "error", pack(lambda ctx: (FOUR_JPEGS, [Call(os.system, f"echo pwned > {ctx.tmp / 'pwned'}")])),
     REFUSED.format(r"(posix|nt|os)\.system")),
    ("eval", "error", pack(lambda ctx: ([Call(eval, f"open({str(ctx.tmp / 'pwned')!r}, 'w')")], [True])),
     REFUSED.format(r"builtins\.eval")),
    ("subprocess", "error", pack(lambda ctx: Call(subprocess.Popen, ["touch", str(ctx.tmp / "pwned")])),
     REFUSED.format(r"subprocess\.Popen")),
    ("numpy-load", "error", pack(lambda ctx: Call(np.load, "/etc/passwd")), REFUSED.format(r"numpy\.load")),
    ("not-a-pickle", "error", pack(raw=lambda ctx: b"lfw pairs\n1 2 1\n"), UNREADABLE.format("UnpicklingError")),
    ("empty-file", "error", pack(raw=lambda ctx: b""), UNREADABLE.format("EOFError")),
    ("truncated", "error", pack(raw=lambda ctx: truncated(pickle.dumps((FOUR_JPEGS, [True, False])))),
     UNREADABLE.format("")),
    ("random-bytes", "error", pack(raw=lambda ctx: random_bytes()), UNREADABLE.format("")),
    ("dict", "error", pack({"bins": FOUR_JPEGS, "issame": [True, False]}),
     r"pack\.bin: expected a 2-element \(bins, issame_list\) tuple, got dict"),
    ("three-tuple", "error", pack((FOUR_JPEGS, [True, False], "extra")),
     r"pack\.bin: expected a 2-element .*got tuple of length 3"),
    ("lengths-differ", "error", pack((FOUR_JPEGS[:3], [True, False])), r"pack\.bin: 3 images for 2 pairs, expected 4"),
    ("issame-strings", "error", pack((FOUR_JPEGS, ["yes", "no"])),
     r"pack\.bin: issame entry 0 is str, expected a bool"),
    ("issame-two", "error", pack((FOUR_JPEGS, [1, 2])), r"pack\.bin: issame entry 1 is int, expected a bool"),
    ("issame-dict", "error", pack((FOUR_JPEGS, {0: True})),
     r"pack\.bin: issame_list must be a list or tuple, got dict"),
    ("image-int", "error", pack(([FOUR_JPEGS[0], 7, *FOUR_JPEGS[2:]], [True, False])),
     r"pack\.bin: image entry 1 is int, expected bytes or a uint8 numpy array"),
    ("image-float-array", "error", pack(([np.zeros((112, 112, 3), np.float32)] + FOUR_JPEGS[1:], [True, False])),
     r"pack\.bin: image entry 0 is numpy float32 array"),
    ("images-string", "error", pack(("not images", [True])), r"pack\.bin: images must be a list or tuple, got str"),
    ("missing-file", "error", no_pack(folder=False), r"pack\.bin: file not found"),
    ("folder", "error", no_pack(folder=True), r"pack\.bin: is a folder, expected a \.bin pack"),
    ("evaluation", "ok", pack(pairs(10), read=evaluation_set), r"images \(20, 112, 112, 3\), 10 pairs, 5 genuine"),
    ("evaluation-wrong-size", "error",
     pack(pairs(10, images=lambda i: face(i, (96, 96) if i == 3 else (112, 112))), read=evaluation_set),
     r"pack\.bin: image 3 has shape \(96, 96, 3\), expected \(112, 112, 3\) like image 0"),
    ("evaluation-corrupt-image", "error",
     pack(pairs(10, images=lambda i: corrupt_jpeg() if i == 2 else face(i)), read=evaluation_set),
     r"pack\.bin: image 2: cannot decode image"),
    ("evaluation-gif-image", "error",
     pack(pairs(10, images=lambda i: pillow("GIF") if i == 5 else face(i)), read=evaluation_set),
     r"pack\.bin: image 5: cannot decode image \(not a JPEG, PNG or BMP image\)"),
    ("evaluation-too-few-pairs", "error", pack(pairs(4), read=evaluation_set),
     r"pack\.bin: 4 pairs \(2 genuine\); verification needs at least 10 pairs with both genuine and impostor ones"),
    ("evaluation-only-genuine", "error", pack(pairs(10, genuine=10), read=evaluation_set),
     r"pack\.bin: 10 pairs \(10 genuine\)"),
)


# ------------------------------------------------------------------------------------ 6. evaluation/ijb_meta.py

POINTS = "38.3 51.7 73.5 51.5 56.0 71.7 41.5 92.4 70.7 92.2 0.9"
CSV_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
IJB = {
    "ijbc_face_tid_mid.txt": "0.jpg 1 1\n1.jpg 1 1\n2.jpg 2 2\n3.jpg 3 3\n",
    "ijbc_name_5pts_score.txt": "".join(f"{i}.jpg {POINTS}\n" for i in range(4)),
    "ijbc_template_pair_label.txt": "1 2 1\n2 3 0\n1 3 0\n",
    "ijbc_1N_gallery_G1.csv": CSV_HEADER + "1,10,0.jpg\n1,10,1.jpg\n",
    "ijbc_1N_gallery_G2.csv": CSV_HEADER + "2,20,2.jpg\n",
    "ijbc_1N_probe_mixed.csv": CSV_HEADER + "3,10,3.jpg\n",
}

IJB_KEYS = {name[len("ijbc_"):].rsplit(".", 1)[0]: name for name in IJB}


def ijb(read="1:1", subset="IJBC", **edits):
    """An ``IJBC/meta`` folder of ``IJB``'s files with ``edits`` (file key -> new text, or None: left out; keys
    are the file names without ``ijbc_`` and the suffix), read by ``read_meta`` or ``read_identification_meta``."""
    def build(ctx):
        from keras_insightface.evaluation.ijb_meta import read_identification_meta, read_meta

        files = {**IJB, **{IJB_KEYS[key]: text for key, text in edits.items()}}
        data = ctx.tmp / "ijb"
        data.mkdir(parents=True)
        for name, text in files.items():
            if text is not None:
                write(data / "IJBC" / "meta" / name, text)
        if read == "1:1":
            return Probe(lambda: meta_summary(read_meta(data, subset)))
        return Probe(lambda: ", ".join(f"{name}: {len(templates)} templates"
                                       for name, (templates, _) in read_identification_meta(data, subset).items()))

    return build


def meta_summary(meta):
    return f"{len(meta.names)} images, {len(meta.labels)} pairs, {len(np.unique(meta.templates))} templates"


def lines(key, *replaced):
    """``IJB``'s file ``key`` with line ``i`` replaced by ``text`` for each ``(i, text)`` (1-based; None drops it)."""
    rows = IJB[f"ijbc_{key}"].splitlines()
    for number, text in replaced:
        rows[number - 1] = text
    return "".join(f"{row}\n" for row in rows if row is not None)


MEDIA, POINTS_FILE, PAIRS = "face_tid_mid.txt", "name_5pts_score.txt", "template_pair_label.txt"

table(
    "ijb_meta",
    ("valid", "ok", ijb(), r"4 images, 3 pairs, 3 templates"),
    ("crlf-and-blank-lines", "ok", ijb(face_tid_mid=IJB["ijbc_face_tid_mid.txt"].replace("\n", "\r\n") + "\r\n\r\n"),
     r"4 images, 3 pairs, 3 templates"),
    ("identification", "ok", ijb("1:N"), r"G1: 1 templates, G2: 1 templates, probe: 1 templates"),
    ("no-meta-folder", "error", ijb(**dict.fromkeys(IJB_KEYS)),
     r"ijb: no IJBC/meta folder \(nor meta/\) with the IJB meta files"),
    ("missing-pairs-file", "error", ijb(template_pair_label=None),
     r"ijbc_template_pair_label\.txt: IJB meta file does not exist"),
    ("missing-probe-file", "error", ijb("1:N", **{"1N_probe_mixed": None}),
     r"ijbc_1N_probe_mixed\.csv: IJB meta file does not exist"),
    ("short-line", "error", ijb(face_tid_mid=lines(MEDIA, (2, "1.jpg 1"))),
     r"ijbc_face_tid_mid\.txt:2: expected 'IMAGE TEMPLATE_ID MEDIA_ID', found '1\.jpg 1'"),
    ("long-line", "error", ijb(face_tid_mid=lines(MEDIA, (3, "2.jpg 2 2 extra"))),
     r"ijbc_face_tid_mid\.txt:3: expected 'IMAGE"),
    ("name-dotdot", "error",
     ijb(face_tid_mid=lines(MEDIA, (1, "../0.jpg 1 1")), name_5pts_score=lines(POINTS_FILE, (1, f"../0.jpg {POINTS}"))),
     r"ijbc_face_tid_mid\.txt: record 1 names '\.\./0\.jpg', outside the image folder .*loose_crop"),
    ("name-absolute", "error", ijb(face_tid_mid=lines(MEDIA, (2, "/etc/passwd 1 1"))),
     r"ijbc_face_tid_mid\.txt: record 2 names '/etc/passwd', outside the image folder"),
    ("template-not-a-number", "error", ijb(face_tid_mid=lines(MEDIA, (1, "0.jpg one 1"))),
     r"ijbc_face_tid_mid\.txt:1: field 2 'one' is not a number"),
    ("landmark-not-a-number", "error",
     ijb(name_5pts_score=lines(POINTS_FILE, (2, "1.jpg " + POINTS.replace("51.7", "x", 1)))),
     r"ijbc_name_5pts_score\.txt:2: field 3 'x' is not a number"),
    ("landmark-nan", "error", ijb(name_5pts_score=lines(POINTS_FILE, (1, "0.jpg nan" + POINTS[4:]))),
     r"ijbc_name_5pts_score\.txt:1: landmarks and score must be finite numbers"),
    ("label-two", "error", ijb(template_pair_label=lines(PAIRS, (2, "2 3 2"))),
     r"ijbc_template_pair_label\.txt:2: label 2 is not 0 or 1"),
    ("label-word", "error", ijb(template_pair_label=lines(PAIRS, (1, "1 2 yes"))),
     r"ijbc_template_pair_label\.txt:1: field 3 'yes' is not a number"),
    ("only-genuine-pairs", "error", ijb(template_pair_label="1 2 1\n2 3 1\n"),
     r"ijbc_template_pair_label\.txt: needs both genuine \(1\) and impostor \(0\) pairs"),
    ("unknown-template", "error", ijb(template_pair_label=lines(PAIRS, (2, "2 99 0"))),
     r"ijbc_template_pair_label\.txt: pair 2 \(2 99\) names a template with no image in ijbc_face_tid_mid\.txt"),
    ("empty-pairs", "error", ijb(template_pair_label="\n"), r"ijbc_template_pair_label\.txt: no records"),
    ("name-lists-differ", "error", ijb(name_5pts_score=lines(POINTS_FILE, (2, f"x.jpg {POINTS}"))),
     r"ijbc_name_5pts_score\.txt: record 2 is 'x\.jpg', but ijbc_face_tid_mid\.txt has '1\.jpg'"),
    ("name-counts-differ", "error", ijb(name_5pts_score=lines(POINTS_FILE, (4, None))),
     r"ijbc_name_5pts_score\.txt: 3 images, but ijbc_face_tid_mid\.txt lists 4"),
    ("not-utf8", "error", ijb(face_tid_mid=b"0.jpg 1 1\n\xff\xfe.jpg 1 1\n"),
     r"ijbc_face_tid_mid\.txt: not UTF-8 text"),
    ("gallery-template-two-subjects", "error", ijb("1:N", **{"1N_gallery_G1": CSV_HEADER + "1,10,0.jpg\n1,11,1.jpg\n"}),
     r"ijbc_1N_gallery_G1\.csv:3: template 1 is listed with two subject ids"),
    ("gallery-subject-not-a-number", "error", ijb("1:N", **{"1N_gallery_G2": CSV_HEADER + "2,bob,2.jpg\n"}),
     r"ijbc_1N_gallery_G2\.csv:2: field 2 'bob' is not a number"),
    ("gallery-header-only", "error", ijb("1:N", **{"1N_gallery_G1": CSV_HEADER}),
     r"ijbc_1N_gallery_G1\.csv: no records"),
    ("unknown-subset", "error", ijb(subset="IJBX"), r"--subset 'IJBX': expected one of IJBB, IJBC"),
)


# ---------------------------------------------------------------------------------------- 7. training/config.py

TRAIN = {"data_path": "faces", "save_path": "r50.keras", "basic_model": "r50"}
STAGE = {"loss": "ArcfaceLoss", "loss_config": {"scale": 16}, "epoch": 1}


def config_summary(config):
    return (f"batch_size {config.data.batch_size}, basic_model {config.model.basic_model}, "
            f"epochs {[stage['epoch'] for stage in config.stages]}")


def run_config(train=None, stage=None, content=None, overrides=()):
    """``TrainConfig.from_dict`` of ``TRAIN`` + ``train`` and one ``STAGE`` + ``stage`` (or the whole ``content``),
    after the ``--set`` ``overrides``, as the file ``run.toml``."""
    def build(ctx):
        from keras_insightface.training.config import TrainConfig, apply_overrides

        config = content if content is not None else {"train": {**TRAIN, **(train or {})},
                                                      "stage": [{**STAGE, **(stage or {})}]}
        return Probe(lambda: config_summary(TrainConfig.from_dict(apply_overrides(config, overrides), "run.toml")))

    return build


def config_file(text, name="run.toml"):
    """A config file, read as ``train`` reads it: ``load_config`` then ``TrainConfig.from_dict``."""
    def build(ctx):
        from keras_insightface.training.config import TrainConfig, load_config

        path = write(ctx.tmp / name, text) if text is not None else ctx.tmp / name
        return Probe(lambda: config_summary(TrainConfig.from_dict(load_config(path), str(path))))

    return build


def values(ctx):
    from keras_insightface.training.config import parse_value

    texts = ("r100", "[1, 2]", "true", "1e-3", '"quoted"', "{a = 1}")
    return Probe(lambda: repr([parse_value(text) for text in texts]))


VALID_TOML = '[train]\ndata_path = "faces"\nsave_path = "r50.keras"\nbasic_model = "r50"\nbatch_size = 256\n\n' \
             '[[stage]]\nloss = "ArcfaceLoss"\nloss_config = {scale = 16}\nepoch = 5\n'
TRAIN_ERROR = r"run\.toml: \[train\] "
STAGE_ERROR = r"run\.toml: \[\[stage\]\] "
NO_ENTRY = r"override '{}': no such entry in the config \(.*\); list items are counted from 0"

table(
    "config",
    ("valid", "ok", run_config(), r"batch_size 128, basic_model r50, epochs \[1\]"),
    ("integral-float-batch", "ok", run_config({"batch_size": 256.0}), r"batch_size 256,"),
    ("file", "ok", config_file(VALID_TOML), r"batch_size 256, basic_model r50, epochs \[5\]"),
    ("json-file", "ok", config_file(json.dumps({"train": TRAIN, "stage": [STAGE]}), "run.json"), r"batch_size 128"),
    ("overrides", "ok", run_config(overrides=["stage.0.epoch=3", "train.batch_size=64", 'train.basic_model="r100"']),
     r"batch_size 64, basic_model r100, epochs \[3\]"),
    ("parse-value", "ok", values, r"\['r100', \[1, 2\], True, 0\.001, 'quoted', \{'a': 1\}\]"),
    ("batch-size-string", "error", run_config({"batch_size": "big"}),
     TRAIN_ERROR + r"batch_size: expected an integer, received 'big'"),
    ("batch-size-bool", "error", run_config({"batch_size": True}), r"batch_size: expected an integer, received True"),
    ("batch-size-fraction", "error", run_config({"batch_size": 1.5}),
     r"batch_size: expected an integer, received 1\.5"),
    ("batch-size-negative", "error", run_config({"batch_size": -8}),
     TRAIN_ERROR + r"batch_size: must be positive, received -8"),
    ("unknown-key-typo", "error", run_config({"batchsize": 64}),
     TRAIN_ERROR + r"unknown options \['batchsize'\]; the options are data_path, .*; "
                   r"did you mean 'batch_size' for 'batchsize'\?$"),
    ("unknown-key", "error", run_config({"colour": "red"}),
     TRAIN_ERROR + r"unknown options \['colour'\]; the options are data_path, [^?]*$"),
    ("keep-checkpoints-zero", "error", run_config({"keep_checkpoints": 0}),
     r"keep_checkpoints: must be at least 1, received 0"),
    ("precision-unknown", "error", run_config({"mixed_precision": "fp16"}),
     r"mixed_precision: expected one of float32, mixed_bfloat16, mixed_float16, received 'fp16'"),
    ("lr-min-above-base", "error", run_config({"lr_min": 0.5}),
     r"learning rates need 0 <= lr_min <= lr_base, received lr_min=0\.5"),
    ("save-path-missing", "error", run_config(content={"train": {"data_path": "faces"}, "stage": [STAGE]}),
     r"save_path: required"),
    ("eval-paths-number", "error", run_config({"eval_paths": 5}), r"eval_paths: expected a list of paths, received 5"),
    ("sample-rate-zero", "error", run_config({"partial_fc_sample_rate": 0}),
     r"partial_fc_sample_rate: must be in \(0, 1\], received 0"),
    ("distribution-unknown", "error", run_config({"distribution": "cuda"}), r"distribution: expected 'auto', 'none'"),
    ("decay-steps-text", "error", run_config({"lr_decay_steps": "10,x"}),
     r"lr_decay_steps: expected an epoch count or a list of epochs, received '10,x'"),
    ("step-schedule-without-list", "error", run_config({"lr_schedule": "step"}),
     r"lr_schedule 'step' needs lr_decay_steps as a list of epochs, received 0"),
    ("strict-data-maybe", "error", run_config({"strict_data": "maybe"}),
     r"strict_data: expected true or false, received 'maybe'"),
    ("unknown-loss", "error", run_config(stage={"loss": "ArcFaceLosss"}),
     STAGE_ERROR + r"Stage 0: Unknown stage loss 'ArcFaceLosss' \(did you mean 'ArcfaceLoss'\?\); available: ArcfaceLoss, "),
    ("loss-config-typo", "error", run_config(stage={"loss_config": {"scal": 16}}),
     STAGE_ERROR + r"Stage 0: .*unexpected keyword argument 'scal'"),
    ("stage-unknown-key", "error",
     run_config(content={"train": TRAIN, "stage": [{"loss": "ArcfaceLoss", "epochs": 5}]}),
     STAGE_ERROR + r"Stage 0: unknown keys \['epochs'\]; stage keys are epoch, "),
    ("stage-epoch-zero", "error", run_config(stage={"epoch": 0}), STAGE_ERROR + r"Stage 0 needs a positive 'epoch'"),
    ("stage-epoch-word", "error", run_config(stage={"epoch": "five"}),
     STAGE_ERROR + r"Stage 0 needs a positive 'epoch'"),
    ("stage-not-a-table", "error", run_config(content={"train": TRAIN, "stage": [STAGE, 5]}),
     STAGE_ERROR + r"Stage 1: expected a table of stage keys, received 5"),
    ("stage-single-table", "error", run_config(content={"train": TRAIN, "stage": STAGE}),
     STAGE_ERROR + r"Stage 0: expected a table of stage keys, received 'loss'"),
    ("stage-missing", "error", run_config(content={"train": TRAIN}),
     r"run\.toml: needs a \[train\] table and at least one \[\[stage\]\]"),
    ("section-unknown", "error", run_config(content={"train": TRAIN, "stage": [STAGE], "trian": {}}),
     r"run\.toml: needs a \[train\] table .*unknown sections \['trian'\]"),
    ("train-not-a-table", "error", run_config(content={"train": 5, "stage": [STAGE]}),
     r"run\.toml: \[train\] (expected a table|.*must be a mapping)"),
    ("invalid-toml", "error", config_file('[train\ndata_path = "faces"\n'),
     r"run\.toml: not a valid config file \(.+\)"),
    ("invalid-json", "error", config_file('{"train": {"data_path": }', "run.json"),
     r"run\.json: not a valid config file \(.+\)"),
    ("binary-file", "error", config_file(random_bytes()), r"run\.toml: not a valid config file"),
    ("missing-file", "error", config_file(None), r"run\.toml: config file does not exist"),
    ("override-missing-stage", "error", run_config(overrides=["stage.5.epoch=3"]),
     NO_ENTRY.format(r"stage\.5\.epoch=3")),
    ("override-stage-name", "error", run_config(overrides=["stage.first.epoch=3"]),
     NO_ENTRY.format(r"stage\.first\.epoch=3")),
    ("override-through-value", "error", run_config(overrides=["train.save_path.x=1"]),
     NO_ENTRY.format(r"train\.save_path\.x=1")),
    ("override-without-value", "error", run_config(overrides=["train.batch_size"]),
     r"override 'train\.batch_size' is not key=value"),
    ("override-bad-value", "error", run_config(overrides=["train.batch_size=big"]),
     r"batch_size: expected an integer, received 'big'"),
)


# ------------------------------------------------------------------------------------ 8. training/checkpoint.py


def checkpoint_state(step, hosts=1):
    return {"epoch": step, "step": step, "num_stages": 1, "global_batch": 8, "history": {"loss": [1.0] * step},
            "iterators": [{"position": step}] * hosts, "variable_paths": ["dense/kernel", "dense/bias"]}


def checkpoint_arrays(step):
    return [{"v0": np.full((4, 3), step, np.float32), "v1": np.zeros(3, np.float32)}, {"v0": np.array(step)},
            {"v0": np.array(0.5)}]


def resume(ctx, directory):
    """What ``train --resume`` does first (``runner.resume_point``): the newest intact checkpoint, with the lines
    it printed about the ones it skipped."""
    from keras_insightface.training.runner import resume_point

    run = types.SimpleNamespace(state_dir=str(directory), global_batch_size=8, replicas=1)
    try:
        meta, chosen = resume_point(run, [STAGE], types.SimpleNamespace(history={}))
    finally:
        printed = ctx.capsys.readouterr().out
    return f"{printed}resumed from {Path(chosen).name} at step {meta['step']}, loader state {meta['iterator']}"


def checkpoints(*damages, count=2, hosts=1, read=resume, nothing_lost=False):
    """``count`` checkpoints of ``case/run_state`` written by ``checkpoint._write`` (newest: ``run_state``, then
    ``run_state.1``), each ``damage(case folder)`` applied, then ``read(ctx, case/run_state)``; ``nothing_lost``:
    the case folder is the same afterwards."""
    def build(ctx):
        from keras_insightface.training.checkpoint import _write

        ctx.tmp.mkdir(parents=True)
        directory = ctx.tmp / "run_state"
        for step in range(1, count + 1):
            _write(str(directory), checkpoint_arrays(step), checkpoint_state(step, hosts), keep=2)
        for damage in damages:
            damage(ctx.tmp)
        return Probe(lambda: read(ctx, directory), unchanged(ctx.tmp) if nothing_lost else None)

    return build


def flip_byte(path, at=-30):
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def edit_manifest(folder, name, **fields):
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][name].update(fields)
    path.write_text(json.dumps(manifest))


def old_layout(state_text):
    """A checkpoint folder of an older version: no manifest, only its ``state.json``."""
    def damage(folder):
        directory = Path(folder) / "run_state"
        directory.mkdir()
        write(directory / "state.json", state_text)

    return damage


def read_stored_variable(name):
    def read(ctx, directory):
        from keras_insightface.training.checkpoint import read_variable

        return f"{name} = {read_variable(str(directory), name).tolist()}"

    return read


def write_on_full_disk(ctx, directory):
    """A third checkpoint write that finds the disk full at its first array."""
    from keras_insightface.training.checkpoint import _write

    def savez(path, **arrays):
        write(path, b"PK\x03\x04 half")
        raise DISK_FULL

    ctx.monkeypatch.setattr(np, "savez", savez)
    _write(str(directory), checkpoint_arrays(3), checkpoint_state(3), keep=2)


def newest(folder):
    return Path(folder) / "run_state"


FELL_BACK = r">>>> checkpoint .*run_state skipped: {}[^\n]*\n" \
            r"resumed from run_state\.1 at step 1, loader state \{{'position': 1\}}"
NO_CHECKPOINT = r"case/run_state: no checkpoint to resume from"

table(
    "checkpoint",
    ("intact", "ok", checkpoints(), r"^resumed from run_state at step 2, loader state \{'position': 2\}"),
    ("model-truncated", "recovered", checkpoints(lambda f: cut(newest(f) / "model.npz", 100)),
     FELL_BACK.format(r"model\.npz is \d+ bytes, the manifest says \d+ \(truncated or replaced\)")),
    ("optimizer-byte-flipped", "recovered", checkpoints(lambda f: flip_byte(newest(f) / "optimizer.npz")),
     FELL_BACK.format(r"optimizer\.npz differs from its checksum in the manifest \(corrupted\)")),
    ("state-truncated", "recovered", checkpoints(lambda f: cut(newest(f) / "state.json", 10)),
     FELL_BACK.format(r"state\.json is \d+ bytes, the manifest says \d+")),
    ("state-missing", "recovered", checkpoints(lambda f: os.remove(newest(f) / "state.json")),
     FELL_BACK.format(r"state\.json is missing")),
    ("manifest-garbage", "recovered", checkpoints(lambda f: write(newest(f) / "manifest.json", "{\"files\": [")),
     FELL_BACK.format(r"unreadable manifest\.json \(.+\)")),
    ("manifest-tampered", "recovered", checkpoints(lambda f: edit_manifest(newest(f), "metrics.npz", sha256="0" * 64)),
     FELL_BACK.format(r"metrics\.npz differs from its checksum")),
    ("manifest-wrong-size", "recovered", checkpoints(lambda f: edit_manifest(newest(f), "model.npz", size=1)),
     FELL_BACK.format(r"model\.npz is \d+ bytes, the manifest says 1")),
    ("both-corrupted", "error",
     checkpoints(lambda f: cut(newest(f) / "model.npz", 100),
                 lambda f: flip_byte(Path(f) / "run_state.1" / "model.npz")),
     NO_CHECKPOINT),
    ("none", "error", checkpoints(count=0), NO_CHECKPOINT),
    ("only-previous-rotation-interrupted", "ok",
     checkpoints(lambda f: newest(f).rename(Path(f) / "run_state.1"), count=1),
     r"^resumed from run_state\.1 at step 1"),
    ("half-written-tmp-beside", "ok",
     checkpoints(lambda f: write(Path(f) / "run_state.tmp" / "model.npz", b"PK\x03\x04 half")),
     r"^resumed from run_state at step 2"),
    ("only-half-written-tmp", "error", checkpoints(lambda f: newest(f).rename(Path(f) / "run_state.tmp"), count=1),
     NO_CHECKPOINT),
    ("older-version-dot-old", "ok", checkpoints(lambda f: newest(f).rename(Path(f) / "run_state.old"), count=1),
     r"^resumed from run_state\.old at step 1"),
    ("old-layout-state-truncated", "error", checkpoints(old_layout(json.dumps(checkpoint_state(1))[:40]), count=0),
     r"run_state/state\.json: unreadable checkpoint state \(.+\); resume from another checkpoint or start the run "
     r"again"),
    ("old-layout-state-without-iterators", "error",
     checkpoints(old_layout(json.dumps({"epoch": 1, "num_stages": 1})), count=0),
     r"run_state/state\.json: no per-host loader states \('iterators'\)"),
    ("old-layout-state-not-an-object", "error", checkpoints(old_layout("[1, 2]"), count=0),
     r"run_state/state\.json: unreadable checkpoint state \(a JSON list, expected an object\)"),
    ("written-by-two-hosts", "error", checkpoints(hosts=2),
     r"run_state: checkpoint written by 2 host\(s\), this run has 1; .*resume on the same number of hosts"),
    ("read-variable-unknown", "error", checkpoints(count=1, read=read_stored_variable("norm_dense_w")),
     r"run_state: 0 stored variables match 'norm_dense_w'"),
    ("read-variable", "ok", checkpoints(count=1, read=read_stored_variable("dense/bias")),
     r"dense/bias = \[0\.0, 0\.0, 0\.0\]"),
    ("write-on-full-disk", "error", checkpoints(read=write_on_full_disk, nothing_lost=True),
     r"run_state: cannot write the checkpoint \(No space left on device\); the previous checkpoints are kept"),
)


# ------------------------------------------------------------------------------------ 9. training/run_files.py

HOLDER = """
import sys, time
from keras_insightface.training.run_files import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def lock_holder(ctx, killed):
    """Another process takes the run's lock; ``killed``: it is then killed with SIGKILL (it cannot clean up)."""
    from keras_insightface.training.run_files import RunLock

    ctx.tmp.mkdir(parents=True)
    prefix = str(ctx.tmp / "r50")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, prefix], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    if killed:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    def run():
        try:
            lock = RunLock(prefix).acquire()
        except Exception as error:
            assert f"process {holder.pid} on " in str(error), f"the holder {holder.pid} is not named: {error}"
            raise
        with open(prefix + ".lock") as f:
            holder_line = f.read().split()
        lock.release()
        return f"lock taken, held by {'this process' if holder_line[0] == str(os.getpid()) else holder_line}"

    def cleanup():
        if holder.poll() is None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        holder.stdout.close()

    return Probe(run, cleanup=cleanup)


def lock_in(prepare):
    """``RunLock`` of ``case/r50`` after ``prepare(case folder)``."""
    def build(ctx):
        from keras_insightface.training.run_files import RunLock

        ctx.tmp.mkdir(parents=True)
        restore = prepare(ctx.tmp)

        def run():
            RunLock(str(ctx.tmp / "r50")).acquire().release()
            return "lock taken and released"

        return Probe(run, cleanup=restore)

    return build


def stale_lock(folder):
    write(folder / "r50.lock", "4194300 otherhost 1700000000\n")


def read_only(folder):
    import pytest

    if is_root():
        pytest.skip("root ignores file permissions")
    folder.chmod(0o555)
    return lambda: folder.chmod(0o755)


def new_run(files, overwrite):
    """``check_new_run`` of the run ``r50`` in a folder holding ``files``; what is left afterwards is listed."""
    def build(ctx):
        from keras_insightface.training.run_files import check_new_run

        for name in files:
            if "_state" in name:
                (ctx.tmp / name).mkdir(parents=True)
            else:
                write(ctx.tmp / name, "{}")

        def run():
            check_new_run(str(ctx.tmp / "r50"), overwrite)
            printed = ctx.capsys.readouterr().out
            return f"{printed}left: {sorted(p.name for p in ctx.tmp.iterdir())}"

        return Probe(run, unchanged(ctx.tmp) if not overwrite else None)

    return build


RUN_FILES = ("r50_hist.json", "r50_state", "r50_state.1", "r50_state.tmp", "r50x_state", "r50_basic.keras")

table(
    "run_files",
    ("lock-held-by-another-process", "error", lambda ctx: lock_holder(ctx, killed=False),
     r"r50\.lock: the run r50 is in use by process \d+ on .+ since .+; wait for it to end or stop it"),
    ("lock-holder-killed", "ok", lambda ctx: lock_holder(ctx, killed=True), r"lock taken, held by this process"),
    ("lock-file-left-by-a-crash", "ok", lock_in(stale_lock), r"lock taken and released"),
    ("lock-in-read-only-folder", "error", lock_in(read_only),
     r"r50\.lock: cannot create the run's lock file \(Permission denied\)"),
    ("new-run-over-history", "error", new_run(["r50_hist.json"], False),
     r"r50_hist\.json: a run named r50 already trained here; continue it with --resume"),
    ("new-run-over-checkpoint", "error", new_run(["r50_state.1"], False),
     r"r50_state\.1: a run named r50 already trained here"),
    ("new-run-overwrite", "ok", new_run(RUN_FILES, True),
     r">>>> overwrite: starting r50 over \(its old checkpoints removed\)\n"
     r"left: \['r50_basic\.keras', 'r50_hist\.json', 'r50x_state'\]"),
    ("new-run-beside-another-run", "ok", new_run(["r50x_hist.json", "r50x_state", "r5_state"], False),
     r"left: \['r50x_hist\.json', 'r50x_state', 'r5_state'\]"),
)


# ---------------------------------------------------------------------------------------------- 10. atomic.py


def failing_write(write_call, previous=b'{"loss": [1.5]}', name="hist.json"):
    """``write_call(ctx, path)`` over an existing ``name``: it fails, and the previous file stays, alone."""
    def build(ctx):
        path = write(ctx.tmp / name, previous)
        return Probe(lambda: write_call(ctx, path), unchanged(ctx.tmp))

    return build


def body_fails(ctx, path):
    from keras_insightface.atomic import atomic_path

    with atomic_path(path) as tmp:
        write(tmp, b'{"loss": [1.5, 1.')
        raise DISK_FULL


def read_only_json(ctx):
    """``write_json_atomic`` over a file in a read-only folder."""
    from keras_insightface.atomic import write_json_atomic

    path = write(ctx.tmp / "hist.json", '{"loss": [1.5]}')
    after = unchanged(ctx.tmp)
    return Probe(lambda: write_json_atomic(path, {"loss": [2.0]}), after, read_only(ctx.tmp))


class HalfSave:
    """A model whose ``save`` writes half a file, then finds the disk full."""

    def save(self, path):
        write(path, b"PK\x03\x04 half a model")
        raise DISK_FULL


def save_half(ctx, path):
    from keras_insightface.saving import save_model

    save_model(HalfSave(), path)


def pack_on_full_disk(ctx, path):
    from keras_insightface.data.binpack import write_bin

    def dump(payload, f, protocol=None):
        f.write(b"\x80\x04 half a pack")
        raise DISK_FULL

    ctx.monkeypatch.setattr(pickle, "dump", dump)
    write_bin(path, FOUR_JPEGS, [True, False])


def npz_on_full_disk(ctx, path):
    from keras_insightface.data.npz_list import save_npz

    def savez(file, **arrays):
        write(file, b"PK\x03\x04 half")
        raise DISK_FULL

    ctx.monkeypatch.setattr(np, "savez", savez)
    save_npz(path, image_names=NAMES, image_classes=CLASSES)


def save_into_missing_folder(ctx):
    import keras

    from keras_insightface.saving import save_model

    model = keras.saving.load_model(ctx.tiny_model())
    return Probe(lambda: save_model(model, ctx.tmp / "missing" / "r50_basic.keras"))


def replace_whole(ctx):
    from keras_insightface.atomic import write_json_atomic

    path = write(ctx.tmp / "hist.json", '{"loss": [1.5]}')

    def run():
        write_json_atomic(path, {"loss": [1.5, 1.2]})
        return f"{json.loads(path.read_text())}, files {sorted(p.name for p in ctx.tmp.iterdir())}"

    return Probe(run)


table(
    "atomic",
    ("body-fails-disk-full", "error", failing_write(body_fails),
     r"case/hist\.json: cannot write \(No space left on device\); the previous file is kept"),
    ("read-only-folder", "error", read_only_json, r"case/hist\.json: cannot write \(Permission denied\); the previous"),
    ("model-save-disk-full", "error", failing_write(save_half, b"PK old model", "r50_basic.keras"),
     r"case/r50_basic\.keras: cannot save the model \(No space left on device\); the previous file is kept"),
    ("pack-write-disk-full", "error", failing_write(pack_on_full_disk, b"old pack", "lfw.bin"),
     r"case/lfw\.bin: cannot write \(No space left on device\); the previous file is kept"),
    ("npz-list-write-disk-full", "error", failing_write(npz_on_full_disk, b"PK old list", "clean.npz"),
     r"case/clean\.npz: cannot write \(No space left on device\); the previous file is kept"),
    ("model-into-missing-folder", "error", save_into_missing_folder,
     r"missing/r50_basic\.keras: cannot save the model \(No such file or directory\)"),
    ("replace", "ok", replace_whole, r"\{'loss': \[1\.5, 1\.2\]\}, files \['hist\.json'\]"),
)


# ----------------------------------------------------------------------- 11. saving.py, inference/embedders.py


def open_and_embed(path):
    from keras_insightface.inference.embedders import open_model

    embedder = open_model(path)
    return f"embedder size {embedder.size}, output {embedder(np.zeros((2, 112, 112, 3), np.uint8)).shape}"


def load_keras(path):
    from keras_insightface.saving import load_model

    return f"model output {load_model(path).output_shape}"


def model_file(name, make, read=open_and_embed):
    """``case/<name>`` made by ``make(ctx)`` (bytes, or None: no file), opened by ``read``."""
    def build(ctx):
        path = ctx.tmp / name
        data = make(ctx)
        if data is not None:
            write(path, data)
        return Probe(lambda: read(path))

    return build


def h5(**attributes):
    """An HDF5 file (a dataset ``x``) with ``attributes``, as bytes."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["x"] = np.zeros(3)
        f.attrs.update(attributes)
    return buffer.getvalue()


CANNOT_LOAD = r"model\.keras: could not load the model"
NOT_A_ZIP = r"model\.keras: not a \.keras model \(not a zip archive: truncated, or another format\)"
NOT_A_CONFIG = r"model\.h5: model_config is not a Keras model config"

table(
    "models",
    ("keras", "ok", model_file("model.keras", lambda ctx: ctx.tiny_model().read_bytes()),
     r"embedder size \(112, 112\), output \(2, 8\)"),
    ("keras-missing", "error", model_file("model.keras", lambda ctx: None), r"model\.keras: model file does not exist"),
    ("keras-load-missing", "error", model_file("model.keras", lambda ctx: None, load_keras),
     r"model\.keras: model file does not exist"),
    ("keras-truncated", "error", model_file("model.keras", lambda ctx: truncated(ctx.tiny_model().read_bytes())),
     NOT_A_ZIP),
    ("keras-text", "error", model_file("model.keras", lambda ctx: "not a model"), NOT_A_ZIP),
    ("keras-empty", "error", model_file("model.keras", lambda ctx: b""), NOT_A_ZIP),
    ("keras-zip-without-model", "error", model_file("model.keras", lambda ctx: npz_bytes(x=np.zeros(2))), CANNOT_LOAD),
    ("keras-folder", "error", model_file("model.keras/x", lambda ctx: b"", lambda path: open_and_embed(path.parent)),
     r"model\.keras: model file does not exist"),
    ("h5-garbage", "error", model_file("model.h5", lambda ctx: random_bytes()), r"model\.h5: not an HDF5 file"),
    ("h5-weights-only", "error", model_file("model.h5", lambda ctx: h5()),
     r"model\.h5: holds weights only \(no model_config\)"),
    ("h5-config-not-json", "error", model_file("model.h5", lambda ctx: h5(model_config="{not json")), NOT_A_CONFIG),
    ("h5-config-without-class", "error", model_file("model.h5", lambda ctx: h5(model_config='{"a": 1}')), NOT_A_CONFIG),
    ("h5-config-a-list", "error", model_file("model.h5", lambda ctx: h5(model_config="[1, 2]")), NOT_A_CONFIG),
    ("onnx-text", "error", model_file("model.onnx", lambda ctx: "not a graph"),
     r"model\.onnx: cannot load the ONNX model \(.+\)"),
    ("onnx-empty", "error", model_file("model.onnx", lambda ctx: b""), r"model\.onnx: cannot load the ONNX model"),
    ("torchscript-text", "error", model_file("model.pt", lambda ctx: "not a module"),
     r"model\.pt: not a TorchScript module"),
    ("unknown-suffix", "error", model_file("model.pb", lambda ctx: b"graph"),
     r"model\.pb: unknown model format '\.pb'; expected one of \.keras, \.h5, \.onnx, \.pt, \.pth"),
    ("no-suffix", "error", model_file("model", lambda ctx: b"graph"),
     r"case/model: unknown model format '\(no suffix\)'"),
    ("load-onnx-as-keras", "error", model_file("model.onnx", lambda ctx: b"graph", load_keras),
     r"model\.onnx: unknown model format; expected a \.keras file or a seed \.h5 file"),
    ("not-a-model", "error", lambda ctx: Probe(lambda: open_and_embed(5)),
     r"model: expected a model file, a Keras model or a callable, received int"),
)


# ---------------------------------------------------------------------------------- 12. evaluation/gallery.py


def gallery_summary(gallery):
    return (f"{len(gallery.identities)} identities {gallery.identities}, {len(gallery)} images, "
            f"{gallery.embedded} embedded, {gallery.reused} from the cache")


def gallery(files, damage=None, cache_path=None):
    """A ``people`` gallery of ``files`` (``None``: an empty folder; ``("link", target)``: a symlink to
    ``case/<target>``) searched with the mean-colour model; ``damage(cache path)`` runs after a first search."""
    def build(ctx):
        from keras_insightface.evaluation.gallery import Gallery

        root = make_tree(ctx.tmp / "people", files, links_to=ctx.tmp)
        write(ctx.tmp / "elsewhere" / "dave" / "1.jpg", face(5))
        path = ctx.tmp / cache_path if cache_path else None
        if damage:
            damage(Gallery(mean_colour, root, model_id="x").cache_path)
        return Probe(lambda: gallery_summary(Gallery(mean_colour, root, cache_path=path, model_id="x")))

    return build


def missing_gallery(ctx):
    from keras_insightface.evaluation.gallery import Gallery

    return Probe(lambda: gallery_summary(Gallery(mean_colour, ctx.tmp / "people", model_id="x")))


def other_model_cache(path):
    from keras_insightface.evaluation.gallery import _write_cache

    _write_cache(path, "x", ["alice/1.jpg"], np.array([[1, 1]]), np.ones((1, 7), np.float32))


PEOPLE = {"alice/1.jpg": face(1), "bob/1.jpg": face(2), "bob/2.png": pillow("PNG"), "carol.jpg": face(3)}
THREE = r"3 identities \['alice', 'bob', 'carol'\], 4 images, 4 embedded, 0 from the cache"

table(
    "gallery",
    ("valid", "ok", gallery(PEOPLE), THREE),
    ("symlinked-identity", "ok", gallery({**PEOPLE, "dave": ("link", "elsewhere/dave")}),
     r"4 identities \['alice', 'bob', 'carol', 'dave'\], 5 images"),
    ("symlink-loop", "ok", gallery({**PEOPLE, "alice/loop": ("link", "people")}), THREE),
    ("hidden-and-other-files", "ok",
     gallery({**PEOPLE, ".trash/1.jpg": face(4), "bob/.2.jpg": face(4), "notes.txt": "x"}), THREE),
    ("cache-corrupt", "ok", gallery(PEOPLE, lambda p: write(p, random_bytes())), THREE),
    ("cache-truncated", "ok", gallery(PEOPLE, lambda p: write(p, truncated(p.read_bytes()))), THREE),
    ("cache-of-another-size", "ok", gallery(PEOPLE, other_model_cache), THREE),
    ("cache-reused", "ok", gallery(PEOPLE, lambda p: None), r"4 images, 0 embedded, 4 from the cache"),
    ("empty", "error", gallery({}), r"people: empty gallery: no \.jpg/\.jpeg/\.png faces in it"),
    ("only-other-files", "error", gallery({"alice": None, "notes.txt": "x", "bob/1.gif": pillow("GIF")}),
     r"people: empty gallery"),
    ("missing", "error", missing_gallery, r"case/people: gallery folder does not exist"),
    ("corrupt-image", "error", gallery({**PEOPLE, "bob/3.jpg": corrupt_jpeg()}),
     r"people/bob/3\.jpg: cannot decode image"),
    ("wrong-size-image", "error", gallery({**PEOPLE, "bob/3.jpg": face(0, (96, 96))}),
     r"people/bob/3\.jpg: image is 96x96, the model takes aligned 112x112 face crops"),
    ("cache-unwritable", "error", gallery(PEOPLE, cache_path="missing/cache.npz"),
     r"missing/cache\.npz: cannot write the gallery's embedding cache \(No such file or directory\)"),
)


# ------------------------------------------------------------------------------------------------- 13. the CLI


def command(*argv, setup=None):
    """``keras-insightface ARGV`` (``CASE``: the case folder, ``MODEL``: the tiny model file) after ``setup(ctx)``."""
    def build(ctx):
        ctx.tmp.mkdir(parents=True)
        if setup:
            setup(ctx)
        model = str(ctx.tiny_model()) if "MODEL" in argv else None
        args = [model if arg == "MODEL" else arg.replace("CASE", str(ctx.tmp)) for arg in argv]
        return Probe(lambda: cli(ctx, args))

    return build


def cli(ctx, argv):
    from keras_insightface.cli import main

    ctx.capsys.readouterr()
    code = main(argv)
    out, err = ctx.capsys.readouterr()
    if code:
        raise CliExit(code, out, err)
    return out


def evaluation_pack(ctx):
    write(ctx.tmp / "pack.bin", pickle.dumps(pairs(10)))


def dataset_list(ctx):
    data_tree(ctx)
    write(ctx.tmp / "data" / "list.txt", "a/1.jpg\t0\n../outside.jpg\t1\n")


def photo_and_landmarks(text):
    def setup(ctx):
        write(ctx.tmp / "raw" / "a.jpg", face())
        write(ctx.tmp / "lm.csv", text)

    return setup


def error_line(command_name, message):
    return rf"^keras-insightface {command_name}: error: {message}$"


table(
    "cli",
    ("eval-batch-size-zero", "error",
     command("eval", "-m", "MODEL", "-t", "CASE/pack.bin", "-b", "0", setup=evaluation_pack),
     error_line("eval", r"embedding: batch_size must be positive, received 0")),
    ("eval-missing-pack", "error", command("eval", "-m", "MODEL", "-t", "CASE/missing.bin"),
     error_line("eval", r".*case/missing\.bin: file not found")),
    ("ijb-plot-only-text", "error",
     command("ijb", "--plot-only", "CASE/notes.txt", setup=lambda ctx: write(ctx.tmp / "notes.txt", "hi")),
     error_line("ijb", r".*notes\.txt: not a score file written by ijb --save-scores \(.+\)")),
    ("train-missing-data", "error", command("train", "--data", "CASE/missing_dir"),
     error_line("train", r".*case/missing_dir: dataset path does not exist")),
    ("train-resume-missing", "error", command("train", "--resume", "CASE/missing_dir"),
     error_line("train", r".*case/missing_dir: no <name>_config\.json; pass the run's config: .+")),
    ("train-set-missing-stage", "error", command("train", "--data", "CASE", "--set", "stage.5.epoch=3"),
     error_line("train", r"override 'stage\.5\.epoch=3': no such entry in the config .+")),
    ("train-batch-size-word", "error", command("train", "--data", "CASE", "--batch-size", "big"),
     error_line("train", r"command line: \[train\] batch_size: expected an integer, received 'big'")),
    ("train-invalid-toml", "error",
     command("train", "CASE/run.toml", setup=lambda ctx: write(ctx.tmp / "run.toml", "[train")),
     error_line("train", r".*case/run\.toml: not a valid config file \(.+\)")),
    ("convert-list-dotdot", "error",
     command("convert", "folders2rec", "CASE/data/list.txt", "CASE/out", setup=dataset_list),
     error_line("convert", r".*data/list\.txt:2: '\.\./outside\.jpg' points outside .+")),
    ("compare-missing-image", "error", command("compare", "CASE/a.jpg", "CASE/b.jpg", "-m", "MODEL"),
     error_line("compare", r".*case/a\.jpg: image does not exist")),
    ("search-missing-gallery", "error", command("search", "CASE/a.jpg", "--gallery", "CASE/people", "-m", "MODEL"),
     error_line("search", r".*case/people: gallery folder does not exist")),
    ("align-bad-landmarks", "error", command("align", "CASE/raw", "CASE/aligned", "--landmarks", "CASE/lm.csv",
                                             setup=photo_and_landmarks("a.jpg,1,2\n")),
     error_line("align", r".*lm\.csv:1: expected 11 fields \(path, x1, y1, \.\.\., x5, y5\), found 3")),
)


# ------------------------------------------------------------ 14. inference/align_folder.py, inference/images.py


def landmarks(text, name="lm.csv"):
    """``read_landmarks`` of ``case/<name>`` holding ``text`` (None: no file)."""
    def build(ctx):
        from keras_insightface.inference.align_folder import read_landmarks

        path = write(ctx.tmp / name, text) if text is not None else ctx.tmp / name

        def run():
            table = read_landmarks(path)
            return f"{len(table)} faces: " + ", ".join(f"{key} {value.shape}" for key, value in sorted(table.items()))

        return Probe(run)

    return build


def reading(image, read="image"):
    """``read_image`` (or ``load_face`` at 112x112) of ``image(ctx)``: a path or an array."""
    def build(ctx):
        from keras_insightface.inference.images import load_face, read_image

        ctx.tmp.mkdir(parents=True)
        target = image(ctx)
        run = (lambda: read_image(target).shape) if read == "image" else (lambda: load_face(target, (112, 112)).shape)
        return Probe(lambda: f"image {run()}")

    return build


def align(ctx):
    """``align_folder`` of one 200x200 photo with JSON landmarks (a PNG's crop is written as JPEG)."""
    from keras_insightface.inference.align_folder import align_folder

    write(ctx.tmp / "raw" / "a" / "1.png", pillow("PNG", (200, 200)))
    write(ctx.tmp / "lm.json", json.dumps({"a/1.png": [[76, 103], [147, 103], [112, 143], [83, 185], [141, 185]]}))
    return Probe(lambda: f"{align_folder(ctx.tmp / 'raw', ctx.tmp / 'out', ctx.tmp / 'lm.json')} "
                         f"{sorted(snapshot(ctx.tmp / 'out'))}")


def align_missing(ctx):
    from keras_insightface.inference.align_folder import align_folder

    return Probe(lambda: align_folder(ctx.tmp / "raw", ctx.tmp / "out", ctx.tmp / "lm.csv"))


ROW = "a.jpg," + ",".join(POINTS.split()[:10])
NOT_FIVE = r"expected 5 landmarks as 10 finite numbers \(x1, y1, \.\.\., x5, y5\), received "

table(
    "inference",
    ("landmarks-csv", "ok",
     landmarks(f"path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n{ROW}\n\n{ROW.replace('a.jpg', './b/c.jpg')}\n"),
     r"2 faces: a\.jpg \(5, 2\), b/c\.jpg \(5, 2\)"),
    ("landmarks-json", "ok", landmarks(json.dumps({"a.jpg": [[1, 2]] * 5, "b.jpg": list(range(10))}), "lm.json"),
     r"2 faces: a\.jpg \(5, 2\), b\.jpg \(5, 2\)"),
    ("landmarks-csv-short-row", "error", landmarks(f"{ROW}\na.jpg,1,2,3,4,5,6,7,8\n"),
     r"lm\.csv:2: expected 11 fields \(path, x1, y1, \.\.\., x5, y5\), found 9"),
    ("landmarks-csv-words", "error", landmarks(ROW.replace("51.7", "left") + "\n" + ROW + "\n"),
     r"lm\.csv:1: landmarks must be numbers, found"),
    ("landmarks-csv-nan", "error", landmarks(ROW.replace("51.7", "nan") + "\n"), r"lm\.csv:1: " + NOT_FIVE),
    ("landmarks-csv-binary", "error", landmarks(b"a.jpg,\xff\xfe\n"), r"lm\.csv: not UTF-8 text"),
    ("landmarks-missing", "error", landmarks(None), r"lm\.csv: landmarks file does not exist"),
    ("landmarks-json-four-points", "error", landmarks(json.dumps({"a.jpg": [[1, 2]] * 4}), "lm.json"),
     r"lm\.json: 'a\.jpg': " + NOT_FIVE),
    ("landmarks-json-words", "error", landmarks(json.dumps({"a.jpg": ["left eye"] * 10}), "lm.json"),
     r"lm\.json: 'a\.jpg': " + NOT_FIVE),
    ("landmarks-json-nested", "error", landmarks(json.dumps({"a.jpg": {"left": [1, 2]}}), "lm.json"),
     r"lm\.json: 'a\.jpg': " + NOT_FIVE),
    ("landmarks-json-list", "error", landmarks(json.dumps([[1, 2]] * 5), "lm.json"),
     r"lm\.json: expected a JSON object \{image path: \[\[x, y\] x 5\]\}, found list"),
    ("landmarks-json-invalid", "error", landmarks('{"a.jpg": [[1, 2]', "lm.json"), r"lm\.json: not valid JSON \(.+\)"),
    ("landmarks-json-binary", "error", landmarks(random_bytes(), "lm.json"), r"lm\.json: not UTF-8 text"),
    ("align-folder", "ok", align,
     r"\{'aligned': 1, 'without_landmarks': \[\], 'missing_images': \[\]\} \['a/1\.jpg'\]"),
    ("align-missing-source", "error", align_missing, r"case/raw: source folder does not exist"),
    ("read-image-folder", "error", reading(lambda ctx: ctx.tmp), r"case: image does not exist"),
    ("read-image-missing", "error", reading(lambda ctx: ctx.tmp / "nope.jpg"), r"case/nope\.jpg: image does not exist"),
    ("read-image-corrupt", "error", reading(lambda ctx: write(ctx.tmp / "bad.jpg", corrupt_jpeg())),
     r"case/bad\.jpg: cannot decode image"),
    ("read-image-float-array", "error", reading(lambda ctx: np.zeros((112, 112, 3), np.float32)),
     r"image: expected a file path or a uint8 \(H, W, 3\) RGB array, received float32 \(112, 112, 3\)"),
    ("read-image-grey-array", "error", reading(lambda ctx: np.zeros((112, 112), np.uint8)),
     r"image: expected a file path .*received uint8 \(112, 112\)"),
    ("read-image-large-photo", "ok", reading(lambda ctx: write(ctx.tmp / "photo.jpg", face(0, (480, 640)))),
     r"image \(480, 640, 3\)"),
    ("load-face-wrong-size", "error", reading(lambda ctx: write(ctx.tmp / "face.jpg", face(0, (96, 96))), "face"),
     r"case/face\.jpg: image is 96x96, the model takes aligned 112x112 face crops; align it first"),
)


def counts():
    """``{reader: Counter(outcome -> cases)}`` in ``READERS`` order."""
    table_ = {reader: collections.Counter() for reader in READERS}
    for case in CASES:
        table_[case.reader][case.outcome] += 1
    return table_


def summary_table():
    """The markdown table of the corpus: cases per reader and outcome (for bench/RESULTS.md)."""
    rows = ["| reader | cases | error | skip | recovered | ok |", "|---|---|---|---|---|---|"]
    total = collections.Counter()
    for reader, found in counts().items():
        total.update(found)
        rows.append(f"| {reader} | {sum(found.values())} | " + " | ".join(str(found[o]) for o in OUTCOMES) + " |")
    rows.append(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(summary_table())
