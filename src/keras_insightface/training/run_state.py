"""``RunState``: what one training run has done so far, the one object the stage loop and its callbacks share.

Example:
    >>> import contextlib, io
    >>> state, printed = RunState(last_checkpoint="run_state (end of epoch 1)"), io.StringIO()
    >>> with contextlib.redirect_stdout(printed):
    ...     state.stop(None, "Loss is NaN or Inf", epoch=1, batch=4)
    >>> state.stopped, printed.getvalue().split(": ", 1)[0].strip()
    (True, '>>>> Loss is NaN or Inf at epoch 2, batch 4')
"""

import dataclasses


@dataclasses.dataclass
class RunState:
    """The run's progress across stages.

    Attributes:
        history: the seed-style per-epoch lists (``lr``, ``loss``, ``accuracy``, evaluation results, ...) of every
            epoch of every stage; written to ``<name>_hist.json`` and kept in checkpoints.
        stop_reason: why the run stopped early (a NaN loss, a collapsed loss scale, a stop signal); ``None`` while
            it runs. Once set, nothing more is recorded or saved.
        last_checkpoint: the last full-state checkpoint written, with its position, as the messages name it.
        signal: a stop signal (``SIGINT`` / ``SIGTERM``) received and not yet acted on.
        stage: the 1-based stage being trained.
        best_model_path: the best basic model of the first evaluation set (without one: the latest basic model).
        epoch: the run's epoch count at the end of the last stage done (where a next ``train`` call continues).
    """

    history: dict = dataclasses.field(default_factory=dict)
    stop_reason: str | None = None
    last_checkpoint: str | None = None
    signal: str | None = None
    stage: int = 1
    best_model_path: str | None = None
    epoch: int = 0

    @property
    def stopped(self):
        return self.stop_reason is not None

    def stop(self, model, reason, epoch, batch):
        """Stop the run (``fit`` returns after this step, nothing more is recorded or saved) and say why, where
        (0-based ``epoch``, ``batch`` batches done) and which checkpoint to continue from."""
        self.stop_reason = reason
        if model is not None:
            model.stop_training = True
        where = self.last_checkpoint or "none written yet"
        print(f"\n>>>> {reason} at epoch {epoch + 1}, batch {batch}: training stops and nothing more is saved. "
              f"Last good checkpoint: {where}")

    def stop_for_signal(self, model, checkpoint_dir):
        """Stop the run for the received ``signal`` once its position is checkpointed in ``checkpoint_dir``."""
        self.stop_reason = self.signal
        model.stop_training = True
        print(f"\n>>>> {self.signal}: stopped after this batch; checkpoint {checkpoint_dir}, "
              "continue with --resume / train(..., resume=True)")
