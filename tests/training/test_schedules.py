"""Per-batch schedules: every step against a plain-Python formula, under jit, offset, serialised, validated, in fit."""

import math

import keras_insightface  # noqa: F401  (sets the backend before keras is imported)
import jax
import keras
import numpy as np
import pytest
from keras import ops

from keras_insightface.training.schedules import (
    CosineRestarts,
    ExponentialDecay,
    PolynomialDecay,
    StepDecay,
    WarmupCosine,
    get_schedule,
)

STEPS, WARMUP, LR = 60, 5, 0.1


def _exponential(step, decay_steps=7, decay_rate=0.8, lr_min=0.02, staircase=False):
    if step < WARMUP:
        return LR * step / WARMUP
    ratio = (step - WARMUP) / decay_steps
    return max(LR * decay_rate ** (math.floor(ratio) if staircase else ratio), lr_min)


def _step(step, boundaries=(12, 30, 45), decay_rate=0.5, lr_min=0.02):
    if step < WARMUP:
        return LR * step / WARMUP
    return max(LR * decay_rate ** sum(step >= b for b in boundaries), lr_min)


def _polynomial(step, total=50, power=2.0, lr_min=1e-3):
    if step < WARMUP:
        return LR * step / WARMUP
    return max(LR * (1 - (min(step, total) - WARMUP) / (total - WARMUP)) ** power, lr_min)


CASES = {
    "exponential": (lambda **kw: ExponentialDecay(LR, 7, 0.8, lr_min=0.02, warmup_steps=WARMUP, **kw), _exponential),
    "staircase": (
        lambda **kw: ExponentialDecay(LR, 7, 0.8, lr_min=0.02, warmup_steps=WARMUP, staircase=True, **kw),
        lambda s: _exponential(s, staircase=True),
    ),
    "step": (lambda **kw: StepDecay(LR, [12, 30, 45], 0.5, lr_min=0.02, warmup_steps=WARMUP, **kw), _step),
    "polynomial": (lambda **kw: PolynomialDecay(LR, 50, lr_min=1e-3, warmup_steps=WARMUP, **kw), _polynomial),
    "polynomial_cubic": (
        lambda **kw: PolynomialDecay(LR, 50, power=3, warmup_steps=WARMUP, **kw),
        lambda s: _polynomial(s, power=3, lr_min=0.0),
    ),
}


def _expected(formula, steps=range(STEPS)):
    return np.array([formula(s) for s in steps])


@pytest.mark.parametrize("name", CASES)
def test_every_step_matches_the_formula(name):
    build, formula = CASES[name]
    schedule = build()
    values = np.array([float(schedule(s)) for s in range(STEPS)])
    np.testing.assert_allclose(values, _expected(formula), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_under_jit_over_an_array_of_steps(name):
    build, formula = CASES[name]
    values = jax.jit(build())(np.arange(STEPS))
    assert values.shape == (STEPS,)
    np.testing.assert_allclose(np.asarray(values), _expected(formula), rtol=1e-5, atol=1e-8)
    scalar = jax.jit(lambda s: build()(s))
    assert float(scalar(np.int32(WARMUP + 3))) == pytest.approx(formula(WARMUP + 3), rel=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_step_offset_continues_the_curve(name):
    build, formula = CASES[name]
    shifted = build(step_offset=20)
    values = np.array([float(shifted(s)) for s in range(STEPS - 20)])
    np.testing.assert_allclose(values, _expected(formula, range(20, STEPS)), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_serialisation_round_trip(name):
    schedule = CASES[name][0](step_offset=3)
    for serialize, deserialize in (
        (keras.optimizers.schedules.serialize, keras.optimizers.schedules.deserialize),
        (keras.saving.serialize_keras_object, keras.saving.deserialize_keras_object),
    ):
        restored = deserialize(serialize(schedule))
        assert type(restored) is type(schedule)  # ours, not Keras's ExponentialDecay / PolynomialDecay
        assert restored.get_config() == schedule.get_config()
        steps = np.arange(STEPS)
        np.testing.assert_allclose(np.asarray(restored(steps)), np.asarray(schedule(steps)))


def test_seed_exponential_scheduler_is_the_staircase_case():
    """The seed's per-epoch ``lr_base * exp(decay * (warmup - epoch))`` with decay_rate = exp(-decay)."""
    steps_per_epoch, decay, warmup_epochs = 4, 0.05, 2
    schedule = ExponentialDecay(LR, steps_per_epoch, math.exp(-decay), warmup_steps=warmup_epochs * steps_per_epoch,
                                staircase=True)
    for epoch in range(warmup_epochs, 20):
        for batch in range(steps_per_epoch):
            lr = float(schedule(epoch * steps_per_epoch + batch))
            assert lr == pytest.approx(LR * math.exp(decay * (warmup_epochs - epoch)), rel=1e-5)


def test_step_boundaries_are_absolute_and_may_fall_inside_warmup():
    schedule = StepDecay(1.0, [2, 10], decay_rate=0.1, warmup_steps=4)
    assert [round(float(schedule(s)), 6) for s in (0, 2, 3, 4, 9, 10)] == [0.0, 0.5, 0.75, 0.1, 0.1, 0.01]
    assert float(StepDecay(0.3, [])(1000)) == pytest.approx(0.3)


def test_polynomial_reaches_lr_min_at_total_steps_and_stays():
    schedule = PolynomialDecay(LR, total_steps=40, warmup_steps=10, lr_min=1e-4)
    values = np.asarray(schedule(np.arange(200)))
    assert values[10] == pytest.approx(LR) and values[25] == pytest.approx(LR / 4)
    np.testing.assert_allclose(values[40:], 1e-4, rtol=1e-6)
    assert np.all(np.diff(values[10:]) <= 0)


def test_get_schedule_names_every_schedule():
    common = dict(lr_base=LR, warmup_steps=WARMUP, step_offset=2)
    built = {
        "cosine": get_schedule("cosine", total_steps=50, **common),
        "cosine_restarts": get_schedule("cosine_restarts", first_steps=20, cooldown_steps=2, m_mul=0.5, **common),
        "exponential": get_schedule("exponential", decay_steps=7, decay_rate=0.8, **common),
        "step": get_schedule("Step", boundaries=[10, 20], **common),
        "polynomial": get_schedule("polynomial", total_steps=50, **common),
    }
    kinds = [WarmupCosine, CosineRestarts, ExponentialDecay, StepDecay, PolynomialDecay]
    assert [type(s) for s in built.values()] == kinds
    assert all(s.step_offset == 2 for s in built.values())
    with pytest.raises(ValueError, match="Unknown schedule 'linear'; expected one of cosine, cosine_restarts, "
                                         "exponential, step, polynomial"):
        get_schedule("linear", lr_base=LR)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: PolynomialDecay(LR, total_steps=5, warmup_steps=5), "total_steps=5, warmup_steps=5"),
        (lambda: PolynomialDecay(LR, total_steps=3, warmup_steps=8), "total_steps=3, warmup_steps=8"),
        (lambda: PolynomialDecay(LR, total_steps=10, power=0), "power=0"),
        (lambda: ExponentialDecay(LR, 10, decay_rate=0), "decay_rate=0"),
        (lambda: ExponentialDecay(LR, 10, decay_rate=-0.5), "decay_rate=-0.5"),
        (lambda: ExponentialDecay(LR, 10, decay_rate=1.5), "decay_rate=1.5"),
        (lambda: ExponentialDecay(LR, 0, decay_rate=0.5), "decay_steps=0"),
        (lambda: StepDecay(LR, [10, 20], decay_rate=0), "decay_rate=0"),
        (lambda: StepDecay(LR, [20, 10]), r"\[20, 10\]"),
        (lambda: StepDecay(LR, [10, 10]), r"\[10, 10\]"),
        (lambda: StepDecay(LR, [-1, 10]), r"\[-1, 10\]"),
        (lambda: StepDecay(LR, [10], lr_min=0.5), "lr_min=0.5, lr_base=0.1"),
        (lambda: ExponentialDecay(LR, 10, 0.5, lr_min=0.2), "lr_min=0.2, lr_base=0.1"),
        (lambda: PolynomialDecay(LR, 10, lr_min=-1e-3), "lr_min=-0.001, lr_base=0.1"),
        (lambda: StepDecay(LR, [10], warmup_steps=-1), "received -1"),
    ],
)
def test_nonsense_is_refused_naming_the_values(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("name", ["exponential", "step", "polynomial"])
def test_schedule_drives_sgd_in_fit(name):
    """One weight whose loss gradient is always 1: after n steps it moved by minus the sum of the n scheduled lrs."""
    schedule = CASES[name][0](step_offset=1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss=lambda y, p: ops.mean(p, axis=-1))
    steps, batch = 12, 2
    x = np.ones((steps * batch, 1), "float32")
    model.fit(x, np.zeros_like(x), batch_size=batch, epochs=1, shuffle=False, verbose=0)
    expected = -sum(CASES[name][1](s + 1) for s in range(steps))
    assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(expected, rel=1e-5)
    assert float(model.optimizer.learning_rate) == pytest.approx(CASES[name][1](steps + 1), rel=1e-5)
