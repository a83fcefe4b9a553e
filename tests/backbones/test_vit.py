"""Face ViT (arcface_torch vit_t / vit_s / vit_b): shapes, an independent parameter count, masking, drop path."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones import vit as vit_module
from keras_insightface.backbones.vit import ViTAttention, vit, vit_t
from keras_insightface.layers.stochastic_depth import StochasticDepth


def vit_parameter_count(embed_dim, depth, patch_size=9, mlp_ratio=4, num_tokens=144, mask_token=True):
    """Count from the arcface_torch layout: patch conv (+bias), position embedding, per block two LayerNorms
    (gamma, beta), qkv Linear without bias, proj Linear with bias, MLP fc1/fc2 with biases; final LayerNorm;
    the training mask token."""
    d, hidden = embed_dim, int(embed_dim * mlp_ratio)
    patch = patch_size * patch_size * 3 * d + d
    block = 2 * 2 * d + 3 * d * d + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    return patch + num_tokens * d + depth * block + 2 * d + (d if mask_token else 0)


@pytest.fixture(scope="module")
def vit_t_model():
    inputs = keras.Input((112, 112, 3))
    return keras.Model(inputs, vit_t(inputs))


def test_vit_t_shape_and_parameter_count(vit_t_model):
    assert vit_t_model.output_shape == (None, 12, 12, 256)
    assert vit_t_model.count_params() == vit_parameter_count(256, 12) == 9_568_000
    assert vit_t_model.get_layer("pos_embed").embedding.shape == (1, 144, 256)


def test_vit_t_forward_inference_and_training(vit_t_model):
    images = np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32")
    out = vit_t_model.predict_on_batch(images)
    assert out.shape == (2, 12, 12, 256) and np.all(np.isfinite(out))
    trained = np.asarray(vit_t_model(images, training=True)).reshape(2, 144, 256)
    assert np.all(np.isfinite(trained))
    mask_token = vit_t_model.get_layer("mask_token").mask_token.numpy()[0, 0]
    masked = np.all(trained == mask_token, axis=-1).sum(axis=1)
    np.testing.assert_array_equal(masked, [144 - int(144 * 0.9)] * 2)  # 15 tokens replaced per sample


def test_drop_path_rates_increase_linearly(vit_t_model):
    for suffix in ("_drop_path1", "_drop_path2"):
        rates = [layer.drop_rate for layer in vit_t_model.layers if layer.name.endswith(suffix)]
        assert isinstance(vit_t_model.get_layer("block1" + suffix), StochasticDepth)
        np.testing.assert_allclose(rates, np.linspace(0.0, 0.1, 12))


def test_presets_use_arcface_torch_configs(monkeypatch):
    monkeypatch.setattr(vit_module, "vit", lambda inputs, **kwargs: kwargs)
    expected = {"vit_t": (256, 12, 8), "vit_s": (512, 12, 8), "vit_b": (512, 24, 8)}
    for name, (embed_dim, depth, num_heads) in expected.items():
        config = getattr(vit_module, name)(None)
        assert (config["embed_dim"], config["depth"], config["num_heads"]) == (embed_dim, depth, num_heads)
    assert vit_module.vit_s(None, drop_path_rate=0.05)["drop_path_rate"] == 0.05


def test_attention_key_mask_equals_attention_on_kept_tokens():
    rng = np.random.default_rng(1)
    qkv = rng.normal(size=(1, 6, 3 * 8)).astype("float32")
    keep = np.array([[True, False, True, True, False, True]])
    layer = ViTAttention(2)
    masked = np.asarray(layer(qkv, keep_mask=keep, training=True))[0, keep[0]]
    subset = np.asarray(layer(qkv[:, keep[0]], training=True))[0]
    np.testing.assert_allclose(masked, subset, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer(qkv, keep_mask=keep)), np.asarray(layer(qkv)))  # inference


def test_small_vit_without_masking_round_trips():
    inputs = keras.Input((112, 112, 3))
    model = keras.Model(inputs, vit(inputs, embed_dim=16, depth=1, num_heads=2, mask_ratio=0.0, mlp_activation="gelu"))
    assert model.count_params() == vit_parameter_count(16, 1, mask_token=False)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(2).normal(size=(2, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(clone.predict_on_batch(images), model.predict_on_batch(images), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"embed_dim": 30, "num_heads": 8}, "embed_dim=30"),
        ({"depth": 0}, "depth=0"),
        ({"drop_path_rate": 1.0}, "drop_path_rate=1.0"),
        ({"mask_ratio": -0.1}, "mask_ratio=-0.1"),
        ({"patch_size": 200}, "patch_size=200"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vit(keras.Input((112, 112, 3)), **kwargs)
