"""Learning-rate schedules evaluated per batch inside the compiled step (no Python work per step)."""

import math

import keras
import numpy as np
from keras import ops


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from ``warmup_start`` to ``lr_base`` over ``warmup_steps``, then ``decay(step - warmup_steps)``.

    ``step_offset`` is the global step at which the optimizer using the schedule started, so the curve
    continues across stages that bring a new optimizer. ``update_every`` > 1 holds the rate for that many steps
    (the value at the first of them): the seed sets its exponential and step schedules, and
    ``CosineLrSchedulerEpoch``, once per epoch. The seed's warmups start from ``lr_min``; arcface_torch's from 0.
    """

    def __init__(self, lr_base, warmup_steps=0, lr_min=0.0, step_offset=0, warmup_start=0.0, update_every=1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, received {warmup_steps}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, received {update_every}")
        self.lr_base, self.lr_min = float(lr_base), float(lr_min)
        self.warmup_steps, self.step_offset = int(warmup_steps), int(step_offset)
        self.warmup_start, self.update_every = float(warmup_start), int(update_every)

    def decay(self, step):
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "float32") + self.step_offset
        if self.update_every > 1:
            step = ops.floor(step / self.update_every) * self.update_every
        warm = self.warmup_start + (self.lr_base - self.warmup_start) * step / max(self.warmup_steps, 1)
        return ops.where(step < self.warmup_steps, warm, self.decay(step - self.warmup_steps))

    def get_config(self):
        return {
            "lr_base": self.lr_base,
            "warmup_steps": self.warmup_steps,
            "lr_min": self.lr_min,
            "step_offset": self.step_offset,
            "warmup_start": self.warmup_start,
            "update_every": self.update_every,
        }


@keras.saving.register_keras_serializable(package="keras_insightface")
class WarmupCosine(_Warmup):
    """Warmup, then one cosine from ``lr_base`` down to ``lr_min`` at ``total_steps``; ``lr_min`` after that.

    Example:
        >>> schedule = WarmupCosine(0.1, total_steps=100, warmup_steps=10, lr_min=1e-5)
        >>> round(float(schedule(10)), 4), round(float(schedule(100)), 5)
        (0.1, 1e-05)
    """

    def __init__(self, lr_base, total_steps, warmup_steps=0, lr_min=0.0, step_offset=0, warmup_start=0.0,
                 update_every=1):
        super().__init__(lr_base, warmup_steps, lr_min, step_offset, warmup_start, update_every)
        if total_steps < 1 or warmup_steps > total_steps:
            raise ValueError(f"WarmupCosine needs warmup_steps <= total_steps, got {warmup_steps=}, {total_steps=}")
        self.total_steps = int(total_steps)

    def decay(self, step):
        progress = ops.clip(step / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        return self.lr_min + 0.5 * (self.lr_base - self.lr_min) * (1 + ops.cos(math.pi * progress))

    def get_config(self):
        return {**super().get_config(), "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="keras_insightface")
class CosineRestarts(_Warmup):
    """The seed's cosine with restarts (``CosineLrScheduler``, Keras's ``CosineDecayRestarts`` with cooldowns):
    cycles of ``first_steps * t_mul**i`` steps at ``lr_min + (lr_base - lr_min) * m_mul**i * (1 + cos(pi t)) / 2``,
    each followed by ``cooldown_steps`` at ``lr_min``. As the seed, four cycles are scheduled; the rate stays at
    ``lr_min`` after the fourth cooldown.

    With 16-epoch first cycles, t_mul 2 and a one-epoch cooldown, restarts fall on epochs 17, 50 and 115.

    Example:
        >>> schedule = CosineRestarts(0.1, first_steps=16, cooldown_steps=1, m_mul=0.5, lr_min=1e-5)
        >>> [round(float(schedule(s)), 5) for s in (0, 16, 17, 50)]
        [0.1, 1e-05, 0.05001, 0.02501]
    """

    CYCLES = 4

    def __init__(self, lr_base, first_steps, cooldown_steps=0, t_mul=2.0, m_mul=1.0, lr_min=0.0, warmup_steps=0,
                 step_offset=0, warmup_start=0.0, update_every=1):
        super().__init__(lr_base, warmup_steps, lr_min, step_offset, warmup_start, update_every)
        if first_steps < 1 or cooldown_steps < 0 or t_mul < 1:
            raise ValueError(f"CosineRestarts needs first_steps >= 1, cooldown_steps >= 0, t_mul >= 1, got "
                             f"{first_steps=}, {cooldown_steps=}, {t_mul=}")
        self.first_steps, self.cooldown_steps = int(first_steps), int(cooldown_steps)
        self.t_mul, self.m_mul = float(t_mul), float(m_mul)

    def decay(self, step):
        lengths = self.first_steps * self.t_mul ** np.arange(self.CYCLES + 1)
        starts = np.concatenate([[0.0], np.cumsum(lengths + self.cooldown_steps)[:-1]])
        cycle = ops.sum(ops.cast(step[None] >= ops.convert_to_tensor(starts, "float32"), "int32")) - 1
        start = ops.take(ops.convert_to_tensor(starts, "float32"), cycle)
        length = ops.take(ops.convert_to_tensor(lengths, "float32"), cycle)
        amplitude = (self.lr_base - self.lr_min) * ops.power(self.m_mul, ops.cast(cycle, "float32"))
        position = step - start
        cosine = self.lr_min + 0.5 * amplitude * (1 + ops.cos(math.pi * ops.minimum(position / length, 1.0)))
        return ops.where((position < length) & (cycle < self.CYCLES), cosine, self.lr_min)

    def get_config(self):
        return {
            **super().get_config(),
            "first_steps": self.first_steps,
            "cooldown_steps": self.cooldown_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
        }


def _check_floor(name, lr_base, lr_min):
    if not 0 <= lr_min <= lr_base:
        raise ValueError(f"{name} needs 0 <= lr_min <= lr_base, received lr_min={lr_min}, lr_base={lr_base}")


def _check_decay_rate(name, decay_rate):
    if not 0 < decay_rate <= 1:
        raise ValueError(f"{name} needs 0 < decay_rate <= 1, received decay_rate={decay_rate}")


@keras.saving.register_keras_serializable(package="keras_insightface")
class ExponentialDecay(_Warmup):
    """Warmup, then ``lr_base * decay_rate ** (t / decay_steps)`` with ``t`` counted from the end of warmup,
    floored at ``lr_min``; ``staircase`` floors ``t / decay_steps`` so the rate drops in whole steps.

    The seed's ``exp_scheduler`` (``lr_base * exp(decay * (warmup - epoch))``, set once per epoch) is
    ``decay_rate=exp(-decay)``, ``decay_steps=steps_per_epoch``, ``staircase=True``; the formula is Keras's own
    ``ExponentialDecay`` with warmup and a floor added.

    Example:
        >>> schedule = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, warmup_steps=10, lr_min=0.01)
        >>> [round(float(schedule(s)), 4) for s in (5, 10, 20, 30, 100)]
        [0.05, 0.1, 0.05, 0.025, 0.01]
    """

    def __init__(self, lr_base, decay_steps, decay_rate, lr_min=0.0, warmup_steps=0, staircase=False,
                 step_offset=0, warmup_start=0.0, update_every=1):
        super().__init__(lr_base, warmup_steps, lr_min, step_offset, warmup_start, update_every)
        _check_floor("ExponentialDecay", lr_base, lr_min)
        _check_decay_rate("ExponentialDecay", decay_rate)
        if decay_steps <= 0:
            raise ValueError(f"ExponentialDecay needs decay_steps > 0, received decay_steps={decay_steps}")
        self.decay_steps, self.decay_rate, self.staircase = float(decay_steps), float(decay_rate), bool(staircase)

    def decay(self, step):
        ratio = step / self.decay_steps
        if self.staircase:
            ratio = ops.floor(ratio)
        return ops.maximum(self.lr_base * ops.exp(math.log(self.decay_rate) * ratio), self.lr_min)

    def get_config(self):
        return {
            **super().get_config(),
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


@keras.saving.register_keras_serializable(package="keras_insightface")
class StepDecay(_Warmup):
    """Warmup, then ``lr_base * decay_rate ** (boundaries passed)``, floored at ``lr_min``.

    The seed's ``constant_scheduler`` (a list of decay epochs); ``boundaries`` are absolute optimizer steps
    (warmup included), so the caller multiplies the seed's epochs by ``steps_per_epoch``.

    Example:
        >>> schedule = StepDecay(0.1, boundaries=[10, 20], decay_rate=0.1)
        >>> [round(float(schedule(s)), 4) for s in (0, 9, 10, 19, 20, 99)]
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """

    def __init__(self, lr_base, boundaries, decay_rate=0.1, lr_min=0.0, warmup_steps=0, step_offset=0,
                 warmup_start=0.0, update_every=1):
        super().__init__(lr_base, warmup_steps, lr_min, step_offset, warmup_start, update_every)
        _check_floor("StepDecay", lr_base, lr_min)
        _check_decay_rate("StepDecay", decay_rate)
        boundaries = [int(b) for b in boundaries]
        if any(b < 0 for b in boundaries) or any(a >= b for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(f"StepDecay needs strictly increasing non-negative boundaries, received {boundaries}")
        self.boundaries, self.decay_rate = boundaries, float(decay_rate)

    def decay(self, step):
        absolute = ops.expand_dims(step + self.warmup_steps, -1)
        boundaries = ops.convert_to_tensor(np.asarray(self.boundaries, "float32").reshape(-1), "float32")
        passed = ops.sum(ops.cast(absolute >= boundaries, "float32"), axis=-1)
        return ops.maximum(self.lr_base * ops.exp(math.log(self.decay_rate) * passed), self.lr_min)

    def get_config(self):
        return {**super().get_config(), "boundaries": list(self.boundaries), "decay_rate": self.decay_rate}


@keras.saving.register_keras_serializable(package="keras_insightface")
class PolynomialDecay(_Warmup):
    """arcface_torch's ``PolynomialLRWarmup``: warmup, then ``lr_base * (1 - (step - warmup) / (total - warmup))
    ** power``, floored at ``lr_min`` and ``lr_min`` from ``total_steps`` on (arcface_torch trains with power 2).

    Example:
        >>> schedule = PolynomialDecay(0.1, total_steps=110, warmup_steps=10, lr_min=1e-4)
        >>> [round(float(schedule(s)), 4) for s in (5, 10, 60, 110, 200)]
        [0.05, 0.1, 0.025, 0.0001, 0.0001]
    """

    def __init__(self, lr_base, total_steps, power=2.0, lr_min=0.0, warmup_steps=0, step_offset=0, warmup_start=0.0,
                 update_every=1):
        super().__init__(lr_base, warmup_steps, lr_min, step_offset, warmup_start, update_every)
        _check_floor("PolynomialDecay", lr_base, lr_min)
        if total_steps <= warmup_steps:
            raise ValueError(f"PolynomialDecay needs total_steps > warmup_steps, received total_steps={total_steps}, "
                             f"warmup_steps={warmup_steps}")
        if power <= 0:
            raise ValueError(f"PolynomialDecay needs power > 0, received power={power}")
        self.total_steps, self.power = int(total_steps), float(power)

    def decay(self, step):
        progress = ops.clip(step / (self.total_steps - self.warmup_steps), 0.0, 1.0)
        return ops.maximum(self.lr_base * ops.power(1.0 - progress, self.power), self.lr_min)

    def get_config(self):
        return {**super().get_config(), "total_steps": self.total_steps, "power": self.power}


SCHEDULES = {
    "cosine": WarmupCosine,
    "cosine_restarts": CosineRestarts,
    "exponential": ExponentialDecay,
    "step": StepDecay,
    "polynomial": PolynomialDecay,
}


def get_schedule(name, **kwargs):
    """The schedule a config file names (``"cosine"``, ``"cosine_restarts"``, ``"exponential"``, ``"step"``,
    ``"polynomial"``), built with ``kwargs``.

    Example:
        >>> type(get_schedule("polynomial", lr_base=0.1, total_steps=100)).__name__
        'PolynomialDecay'
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES[key](**kwargs)


def run_schedule(kind, lr_base, lr_min, lr_decay, lr_decay_steps, warmup_epochs, steps_per_epoch, start_epoch,
                 total_epochs, t_mul=2.0):
    """The schedule of an optimizer created at ``start_epoch`` of a run of ``total_epochs``: the run's one curve
    (``kind`` from ``OptimizerConfig.schedule_kind``), continued from that epoch; epochs are ``steps_per_epoch``
    steps. The seed's kinds keep its formulas and granularity: ``exponential`` (``exp_scheduler``: ``lr_base *
    exp(-lr_decay * epochs after warmup)``, floored at ``lr_min``) and ``step`` (``constant_scheduler``) change once
    per epoch, ``cosine_restarts`` (``CosineLrScheduler``: ``lr_decay`` is m_mul, ``t_mul``, a one-epoch cooldown;
    a single cosine when ``lr_min == lr_base * lr_decay``) every batch; their warmups start from ``lr_min`` (step:
    from its last value). ``cosine`` (one cosine over the run) and ``polynomial`` are arcface_torch's, warmup from 0.

    Example:
        >>> schedule = run_schedule("exponential", 0.1, 0.0, 0.05, 0, 0, steps_per_epoch=10, start_epoch=0,
        ...                         total_epochs=10)
        >>> [round(float(schedule(step)), 4) for step in (0, 9, 10, 20)]   # the seed: 0.1, 0.0951, 0.0905
        [0.1, 0.1, 0.0951, 0.0905]
    """
    steps = steps_per_epoch
    warmup = warmup_epochs * steps
    common = dict(lr_min=lr_min, warmup_steps=warmup, step_offset=start_epoch * steps)
    seed = dict(common, warmup_start=lr_min)
    if kind == "step":
        seed["warmup_start"] = lr_base * lr_decay ** len(lr_decay_steps)
        return StepDecay(lr_base, [epoch * steps for epoch in lr_decay_steps], lr_decay, update_every=steps,
                         **dict(seed, lr_min=0.0))
    if kind == "exponential":
        return ExponentialDecay(lr_base, steps, math.exp(-lr_decay), update_every=steps, **seed)
    if kind == "polynomial":
        return PolynomialDecay(lr_base, max(total_epochs * steps, warmup + 1), **common)
    if kind == "cosine_restarts":
        if math.isclose(lr_min, lr_base * lr_decay):  # the seed's single cosine, no restart
            return WarmupCosine(lr_base, total_steps=lr_decay_steps * steps + warmup, **seed)
        return CosineRestarts(lr_base, lr_decay_steps * steps, cooldown_steps=steps, t_mul=t_mul, m_mul=lr_decay,
                              **seed)
    return WarmupCosine(lr_base, total_steps=max(total_epochs * steps, warmup, 1), **common)
