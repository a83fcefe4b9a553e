"""Verification .bin packs: safe loading, validation, writing and decoding."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from keras_insightface.data.binpack import decode_bin_images, load_bin, write_bin
from keras_insightface.errors import DataError



def _jpegs(n, size=24):
    rng = np.random.default_rng(n)
    return [
        simplejpeg.encode_jpeg(np.ascontiguousarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        for _ in range(n)
    ]


class Payload:
    """A class the restricted unpickler must refuse."""


def test_write_load_round_trip(tmp_path):
    images, issame = _jpegs(6), [True, False, True]
    path = tmp_path / "pack.bin"
    write_bin(path, images, issame)
    got_images, got_issame = load_bin(path)
    assert got_images == images
    assert got_issame.dtype == bool and got_issame.tolist() == issame
    assert [p.name for p in tmp_path.iterdir()] == ["pack.bin"]
    decoded = decode_bin_images(got_images, path)
    assert decoded.shape == (6, 24, 24, 3) and decoded.dtype == np.uint8


def test_numpy_array_entries(tmp_path):
    images = _jpegs(4)
    path = tmp_path / "np.bin"
    entries = [np.frombuffer(b, dtype=np.uint8).reshape(-1, 1).copy() for b in images]
    path.write_bytes(pickle.dumps((entries, [np.bool_(True), False]), protocol=2))
    got_images, got_issame = load_bin(path)
    assert got_images == images and got_issame.tolist() == [True, False]


@pytest.mark.parametrize("forbidden", [os.system, Payload()], ids=["os.system", "custom-class"])
def test_forbidden_global_refused(tmp_path, forbidden):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([forbidden, b"x"], [True])))
    with pytest.raises(DataError, match="evil.bin: refusing to unpickle"):
        load_bin(path)


def test_structure_errors(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(DataError, match="bad.bin: 3 images for 1 pairs"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", 5], [True])))
    with pytest.raises(DataError, match="bad.bin: image entry 1 is int"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], ["yes"])))
    with pytest.raises(DataError, match="issame entry 0"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"],)))
    with pytest.raises(DataError, match="2-element"):
        load_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="bad.bin: not a readable pickle"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], [True]))[:-5])
    with pytest.raises(DataError, match="bad.bin"):
        load_bin(path)
    with pytest.raises(DataError, match="absent.bin: file not found"):
        load_bin(tmp_path / "absent.bin")
    with pytest.raises(DataError, match="2 pairs"):
        write_bin(tmp_path / "w.bin", [b"a", b"b"], [True, False])


def test_decode_corrupt_jpeg_names_index():
    images = _jpegs(3)
    images[2] = images[2][:20] + b"\x00" * 10
    with pytest.raises(DataError, match="pack.bin: image 2"):
        decode_bin_images(images, "pack.bin")


def test_real_lfw_pack(real_faces):
    REAL_PACK = real_faces / "small_lfw.bin"
    images, issame = load_bin(REAL_PACK)
    assert len(images) == 2 * len(issame) > 0
    decoded = decode_bin_images(images, REAL_PACK)
    assert decoded.shape == (len(images), 112, 112, 3) and decoded.dtype == np.uint8
    assert decoded.astype(np.float64).var() > 0
