"""A small run for the resume test, in its own process so it can be killed with SIGKILL.

    python tests/training/resume_run.py DATA_DIR OUT_DIR full|kill|term|resume [AT_STEP]

Appends one JSON line per trained batch (epoch, running loss) to OUT_DIR/steps_<mode>.jsonl. ``kill`` starts the
run and sends itself SIGKILL right after its AT_STEP-th batch (after that step's checkpoint, if any), having
written the pids of its child processes (decode workers) to OUT_DIR/children_<mode>.jsonl; ``term``
resumes and sends itself SIGTERM after its AT_STEP-th batch (a graceful stop); ``resume`` resumes to the end.
"""

import json
import os
import signal
import sys

import keras_insightface  # noqa: F401  (JAX backend)

import keras  # noqa: E402

from keras_insightface.losses.margin import ArcfaceLoss, CurricularFaceLoss  # noqa: E402
from keras_insightface.training.train import Train  # noqa: E402


class RecordSteps(keras.callbacks.Callback):
    def __init__(self, path, kill_at, signum):
        super().__init__()
        self.path, self.kill_at, self.signum, self.epoch = path, kill_at, signum, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        with open(self.path) as f:
            count = sum(1 for _ in f)
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "loss": float(logs["loss"])}) + "\n")
        if self.kill_at and count + 1 == self.kill_at:
            with open(self.path.replace("steps_", "children_"), "w") as f:  # the decode workers left behind
                f.write(" ".join(children(os.getpid())))
            os.kill(os.getpid(), self.signum)


def children(pid):
    """Pids of the processes ``pid`` started (Linux /proc)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += f.read().split()
    return found


def main(data_dir, out_dir, mode, kill_at=0):
    steps_file = os.path.join(out_dir, f"steps_{mode}.jsonl")
    open(steps_file, "a").close()
    trainer = Train(
        data_dir, "run.keras", basic_model="r18_tiny", emb_shape=16, batch_size=16, lr_base=0.1, lr_min=1e-4,
        lr_warmup_steps=1, num_workers=int(os.environ.get("RESUME_WORKERS", "0")), checkpoint_dir=out_dir,
        checkpoint_every_steps=2, random_status=2, verbose=0,
    )
    schedule = [{"loss": CurricularFaceLoss(scale=16), "epoch": 2}, {"loss": ArcfaceLoss(scale=32), "epoch": 1}]
    try:
        signum = signal.SIGTERM if mode == "term" else signal.SIGKILL
        trainer.train(schedule, resume=mode in ("term", "resume"), callbacks=[RecordSteps(steps_file, int(kill_at), signum)])
    finally:
        trainer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
