"""Every backbone family's forward pass against an implementation this project did not write, on the same weights.

Families built from ``keras.applications`` are compared here with the ``keras.applications`` model itself, built
beside ours (with its own input preprocessing where ours replaces it), its weights copied layer by layer. Families
written here are compared with numbers measured by running the reference code with the same weights and input:
every weight set by ``formula_weight`` (layers in name order; BN statistics, PReLU slopes and biases non-trivial)
and the input ``formula_pixels`` (two smooth 112x112 RGB images with a fine texture, integer pixel values, so no
image decoder is involved). Those references cannot run in this suite (TF-Keras 2, MXNet, other projects'
sources); ``RECORDED`` keeps what they printed and says how each was run. ``FORWARD_CHECKS_ELSEWHERE`` names the
tests in other files that compare the remaining families with a reference, and
``test_every_family_has_a_forward_reference`` keeps the inventory complete (a family is a builder function of
``BACKBONES``).
"""

from pathlib import Path

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.backbones import BACKBONES  # noqa: E402
from tests.models.unfilled import unfilled, unfilled_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def family(builder):
    return getattr(builder, "func", builder).__name__


def formula_pixels(count=2, size=112):
    """``count`` RGB images, values 0..255 (integers, float32): smooth bands and blobs plus a fine texture."""
    y, x = np.mgrid[0:size, 0:size].astype("float64") / size
    images = []
    for index in range(count):
        channels = []
        for channel in range(3):
            phase = 1.7 * index + 2.3 * channel
            smooth = np.sin(2 * np.pi * ((1.3 + 0.4 * index) * x + 0.6 * y) + phase)
            smooth *= np.cos(2 * np.pi * (0.8 + 0.3 * channel) * y - phase)
            blob = np.exp(-((x - 0.35 - 0.1 * index) ** 2 + (y - 0.45) ** 2) / 0.02)
            texture = np.sin(np.arange(size * size).reshape(size, size) * (12.9898 + channel) + index) * 43758.5453
            texture -= np.floor(texture)
            channels.append(127.5 + 80 * smooth + 60 * blob + 30 * (texture - 0.5))
        images.append(np.stack(channels, axis=-1))
    return np.clip(np.round(np.stack(images)), 0, 255).astype("float32")


def normalised_pixels(count=2, size=112):
    """``formula_pixels`` as every backbone here receives them: ``(x - 127.5) / 128``."""
    return (formula_pixels(count, size) - 127.5) / 128.0


def formula_weight(index, kind, shape, gain=2.0):
    """The value of weight ``kind`` (its Keras name) with ``shape``; ``index`` numbers the weights of a model
    (layers in name order, then the layer's weight order). Kernels are uniform with variance ``gain / fan_in``
    (2: He)."""
    u = np.random.default_rng([index, *shape]).uniform(-1.0, 1.0, shape)
    if kind == "depthwise_kernel":
        return u * np.sqrt(3.0 * gain / np.prod(shape[:2]))
    if kind.endswith("kernel"):
        return u * np.sqrt(3.0 * gain / np.prod(shape[:-1]))
    offset, scale = {"gamma": (1.0, 0.2), "beta": (0.0, 0.1), "moving_mean": (0.0, 0.1), "moving_variance": (1.0, 0.4),
                     "alpha": (0.25, 0.1), "bias": (0.0, 0.05), "mean": (0.0, 0.1), "variance": (1.0, 0.4)}.get(
        kind, (0.0, 0.2))  # position embeddings, mask tokens
    return offset + scale * u


def fill(model, gain=2.0):
    """Set every floating-point weight of ``model`` from ``formula_weight``; returns ``{layer name: [arrays]}``."""
    layers = sorted((layer for layer in model.layers if layer.weights), key=lambda layer: layer.name)
    index, filled = 0, {}
    for layer in layers:
        values = []
        for weight in layer.weights:
            if "int" in str(weight.dtype):  # a Normalization layer's sample count, never read by its call
                values.append(np.zeros(weight.shape, weight.dtype))
                continue
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D) and weight.name == "kernel"
            kind = "depthwise_kernel" if depthwise else weight.name  # Keras 3 names it "kernel"
            values.append(formula_weight(index, kind, tuple(weight.shape), gain).astype("float32"))
            index += 1
        layer.set_weights(values)
        if hasattr(layer, "finalize_state"):  # Normalization: mean / variance are read from the weights here
            layer.finalize_state()
        filled[layer.name] = values
    return filled


def run(model, images):
    """Inference outputs as float64; one compiled call (op-by-op calls compile every op shape: 5x slower cold)."""
    return np.asarray(model.predict_on_batch(images), dtype="float64")


def fingerprint(outputs):
    """A handful of numbers that pin a ``(B, ...)`` output: eight strided entries per image, the first six
    channel sums over the map, and each image's sum of absolute values."""
    flat = outputs.reshape(outputs.shape[0], -1)
    channels = outputs.reshape(outputs.shape[0], -1, outputs.shape[-1])
    return {
        "probe": flat[:, :: max(1, flat.shape[1] // 8)][:, :8],
        "channel_sums": channels.sum(axis=1)[:, :6],
        "abs_sum": np.abs(flat).sum(axis=1),
    }


def assert_depends_on_the_image(outputs):
    """The two images give different outputs: the input reaches the output (not a map of biases only)."""
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3 * np.abs(outputs).max()


# Registry name -> (our options, the keras.applications constructor and its keywords, what the reference gets,
# weight gain). Ours receives normalised pixels; EfficientNetB0 rescales inside, so the reference gets the raw
# pixels (ours turns them back into pixels first); the others are built without their own preprocessing.
APPLICATIONS = {
    "mobilenet": ({"alpha": 0.25}, "MobileNet", {"alpha": 0.25}, "normalised", 2.0),
    "mobilenetv2": ({"alpha": 0.35}, "MobileNetV2", {"alpha": 0.35}, "normalised", 2.0),
    "mobilenetv3_small": ({"alpha": 0.75}, "MobileNetV3Small", {"alpha": 0.75, "include_preprocessing": False},
                          "normalised", 2.0),
    "mobilenetv3_large": ({"alpha": 0.75}, "MobileNetV3Large", {"alpha": 0.75, "include_preprocessing": False},
                          "normalised", 2.0),
    "efficientnetb0": ({}, "EfficientNetB0", {}, "pixels", 2.0),
    "efficientnetv2b0": ({}, "EfficientNetV2B0", {"include_preprocessing": False}, "normalised", 2.0),
    "resnet50": ({}, "ResNet50", {}, "normalised", 1.0),
}
APPLICATION_SIZE = 64


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_keras_applications_backbones_equal_keras_applications(name):
    """Our backbone and ``keras.applications.<model>(include_top=False, weights=None)`` with the same weights:
    the same feature map, to float32 rounding (largest difference <= 1e-5 of the largest output)."""
    options, constructor, keywords, reference_input, gain = APPLICATIONS[name]
    size = APPLICATION_SIZE
    reference = unfilled(lambda: getattr(keras.applications, constructor)(
        include_top=False, weights=None, input_shape=(size, size, 3), **keywords))
    filled = fill(reference, gain)
    ours = unfilled_backbone(name, size, **options)
    # the same constructor builds both, so their weighted layers pair up in order (Keras numbers unnamed ones)
    theirs, mine = ([layer for layer in model.layers if layer.weights] for model in (reference, ours))
    assert len(theirs) == len(mine) == len(filled)
    for their_layer, my_layer in zip(theirs, mine):
        assert type(their_layer) is type(my_layer)
        my_layer.set_weights(filled[their_layer.name])  # shapes checked by set_weights
        if hasattr(my_layer, "finalize_state"):
            my_layer.finalize_state()
    pixels = formula_pixels(2, size)
    expected = run(reference, pixels if reference_input == "pixels" else normalised_pixels(2, size))
    actual = run(ours, normalised_pixels(2, size))
    assert actual.shape == expected.shape
    assert_depends_on_the_image(expected)
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()


# Families written here, against their reference run elsewhere with ``fill(model, gain)`` on ``normalised_pixels()``
# (112x112; the MXNet symbol takes ``formula_pixels()`` and normalises itself). Versions: seed code under
# TensorFlow 2.21 / tf_keras 2.21 (``TF_USE_LEGACY_KERAS=1``), MXNet 1.9.1 (numpy 1.23.5), torch 2.13.0 CPU.
# Residual stacks take gain 1: at He gain their activations grow to 1e3-1e5, where BoTNet's attention softmax turns
# into a hard argmax that float rounding flips.
RECORDED = {
    # the seed's backbones/mobilenet_m1.py (commit 520a9da) MobileNet(input_shape=(112, 112, 3), include_top=False,
    # weights=None, alpha=0.25); its conv1 / conv1_bn / conv_dw_<i>[_bn] / conv_pw_<i>[_bn] hold our
    # stem_conv / stem_bn / block<i>_dw[_bn] / block<i>_pw[_bn].
    "mobilenet_m1": {
        "name": "mobilenet_m1", "options": {"alpha": 0.25}, "gain": 2.0, "shape": (2, 7, 7, 256),
        "probe": [[0.0177095663, 0, 0.250161856, 0, 0, 0, 0.400334746, 0.0759232864],
                  [0.0564292111, 0, 0.26736331, 0, 0, 0, 0.331617743, 0.10870292]],
        "channel_sums": [[0.428654137, 1.57585918, 0.0630811742, 0.564054307, 3.16197508, 0],
                         [0.350978773, 1.38230283, 0.11828526, 0.604783339, 2.72107936, 0]],
        "abs_sum": [1366.57085, 1368.95509],
    },
    # the seed's backbones/botnet.py as it was last (commits e8e97e4 .. fc6b69c, removed in ad81c00):
    # BotNet50(strides=1, include_top=False, input_shape=(112, 112, 3)); its layer names are ours with conv1_* for
    # stem_* and "_shorcut_" for "_shortcut_"; our (C, 4 * 128) attention kernels are its (C, 4, 128) query / key /
    # value kernels, our (2n - 1, 128) embeddings its transposed r_height / r_width.
    "botnet50": {
        "name": "botnet50", "options": {}, "gain": 1.0, "shape": (2, 7, 7, 2048),
        "probe": [[0, 0.658352375, 0, 0, 0, 1.51808906, 0, 0],
                  [0, 0.649994254, 0, 0, 0, 1.57343674, 0, 0.0274271965]],
        "channel_sums": [[0, 15.2493795, 0, 34.0387243, 0, 0],
                         [0, 14.6607883, 0, 35.2321954, 0, 0]],
        "abs_sum": [58691.7834, 57922.492],
    },
    # insightface recognition/arcface_mxnet/symbol/vargfacenet.py (commit ce3600a) get_symbol() with
    # net_multiplier=1.25, net_act="prelu", net_se=1 / 0, bn_mom=0.9, under MXNet; its internal output
    # "embed_convx_act" (1x1 conv to 1024 + BN + PReLU, where our backbone ends); its BN epsilon is 2e-5.
    "vargfacenet": {
        "name": "vargfacenet", "options": {"bn_epsilon": 2e-05}, "gain": 1.0, "shape": (2, 7, 7, 1024),
        "probe": [[-0.0903315395, 0.110435024, -0.0913497061, 0.128812879, -0.0881811753, -0.00192286877,
                   -0.0749373063, -0.0684541985],
                  [-0.097266376, 0.0860411599, -0.078758195, 0.200957239, -0.0752184913, 0.00893983245,
                   -0.0725722983, -0.0699828118]],
        "channel_sums": [[-4.25161058, 3.817617, -1.62604476, 4.99616375, 3.39687575, 3.2753532],
                         [-4.25520527, 3.61619716, -1.59729748, 5.07120083, 3.45390107, 2.89346267]],
        "abs_sum": [5961.34263, 5888.78066],
    },
    "vargfacenet_no_se": {
        "name": "vargfacenet", "options": {"bn_epsilon": 2e-05, "use_se": False}, "gain": 1.0, "shape": (2, 7, 7, 1024),
        "probe": [[-0.0387033112, -0.0946196467, -0.0596701615, 0.0129205808, 0.0202258602, 0.717055082,
                   -0.088317439, 0.333204359],
                  [-0.0435597412, -0.0943502784, -0.0745019242, -0.00469035283, -0.00545198424, 0.666748643,
                   -0.0933848172, 0.344212711]],
        "channel_sums": [[-6.01356937, 22.2931414, 11.7657492, -1.33175012, 13.8327937, 3.89901349],
                         [-6.04607262, 22.0245374, 11.6892533, -1.2461567, 14.0696111, 3.87145038]],
        "abs_sum": [9434.25555, 9456.32499],
    },
    # insightface recognition/arcface_torch/backbones/mobilefacenet.py (commit 5ef9804) get_mbf(False, 512, scale=1),
    # the paper's widths, in eval mode: its layers then conv_sep (7x7x512), before its GDC head. Its BN epsilon is
    # torch's 1e-5, as ours.
    "mobilefacenet_insightface": {
        "name": "mobilefacenet_insightface", "options": {}, "gain": 1.0, "shape": (2, 7, 7, 512),
        "probe": [[0.159816951, 0.505815685, 0.0799279511, -0.0794947967, 0.146022677, 0.317525476, -0.210178435,
                   0.229996905],
                  [0.204811037, 0.710388362, 0.0409028158, -0.0744224861, 0.0588084273, 0.275104523, -0.191176921,
                   0.212251171]],
        "channel_sums": [[4.06666622, -13.7561829, 38.5140977, 17.4610463, -1.81731202, -9.9070364],
                         [3.48715657, -13.7321507, 38.0990533, 16.4366532, -2.03536791, -9.8205232]],
        "abs_sum": [6920.98881, 6900.14084],
    },
    # huawei-noah Efficient-AI-Backbones ghostnet_pytorch/ghostnet.py (commit 991ef1f) GhostNet(cfgs, width=1.3),
    # cfgs = the seed's ghost_model.py block table (kernels, expansions ending in 512, outputs, SE, strides), one
    # block per stage; its conv_stem -> bn1 -> act1 -> blocks. Its BN epsilon is torch's 1e-5. (The seed's own
    # GhostNet differs from both by design: TF-Keras 2's hard sigmoid and TF "same" padding; see ghostnet.py.)
    "ghostnet": {
        "name": "ghostnet", "options": {"bn_epsilon": 1e-05}, "gain": 1.0, "shape": (2, 4, 4, 664),
        "probe": [[0, 0, 0.139803812, 0, 0, 0, 0.576360345, 1.53231919],
                  [0, 0, 0.032174293, 0, 0, 0, 0, 1.46228623]],
        "channel_sums": [[7.79414724, 5.24265024, 46.9578575, 26.3945505, 11.1931578, 12.3775415],
                         [3.58615339, 5.40610325, 48.3499762, 25.2309893, 11.488102, 8.64912643]],
        "abs_sum": [8089.70406, 8192.64729],
    },
    # insightface recognition/arcface_torch/backbones get_model(name) (vit.py of commit 5ef9804) in eval mode, with
    # timm 1.0.31's layers; forward_features (B, 144 * D) viewed as (B, 12, 12, D). Our Dense kernels are its
    # transposed Linear weights. Its embedding head ("feature") is not part of the backbone.
    "vit_t": {
        "name": "vit_t", "options": {}, "gain": 2.0, "shape": (2, 12, 12, 256),
        "probe": [[0.190009668, 0.832948804, 0.642483234, 0.828238904, 0.713641942, 0.873895824, 0.848032832,
                   1.35041511],
                  [0.983046234, 1.13621271, 0.891735613, 0.947831213, 1.19731796, 0.33987689, 1.25717282,
                   0.435149223]],
        "channel_sums": [[108.521173, -43.8817656, -41.9973622, 102.87654, 27.1602901, -105.814233],
                         [118.420275, -108.069328, -7.07909073, 147.374236, 1.2979068, -91.1714689]],
        "abs_sum": [29486.4363, 29361.3292],
    },
    "vit_s": {
        "name": "vit_s", "options": {}, "gain": 2.0, "shape": (2, 12, 12, 512),
        "probe": [[0.650547147, 1.39994776, 0.305134416, 1.54777265, 1.20552731, 1.36548281, 1.2826649, 1.49452388],
                  [0.630115449, 0.729407012, 0.666356087, 0.324157238, 1.11736023, 0.256601512, 0.304666847,
                   0.0791278258]],
        "channel_sums": [[133.518171, -188.338501, 4.43067909, 163.882958, 86.5489502, -4.47689786],
                         [96.7355925, -213.542963, 16.1476262, 187.215304, 82.2861953, -37.2469203]],
        "abs_sum": [58964.8309, 59123.2827],
    },
    "vit_b": {
        "name": "vit_b", "options": {}, "gain": 2.0, "shape": (2, 12, 12, 512),
        "probe": [[-0.380712688, -0.26981613, -0.697070122, -0.545918524, -0.283611536, -0.641891837, -0.319949299,
                   -0.549131572],
                  [0.139256313, -0.0224926416, -0.147246286, -0.416273564, -0.206397519, -0.251518637, -0.343552262,
                   -0.223241761]],
        "channel_sums": [[-64.8961555, -0.881116325, -171.277529, 140.838884, -43.5879238, -25.1800369],
                         [-4.21788976, 20.0638994, -200.461704, 118.652087, -16.3668918, -4.82983543]],
        "abs_sum": [58316.0737, 58488.2534],
    },
}
# Differences found by these checks and left as they are (none now: mobilenet_m1's padding was fixed to the seed's).
KNOWN_DIFFERENCES = {}


@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[key]))
    if key in KNOWN_DIFFERENCES else key
    for key in sorted(RECORDED)
])
def test_backbones_equal_recorded_references(key):
    """Our backbone with the formula weights gives the reference's numbers (within 1e-4 of each group's
    largest value)."""
    recorded = RECORDED[key]
    assert_depends_on_the_image(np.asarray(recorded["probe"]))
    model = unfilled_backbone(recorded["name"], 112, **recorded["options"])
    fill(model, recorded["gain"])
    outputs = run(model, normalised_pixels())
    assert outputs.shape == recorded["shape"]
    measured = fingerprint(outputs)
    for group in ("probe", "channel_sums", "abs_sum"):
        expected = np.asarray(recorded[group], dtype="float64")
        np.testing.assert_allclose(measured[group], expected, rtol=0, atol=1e-4 * np.abs(expected).max(),
                                   err_msg=f"{key}: {group}")


# Families whose reference check lives in another test file (path::test).
FORWARD_CHECKS_ELSEWHERE = {
    # arcface_torch's iresnet / mbf in PyTorch, through .pth and ONNX import (issue 17 item 3)
    "iresnet": "tests/inference/test_insightface_import.py::test_pth_and_onnx_give_the_source_embeddings",
    "mbf": "tests/inference/test_insightface_import.py::test_pth_and_onnx_give_the_source_embeddings",
    # the seed's real .h5 weights loaded by layer name into ours, its embeddings of 20 real faces
    "seed_mobilefacenet":
        "tests/backbones/test_seed_architectures.py::test_seed_h5_loads_by_layer_name_and_reproduces_embeddings",
    # numbers measured with the seed's vargface.py
    "seed_vargface": "tests/backbones/test_seed_architectures.py::test_layer_names_shapes_and_outputs_match_the_seed",
    # titu1994's SE-ResNeXt and keras_efficientnet_v2's EfficientNetV2-T, measured
    "se_resnext": "tests/models/test_seed_backbones_extra.py::test_se_resnext_outputs_equal_the_reference",
    "efficientnet_extra": "tests/models/test_seed_backbones_extra.py::test_efficientnet_v2_t_outputs_equal_the_package",
    # keras.applications.ResNet50V2 with copied weights
    "resnet_v2": "tests/backbones/test_resnetv2.py::test_outputs_match_keras_applications_with_copied_weights",
}


def test_every_family_has_a_forward_reference():
    """Every builder of ``BACKBONES`` is compared with a reference here or by a named test elsewhere."""
    here = {family(BACKBONES[name]) for name in APPLICATIONS}
    here |= {family(BACKBONES[recorded["name"]]) for recorded in RECORDED.values()}
    assert not here & set(FORWARD_CHECKS_ELSEWHERE)
    assert {family(builder) for builder in BACKBONES.values()} == here | set(FORWARD_CHECKS_ELSEWHERE)
    for node in FORWARD_CHECKS_ELSEWHERE.values():
        path, test = node.split("::")
        assert f"def {test}(" in (REPO / path).read_text(), f"{node} is gone: name the test that checks it now"
