"""The seed's ``myCallbacks`` module name for its learning-rate schedulers:
``tt.lr_scheduler = myCallbacks.CosineLrSchedulerEpoch(lr_base=1e-3, first_restart_step=16, warmup_steps=3)``.

Its other callbacks have no counterpart to set by hand here: ``Train`` keeps the history (``My_history``), stops on
a NaN loss (``ExitOnNaN``), scales decoupled weight decay with the rate (``OptimizerWeightDecay``, built into
``SGDW`` / ``AdamW``) and checkpoints by itself.

Example:
    >>> from keras_insightface import myCallbacks
    >>> round(myCallbacks.exp_scheduler(2, 0.001, 0.05), 7)
    0.0009048
"""

from keras_insightface.training.lr_schedulers import (
    CosineLrScheduler, CosineLrSchedulerEpoch, constant_scheduler, exp_scheduler,
)

__all__ = ["CosineLrScheduler", "CosineLrSchedulerEpoch", "constant_scheduler", "exp_scheduler"]
