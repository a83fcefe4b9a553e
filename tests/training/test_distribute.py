"""Scale-out: 8 virtual CPU devices in one process (data parallel, class-sharded head) and 2 processes (hosts).

XLA's device count is fixed when JAX starts, so the runs happen in subprocesses (tests/training/*_run.py).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _eight_devices(script, *args):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(Path(__file__).parents[2])}
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


def _two_hosts(mode, data, out, cache):
    """Both hosts of a 2-process run (tests/training/multihost_run.py); their JSON lines and stdouts."""
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).parents[2])}
    script = str(Path(__file__).with_name("multihost_run.py"))
    hosts = [subprocess.Popen([sys.executable, script, str(i), str(port), str(data), str(out), mode, str(cache)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [host.communicate(timeout=900) for host in hosts]
    for host, (_, stderr) in zip(hosts, outputs):
        assert host.returncode == 0, stderr[-3000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs], [o for o, _ in outputs]


def _without_speed(history):
    return {key: values for key, values in history.items() if key != "img/s"}


def test_two_hosts_train_stop_together_and_resume_exactly(tiny_data, tmp_path):
    """Two JAX processes of 2 CPU devices each (gloo), the head kernel split over all 4 devices (across hosts):
    an uninterrupted 2-epoch run; the same run where only host 1 gets SIGTERM, which both hosts must act on at
    the same batch; and its resume, which must reproduce the uninterrupted losses and history. Evaluation splits
    its batches over both hosts: its embeddings equal the saved model's on one device."""
    import keras_insightface  # noqa: F401
    from keras_insightface.evaluation.verification import VerificationSet
    from keras_insightface.saving import load_model
    from keras_insightface.training.checkpoint import STATE_FILE

    cache = tmp_path / "xla_cache"
    full, _ = _two_hosts("full", tiny_data, tmp_path / "full", cache)
    for host in full:
        assert host["devices"] == 4 and host["global_batch"] == 8 and host["host_batch"] == 4
        assert host["spec"] == "P(None, 'model')" and host["addressable"] is False  # the kernel spans both hosts
    assert full[0]["losses"] == full[1]["losses"] and len(full[0]["losses"]) == 16  # 2 epochs of 8 global batches
    assert full[0]["embeddings"] == full[1]["embeddings"]
    saved = load_model(str(tmp_path / "full" / "multihost_basic_stage_1_latest.keras"))  # written by host 0
    images = VerificationSet(str(tiny_data / "tiny_val.bin")).images[:16]
    np.testing.assert_allclose(full[0]["embeddings"], saved.predict_on_batch(images), rtol=1e-4, atol=1e-4)
    with open(tmp_path / "full" / "multihost_hist.json") as f:
        assert _without_speed(json.load(f)) == _without_speed(full[0]["history"])

    stopped, stdouts = _two_hosts("stop", tiny_data, tmp_path / "run", cache)
    assert all("SIGTERM: stopped after this batch" in out for out in stdouts)  # host 0 was not signalled itself
    with open(tmp_path / "run" / "multihost_state" / STATE_FILE) as f:
        state = json.load(f)
    # signalled after epoch 2's batch 3; the hosts compare requests every 2 batches, so both stop after batch 4
    assert (state["epoch"], state["step"]) == (1, 4)
    assert len(state["iterators"]) == 2  # one loader state per host: the same position, each in its own shard
    assert stopped[0]["losses"] == stopped[1]["losses"]
    resumed, _ = _two_hosts("resume", tiny_data, tmp_path / "run", cache)
    assert resumed[0]["losses"] == resumed[1]["losses"]
    # the step Keras runs after the stop is not recorded: the run continues from batch 4 of epoch 2
    np.testing.assert_allclose(stopped[0]["losses"][:12] + resumed[0]["losses"], full[0]["losses"], rtol=1e-6)
    assert _without_speed(resumed[0]["history"]) == _without_speed(full[0]["history"])


def test_resume_needs_the_same_number_of_hosts(tmp_path):
    from keras_insightface.errors import DataError
    from keras_insightface.training.checkpoint import STATE_FILE, load_meta

    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 1, "iterators": [{"step": 3}, {"step": 3}]}))
    with pytest.raises(DataError, match="written by 2 host.*this run has 1.*resume on the same number of hosts"):
        load_meta(str(tmp_path))
