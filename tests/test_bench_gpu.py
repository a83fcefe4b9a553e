"""``bench/gpu.sh --cpu``: the GPU benchmark's every step at tiny sizes prints its figures and writes its logs.

One run of the script (about a minute on 2 cores) feeds every check. References: JAX's own device list, the
profile written by ``jax.profiler`` as TensorFlow's ``XSpace`` protobuf reads it, and the figures ``bench/train.py``
and ``bench/embed_speed.py`` relate (a ratio is the quotient of the rates it names).
"""

import importlib.util
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    "devices": "cpu:cpu",
    "data_images": "images", "data_gen_s": "s", "data_gen_img/s": "img/s",
    "train_step_img/s": "img/s",
    "profile_img/s": "img/s", "profile_peak_gb": "GB_host_rss", "profile_trace_mb": "MB",
    "e2e_img/s": "img/s", "e2e_loop_img/s": "img/s", "e2e_engine_step_img/s": "img/s", "e2e_bare_img/s": "img/s",
    "e2e_step_ratio": "x", "e2e_loop_step_ratio": "x", "e2e_epoch_end_s": "s",
    "embed_jit_img/s": "img/s", "embed_ijbc_projected_s": "s", "embed_views_img/s": "img/s",
    "embed_views_overhead": "x", "embed_verification_img/s": "img/s",
    "big_head_pfc0.1_img/s": "img/s", "big_head_pfc0.1_peak_gb": "GB_host_rss",
    "big_head_full_img/s": "img/s", "big_head_full_peak_gb": "GB_host_rss",
    "total_s": "s",
}
LOGS = {"devices.txt", "data.log", "train_step.log", "e2e.log", "big_head.log", "embed.log", "profile.log",
        "profile.tar.gz"}


@pytest.fixture(scope="module")
def gpu_sh(tmp_path_factory):
    """``(stdout, {name: (value, unit)}, OUT folder)`` of one ``bash bench/gpu.sh --cpu``."""
    tmp = tmp_path_factory.mktemp("gpu_sh")
    env = {**os.environ, "OUT": str(tmp / "out"), "GPU_BENCH_WORK": str(tmp / "work"), "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--cpu"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            name, value, unit = line.split(maxsplit=3)[1:4]
            assert name not in results, f"{name} printed twice:\n{run.stdout}"
            results[name] = (value, unit)
    return run.stdout, results, tmp / "out"


def test_every_figure_is_a_number(gpu_sh):
    stdout, results, _ = gpu_sh
    assert "FAILED" not in stdout, stdout
    assert set(results) == set(FIGURES), stdout
    for name, unit in FIGURES.items():
        value, printed_unit = results[name]
        assert printed_unit == unit, (name, results[name])
        assert math.isfinite(float(value)) and float(value) > 0, (name, value)
    assert int(results["data_images"][0]) == 32 * 8  # the --cpu dataset: 32 identities x 8 faces


def test_ratios_are_the_quotients_of_the_rates(gpu_sh):
    _, results, _ = gpu_sh
    number = {name: float(value) for name, (value, _) in results.items()}
    assert number["e2e_step_ratio"] == pytest.approx(number["e2e_img/s"] / number["e2e_engine_step_img/s"], rel=0.01)
    assert number["e2e_loop_step_ratio"] == pytest.approx(
        number["e2e_loop_img/s"] / number["e2e_engine_step_img/s"], rel=0.01)
    assert number["embed_views_overhead"] == pytest.approx(
        number["embed_jit_img/s"] / number["embed_views_img/s"], rel=0.02)
    assert number["embed_ijbc_projected_s"] == pytest.approx(469_375 / number["embed_jit_img/s"], rel=0.01)


def test_logs_fit_what_the_device_tool_returns(gpu_sh):
    """8 files at most, named in letters, digits, '.', '_' and '-'; devices.txt lists the devices JAX lists."""
    _, results, out = gpu_sh
    files = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert files == LOGS
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)
    assert all((out / name).stat().st_size > 0 for name in files)
    import jax

    devices = (out / "devices.txt").read_text()
    for device in jax.devices("cpu"):
        assert f"jax device: {device.id} cpu" in devices
    assert results["devices"][0] == str(len(jax.devices("cpu")))


def test_profile_is_an_xspace_of_the_traced_steps(gpu_sh, tmp_path):
    """The trace in profile.tar.gz parses as TensorFlow's XSpace protobuf and holds the host's events."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorflow (the compat extra) holds the XSpace protobuf module")
    path = Path(spec.submodule_search_locations[0]) / "tsl" / "profiler" / "protobuf" / "xplane_pb2.py"
    module_spec = importlib.util.spec_from_file_location("xplane_pb2", path)
    xplane_pb2 = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(xplane_pb2)
    _, _, out = gpu_sh
    with tarfile.open(out / "profile.tar.gz") as archive:
        members = [m for m in archive.getmembers() if m.name.endswith(".xplane.pb")]
        assert len(members) == 1, archive.getnames()
        space = xplane_pb2.XSpace.FromString(archive.extractfile(members[0]).read())
    events = {plane.name: sum(len(line.events) for line in plane.lines) for plane in space.planes}
    assert any(name.startswith("/host:CPU") and count > 0 for name, count in events.items()), events
    assert "busiest events" in (out / "profile.log").read_text()
