"""Model summary: parameter and FLOP counts of a small model against hand counts, latency, the input contract,
the model sources (object, .keras file, backbone name) and the errors."""

import keras
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
    with pytest.raises(DataError, match="r999: neither a .keras/.h5 model file nor a builtin backbone"):
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
