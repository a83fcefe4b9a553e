"""MHSAWithPositionEmbedding and its helpers, checked against direct per-position numpy computations."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.layers.mhsa import (  # noqa: E402
    MHSAWithPositionEmbedding,
    absolute_logits,
    rel_to_abs,
    relative_logits,
)


def test_rel_to_abs_reference_example():
    out = np.asarray(rel_to_abs(np.arange(45).reshape(1, 1, 3, 3, 5)))
    assert out.shape == (1, 1, 3, 3, 3)
    np.testing.assert_array_equal(out[0, 0, 0], [[2, 3, 4], [6, 7, 8], [10, 11, 12]])
    np.testing.assert_array_equal(out[0, 0, 1], [[17, 18, 19], [21, 22, 23], [25, 26, 27]])
    np.testing.assert_array_equal(out[0, 0, 2], [[32, 33, 34], [36, 37, 38], [40, 41, 42]])


@pytest.mark.parametrize("width", [1, 2, 5])
def test_rel_to_abs_indexing(width):
    x = np.random.default_rng(width).normal(size=(2, 3, 2, width, 2 * width - 1)).astype("float32")
    out = np.asarray(rel_to_abs(x))
    expected = np.empty((2, 3, 2, width, width), "float32")
    for w in range(width):
        for w2 in range(width):
            expected[..., w, w2] = x[..., w, w2 - w + width - 1]
    np.testing.assert_array_equal(out, expected)


def test_rel_to_abs_rejects_wrong_length():
    with pytest.raises(ValueError, match="2 \\* W - 1"):
        rel_to_abs(np.zeros((1, 1, 3, 3, 4)))


def test_relative_logits_match_per_position_sum():
    rng = np.random.default_rng(0)
    b, n, hh, ww, d = 2, 2, 3, 4, 5
    q = rng.normal(size=(b, n, hh, ww, d)).astype("float32")
    rel_h = rng.normal(size=(2 * hh - 1, d)).astype("float32")
    rel_w = rng.normal(size=(2 * ww - 1, d)).astype("float32")
    out = np.asarray(relative_logits(q, rel_h, rel_w))
    assert out.shape == (b, n, hh, ww, hh, ww)
    expected = np.empty_like(out)
    for h in range(hh):
        for w in range(ww):
            for h2 in range(hh):
                for w2 in range(ww):
                    qv = q[:, :, h, w]
                    expected[:, :, h, w, h2, w2] = qv @ rel_w[w2 - w + ww - 1] + qv @ rel_h[h2 - h + hh - 1]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_absolute_logits_match_per_position_sum():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 2, 2, 3, 4)).astype("float32")
    emb_h, emb_w = rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    out = np.asarray(absolute_logits(q, emb_h, emb_w))
    expected = np.einsum("bnhwd,pqd->bnhwpq", q, emb_h[:, None] + emb_w[None])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def mhsa_numpy(x, layer, relative):
    """The layer's forward pass written out per (query, key) position pair."""
    wq, wk, wv = (np.asarray(v) for v in (layer.query_kernel, layer.key_kernel, layer.value_kernel))
    emb_h, emb_w = np.asarray(layer.emb_h), np.asarray(layer.emb_w)
    b, hh, ww, _ = x.shape
    n, d = layer.num_heads, layer.key_dim
    q = (x @ wq).reshape(b, hh, ww, n, d) / np.sqrt(d)
    k = (x @ wk).reshape(b, hh, ww, n, d)
    v = (x @ wv).reshape(b, hh, ww, n, d)
    logits = np.empty((b, n, hh, ww, hh, ww))
    for h in range(hh):
        for w in range(ww):
            for h2 in range(hh):
                for w2 in range(ww):
                    pos = emb_h[h2 - h + hh - 1] + emb_w[w2 - w + ww - 1] if relative else emb_h[h2] + emb_w[w2]
                    logits[:, :, h, w, h2, w2] = np.einsum("bnd,bnd->bn", q[:, h, w], k[:, h2, w2] + pos)
    logits = logits.reshape(b, n, hh, ww, hh * ww)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bnhwp,bpnd->bhwnd", weights, v.reshape(b, hh * ww, n, d))
    return out.reshape(b, hh, ww, n * d)


@pytest.mark.parametrize("relative", [True, False])
def test_mhsa_matches_numpy_reference(relative):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 8)).astype("float32")
    layer = MHSAWithPositionEmbedding(num_heads=2, relative=relative)
    out = np.asarray(layer(x))
    assert out.shape == (2, 3, 4, 8) and layer.key_dim == 4
    prefix = "rel" if relative else "abs"
    shapes = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    if relative:
        expected = {"query_kernel": (8, 8), "key_kernel": (8, 8), "value_kernel": (8, 8)}
        assert shapes == {**expected, "rel_emb_h": (5, 4), "rel_emb_w": (7, 4)}
    else:
        assert shapes[f"{prefix}_emb_h"] == (3, 4) and shapes[f"{prefix}_emb_w"] == (4, 4)
    layer.emb_h.assign(rng.normal(size=layer.emb_h.shape).astype("float32"))  # make positions matter
    layer.emb_w.assign(rng.normal(size=layer.emb_w.shape).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x)), mhsa_numpy(x, layer, relative), rtol=1e-4, atol=1e-5)


def test_attention_weights_sum_to_one_and_average_values():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    layer = MHSAWithPositionEmbedding(num_heads=4, key_dim=2)
    weights = np.asarray(layer.attention_weights(x))
    assert weights.shape == (2, 4, 9, 9)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    # With an identity value projection each output is a convex combination of the inputs of its head.
    layer.value_kernel.assign(np.eye(8, dtype="float32"))
    out = np.asarray(layer(x)).reshape(2, 9, 4, 2)
    expected = np.einsum("bnqk,bknd->bqnd", weights, x.reshape(2, 9, 4, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_mhsa_in_functional_model_and_config_round_trip():
    inputs = keras.Input((4, 4, 16))
    layer = MHSAWithPositionEmbedding(num_heads=4, key_dim=8, relative=False, name="attn")
    outputs = layer(inputs)
    assert outputs.shape == (None, 4, 4, 32)
    clone = MHSAWithPositionEmbedding.from_config(layer.get_config())
    x = np.random.default_rng(4).normal(size=(1, 4, 4, 16)).astype("float32")
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, MHSAWithPositionEmbedding) and restored.relative is False


@pytest.mark.parametrize("seed", [None, 7])
def test_mhsa_weights_start_different(seed):
    # Keras initializers repeat their values on every call; q/k/v and the two embeddings must not.
    initializer = keras.initializers.GlorotUniform(seed=seed)
    layer = MHSAWithPositionEmbedding(num_heads=2, kernel_initializer=initializer)
    layer.build((None, 3, 3, 8))
    kernels = [np.asarray(v) for v in (layer.query_kernel, layer.key_kernel, layer.value_kernel)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    assert not np.allclose(np.asarray(layer.emb_h), np.asarray(layer.emb_w))
    np.testing.assert_allclose(np.asarray(layer.emb_h).std(), 4**-0.5, rtol=0.6)


def test_mhsa_argument_errors():
    with pytest.raises(ValueError, match="num_heads=0"):
        MHSAWithPositionEmbedding(num_heads=0)
    with pytest.raises(ValueError, match="key_dim=0"):
        MHSAWithPositionEmbedding(key_dim=0)
    with pytest.raises(ValueError, match="channels=6"):
        MHSAWithPositionEmbedding(num_heads=4)(keras.Input((3, 3, 6)))
    with pytest.raises(ValueError, match="static H, W"):
        MHSAWithPositionEmbedding()(keras.Input((None, None, 8)))
