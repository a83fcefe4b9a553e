"""ResNet V2: layer-for-layer parity with keras.applications, output shapes and the seed's face variants."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.backbones.resnetv2 import resnet_v2  # noqa: E402

BLOCKS_50 = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)


def build(input_shape=(112, 112, 3), **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, resnet_v2(inputs, **kwargs))


def layers_of(model, layer_type):
    return [layer for layer in model.layers if isinstance(layer, layer_type)]


def comparable_names(model):
    """Layer names, less the input and keras.applications' unnamed shortcut pools (named by a global counter)."""
    pools = {layer.name for layer in layers_of(model, keras.layers.MaxPooling2D) if layer.name != "pool1_pool"}
    return {layer.name for layer in model.layers[1:]} - pools


@pytest.fixture(scope="module")
def default50():
    return build(depth=50)


@pytest.fixture(scope="module")
def reference50():
    return keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(112, 112, 3))


def test_default_matches_keras_applications_layout(default50, reference50):
    assert default50.output_shape == reference50.output_shape == (None, 4, 4, 2048)
    assert default50.count_params() == reference50.count_params() == 23_564_800
    assert comparable_names(default50) == comparable_names(reference50)
    pools = layers_of(default50, keras.layers.MaxPooling2D)
    assert len(pools) == len(layers_of(reference50, keras.layers.MaxPooling2D)) == 4
    # Same order of weighted layers, so the legacy (order-based) h5 loader also lines up.
    weighted = [layer.name for layer in default50.layers if layer.weights]
    assert weighted == [layer.name for layer in reference50.layers if layer.weights]
    names = [layer.name for layer in default50.layers]
    assert len(names) == len(set(names))
    assert names[-2:] == ["post_bn", "post_relu"]
    for name in ("conv2_block3_2_conv", "conv3_block4_2_conv", "conv4_block6_2_conv"):
        assert default50.get_layer(name).strides == (2, 2)
    assert default50.get_layer("conv5_block3_2_conv").strides == (1, 1)
    assert {bn.epsilon for bn in layers_of(default50, keras.layers.BatchNormalization)} == {1.001e-5}


def test_resnet101v2_parameter_count():
    reference = keras.applications.ResNet101V2(include_top=False, weights=None, input_shape=(112, 112, 3))
    assert build(depth=101).count_params() == reference.count_params() == 42_626_560


def test_outputs_match_keras_applications_with_copied_weights():
    shape = (64, 64, 3)
    reference = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=shape)
    model = build(shape, depth=50)
    rng = np.random.default_rng(0)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0, 0.1, channels),
                    rng.normal(0, 0.1, channels),
                    rng.uniform(0.5, 1.5, channels),
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    images = rng.integers(0, 256, (2,) + shape).astype("float32")
    expected = np.asarray(reference(images, training=False))
    actual = np.asarray(model(images, training=False))
    assert actual.shape == expected.shape == (2, 2, 2, 2048)
    assert expected.std() > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_pad_same_has_no_zero_padding():
    model = build(depth=50, pad_same=True)
    assert model.output_shape == (None, 4, 4, 2048)
    assert not layers_of(model, keras.layers.ZeroPadding2D)
    assert model.get_layer("conv1_conv").padding == "same"
    assert model.get_layer("conv4_block6_2_conv").padding == "same"


def test_first_conv_k3_stride_1_ends_at_7x7():
    model = build(depth=50, first_conv_k3_stride_1=True)
    assert model.output_shape == (None, 7, 7, 2048)
    stem = model.get_layer("conv1_conv")
    assert tuple(stem.kernel.shape) == (3, 3, 3, 64) and stem.strides == (1, 1)
    assert model.get_layer("pool1_pool").output.shape == (None, 56, 56, 64)


def test_conv_no_bias_removes_every_bias(default50):
    model = build(depth=50, conv_no_bias=True)
    assert not any(conv.use_bias for conv in layers_of(model, keras.layers.Conv2D))
    shortcut_biases = sum(4 * width for width in WIDTHS)
    expand_biases = sum(count * 4 * width for count, width in zip(BLOCKS_50, WIDTHS))
    removed = 64 + shortcut_biases + expand_biases
    assert removed == 19_008
    assert model.count_params() == default50.count_params() - removed


def test_swish_and_prelu_activations():
    swish = build(depth=50, activation="swish")
    activations = layers_of(swish, keras.layers.Activation)
    assert activations and all(layer.activation is keras.activations.swish for layer in activations)
    assert not any(layer.name.endswith("_relu") for layer in swish.layers)
    assert swish.get_layer("post_swish") and swish.get_layer("conv2_block1_preact_swish")
    prelu = build(depth=50, activation="prelu")
    prelus = layers_of(prelu, keras.layers.PReLU)
    assert len(prelus) == 3 * sum(BLOCKS_50) + 1  # preact, 1, 2 of every block + post
    assert not layers_of(prelu, keras.layers.Activation)
    assert prelu.get_layer("post_prelu") in prelus


def test_bn_momentum_and_epsilon_reach_every_bn():
    model = build(depth=50, bn_momentum=0.9, bn_epsilon=2e-5)
    bns = layers_of(model, keras.layers.BatchNormalization)
    assert len(bns) == 3 * sum(BLOCKS_50) + 1
    assert all(bn.momentum == 0.9 and bn.epsilon == 2e-5 for bn in bns)


def test_depth_error():
    with pytest.raises(ValueError, match="depth=34"):
        resnet_v2(keras.Input((112, 112, 3)), depth=34)


def test_stochastic_depth_finds_every_residual_add(default50):
    from keras_insightface.layers.stochastic_depth import StochasticDepth
    from keras_insightface.surgery import add_stochastic_depth

    deep = add_stochastic_depth(default50, drop_rate=0.2)
    rates = [layer.drop_rate for layer in deep.layers if isinstance(layer, StochasticDepth)]
    assert len(rates) == sum(BLOCKS_50) and rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
