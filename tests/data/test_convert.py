"""Converters: class folders <-> insightface RecordIO round trips with class names, the pack-time size check
(with --resize and --skip-bad), --overwrite, and new verification packs of any size in KFold's folds."""

import io
import re

import numpy as np
import pytest
import simplejpeg

from keras_insightface.cli import main
from keras_insightface.data import convert, insightface_rec
from keras_insightface.data.binpack import load_bin
from keras_insightface.data.decode import decode_image
from keras_insightface.data.loader import ordered_batches
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError

NAMES = ["Anne Smith", "bob", "Zoë_Ünal", "10", "2"]  # numbers, spaces, non-ASCII: sorted as the loader numbers them


def _jpeg(seed, size=112):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((size // 8 + 1, size // 8 + 1, 1), np.uint8))[:size, :size]
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image))


def _png(size=112):
    """A real PNG written by Pillow (not by this project)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _class_tree(root):
    """{class folder name: sorted image bytes} of a folder of class subfolders."""
    return {d.name: sorted(f.read_bytes() for f in d.iterdir()) for d in root.iterdir() if d.is_dir()}


def _folders(root, names=NAMES, per_class=(3, 2, 4, 2, 3)):
    for label, (name, count) in enumerate(zip(names, per_class)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"img{i}.jpg").write_bytes(_jpeg(label * 100 + i))
    return root


def _trained_on(rec_dir):
    """Every (image, label) the training loader reads from a pack, strictly (any unreadable image raises)."""
    batches = list(ordered_batches(open_source(rec_dir), batch_size=4, num_workers=1, strict=True))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _real_faces(real_faces):
    return [p.read_bytes() for p in sorted((real_faces / "small_dataset" / "images").glob("*.jpg"))]


def _one_face_per_class(src, faces):
    for label, face in enumerate(faces):
        (src / f"p{label}").mkdir(parents=True)
        (src / f"p{label}" / "a.jpg").write_bytes(face)
    return src


def _lfw_sized(face_jpeg):
    """A 112x112 aligned face padded to LFW's 250x250 raw size, as an LFW original would arrive."""
    face = decode_image(face_jpeg)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(np.pad(face, ((69, 69), (69, 69), (0, 0)), mode="edge")))


def test_round_trip_keeps_class_names(tmp_path):
    src = _folders(tmp_path / "src")
    png = _png()
    (src / "bob" / "extra.png").write_bytes(png)
    report = convert.folders_to_rec(src, tmp_path / "rec")
    assert (report.images, report.classes, report.resized, report.skipped, report.class_names) == (15, 5, [], [], True)
    assert insightface_rec.read_property(tmp_path / "rec") == (5, 112, 112)
    # labels as the loader numbers class folders: numbers first in numeric order, then names
    order = ["2", "10", "Anne Smith", "Zoë_Ünal", "bob"]
    assert (tmp_path / "rec" / "classes.txt").read_text(encoding="utf-8") == "".join(f"{n}\n" for n in order)
    assert insightface_rec.read_class_names(tmp_path / "rec", 5) == order
    images, labels = _trained_on(tmp_path / "rec")
    assert images.shape == (15, 112, 112, 3)
    counts = {name: len(files) for name, files in _class_tree(src).items()}
    assert np.bincount(labels).tolist() == [counts[name] for name in order]
    assert convert.rec_to_folders(tmp_path / "rec", tmp_path / "back") == 15
    assert _class_tree(tmp_path / "back") == _class_tree(src)
    assert (tmp_path / "back" / "bob" / "12.png").read_bytes() == png  # bob: the last class, extra.png first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "rec", "src"]  # no temporary folder left


def test_packs_without_names_unpack_by_label(tmp_path):
    """insightface's packs have no classes.txt: folders come back as label numbers; a list file has no names."""
    insightface_rec.write_insightface_rec(tmp_path / "rec", [(_jpeg(1), 0), (_jpeg(2), 1), (_jpeg(3), 1)], 2)
    assert not (tmp_path / "rec" / "classes.txt").exists()
    convert.rec_to_folders(tmp_path / "rec", tmp_path / "back")
    assert _class_tree(tmp_path / "back") == {"0": [_jpeg(1)], "1": sorted([_jpeg(2), _jpeg(3)])}
    (tmp_path / "list.txt").write_text("back/0/0.jpg\t0\nback/1/1.jpg\t1\n")
    report = convert.folders_to_rec(tmp_path / "list.txt", tmp_path / "from_list")
    assert report.images == 2 and not report.class_names and not (tmp_path / "from_list" / "classes.txt").exists()


def test_a_rec_source_passes_its_names_on(tmp_path):
    convert.folders_to_rec(_folders(tmp_path / "src"), tmp_path / "rec")
    report = convert.folders_to_rec(tmp_path / "rec", tmp_path / "again")
    assert report.class_names
    assert (tmp_path / "again" / "classes.txt").read_bytes() == (tmp_path / "rec" / "classes.txt").read_bytes()


@pytest.mark.parametrize("names, message", [
    ("a\nb\n", r"classes.txt: 2 class names for 3 classes"),
    ("a\n..\nc\n", r"classes.txt: class 1 has the name '\.\.', which cannot be a folder name"),
    ("a\nx/y\nc\n", r"class 1 has the name 'x/y'"),
    ("a\nb\na\n", r"the class name 'a' is given to more than one class"),
])
def test_class_names_that_cannot_name_folders_are_refused(tmp_path, names, message):
    insightface_rec.write_insightface_rec(tmp_path / "rec", [(_jpeg(c), c) for c in range(3)], 3)
    (tmp_path / "rec" / "classes.txt").write_text(names, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        convert.rec_to_folders(tmp_path / "rec", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_wrong_size_and_unreadable_images_stop_the_packing_all_listed(tmp_path, real_faces):
    faces = _real_faces(real_faces)
    src = _one_face_per_class(tmp_path / "src", faces[:4])
    lfw = _lfw_sized(faces[4])
    (src / "p0" / "lfw.jpg").write_bytes(lfw)
    (src / "p1" / "lfw.jpg").write_bytes(_lfw_sized(faces[5]))
    (src / "p2" / "notes.jpg").write_bytes(b"password=hunter2\n")
    with pytest.raises(DataError, match="p0/lfw.jpg") as caught:  # what training would say of it
        decode_image(lfw, (112, 112), where=str(src / "p0" / "lfw.jpg"))
    assert "image is 250x250, expected aligned 112x112 faces" in str(caught.value)
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError) as caught:
        convert.folders_to_rec(src, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("src: 3 of 7 images cannot be packed as 112x112 (height x width) faces (2 not 112x112, "
                              "1 unreadable)")
    assert re.search(r"\n  .*p0/lfw\.jpg: image is 250x250, the pack's size is 112x112\n", message)
    assert re.search(r"\n  .*p1/lfw\.jpg: image is 250x250", message)
    assert re.search(r"\n  .*p2/notes\.jpg: not a readable JPEG, PNG or BMP image", message)
    assert "--resize (resize=True) decodes the ones of another size, resizes them to 112x112 and re-encodes them " \
           "as JPEG quality 95" in message and "--skip-bad (skip_bad=True) leaves them out" in message
    assert list((tmp_path / "out").iterdir()) == []  # nothing kept, no temporary file left
    (src / "p2" / "notes.jpg").unlink()
    with pytest.raises(DataError, match=r"2 of 6 images .*\(2 not 112x112\)") as caught:
        convert.folders_to_rec(src, tmp_path / "out")
    assert "--resize" in str(caught.value)


def test_a_different_pack_size_is_checked_too(tmp_path):
    src = _folders(tmp_path / "src", names=["a", "b"], per_class=(2, 2))
    with pytest.raises(DataError, match=r"4 of 4 images cannot be packed as 112x96 \(height x width\) faces \(4 not "
                                        r"112x96\)"):
        convert.folders_to_rec(src, tmp_path / "rec", image_size=(112, 96))
    convert.folders_to_rec(src, tmp_path / "rec", image_size=(112, 96), resize=True)
    assert insightface_rec.read_property(tmp_path / "rec") == (2, 112, 96)
    assert decode_image(insightface_rec.InsightfaceRec(tmp_path / "rec")[0][0], (112, 96)).shape == (112, 96, 3)


def test_resize_makes_what_training_reads(tmp_path, real_faces):
    """--resize of a face scaled to 224x224 gives back (nearly) the original 112x112 face, at quality 95."""
    faces = _real_faces(real_faces)
    src = _one_face_per_class(tmp_path / "src", faces[:3])
    originals = [decode_image(face) for face in faces[:3]]
    doubled = np.kron(originals[1], np.ones((2, 2, 1), np.uint8))
    (src / "p1" / "b.jpg").write_bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(doubled), quality=98))
    (src / "p2" / "lfw.jpg").write_bytes(_lfw_sized(faces[2]))
    report = convert.folders_to_rec(src, tmp_path / "rec", resize=True)
    assert report.images == 5 and len(report.resized) == 2 and report.skipped == []
    assert report.resized[0].endswith("p1/b.jpg: 224x224") and report.resized[1].endswith("p2/lfw.jpg: 250x250")
    images, labels = _trained_on(tmp_path / "rec")
    assert labels.tolist() == [0, 1, 1, 2, 2]
    back = images[2].astype(np.float64)
    assert np.abs(back - originals[1]).mean() < 4  # bicubic down by 2 of a 2x2 block copy, JPEG 95 and 98
    ds = insightface_rec.InsightfaceRec(tmp_path / "rec")
    assert ds[0][0] == faces[0]  # images of the pack's size keep their bytes
    resized = ds[2][0]
    assert simplejpeg.decode_jpeg_header(resized)[:2] == (112, 112)
    again = simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(resized), quality=95)
    assert abs(len(again) - len(resized)) < 0.05 * len(resized)  # re-encoding at 95 keeps the size: it was 95


def test_skip_bad_leaves_them_out_listed(tmp_path, real_faces):
    faces = _real_faces(real_faces)
    src = _one_face_per_class(tmp_path / "src", faces[:3])
    (src / "p0" / "lfw.jpg").write_bytes(_lfw_sized(faces[5]))
    (src / "p1" / "broken.jpg").write_bytes(faces[6][:2] + b"\x00" * 40)
    report = convert.folders_to_rec(src, tmp_path / "rec", skip_bad=True)
    assert report.images == 3 and len(report.skipped) == 2
    assert report.skipped[0].endswith("p0/lfw.jpg: image is 250x250, the pack's size is 112x112")
    assert "p1/broken.jpg: not a readable JPEG, PNG or BMP image" in report.skipped[1]
    images, labels = _trained_on(tmp_path / "rec")
    assert labels.tolist() == [0, 1, 2]
    assert [ds_bytes for ds_bytes, _ in insightface_rec.InsightfaceRec(tmp_path / "rec")] == faces[:3]


def test_overwrite_of_every_output(tmp_path):
    src = _folders(tmp_path / "src", names=["a", "b", "c"], per_class=(4, 4, 4))
    convert.folders_to_rec(src, tmp_path / "rec")
    old_rec = (tmp_path / "rec" / "train.rec").read_bytes()
    with pytest.raises(DataError, match=r"rec/train.rec: already exists, not overwritten \(--overwrite"):
        convert.folders_to_rec(src, tmp_path / "rec")
    assert (tmp_path / "rec" / "train.rec").read_bytes() == old_rec
    (tmp_path / "list.txt").write_text("src/a/img0.jpg\t0\nsrc/b/img0.jpg\t1\n")
    convert.folders_to_rec(tmp_path / "list.txt", tmp_path / "rec", overwrite=True)
    assert len(insightface_rec.InsightfaceRec(tmp_path / "rec")) == 2
    assert not (tmp_path / "rec" / "classes.txt").exists()  # the old names would name other classes

    convert.rec_to_folders(tmp_path / "rec", tmp_path / "back")
    with pytest.raises(DataError, match=r"back: output folder exists and is not empty \(--overwrite"):
        convert.rec_to_folders(tmp_path / "rec", tmp_path / "back")
    convert.folders_to_rec(src, tmp_path / "rec", overwrite=True)
    convert.rec_to_folders(tmp_path / "rec", tmp_path / "back", overwrite=True)
    assert _class_tree(tmp_path / "back") == _class_tree(src)
    (tmp_path / "back" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"back: not replaced: .* this one holds .*back/notes\.txt"):
        convert.rec_to_folders(tmp_path / "rec", tmp_path / "back", overwrite=True)
    assert (tmp_path / "back" / "notes.txt").read_text() == "mine"

    convert.make_bin(src, tmp_path / "v.bin", num_pairs=10)
    with pytest.raises(DataError, match=r"v.bin: already exists, not overwritten \(--overwrite"):
        convert.make_bin(src, tmp_path / "v.bin", num_pairs=12)
    assert len(load_bin(tmp_path / "v.bin")[1]) == 20
    convert.make_bin(src, tmp_path / "v.bin", num_pairs=12, overwrite=True)
    assert len(load_bin(tmp_path / "v.bin")[1]) == 24


def _sklearn_kfold_accuracy(dist, issame):
    """insightface's 10-fold accuracy with scikit-learn's KFold: each fold's threshold chosen on the others."""
    from sklearn.model_selection import KFold

    thresholds = np.arange(0, 4, 0.01)
    folds = []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(issame))):
        best = thresholds[np.argmax([np.mean((dist[train] < t) == issame[train]) for t in thresholds])]
        folds.append(np.mean((dist[test] < best) == issame[test]))
    return np.mean(folds), np.std(folds)


def test_make_bin_of_any_size_is_scored_in_sklearn_folds(tmp_path):
    from sklearn.model_selection import KFold

    from keras_insightface.evaluation.verification import kfold_accuracy

    src = _folders(tmp_path / "src", names=list("abcdef"), per_class=(4,) * 6)
    pairs, issame = convert.make_bin(src, tmp_path / "v.bin", num_pairs=13, seed=1)
    images, loaded = load_bin(tmp_path / "v.bin")
    assert len(images) == 52 and loaded.tolist() == issame.tolist() and issame.sum() == 13
    for _, fold in KFold(n_splits=10).split(np.arange(26)):
        assert issame[fold].any() and not issame[fold].all()
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(26, 8)), rng.normal(size=(26, 8))
    second[issame] = first[issame] + rng.normal(scale=0.8, size=(13, 8))
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (first, second)]
    dist = np.sum(np.square(unit[0] - unit[1]), axis=1)
    assert kfold_accuracy(first, second, issame) == pytest.approx(_sklearn_kfold_accuracy(dist, issame), abs=1e-12)
    with pytest.raises(DataError, match="src -> .*w.bin: make_pairs: only 36 distinct genuine pairs, 37 needed"):
        convert.make_bin(src, tmp_path / "w.bin", num_pairs=37)


def test_convert_commands_say_what_they_did(tmp_path, capsys, real_faces):
    faces = _real_faces(real_faces)
    src = tmp_path / "faces"
    for label, name in enumerate(["ann", "bob", "cid"]):
        (src / name).mkdir(parents=True)
        for i in range(3):
            (src / name / f"{i}.jpg").write_bytes(faces[(3 * label + i) % len(faces)])
    (src / "bob" / "raw.jpg").write_bytes(_lfw_sized(faces[0]))
    assert main(["convert", "folders2rec", str(src), str(tmp_path / "rec")]) == 2
    err = capsys.readouterr().err
    assert "faces: 1 of 10 images cannot be packed as 112x112 (height x width) faces" in err and "--resize" in err
    assert main(["convert", "folders2rec", str(src), str(tmp_path / "rec"), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"left out: .*bob/raw\.jpg: image is 250x250", out)
    assert (f">>>> folders2rec: {src} -> {tmp_path / 'rec'} (9 images of 112x112, 3 classes, 0 resized, 1 left out; "
            "class names in classes.txt)") in out
    assert main(["convert", "folders2rec", str(src), str(tmp_path / "rec"), "--resize"]) == 2
    assert "rec/train.rec: already exists, not overwritten (--overwrite" in capsys.readouterr().err
    assert main(["convert", "folders2rec", str(src), str(tmp_path / "rec"), "--resize", "--overwrite"]) == 0
    assert "(10 images of 112x112, 3 classes, 1 resized, 0 left out;" in capsys.readouterr().out
    assert main(["convert", "rec2folders", str(tmp_path / "rec"), str(tmp_path / "back")]) == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["ann", "bob", "cid"]
    assert main(["convert", "make-bin", str(tmp_path / "rec"), str(tmp_path / "p.bin"), "--pairs", "11"]) == 0
    assert "(11 genuine and 11 impostor pairs in 10 folds)" in capsys.readouterr().out
    assert main(["convert", "make-bin", str(tmp_path / "rec"), str(tmp_path / "p.bin"), "--pairs", "9"]) == 2
    assert "num_pairs must be at least 10, got 9" in capsys.readouterr().err
    assert main(["convert", "make-bin", str(tmp_path / "rec"), str(tmp_path / "q.bin"), "--resize"]) == 2
    assert "--resize applies to folders2rec only, not to make-bin" in capsys.readouterr().err
    (tmp_path / "m.keras").write_bytes(b"a model")
    for kind, source in (("seed-h5", "absent.h5"), ("arcface-torch", "absent.pth"), ("onnx", "absent.onnx")):
        assert main(["convert", kind, str(tmp_path / source), str(tmp_path / "m.keras")]) == 2
        assert "m.keras: already exists, not overwritten (--overwrite" in capsys.readouterr().err
    assert main(["convert", "seed-h5", str(tmp_path / "absent.h5"), str(tmp_path / "m.keras"), "--overwrite"]) == 2
    assert "absent.h5" in capsys.readouterr().err  # past the check: the missing source is the error now
    assert main(["convert", "folders2rec", str(src), str(tmp_path / "x"), "--image-size", "big"]) == 2
    assert "--image-size 'big': expected HEIGHTxWIDTH" in capsys.readouterr().err
