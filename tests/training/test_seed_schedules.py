"""The seed's learning-rate rules, against rates the seed's own ``myCallbacks`` computed.

Reference values: leondgarse/Keras_insightface 520a9da, ``myCallbacks.py`` run with tf_keras 2.21 (TensorFlow 2.21
CPU): ``CosineLrScheduler(0.1, first_restart_step=2, steps_per_epoch=3, m_mul=0.5, lr_min=1e-3, lr_warmup=1e-3,
warmup_steps=1)`` over 14 epochs (``on_epoch_begin`` + ``on_train_batch_begin`` of every batch); the same with
``first_restart_step=4, m_mul=0.01`` (lr_min == lr_base * m_mul: no restart) over 8 epochs;
``exp_scheduler(e, 0.1, 0.05, 1e-5, warmup_steps=2)``; ``exp_scheduler(e, 0.001, 0.05, 1e-6)`` (the seed's Train
defaults); ``constant_scheduler(e, 0.1, [3, 5], 0.1, warmup_steps=2)``; ``CosineLrSchedulerEpoch(0.1, 3, m_mul=0.5,
t_mul=2.0, lr_min=1e-3, warmup_steps=1).on_epoch_begin(e)``.
"""

import keras_insightface  # noqa: F401

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.training.config import OptimizerConfig  # noqa: E402
from keras_insightface.training.lr_schedulers import (  # noqa: E402
    CosineLrScheduler, CosineLrSchedulerEpoch, constant_scheduler, exp_scheduler,
)
from keras_insightface.training.schedules import run_schedule  # noqa: E402

COS_RESTART = [0.001, 0.034, 0.067, 0.1, 0.09336826, 0.07525, 0.0505, 0.02575, 0.007631743, 0.001, 0.001, 0.001, 0.0505, 0.04965666, 0.04718413, 0.0432509, 0.038125, 0.03215577, 0.02575, 0.01934422, 0.013375, 0.008249107, 0.004315869, 0.001843336, 0.001, 0.001, 0.001, 0.02575, 0.02564413, 0.02532833, 0.02480801, 0.02409207, 0.02319275, 0.02212545, 0.02090842, 0.0195625, 0.01811071, 0.01657789, 0.01499026, 0.013375, 0.01175974, 0.01017211]
COS_NORESTART = [0.001, 0.034, 0.067, 0.1, 0.09831332, 0.09336826, 0.08550179, 0.07525, 0.06331155, 0.0505, 0.03768846, 0.02575, 0.01549822, 0.007631743, 0.002686669, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001]
EXP = [1e-05, 0.050005, 0.1, 0.09512294, 0.09048374, 0.0860708, 0.08187308, 0.07788008, 0.07408182, 0.07046881]
EXP_NOWARM = [0.001, 0.0009512294, 0.0009048374, 0.000860708]
CONST = [0.001, 0.0505, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001]
COS_EPOCH = [0.001, 0.1, 0.07525, 0.02575, 0.001, 0.0505, 0.04718413, 0.038125, 0.02575, 0.013375, 0.004315869, 0.001, 0.02575, 0.02532833, 0.02409207, 0.02212545, 0.0195625, 0.01657789, 0.013375, 0.01017211]


def _run(steps_per_epoch=3, start_epoch=0, warmup=1, **options):
    config = OptimizerConfig(**options)
    return run_schedule(config.schedule_kind, config.lr_base, config.lr_min, config.lr_decay, config.lr_decay_steps,
                        warmup, steps_per_epoch, start_epoch, total_epochs=50, t_mul=config.lr_t_mul)


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, "float64"), expected, rtol=2e-5, atol=1e-9)


def test_train_cosine_restarts_per_batch_as_the_seed():
    """``Train(lr_decay_steps=2, lr_decay=0.5)``: the seed's CosineLrScheduler, warmup from lr_min, cooldowns."""
    schedule = _run(lr_base=0.1, lr_min=1e-3, lr_decay=0.5, lr_decay_steps=2)
    _close([float(schedule(step)) for step in range(len(COS_RESTART))], COS_RESTART)
    later = _run(start_epoch=5, lr_base=0.1, lr_min=1e-3, lr_decay=0.5, lr_decay_steps=2)  # a later stage's optimizer
    _close([float(later(step)) for step in range(len(COS_RESTART) - 15)], COS_RESTART[15:])


def test_train_single_cosine_when_lr_min_is_lr_base_times_lr_decay():
    schedule = _run(lr_base=0.1, lr_min=1e-3, lr_decay=0.01, lr_decay_steps=4)
    _close([float(schedule(step)) for step in range(len(COS_NORESTART))], COS_NORESTART)


def test_train_exponential_per_epoch_as_the_seed():
    schedule = _run(warmup=2, lr_base=0.1, lr_min=1e-5, lr_decay=0.05, lr_decay_steps=0)
    _close([float(schedule(epoch * 3 + batch)) for epoch in range(10) for batch in range(3)], np.repeat(EXP, 3))
    defaults = _run(warmup=0)  # Train's defaults are the seed's: lr_base 0.001, lr_decay 0.05, exponential
    assert OptimizerConfig().schedule_kind == "exponential"
    _close([float(defaults(epoch * 3)) for epoch in range(4)], EXP_NOWARM)


def test_train_step_decay_as_the_seed():
    schedule = _run(warmup=2, lr_base=0.1, lr_decay=0.1, lr_decay_steps=[3, 5])
    _close([float(schedule(epoch * 3 + 2)) for epoch in range(8)], CONST)


def test_seed_scheduler_objects_and_functions():
    epoch_scheduler = CosineLrSchedulerEpoch(0.1, 3, m_mul=0.5, t_mul=2.0, lr_min=1e-3, warmup_steps=1)
    _close([epoch_scheduler.on_epoch_begin(epoch) for epoch in range(20)], COS_EPOCH)
    batch_scheduler = CosineLrScheduler(0.1, first_restart_step=2, steps_per_epoch=3, m_mul=0.5, lr_min=1e-3,
                                        lr_warmup=1e-3, warmup_steps=1)
    rates = []
    for epoch in range(14):
        batch_scheduler.on_epoch_begin(epoch)
        rates += [batch_scheduler.on_train_batch_begin(batch) for batch in range(3)]
    _close(rates, COS_RESTART)
    _close([exp_scheduler(epoch, 0.1, 0.05, 1e-5, warmup_steps=2) for epoch in range(10)], EXP)
    _close([constant_scheduler(epoch, 0.1, [3, 5], 0.1, warmup_steps=2) for epoch in range(8)], CONST)
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        CosineLrScheduler(0.1, 2).on_epoch_begin(0)


def test_per_epoch_scheduler_in_a_run_holds_the_rate_through_each_epoch():
    schedule = CosineLrSchedulerEpoch(0.1, 3, lr_min=1e-3, warmup_steps=1).schedule(steps_per_epoch=4)
    _close([float(schedule(step)) for step in range(20 * 4)], np.repeat(COS_EPOCH, 4))


def test_seed_stage_spellings():
    from keras_insightface.losses.margin import ArcfaceLoss
    from keras_insightface.training.stages import plan_stage, seed_stage_keys

    stage = {"loss": ArcfaceLoss(), "epoch": 2, "embLossTypes": ["centerloss", "triplet"], "embLossWeights": [0.01, 64],
             "tripletAlpha": 0.3}
    assert {key: value for key, value in seed_stage_keys(0, stage).items() if key not in ("loss", "epoch")} == {
        "alpha": 0.3, "centerloss": 0.01, "triplet": 64.0}
    assert plan_stage(0, stage).kind == "arcface"
    with pytest.raises(ValueError, match="embLossTypes entry 'focal'"):
        seed_stage_keys(1, {"epoch": 1, "embLossTypes": "focal"})
