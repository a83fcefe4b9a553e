"""Checkpoint files: unreadable ones end with an error naming the file; the last K are kept, each verified
against its manifest, and a write interrupted or failed at any point leaves a complete checkpoint."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from keras_insightface.errors import DataError
from keras_insightface.training.checkpoint import _write, checkpoint_dirs, latest_state_dir, load_meta, read_variable


def test_a_truncated_state_file_is_named(tmp_path):
    state = tmp_path / "run_state"
    state.mkdir()
    text = json.dumps({"epoch": 1, "iterators": [{}], "variable_paths": ["norm_dense/norm_dense_w"]})
    (state / "state.json").write_text(text[: len(text) // 2])  # killed mid-write by something other than us
    for read in (load_meta, lambda directory: read_variable(directory, "norm_dense/norm_dense_w")):
        with pytest.raises(DataError, match=r"run_state/state.json: unreadable checkpoint state \(.*\); resume "):
            read(str(state))


def _checkpoint(directory, step, keep=2):
    arrays = [{"v0": np.full(3, step, np.float32)}, {"v0": np.zeros(2, np.float32)}, {"v0": np.zeros(1)}]
    _write(str(directory), arrays, {"step": step, "iterators": [{}]}, keep)


def _step(directory):
    return json.loads((Path(directory) / "state.json").read_text())["step"]


def test_the_last_k_checkpoints_are_kept_and_resume_falls_back_to_the_newest_intact(tmp_path):
    state = tmp_path / "run_state"
    for step in range(1, 5):
        _checkpoint(state, step, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_state", "run_state.1", "run_state.2"]
    assert [_step(d) for d in checkpoint_dirs(str(state))] == [4, 3, 2]
    manifest = json.loads((state / "manifest.json").read_text())["files"]
    assert sorted(manifest) == ["metrics.npz", "model.npz", "optimizer.npz", "state.json"]
    reports = []
    assert latest_state_dir(str(state), reports.append) == str(state) and reports == []

    model = state / "model.npz"
    model.write_bytes(model.read_bytes()[:50])  # truncated by a full disk or a copy cut short
    data = bytearray((tmp_path / "run_state.1" / "optimizer.npz").read_bytes())
    data[-30] ^= 0xFF  # one flipped byte, same size
    (tmp_path / "run_state.1" / "optimizer.npz").write_bytes(bytes(data))
    assert latest_state_dir(str(state), reports.append) == str(tmp_path / "run_state.2")
    assert re.search(r"run_state skipped: model.npz is 50 bytes, the manifest says \d+", reports[0])
    assert re.search(r"run_state.1 skipped: optimizer.npz differs from its checksum", reports[1])
    shutil.rmtree(tmp_path / "run_state.2")
    assert latest_state_dir(str(state), reports.append) is None  # nothing intact: resume says so


def test_a_checkpoint_write_interrupted_at_any_point_leaves_a_complete_one(tmp_path, monkeypatch):
    """A kill between any two renames of the rotation (simulated: each rename in turn fails) leaves the newest
    complete checkpoint or the one before, never a half-written folder under a checkpoint name."""
    import os

    from keras_insightface.training import checkpoint

    real_replace = os.replace
    for fail_at in range(3):
        base = tmp_path / f"case{fail_at}"
        base.mkdir()
        state = base / "run_state"
        _checkpoint(state, 1)
        _checkpoint(state, 2)
        calls = []

        def replace(src, dst, calls=calls, fail_at=fail_at):
            calls.append(dst)
            if len(calls) > fail_at:
                raise KeyboardInterrupt("killed")  # the process ends here
            real_replace(src, dst)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            _checkpoint(state, 3)
        monkeypatch.setattr(checkpoint.os, "replace", real_replace)
        found = latest_state_dir(str(state), lambda message: None)
        assert found is not None and _step(found) in (2, 3) and checkpoint.verify(found) is None
        _checkpoint(state, 4)  # the next write goes on from there
        assert _step(latest_state_dir(str(state))) == 4


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous(tmp_path, monkeypatch):
    state = tmp_path / "run_state"
    _checkpoint(state, 1)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(DataError, match="run_state: cannot write the checkpoint \\(No space left on device\\); the "
                                        "previous checkpoints are kept"):
        _checkpoint(state, 2)
    assert _step(latest_state_dir(str(state))) == 1 and not (tmp_path / "run_state.tmp").exists()
