"""The seed's learning-rate schedulers by their seed names (``myCallbacks.CosineLrScheduler``,
``CosineLrSchedulerEpoch``, ``exp_scheduler``, ``constant_scheduler``), computed by this project's in-graph schedules.

The seed set the rate from Python callbacks every epoch or batch; here the rate is part of the compiled step. A
scheduler object keeps the seed's constructor, its ``on_epoch_begin`` / ``on_train_batch_begin`` (they return the
rate, as the seed's do, so its plotting recipes work) and, for a run, ``schedule(steps_per_epoch, start_epoch)``:
the in-graph schedule ``Train`` uses when it is set as ``tt.lr_scheduler``.

Example:
    >>> scheduler = CosineLrSchedulerEpoch(0.1, first_restart_step=3, lr_min=1e-3, warmup_steps=1)
    >>> [round(scheduler.on_epoch_begin(epoch), 5) for epoch in range(5)]
    [0.001, 0.1, 0.07525, 0.02575, 0.001]
    >>> round(exp_scheduler(3, 0.1, 0.05, warmup_steps=2), 6)
    0.095123
"""

import math

from keras_insightface.training.schedules import CosineRestarts, ExponentialDecay, StepDecay, WarmupCosine


class CosineLrScheduler:
    """The seed's per-batch cosine with restarts (epochs for ``first_restart_step``, ``warmup_steps`` and
    ``cooldown_steps``; ``m_mul`` scales each restart's peak, ``t_mul`` its length; a single cosine when
    ``lr_min == lr_base * m_mul``; warmup from ``lr_warmup``, or ``lr_min`` when it is <= 0)."""

    per_epoch = False

    def __init__(self, lr_base, first_restart_step, steps_per_epoch=-1, m_mul=0.5, t_mul=2.0, lr_min=1e-5,
                 lr_warmup=-1, warmup_steps=0, cooldown_steps=1):
        self.lr_base, self.first_restart_step, self.steps_per_epoch = lr_base, first_restart_step, steps_per_epoch
        self.m_mul, self.t_mul, self.lr_min = m_mul, t_mul, lr_min
        self.lr_warmup, self.warmup_steps, self.cooldown_steps = lr_warmup, warmup_steps, cooldown_steps
        self.epoch = 0

    def schedule(self, steps_per_epoch, start_epoch=0):
        """The in-graph schedule of an optimizer created at ``start_epoch``, epochs of ``steps_per_epoch`` steps."""
        steps = int(steps_per_epoch)
        common = dict(lr_min=self.lr_min, warmup_steps=self.warmup_steps * steps, step_offset=start_epoch * steps,
                      warmup_start=self.lr_warmup if self.lr_warmup > 0 else self.lr_min,
                      update_every=steps if self.per_epoch else 1)
        if math.isclose(self.lr_min, self.lr_base * self.m_mul):
            return WarmupCosine(self.lr_base, (self.first_restart_step + self.warmup_steps) * steps, **common)
        return CosineRestarts(self.lr_base, self.first_restart_step * steps, self.cooldown_steps * steps, self.t_mul,
                              self.m_mul, **common)

    def _steps_per_epoch(self):
        if self.per_epoch:
            return 1
        if self.steps_per_epoch < 1:
            raise ValueError("CosineLrScheduler needs steps_per_epoch (set it, or let Train set it) to give a rate")
        return self.steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        """Start ``epoch``; returns the rate of its first batch."""
        self.epoch = epoch
        return self.on_train_batch_begin(0)

    def on_train_batch_begin(self, batch, logs=None):
        """The rate of ``batch`` of the current epoch."""
        steps = self._steps_per_epoch()
        return float(self.schedule(steps)(self.epoch * steps + (0 if self.per_epoch else batch)))


class CosineLrSchedulerEpoch(CosineLrScheduler):
    """The seed's cosine with restarts set once per epoch (``lr_min`` default 1e-6 as the seed's)."""

    per_epoch = True

    def __init__(self, lr_base, first_restart_step, m_mul=0.5, t_mul=2.0, lr_min=1e-6, lr_warmup=-1, warmup_steps=0,
                 cooldown_steps=1):
        super().__init__(lr_base, first_restart_step, -1, m_mul, t_mul, lr_min, lr_warmup, warmup_steps,
                         cooldown_steps)


def exp_scheduler(epoch, lr_base, decay_rate=0.05, lr_min=0, warmup_steps=0):
    """The seed's exponential rate of ``epoch``: warmup from ``lr_min``, then ``lr_base * exp(-decay_rate * epochs
    after warmup)``, floored at ``lr_min``."""
    schedule = ExponentialDecay(lr_base, 1, math.exp(-decay_rate), lr_min=lr_min, warmup_steps=warmup_steps,
                                warmup_start=lr_min)
    return float(schedule(epoch))


def constant_scheduler(epoch, lr_base, lr_decay_steps, decay_rate=0.1, warmup_steps=0):
    """The seed's step rate of ``epoch``: ``lr_base * decay_rate ** (decay epochs passed)``, warmup from its last
    value."""
    schedule = StepDecay(lr_base, list(lr_decay_steps), decay_rate, warmup_steps=warmup_steps,
                         warmup_start=lr_base * decay_rate ** len(lr_decay_steps))
    return float(schedule(epoch))
