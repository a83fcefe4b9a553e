"""buildin_models with the seed's defaults and keywords, the ``arcface_torch`` preset, BN settings in every
backbone family, ``weights=``, keras.applications models by name and ``print_buildin_models``.

Reference numbers marked "seed" were measured with the seed system's own code (Keras_insightface commit
520a9da, ``models.buildin_models(...)`` under TensorFlow 2.21 / tf_keras 2.21, 112x112x3 input); numbers
marked "before" were measured with this project's ``buildin_models`` before it took the seed's defaults
(the model ``preset="arcface_torch"`` keeps).
"""

import collections
import warnings

import keras
import numpy as np
import pytest

from keras_insightface.backbones import BACKBONES, list_backbones
from keras_insightface.errors import DataError
from keras_insightface.models import backbone_builder, buildin_models, print_buildin_models


def batch_norms(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def bn_settings(model):
    return collections.Counter((layer.momentum, layer.epsilon) for layer in batch_norms(model))


def layer_classes(model):
    return collections.Counter(type(layer).__name__ for layer in model.layers)


HEAD_BNS = {"GDC": 2, "E": 2}  # GDC_batchnorm / E_batchnorm and pre_embedding


@pytest.mark.usefixtures("structure_only")
@pytest.mark.parametrize(
    "name,output_layer,seed_params,backbone_bns",
    [
        # seed: buildin_models("r18") / ("r50"), and output_layer="E"
        ("r18", "GDC", 11_480_000, 29),
        ("r50", "GDC", 31_064_768, 77),
        ("r50", "E", 43_622_592, 77),
    ],
)
def test_default_iresnet_is_the_seeds(name, output_layer, seed_params, backbone_bns):
    """ReLU everywhere, the backbone's BN at the seed resnet.py's 0.9 / 1e-5, the head's at Keras's 0.99 / 1e-3
    (the seed changes BN settings only when asked), He fan-out kernels, the seed's parameter count."""
    model = buildin_models(name, output_layer=output_layer)
    assert model.count_params() == seed_params
    assert bn_settings(model) == {(0.9, 1e-5): backbone_bns, (0.99, 1e-3): HEAD_BNS[output_layer]}
    assert model.get_layer("pre_embedding").momentum == 0.99
    activations = [layer for layer in model.layers if isinstance(layer, (keras.layers.Activation, keras.layers.PReLU))]
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in activations)
    relus = [layer for layer in activations if keras.activations.serialize(layer.activation) == "relu"]
    assert len(relus) == len(activations) - 1 == 1 + sum(1 for layer in model.layers if layer.name.endswith("_add"))
    init = model.get_layer("stack1_block1_1_conv").kernel_initializer
    assert isinstance(init, keras.initializers.VarianceScaling)
    assert (init.scale, init.mode, init.distribution) == (2.0, "fan_out", "truncated_normal")
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)  # dropout=1: none


# before: buildin_models(name) (and "r18_tiny" with output_layer="E", emb_shape=128) as built until this change
BEFORE = {
    ("r50", "GDC", 512): (31_070_656, {"InputLayer": 1, "Rescaling": 1, "Conv2D": 54, "BatchNormalization": 79,
                                       "PReLU": 25, "ZeroPadding2D": 4, "Add": 24, "DepthwiseConv2D": 1,
                                       "Flatten": 1, "Activation": 1}),
    ("r18_tiny", "E", 128): (309_872, {"InputLayer": 1, "Rescaling": 1, "ZeroPadding2D": 5, "Conv2D": 21,
                                       "BatchNormalization": 31, "PReLU": 9, "Add": 8, "Flatten": 1, "Dense": 1,
                                       "Activation": 1}),
}


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_arcface_torch_preset_is_the_previous_model(key):
    name, output_layer, emb_shape = key
    params, classes = BEFORE[key]
    model = buildin_models(name, output_layer=output_layer, emb_shape=emb_shape, preset="arcface_torch")
    assert model.count_params() == params and layer_classes(model) == classes
    assert set(bn_settings(model)) == {(0.9, 1e-5)}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.name != "GDC_conv"]
    assert {type(layer.kernel_initializer).__name__ for layer in convs} == {"GlorotUniform"}
    np.testing.assert_allclose(np.asarray(model.get_layer("stem_prelu").alpha), 0.25)


def test_keywords_a_call_sets_win_over_the_preset():
    model = buildin_models("r18_tiny", emb_shape=8, preset="arcface_torch", bn_momentum=0.95, activation="relu")
    assert set(bn_settings(model)) == {(0.95, 1e-5)}  # epsilon still the preset's
    assert model.get_layer("stem_relu") is not None
    with pytest.raises(ValueError, match="preset must be None or one of \\['arcface_torch'\\], received preset='torch'"):
        buildin_models("r18_tiny", preset="torch")


def test_activation_keyword_takes_any_keras_activation():
    base = buildin_models("r18_tiny", emb_shape=8)
    channels = [8] + [8] * 2 + [16] * 2 + [32] * 2 + [64] * 2  # stem, then the 8 blocks' activations
    for kind in ("swish", "gelu", "prelu", "PReLU"):
        model = buildin_models("r18_tiny", emb_shape=8, activation=kind)
        acts = [layer for layer in model.layers if layer.name.startswith(("stem_", "stack")) and
                isinstance(layer, (keras.layers.Activation, keras.layers.PReLU))]
        assert len(acts) == 9
        if kind.lower() == "prelu":
            assert all(isinstance(layer, keras.layers.PReLU) and layer.shared_axes == [1, 2] for layer in acts)
            assert model.count_params() == base.count_params() + sum(channels)
        else:
            assert all(layer.activation is keras.activations.get(kind) for layer in acts)
            assert model.get_layer(f"stem_{kind}") is acts[0]
            assert model.count_params() == base.count_params()
    with pytest.raises(ValueError, match="iresnet activation must be 'prelu' or a Keras activation name.*'sigmoidal'"):
        buildin_models("r18_tiny", activation="sigmoidal")


# One member of every backbone family of the registry (a builder function), small where the family allows.
FAMILY_MEMBERS = {
    "r18_tiny": {}, "mobilenet": {"alpha": 0.25}, "mobilenet_m1": {"alpha": 0.25}, "mobilenetv2": {"alpha": 0.35},
    "mobilenetv3_small": {"alpha": 0.75}, "efficientnetv2b0": {}, "efficientnetb0": {}, "resnet50": {},
    "resnet50v2": {}, "botnet50": {}, "vargfacenet": {"multiplier": 0.25, "group_size": 4}, "vargface": {},
    "mobilefacenet": {}, "mobilefacenet_insightface": {"width": 0.125}, "ghostnet": {"width": 0.1},
    "efficientnetv2t": {}, "se_resnext50": {"depth": (1, 1, 1, 1), "width": 1},
    "mbf": {"width": 1, "blocks": (2, 1, 0, 0)},
}
NO_BATCH_NORM = ("vit_t", "vit_s", "vit_b")


def family(builder):
    return getattr(builder, "func", builder)


def test_the_bn_check_covers_every_backbone_family():
    covered = {family(BACKBONES[name]) for name in (*FAMILY_MEMBERS, *NO_BATCH_NORM)}
    assert {family(builder) for builder in BACKBONES.values()} <= covered


@pytest.mark.usefixtures("structure_only")
@pytest.mark.parametrize("name", sorted(FAMILY_MEMBERS))
def test_bn_settings_reach_every_batch_norm(name):
    model = buildin_models(name, input_shape=(64, 64, 3), emb_shape=8, bn_momentum=0.95, bn_epsilon=2e-5,
                           weights=None, **FAMILY_MEMBERS[name])
    assert len(batch_norms(model)) > 2 and set(bn_settings(model)) == {(0.95, 2e-5)}


def test_backbone_without_batch_norm_is_an_error_only_when_asked():
    small = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    with pytest.raises(ValueError, match="Backbone 'vit_t' has no BatchNormalization layer.*bn_momentum=0.9"):
        buildin_models("vit_t", emb_shape=8, bn_momentum=0.9, **small)
    model = buildin_models("vit_t", emb_shape=8, preset="arcface_torch", **small)  # the preset: the head only
    assert set(bn_settings(model)) == {(0.9, 1e-5)} and len(batch_norms(model)) == 2


def test_stem_model_bn_settings_leave_the_callers_model_alone():
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.BatchNormalization(name="stem_bn")(keras.layers.Conv2D(8, 3, strides=16)(inputs))
    stem = keras.Model(inputs, x, name="toy")
    stem.get_layer("stem_bn").gamma.assign(np.full(8, 3.0, "float32"))
    model = buildin_models(stem, emb_shape=4, bn_momentum=0.9, bn_epsilon=1e-5)
    assert set(bn_settings(model)) == {(0.9, 1e-5)}
    assert stem.get_layer("stem_bn").momentum == 0.99  # untouched
    copied = [layer for layer in batch_norms(model) if layer.name == "stem_bn"][0]
    np.testing.assert_allclose(np.asarray(copied.gamma), 3.0)  # the copy keeps the weights


def offline(*args, **kwargs):
    """What Keras's get_file raises without a network."""
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or service not known")


@pytest.mark.parametrize("name,model_name", [("mobilenet", "MobileNet"), ("resnet50v2", "ResNet50V2")])
def test_imagenet_weights_offline_is_a_clear_error(monkeypatch, name, model_name):
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(DataError, match=f"{model_name}: could not download its ImageNet weights.*pass weights=None"):
        buildin_models(name)  # the seed's default weights="imagenet"


def test_resnet_v2_imagenet_weights_copy_in_by_name(monkeypatch, tmp_path):
    """Keras's ResNet50V2 file (here: written from a random Keras model, served as the download) fills the
    ResNetV2 built here layer for layer; a variant whose weights differ in shape cannot take it."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    reference = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "resnet50v2_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(path))
    model = buildin_models("resnet50v2", input_shape=(64, 64, 3), emb_shape=8)  # weights="imagenet"
    layers = [layer for layer in reference.layers if layer.weights]
    assert len(layers) == 102  # 53 convs and 49 BNs
    for layer in layers:
        for ours, theirs in zip(model.get_layer(layer.name).weights, layer.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    with pytest.raises(ValueError, match="do not fit layer 'conv1_conv' of this variant.*pass weights=None"):
        buildin_models("resnet50v2", input_shape=(64, 64, 3), conv_no_bias=True)


def test_weights_keyword():
    assert buildin_models("r18_tiny", emb_shape=8, weights="imagenet").count_params() > 0  # built here: none to load
    with pytest.raises(ValueError, match="weights must be None, 'imagenet' or a weights file path, received weights=3"):
        buildin_models("r18_tiny", weights=3)
    with pytest.raises(DataError, match="no_such.weights.h5: weights file does not exist"):
        buildin_models("r18_tiny", weights="no_such.weights.h5")


def test_weights_file_loads_into_the_backbone(tmp_path):
    source = buildin_models("r18_tiny", emb_shape=8, weights=None)
    path = str(tmp_path / "r18_tiny.weights.h5")
    keras.Model(source.input, source.get_layer("stack4_block2_add").output).save_weights(path)
    model = buildin_models("r18_tiny", emb_shape=8, weights=path)
    for layer in ("stem_conv", "stack4_block2_3_bn"):
        for ours, theirs in zip(model.get_layer(layer).weights, source.get_layer(layer).weights):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert not np.array_equal(np.asarray(model.get_layer("GDC_conv").kernel), np.asarray(source.get_layer("GDC_conv").kernel))
    other = str(tmp_path / "mobilenet.weights.h5")
    small = buildin_models("mobilenet", emb_shape=8, weights=None, alpha=0.25)
    keras.Model(small.input, small.get_layer("conv_pw_13_relu").output).save_weights(other)
    with warnings.catch_warnings():  # Keras warns about every layer it skips before it raises
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="mobilenet.weights.h5: could not load these weights into backbone 'r18_tiny'"):
            buildin_models("r18_tiny", weights=other)


@pytest.mark.usefixtures("structure_only")
@pytest.mark.parametrize(
    "name,output_layer,seed_params",
    [
        # seed: buildin_models(name, weights=None, output_layer=...) on keras.applications models
        ("mobilenet", "GDC", 3_768_512),
        ("MobileNet", "E", 7_953_600),
        ("ResNet50", "GDC", 24_679_296),
        ("DenseNet121", "GDC", 7_577_152),
    ],
)
def test_keras_applications_with_the_seeds_head(name, output_layer, seed_params):
    model = buildin_models(name, output_layer=output_layer, weights=None)
    assert model.count_params() == seed_params
    assert model.get_layer("pre_embedding").momentum == 0.99
    assert model.output_shape == (None, 512)


def test_keras_application_names_and_their_input():
    assert backbone_builder("densenet121").keywords == {"model_name": "DenseNet121"}  # any case, as a name
    with pytest.raises(ValueError, match="Unknown backbone 'densenet999'.*or a keras.applications model name"):
        buildin_models("densenet999")
    model = buildin_models("efficientnetb0", emb_shape=8, weights=None, input_shape=(32, 32, 3))
    pixels = model.get_layer("efficientnetb0_pixels")  # Keras's EfficientNet rescales by 1 / 255 itself
    normalised = np.array([[[[-127.5 / 128, 0.0, 127.5 / 128]]]], "float32")
    np.testing.assert_allclose(np.asarray(pixels(normalised))[0, 0, 0], [0.0, 127.5, 255.0], atol=1e-4)
    v3 = buildin_models("mobilenetv3_small", emb_shape=8, weights=None, input_shape=(32, 32, 3))
    assert [layer.name for layer in v3.layers if isinstance(layer, keras.layers.Rescaling)] == ["normalize"]


def test_seed_positional_order_and_dropout():
    model = buildin_models("r18_tiny", 0.2, 64)  # the seed's order: stem_model, dropout, emb_shape, ...
    assert model.output_shape == (None, 64) and model.get_layer("GDC_dropout").rate == 0.2
    with pytest.raises(ValueError, match="dropout must be in \\[0, 1\\].*received dropout=1.5"):
        buildin_models("r18_tiny", dropout=1.5)


def test_print_buildin_models(capsys):
    print_buildin_models()
    out = capsys.readouterr().out
    assert out.lstrip().startswith(">>>> buildin_models")
    listed = {name.strip() for line in out.splitlines() if ": " in line for name in line.split(": ", 1)[1].split(",")}
    assert listed == set(list_backbones())
    assert "Or other names from keras.applications like DenseNet121" in out
