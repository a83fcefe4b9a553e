"""The seed's backbones from other packages: EfficientNetV2-T / -XL and EfficientNet-L2 (leondgarse's
``keras_efficientnet_v2`` 1.2.2) and SE-ResNeXt 50 / 101 (titu1994's ``keras_squeeze_excite_network``, commit
fc5345b), against numbers measured with those packages and the seed's code (commit 520a9da) on TF 2.21 / tf_keras.

Parameter counts and layer structure come from graph-only builds (no initial weights drawn: XL and L2 hold
208M / 479M parameters); the forward checks fill every weight from its shape with one formula, run in the
reference too.
"""

import collections

import keras
import numpy as np
import pytest

from keras_insightface.backbones.efficientnet_extra import efficientnet_extra
from keras_insightface.backbones.se_resnext import se_resnext
from keras_insightface.layers.stochastic_depth import StochasticDepth
from keras_insightface.models import buildin_models
from tests.models.unfilled import unfilled, unfilled_backbone

NAMES = ("efficientnetv2t", "efficientnetv2xl", "efficientnetl2", "se_resnext50", "se_resnext101")
# Backbone at 112x112x3, measured: keras_efficientnet_v2.EfficientNetV2T / EfficientNetV2XL / EfficientNetV1L2(
# input_shape=(112, 112, 3), num_classes=0, pretrained=None).count_params() and titu1994's se_resnext.
# SEResNextImageNet(weights=None, input_shape=(112, 112, 3), include_top=False, depth=[3, 4, 6, 3] / [3, 4, 23, 3])
# .count_params(). Whole model: the seed's models.buildin_models(name, weights=None).count_params() (GDC head,
# 512-d embedding).
COUNTS = {
    "efficientnetv2t": (12_743_412, 13_290_228),
    "efficientnetv2xl": (207_615_832, 208_298_840),
    "efficientnetl2": (475_894_996, 478_825_172),
    "se_resnext50": (25_563_072, 26_654_656),
    "se_resnext101": (47_009_728, 48_101_312),
}


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_the_reference_packages(name):
    backbone_params, seed_params = COUNTS[name]
    assert unfilled_backbone(name).count_params() == backbone_params
    model = unfilled(lambda: buildin_models(name, weights=None))
    assert model.count_params() == seed_params and model.output_shape == (None, 512)


def test_efficientnet_v2_t_structure():
    model = unfilled_backbone("efficientnetv2t")
    assert model.output_shape == (None, 4, 4, 1024)  # stride 32
    blocks = {layer.name.split("_")[0] + "_" + layer.name.split("_")[1] for layer in model.layers
              if layer.name.startswith("stack")}
    assert len(blocks) == 2 + 4 + 4 + 6 + 9 + 14
    # the package's model has 34 adds, 29 SE modules, 29 depthwise convs, 2 fused expansion-1 blocks
    assert len(layers_of(model, keras.layers.Add)) == 34
    se = [layer.name for layer in model.layers if layer.name.endswith("_se_multiply")]
    assert len(se) == 29 and all(name.startswith(("stack3", "stack4", "stack5")) for name in se)
    assert len(layers_of(model, keras.layers.DepthwiseConv2D)) == 29
    assert len([layer for layer in model.layers if layer.name.endswith("_fused_conv")]) == 2
    assert model.get_layer("stack1_block0_expand_conv").kernel_size == (3, 3)  # fused: 3x3 expansion, stride 2
    assert model.get_layer("stack1_block0_expand_conv").strides == (2, 2)
    # "torch mode": explicit symmetric padding before every strided conv, epsilon 1e-5
    strided = [layer for layer in model.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
    assert len(strided) == 5 and all(layer.padding == "valid" for layer in strided)
    assert {(layer.momentum, layer.epsilon) for layer in layers_of(model, keras.layers.BatchNormalization)} == {
        (0.9, 1e-5)}
    assert not layers_of(model, StochasticDepth)  # the package's V2 default drop_connect_rate=0


def test_efficientnet_v2_xl_and_l2_structure():
    xl = unfilled_backbone("efficientnetv2xl")
    assert xl.output_shape == (None, 4, 4, 1280)
    # the package's XL: 94 adds, 80 SE modules / depthwise convs, 4 fused expansion-1 blocks; TensorFlow padding
    assert len(layers_of(xl, keras.layers.Add)) == 94
    assert len([layer for layer in xl.layers if layer.name.endswith("_se_multiply")]) == 80
    assert len(layers_of(xl, keras.layers.DepthwiseConv2D)) == 80
    assert len([layer for layer in xl.layers if layer.name.endswith("_fused_conv")]) == 4
    assert not layers_of(xl, keras.layers.ZeroPadding2D)
    assert {(layer.momentum, layer.epsilon) for layer in layers_of(xl, keras.layers.BatchNormalization)} == {
        (0.9, 1e-3)}

    l2 = unfilled_backbone("efficientnetl2")
    assert l2.output_shape == (None, 4, 4, 5504)
    # the package's L2: 88 blocks, all with SE, 49 5x5 and 39 3x3 depthwise convs, and 81 residual branches
    # dropped with rate 0.2 * block / 88 (its default drop_connect_rate=0.2)
    assert len([layer for layer in l2.layers if layer.name.endswith("_se_multiply")]) == 88
    kernels = collections.Counter(layer.kernel_size for layer in layers_of(l2, keras.layers.DepthwiseConv2D))
    assert kernels == {(5, 5): 49, (3, 3): 39}
    rates = [layer.drop_rate for layer in layers_of(l2, StochasticDepth)]
    assert len(rates) == 81 and not layers_of(l2, keras.layers.Add)
    np.testing.assert_allclose([rates[0], rates[-1]], [0.2 / 88, 0.2 * 87 / 88])
    assert l2.get_layer("stem_conv").filters == 136  # make_divisible(32 * 4.3, 8)


def test_se_resnext_structure():
    model = unfilled_backbone("se_resnext101")
    assert model.output_shape == (None, 4, 4, 2048)
    grouped = [layer for layer in layers_of(model, keras.layers.Conv2D) if layer.groups > 1]
    assert len(grouped) == 3 + 4 + 23 + 3 and {layer.groups for layer in grouped} == {32}
    assert [layer.filters for layer in grouped] == [128] * 3 + [256] * 4 + [512] * 23 + [1024] * 3
    assert len([layer for layer in model.layers if layer.name.endswith("_shortcut_conv")]) == 4
    assert model.get_layer("stack4_block2_se_reduce").units == 2048 // 16
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("stem_leaky_relu").negative_slope == pytest.approx(0.3)
    regularised = {float(layer.kernel_regularizer.l2) for layer in layers_of(model, keras.layers.Conv2D)}
    assert regularised == {5e-4}
    assert all(layer.kernel_regularizer is None for layer in layers_of(model, keras.layers.Dense))
    assert {(layer.momentum, layer.epsilon) for layer in layers_of(model, keras.layers.BatchNormalization)} == {
        (0.99, 1e-3)}
    seed_name = unfilled(lambda: buildin_models("se_resnext", weights=None))  # the seed's name for the 50
    assert seed_name.count_params() == COUNTS["se_resnext50"][1]
    plain = unfilled_backbone("se_resnext50", depth=(1, 1, 1, 1), weight_decay=0)
    assert all(layer.kernel_regularizer is None for layer in layers_of(plain, keras.layers.Conv2D))


@pytest.mark.parametrize("name", NAMES)
def test_bn_settings_reach_every_batch_norm(name):
    model = unfilled(lambda: buildin_models(name, weights=None, bn_momentum=0.95, bn_epsilon=2e-5))
    settings = {(layer.momentum, layer.epsilon) for layer in layers_of(model, keras.layers.BatchNormalization)}
    assert settings == {(0.95, 2e-5)}


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_weights_are_a_clear_error(name):
    with pytest.raises(ValueError, match="no pretrained weights are available offline.*pass weights=None"):
        buildin_models(name)  # the seed's default weights="imagenet"


def test_bad_options_are_errors():
    inputs = keras.Input((64, 64, 3))
    with pytest.raises(ValueError, match="variant must be one of \\('v2t', 'v2xl', 'v1l2'\\), received variant='v2s'"):
        efficientnet_extra(inputs, variant="v2s")
    with pytest.raises(ValueError, match="EfficientNetV2-T: first_strides must be 1 or 2, received first_strides=3"):
        efficientnet_extra(inputs, first_strides=3)
    with pytest.raises(ValueError, match="drop_connect_rate must be in \\[0, 1\\), received drop_connect_rate=1.0"):
        efficientnet_extra(inputs, drop_connect_rate=1)
    with pytest.raises(ValueError, match="se_resnext depth must be positive block counts.*depth=\\(3, 0\\)"):
        se_resnext(inputs, depth=(3, 0))
    with pytest.raises(ValueError, match="se_resnext weight_decay must be >= 0, received weight_decay=-1"):
        se_resnext(inputs, weight_decay=-1)


def test_efficientnet_options():
    stride_one = unfilled_backbone("efficientnetv2t", first_strides=1)
    assert stride_one.output_shape == (None, 7, 7, 1024)
    dropping = unfilled_backbone("efficientnetv2t", drop_connect_rate=0.2)
    rates = [layer.drop_rate for layer in layers_of(dropping, StochasticDepth)]
    # 34 residual blocks; the first (block 0 of 39) drops with rate 0, a plain add as in the package
    assert len(rates) == 33 and len(layers_of(dropping, keras.layers.Add)) == 1
    np.testing.assert_allclose([rates[0], rates[-1]], [0.2 / 39, 0.2 * 38 / 39])


def fill(kind, shape):
    """Deterministic weights from the tensor's kind and shape, the formula the reference outputs were made with."""
    kinds = ("kernel", "depthwise", "bias", "gamma", "beta", "mean", "variance")
    u = np.random.default_rng([kinds.index(kind), *shape]).uniform(-1.0, 1.0, shape)
    if kind == "kernel":
        return (u * np.sqrt(3.0 / np.prod(shape[:-1]))).astype("float32")
    if kind == "depthwise":
        return (u * np.sqrt(3.0 / np.prod(shape[:2]))).astype("float32")
    offset, scale = {"bias": (0.0, 0.1), "gamma": (1.0, 0.1), "beta": (0.0, 0.02), "mean": (0.0, 0.02),
                     "variance": (1.0, 0.5)}[kind]
    return (offset + scale * u).astype("float32")


def filled_outputs(build, size):
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, build(inputs))
    for layer in model.layers:
        shapes = [tuple(weight.shape) for weight in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([fill(kind, shape) for kind, shape in zip(("gamma", "beta", "mean", "variance"), shapes)])
        elif shapes:  # a kernel (grouped: the whole (3, 3, in / groups, out) kernel), then a bias if any
            first = "depthwise" if isinstance(layer, keras.layers.DepthwiseConv2D) else "kernel"
            layer.set_weights([fill(first, shapes[0])] + [fill("bias", shape) for shape in shapes[1:]])
    images = np.random.default_rng(7).uniform(-1.0, 1.0, (2, size, size, 3)).astype("float32")
    return keras.ops.convert_to_numpy(model(images, training=False))


def assert_fingerprint(outputs, corner, last_corner, channel_sums):
    np.testing.assert_allclose(outputs[:, 0, 0, :4], corner, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(outputs[:, -1, -1, -4:], last_corner, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(outputs.sum(axis=(1, 2))[:, :6], channel_sums, rtol=1e-4, atol=1e-4)


def test_efficientnet_v2_t_outputs_equal_the_package():
    """keras_efficientnet_v2.EfficientNetV2T(input_shape=(64, 64, 3), num_classes=0, pretrained=None) with every
    weight from ``fill``, called on the same images (training=False). Over the whole (2, 2, 2, 1024) output the
    largest difference was 1.0e-6 (largest value 1.10)."""
    outputs = filled_outputs(lambda inputs: efficientnet_extra(inputs, "v2t"), 64)
    assert_fingerprint(
        outputs,
        [[0.14605878, 0.02873021, -0.02668595, 0.04108928], [0.14860979, 0.00987426, -0.04252151, 0.05338440]],
        [[0.06801163, 0.31514254, -0.20263031, -0.16120484], [0.06732436, 0.34261122, -0.19734177, -0.17413168]],
        [[0.59964561, 0.07150990, -0.08405718, -0.31879130, -0.55324221, -0.54749620],
         [0.64561474, 0.05923154, -0.13000900, -0.30137500, -0.52161837, -0.54644299]],
    )


def test_se_resnext_outputs_equal_the_reference():
    """titu1994's SEResNextImageNet(weights=None, input_shape=(112, 112, 3), include_top=False, depth=[1, 1, 1, 1],
    width=1), every weight from ``fill`` (a group conv: its slice of the whole grouped kernel), on the same images.
    The reference's 32 ``Lambda`` slices of a block all read the last group's channels when the model runs (their
    loop index is read late); these numbers are from it with each slice bound to its group, which is what this
    grouped conv computes (largest difference 1.8e-6 of 3.22; against the reference as written: 1.68)."""
    outputs = filled_outputs(lambda inputs: se_resnext(inputs, depth=(1, 1, 1, 1), width=1), 112)
    assert_fingerprint(
        outputs,
        [[-0.04567516, 0.67619336, 0.73043692, 0.16075668], [-0.08128635, 0.60810322, 0.21532905, 0.72715044]],
        [[0.52811849, -0.37735859, -0.15925936, -0.32264552], [0.69452453, -0.45685714, -0.14059648, -0.29523402]],
        [[2.28336430, 10.32199860, 5.68161917, 8.42723179, -3.80368233, -5.11048317],
         [3.52456093, 10.10451889, 6.52485561, 6.83823299, -3.42573214, -4.95221901]],
    )
