"""BoTNet: layer layout, output shapes and parameter counts counted independently from the architecture."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.backbones.botnet import botnet  # noqa: E402
from keras_insightface.layers.mhsa import MHSAWithPositionEmbedding  # noqa: E402


def botnet_parameter_count(blocks, last_stage_map, strides=1, relative=True, bn_stats=True, classes=0):
    """Parameters of a BoTNet, from the paper's layer list.

    ``last_stage_map`` is the side of the map entering the last stage; BN counts gamma/beta (+ the two
    moving statistics when ``bn_stats``); ``classes`` adds a dense classifier with bias.
    """
    bn = (lambda c: 4 * c) if bn_stats else (lambda c: 2 * c)  # noqa: E731
    total = 7 * 7 * 3 * 64 + bn(64)  # stem conv (no bias) + BN
    inplanes = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        out = 4 * width
        for block in range(count):
            if block == 0:
                total += inplanes * out + bn(out)  # projection shortcut
            total += inplanes * width + bn(width)  # 1x1 reduce
            if stage == 3:  # q, k, v 1x1 projections (no bias) + position embeddings of 4 heads x 128
                side = last_stage_map if block == 0 or strides == 1 else -(-last_stage_map // 2)
                key_dim = width // 4
                total += 3 * width * width + key_dim * (2 * (2 * side - 1) if relative else 2 * side)
            else:
                total += 9 * width * width  # 3x3 conv
            total += bn(width) + width * out + bn(out)  # 1x1 expand
            inplanes = out
    return total + classes * (2048 + 1)


def test_parameter_formula_matches_the_paper():
    # The BoTNet paper lists BoT50 at 20.8M parameters (224x224 input, 1000-class head); counted as the
    # paper's tables count (trainable only), this gives 20,859,176, 20.8M truncated. Swapping the last
    # stage back to 3x3 convs must give ResNet-50's count, torchvision's 25,557,032.
    bot50 = botnet_parameter_count((3, 4, 6, 3), 14, bn_stats=False, classes=1000)
    assert bot50 == 20_859_176 and int(bot50 / 1e5) == 208
    resnet50_3x3 = 3 * (9 - 3) * 512 * 512 - 3 * 128 * 2 * 27  # last stage back to 3x3 convs
    assert bot50 + resnet50_3x3 == 25_557_032


@pytest.fixture(scope="module")
def botnet50():
    inputs = keras.Input((112, 112, 3))
    return keras.Model(inputs, botnet(inputs, depth=50))


def test_botnet50_layout_and_parameters(botnet50):
    assert botnet50.output_shape == (None, 7, 7, 2048)
    assert botnet50.count_params() == botnet_parameter_count((3, 4, 6, 3), 7) == 18_852_544
    names = [layer.name for layer in botnet50.layers]
    assert len(names) == len(set(names))
    assert len([layer for layer in botnet50.layers if isinstance(layer, keras.layers.Add)]) == 16
    mhsa = [layer for layer in botnet50.layers if isinstance(layer, MHSAWithPositionEmbedding)]
    assert [layer.name for layer in mhsa] == [f"stack4_block{i}_2_mhsa" for i in (1, 2, 3)]
    assert all(layer.num_heads == 4 and layer.key_dim == 128 and layer.relative for layer in mhsa)
    assert tuple(mhsa[0].emb_h.shape) == (13, 128)
    assert not any(name.startswith("stack4") and name.endswith("_2_conv") for name in names)
    assert botnet50.get_layer("stack3_block1_2_conv").strides == (2, 2)
    assert botnet50.get_layer("stack4_block1_2_mhsa").output.shape == (None, 7, 7, 512)
    assert "stack4_block1_shortcut_relu" in names and "stack3_block1_shortcut_relu" not in names
    gamma = botnet50.get_layer("stack4_block3_3_bn").gamma
    np.testing.assert_array_equal(np.asarray(gamma), 0.0)  # zero-init residual branch, as the reference


def test_botnet50_forward_is_finite(botnet50):
    for layer in botnet50.layers:  # wake the residual branches so the attention path reaches the output
        if layer.name.endswith("_3_bn"):
            layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))
    images = np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32")
    features = np.asarray(botnet50(images, training=False))
    assert features.shape == (2, 7, 7, 2048)
    assert np.isfinite(features).all() and features.std() > 0
    assert not np.allclose(features[0], features[1])


def test_botnet50_stride2_absolute_plain_shortcut():
    inputs = keras.Input((112, 112, 3))
    model = keras.Model(inputs, botnet(inputs, strides=2, relative=False, shortcut_act_none=True))
    assert model.output_shape == (None, 4, 4, 2048)
    assert model.count_params() == botnet_parameter_count((3, 4, 6, 3), 7, strides=2, relative=False)
    assert model.get_layer("stack4_block1_2_pool").output.shape == (None, 4, 4, 512)
    assert tuple(model.get_layer("stack4_block2_2_mhsa").emb_h.shape) == (4, 128)
    assert not any("shortcut_relu" in layer.name for layer in model.layers)


def test_botnet_argument_errors():
    inputs = keras.Input((112, 112, 3))
    with pytest.raises(ValueError, match="depth=34"):
        botnet(inputs, depth=34)
    with pytest.raises(ValueError, match="strides=3"):
        botnet(inputs, strides=3)
    with pytest.raises(ValueError, match="static input"):
        botnet(keras.Input((None, None, 3)))
