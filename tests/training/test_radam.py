"""RectifiedAdam and Ranger against PyTorch's RAdam and a float64 numpy transcription of the paper's Algorithm 2
with TF-Addons' conventions (epsilon added to sqrt(v_hat), rectified where rho_t >= 5, decay ``d * lr * w``)."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import math  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.training.optimizers import Lookahead, RectifiedAdam, named_optimizer  # noqa: E402

STEPS = 10  # with beta_2 = 0.999, rho_t = 1.0, 2.0, 3.0, 4.0, 5.0 (< 5) at steps 1-5, then 5.99, 6.99, ...


def constant(shape, seed):
    """A read-only float32 normal sample, so that no test can change what the others see."""
    array = np.random.default_rng(seed).normal(size=shape).astype("float32")
    array.flags.writeable = False
    return array


X, Y = constant((24, 3), 0), constant((24, 2), 1)
KERNEL0, BIAS0 = constant((3, 2), 2), constant((2,), 3)
GRADS = tuple((constant((3, 2), 10 + step), constant((2,), 30 + step)) for step in range(STEPS))


class Reference:
    """One variable under RAdam, float64: the paper's Algorithm 2 with TF-Addons' epsilon, threshold and decay.

    ``decay`` is the fraction of the weight removed per unit of learning rate (TF-Addons' ``weight_decay``).
    """

    def __init__(self, weight, beta_1=0.9, beta_2=0.999, epsilon=1e-7, decay=0.0, amsgrad=False, threshold=5.0):
        self.weight, self.m, self.v, self.v_max, self.t = np.array(weight, "float64"), 0.0, 0.0, 0.0, 0
        self.beta_1, self.beta_2, self.epsilon, self.decay = beta_1, beta_2, epsilon, decay
        self.amsgrad, self.threshold = amsgrad, threshold
        self.rectified = []

    def step(self, gradient, lr):
        self.t += 1
        t, b1, b2 = self.t, self.beta_1, self.beta_2
        self.m = b1 * self.m + (1 - b1) * gradient
        self.v = b2 * self.v + (1 - b2) * np.square(gradient)
        self.v_max = np.maximum(self.v_max, self.v)
        m_hat = self.m / (1 - b1**t)
        v_hat = (self.v_max if self.amsgrad else self.v) / (1 - b2**t)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        self.rectified.append(rho >= self.threshold)
        if rho >= self.threshold:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            direction = r * m_hat / (np.sqrt(v_hat) + self.epsilon)
        else:
            direction = m_hat
        self.weight = self.weight - lr * direction - lr * self.decay * self.weight
        return self.weight


def tf_addons_lr(lr, t, total_steps, warmup_proportion, min_lr):
    """TF-Addons' built-in schedule at (1-based) step ``t``: linear warmup, then linear decay to ``min_lr``."""
    warmup = total_steps * warmup_proportion
    decay_steps = max(total_steps - warmup, 1)
    if t <= warmup:
        return lr * t / warmup
    return lr + (min_lr - lr) / decay_steps * min(t - warmup, decay_steps)


def variables():
    return [keras.Variable(KERNEL0, name="kernel"), keras.Variable(BIAS0, name="bias")]


def run(optimizer, steps=STEPS):
    """The weights after each step of ``optimizer`` on ``GRADS``."""
    variables_ = variables()
    history = []
    for grads in GRADS[:steps]:
        optimizer.apply(list(grads), variables_)
        history.append([np.asarray(v) for v in variables_])
    return history


def run_reference(lrs, steps=STEPS, decays=(0.0, 0.0), **options):
    references = [Reference(KERNEL0, decay=decays[0], **options), Reference(BIAS0, decay=decays[1], **options)]
    history = [[ref.step(grad, lr) for ref, grad in zip(references, grads)] for grads, lr in zip(GRADS[:steps], lrs)]
    return history, references[0].rectified


def assert_histories_close(got, want, rtol=1e-4, atol=2e-6):
    """The moves from the initial weights agree (the weights themselves are ~100 times larger than the moves)."""
    for step, (got_step, want_step) in enumerate(zip(got, want), 1):
        for got_var, want_var, start in zip(got_step, want_step, (KERNEL0, BIAS0)):
            np.testing.assert_allclose(got_var - start, want_var - start, rtol=rtol, atol=atol, err_msg=f"step {step}")


def torch_history(lr, eps, weight_decay=0.0, tf_addons_epsilon=True):
    """PyTorch's RAdam on ``GRADS``. Its ``eps`` is added to ``sqrt(v)`` before the bias correction, so TF-Addons'
    ``epsilon`` is PyTorch's ``eps * sqrt(1 - beta_2^t)``: set per step where ``tf_addons_epsilon``."""
    torch = pytest.importorskip("torch", reason="PyTorch (the compat extra) is the independent reference")
    params = [torch.nn.Parameter(torch.tensor(np.array(KERNEL0))), torch.nn.Parameter(torch.tensor(np.array(BIAS0)))]
    optimizer = torch.optim.RAdam(params, lr=lr, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True)
    history = []
    for step, grads in enumerate(GRADS, 1):
        if tf_addons_epsilon:
            optimizer.param_groups[0]["eps"] = eps * math.sqrt(1 - 0.999**step)
        for param, grad in zip(params, grads):
            param.grad = torch.tensor(np.array(grad))
        optimizer.step()
        history.append([param.detach().numpy().copy() for param in params])
    return history


def test_matches_torch_radam_before_and_after_rectification():
    """PyTorch's threshold is rho_t > 5, TF-Addons' rho_t >= 5: the same steps here (rho_5 = 4.996, rho_6 = 5.994)."""
    got = run(RectifiedAdam(0.01))
    assert_histories_close(got, torch_history(0.01, 1e-7))
    _, rectified = run_reference([0.01] * STEPS)
    assert rectified == [False] * 5 + [True] * (STEPS - 5)
    np.testing.assert_allclose(got[0][0], KERNEL0 - 0.01 * GRADS[0][0], rtol=1e-6)  # step 1: lr * m_hat = lr * g


def test_first_rectified_steps_are_float64_accurate():
    """The rectifier is small and steep at step 6 (r_6 = 0.026): computing rho_t naively in float32 moves it by
    ~0.1 %; from zero weights the float32 moves of steps 6 to 8 resolve that against the float64 transcription."""
    variable, reference = keras.Variable(np.zeros_like(KERNEL0)), Reference(np.zeros_like(KERNEL0))
    optimizer = RectifiedAdam(0.01)
    for step, (gradient, _) in enumerate(GRADS[:8], 1):
        before, want_before = np.asarray(variable), reference.weight
        optimizer.apply([gradient], [variable])
        reference.step(gradient, 0.01)
        if step >= 6:
            np.testing.assert_allclose(np.asarray(variable) - before, reference.weight - want_before, rtol=2e-5,
                                       err_msg=f"step {step}")


def test_weight_decay_matches_torch_decoupled_weight_decay():
    """TF-Addons' / PyTorch's decoupled ``weight_decay=d`` removes ``d * lr * w``: ``d * lr_base`` here."""
    got = run(RectifiedAdam(0.01, weight_decay=0.5 * 0.01))  # lr_base = the float learning rate 0.01
    assert_histories_close(got, torch_history(0.01, 1e-7, weight_decay=0.5))
    assert not np.allclose(got[-1][0] - KERNEL0, run(RectifiedAdam(0.01))[-1][0] - KERNEL0, rtol=0.01, atol=0)


def test_epsilon_is_added_to_the_bias_corrected_root():
    """A large epsilon tells the placements apart: TF-Addons' (and ours) differs from PyTorch's fixed eps."""
    got = run(RectifiedAdam(0.01, epsilon=0.3))
    assert_histories_close(got, run_reference([0.01] * STEPS, epsilon=0.3)[0])
    torch_move = torch_history(0.01, 0.3, tf_addons_epsilon=False)[-1][0] - KERNEL0
    assert not np.allclose(got[-1][0] - KERNEL0, torch_move, rtol=0.01, atol=0)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_schedule_amsgrad_and_excluded_decay_match_the_transcription(amsgrad):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=1, decay_rate=0.8)
    optimizer = RectifiedAdam(schedule, beta_1=0.8, beta_2=0.99, weight_decay=0.01, amsgrad=amsgrad)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    assert optimizer.lr_base == 0.02  # the schedule's initial_learning_rate
    want, rectified = run_reference([0.02 * 0.8**i for i in range(STEPS)], decays=(0.01 / 0.02, 0.0), beta_1=0.8,
                                    beta_2=0.99, amsgrad=amsgrad)
    assert rectified == [False] * 5 + [True] * (STEPS - 5)  # rho_6 = 5.86 with beta_2 = 0.99
    assert_histories_close(run(optimizer), want)


def test_amsgrad_keeps_the_largest_second_moment():
    """Shrinking gradients with beta_2 = 0.9 (rectified from step 6, rho_6 = 5.4): ``v`` falls 10 % a step, its
    running maximum does not, so the rectified steps 6 to 8 are smaller."""
    gradients = [GRADS[0][0] * 0.3**step for step in range(8)]
    rectified_moves = {}
    for amsgrad in (True, False):
        variable, reference = keras.Variable(KERNEL0), Reference(KERNEL0, beta_2=0.9, amsgrad=amsgrad)
        optimizer = RectifiedAdam(0.01, beta_2=0.9, amsgrad=amsgrad)
        for step, gradient in enumerate(gradients, 1):
            optimizer.apply([gradient], [variable])
            reference.step(gradient, 0.01)
            if step == 5:
                before_rectified = np.asarray(variable)
        np.testing.assert_allclose(np.asarray(variable) - KERNEL0, reference.weight - KERNEL0, rtol=1e-4, atol=2e-6)
        rectified_moves[amsgrad] = np.asarray(variable) - before_rectified
    assert reference.rectified == [False] * 5 + [True] * 3
    assert np.all(np.abs(rectified_moves[True]) < 0.9 * np.abs(rectified_moves[False]))


def test_built_in_warmup_and_decay_and_decay_factors():
    """total_steps=8, warmup_proportion=0.25: LR 0.005, 0.01 (peak at step 2), then down to min_lr at step 8."""
    optimizer = RectifiedAdam(0.01, weight_decay=0.02, total_steps=8, warmup_proportion=0.25, min_lr=0.001,
                              decay_factors={"bias": 0.5})
    lrs = [tf_addons_lr(0.01, t, 8, 0.25, 0.001) for t in range(1, STEPS + 1)]
    assert lrs[:2] == [0.005, 0.01] and lrs[-3:] == pytest.approx([0.001] * 3)
    want, _ = run_reference(lrs, decays=(0.02 / 0.01, 0.5 * 0.02 / 0.01))
    assert_histories_close(run(optimizer), want)


def test_threshold_is_a_parameter():
    """sma_threshold=6.5: steps 6 (rho 5.99) stays un-rectified, step 7 (rho 6.99) is rectified."""
    want, rectified = run_reference([0.01] * STEPS, threshold=6.5)
    assert rectified == [False] * 6 + [True] * (STEPS - 6)
    assert_histories_close(run(RectifiedAdam(0.01, sma_threshold=6.5)), want)


def tiny_model(optimizer):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.set_weights([KERNEL0, BIAS0])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    return model


def mse_grads(kernel, bias, x, y):
    """Gradients of keras's mean squared error (mean over batch and outputs) of ``x @ kernel + bias``."""
    error = 2 * (x @ kernel + bias - y) / y.size
    return x.T @ error, error.sum(0)


@pytest.mark.parametrize("name", ["radam", "ranger"])
def test_jitted_fit_matches_the_transcription(name):
    """8 full-batch steps in a jitted JAX ``fit``; Ranger syncs its slow weights after step 6."""
    assert keras.backend.backend() == "jax"
    optimizer = named_optimizer(name, 0.01, weight_decay=0.05, lr_base=0.1)  # decoupled decay 0.05 * lr per step
    model = tiny_model(optimizer)
    model.fit(np.tile(X, (8, 1)), np.tile(Y, (8, 1)), batch_size=len(X), shuffle=False, verbose=0)
    assert model.jit_compile and int(optimizer.iterations) == 8
    references = [Reference(KERNEL0, decay=0.05), Reference(BIAS0, decay=0.05)]
    slow = [np.array(KERNEL0, "float64"), np.array(BIAS0, "float64")]
    for step in range(1, 9):
        grads = mse_grads(references[0].weight, references[1].weight, X, Y)
        fast = [ref.step(grad, 0.01) for ref, grad in zip(references, grads)]
        if name == "ranger" and step % 6 == 0:
            slow = [s + 0.5 * (f - s) for s, f in zip(slow, fast)]
            for ref, s in zip(references, slow):
                ref.weight = s
    for got, ref in zip(model.get_weights(), references):
        np.testing.assert_allclose(got, ref.weight, rtol=1e-5, atol=1e-6)


def test_serialisation_round_trip_and_resumed_training(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=2, decay_rate=0.9)
    optimizer = RectifiedAdam(schedule, beta_1=0.85, epsilon=1e-6, weight_decay=0.003, amsgrad=True,
                              sma_threshold=5.5, total_steps=20, warmup_proportion=0.2, min_lr=1e-4,
                              decay_factors={"bias": 0.0}, clipnorm=1.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is RectifiedAdam and restored.get_config() == optimizer.get_config()
    assert restored.lr_base == 0.01 and restored.clipnorm == 1.0
    assert_histories_close(run(restored), run(optimizer), rtol=0, atol=0)

    model = tiny_model(Lookahead(keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))))
    model.fit(X, Y, batch_size=8, shuffle=False, verbose=0)
    model.save(tmp_path / "ranger.keras")
    loaded = keras.saving.load_model(tmp_path / "ranger.keras")
    assert type(loaded.optimizer.optimizer) is RectifiedAdam and int(loaded.optimizer.iterations) == 3
    for one in (model, loaded):
        one.fit(X, Y, batch_size=8, shuffle=False, verbose=0)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_named_ranger_is_lookahead_around_rectified_adam():
    ranger = named_optimizer("ranger", 0.01)
    assert type(ranger) is Lookahead and (ranger.sync_period, ranger.slow_step_size) == (6, 0.5)
    inner = ranger.optimizer
    assert type(inner) is RectifiedAdam and float(inner.learning_rate) == pytest.approx(0.01)
    assert (inner.weight_decay, inner.lr_base) == (pytest.approx(5e-4 * 0.1), 0.1)  # decoupled 5e-4 * lr per step
    radam = named_optimizer("radam", 0.01, weight_decay=0.0)
    assert type(radam) is RectifiedAdam and radam.weight_decay == 0.0
    lookahead = named_optimizer("lookahead_radam", 0.01)
    assert lookahead.get_config() == ranger.get_config()
    with pytest.raises(ValueError, match="radam, ranger"):
        named_optimizer("rangr", 0.01)


@pytest.mark.parametrize("keywords, message", [
    ({"beta_2": 1.0}, "beta_2=1.0"),
    ({"beta_1": -0.1}, "beta_1=-0.1"),
    ({"epsilon": -1.0}, "epsilon=-1.0"),
    ({"sma_threshold": 3.0}, "sma_threshold must be >= 4"),
    ({"total_steps": 2.5}, "total_steps=2.5"),
    ({"total_steps": 10, "warmup_proportion": 1.5}, "warmup_proportion=1.5"),
    ({"weight_decay": 1e-4, "learning_rate": lambda: 0.1}, "pass lr_base explicitly"),
])
def test_bad_arguments_are_named(keywords, message):
    with pytest.raises(ValueError, match=message):
        RectifiedAdam(**keywords)
