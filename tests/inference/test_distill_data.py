"""distill-data: teachers of every format embed as their convention says, and the npz lines up with the images."""

import re
import sys

import numpy as np
import pytest

from keras_insightface.cli import main
from keras_insightface.data.decode import decode_image
from keras_insightface.inference.distill_data import distill_data
from keras_insightface.inference.embedders import open_model
from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from tests.conftest import class_images


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _folders(root, num_classes=3, per_class=3, seed=0):
    """Class folders ``root/<c>/<i>.jpg`` of 112x112 faces-like images."""
    for index, (data, label) in enumerate(class_images(num_classes, per_class, seed=seed)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{index % per_class}.jpg").write_bytes(data)
    return root


def _images(source):
    return np.stack([decode_image(source[i][0]) for i in range(len(source))])


class Projection:
    """A numpy teacher: a fixed random projection of the flattened image, so every image gets its own row."""

    def __init__(self, dim=6, seed=0):
        self.w = np.random.default_rng(seed).normal(size=(112 * 112 * 3, dim)).astype(np.float32) / 112

    def __call__(self, images):
        return (np.asarray(images, np.float32).reshape(len(images), -1) / 255) @ self.w


def _onnx_model(path, channels_first=True, normalises=False, uint8=False, batch="N", size=16, dim=4, seed=0):
    """A tiny embedding graph: [Cast] [Sub, Mul] [Transpose to NCHW] Flatten MatMul; returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(3 * size * size, dim)).astype(np.float32) / size
    shape = [batch, 3, size, size] if channels_first else [batch, size, size, 3]
    nodes, x = [], "x"
    if uint8:
        nodes.append(helper.make_node("Cast", [x], ["xf"], name="Cast_0", to=TensorProto.FLOAT))
        x = "xf"
    if normalises:
        nodes += [
            helper.make_node("Sub", [x, "a"], ["xs"], name="Sub_1"),
            helper.make_node("Mul", ["xs", "b"], ["xm"], name="Mul_2"),
        ]
        x = "xm"
    if not channels_first:
        nodes.append(helper.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [helper.make_node("Flatten", [x], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["y"])]
    constants = {"a": 100.0, "b": 0.01, "w": w}
    initializers = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in constants.items()]
    graph = helper.make_graph(
        nodes, "emb", [helper.make_tensor_value_info("x", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dim])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return w


def _formula(images, w, mean, std):
    """The embedding the test graphs and TorchScript module compute for ``(x - mean) / std`` of NCHW images."""
    x = (images.astype(np.float64) - mean) / std
    return x.transpose(0, 3, 1, 2).reshape(len(images), -1) @ w


@pytest.mark.parametrize(
    "channels_first, normalises, uint8, batch",
    [(True, False, False, "N"), (False, False, False, 2), (True, True, False, "N"), (False, True, False, "N"),
     (True, False, True, "N")],
)
def test_onnx_teacher_layouts_and_normalisation(tmp_path, channels_first, normalises, uint8, batch):
    path = tmp_path / "t.onnx"
    w = _onnx_model(path, channels_first, normalises, uint8, batch)
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    if uint8:
        expected = _formula(images, w, 0, 1)  # raw pixels
    elif normalises:
        expected = _formula(images, w, 100, 100)  # raw pixels into the graph's own (x - 100) * 0.01
    else:
        expected = _formula(images, w, 127.5, 127.5)  # insightface's default for graphs without Sub/Mul
    got = open_model(path)(images)  # a fixed batch of 2 runs 3 images as 2 + 1 padded
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if not normalises and not uint8:
        np.testing.assert_allclose(open_model(path, 0, 1)(images), _formula(images, w, 0, 1), rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_teacher_uses_arcface_torch_convention(tmp_path):
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(2).normal(size=(3 * 16 * 16, 5)).astype(np.float32)

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.from_numpy(w))

        def forward(self, x):
            return torch.flatten(x, 1) @ self.w

    torch.jit.save(torch.jit.script(Flat()), str(tmp_path / "t.pt"))
    images = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    expected = _formula(images, w, 127.5, 127.5)  # (x / 255 - 0.5) / 0.5
    np.testing.assert_allclose(open_model(tmp_path / "t.pt")(images), expected, rtol=1e-4, atol=1e-3)
    torch.save(Flat().state_dict(), tmp_path / "weights.pth")
    with pytest.raises(DataError, match="weights.pth: not a TorchScript module"):
        open_model(tmp_path / "weights.pth")


def test_keras_teacher_embeddings_equal_the_models_outputs(tmp_path):
    import keras

    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Rescaling(1 / 128, offset=-127.5 / 128)(inputs)
    x = keras.layers.Conv2D(4, 16, strides=16)(x)
    model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "teacher.keras")
    data = _folders(tmp_path / "faces")
    distill_data(data, tmp_path / "teacher.keras", tmp_path / "plain.npz", batch_size=4, num_workers=0)
    distill_data(data, tmp_path / "teacher.keras", tmp_path / "flip.npz", batch_size=4, flip=True, num_workers=0)
    images = _images(open_source(data)).astype(np.float32)
    own = np.asarray(model(images))
    flipped = np.asarray(model(images[:, :, ::-1]))
    with np.load(tmp_path / "plain.npz") as plain, np.load(tmp_path / "flip.npz") as flip:
        assert plain["embeddings"].dtype == np.float32 and plain["embeddings"].shape == (9, 8)
        np.testing.assert_allclose(plain["embeddings"], _unit(own), atol=1e-5)
        np.testing.assert_allclose(flip["embeddings"], _unit(own + flipped), atol=1e-5)
        assert plain["image_names"].tolist() == [f"faces/{c}/{i}.jpg" for c in range(3) for i in range(3)]
        assert plain["image_classes"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(DataError, match="teacher.keras: Keras models normalise inside"):
        open_model(tmp_path / "teacher.keras", input_mean=0)


def test_npz_rows_line_up_with_images_for_folders_lists_and_npz(tmp_path):
    teacher = Projection()
    data = _folders(tmp_path / "faces", num_classes=2, per_class=3, seed=4)
    first = distill_data(data, teacher, tmp_path / "out" / "a.npz", batch_size=4, num_workers=0)
    (tmp_path / "list.txt").write_text("faces/1/2.jpg\t0\nfaces/0/0.jpg\t3\n")
    distill_data(tmp_path / "list.txt", teacher, tmp_path / "out" / "sub" / "b.npz", batch_size=1, num_workers=0)
    again = distill_data(first, teacher, tmp_path / "c.npz", batch_size=5, num_workers=0)  # an npz list as input
    expected_labels = {first: [0, 0, 0, 1, 1, 1], tmp_path / "out" / "sub" / "b.npz": [0, 3], again: [0, 0, 0, 1, 1, 1]}
    for path, labels in expected_labels.items():
        source = open_source(path)
        assert source.labels.tolist() == labels
        np.testing.assert_allclose(source.embeddings, _unit(teacher(_images(source))), atol=1e-5)
    with np.load(tmp_path / "out" / "sub" / "b.npz") as b:
        assert b["image_names"].tolist() == ["../../faces/1/2.jpg", "../../faces/0/0.jpg"]


def test_rec_sources_store_rec_path_and_check_labels(tmp_path):
    teacher = Projection(dim=3)
    write_insightface_rec(tmp_path / "rec", class_images(3, 3, seed=5), 3)
    out = distill_data(tmp_path / "rec", teacher, tmp_path / "out" / "d.npz", batch_size=4, num_workers=0)
    with np.load(out) as stored:
        assert set(stored.files) == {"rec_path", "image_classes", "embeddings", "signature"}
        assert str(stored["rec_path"]) == "../rec/train.rec"
        arrays = dict(stored)
    source = open_source(out)
    assert len(source) == 9 and source.num_classes == 3 and source.rec_path.endswith("train.rec")
    np.testing.assert_allclose(source.embeddings, _unit(teacher(_images(source))), atol=1e-5)

    subset = dict(arrays, image_indices=np.array([8, 1, 4]), image_classes=np.array([0, 2, 1]),
                  embeddings=arrays["embeddings"][[8, 1, 4]])
    np.savez(tmp_path / "out" / "subset.npz", **subset)
    source = open_source(tmp_path / "out" / "subset.npz")  # record classes 2, 0, 1 renumbered 0, 2, 1
    assert source.labels.tolist() == [0, 2, 1] and source[0][0] == open_source(tmp_path / "rec")[8][0]
    np.testing.assert_allclose(source.embeddings, _unit(teacher(_images(source))), atol=1e-5)

    bad = {
        "wrong": (dict(arrays, image_classes=np.roll(arrays["image_classes"], 1)),
                  r"image_classes\[0\] is 2 but .* label 0"),
        "short": (dict(arrays, image_classes=arrays["image_classes"][:5], embeddings=arrays["embeddings"][:5]),
                  "image_classes holds 5 labels but .*/rec/train.rec has 9 images"),
        "merge": (dict(subset, image_classes=np.array([0, 0, 1])), r"image_classes value 0 is paired with \[0, 2\]"),
        "split": (dict(subset, image_indices=np.array([0, 1, 8])), r"record label 0 is paired with \[0, 2\]"),
        "outside": (dict(subset, image_indices=np.array([0, 9, 1])), "image_indices holds 9, outside 0..8"),
        "gone": (dict(arrays, rec_path=np.asarray("nowhere/train.rec")), "rec_path 'nowhere/train.rec'"),
    }
    for name, (fields, message) in bad.items():
        np.savez(tmp_path / "out" / f"{name}.npz", **fields)
        with pytest.raises(DataError, match=f"{name}.npz: {message}"):
            open_source(tmp_path / "out" / f"{name}.npz")


def test_bad_teachers_outputs_and_images(tmp_path, monkeypatch):
    (tmp_path / "model.pb").write_bytes(b"x")
    with pytest.raises(DataError, match=r"model.pb: unknown model format '.pb'; expected one of .keras, .h5, .onnx"):
        open_model(tmp_path / "model.pb")
    with pytest.raises(DataError, match="none.onnx: model file does not exist"):
        open_model(tmp_path / "none.onnx")
    _onnx_model(tmp_path / "t.onnx")
    with pytest.raises(DataError, match=r"t.onnx: the ONNX model takes \[16, 16\] images, received \[112, 112\]"):
        open_model(tmp_path / "t.onnx")(np.zeros((1, 112, 112, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if onnxruntime were not installed
    message = r"t.onnx: ONNX models need onnxruntime .*pip install keras_insightface\[onnx\]"
    with pytest.raises(DataError, match=message):
        open_model(tmp_path / "t.onnx")
    monkeypatch.setitem(sys.modules, "torch", None)
    (tmp_path / "t.pt").write_bytes(b"x")
    with pytest.raises(DataError, match=r"t.pt: TorchScript models need torch .*keras_insightface\[compat\]"):
        open_model(tmp_path / "t.pt")
    data = _folders(tmp_path / "faces", num_classes=2, per_class=2)
    with pytest.raises(DataError, match="out.txt: output must be an .npz file"):
        distill_data(data, Projection(), tmp_path / "out.txt", num_workers=0)
    (data / "1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match="broken.jpg: cannot decode image"):
        distill_data(data, Projection(), tmp_path / "d.npz", num_workers=0)
    with pytest.raises(DataError, match="model returned shape"):
        distill_data(_folders(tmp_path / "ok"), lambda images: np.zeros(len(images)), tmp_path / "d.npz", num_workers=0)


def test_cli_distill_data_with_an_onnx_teacher_and_threads(tmp_path, capsys):
    w = _onnx_model(tmp_path / "t.onnx", channels_first=False, size=112, dim=8)
    data = _folders(tmp_path / "faces", num_classes=3, per_class=4)
    argv = ["distill-data", str(data), str(tmp_path / "d.npz"), "-m", str(tmp_path / "t.onnx"), "-b", "5",
            "--num-workers", "2", "--flip"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"embedding .*: 12/12 \(100%\) - .* - img/s: \d+", out) and "\x1b" not in out
    source = open_source(tmp_path / "d.npz")
    images = _images(source)
    expected = _formula(images, w, 127.5, 127.5) + _formula(images[:, :, ::-1], w, 127.5, 127.5)
    np.testing.assert_allclose(source.embeddings, _unit(expected), atol=1e-4)
    assert main(["distill-data", str(data), str(tmp_path / "e.npz"), "-m", str(tmp_path / "t.bin")]) == 2
    assert "t.bin: unknown model format" in capsys.readouterr().err
