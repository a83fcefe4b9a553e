"""The stage loop of a run: each stage's ``FaceTask`` compiled and fitted in turn, resume from a full-state
checkpoint, and the callbacks, which share the run's ``RunState``.

``run_stages(run, schedule, state)`` is what ``Train.train`` does: ``run`` holds the config, the model parts, the
data and the run's files, ``state`` the history and why the run stopped. A resumed run restores the stage it was
in (its optimizer and loader position) and continues mid-epoch with the same batches.
"""

import contextlib
import dataclasses
import json
import os

import keras

from keras_insightface.errors import DataError
from keras_insightface.hosts import is_primary
from keras_insightface.training import callbacks as cbs
from keras_insightface.training.checkpoint import latest_state_dir, load_meta, restore_model_and_optimizer
from keras_insightface.training.distribute import batch_placer
from keras_insightface.training.run_files import RunLock, check_new_run
from keras_insightface.training.run_log import tee_console
from keras_insightface.training.run_summary import summary_lines
from keras_insightface.training.run_data import mine_data, use_data
from keras_insightface.training.stages import plan_stage, prepare_schedule


@dataclasses.dataclass
class Run:
    """What the stage loop works on (``setup.build_run`` makes it from a ``TrainConfig``).

    Attributes:
        config: the run's ``TrainConfig``.
        parts: the ``StageParts`` (basic model, heads, optimizer) each stage is built from.
        source, loader: the training data and its grain loader.
        distribution: the ``keras.distribution`` the run trains under, or None.
        prefix: the run's file prefix: ``<prefix>_hist.json``, ``<prefix>_state/``, ``<prefix>_basic_*.keras``.
        eval_callbacks: the ``eval_callback`` of each verification pack.
        skipped_images: the ``SkippedImages`` callback the loader's replaced records are reported to.
        teacher_embeddings: stored teacher embeddings by record (distill-data), or None.
        replicas: data-parallel devices (the global batch is ``batch_size`` times this).
        iterator: the loader's iterator (``get_state`` / ``set_state``), opened by the first stage.
        lock: the ``RunLock`` of the run's files, held while it trains; ``claimed``: whether this run has checked
            (once) that it does not start over another run's files (``claim_run``).
        last_loss: the loss of the last stage trained, reused by a later stage without one (the seed's rule).
        grouped: whether the loader batches identity groups (stages with a triplet term).
    """

    config: object
    parts: object
    source: object
    loader: object
    distribution: object
    prefix: str
    eval_callbacks: list
    skipped_images: object
    teacher_embeddings: object = None
    replicas: int = 1
    iterator: object = None
    lock: object = None
    claimed: bool = False
    last_loss: object = None
    grouped: bool = False

    @property
    def global_batch_size(self):
        return self.config.data.batch_size * self.replicas

    @property
    def steps_per_epoch(self):
        return self.loader.steps_per_epoch

    @property
    def verbose(self):
        return self.config.run.verbose if is_primary() else 0  # one progress bar and report for all hosts

    @property
    def state_dir(self):
        return self.prefix + "_state"

    @property
    def history_path(self):
        return self.prefix + "_hist.json"

    @property
    def plot_path(self):
        """The run's training plot (``write_plot``)."""
        return self.prefix + ".png"

    @property
    def log_path(self):
        """The run's log: every console line of its training (``run_log.py``)."""
        return self.prefix + "_train.log"

    @property
    def full_model_path(self):
        """The seed's ``checkpoints/<save_path>``: ``<prefix>.h5`` when ``save_path`` names an ``.h5``, else
        ``<prefix>.keras``."""
        return self.prefix + (".h5" if self.config.run.save_path.endswith(".h5") else ".keras")

    def scope(self):
        """The context every model variable of the run is made and trained in: the distribution's scope."""
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()


class TrainBatches:
    """The loader's batches as ``fit`` data, ``(images, labels)`` or ``((images, teacher embeddings), labels)``,
    remembering the loader state after each batch fetched, so a checkpoint stores exactly the position of the
    batches trained on (Keras may read ahead).

    With ``place`` (``distribute.batch_placer``) each batch is sent to the devices one batch ahead: the next
    batch's transfer starts before the current one is handed to the step. Skipped images are then counted when a
    batch is handed on, so the batch placed ahead at a ``fit``'s end, rewound, counts once.
    """

    KEEP = 16

    def __init__(self, iterator, skipped_images, embeddings=None, place=None):
        self.iterator, self.skipped_images, self.embeddings, self.place = iterator, skipped_images, embeddings, place
        self.fetched, self.states = 0, {}

    def __iter__(self):
        pending = None
        for images, labels, skipped, *records in self.iterator:
            self.fetched += 1
            if hasattr(self.iterator, "get_state"):
                self.states[self.fetched] = self.iterator.get_state()
                self.states.pop(self.fetched - self.KEEP, None)
            batch = ((images, self.embeddings[records[0]]) if self.embeddings is not None else images), labels
            if self.place is None:
                self.skipped_images.record(skipped)
                yield batch
                continue
            batch = self.place(batch)
            if pending is not None:
                yield self._hand_on(*pending)
            pending = batch, skipped
        if pending is not None:
            yield self._hand_on(*pending)

    def _hand_on(self, batch, skipped):
        self.skipped_images.record(skipped)
        return batch

    def state_after(self, batches):
        return self.states[batches]

    def rewind(self, batches):
        """Put the loader back to just after ``batches`` fetched (undo a read-ahead at the end of a ``fit``)."""
        if self.fetched != batches and batches in self.states:
            self.iterator.set_state(self.states[batches])
            self.fetched = batches


def resume_point(run, schedule, state):
    """The checkpoint's counters and folder; errors when there is none or it is of another schedule. The run's
    history becomes the checkpoint's."""
    directory = latest_state_dir(run.state_dir)
    if directory is None:
        raise DataError(f"{run.state_dir}: no checkpoint to resume from")
    meta = load_meta(directory)
    if meta["num_stages"] != len(schedule):
        raise ValueError(
            f"{directory}: checkpoint of a {meta['num_stages']}-stage schedule, received {len(schedule)} stages"
        )
    stored = meta.get("global_batch", run.global_batch_size)
    if stored != run.global_batch_size:
        replicas = run.replicas
        raise ValueError(
            f"{directory}: the run was trained with a global batch of {stored}, this one has "
            f"{run.global_batch_size} ({replicas} data-parallel devices x batch_size "
            f"{run.global_batch_size // replicas}); resume with batch_size={stored / replicas:g} so every "
            "step sees the same images"
        )
    state.history.clear()
    state.history.update(meta["history"])
    return meta, directory


def stage_ends(plans, first_epoch):
    """The epoch each stage ends at, counted as ``run_stages`` does (a ``bottleneckOnly`` stage counts from 0 and
    does not advance the run)."""
    ends, epoch = [], first_epoch
    for plan in plans:
        end = (0 if plan.bottleneck_only else epoch) + plan.epochs
        ends.append(end)
        epoch = epoch if plan.bottleneck_only else end
    return ends


def describe_resume(meta, directory, steps_per_epoch):
    """Where a resumed run continues: the checkpoint, stage, epoch and batch."""
    stage = f"stage {meta['stage'] + 1}/{meta['num_stages']}"
    where = (f"epoch {meta['epoch'] + 1} after batch {meta['step']}/{steps_per_epoch}" if meta["step"]
             else f"the start of epoch {meta['epoch'] + 1}")
    return f">>>> resuming from {directory}: {stage}, {where}"


def finished_run(prefix, schedule):
    """A line saying the run ``prefix`` already trained every epoch of ``schedule`` (its newest checkpoint is the
    end of the last stage), or None: what ``--resume`` of a finished run prints instead of training."""
    directory = latest_state_dir(prefix + "_state", report=lambda line: None)
    if directory is None:
        return None
    meta = load_meta(directory)
    if meta["num_stages"] != len(schedule):
        return None  # resume_point says what is wrong
    plans = [plan_stage(index, stage) for index, stage in enumerate(prepare_schedule(schedule))]
    if meta["stage"] == len(schedule) - 1 and meta["step"] == 0 and meta["epoch"] >= stage_ends(
            plans, meta["first_epoch"])[-1]:
        return (f">>>> the run {os.path.basename(prefix)} is finished: its last checkpoint {directory} is the end of "
                f"epoch {meta['epoch']}, the last of its {len(schedule)} stage(s); nothing to resume (train more "
                "with a longer schedule: --epochs / [[stage]] epoch, or start it over with --overwrite)")
    return None


def claim_run(run, resume=False, initial_epoch=0):
    """Take the run's lock (process 0; re-entrant, one ``release_run`` each) and, the first time, refuse to start
    a new run over another's history and checkpoints (``run_files.check_new_run``) unless the run appends to its
    history (``append_history``, the seed's way) or starts over (``overwrite``)."""
    if run.lock is None:
        run.lock = RunLock(run.prefix)
    if is_primary():
        run.lock.acquire()
    if not run.claimed:
        options = run.config.run
        try:
            if not resume and initial_epoch == 0 and (options.overwrite or not options.append_history):
                check_new_run(run.prefix, options.overwrite, remove=is_primary())
        except DataError:
            release_run(run)
            raise
        run.claimed = True


def release_run(run):
    if run.lock is not None and is_primary():
        run.lock.release()


def _continued_history(run, state, initial_epoch):
    """A run continued from a history file keeps its epochs: started again at ``initial_epoch`` (the seed's way to
    continue) the epochs before it, a new run that appends (``append_history``, the seed's ``My_history``) all of
    them; so nothing is lost when the file is rewritten."""
    append = initial_epoch == 0 and run.config.run.append_history and not run.config.run.overwrite
    if (initial_epoch > 0 or append) and not state.history and os.path.isfile(run.history_path):
        try:
            with open(run.history_path) as f:
                stored = json.load(f)
        except (OSError, ValueError) as error:
            raise DataError(f"{run.history_path}: unreadable history ({error}); move it aside to start the "
                            "history again") from None
        keep = None if append else initial_epoch
        state.history.update({key: list(values)[:keep] for key, values in stored.items() if isinstance(values, list)})
        if append and run.verbose:
            print(f">>>> {run.history_path}: appending to its {len(state.history.get('loss', []))} epochs")


def run_stages(run, schedule, state, initial_epoch=0, resume=False, callbacks=()):
    """Train each stage dict of ``schedule`` in turn from ``initial_epoch``; returns the epoch reached.

    ``resume=True`` continues the same schedule from the latest full-state checkpoint. ``callbacks`` are the
    user's Keras callbacks: called after the built-in ones, and seeing one run across the stages (``OneRun``).
    """
    schedule = prepare_schedule(schedule, run.last_loss)
    plans = [plan_stage(index, stage) for index, stage in enumerate(schedule)]
    run.last_loss = next((stage["loss"] for stage in reversed(schedule) if stage.get("loss") is not None),
                         run.last_loss)
    claim_run(run, resume, initial_epoch)
    log = tee_console(run.log_path) if is_primary() else contextlib.nullcontext()
    try:
        with log:
            if not resume:
                _continued_history(run, state, initial_epoch)
            return _run_stages(run, schedule, plans, state, initial_epoch, resume, callbacks)
    finally:
        release_run(run)


def _run_stages(run, schedule, plans, state, initial_epoch, resume, callbacks):
    meta, resume_dir = resume_point(run, schedule, state) if resume else (None, None)
    epoch = meta["first_epoch"] if meta is not None else initial_epoch
    first_epoch = epoch
    total_epochs = epoch + sum(plan.epochs for plan in plans if not plan.bottleneck_only)
    if run.verbose:
        print("\n".join(summary_lines(run, schedule, plans, first_epoch)))
    if meta is not None and run.verbose:
        print(describe_resume(meta, resume_dir, run.steps_per_epoch))
    monitors = [callback.name for callback in run.eval_callbacks]
    savers = [cbs.BestBasicModel(run.parts.basic_model, run.prefix, monitors, state)]
    if run.config.run.save_full_model:
        savers.append(cbs.FullModelCheckpoint(run.full_model_path, run.parts.full_model, state))
    tensorboard = run.config.run.tensorboard_dir
    user = [*([keras.callbacks.TensorBoard(tensorboard)] if tensorboard and is_primary() else []), *callbacks]
    one_run = cbs.OneRun(user)
    earlier = first_epoch if meta is not None else len(state.history.get("loss", []))  # a continued history's
    try:
        _stage_loop(run, schedule, plans, state, meta, resume_dir, epoch, first_epoch, total_epochs, savers,
                    one_run)
    finally:  # also after an error: the epochs the history holds are drawn
        write_plot(run, plans, state, earlier)
    one_run.end_run()
    state.best_model_path = savers[0].saved
    return state.epoch


def write_plot(run, plans, state, earlier=0):
    """``<prefix>.png``: the run's curves (``plot.plot_runs``), the stages separated and named by their scale, the
    epochs of a continued history first as "earlier"; on the primary host, when an epoch was trained. A plot that
    fails is reported, not raised: the history it would show is already written."""
    if not is_primary() or not state.history.get("loss"):
        return
    from keras_insightface.atomic import savefig_atomic
    from keras_insightface.plot import plot_runs

    trained = [(index, plan) for index, plan in enumerate(plans) if not plan.bottleneck_only]
    epochs = [plan.epochs for _, plan in trained]
    names = [f"scale {float(plan.margin_loss.logit_scale):g}" if hasattr(plan.margin_loss, "logit_scale")
             else f"stage {index + 1}" for index, plan in trained]
    if earlier:
        epochs, names = [earlier, *epochs], ["earlier", *names]
    try:
        savefig_atomic(plot_runs(dict(state.history), epochs=epochs, names=names,
                                 fig_label=os.path.basename(run.prefix)), run.plot_path)
    except Exception as error:  # noqa: BLE001 - a drawing problem must not hide the run's own outcome
        print(f">>>> plot {run.plot_path} not written: {type(error).__name__}: {error}")


def _stage_loop(run, schedule, plans, state, meta, resume_dir, epoch, first_epoch, total_epochs, savers, one_run):
    """Fit each stage of ``schedule`` from the checkpoint ``meta`` (or the start); ``state.epoch`` is the epoch
    reached."""
    state.epoch = epoch
    with cbs.CatchStopSignals(state), run.scope():
        for index, (stage, plan) in enumerate(zip(schedule, plans)):
            # bottleneckOnly, as the seed: the head alone trains epochs 0.. of the schedule, without evaluation,
            # and the run's epoch count does not advance
            start = 0 if plan.bottleneck_only else epoch
            end_epoch = start + plan.epochs
            if meta is not None and index < meta["stage"]:
                epoch = epoch if plan.bottleneck_only else end_epoch  # finished before the checkpoint
                state.epoch = epoch
                continue
            resuming = meta is not None and index == meta["stage"]
            if resuming:  # the optimizer in the checkpoint was created at this epoch: same schedule offset
                start = meta["optimizer_start_epoch"]
            use_data(run, grouped=plan.identity_groups, epoch=meta["epoch"] if resuming else start)
            run.parts.basic_model.trainable = not plan.bottleneck_only  # bottleneckOnly: train the head(s) only
            state.stage = index + 1
            try:
                run.parts.compile_stage(index, stage, plan, start, total_epochs)
                step_offset = 0
                if resuming:
                    restore_model_and_optimizer(resume_dir, run.parts.train_model, run.parts.optimizer)
                    if run.config.data.samples_per_mining > 0:  # the epoch's triples mined with the restored model
                        mine_data(run, meta["epoch"])
                    run.iterator.set_state(meta["iterator"])
                    start, step_offset = meta["epoch"], meta["step"]
                    meta = None
                if run.verbose:
                    what = plan.margin_loss or plan.embedding_loss
                    frozen = ", backbone frozen, no evaluation" if plan.bottleneck_only else ""
                    print(f">>>> Stage {index + 1} ({plan.kind}{frozen}): {what}, epochs {start + 1}..{end_epoch}, "
                          f"lr now {current_lr(run.parts.optimizer):.3g}")
                fit_stage(run, state, savers, one_run, (index, len(schedule), first_epoch), start, end_epoch,
                          step_offset, resume_dir if step_offset else None, evaluate=not plan.bottleneck_only)
            finally:
                run.parts.basic_model.trainable = True
            if state.stopped:
                break
            if not plan.bottleneck_only:
                epoch = end_epoch
                state.epoch = epoch


def current_lr(optimizer):
    """The optimizer's learning rate at its current step, as a float."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def fit_stage(run, state, savers, one_run, position, start, end_epoch, step_offset, metrics_dir, evaluate=True):
    """``fit`` one stage from epoch ``start`` to ``end_epoch``; a resumed epoch (``step_offset`` batches done) is
    a short first ``fit`` of its remaining batches. ``position`` is ``(stage index, stages, first epoch)``;
    ``evaluate=False`` leaves the evaluation packs out."""
    stage_index, num_stages, first_epoch = position
    parts, steps = run.parts, run.steps_per_epoch
    batches = TrainBatches(run.iterator, run.skipped_images, run.teacher_embeddings,
                           batch_placer(run.distribution))

    def meta_fn(epoch, step):  # the stage whose training model the variables belong to, even when it is done
        return {
            "stage": stage_index, "epoch": epoch, "step": step, "num_stages": num_stages, "first_epoch": first_epoch,
            "optimizer_start_epoch": parts.optimizer_start_epoch, "history": state.history,
            "global_batch": run.global_batch_size,
        }

    checkpoint = cbs.FullStateCheckpoint(run.state_dir, parts.optimizer, meta_fn, batches.state_after, state,
                                         run.config.run.checkpoint_every_steps, step_offset,
                                         run.config.run.keep_checkpoints)
    callbacks = [
        cbs.RestoreEpochMetrics(metrics_dir),
        cbs.Throughput(run.global_batch_size),
        run.skipped_images,
        cbs.StopOnNaN(state),
        cbs.LossScaleCollapse(parts.optimizer, state),
        *(run.eval_callbacks if evaluate else []),
        *savers,
        cbs.HistoryJSON(run.history_path, state, lambda: current_lr(parts.optimizer)),
        checkpoint,
        cbs.StopOnSignal(state, checkpoint),
        one_run,
        *([cbs.RunProgress()] if run.verbose else []),  # last, as Keras's own: the epoch line shows every metric
    ]
    model = parts.train_model
    if step_offset:
        model.fit(iter(batches), epochs=start + 1, initial_epoch=start, steps_per_epoch=steps - step_offset,
                  callbacks=callbacks, verbose=run.verbose, shuffle=False)
        batches.rewind(checkpoint.trained)
        start += 1
    if run.config.data.samples_per_mining > 0:  # triples mined again with the current model at every epoch
        for epoch in range(start, end_epoch):
            if state.stopped:
                break
            if epoch != start or step_offset:  # use_data mined the epoch the stage (or its resume) starts at
                batches.iterator = mine_data(run, epoch)
            model.fit(iter(batches), epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                      callbacks=callbacks, verbose=run.verbose, shuffle=False)
            batches.rewind(checkpoint.trained)
    elif start < end_epoch and not state.stopped:
        model.fit(iter(batches), epochs=end_epoch, initial_epoch=start, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=run.verbose, shuffle=False)
        batches.rewind(checkpoint.trained)
