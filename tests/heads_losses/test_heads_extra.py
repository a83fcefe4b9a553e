"""EuclideanDense and NormDenseVPL against numpy; VPL memory over several steps and through save/load."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_insightface.heads.euclidean_dense import EuclideanDense  # noqa: E402
from keras_insightface.heads.vpl import NormDenseVPL  # noqa: E402

RNG = np.random.default_rng(0)


def normalize(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def test_euclidean_dense_is_minus_half_squared_distance_plus_row_constant():
    x = RNG.normal(size=(5, 6)).astype("float32")
    layer = EuclideanDense(4)
    out = np.asarray(layer(x))
    kernel = np.asarray(layer.kernel).astype("float64")
    distances = ((x[:, :, None].astype("float64") - kernel[None]) ** 2).sum(axis=1)
    np.testing.assert_allclose(out, -distances / 2, rtol=1e-5, atol=1e-5)


def simulate_vpl(kernel, batches, vpl_lambda, start_iters, allowed_delta):
    """The paper's procedure in numpy: mix memories of recently seen classes, then store this batch's features."""
    units = kernel.shape[1]
    memory, memory_iters, outputs = np.zeros((units, kernel.shape[0])), np.zeros(units, int), []
    for step, (x, labels) in enumerate(batches, start=1):
        x = normalize(x.astype("float64"), 1)
        fresh = (step > start_iters) & (memory_iters > 0) & (step - memory_iters <= allowed_delta)
        mix = np.where(fresh, vpl_lambda, 0.0)
        centers = normalize(normalize(kernel, 0) * (1 - mix) + memory.T * mix, 0)
        outputs.append(x @ centers)
        memory[labels] = x
        memory_iters[labels] = step
    return outputs, memory, memory_iters


def test_vpl_mixes_recent_class_memories_after_start_iters(tmp_path):
    head = NormDenseVPL(6, vpl_lambda=0.3, start_iters=2, allowed_delta=2)
    batches = [(RNG.normal(size=(4, 5)).astype("float32"), RNG.choice(6, 4, replace=False)) for _ in range(6)]
    head.build([(None, 5), (None,)])
    kernel = np.asarray(head.kernel).astype("float64")
    expected, memory, memory_iters = simulate_vpl(kernel, batches, 0.3, 2, 2)
    for (x, labels), want in zip(batches, expected):
        np.testing.assert_allclose(np.asarray(head([x, labels], training=True)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(head.memory), memory, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(head.memory_iters), memory_iters)
    assert int(head.iters) == 6
    # mixing changed something after start_iters, and inference neither mixes stale memories nor updates
    plain = normalize(batches[-1][0].astype("float64"), 1) @ normalize(kernel, 0)
    assert np.abs(expected[-1] - plain).max() > 1e-3
    before = np.asarray(head.memory).copy()
    head([batches[0][0], batches[0][1]], training=False)
    np.testing.assert_array_equal(np.asarray(head.memory), before)
    # memory and counters are model variables: they survive save / load
    inputs = [keras.Input((5,)), keras.Input((), dtype="int32")]
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "vpl.keras")
    loaded = keras.saving.load_model(tmp_path / "vpl.keras").layers[-1]
    np.testing.assert_array_equal(np.asarray(loaded.memory_iters), memory_iters)
    assert int(loaded.iters) == 6
