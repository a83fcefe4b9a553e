"""buildin_models: insightface's iresnet layout, the four embedding heads, normalisation and dtypes."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones import get_backbone, list_backbones
from keras_insightface.models import buildin_models


def iresnet_parameter_count(blocks, width=64):
    """Parameters of insightface's iresnet up to the last stage, counted from its layer list (BN: 4 per channel)."""
    bn = lambda c: 4 * c  # noqa: E731 - gamma, beta, moving mean, moving variance
    total = 3 * 3 * 3 * width + bn(width) + width  # stem conv, BN, PReLU
    inplanes = width
    for stage, count in enumerate(blocks):
        planes = width * 2**stage
        for block in range(count):
            total += bn(inplanes) + 9 * inplanes * planes + bn(planes) + planes + 9 * planes * planes + bn(planes)
            if block == 0:
                total += inplanes * planes + bn(planes)  # 1x1 stride-2 shortcut + BN
            inplanes = planes
    return total


@pytest.mark.parametrize("name,blocks", [("r18", (2, 2, 2, 2)), ("r50", (3, 4, 14, 3)), ("r100", (3, 13, 30, 3))])
def test_iresnet_matches_insightface_layout(name, blocks):
    inputs = keras.Input((112, 112, 3))
    features = get_backbone(name)(inputs, activation="prelu")  # insightface's; the seed's default is ReLU
    backbone = keras.Model(inputs, features)
    assert features.shape == (None, 7, 7, 512)
    assert backbone.count_params() == iresnet_parameter_count(blocks)
    adds = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == sum(blocks)
    prelu = backbone.get_layer("stem_prelu")
    np.testing.assert_allclose(np.asarray(prelu.alpha), 0.25)
    assert backbone.get_layer("stack1_block1_2_conv").strides == (2, 2)  # stride on the second conv, as IBasicBlock
    assert backbone.get_layer("stack1_block1_1_conv").strides == (1, 1)


@pytest.mark.parametrize("output_layer", ["GDC", "E", "GAP", "F"])
def test_embedding_heads(output_layer):
    model = buildin_models("r18_tiny", output_layer=output_layer, emb_shape=32, dropout=0.2, use_bias=True)
    assert model.output_shape == (None, 32)
    assert model.layers[-1].name == "embedding"
    assert model.get_layer("pre_embedding").scale
    names = [layer.name for layer in model.layers]
    assert any(n.startswith(output_layer + "_") for n in names)
    out = model.predict_on_batch(np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)).astype("float32"))
    assert out.shape == (2, 32) and np.all(np.isfinite(out))


def test_gdc_layer_sequence_and_fixed_gamma():
    model = buildin_models("r18_tiny", output_layer="GDC", emb_shape=16, scale=False, dropout=0.1)
    names = [layer.name for layer in model.layers]
    tail = names[names.index("GDC_dw") :]
    assert tail == ["GDC_dw", "GDC_batchnorm", "GDC_dropout", "GDC_conv", "GDC_flatten", "pre_embedding", "embedding"]
    assert model.get_layer("GDC_dw").kernel_size == (4, 4)  # whole 4x4 map of the stride-2-stem tiny model
    assert not model.get_layer("pre_embedding").scale


def test_normalisation_inside_model():
    model = buildin_models("r18_tiny", emb_shape=8)
    normalize = model.get_layer("normalize")
    out = np.asarray(normalize(np.array([[[[0.0, 127.5, 255.0]]]], "float32")))
    np.testing.assert_allclose(out[0, 0, 0], [-127.5 / 128, 0.0, 127.5 / 128])


def test_mixed_precision_keeps_float32_embedding():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = buildin_models("r18_tiny", emb_shape=8)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"


def test_custom_stem_model_and_bad_arguments():
    inputs = keras.Input((112, 112, 3))
    stem = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=16)(inputs), name="toy")
    model = buildin_models(stem, output_layer="E", emb_shape=4)
    assert model.name == "toy" and model.output_shape == (None, 4)
    with pytest.raises(ValueError, match="output_layer"):
        buildin_models("r18_tiny", output_layer="XYZ")
    with pytest.raises(ValueError, match="Unknown backbone 'r999'"):
        buildin_models("r999")
    assert {"r18", "r34", "r50", "r100", "r18_tiny"} <= set(list_backbones())
    with pytest.raises(ValueError, match="Backbone options apply to named backbones only"):
        buildin_models(stem, strides=1)


def test_backbone_options_pass_through():
    model = buildin_models("r18_tiny", emb_shape=8, output_layer="E", stem_strides=1)
    assert model.get_layer("stem_conv").strides == (1, 1) and model.get_layer("E_batchnorm").input.shape[1] == 7


def test_pointwise_conv_and_folded_pre_embedding():
    half = buildin_models("r18_tiny", emb_shape=8, add_pointwise_conv=-1, pointwise_conv_act="prelu")
    assert half.get_layer("pw_conv").filters == 32 and half.get_layer("pw_prelu").shared_axes == [1, 2]
    full = buildin_models("r18_tiny", emb_shape=8, add_pointwise_conv=True)
    assert full.get_layer("pw_conv").filters == 512 and full.get_layer("pw_relu") is not None
    folded = buildin_models("r18_tiny", emb_shape=8, fold_pre_embedding=True, scale=False)
    names = [layer.name for layer in folded.layers]
    assert names[-4:] == ["GDC_conv", "pre_embedding", "GDC_flatten", "embedding"]
    assert folded.get_layer("pre_embedding").input.shape == (None, 1, 1, 8) and not folded.get_layer("pre_embedding").scale
    with pytest.raises(ValueError, match="fold_pre_embedding needs output_layer='GDC'"):
        buildin_models("r18_tiny", output_layer="E", fold_pre_embedding=True)


def test_iresnet_se_max_pool_and_activation_options():
    inputs = keras.Input((112, 112, 3))
    plain = keras.Model(inputs, get_backbone("r18_tiny")(inputs, activation="prelu"))
    se = keras.Model(inputs, get_backbone("r18_tiny")(inputs, use_se=True, use_max_pool=True, activation="swish"))
    names = {layer.name for layer in se.layers}
    assert "stack1_block1_shortcut_pool" in names and "stack1_block1_shortcut_conv" not in names
    assert "stack2_block1_shortcut_conv" in names  # channels change there: still a conv shortcut
    assert "stack1_block2_se_scale" in names and "stem_swish" in names and "stem_prelu" not in names
    se_params = sum(2 * c * max(c // 16, 1) for c, n in zip((8, 16, 32, 64), (2, 2, 2, 2)) for _ in range(n))
    shortcut_conv = 8 * 8 + 4 * 8  # the stage-1 1x1 conv + BN that the max-pool replaces
    prelu = 8 + sum(2 * c for c in (8, 16, 32, 64))  # PReLU alphas that swish does not have
    assert se.count_params() == plain.count_params() + se_params - shortcut_conv - prelu
    assert {"r101", "se_r50"} <= set(list_backbones())
    with pytest.raises(ValueError, match="activation must be 'prelu' or a Keras activation name"):
        get_backbone("r18")(inputs, activation="gelus")


def test_save_model_keeps_the_previous_file_when_the_write_fails(tmp_path, monkeypatch):
    """A full disk mid-save: the previous model stays loadable under its name, no temporary file is left, and the
    error names the file."""
    import errno

    from keras_insightface.errors import DataError
    from keras_insightface.saving import load_model, save_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "best.keras"
    save_model(model, path)
    before = path.read_bytes()

    def full_disk(target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save", full_disk)
    with pytest.raises(DataError, match="best.keras: cannot save the model \\(No space left on device\\)"):
        save_model(model, path)
    assert path.read_bytes() == before and load_model(path).output_shape == (None, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
