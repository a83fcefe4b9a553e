"""GhostNet (seed layout, width 1.3): independent parameter count, SE positions, strides and activations."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones.ghostnet import BLOCKS, ghostnet, make_divisible

KERNELS = (3, 3, 3, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5)
EXPANSIONS = (16, 48, 72, 72, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960, 960, 512)  # seed: last is 512
OUTS = (16, 24, 24, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160, 160, 160)
SE_BLOCKS = (4, 5, 10, 11, 12, 14, 16)
STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


def divisible(value):
    rounded = max(4, int(value + 2) // 4 * 4)
    return rounded + 4 if rounded < 0.9 * value else rounded


def ghostnet_parameter_count(width=1.3, prelu=False):
    """Stem, 16 ghost bottlenecks and the final 1x1 conv, from the seed's tables; BN: 4 per channel."""
    bn = lambda c: 4 * c  # noqa: E731 - gamma, beta, moving mean, moving variance
    act = lambda c: c if prelu else 0  # noqa: E731 - PReLU alphas, shared over height and width

    def ghost_module(cin, out, with_act):
        half = out // 2
        return cin * half + bn(half) + 9 * half + bn(half) + (2 * act(half) if with_act else 0)

    channels = divisible(16 * width)
    total = 27 * channels + bn(channels) + act(channels)
    for index in range(16):
        kernel, stride = KERNELS[index], STRIDES[index]
        exp, out = divisible(EXPANSIONS[index] * width), divisible(OUTS[index] * width)
        total += ghost_module(channels, exp, True)
        if stride == 2:
            total += kernel * kernel * exp + bn(exp)
        if index + 1 in SE_BLOCKS:
            reduced = divisible(exp / 4)
            total += exp * reduced + reduced + act(reduced) + reduced * exp + exp  # biased convs
        total += ghost_module(exp, out, False)
        if stride == 2 or channels != out:
            total += kernel * kernel * channels + bn(channels) + channels * out + bn(out)
        channels = out
    final = divisible(EXPANSIONS[-1] * width)
    return total + channels * final + bn(final) + act(final)


def build(**kwargs):
    inputs = keras.Input((112, 112, 3))
    return keras.Model(inputs, ghostnet(inputs, **kwargs))


@pytest.fixture(scope="module")
def model():
    return build()


def test_tables_and_make_divisible():
    assert [b[0] for b in BLOCKS] == list(KERNELS)
    assert [b[1] for b in BLOCKS] == list(EXPANSIONS)
    assert [b[2] for b in BLOCKS] == list(OUTS)
    assert [i + 1 for i, b in enumerate(BLOCKS) if b[3] > 0] == list(SE_BLOCKS)
    assert [b[4] for b in BLOCKS] == list(STRIDES)
    for value in (0.5, 3, 20.8, 62.4, 665.6, 1248, 13.0):
        assert make_divisible(value) == divisible(value)
    assert (make_divisible(16 * 1.3), make_divisible(512 * 1.3), make_divisible(960 * 1.3)) == (20, 664, 1248)


def test_layout_and_parameter_count(model):
    assert model.output_shape == (None, 4, 4, 664)
    assert model.count_params() == ghostnet_parameter_count() == 3_701_016
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert model.get_layer("stem_conv_pad").padding == ((1, 1), (1, 1))


def test_block_strides_and_spatial_sizes(model):
    size = 56
    for index, stride in enumerate(STRIDES):
        size = (size + 1) // 2 if stride == 2 else size  # pad k // 2, valid: ceil(size / 2)
        add = model.get_layer(f"block{index + 1}_add")
        assert add.output.shape[1:3] == (size, size)
        if stride == 2:
            kernel = KERNELS[index]
            assert model.get_layer(f"block{index + 1}_dw_conv").strides == (2, 2)
            assert model.get_layer(f"block{index + 1}_dw_conv_pad").padding == ((kernel // 2,) * 2,) * 2
    assert size == 4


def blocks_with(model, suffix):
    return sorted(int(layer.name[5:].split("_")[0]) for layer in model.layers if layer.name.endswith(suffix))


def test_se_blocks_and_hard_sigmoid_gate(model):
    se_blocks = blocks_with(model, "_se_multiply")
    assert se_blocks == list(SE_BLOCKS)
    gate = model.get_layer("block4_se_hard_sigmoid")
    x = np.linspace(-5, 5, 41, dtype="float32")
    np.testing.assert_allclose(np.asarray(gate(x)), np.clip(x + 3, 0, 6) / 6, atol=1e-6)
    assert model.get_layer("block4_se_reduce_conv").filters == make_divisible(make_divisible(72 * 1.3) / 4)
    shortcuts = blocks_with(model, "_shortcut_conv")
    assert shortcuts == [2, 4, 6, 10, 12]  # stride 2 or a channel change (the stem already has 20)


def test_stem_strides_one_gives_7x7(model):
    model_s1 = build(strides=1)
    assert model_s1.output_shape == (None, 7, 7, 664)
    assert model_s1.count_params() == model.count_params()
    with pytest.raises(ValueError, match="strides=3"):
        build(strides=3)
    with pytest.raises(ValueError, match="'gelu'"):
        build(activation="gelu")


def test_activation_variants():
    prelu = build(activation="prelu", se_activation="prelu")
    assert prelu.count_params() == ghostnet_parameter_count(prelu=True)
    np.testing.assert_allclose(np.asarray(prelu.get_layer("stem_prelu").alpha), 0.25)
    assert isinstance(prelu.get_layer("block4_se_prelu"), keras.layers.PReLU)
    swish = build(activation="swish")
    assert swish.get_layer("block1_ghost1_primary_swish").activation.__name__ in ("silu", "swish")
    assert swish.get_layer("block4_se_relu")


def test_forward_pass_is_finite(model):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 112, 112, 3)).astype("float32")
    out = model.predict_on_batch(images)
    assert out.shape == (2, 4, 4, 664) and np.all(np.isfinite(out))
