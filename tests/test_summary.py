"""Model summary: parameter and FLOP counts of a small model against hand counts, latency, the input contract,
the model sources (object, .keras file, backbone name, ONNX and TFLite files against PyTorch's and Keras's counts)
and the errors."""

import warnings

import keras
import numpy as np
import pytest

import keras_insightface.models
from keras_insightface.errors import DataError
from keras_insightface.flops import gflops
from keras_insightface.models import buildin_models
from keras_insightface.summary import format_summary, input_normalization, model_summary

# stem: 3x3 conv, 8 filters, stride 4 -> 28x28x8; GDC head: 28x28 depthwise -> BN -> 1x1 conv to 16 -> BN
CONV, DEPTHWISE, POINTWISE = 3 * 3 * 3 * 8 + 8, 28 * 28 * 8, 8 * 16
PARAMETERS = CONV + DEPTHWISE + 4 * 8 + POINTWISE + 4 * 16  # each BN: gamma, beta, moving mean and variance
TRAINABLE = CONV + DEPTHWISE + 2 * 8 + POINTWISE + 2 * 16
# multiply-accumulates of the three convolutions (the field's GFLOPs); XLA's count adds the normalisation's
# multiply and add per input value and the conv's bias add per output value, and the BNs a few hundred more
MACS = 28 * 28 * 8 * 27 + 28 * 28 * 8 + 8 * 16
COUNTED_FLOPS = 2 * MACS + 2 * 112 * 112 * 3 + 28 * 28 * 8


def tiny_model():
    inputs = keras.Input((112, 112, 3))
    stem = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=4)(inputs), name="tiny")
    return buildin_models(stem, emb_shape=16)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_numbers_of_a_small_model(model):
    info = model_summary(model, runs=3)
    assert (info["parameters"], info["trainable_parameters"]) == (PARAMETERS, TRAINABLE)
    assert model.count_params() == PARAMETERS
    assert info["gflops"] == gflops(model) == MACS / 1e9
    assert info["xla_gflops"] == gflops(model, convention="flops")
    assert COUNTED_FLOPS <= info["xla_gflops"] * 1e9 <= COUNTED_FLOPS + 1000  # multiply and add are two FLOPs
    assert info["latency_ms"] > 0 and (info["latency_batch_size"], info["latency_runs"]) == (1, 3)
    assert (info["embedding_size"], info["input_shape"], info["input_dtype"]) == (16, (None, 112, 112, 3), "float32")
    assert (info["normalization"], info["output_layer"]) == ("(x - 127.5) / 128 (layer 'normalize')", "embedding")
    text = format_summary(info)
    assert f"parameters     {PARAMETERS:,} ({TRAINABLE:,} trainable)" in text
    xla = f"{info['xla_gflops']:.4g}"
    assert f"GFLOPs         0.0001757 per image (multiply-accumulates; XLA's count {xla} GFLOPs)" in text
    assert "Bx112x112x3 float32" in text
    assert model_summary(model, batch_size=4, runs=1)["latency_batch_size"] == 4
    with pytest.raises(ValueError, match="batch_size and runs must be positive"):
        model_summary(model, runs=0)


def test_model_file_and_backbone_name(model, tmp_path, monkeypatch):
    path = tmp_path / "tiny.keras"
    model.save(path)
    from_file = model_summary(path, runs=1)
    assert (from_file["parameters"], from_file["embedding_size"]) == (PARAMETERS, 16)
    assert from_file["normalization"] == "(x - 127.5) / 128 (layer 'normalize')"
    built = []
    monkeypatch.setattr(keras_insightface.models, "buildin_models", lambda name, **options: built.append(name) or model)
    assert model_summary("R18_tiny", runs=1)["parameters"] == PARAMETERS and built == ["R18_tiny"]
    with pytest.raises(DataError, match="r999: neither a .keras/.h5/.onnx/.tflite model file nor a builtin backbone"):
        model_summary("r999")
    with pytest.raises(DataError, match="missing.keras: model file does not exist"):
        model_summary(tmp_path / "missing.keras")
    with pytest.raises(DataError, match="expected a Keras model"):
        model_summary(lambda batch: batch)


def test_input_normalization_is_read_from_the_model():
    inputs = keras.Input((8, 8, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(scaled))
    assert input_normalization(model) == "(x - 127.5) / 127.5 (layer 'to_unit')"
    bare = keras.Model(inputs, keras.layers.Dense(5, name="embedding")(keras.layers.Flatten()(inputs)))
    info = model_summary(bare, runs=1)
    assert info["normalization"] is None and "none found: the model expects normalised input" in format_summary(info)
    assert info["gflops"] * 1e9 == pytest.approx(8 * 8 * 3 * 5)  # the dense layer's multiply-adds
    assert info["xla_gflops"] * 1e9 == pytest.approx(2 * 8 * 8 * 3 * 5 + 5)  # XLA's: multiply, add, bias add
    assert info["embedding_size"] == 5


def _torch_net(torch, normalise):
    """Conv, depthwise conv, a matmul over a 3-d tensor (ONNX MatMul) and a linear layer (ONNX Gemm)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.act = torch.nn.PReLU(8)
            self.depthwise = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.pointwise = torch.nn.Conv2d(8, 16, 1, bias=False)
            self.tokens = torch.nn.Linear(28 * 28, 8)
            self.embedding = torch.nn.Linear(16 * 8, 32)

        def forward(self, x):
            if normalise:
                x = (x - 127.5) * (1 / 128)
            x = self.pointwise(self.depthwise(self.act(self.stem(x))))
            return self.embedding(self.tokens(x.flatten(2)).flatten(1))

    return Net().eval()


def _export_torch(tmp_path, name, normalise, dynamic_batch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    net = _torch_net(torch, normalise)
    path = tmp_path / f"{name}.onnx"
    axes = {"images": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript; torch calls it legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["images"],
                          output_names=["features"], dynamic_axes=axes, dynamo=False)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 112, 112))
    return path, counter.get_total_flops() // 2, sum(p.numel() for p in net.parameters())  # 2 FLOPs per multiply-add


def test_onnx_summary_against_pytorch(tmp_path):
    """A PyTorch-exported ONNX graph: MACs = PyTorch's flop counter / 2, parameters = PyTorch's numel."""
    path, macs, parameters = _export_torch(tmp_path, "net", normalise=False, dynamic_batch=True)
    hand = 56 * 56 * 8 * 27 + 28 * 28 * 8 * 9 + 28 * 28 * 16 * 8 + 16 * 8 * 784 + 32 * 128  # conv, dw, pw, MatMul, Gemm
    assert macs == hand
    info = model_summary(path, batch_size=2, runs=2)
    assert (info["gflops"] * 1e9, info["parameters"]) == (pytest.approx(macs, abs=1e-3), parameters)
    assert (info["embedding_size"], info["input_shape"], info["input_dtype"]) == (32, (None, 3, 112, 112), "float32")
    assert (info["input_layout"], info["output_layer"], info["latency_batch_size"]) == ("NCHW, RGB", "features", 2)
    assert info["latency_ms"] > 0 and info["format"].startswith("ONNX, opset ")
    assert info["normalization"].startswith("none at the graph's start: feed (x - 127.5) / 127.5")
    text = format_summary(info)
    assert f"parameters     {parameters:,} (graph weights)" in text
    assert f"GFLOPs         {macs / 1e9:.4g} per image (multiply-accumulates; counted on the graph)" in text
    assert "median of 2 onnxruntime CPU calls" in text and "32-d, output tensor 'features'" in text
    assert "input          Bx3x112x112 float32 (NCHW, RGB, batch B dynamic)" in text


def test_onnx_fixed_batch_and_normalisation_inside(tmp_path, capsys):
    import argparse

    from keras_insightface.cli.tools import cmd_summary

    path, macs, parameters = _export_torch(tmp_path, "fixed", normalise=True, dynamic_batch=False)
    info = model_summary(path, batch_size=4, runs=1)
    assert (info["latency_batch_size"], info["input_shape"]) == (1, (1, 3, 112, 112))  # timed at its own batch
    assert info["normalization"] == "inside the graph (it takes RGB 0..255)"
    assert (round(info["gflops"] * 1e9), info["parameters"]) == (macs, parameters)  # 127.5, 1/128: Constant nodes
    cmd_summary(argparse.Namespace(model=str(path), batch_size=1, runs=1))
    assert "fixed (ONNX, opset" in capsys.readouterr().out
    with pytest.raises(DataError, match="absent.onnx: model file does not exist"):
        model_summary(tmp_path / "absent.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(DataError, match="bad.onnx: cannot load the ONNX model"):
        model_summary(tmp_path / "bad.onnx")


def _tf_graph(tf, weights):
    @tf.function(input_signature=[tf.TensorSpec([1, 112, 112, 3], tf.float32)])
    def forward(x):
        y = tf.nn.relu(tf.nn.conv2d(x, weights[0], 2, "SAME") + weights[1])
        y = tf.nn.depthwise_conv2d(y, weights[2], [1, 2, 2, 1], "SAME") + weights[3]
        y = tf.nn.conv2d(y, weights[4], 1, "SAME") + weights[5]
        return tf.matmul(tf.reshape(y, [1, -1]), weights[6])

    return forward


def test_tflite_summary_against_the_same_keras_network(tmp_path):
    """A TFLite graph written with TensorFlow ops: its MACs and parameters are our Keras twin's (flops.gflops,
    count_params)."""
    tf = pytest.importorskip("tensorflow")
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    twin = keras.Model(inputs, keras.layers.Dense(32, use_bias=False)(keras.layers.Flatten()(x)))
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in twin.weights]
    forward = _tf_graph(tf, weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    path = tmp_path / "net.tflite"
    path.write_bytes(converter.convert())
    info = model_summary(path, runs=2)
    assert (info["parameters"], info["gflops"]) == (twin.count_params(), gflops(twin))
    assert (info["embedding_size"], info["input_shape"], info["input_layout"]) == (32, (1, 112, 112, 3), "NHWC, RGB")
    assert info["latency_ms"] > 0 and "(TFLite)" in format_summary(info)


def test_tflite_without_an_interpreter_names_the_extra(tmp_path, monkeypatch):
    from keras_insightface.inference import graph_summary

    monkeypatch.setattr(graph_summary, "TFLITE_INTERPRETERS", ("keras_insightface_absent_interpreter",))
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(DataError, match=r"m.tflite: TFLite models need a TFLite interpreter .* pip install "
                                        r"keras_insightface\[export\]"):
        model_summary(tmp_path / "m.tflite")
