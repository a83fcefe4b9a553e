"""Export of basic models: BN folding, ONNX / TFLite / SavedModel round trips per backbone family, metadata,
fp16, the verification failure path and the missing-extra error.

Every round trip is checked twice: ``export_model`` verifies by itself, and the test runs the file again in
its runtime on other images (batch 3) and compares with ``model.predict``. BatchNormalization statistics are
randomised first, so folding and conversion meet realistic, non-identity BN layers.
"""

import contextlib
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras_insightface  # noqa: E402
from keras_insightface.backbones import get_backbone  # noqa: E402
from keras_insightface.errors import DataError  # noqa: E402
from keras_insightface.export import (  # noqa: E402
    MissingExtraError, VerificationError, export_model, read_metadata, verify_export,
)
from keras_insightface.export.fold_bn import fold_batch_norms  # noqa: E402
from keras_insightface.export.verify import runner  # noqa: E402
from keras_insightface.layers.mhsa import MHSAWithPositionEmbedding  # noqa: E402
from keras_insightface.models import buildin_models  # noqa: E402

EMB = 24


@contextlib.contextmanager
def numpy_initializers(seed=0):
    """Build models with NumPy random weights: JAX compiles one random kernel per weight shape (about 90 for
    GhostNet, 15 s on 2 cores), NumPy needs none. The weights are random either way."""
    import jax.numpy as jnp
    import keras.src.backend.jax.random as jax_random

    rng = np.random.default_rng(seed)

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return jnp.asarray(rng.uniform(minval, maxval, shape), dtype or "float32")

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return jnp.asarray(rng.normal(mean, stddev, shape), dtype or "float32")

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return jnp.asarray(np.clip(rng.normal(0, 1, shape), -2, 2) * stddev + mean, dtype or "float32")

    with pytest.MonkeyPatch.context() as patch:
        for function in (uniform, normal, truncated_normal):
            patch.setattr(jax_random, function.__name__, function)
        yield


def randomize_bn(model, seed=0):
    """Random gamma/beta/mean/variance in every BatchNormalization (nested models too)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, size).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
    return model


def truncated(backbone, last_layer, name):
    """The first stages of a named backbone (up to ``last_layer``) under the GDC head: the family's own
    blocks at a test-sized parameter count."""
    inputs = keras.Input((112, 112, 3))
    full = keras.Model(inputs, get_backbone(backbone)(inputs))
    stem = keras.Model(inputs, full.get_layer(last_layer).output, name=name + "_stem")
    return buildin_models(stem, emb_shape=EMB, name=name)


def mhsa_net():
    """BoTNet's distinguishing block, relative-position MHSA between convs, on a small strided stem."""
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(32, 3, strides=8, padding="same", use_bias=False)(inputs)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    x = MHSAWithPositionEmbedding(num_heads=4, relative=True)(x)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    return buildin_models(keras.Model(inputs, x, name="mhsa_stem"), emb_shape=EMB, name="botnet_mhsa")


FAMILIES = {
    "iresnet": lambda: buildin_models("r18_tiny", emb_shape=EMB),
    "mobilefacenet": lambda: buildin_models("mobilefacenet_insightface", emb_shape=EMB, width=0.125),
    "mobilenet": lambda: buildin_models("mobilenetv3_small", emb_shape=EMB, alpha=0.25, weights=None),
    "ghostnet": lambda: buildin_models("ghostnet", emb_shape=EMB, width=0.1),
    "vargface": lambda: buildin_models("vargfacenet", emb_shape=EMB, multiplier=0.25, group_size=4, use_se=False),
    "vit": lambda: buildin_models("vit_t", emb_shape=EMB, embed_dim=32, depth=2, num_heads=4),
    "efficientnet": lambda: truncated("efficientnetv2b0", "block4b_add", "efficientnetv2b0_part"),
    "resnetv2": lambda: truncated("resnet50v2", "conv3_block1_out", "resnet50v2_part"),
    "botnet": mhsa_net,
}


@pytest.fixture(scope="module")
def models():
    """Each family's test model, built once (randomised BN) on first use."""
    cache = {}

    def get(family):
        if family not in cache:
            with numpy_initializers():
                cache[family] = randomize_bn(FAMILIES[family]())
        return cache[family]

    return get


def images(count, seed):
    return np.random.default_rng(seed).integers(0, 256, (count, 112, 112, 3), dtype=np.uint8)


def normalized(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def assert_matches_keras(path, model, atol=1e-4):
    """The exported file, run by its runtime on 8 fresh images, against the Keras model."""
    batch = images(8, seed=7).astype("float32")  # batch 8, as the verification: predict is compiled already
    exported = runner(path)(batch)
    expected = model.predict(batch, verbose=0)
    assert exported.shape == expected.shape == (8, model.output_shape[-1])
    np.testing.assert_allclose(normalized(exported), normalized(expected), atol=atol)


def assert_metadata(path, result, fmt):
    """The metadata read back from the file: what ``export_model`` reported, with the documented values."""
    meta = read_metadata(path)
    assert meta == result.metadata
    assert meta["producer"] == f"keras_insightface {keras_insightface.__version__}"
    assert meta["format"] == fmt and meta["embedding_size"] == str(EMB) and meta["route"] == result.route
    assert (meta["input_name"], meta["output_name"], meta["input_layout"]) == ("image", "embedding", "NHWC")
    assert meta["input_shape"] == "[-1, 112, 112, 3]" and meta["input_color"] == "RGB"
    assert meta["normalization"] == "(x - 127.5) / 128, inside the model"
    assert meta["folded_batch_norms"] == str(len(result.folded_batch_norms))


@numpy_initializers()
def test_fold_bn_folds_exactly_the_foldable_layers():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    shared = keras.layers.Conv2D(16, 1, name="shared_conv")(x)
    kept = keras.layers.BatchNormalization(name="two_readers_bn")(shared)  # its input also feeds the add
    x = keras.layers.Add(name="add")([shared, kept])
    x = keras.layers.BatchNormalization(name="after_add_bn")(x)  # no kernel layer before it
    x = keras.layers.Conv2D(12, 16, name="to_1x1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.BatchNormalization(name="flatten_bn", scale=False)(x)
    x = keras.layers.Dense(6, use_bias=False, name="dense")(x)
    outputs = keras.layers.BatchNormalization(name="dense_bn", center=False)(x)
    model = randomize_bn(keras.Model(inputs, outputs))
    batch = images(4, seed=1)[:, :16, :16].astype("float32")
    before = model.predict(batch, verbose=0)

    folded, names = fold_batch_norms(model)

    assert sorted(names) == ["conv_bn", "dense_bn", "dw_bn", "flatten_bn"]
    remaining = sorted(layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert remaining == ["after_add_bn", "two_readers_bn"]
    assert folded.get_layer("conv").use_bias and len(folded.get_layer("dw").get_weights()) == 2
    after = folded.predict(batch, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    np.testing.assert_array_equal(model.predict(batch, verbose=0), before)  # the source model is untouched


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_round_trip_per_family(family, models, tmp_path):
    import onnx

    model = models(family)
    path = tmp_path / f"{family}.onnx"
    result = export_model(model, path, images=images(8, seed=3))
    assert result.verification.passed and result.verification.max_abs_diff <= 1e-4
    assert result.verification.batch_sizes == (1, 8)
    assert result.route in ("jax", "tensorflow")
    assert_matches_keras(path, model)
    assert_metadata(path, result, "onnx")
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["embedding"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("family", ["iresnet", "botnet"])  # BoTNet: relative-position attention converts in-process
def test_tflite_and_savedmodel_round_trips(family, models, tmp_path):
    import tensorflow as tf

    model = models(family)
    tflite = export_model(model, tmp_path / "m.tflite", format="tflite")
    saved = export_model(model, tmp_path / "saved", format="savedmodel")
    assert tflite.verification.passed and saved.verification.passed and tflite.route == "jax"
    assert saved.route == "tensorflow" and (tmp_path / "saved" / "saved_model.pb").is_file()
    assert_matches_keras(tmp_path / "m.tflite", model)
    assert_matches_keras(tmp_path / "saved", model)
    assert_metadata(tmp_path / "m.tflite", tflite, "tflite")
    assert_metadata(tmp_path / "saved", saved, "savedmodel")
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "m.tflite"))
    assert interpreter.get_input_details()[0]["shape_signature"].tolist() == [-1, 112, 112, 3]
    assert interpreter.get_output_details()[0]["name"] == "embedding"
    signature = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    assert list(signature.structured_outputs) == ["embedding"]
    assert signature.structured_input_signature[1]["image"].shape.as_list() == [None, 112, 112, 3]


def test_fp16_exports_are_half_size_and_close(models, tmp_path):
    import onnx

    pytest.importorskip("onnxconverter_common")

    model = models("iresnet")
    fp32 = export_model(model, tmp_path / "m32.onnx", verify=False)
    for name, fmt in (("m16.onnx", "onnx"), ("m16.tflite", "tflite")):
        result = export_model(model, tmp_path / name, format=fmt, fp16=True)
        assert result.verification.passed and result.verification.min_cosine >= 0.999
        assert result.metadata["fp16"] == "true"
        batch = images(8, seed=9).astype("float32")
        cosine = np.sum(normalized(runner(tmp_path / name)(batch)) * normalized(model.predict(batch, verbose=0)), -1)
        assert cosine.min() >= 0.999
    proto = onnx.load(tmp_path / "m16.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert os.path.getsize(tmp_path / "m16.onnx") < 0.6 * os.path.getsize(fp32.path)


def test_mixed_precision_model_exports_in_float32(tmp_path):
    from keras_insightface.training.model_setup import dtype_policy

    with numpy_initializers(seed=2), dtype_policy("mixed_bfloat16"):
        mixed = randomize_bn(buildin_models("r18_tiny", emb_shape=EMB), seed=2)
    assert mixed.layers[2].compute_dtype == "bfloat16"
    result = export_model(mixed, tmp_path / "m.tflite", format="tflite")
    assert result.verification.passed and result.verification.max_abs_diff <= 1e-4
    batch = images(8, seed=4).astype("float32")
    cosine = np.sum(normalized(runner(tmp_path / "m.tflite")(batch)) * normalized(mixed.predict(batch, verbose=0)), -1)
    assert cosine.min() > 0.99  # the bfloat16 Keras model itself is only this close to its float32 function


def test_verification_failure_raises_and_sets_the_file_aside(models, tmp_path, monkeypatch):
    import onnx

    from keras_insightface.export import onnx as onnx_export

    model = models("iresnet")
    original = onnx_export.write

    def tampered(proto, path, metadata):  # flip the sign of the largest weight tensor before saving
        weights = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        weights.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(weights), weights.name))
        original(proto, path, metadata)

    monkeypatch.setattr(onnx_export, "write", tampered)
    with pytest.raises(VerificationError, match=r"max \|diff\| of L2-normalised embeddings [0-9.e+-]+") as error:
        export_model(model, tmp_path / "bad.onnx")
    assert "bad.unverified.onnx" in str(error.value)
    assert not (tmp_path / "bad.onnx").exists() and (tmp_path / "bad.unverified.onnx").is_file()


def test_verify_export_against_a_different_model(models, tmp_path):
    model = models("iresnet")
    export_model(model, tmp_path / "m.onnx", verify=False)
    with numpy_initializers(seed=5):
        other = randomize_bn(buildin_models("r18_tiny", emb_shape=EMB), seed=5)
    same, different = verify_export(tmp_path / "m.onnx", model), verify_export(tmp_path / "m.onnx", other)
    assert same.passed and same.max_abs_diff < 1e-5
    assert not different.passed and different.max_abs_diff > 0.05


@pytest.mark.parametrize(
    ("module", "fp16", "message"),
    [("tf2onnx", False, "onnx export needs the 'tf2onnx' package"),
     ("onnxconverter_common", True, "onnx export with fp16 needs the 'onnxconverter_common' package")],
)
def test_missing_extra_names_the_package_and_the_extra(models, tmp_path, monkeypatch, module, fp16, message):
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    with pytest.raises(MissingExtraError, match=message + r".*pip install keras_insightface\[export\]"):
        export_model(models("iresnet"), tmp_path / "m.onnx", fp16=fp16)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("m.tflite", {"format": "onnx"}, "needs a file name ending in .onnx"),
        ("sm", {"format": "savedmodel", "fp16": True}, "fp16 applies to onnx and tflite"),
        ("m.onnx", {"format": "pb"}, "unknown export format 'pb'"),
        ("m.onnx", {"route": "torch"}, "unknown route 'torch'"),
    ],
)
def test_bad_arguments_are_data_errors(models, tmp_path, name, kwargs, message):
    with pytest.raises(DataError, match=message):
        export_model(models("iresnet"), tmp_path / name, **kwargs)


def test_non_basic_model_and_missing_file_are_data_errors(tmp_path):
    inputs = keras.Input((8,))
    with pytest.raises(DataError, match="not a basic model"):
        export_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)), tmp_path / "m.onnx")
    with pytest.raises(DataError, match="does not exist"):
        export_model(tmp_path / "missing.keras", tmp_path / "m.onnx")


def test_export_command_and_the_exported_file_as_an_eval_model(models, tmp_path, capsys):
    """``keras-insightface export`` end to end; the ONNX file then serves ``eval`` / ``distill-data`` through
    ``open_model``, which must feed it raw pixels (its metadata says it normalises inside)."""
    from keras_insightface.cli import main
    from keras_insightface.inference.embedders import open_model
    from tests.conftest import jpeg

    model = models("iresnet")
    model_path = tmp_path / "basic.keras"
    model.save(model_path)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, face in enumerate(images(3, seed=5)):
        (faces / f"{i}.jpg").write_bytes(jpeg(face))
    assert main(["export", str(model_path), "--format", "onnx", "--images", str(faces)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {tmp_path / 'basic.onnx'} (onnx, " in printed and "verification passed on 3 images" in printed
    batch = images(4, seed=11)
    np.testing.assert_allclose(normalized(open_model(str(tmp_path / "basic.onnx"))(batch)),
                               normalized(model.predict(batch.astype("float32"), verbose=0)), atol=1e-4)
    assert main(["export", str(model_path), "--format", "tflite", "--images", str(tmp_path / "none")]) == 2
    assert "no .jpg/.jpeg/.png/.bmp images to verify on" in capsys.readouterr().err
