"""The one image reader: JPEG, PNG (grey, palette, alpha) and BMP files written by Pillow decode to the same RGB
pixels; bad files get errors that name them."""

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from keras_insightface.errors import DataError
from keras_insightface.inference.images import read_image


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_lossless_formats_decode_exactly(tmp_path, suffix):
    rgb = _image()
    Image.fromarray(rgb).save(tmp_path / f"face{suffix}")
    np.testing.assert_array_equal(read_image(tmp_path / f"face{suffix}"), rgb)


def test_grey_palette_and_alpha_pngs_become_rgb(tmp_path):
    rgb = _image(1)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.repeat(rgb[..., :1], 3, axis=-1))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), rgb)
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))


def test_jpeg_matches_pillows_decoder(tmp_path):
    data = simplejpeg.encode_jpeg(_image(2), quality=95)
    (tmp_path / "face.jpg").write_bytes(data)
    Image.open(tmp_path / "face.jpg").save(tmp_path / "pillow.png")  # Pillow's own decode of the same bytes
    got, pillow = read_image(tmp_path / "face.jpg").astype(int), read_image(tmp_path / "pillow.png").astype(int)
    assert got.shape == (20, 30, 3) and np.abs(got - pillow).max() <= 2  # IDCT implementations round differently


def test_bad_files_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"notes.png: cannot decode image \(not a JPEG, PNG or BMP image\)"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(DataError, match="gone.bmp: image does not exist"):
        read_image(tmp_path / "gone.bmp")
    with pytest.raises(DataError, match=r"query: expected a file path or a uint8 \(H, W, 3\) RGB array"):
        read_image(np.zeros((4, 4), np.float32), "query")
