"""Class-sharded head on 8 virtual CPU devices: kernel split on the class axis, same loss and update as one device.

XLA's device count is fixed when JAX starts, so the run happens in a subprocess (tests/training/sharded_head_run.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("model_parallel", [4, 8])
def test_class_sharded_head_equals_single_device(model_parallel):
    script = Path(__file__).with_name("sharded_head_run.py")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    run = subprocess.run([sys.executable, str(script), str(model_parallel)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert result["spec"] == "P(None, 'model')"
    assert result["shard_shape"] == [32, 64 // model_parallel]  # each device holds classes / model columns
    assert result["loss_sharded"] == pytest.approx(result["loss_single"], rel=1e-5)
    assert result["max_weight_diff"] < 1e-5  # same gradients: plain SGD with lr 1 applies them as they are
