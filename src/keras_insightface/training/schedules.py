"""Learning-rate schedules evaluated per batch inside the compiled step."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``lr_base`` over ``warmup_steps``, then cosine decay to ``lr_min`` at ``total_steps``.

    ``step_offset`` is the global step at which the optimizer using this schedule started, so the curve
    continues across stages that bring a new optimizer.

    Example:
        >>> schedule = WarmupCosine(0.1, total_steps=100, warmup_steps=10, lr_min=1e-5)
        >>> round(float(schedule(10)), 4), round(float(schedule(100)), 5)
        (0.1, 1e-05)
    """

    def __init__(self, lr_base, total_steps, warmup_steps=0, lr_min=0.0, step_offset=0):
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(f"WarmupCosine needs 0 <= warmup_steps <= total_steps, got {warmup_steps=}, {total_steps=}")
        self.lr_base, self.lr_min = float(lr_base), float(lr_min)
        self.total_steps, self.warmup_steps, self.step_offset = int(total_steps), int(warmup_steps), int(step_offset)

    def __call__(self, step):
        step = ops.cast(step, "float32") + self.step_offset
        warm = self.lr_base * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.lr_min + 0.5 * (self.lr_base - self.lr_min) * (1 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "lr_base": self.lr_base,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "lr_min": self.lr_min,
            "step_offset": self.step_offset,
        }
