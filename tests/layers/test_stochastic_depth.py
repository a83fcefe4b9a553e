"""StochasticDepth: exact add at inference and for rate 0, per-sample unbiased drop in training."""

import keras
import numpy as np
import pytest

from keras_insightface.layers.stochastic_depth import StochasticDepth


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32")


def test_inference_is_exact_add():
    shortcut, residual = _pair((4, 3, 3, 2))
    layer = StochasticDepth(0.5)
    np.testing.assert_array_equal(np.asarray(layer([shortcut, residual])), shortcut + residual)
    np.testing.assert_array_equal(np.asarray(layer([shortcut, residual], training=False)), shortcut + residual)


def test_rate_zero_is_exact_in_training():
    shortcut, residual = _pair((4, 5, 6))
    out = StochasticDepth(0.0)([shortcut, residual], training=True)
    np.testing.assert_array_equal(np.asarray(out), shortcut + residual)


def test_training_drops_whole_samples_and_is_unbiased():
    rate, batch = 0.3, 20000
    shortcut = np.zeros((batch, 2, 3), "float32")
    residual = np.ones((batch, 2, 3), "float32")
    out = np.asarray(StochasticDepth(rate, seed=1)([shortcut, residual], training=True))
    per_sample = out.reshape(batch, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one mask value per sample
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
    assert abs(per_sample.mean() - 1.0) < 0.03  # expectation = shortcut + residual
    assert abs((per_sample[:, 0] == 0).mean() - rate) < 0.02


def test_config_round_trip_and_bad_rate():
    layer = StochasticDepth(0.2, seed=3, name="sd")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, StochasticDepth) and clone.drop_rate == 0.2 and clone.seed == 3
    with pytest.raises(ValueError, match="drop_rate=1.0"):
        StochasticDepth(1.0)
