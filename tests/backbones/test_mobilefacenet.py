"""MobileFaceNet: the paper's / seed's layer list, counted independently, SE placement and stage strides."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones.mobilefacenet import STAGES, mobilefacenet

# (blocks, out channels, first stride, expansion) from the paper's Table 1
PAPER_STAGES = ((5, 64, 2, 2), (1, 128, 2, 4), (6, 128, 1, 2), (1, 128, 2, 4), (2, 128, 1, 2))


def mobilefacenet_parameter_count(use_se=False, width=1.0):
    """Stem conv, depthwise, bottlenecks (+ SE on the projected channels) and the 1x1 512 conv; BN: 4 per channel."""
    bn = lambda c: 4 * c  # noqa: E731 - gamma, beta, moving mean, moving variance
    channels = round(64 * width)
    total = 27 * channels + bn(channels) + channels  # stem conv, BN, PReLU
    total += 9 * channels + bn(channels) + channels  # depthwise 3x3, BN, PReLU
    for blocks, out, _, expansion in PAPER_STAGES:
        out = round(out * width)
        for _ in range(blocks):
            hidden = channels * expansion
            total += channels * hidden + bn(hidden) + hidden  # expand conv, BN, PReLU
            total += 9 * hidden + bn(hidden) + hidden  # depthwise, BN, PReLU
            total += hidden * out + bn(out)  # project conv, BN
            if use_se:
                reduced = out // 16
                total += out * reduced + reduced + reduced + reduced * out + out  # biased convs + PReLU
            channels = out
    return total + channels * 512 + bn(512) + 512


def build(**kwargs):
    inputs = keras.Input((112, 112, 3))
    return keras.Model(inputs, mobilefacenet(inputs, **kwargs))


@pytest.fixture(scope="module")
def plain():
    return build()


@pytest.fixture(scope="module")
def with_se():
    return build(use_se=True)


def test_layout_and_parameter_count(plain, with_se):
    assert STAGES == PAPER_STAGES
    assert plain.output_shape == with_se.output_shape == (None, 7, 7, 512)
    assert plain.count_params() == mobilefacenet_parameter_count() == 929_536
    assert with_se.count_params() == mobilefacenet_parameter_count(use_se=True) == 954_376
    for model in (plain, with_se):
        names = [layer.name for layer in model.layers]
        assert len(names) == len(set(names))
    np.testing.assert_allclose(np.asarray(plain.get_layer("stem_prelu").alpha), 0.25)
    assert isinstance(plain.get_layer("stem_dw_conv"), keras.layers.DepthwiseConv2D)


def test_width_scales_stages_but_not_the_final_512():
    model = build(width=0.5)
    assert model.output_shape == (None, 7, 7, 512)
    assert model.get_layer("stack5_block2_project_conv").filters == 64
    assert model.count_params() == mobilefacenet_parameter_count(width=0.5)
    with pytest.raises(ValueError, match="width=0"):
        build(width=0)


def test_stage_strides_residuals_and_padding(plain):
    assert plain.get_layer("stem_prelu").output.shape[1:3] == (56, 56)
    sizes = [plain.get_layer(f"stack{s + 1}_block{n}_project_bn").output.shape[1:3] for s, (n, *_) in enumerate(STAGES)]
    assert sizes == [(28, 28), (14, 14), (14, 14), (7, 7), (7, 7)]
    adds = sorted(layer.name for layer in plain.layers if isinstance(layer, keras.layers.Add))
    expected = [f"stack1_block{b}_add" for b in range(2, 6)] + [f"stack3_block{b}_add" for b in range(1, 7)]
    assert adds == sorted(expected + ["stack5_block1_add", "stack5_block2_add"])
    for name in ("stem_conv", "stack1_block1_dw_conv", "stack2_block1_dw_conv", "stack4_block1_dw_conv"):
        layer = plain.get_layer(name)
        assert layer.strides == (2, 2) and layer.padding == "valid"
        assert plain.get_layer(name + "_pad").padding == ((1, 1), (1, 1))
    assert plain.get_layer("stack3_block1_dw_conv").strides == (1, 1)


def test_se_blocks_follow_every_projection(plain, with_se):
    assert not any("_se_" in layer.name for layer in plain.layers)
    multiplies = [layer for layer in with_se.layers if isinstance(layer, keras.layers.Multiply)]
    assert len(multiplies) == sum(blocks for blocks, *_ in STAGES)
    for stage, (blocks, *_) in enumerate(STAGES):
        for block in range(blocks):
            name = f"stack{stage + 1}_block{block + 1}"
            se_input = with_se.get_layer(name + "_se_pool").input
            assert se_input is with_se.get_layer(name + "_project_bn").output
            channels = se_input.shape[-1]
            assert with_se.get_layer(name + "_se_reduce_conv").filters == channels // 16
            assert isinstance(with_se.get_layer(name + "_se_prelu"), keras.layers.PReLU)


def test_forward_pass_is_finite(with_se):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 112, 112, 3)).astype("float32")
    out = with_se.predict_on_batch(images)
    assert out.shape == (2, 7, 7, 512) and np.all(np.isfinite(out))


def test_registered_as_mobilefacenet_insightface():
    # "mobilefacenet" / "se_mobilefacenet" are the seed's layout (tests/backbones/test_seed_architectures.py)
    from keras_insightface.models import buildin_models

    basic = buildin_models("mobilefacenet_insightface", emb_shape=64, width=0.5)
    assert basic.get_layer("pointwise_conv").filters == 512 and basic.get_layer("stem_dw_conv") is not None
    assert basic.count_params() == mobilefacenet_parameter_count(width=0.5) + 7 * 7 * 512 + 4 * 512 + 512 * 64 + 4 * 64
    se = buildin_models("se_mobilefacenet_insightface", emb_shape=64)
    assert se.get_layer("stack1_block1_se_multiply") is not None
