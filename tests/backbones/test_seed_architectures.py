"""The seed's MobileFaceNet, VarGFaceNet and BoTNet options against numbers measured with the seed's own code.

Every reference number here was measured by running the seed (leondgarse/Keras_insightface, commit 520a9da)
under TensorFlow 2.21 + tf_keras 2.21 (``TF_USE_LEGACY_KERAS=1``); seed code never runs in these tests. BoTNet is
not in that commit: its numbers come from the seed's last ``backbones/botnet.py`` (commit fc6b69c, removed in
ad81c00), ``BotNet50(include_top=False, input_shape=(112, 112, 3), strides=..., activation=...)`` passed to the
seed's ``buildin_models`` as a model. The ``.h5`` checks use real files the seed wrote (``../shared/fixtures``).
"""

import hashlib
import json
from pathlib import Path

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.backbones import get_backbone  # noqa: E402
from keras_insightface.backbones.mobilefacenet import mobilefacenet  # noqa: E402
from keras_insightface.backbones.seed_mobilefacenet import seed_mobilefacenet  # noqa: E402
from keras_insightface.backbones.seed_vargface import seed_vargface  # noqa: E402
from keras_insightface.backbones.vargface import vargfacenet  # noqa: E402
from keras_insightface.models import buildin_models  # noqa: E402

SEED_H5 = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "seed_h5"
BN_MOMENTUM, BN_EPSILON = 0.97, 3e-5  # not anyone's default, so the check below sees them reach every BN

# Seed's ``buildin_models(name, output_layer=head, emb_shape=512, dropout=0, **options).count_params()``.
SEED_PARAMS = [
    ("mobilefacenet", "GDC", {}, 939_904),
    ("mobilefacenet", "E", {}, 4_079_360),
    ("se_mobilefacenet", "GDC", {}, 964_744),
    ("se_mobilefacenet", "E", {}, 4_104_200),
    ("vargface", "GDC", {}, 3_554_016),
    ("vargface", "E", {}, 3_552_992),
    ("vargface", "GDC", {"activation": "prelu"}, 3_568_352),
    ("vargface", "GDC", {"se_ratio": 0.25}, 3_708_200),
    ("botnet50", "GDC", {}, 20_011_712),
    ("botnet50", "E", {}, 70_243_008),
    ("botnet50", "GDC", {"activation": "swish"}, 20_011_712),
    # the seed's PReLU BoTNet: its replace_ReLU_with_PReLU(BotNet50(...)) turns every ReLU into a PReLU
    ("botnet50", "GDC", {"activation": "prelu"}, 20_036_480),
    ("botnet50", "GDC", {"strides": 2}, 19_941_056),
    ("botnet50", "E", {"strides": 2}, 35_636_928),
    # The seed's BoTNet has no conv bias; with biases every conv gains its output channels: 25,024 = the conv
    # biases of tf_keras' ResNet50(include_top=False) (26,560, measured) minus its three 3x3 conv5 convs'
    # (3 x 512), which BoTNet replaces by attention.
    ("botnet50", "GDC", {"conv_no_bias": False}, 20_011_712 + 25_024),
]

# Seed backbones (``models.__init_model_from_name__(name, **options)``) with the deterministic weights of
# ``formula_weight`` on ``formula_inputs()``: number of layers with weights, parameters, sha256 of the sorted
# ``name:[shapes]`` lines (see ``_listing``), output shape, every (size // 8)-th output value (first 8) per
# image and the sum of absolute outputs per image.
SEED_FORWARD = {
    ("vargface", ()): (
        154, 3_022_560, "c8b889f7d865f8eec77a92db1541c2ad4b9e2b9059d8c49aee96e1b15ef01e51", (2, 1, 1, 1024),
        [[-587.670654296875, -351.4580078125, -134.85865783691406, -46.8851432800293, -57.67009353637695,
          -90.55601501464844, 286.9683532714844, 317.8316650390625],
         [-565.195556640625, -380.4495544433594, -71.99349212646484, -96.0926284790039, -54.4595832824707,
          -201.74256896972656, 206.3248291015625, 385.1549072265625]],
        [497463.1875, 499387.09375],
    ),
    ("vargface", (("activation", "prelu"), ("se_ratio", 0.25))): (
        259, 3_191_504, "88aefdaf2eba2585a0a9f188dca775602e580e271fd31f74600ec8f1b6cc73d8", (2, 1, 1, 1024),
        [[42.782989501953125, -106.7605209350586, -19.57967758178711, -52.913841247558594, 156.34539794921875,
          -215.4696044921875, 106.45120239257812, -61.28041458129883],
         [12.60603141784668, -93.59046936035156, -72.44981384277344, -46.4935188293457, 73.97586822509766,
          -264.7441101074219, 99.4661865234375, -65.67340087890625]],
        [83621.9140625, 74933.734375],
    ),
    ("mobilefacenet", ()): (
        126, 865_536, "c07c7735f323f15b44836f9ec1de57b4747bb4a796a076facb0e85f15b5bf4b7", (2, 7, 7, 128),
        [[-1168.9532470703125, -2334.147705078125, 3256.017578125, -2278.2451171875, 1616.832275390625,
          -1572.1954345703125, -1013.218017578125, 2643.8916015625],
         [-848.920654296875, -1521.82470703125, 1067.505859375, -1316.71435546875, 344.197021484375,
          -3661.86474609375, -1160.36376953125, 1861.2891845703125]],
        [15265366.0, 14530884.0],
    ),
    ("se_mobilefacenet", ()): (
        171, 890_376, "453567527940048c99a28c66d0faf7e88de587539d41937e788189a4c3142144", (2, 7, 7, 128),
        [[10.894598007202148, 13.6933012008667, 31.54829216003418, 20.10909652709961, 48.74747848510742,
          -20.654123306274414, -67.8995132446289, -8.051659392549482e-07],
         [8.975784301757812, 10.943400382995605, 31.175397872924805, 15.284876823425293, 54.096553802490234,
          -0.7555175423622131, -53.95153045654297, -4.6581348556173907e-07]],
        [90740.125, 85079.953125],
    ),
}
# The seed's BN settings for these backbones at its buildin_models defaults (it leaves them unless told otherwise).
SEED_BACKBONE_BN = {"vargface": (0.9, 1e-5), "mobilefacenet": (0.99, 1e-3), "se_mobilefacenet": (0.99, 1e-3)}


def _noise(size, offset):
    """Deterministic values in [-1, 1) from a sine hash: the same numbers were fed to the seed's models."""
    t = np.sin(np.arange(size, dtype=np.float64) * 12.9898 + offset) * 43758.5453
    return 2.0 * (t - np.floor(t)) - 1.0


def formula_weight(layer_index, weight_index, kind, shape):
    """Weight ``weight_index`` of the ``layer_index``-th weighted layer (layers sorted by name)."""
    s = _noise(int(np.prod(shape)), 0.31 * (layer_index + 1) + 0.17 * weight_index).reshape(shape)
    if "kernel" in kind:
        fan_in = np.prod(shape[:-1]) if shape[-1] > 1 else np.prod(shape[:2])  # depthwise: k x k
        return s * np.sqrt(6.0 / fan_in)
    return {"gamma": 1 + 0.25 * s, "beta": 0.1 * s, "moving_mean": 0.1 * s, "moving_variance": 1 + 0.25 * s,
            "alpha": 0.25 + 0.1 * s, "bias": 0.05 * s}[kind]


def formula_inputs():
    return _noise(2 * 112 * 112 * 3, 0.5).reshape(2, 112, 112, 3).astype("float32")


def _listing(model):
    return sorted(
        layer.name + ":" + json.dumps([list(map(int, w.shape)) for w in layer.weights], separators=(",", ":"))
        for layer in model.layers
        if layer.weights
    )


def _relative(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def _read_h5_weights(path):
    """``{layer: [arrays]}`` from a TF-Keras 2 ``.h5`` (``model_weights/<layer>``, in ``weight_names`` order)."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"]
        weights = {}
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs["weight_names"]]
            if names:
                weights[layer] = [np.asarray(group[layer][name]) for name in names]
    return weights


@pytest.mark.parametrize("name, head, emb_shape, dropout", [("gdc512", "GDC", 512, 0), ("e256", "E", 256, 0.4)])
def test_seed_h5_loads_by_layer_name_and_reproduces_embeddings(name, head, emb_shape, dropout):
    if not SEED_H5.is_dir():
        pytest.skip(f"seed .h5 fixtures not found at {SEED_H5} (../shared is only beside a project checkout)")
    meta = json.loads((SEED_H5 / f"mobilefacenet_{name}_meta.json").read_text())
    # the seed file's BNs all use tf.keras' defaults, which its buildin_models left in place
    model = buildin_models("mobilefacenet", output_layer=head, emb_shape=emb_shape, dropout=dropout,
                           bn_momentum=0.99, bn_epsilon=1e-3)
    assert model.count_params() == meta["params"]
    stored = _read_h5_weights(SEED_H5 / f"mobilefacenet_{name}.h5")
    weighted = {layer.name: layer for layer in model.layers if layer.weights}
    assert set(weighted) == set(stored)  # every seed weight has a home, by its seed name, and nothing is left
    for layer_name, layer in weighted.items():
        layer.set_weights(stored[layer_name])
    expected = np.load(SEED_H5 / f"mobilefacenet_{name}_expected.npz")
    embeddings = model.predict(expected["images"].astype("float32"), verbose=0)  # RGB 0..255: normalised inside
    assert _relative(embeddings, expected["embeddings"]) <= 1e-5


@pytest.mark.usefixtures("structure_only")
@pytest.mark.parametrize(
    "name, head, options, expected", SEED_PARAMS, ids=[f"{n}-{h}-{o}" for n, h, o, _ in SEED_PARAMS]
)
def test_parameter_counts_equal_the_seeds_and_bn_settings_reach_every_layer(name, head, options, expected):
    model = buildin_models(name, output_layer=head, emb_shape=512, bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON,
                           **options)
    assert model.count_params() == expected
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {(layer.momentum, layer.epsilon) for layer in norms} == {(BN_MOMENTUM, BN_EPSILON)}


@pytest.mark.parametrize("name, options", sorted(SEED_FORWARD), ids=lambda value: str(value))
def test_layer_names_shapes_and_outputs_match_the_seed(name, options):
    count, params, digest, shape, probe, abs_sum = SEED_FORWARD[(name, options)]
    momentum, epsilon = SEED_BACKBONE_BN[name]
    inputs = keras.Input((112, 112, 3))
    model = keras.Model(inputs, get_backbone(name)(inputs, bn_momentum=momentum, bn_epsilon=epsilon, **dict(options)))
    listing = _listing(model)
    assert (len(listing), model.count_params()) == (count, params)
    assert hashlib.sha256("\n".join(listing).encode()).hexdigest() == digest
    layers = sorted((layer for layer in model.layers if layer.weights), key=lambda layer: layer.name)
    for index, layer in enumerate(layers):
        values = [formula_weight(index, j, w.name, tuple(w.shape)) for j, w in enumerate(layer.weights)]
        layer.set_weights([value.astype("float32") for value in values])
    outputs = model.predict(formula_inputs(), verbose=0)
    assert outputs.shape == shape
    flat = outputs.reshape(2, -1)
    assert _relative(flat[:, :: flat.shape[1] // 8][:, :8], np.array(probe)) <= 1e-4
    assert _relative(np.abs(flat).sum(axis=1), np.array(abs_sum)) <= 1e-4


def test_registry_names_seed_and_insightface_variants():
    assert get_backbone("mobilefacenet") is seed_mobilefacenet
    assert get_backbone("se_mobilefacenet").func is seed_mobilefacenet
    assert get_backbone("se_mobilefacenet").keywords == {"use_se": True}
    assert get_backbone("mobilefacenet_insightface") is mobilefacenet
    assert get_backbone("se_mobilefacenet_insightface").keywords == {"use_se": True}
    assert get_backbone("se_mobilefacenet_insightface").func is mobilefacenet
    assert get_backbone("vargface") is seed_vargface
    assert get_backbone("vargfacenet") is vargfacenet


@pytest.mark.parametrize("act, expected", [("relu", 1_224_448), ("prelu", 1_224_960)])
def test_add_pointwise_conv_gives_the_one_512_conv(act, expected):
    # seed: buildin_models("mobilefacenet", output_layer="GDC", emb_shape=512, dropout=0, add_pointwise_conv=True,
    # pointwise_conv_act=act).count_params()
    model = buildin_models("mobilefacenet", output_layer="GDC", emb_shape=512, add_pointwise_conv=True,
                           pointwise_conv_act=act)
    assert model.count_params() == expected
    assert [layer.name for layer in model.layers if layer.name.startswith("pw_")] == ["pw_conv", "pw_bn", f"pw_{act}"]
    assert model.get_layer("pw_conv").input.shape == (None, 7, 7, 128)  # the backbone has no 512 conv of its own
    assert model.get_layer("GDC_dw").input.shape == (None, 7, 7, 512)


def test_seed_mobilefacenet_layout():
    inputs = keras.Input((112, 112, 3))
    model = keras.Model(inputs, seed_mobilefacenet(inputs))
    assert model.output_shape == (None, 7, 7, 128)
    assert isinstance(model.get_layer("stem_2_separable"), keras.layers.SeparableConv2D)
    adds = sorted(layer.name for layer in model.layers if isinstance(layer, keras.layers.Add))
    # no residual on the first block of any stage, one on every other block: 4 + 0 + 5 + 0 + 1
    assert len(adds) == 10 and not any("block1_" in name for name in adds)
    assert model.get_layer("stem_1_conv").padding == "same"  # TF "same": a stride-2 conv pads bottom/right only


def test_botnet_activation_and_conv_bias_options():
    inputs = keras.Input((112, 112, 3))
    swish = keras.Model(inputs, get_backbone("botnet50")(inputs, activation="swish", conv_no_bias=False))
    activations = {layer.activation.__name__ for layer in swish.layers if isinstance(layer, keras.layers.Activation)}
    assert activations == {"silu"}
    names = {layer.name for layer in swish.layers}
    assert {"stem_swish", "stack1_block1_1_swish", "stack4_block1_2_swish", "stack4_block1_shortcut_swish"} <= names
    convs = [layer for layer in swish.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 4 + 16 * 3 - 3 and all(layer.use_bias for layer in convs)  # no 3x3 conv in stage 4
    prelu = keras.Model(inputs, get_backbone("botnet50")(inputs, activation="prelu"))
    slopes = [layer for layer in prelu.layers if isinstance(layer, keras.layers.PReLU)]
    assert len(slopes) == 1 + 16 * 3 + 1  # stem, three per block, the last stage's first shortcut
    assert not any(isinstance(layer, keras.layers.Activation) for layer in prelu.layers)
    assert not any(layer.use_bias for layer in prelu.layers if isinstance(layer, keras.layers.Conv2D))


def test_bad_options_raise_clear_errors():
    inputs = keras.Input((112, 112, 3))
    with pytest.raises(ValueError, match="grouped conv from 4 to 4 channels"):
        seed_vargface(inputs, channel_expand=0.125)
    with pytest.raises(ValueError, match="one per out_channels"):
        seed_vargface(inputs, num_blocks=(3, 7))
    with pytest.raises(ValueError, match="vargface activation must be 'prelu' or a Keras activation"):
        seed_vargface(inputs, activation="relux")
    with pytest.raises(ValueError, match="se_ratio must be >= 0"):
        seed_vargface(inputs, se_ratio=-0.5)
    with pytest.raises(ValueError, match="static input height"):
        seed_vargface(keras.Input((None, None, 3)))
    with pytest.raises(ValueError, match="botnet activation must be 'prelu' or a Keras activation"):
        get_backbone("botnet50")(inputs, activation=None)
    with pytest.raises((TypeError, ValueError), match="width"):
        buildin_models("mobilefacenet", width=0.5)  # the seed's MobileFaceNet has no width option
