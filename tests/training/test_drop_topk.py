"""drop-topk: the dominant sub-center per class, the angle limit, the kernel sources and the written npz list."""

import numpy as np
import pytest
import simplejpeg

from keras_insightface.cli import main
from keras_insightface.training.drop_topk import class_subcenters, drop_topk, drop_topk_data, load_kernel, subcenter_cosines
from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError


def _directions(degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=-1)


# Three classes, two sub-centers each; class c's sub-centers are kernel columns 2c and 2c + 1 (NormDense's layout).
SUBCENTERS = {0: (0, 90), 1: (180, 270), 2: (0, 180)}
# Image angles: class 0 mostly near 0 deg (70 is nearer 90, but within 75 of the dominant 0; 84 is not);
# class 1 mostly near 270 (200 is nearer 180 but within 75 of 270; 100 is 170 away); class 2 all beyond 75.
IMAGES = {0: (10, 20, 30, 70, 84), 1: (260, 280, 270, 200, 100), 2: (86, 94)}
KEPT = [0, 1, 2, 3, 5, 6, 7, 8]


def _kernel(norms=None):
    kernel = _directions([angle for c in range(3) for angle in SUBCENTERS[c]]).T  # (2, 6)
    return kernel * (1 if norms is None else norms)


def _labels():
    return np.repeat(np.arange(3), [len(IMAGES[c]) for c in range(3)])


def angle_teacher(images):
    """Embeds an image filled with gray level v as the direction 2v degrees (v = the mean pixel)."""
    return _directions(2 * np.asarray(images, np.float64).mean(axis=(1, 2, 3))).astype(np.float32)


def _samples():
    """(JPEG of a flat gray image, label) per image of IMAGES, gray = angle / 2, so angle_teacher recovers it."""
    flat = lambda angle: np.full((112, 112, 3), angle // 2, np.uint8)  # noqa: E731
    return [(simplejpeg.encode_jpeg(flat(angle), quality=95), c) for c in range(3) for angle in IMAGES[c]]


def _folders(root):
    for index, (data, label) in enumerate(_samples()):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{index - sum(len(IMAGES[c]) for c in range(label))}.jpg").write_bytes(data)
    return root


def test_dominant_subcenter_and_angle_limit():
    rng = np.random.default_rng(0)
    embeddings = _directions([a for c in range(3) for a in IMAGES[c]]) * rng.uniform(0.5, 3, (12, 1))
    kernel = _kernel(rng.uniform(0.2, 5, 6))  # column norms do not matter
    assert drop_topk(embeddings, _labels(), kernel, top_k=2).tolist() == KEPT
    assert drop_topk(embeddings, _labels(), kernel, top_k=2, limit_deg=85).tolist() == KEPT[:4] + [4] + KEPT[4:]
    assert drop_topk(embeddings, _labels(), kernel, top_k=2, limit_deg=180).tolist() == list(range(12))
    swapped = kernel.reshape(2, 3, 2).transpose(0, 2, 1).reshape(2, 6)  # sub-center-major columns: the wrong layout
    assert drop_topk(embeddings, _labels(), swapped, top_k=2).tolist() != KEPT


def test_subcenter_layout_follows_norm_dense():
    import keras

    from keras_insightface.heads.norm_dense import NormDense

    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(20, 8)).astype(np.float32), rng.integers(0, 5, 20)
    layer = NormDense(5, loss_top_k=3)
    layer.build((None, 8))
    layer.kernel.assign(rng.normal(size=(8, 15)).astype(np.float32))
    per_class_max = np.asarray(layer(embeddings))[np.arange(20), labels]
    cosines = subcenter_cosines(embeddings, labels, class_subcenters(keras.ops.convert_to_numpy(layer.kernel), 3))
    np.testing.assert_allclose(cosines.max(axis=1), per_class_max, atol=1e-5)


def test_kernel_and_label_errors(tmp_path):
    embeddings = _directions([0, 10, 20])
    with pytest.raises(DataError, match="kernel has 5 columns, not a multiple of top_k=2"):
        drop_topk(embeddings, [0, 0, 1], np.ones((2, 5)), top_k=2)
    with pytest.raises(DataError, match="do not fit sub-centers of 3 dimensions"):
        drop_topk(embeddings, [0, 0, 1], np.ones((3, 4)), top_k=2)
    with pytest.raises(DataError, match=r"labels span 0..2, the kernel holds classes 0..1"):
        drop_topk(embeddings, [0, 1, 2], np.ones((2, 4)), top_k=2)
    with pytest.raises(DataError, match="top_k must be at least 1"):
        drop_topk(embeddings, [0, 0, 1], np.ones((2, 4)), top_k=0)
    np.save(tmp_path / "k.npy", np.ones((2, 5)))
    with pytest.raises(DataError, match="k.npy: kernel has 5 columns, not a multiple of top_k=2"):
        drop_topk_data(_folders(tmp_path / "faces"), angle_teacher, tmp_path / "k.npy", 2, tmp_path / "o.npz")
    np.save(tmp_path / "k.npy", np.ones((2, 8)))
    with pytest.raises(DataError, match="faces: 3 classes, but .*k.npy holds 4"):
        drop_topk_data(tmp_path / "faces", angle_teacher, tmp_path / "k.npy", 2, tmp_path / "o.npz")
    with pytest.raises(DataError, match="faces: neither a .npy kernel nor a <name>_state checkpoint folder"):
        load_kernel(tmp_path / "faces")
    with pytest.raises(DataError, match="k.txt: neither a .npy kernel nor"):
        load_kernel(tmp_path / "k.txt")
    with pytest.raises(DataError, match="none.npy: cannot read the kernel"):
        load_kernel(tmp_path / "none.npy")


def test_folder_dataset_with_a_checkpoint_kernel(tmp_path, capsys):
    import keras

    from keras_insightface.heads.norm_dense import NormDense
    from keras_insightface.training.checkpoint import save_state

    inputs = keras.Input((2,))
    model = keras.Model(inputs, NormDense(3, loss_top_k=2, name="norm_dense")(inputs))
    model.get_layer("norm_dense").kernel.assign(_kernel().astype(np.float32))
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    save_state(str(tmp_path / "run_state"), model, optimizer, {"epoch": 0}, {})
    np.testing.assert_allclose(load_kernel(tmp_path / "run_state"), _kernel(), atol=1e-6)

    data = _folders(tmp_path / "faces")
    kernel = tmp_path / "run_state"
    result = drop_topk_data(data, angle_teacher, kernel, 2, tmp_path / "clean.npz", batch_size=5, num_workers=0)
    assert result == {"images": (8, 12), "classes": (2, 3)}
    assert "kept 8 of 12 images (4 dropped) and 2 of 3 classes (1 dropped)" in capsys.readouterr().out
    with np.load(tmp_path / "clean.npz") as clean:
        assert clean["image_names"].tolist() == [f"faces/{c}/{i}.jpg" for c in range(2) for i in range(4)]
        assert clean["image_classes"].tolist() == [0] * 4 + [1] * 4
    assert len(open_source(tmp_path / "clean.npz")) == 8


def test_rec_dataset_gives_rec_path_and_indices_that_distill_again(tmp_path):
    from keras_insightface.inference.distill_data import distill_data

    write_insightface_rec(tmp_path / "rec", _samples(), 3)
    drop_topk_data(tmp_path / "rec", angle_teacher, _kernel(), 2, tmp_path / "clean.npz", batch_size=4, num_workers=0)
    with np.load(tmp_path / "clean.npz") as clean:
        assert str(clean["rec_path"]) == "rec/train.rec" and clean["image_indices"].tolist() == KEPT
    source, rec = open_source(tmp_path / "clean.npz"), open_source(tmp_path / "rec")
    assert source.labels.tolist() == [0] * 4 + [1] * 4 and source.num_classes == 2
    assert [source[i][0] for i in range(8)] == [rec[i][0] for i in KEPT]
    distill_data(tmp_path / "clean.npz", angle_teacher, tmp_path / "teacher.npz", num_workers=0)
    distilled = open_source(tmp_path / "teacher.npz")
    assert distilled.labels.tolist() == source.labels.tolist()
    angles = [a for c in range(3) for a in IMAGES[c]]
    np.testing.assert_allclose(distilled.embeddings, _directions([angles[i] for i in KEPT]), atol=0.05)
    away = lambda images: np.tile(_directions([180]).astype(np.float32), (len(images), 1))  # noqa: E731
    near_zero = _directions([0, 10] * 3).T  # every sub-center within 10 degrees of 0, the images all at 180
    with pytest.raises(DataError, match="rec: no image is within 75 degrees of its dominant sub-center"):
        drop_topk_data(tmp_path / "rec", away, near_zero, 2, tmp_path / "none.npz", num_workers=0)


def test_cli_drop_topk_with_an_onnx_model(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(2).normal(size=(112 * 112 * 3, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "emb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 112, 112, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "basic.onnx")
    np.save(tmp_path / "kernel.npy", _kernel())
    data = _folders(tmp_path / "faces")
    argv = ["drop-topk", str(data), str(tmp_path / "cli.npz"), "-m", str(tmp_path / "basic.onnx"),
            "--kernel", str(tmp_path / "kernel.npy"), "--top-k", "2", "--limit-deg", "60", "--num-workers", "2"]
    assert main(argv) == 0
    assert "drop-topk: kept" in capsys.readouterr().out
    from keras_insightface.inference.embedders import open_model

    drop_topk_data(data, open_model(tmp_path / "basic.onnx"), tmp_path / "kernel.npy", 2, tmp_path / "api.npz",
                   limit_deg=60, num_workers=0)
    with np.load(tmp_path / "cli.npz") as cli, np.load(tmp_path / "api.npz") as api:
        assert cli["image_names"].tolist() == api["image_names"].tolist()
        assert cli["image_classes"].tolist() == api["image_classes"].tolist()
    assert main(argv[:-4] + ["--top-k", "4"]) == 2
    assert "kernel.npy: kernel has 6 columns, not a multiple of top_k=4" in capsys.readouterr().err
