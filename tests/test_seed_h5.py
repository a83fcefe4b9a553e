"""Seed ``.h5`` models load into Keras 3 and compute what TF-Keras 2 computed.

The files are written here with h5py in TF-Keras 2's layout (``model_config`` JSON in the file attributes,
``model_weights/<layer>/<layer>/<var>:0`` datasets listed by ``weight_names``), with the config quirks that
layout carries: old-style initializer dicts, mixed-precision policies, ``groups`` / ``kernel_*`` keys on
separable convs, ``TFOpLambda`` / ``SlicingOpLambda`` nodes, ``hard_sigmoid``, the seed's ``NormDense``.
The expected outputs come from a forward pass written directly with ``keras.ops`` and TF-Keras 2's formulas.
"""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import json  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from keras_insightface.cli import main  # noqa: E402
from keras_insightface.errors import DataError  # noqa: E402
from keras_insightface.saving import load_model  # noqa: E402
from keras_insightface.seed_h5 import load_seed_h5  # noqa: E402

POLICY = {"class_name": "Policy", "config": {"name": "mixed_float16"}}
GLOROT = {"class_name": "GlorotUniform", "config": {"seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}
EPS = 1e-5


def _layer(class_name, name, inbound, dtype=POLICY, **config):
    return {
        "class_name": class_name,
        "config": {"name": name, "trainable": True, "dtype": dtype, **config},
        "name": name,
        "inbound_nodes": inbound,
    }


def _node(*names):
    return [[[name, 0, 0, {}] for name in names]]


def _conv(name, inbound, filters, kernel, strides=1, padding="same", use_bias=False, activation="linear"):
    return _layer(
        "Conv2D", name, _node(inbound), filters=filters, kernel_size=[kernel, kernel], strides=[strides, strides],
        padding=padding, data_format="channels_last", dilation_rate=[1, 1], groups=1, activation=activation,
        use_bias=use_bias, kernel_initializer=GLOROT, bias_initializer=ZEROS,
        kernel_regularizer={"class_name": "L2", "config": {"l2": 5e-4}}, bias_regularizer=None,
        activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
    )


def _bn(name, inbound):
    return _layer(
        "BatchNormalization", name, _node(inbound), axis=[3] if name != "pre_embedding" else [1], momentum=0.9,
        epsilon=EPS, center=True, scale=True, beta_initializer=ZEROS, gamma_initializer={"class_name": "Ones", "config": {}},
        moving_mean_initializer=ZEROS, moving_variance_initializer={"class_name": "Ones", "config": {}},
        beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
    )


def _tf_op(function, name, node):
    return _layer("TFOpLambda", name, node, function=function)


def seed_config(with_norm_dense):
    """A MobileFaceNet-like seed graph on 16x16 inputs: conv, BN, PReLU, separable conv, an SE block made of
    ``tf.reduce_mean`` / ``hard_sigmoid`` / ``tf.math.multiply``, ``tf.concat``, GDC, a slice, pre_embedding."""
    layers = [
        {
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, 16, 16, 3], "dtype": "float32", "sparse": False,
                       "ragged": False, "name": "input_1"},
            "name": "input_1",
            "inbound_nodes": [],
        },
        _conv("stem_conv", "input_1", 8, 3, strides=2),
        _bn("stem_bn", "stem_conv"),
        _layer("PReLU", "stem_prelu", _node("stem_bn"), alpha_initializer={"class_name": "Constant",
               "config": {"value": 0.25}}, alpha_regularizer=None, alpha_constraint=None, shared_axes=[1, 2]),
        _layer(
            "SeparableConv2D", "sep", _node("stem_prelu"), filters=16, kernel_size=[3, 3], strides=[1, 1],
            padding="same", data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear",
            use_bias=True, kernel_initializer=GLOROT, bias_initializer=ZEROS, kernel_regularizer=None,
            bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
            depth_multiplier=1, depthwise_initializer=GLOROT, pointwise_initializer=GLOROT,
            depthwise_regularizer=None, pointwise_regularizer=None, depthwise_constraint=None,
            pointwise_constraint=None,
        ),
        _tf_op("math.reduce_mean", "tf.math.reduce_mean", [["sep", 0, 0, {"axis": [1, 2], "keepdims": True}]]),
        _conv("se_conv", "tf.math.reduce_mean", 16, 1, padding="valid", use_bias=True, activation="hard_sigmoid"),
        _tf_op("math.multiply", "tf.math.multiply", [["sep", 0, 0, {"y": ["se_conv", 0, 0], "name": None}]]),
        _tf_op("concat", "tf.concat", [[["tf.math.multiply", 0, 0, {"axis": -1}], ["sep", 0, 0, {"axis": -1}]]]),
        _layer(
            "DepthwiseConv2D", "GDC_dw", _node("tf.concat"), kernel_size=[8, 8], strides=[1, 1], padding="valid",
            data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear", use_bias=False,
            bias_initializer=ZEROS, bias_regularizer=None, activity_regularizer=None, bias_constraint=None,
            depth_multiplier=1, depthwise_initializer=GLOROT, depthwise_regularizer=None, depthwise_constraint=None,
        ),
        _bn("GDC_batchnorm", "GDC_dw"),
        _conv("GDC_conv", "GDC_batchnorm", 16, 1, padding="valid"),
        _layer("Flatten", "GDC_flatten", _node("GDC_conv"), data_format="channels_last"),
        _layer(
            "SlicingOpLambda", "tf.__operators__.getitem",
            [["GDC_flatten", 0, 0, {"slice_spec": [{"start": None, "stop": None, "step": None},
                                                   {"start": None, "stop": 12, "step": None}]}]],
            function="__operators__.getitem",
        ),
        _bn("pre_embedding", "tf.__operators__.getitem"),
        _layer("Activation", "embedding", _node("pre_embedding"), dtype="float32", activation="linear"),
    ]
    output = "embedding"
    if with_norm_dense:
        layers.append(
            _layer("keras_insightface>NormDense", "NormDense", _node("embedding"), dtype="float32", units=5,
                   loss_top_k=2, append_norm=False, partial_fc_split=0,
                   kernel_regularizer={"class_name": "L2", "config": {"l2": 5e-4}})
        )
        output = "NormDense"
    config = {"name": "mobilefacenet", "layers": layers, "input_layers": [["input_1", 0, 0]],
              "output_layers": [[output, 0, 0]]}
    return {"class_name": "Functional", "config": config}


WEIGHT_SHAPES = {
    "stem_conv": [("kernel", (3, 3, 3, 8))],
    "stem_bn": [(v, (8,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    "stem_prelu": [("alpha", (1, 1, 8))],
    "sep": [("depthwise_kernel", (3, 3, 8, 1)), ("pointwise_kernel", (1, 1, 8, 16)), ("bias", (16,))],
    "se_conv": [("kernel", (1, 1, 16, 16)), ("bias", (16,))],
    "GDC_dw": [("depthwise_kernel", (8, 8, 32, 1))],
    "GDC_batchnorm": [(v, (32,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    "GDC_conv": [("kernel", (1, 1, 32, 16))],
    "pre_embedding": [(v, (12,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")],
    "NormDense": [("norm_dense_w", (12, 10))],
}


def seed_weights(rng):
    weights = {}
    for layer, entries in WEIGHT_SHAPES.items():
        weights[layer] = []
        for var, shape in entries:
            value = rng.normal(0, 0.5, shape)
            if var in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            weights[layer].append((var, value.astype("float32")))
    return weights


def write_seed_h5(path, config, weights):
    """TF-Keras 2's ``model.save('x.h5')`` layout."""
    layer_names = [layer["name"] for layer in config["config"]["layers"]]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.9.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        group.attrs["backend"] = "tensorflow"
        group.attrs["keras_version"] = "2.9.0"
        for name in layer_names:
            layer_group = group.create_group(name)
            entries = weights.get(name, [])
            layer_group.attrs["weight_names"] = np.array([f"{name}/{var}:0".encode() for var, _ in entries])
            for var, value in entries:
                layer_group.create_dataset(f"{name}/{var}:0", data=value)


def reference_forward(x, weights, with_norm_dense):
    """TF-Keras 2's computation written out with keras.ops, for normalised float inputs."""
    w = {layer: [value for _, value in entries] for layer, entries in weights.items()}

    def bn(h, name):
        gamma, beta, mean, var = w[name]
        return (h - mean) / np.sqrt(var + EPS) * gamma + beta

    h = ops.conv(x, w["stem_conv"][0], strides=2, padding="same")
    h = bn(h, "stem_bn")
    h = ops.maximum(h, 0) + w["stem_prelu"][0] * ops.minimum(h, 0)
    dw, pw, bias = w["sep"]
    sep = ops.conv(ops.depthwise_conv(h, dw, padding="same"), pw) + bias
    se = ops.mean(sep, axis=(1, 2), keepdims=True)
    se = ops.conv(se, w["se_conv"][0]) + w["se_conv"][1]
    se = ops.clip(0.2 * se + 0.5, 0.0, 1.0)  # TF-Keras 2 hard_sigmoid
    h = ops.concatenate([sep * se, sep], axis=-1)
    h = ops.depthwise_conv(h, w["GDC_dw"][0], padding="valid")
    h = bn(h, "GDC_batchnorm")
    h = ops.reshape(ops.conv(h, w["GDC_conv"][0]), (x.shape[0], -1))[:, :12]
    h = bn(h, "pre_embedding")
    if with_norm_dense:
        kernel = w["NormDense"][0]
        cos = (h / ops.norm(h, axis=-1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
        h = ops.max(ops.reshape(cos, (-1, 5, 2)), axis=-1)
    return np.asarray(h)


@pytest.fixture
def seed_files(tmp_path):
    rng = np.random.default_rng(0)
    weights = seed_weights(rng)
    paths = {}
    for with_norm_dense in (False, True):
        path = tmp_path / f"seed_{'full' if with_norm_dense else 'basic'}.h5"
        write_seed_h5(path, seed_config(with_norm_dense), weights)
        paths[with_norm_dense] = path
    images = rng.uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    return paths, weights, images


@pytest.mark.parametrize("with_norm_dense", [False, True])
def test_seed_model_computes_what_tf_keras_2_computed(seed_files, with_norm_dense):
    paths, weights, images = seed_files
    normalised = (images - 127.5) / 128
    expected = reference_forward(normalised, weights, with_norm_dense)
    raw = load_seed_h5(paths[with_norm_dense], normalize_inside=False)
    np.testing.assert_allclose(np.asarray(raw(normalised, training=False)), expected, rtol=1e-4, atol=1e-5)
    model = load_seed_h5(paths[with_norm_dense])  # takes RGB 0..255 like buildin_models
    assert model.get_layer("normalize").get_config()["offset"] == pytest.approx(-127.5 / 128)
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-4, atol=1e-5)
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)


def test_converted_model_saves_and_reloads_as_keras(seed_files, tmp_path):
    paths, weights, images = seed_files
    dst = tmp_path / "converted.keras"
    main(["convert", "seed-h5", str(paths[False]), str(dst)])
    reloaded = keras.saving.load_model(dst)  # registered SeedTFOp / legacy_hard_sigmoid, no custom_objects
    expected = reference_forward((images - 127.5) / 128, weights, False)
    np.testing.assert_allclose(np.asarray(reloaded(images, training=False)), expected, rtol=1e-4, atol=1e-5)
    assert load_model(paths[False]).output_shape == (None, 12)


def test_seed_model_evaluates_from_the_cli(seed_files, tmp_path, capsys):
    from keras_insightface.data.binpack import write_bin
    from tests.conftest import jpeg

    paths, _, _ = seed_files
    rng = np.random.default_rng(1)
    images = [jpeg(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(40)]
    issame = [bool(i % 2) for i in range(20)]
    write_bin(tmp_path / "tiny.bin", images, issame)
    main(["eval", "-m", str(paths[False]), "-t", str(tmp_path / "tiny.bin")])
    assert "| tiny |" in capsys.readouterr().out


def _rewrite(path, edit_config=None, edit_weights=None):
    config, weights = seed_config(False), seed_weights(np.random.default_rng(0))
    if edit_config:
        edit_config(config)
    if edit_weights:
        edit_weights(weights)
    write_seed_h5(path, config, weights)
    return path


def _set_function(config, name, function):
    next(layer for layer in config["config"]["layers"] if layer["name"] == name)["config"]["function"] = function


@pytest.mark.parametrize(
    "edit_config, edit_weights, message",
    [
        (lambda c: _set_function(c, "tf.concat", "image.resize"), None, "calls tf.image.resize"),
        (lambda c: c["config"]["layers"][2].update(class_name="MyCustomBN"), None, "'MyCustomBN'"),
        (None, lambda w: w.update(sep=w["sep"][:2]), "layer 'sep' stores 2 weights, the model needs 3"),
        (None, lambda w: w.update(GDC_conv=[("kernel", np.zeros((1, 1, 32, 8), "float32"))]), "stored shape"),
    ],
)
def test_untranslatable_files_name_the_file_and_layer(tmp_path, edit_config, edit_weights, message):
    path = _rewrite(tmp_path / "bad.h5", edit_config, edit_weights)
    with pytest.raises(DataError, match=message) as info:
        load_seed_h5(path)
    assert str(path) in str(info.value)


def test_weights_only_and_non_hdf5_files_are_clear_errors(tmp_path):
    weights_only = tmp_path / "weights.h5"
    with h5py.File(weights_only, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
    with pytest.raises(DataError, match="weights only"):
        load_seed_h5(weights_only)
    text = tmp_path / "model.h5"
    text.write_text("not a model")
    with pytest.raises(DataError, match="not an HDF5 file"):
        load_model(text)
