"""Scale-out: 8 virtual CPU devices in one process (data parallel, class-sharded head); two processes (hosts) are in
test_two_hosts.py (a file of its own, so the test runner can run it beside these).

XLA's device count is fixed when JAX starts, so the runs happen in subprocesses (tests/training/*_run.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _eight_devices(script, *args):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags, "KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).parents[2])}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_class_sharded_head_equals_single_device(model_parallel=4):
    result = _eight_devices("sharded_head_run.py", model_parallel)
    assert result["devices"] == 8
    assert result["spec"] == "P(None, 'model')"
    assert result["shard_shape"] == [32, 64 // model_parallel]  # each device holds classes / model columns
    assert result["loss_sharded"] == pytest.approx(result["loss_single"], rel=1e-5)
    assert result["max_weight_diff"] < 1e-5  # same gradients: plain SGD with lr 1 applies them as they are


def test_train_scales_out_and_resumes_on_another_device_count(tiny_data, tmp_path):
    """One run three ways on 8 virtual devices (tests/training/scale_out_run.py): one device, class-sharded head
    over 4 (batch over 8), and the default data parallel over all 8, stopped after epoch 1 and resumed here in a
    1-device process with the same global batch. Augmentation is on, so its random draws must not depend on the
    sharding either."""
    import keras

    from keras_insightface import ArcfaceLoss, Train

    data, out = tiny_data, tmp_path / "out"
    out.mkdir()
    result = _eight_devices("scale_out_run.py", data, out)
    assert result["devices"] == 8
    # batches go to the devices one ahead, split as the distribution says, and Keras uses them as they are
    assert result["placed"] == {"spec": "P('batch', None, None, None)", "devices": 8, "shard_rows": 2,
                                "labels_devices": 8, "passes_through": True}
    single = result["single"]["losses"]
    assert len(single) == 8 and single[-1] < single[0] / 2  # 2 epochs of 4 batches, and it learns
    for name in ("data_parallel", "model_parallel"):
        # the same steps: equal up to float32 summation order
        np.testing.assert_allclose(result[name]["losses"], single[:4], rtol=1e-5)
        assert result[name]["global_batch"] == 16 and result[name]["kernel_devices"] == 8
    assert result["data_parallel"]["spec"] == "P(None, None)"  # replicated classifier
    assert result["model_parallel"]["spec"] == "P(None, 'model')" and result["model_parallel"]["shard_shape"] == [16, 2]

    class Losses(keras.callbacks.Callback):
        values = []

        def on_train_batch_end(self, batch, logs=None):
            self.values.append(float(logs["loss"]))

    options = dict(eval_paths=[str(data / "tiny_val.bin")], basic_model="r18_tiny", emb_shape=16, lr_base=0.02,
                   lr_min=1e-4, lr_warmup_steps=1, num_workers=0, checkpoint_dir=str(out), random_status=2, verbose=0,
                   optimizer="sgd", lr_schedule="cosine", model_preset="arcface_torch")
    schedule = [{"loss": ArcfaceLoss(scale=16), "epoch": 2}]
    trainer = Train(str(data / "rec"), "dp.keras", batch_size=4, **options)  # 1 device: a global batch of 4
    try:
        with pytest.raises(ValueError, match="global batch of 16, this one has 4 .* resume with batch_size=16"):
            trainer.train(schedule, resume=True)
    finally:
        trainer.close()
    trainer = Train(str(data / "rec"), "dp.keras", batch_size=16, **options)
    try:
        history = trainer.train(schedule, resume=True, callbacks=[Losses()])
    finally:
        trainer.close()
    # epoch 2 on one device continues the 8-device epoch 1: the single-device run's epoch 2, up to the float32
    # summation differences epoch 1 left, which the updates amplify a little
    np.testing.assert_allclose(Losses.values, single[4:], rtol=2e-3)
    assert len(history["loss"]) == 2  # epoch 1 from the 8-device run, epoch 2 from this one


def test_train_batches_are_placed_one_ahead_and_skips_counted_once():
    """With a placer, batch k+1 is on its way to the devices before batch k is handed to the step; skipped images
    are counted for batches handed on, so a read-ahead batch rewound at the end of a ``fit`` is counted once."""
    from keras_insightface.training.runner import TrainBatches

    events = []

    class Loader:
        def __init__(self):
            self.position = 0

        def __iter__(self):
            while True:
                self.position += 1
                yield np.full(2, self.position), np.arange(2), self.position * 10

        def get_state(self):
            return self.position

        def set_state(self, state):
            self.position = state

    class Skipped:
        def __init__(self):
            self.counts = []

        def record(self, skipped):
            self.counts.append(skipped)

    def place(batch):
        events.append(("placed", int(batch[0][0])))
        return batch

    loader = Loader()
    skipped = Skipped()
    batches = TrainBatches(loader, skipped, place=place)
    stream = iter(batches)
    for _ in range(3):
        images, _ = next(stream)
        events.append(("step", int(images[0])))
    assert events == [("placed", 1), ("placed", 2), ("step", 1), ("placed", 3), ("step", 2), ("placed", 4),
                      ("step", 3)]
    assert skipped.counts == [10, 20, 30] and batches.fetched == 4
    batches.rewind(3)  # the fit trained 3 batches: the loader goes back to after batch 3
    assert loader.position == 3 and batches.fetched == 3
    images, _ = next(iter(batches))
    assert int(images[0]) == 4 and skipped.counts == [10, 20, 30, 40]

    loader, skipped = Loader(), Skipped()  # no placer: each batch handed on as it comes (Keras places it)
    images, _ = next(iter(TrainBatches(loader, skipped)))
    assert int(images[0]) == 1 and loader.position == 1 and skipped.counts == [10]  # nothing read ahead
