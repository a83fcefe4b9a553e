"""``make gpu``: installs JAX's CUDA build, then says which devices JAX sees, and fails with the reason when none is
a GPU (here, on the CPU machine, that second part is what can run)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_installs_the_cuda_build_and_reports_the_devices():
    steps = subprocess.run(["make", "-n", "-s", "gpu"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = [line for line in steps.stdout.splitlines() if line.strip()]
    assert any('pip install -q -e ".[cuda]"' in line for line in lines)
    check = lines[-1]
    assert check.startswith(".venv/bin/python -c ")
    command = check[len(".venv/bin/python -c "):].strip()
    result = subprocess.run(f"{sys.executable} -c {command}", shell=True, capture_output=True, text=True,
                            env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert "sees 1 device(s): cpu:cpu" in result.stdout
    assert result.returncode == 1 and "no GPU visible to JAX: check nvidia-smi" in result.stderr
