"""The one decoder: real JPEGs with bytes after their end marker decode (simplejpeg.is_jpeg rejects them, Pillow
reads them), also through a .rec and the loader; sizes are checked from the header before any pixel is decoded."""

import struct

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from keras_insightface.data.decode import decode_image, is_jpeg
from keras_insightface.data.insightface_rec import InsightfaceRec, write_insightface_rec
from keras_insightface.data.loader import ordered_batches
from keras_insightface.errors import DataError
from tests.conftest import jpeg


def _real_jpegs(real_faces, count=3):
    paths = sorted((real_faces / "small_dataset" / "images").glob("*.jpg"))[:count]
    return [path.read_bytes() for path in paths]


def test_real_jpegs_with_trailing_bytes_decode_like_pillow(real_faces, tmp_path):
    for index, data in enumerate(_real_jpegs(real_faces)):
        tailed = data + b"\x00" * 7 + b"EXIF-like trailer after the EOI marker"
        assert not simplejpeg.is_jpeg(tailed) and is_jpeg(tailed)  # the old test rejected these
        got = decode_image(tailed, where=f"face {index}")
        np.testing.assert_array_equal(got, decode_image(data))
        (tmp_path / "t.jpg").write_bytes(tailed)
        with Image.open(tmp_path / "t.jpg") as pillow:  # a decoder this project did not write
            assert np.abs(got.astype(int) - np.asarray(pillow.convert("RGB")).astype(int)).max() <= 3


def test_a_rec_of_jpegs_with_trailers_and_the_magic_inside_reads_every_image(tmp_path):
    """Records whose payload holds the RecordIO magic are stored in parts; with a trailer after the JPEG end
    marker none of them may be dropped or misread."""
    magic = struct.pack("<I", 0xCED7230A)
    faces = [np.full((112, 112, 3), 40 * i, np.uint8) for i in range(4)]
    samples = [(jpeg(face) + b"\x00" * (4 - len(jpeg(face)) % 4) + magic * 3 + b"tail", i // 2)
               for i, face in enumerate(faces)]
    write_insightface_rec(tmp_path, samples, num_classes=2)
    # 7 records (header, 4 images, 2 classes); each image's 3 aligned magics start a new part: 12 more headers
    assert (tmp_path / "train.rec").read_bytes().count(magic) == 7 + 12
    source = InsightfaceRec(tmp_path)
    assert [bytes(source[i][0]) for i in range(4)] == [data for data, _ in samples]
    images = np.concatenate([batch for batch, _ in ordered_batches(source, 2, num_workers=0)])
    np.testing.assert_array_equal(images, np.stack([decode_image(data) for data, _ in samples]))
    assert np.abs(images.astype(int).mean(axis=(1, 2, 3)) - [0, 40, 80, 120]).max() < 2


def _with_size(data, height, width):
    """The JPEG ``data`` with its frame header (SOF0) claiming ``height`` x ``width``."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


def test_sizes_are_checked_from_the_header_before_decoding():
    bomb = _with_size(jpeg(np.zeros((16, 16, 3), np.uint8)), 20000, 20000)
    assert simplejpeg.decode_jpeg_header(bomb)[:2] == (20000, 20000)
    with pytest.raises(DataError, match="r1: image is 20000x20000, expected aligned 112x112 faces"):
        decode_image(bomb, where="r1")
    with pytest.raises(DataError, match=r"r2: image is 20000x20000 = 400000000 pixels, above the limit of 64000000"):
        decode_image(bomb, None, where="r2")
    with pytest.raises(DataError, match="r3: image is 16x16, expected aligned 112x112 faces"):
        decode_image(jpeg(np.zeros((16, 16, 3), np.uint8)), where="r3")
    assert decode_image(jpeg(np.zeros((16, 16, 3), np.uint8)), None, max_pixels=256).shape == (16, 16, 3)
    with pytest.raises(DataError, match="r4: cannot decode image"):
        decode_image(b"\xff\xd8\xff\xe0 truncated", where="r4")
