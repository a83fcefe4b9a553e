"""Converters: class folders <-> insightface RecordIO round trips, and new verification packs."""

import io

import numpy as np
import pytest
import simplejpeg

from keras_insightface.data import convert, insightface_rec
from keras_insightface.data.binpack import load_bin
from keras_insightface.errors import DataError


def _jpeg(seed, size=16):
    rng = np.random.default_rng(seed)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def _png(size=24):
    """A real PNG written by Pillow (not by this project)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _class_tree(root):
    """{class folder name: sorted image bytes} of a folder of class subfolders."""
    return {d.name: sorted(f.read_bytes() for f in d.iterdir()) for d in root.iterdir() if d.is_dir()}


def _folders(root, per_class=(3, 2, 4), size=16):
    for label, count in enumerate(per_class):
        (root / str(label)).mkdir(parents=True)
        for i in range(count):
            (root / str(label) / f"img{i}.jpg").write_bytes(_jpeg(label * 100 + i, size))
    return root


def test_folders_rec_folders_round_trip(tmp_path, capsys):
    src = _folders(tmp_path / "src", size=24)
    png = _png()
    (src / "1" / "extra.png").write_bytes(png)
    assert convert.folders_to_rec(src, tmp_path / "rec") == 10
    assert "writing" in capsys.readouterr().err
    assert insightface_rec.read_property(tmp_path / "rec") == (3, 24, 24)
    ds = insightface_rec.InsightfaceRec(tmp_path / "rec")
    assert len(ds) == 10 and ds.num_classes == 3 and ds.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 4
    assert convert.rec_to_folders(tmp_path / "rec", tmp_path / "back") == 10
    assert _class_tree(tmp_path / "back") == _class_tree(src)
    assert (tmp_path / "back" / "1" / "3.png").read_bytes() == png
    assert (tmp_path / "back" / "0" / "0.jpg").is_file()
    with pytest.raises(DataError, match="back: output folder exists and is not empty"):
        convert.rec_to_folders(tmp_path / "rec", tmp_path / "back")
    with pytest.raises(DataError, match="train.rec: already exists"):
        convert.folders_to_rec(src, tmp_path / "rec")


def test_non_jpeg_first_image_gives_default_size(tmp_path):
    (tmp_path / "src" / "0").mkdir(parents=True)
    (tmp_path / "src" / "0" / "a.png").write_bytes(_png(40))
    (tmp_path / "src" / "0" / "b.jpg").write_bytes(_jpeg(1))
    convert.folders_to_rec(tmp_path / "src", tmp_path / "rec", num_classes=2)
    assert insightface_rec.read_property(tmp_path / "rec") == (2, 112, 112)


def test_folders2rec_refuses_a_file_that_is_not_an_image(tmp_path):
    """A planted or stray non-image under an image name stops the packing, named; no partial dataset is left."""
    src = _folders(tmp_path / "src")
    (src / "1" / "notes.jpg").write_bytes(b"password=hunter2\n")
    with pytest.raises(DataError, match=r"1/notes.jpg: not a readable JPEG, PNG or BMP image"):
        convert.folders_to_rec(src, tmp_path / "rec")
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == []


def test_make_bin_loads_back(tmp_path):
    src = _folders(tmp_path / "src", per_class=(4, 4, 4, 4))
    pairs, issame = convert.make_bin(src, tmp_path / "v.bin", num_pairs=20, seed=3)
    images, loaded = load_bin(tmp_path / "v.bin")
    assert loaded.tolist() == issame.tolist() and len(images) == 80
    files = sorted(p for p in src.rglob("*.jpg"))
    assert images[0] == files[pairs[0, 0]].read_bytes() and images[-1] == files[pairs[-1, 1]].read_bytes()
    with pytest.raises(DataError, match="src -> .*w.bin: make_pairs: only 24 distinct genuine pairs, 30 needed"):
        convert.make_bin(src, tmp_path / "w.bin", num_pairs=30)
