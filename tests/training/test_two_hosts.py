"""Scale-out over 2 processes (hosts): a run whose hosts stop together and resume exactly, and a checkpoint that
needs the same number of hosts. The hosts run as subprocesses (tests/training/multihost_run.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


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
