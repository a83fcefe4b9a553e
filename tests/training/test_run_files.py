"""A run's claim on its files: one process at a time, and no new run over an old one's history or checkpoints."""

import json
import os
import signal
import subprocess
import sys

import pytest

from keras_insightface import ArcfaceLoss, Train
from keras_insightface.errors import DataError
from keras_insightface.training.run_files import RunLock, check_new_run
from keras_insightface.training.run_state import RunState
from keras_insightface.training.runner import claim_run, release_run, run_stages

HOLDER = """
import sys, time
from keras_insightface.training.run_files import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    prefix = str(tmp_path / "r50")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, prefix], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=rf"r50.lock: the run r50 is in use by process {holder.pid} on "):
            RunLock(prefix).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(prefix).acquire()  # a killed holder leaves no stale lock
    assert open(prefix + ".lock").read().split()[0] == str(os.getpid())
    lock.acquire()  # re-entrant for its holder
    lock.release()
    lock.release()
    assert open(prefix + ".lock").read() == ""


def test_a_new_run_does_not_start_over_an_old_one(tmp_path, capsys):
    prefix = str(tmp_path / "r50")
    check_new_run(prefix, overwrite=False)  # nothing there yet
    (tmp_path / "r50_hist.json").write_text("{}")
    (tmp_path / "r50_state").mkdir()
    (tmp_path / "r50_state.1").mkdir()
    (tmp_path / "r50x_state").mkdir()  # another run's
    with pytest.raises(DataError, match="r50_hist.json: a run named r50 already trained here; continue it with "
                                        "--resume"):
        check_new_run(prefix, overwrite=False)
    check_new_run(prefix, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r50_hist.json", "r50x_state"]
    assert "overwrite: starting r50 over" in capsys.readouterr().out


def _trainer(tiny_data, tmp_path, **options):
    return Train(str(tiny_data / "rec"), "tiny.keras", basic_model="r18_tiny", batch_size=16, emb_shape=16,
                 num_workers=0, checkpoint_dir=str(tmp_path), verbose=0, **{"append_history": False, **options})


def test_train_claims_the_run_before_writing_anything(tiny_data, tmp_path):
    """Train refuses to start over an existing run; resume, overwrite or a continued epoch count are allowed, and
    a run continued at initial_epoch keeps its earlier epochs in the history."""
    history = {"loss": [3.0, 2.0, 1.0], "lfw": [0.5, 0.6, 0.7]}
    (tmp_path / "tiny_hist.json").write_text(json.dumps(history))
    trainer = _trainer(tiny_data, tmp_path)
    try:
        with pytest.raises(DataError, match="tiny_hist.json: a run named tiny already trained here"):
            trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
        assert json.loads((tmp_path / "tiny_hist.json").read_text()) == history  # untouched
        claim_run(trainer.run, initial_epoch=2)  # the seed's way to continue: allowed
        release_run(trainer.run)
        state = RunState(history={})
        run_stages(trainer.run, [], state, initial_epoch=2)
        assert state.history == {"loss": [3.0, 2.0], "lfw": [0.5, 0.6]}
    finally:
        trainer.close()
    trainer = _trainer(tiny_data, tmp_path, overwrite=True)
    try:
        claim_run(trainer.run)
        with pytest.raises(DataError, match="tiny.lock: the run tiny is in use by process"):
            claim_run(_trainer(tiny_data, tmp_path, overwrite=True).run)  # a second run of the name, same time
        release_run(trainer.run)
    finally:
        trainer.close()
    later = _trainer(tiny_data, tmp_path, overwrite=True)  # the lock was released: a later run may claim it
    claim_run(later.run)
    release_run(later.run)
    later.close()
