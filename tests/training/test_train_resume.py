"""Train's resume on a tiny RecordIO dataset: a run killed mid-epoch reproduced exactly, a config-file run resumed
and copied, an epoch stopped by a callback, one trace per stage across resume (beside test_train.py, so the test
runner can run the two files at once)."""

import glob
import json
import os
import re
import time

import keras
import pytest

from keras_insightface import ArcfaceLoss
from keras_insightface.errors import DataError
from tests.training.test_train import _train


def test_config_file_run_with_overrides_saves_the_resolved_config(tiny_data, tmp_path, capsys):
    from keras_insightface.cli import main

    config = tmp_path / "run.toml"
    config.write_text(f"""
[train]
data_path = "{tiny_data / 'rec'}"
save_path = "from_config.keras"
eval_paths = ["{tiny_data / 'tiny_val.bin'}"]
basic_model = "r18_tiny"
emb_shape = 16
batch_size = 16
num_workers = 0
checkpoint_dir = "{tmp_path}"
verbose = 0

[[stage]]
loss = "CosFaceLoss"
loss_config = {{scale = 16}}
epoch = 3

[[stage]]
loss = "ArcfaceLoss"
epoch = 1
""")
    main(["train", str(config), "--set", "stage.0.epoch=1", "--set", "train.lr_base=0.05"])
    resolved = json.loads((tmp_path / "from_config_config.json").read_text())
    assert resolved["stage"][0]["epoch"] == 1 and resolved["train"]["lr_base"] == 0.05
    history = json.loads((tmp_path / "from_config_hist.json").read_text())
    assert len(history["loss"]) == 2 and history["lr"][0] <= 0.05
    # the run is complete: resuming finds its last checkpoint past the final stage and trains nothing more
    capsys.readouterr()
    assert main(["train", str(config), "--set", "stage.0.epoch=1", "--resume"]) == 0
    assert json.loads((tmp_path / "from_config_hist.json").read_text()) == history
    assert "the run from_config is finished" in capsys.readouterr().out  # said at once, nothing built
    assert len(glob.glob(str(tmp_path / "from_config_basic_tiny_val_epoch_*.keras"))) == 1
    # --resume DIR finds the run's resolved config there: no other flags needed
    assert main(["train", "--resume", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "from_config_hist.json").read_text()) == history
    # a copied run resumes in the copy and writes there, never into the folder its config was first written in
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tmp_path.glob("from_config*"):
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy / path.name)
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("from_config*")}
    capsys.readouterr()
    assert main(["train", "--resume", str(copy), "--set", "stage.1.epoch=2"]) == 0  # one more epoch, in the copy
    assert f"resuming the run in {copy}" in capsys.readouterr().out
    assert len(json.loads((copy / "from_config_hist.json").read_text())["loss"]) == 3
    assert json.loads((copy / "from_config_config.json").read_text())["train"]["checkpoint_dir"] == str(copy)
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("from_config*")} == before
    (tmp_path / "other_config.json").write_text("{}")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "2 run configs" in capsys.readouterr().err


def _run(script, *args, env=None, log=None, cleanup=True):
    """Run ``script`` in its own session; afterwards (with ``cleanup``) kill what is left of the session, so a
    failing run leaves nothing behind, and return the exit code."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__))), **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, script, *map(str, args)], env=env, stdout=out, stderr=out,
                                   start_new_session=True)
        try:
            return process.wait(timeout=900)
        finally:
            try:
                if cleanup or process.returncode is None:
                    os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _steps(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _alive(pid):
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_mid_epoch_then_resume_reproduces_the_run(tiny_data, tmp_path, workers=1):
    """Killed mid-epoch (decode in a worker process, augmentation on), its newest checkpoint then corrupted,
    resumed (from the checkpoint before), stopped by SIGTERM, resumed: the same per-batch losses and history as
    one uninterrupted run, and the killed run's decode worker gone."""
    script = os.path.join(os.path.dirname(__file__), "resume_run.py")
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full_dir.mkdir()
    killed_dir.mkdir()
    env, log = {"RESUME_WORKERS": str(workers)}, tmp_path / "run.log"
    assert _run(script, tiny_data / "rec", full_dir, "full", env=env, log=log) == 0, log.read_text()[-3000:]
    # SIGKILL after global step 7: epoch 2, batch 3 of 4; the last checkpoint is the one after step 6
    killed = _run(script, tiny_data / "rec", killed_dir, "kill", 7, env=env, log=log, cleanup=False)
    workers_left = (killed_dir / "children_kill.jsonl").read_text().split()
    deadline = time.time() + 15
    while any(map(_alive, workers_left)) and time.time() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in workers_left if _alive(pid)]
    for pid in alive:
        os.kill(int(pid), 9)
    assert killed == -9, log.read_text()[-3000:]
    assert len(workers_left) >= workers and not alive, f"decode workers {alive} outlived the killed trainer"
    # the newest checkpoint (after step 6) truncated, as a disk fault would: the one after step 4 is used
    model_file = killed_dir / "run_state" / "model.npz"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    # resumed at step 5, SIGTERM after its 2nd batch (global 6): the checkpoint after step 6 is written as batch 7
    # starts, which Keras still runs (recorded, then discarded: the resume trains it again)
    assert _run(script, tiny_data / "rec", killed_dir, "term", 2, env=env, log=log) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "SIGTERM: stopped after this batch" in text
    assert re.search(r"checkpoint .*run_state skipped: model.npz is 1000 bytes, the manifest says \d+", text), text
    assert _run(script, tiny_data / "rec", killed_dir, "resume", env=env, log=log) == 0, log.read_text()[-3000:]
    full = _steps(full_dir / "steps_full.jsonl")
    assert len(full) == 12  # 3 epochs of 4 batches over two stages
    assert _steps(killed_dir / "steps_kill.jsonl") == full[:7]
    assert _steps(killed_dir / "steps_term.jsonl") == full[4:7]  # from the checkpoint after step 4, bit for bit
    assert _steps(killed_dir / "steps_resume.jsonl") == full[6:]  # from the SIGTERM checkpoint after step 6
    history = {name: json.loads((d / "run_hist.json").read_text())
               for name, d in (("full", full_dir), ("r", killed_dir))}
    for run in history.values():
        assert len(run.pop("img/s")) == 3  # wall-clock throughput, the one thing allowed to differ
    assert history["r"] == history["full"]  # epoch losses, accuracy, lr: the resumed run's epoch 2 is whole


def test_resume_without_a_checkpoint_is_an_error(tiny_data, tmp_path):
    trainer = _train(tiny_data, tmp_path, eval_paths=[])
    try:
        with pytest.raises(DataError, match="no checkpoint to resume from"):
            trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}], resume=True)
    finally:
        trainer.close()


def test_a_callback_that_stops_mid_epoch_leaves_a_checkpoint_of_where_it_stopped(tiny_data, tmp_path):
    """keras's own way to stop (``model.stop_training`` from a callback, e.g. a time budget) mid-epoch: the epoch-end
    checkpoint records the batch reached, not a whole epoch, and a resume continues from that batch."""
    from keras_insightface.training.checkpoint import latest_state_dir, load_meta

    class StopAfterTwo(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    trainer = _train(tiny_data, tmp_path, eval_paths=[])
    try:
        trainer.train([{"loss": ArcfaceLoss(), "epoch": 1}], callbacks=[StopAfterTwo()])  # 4 steps of 16
        meta = load_meta(latest_state_dir(trainer.run.state_dir))
        assert (meta["epoch"], meta["step"]) == (0, 2)
        history = trainer.train([{"loss": ArcfaceLoss(), "epoch": 1}], resume=True)
        assert len(history["loss"]) == 1
        assert (load_meta(latest_state_dir(trainer.run.state_dir))["epoch"], trainer.stop_reason) == (1, None)
    finally:
        trainer.close()


def test_each_stage_traces_its_step_once_across_epochs_checkpoints_and_resume(tiny_data, tmp_path, monkeypatch):
    """The compiled step is made once per stage and reused by every epoch and mid-epoch checkpoint (a retrace is a
    recompilation: seconds on a CPU, a minute for an r100 on a GPU); a resume traces the stage it continues once."""
    from keras_insightface.training import task

    traces, trace_step = [], task.FaceTask.train_step

    def counted(self, *args, **kwargs):
        traces.append(1)  # train_step runs in Python only while jax traces it
        return trace_step(self, *args, **kwargs)

    monkeypatch.setattr(task.FaceTask, "train_step", counted)
    trainer = _train(tiny_data, tmp_path, eval_paths=[], checkpoint_every_steps=2)
    try:
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 3}, {"loss": ArcfaceLoss(scale=32), "epoch": 2}])
        assert len(traces) == 2
        traces.clear()
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 3}, {"loss": ArcfaceLoss(scale=32), "epoch": 3}],
                      resume=True)
        assert len(traces) == 1
    finally:
        trainer.close()
