"""Optimizers against hand-written numpy updates: scheduled decoupled decay, Lookahead, clipping, accumulation."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.training.optimizers import L2SGD, SGDW, AdamW, Lookahead  # noqa: E402
from keras_insightface.training.schedules import WarmupCosine  # noqa: E402


def constant(shape, seed):
    """A read-only float32 normal sample, so that no test can change what the others see."""
    array = np.random.default_rng(seed).normal(size=shape).astype("float32")
    array.flags.writeable = False
    return array


X, Y = constant((24, 3), 0), constant((24, 2), 1)
KERNEL0, BIAS0 = constant((3, 2), 2), constant((2,), 3)
GRADS = tuple((constant((3, 2), 10 + step), constant((2,), 20 + step)) for step in range(4))


def halving():
    """LR 0.1, 0.05, 0.025, ...: the decay must halve with it."""
    return keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)


def variables():
    return [keras.Variable(KERNEL0, name="kernel"), keras.Variable(BIAS0, name="bias")]


def apply_steps(optimizer, variables_, grads=GRADS):
    for grad in grads:
        optimizer.apply(list(grad), variables_)
    return [np.asarray(v) for v in variables_]


def tiny_model(optimizer, bias=True):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=bias)])
    model.set_weights([KERNEL0, BIAS0] if bias else [KERNEL0])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def mse_grads(kernel, bias, x, y):
    """Gradients of keras's mean squared error (mean over batch and outputs) of ``x @ kernel + bias``."""
    error = 2 * (x @ kernel + bias - y) / y.size
    return x.T @ error, error.sum(0)


def test_sgdw_decay_follows_the_schedule_and_skips_excluded():
    optimizer = SGDW(halving(), momentum=0.9, weight_decay=0.05)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    got = apply_steps(optimizer, variables())
    weights, velocities = [KERNEL0.copy(), BIAS0.copy()], [0, 0]
    for step, grads in enumerate(GRADS):
        lr = 0.1 * 0.5**step
        weights[0] = weights[0] - 0.05 * lr / 0.1 * weights[0]  # decoupled, scaled like the LR; bias excluded
        for i, grad in enumerate(grads):
            velocities[i] = 0.9 * velocities[i] - lr * grad
            weights[i] = weights[i] + velocities[i]
    for value, expected in zip(got, weights):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_sgdw_without_decay_is_keras_sgd():
    plain = apply_steps(keras.optimizers.SGD(0.1, momentum=0.9), variables())
    for value, expected in zip(apply_steps(SGDW(0.1, momentum=0.9, weight_decay=0.0), variables()), plain):
        np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_adamw_decay_follows_the_schedule_and_skips_excluded():
    kernel, bias = variables()
    optimizer = AdamW(halving(), weight_decay=0.05)
    optimizer.exclude_from_weight_decay(var_list=[bias])
    got = apply_steps(optimizer, [kernel, bias])
    weights, m, v = [KERNEL0.copy(), BIAS0.copy()], [0, 0], [0, 0]
    for step, grads in enumerate(GRADS):
        lr = 0.1 * 0.5**step
        weights[0] = weights[0] - 0.05 * lr / 0.1 * weights[0]
        alpha = lr * np.sqrt(1 - 0.999 ** (step + 1)) / (1 - 0.9 ** (step + 1))
        for i, grad in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad**2
            weights[i] = weights[i] - alpha * m[i] / (np.sqrt(v[i]) + 1e-7)
    for value, expected in zip(got, weights):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_lr_base_comes_from_the_schedule_or_the_argument():
    assert SGDW(WarmupCosine(0.2, total_steps=10, warmup_steps=2)).lr_base == 0.2  # schedule(0) is 0 in warmup
    assert AdamW(halving()).lr_base == 0.1
    assert SGDW(0.3, lr_base=0.6).lr_base == 0.6
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.1, 0.01])
    with pytest.raises(ValueError, match="pass lr_base explicitly"):
        SGDW(piecewise)
    assert SGDW(piecewise, lr_base=0.1).lr_base == 0.1


def test_sgdw_leaves_unsampled_classes_untouched():
    rng = np.random.default_rng(4)
    start = rng.normal(size=(3, 5)).astype("float32")
    kernel = keras.Variable(start, name="class_kernel")
    kernel.sparse_class_axis = 1  # as PartialFC marks its kernel
    optimizer = SGDW(0.1, momentum=0.9, weight_decay=0.05)
    weights, velocity = start.copy(), np.zeros_like(start)
    for sampled in ([0, 2], [2, 4], [0, 2]):
        grad = np.zeros_like(start)
        grad[:, sampled] = rng.normal(size=(3, len(sampled)))
        optimizer.apply([grad], [kernel])
        weights[:, sampled] -= 0.05 * weights[:, sampled]
        velocity[:, sampled] = 0.9 * velocity[:, sampled] - 0.1 * grad[:, sampled]
        weights[:, sampled] += velocity[:, sampled]
    np.testing.assert_allclose(np.asarray(kernel), weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(kernel)[:, [1, 3]], start[:, [1, 3]])  # no decay, no momentum drift
    np.testing.assert_array_equal(np.asarray(optimizer.momentums[0])[:, [1, 3]], 0)


def test_sgdw_round_trips_through_its_config():
    optimizer = SGDW(WarmupCosine(0.2, total_steps=10, warmup_steps=2), momentum=0.8, weight_decay=1e-3)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is SGDW and restored.get_config() == optimizer.get_config()
    assert restored.lr_base == 0.2 and restored.momentum == 0.8


def lookahead_numpy(sync_period, steps, batch, alpha=0.5, lr=0.1, momentum=0.9):
    fast, velocity = [KERNEL0.copy(), BIAS0.copy()], [0, 0]
    slow = [w.copy() for w in fast]
    for step in range(steps):
        x, y = X[step * batch:(step + 1) * batch], Y[step * batch:(step + 1) * batch]
        for i, grad in enumerate(mse_grads(*fast, x, y)):
            velocity[i] = momentum * velocity[i] - lr * grad
            fast[i] = fast[i] + velocity[i]
        if (step + 1) % sync_period == 0:
            slow = [s + alpha * (f - s) for f, s in zip(fast, slow)]
            fast = [s.copy() for s in slow]
    return fast, slow


@pytest.mark.parametrize("sync_period", [2, 3])
def test_lookahead_matches_numpy_inside_jitted_fit(sync_period):
    optimizer = Lookahead(keras.optimizers.SGD(0.1, momentum=0.9), sync_period=sync_period, slow_step_size=0.5)
    model = tiny_model(optimizer)
    model.fit(X[:20], Y[:20], batch_size=4, epochs=1, shuffle=False, verbose=0)  # 5 steps: not a multiple
    assert model.jit_compile
    fast, slow = lookahead_numpy(sync_period, steps=5, batch=4)
    for value, expected in zip(model.get_weights(), fast):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    for value, expected in zip(optimizer.slow_weights, slow):
        np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations) == 5


def test_lookahead_counts_accumulated_updates():
    inner = keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=2)
    model = tiny_model(Lookahead(inner, sync_period=2))
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # 6 micro-steps = 3 updates of batch 8
    fast, _ = lookahead_numpy(2, steps=3, batch=8)
    for value, expected in zip(model.get_weights(), fast):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_lookahead_exposes_the_inner_learning_rate():
    optimizer = Lookahead(L2SGD(0.1))
    model = tiny_model(optimizer)
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)
    model.fit(X, Y, batch_size=12, epochs=2, shuffle=False, verbose=0, callbacks=[schedule])
    assert np.isclose(float(optimizer.optimizer.learning_rate), 0.05)  # the callback's setting reached the inner one
    assert np.isclose(float(optimizer.learning_rate), 0.05) and int(optimizer.iterations) == 4
    assert np.isclose(float(Lookahead(SGDW(halving())).learning_rate), 0.1)  # a schedule reads as its current value


def test_lookahead_round_trips_config_and_saved_model(tmp_path):
    optimizer = Lookahead(L2SGD(WarmupCosine(0.1, total_steps=10, warmup_steps=2), l2=1e-3), sync_period=3,
                          slow_step_size=0.7)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is Lookahead and type(restored.optimizer) is L2SGD
    assert restored.get_config() == optimizer.get_config()
    assert (restored.sync_period, restored.slow_step_size, restored.optimizer.l2) == (3, 0.7, 1e-3)
    model = tiny_model(optimizer)
    model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "lookahead.keras")
    loaded = keras.saving.load_model(tmp_path / "lookahead.keras")
    assert type(loaded.optimizer) is Lookahead
    for value, expected in zip(loaded.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))


@pytest.mark.parametrize("make", [lambda **kw: L2SGD(0.1, momentum=0.9, l2=0.05, **kw),
                                  lambda **kw: SGDW(0.1, momentum=0.9, weight_decay=0.05, **kw)],
                         ids=["L2SGD", "SGDW"])
@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_keras_clipping_clips_the_loss_gradient_only(make, clip):
    got = apply_steps(make(**{clip: 0.5}), variables(), GRADS[:3])
    weights, velocities = [KERNEL0.copy(), BIAS0.copy()], [0, 0]
    l2sgd = isinstance(make(), L2SGD)
    for grads in GRADS[:3]:
        if clip == "clipnorm":
            grads = [g * 0.5 / max(np.linalg.norm(g), 0.5) for g in grads]
        else:
            norm = np.sqrt(sum(np.sum(g**2) for g in grads))
            grads = [g * 0.5 / max(norm, 0.5) for g in grads]
        for i, grad in enumerate(grads):
            if l2sgd:
                grad = grad + 0.05 * weights[i]  # L2 is added after clipping, as in PyTorch
            else:
                weights[i] = weights[i] - 0.05 * weights[i]
            velocities[i] = 0.9 * velocities[i] - 0.1 * grad
            weights[i] = weights[i] + velocities[i]
    for value, expected in zip(got, weights):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda **kw: L2SGD(0.1, momentum=0.9, l2=0.05, **kw),
                                  lambda **kw: SGDW(0.1, momentum=0.9, weight_decay=0.05, **kw)],
                         ids=["L2SGD", "SGDW"])
def test_gradient_accumulation_equals_one_large_batch(make):
    accumulated = tiny_model(make(gradient_accumulation_steps=3))
    accumulated.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # 6 micro-steps, 2 updates
    large = tiny_model(make())
    large.fit(X, Y, batch_size=12, epochs=1, shuffle=False, verbose=0)
    assert int(accumulated.optimizer.iterations) == int(large.optimizer.iterations) == 2
    for value, expected in zip(accumulated.get_weights(), large.get_weights()):
        np.testing.assert_allclose(value, expected, atol=1e-5)
    assert not np.allclose(large.get_weights()[0], KERNEL0)


def test_gradient_accumulation_applies_l2_once_per_update():
    model = tiny_model(L2SGD(0.1, momentum=0.9, l2=0.05, gradient_accumulation_steps=3))
    for start in range(0, 12, 4):
        model.train_on_batch(X[start:start + 4], Y[start:start + 4])
    grads = mse_grads(KERNEL0, BIAS0, X[:12], Y[:12])
    expected = [w - 0.1 * (g + 0.05 * w) for w, g in zip([KERNEL0, BIAS0], grads)]
    for value, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(value, want, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda factors: L2SGD(0.1, momentum=0.9, l2=0.05, decay_factors=factors),
    lambda factors: SGDW(0.1, momentum=0.9, weight_decay=0.05, decay_factors=factors),
    lambda factors: AdamW(0.1, weight_decay=0.05, decay_factors=factors),
])
def test_decay_factors_scale_the_decay_per_variable(make):
    """output_weight_decay: factor 0 on the kernel = that variable updates as without decay; 3 = three times
    the decay (a step from the same gradient differs by exactly 3x the decay term of factor 1)."""
    undecayed = apply_steps(make({"kernel": 0.0, "bias": 0.0}), variables(), GRADS[:1])
    plain = apply_steps(make({}), variables(), GRADS[:1])
    triple = apply_steps(make({"kernel": 3.0}), variables(), GRADS[:1])
    no_kernel_decay = apply_steps(make({"kernel": 0.0}), variables(), GRADS[:1])
    np.testing.assert_allclose(no_kernel_decay[0], undecayed[0], rtol=1e-6)  # kernel: as if no decay
    np.testing.assert_allclose(no_kernel_decay[1], plain[1], rtol=1e-6)  # bias: decayed as usual
    assert not np.allclose(plain[0], undecayed[0])
    # one step is linear in the decay term (coupled: through the gradient; decoupled: before the update)
    np.testing.assert_allclose(triple[0] - undecayed[0], 3 * (plain[0] - undecayed[0]), rtol=1e-4, atol=1e-7)
    assert make({"kernel": 0.5}).get_config()["decay_factors"] == {"kernel": 0.5}
