"""Training callbacks: throughput in the progress bar, NaN and signal stops, history JSON, best basic-model saving,
full-state checkpoints; the ones that read or change the run's progress take its ``RunState``."""

import glob
import math
import os
import signal
import threading
import time

import keras
import numpy as np

from keras_insightface.atomic import write_json_atomic
from keras_insightface.data.progress import PlainProgbar, is_terminal
from keras_insightface.hosts import is_primary, process_count
from keras_insightface.saving import save_model
from keras_insightface.training.checkpoint import KEEP, restore_metrics, save_state
from keras_insightface.training.distribute import gather_objects


def _to_float(value):
    return float(np.asarray(value))


class RunProgress(keras.callbacks.ProgbarLogger):
    """``fit``'s progress: Keras's bar on a terminal, plain lines (``data.progress.PlainProgbar``, one every
    ``every_s`` seconds and one per epoch) when the output is a log or a pipe, so a redirected run has no escape
    codes or redrawn lines."""

    def __init__(self, every_s=30.0):
        super().__init__()
        self.every_s, self.epoch, self.shown = every_s, 0, -1
        # Keras may run batch-end hooks in threads, in any order, without waiting for each step: a late hook of an
        # earlier step is skipped, so the bar never goes back and the training loop never waits for a display
        self.async_safe, self.lock = True, threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        with self.lock:
            self.epoch, self.shown = epoch, -1
            super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        with self.lock:
            if batch > self.shown:
                self.shown = batch
                super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        with self.lock:
            super().on_epoch_end(epoch, logs)

    def _maybe_init_progbar(self):
        if self.progbar is None and not is_terminal():
            self.progbar = PlainProgbar(self.target, every_s=self.every_s, desc=f"epoch {self.epoch + 1}",
                                        stateless_metrics=set())
        super()._maybe_init_progbar()


class Throughput(keras.callbacks.Callback):
    """Puts ``img/s`` (images per second since the last report) into the batch logs the progress bar shows."""

    def __init__(self, batch_size, every=10):
        super().__init__()
        self.batch_size, self.every = batch_size, every
        self.async_safe = True  # Keras may then run batch-end hooks in threads, without waiting for each step
        self._lock = threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._count, self._rate = time.perf_counter(), 0, 0.0
        self._epoch_start, self._epoch_batches = self._start, 0

    def on_train_batch_end(self, batch, logs=None):
        with self._lock:
            self._count += 1
            self._epoch_batches += 1
            if self._count >= self.every:
                now = time.perf_counter()
                self._rate = self._count * self.batch_size / (now - self._start)
                self._start, self._count = now, 0
            rate = self._rate
        if logs is not None and rate:
            logs["img/s"] = rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._epoch_batches:
            logs["img/s"] = self._epoch_batches * self.batch_size / (time.perf_counter() - self._epoch_start)


class StopOnNaN(keras.callbacks.Callback):
    """Stops the run when the loss is not finite (checked every ``every`` batches and at epoch end).

    Keras's ``TerminateOnNaN`` reads the loss back from the device after every batch, which makes Keras wait for
    each step; this checks every ``every`` batches, and ``RunState.stop`` names the epoch, the batch and the last
    good checkpoint.
    """

    def __init__(self, state, every=50):
        super().__init__()
        self.state, self.every = state, every
        self.epoch, self.batch = 0, 0
        self.async_safe = True  # it only reads the logs and sets flags

    def check(self, logs):
        """Stop the run when ``logs["loss"]`` is not finite; reads the loss back from the device."""
        if logs and "loss" in logs and not self.state.stopped and not math.isfinite(_to_float(logs["loss"])):
            self.state.stop(self.model, "Loss is NaN or Inf", self.epoch, self.batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.batch = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.batch = max(self.batch, batch + 1)
        if (batch + 1) % self.every == 0:
            self.check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.check(logs)


class LossScaleCollapse(keras.callbacks.Callback):
    """With ``mixed_float16``: stops the run when the dynamic loss scale has fallen below ``min_scale``.

    The scale halves at every step whose float16 gradients overflow, and such steps are skipped: a collapsed
    scale means the run trains on almost nothing while the loss looks finite. Checked at epoch ends (reading the
    scale mid-epoch would make Keras wait for every step).
    """

    def __init__(self, optimizer, state, min_scale=1.0):
        super().__init__()
        self.optimizer, self.state, self.min_scale = optimizer, state, min_scale

    def check(self, epoch):
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) or self.state.stopped:
            return
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # the JAX trainer keeps the optimizer state outside its variables mid-epoch
        scale = _to_float(self.optimizer.dynamic_scale)
        if scale < self.min_scale:
            self.state.stop(
                self.model,
                f"float16 loss scale collapsed to {scale:g} (gradients overflow float16 at almost every step, which "
                "are skipped); train with mixed_bfloat16 or float32, or a lower learning rate,",
                epoch, self.params.get("steps") if self.params else 0,
            )

    def on_epoch_end(self, epoch, logs=None):
        self.check(epoch)


class HistoryJSON(keras.callbacks.Callback):
    """Appends each epoch's ``lr``, ``loss``, ``accuracy`` and other logs (evaluation results, extra loss terms) to
    the run's ``state.history`` and writes it as the seed-style history JSON; ``lr_fn`` gives the learning rate at
    the current optimizer step."""

    def __init__(self, path, state, lr_fn):
        super().__init__()
        self.path, self.state, self.lr_fn = path, state, lr_fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.state.stopped:
            return
        record = {"lr": self.lr_fn(), "loss": logs.get("loss"), "accuracy": logs.get("accuracy")}
        record.update({k: v for k, v in logs.items() if k not in record and not k.startswith("crossentropy_")})
        for key, value in record.items():
            if value is not None:
                self.state.history.setdefault(key, []).append(_to_float(value))
        if is_primary():
            write_json_atomic(self.path, self.state.history)


class BestBasicModel(keras.callbacks.Callback):
    """Saves the basic model as ``<prefix>_basic_<set>_epoch_<E>_<acc>.keras`` whenever the accuracy on eval set
    ``<set>`` improves, one file per set in ``monitors`` (the previous best of that set is removed), and every
    epoch as ``<prefix>_basic_stage_<k>_latest.keras`` (one file per stage, ``stage`` set by the trainer).

    ``state.history`` (the run's so far, e.g. on resume) gives the bests to beat, and best files already on disk
    stay the bests until beaten; ``state.stage`` names the latest file. ``saved`` is the first set's best file
    (without eval sets: the latest file). Nothing is saved once the run has stopped (a NaN loss). On several hosts
    process 0 writes (the basic model is replicated on every host).
    """

    def __init__(self, basic_model, prefix, monitors, state):
        super().__init__()
        self.basic_model, self.prefix, self.monitors, self.state = basic_model, prefix, list(monitors), state
        history = state.history
        self.best = {name: max(history.get(name, [-1.0])) for name in self.monitors}
        self.files = {}
        for name in self.monitors:
            found = glob.glob(self._pattern(name)) if history.get(name) else []
            self.files[name] = found[0] if found else None
        self.latest = None

    def _pattern(self, name):
        return glob.escape(f"{self.prefix}_basic_{name}_epoch_") + "*.keras"

    @property
    def saved(self):
        return self.files[self.monitors[0]] if self.monitors else self.latest

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.state.stopped:
            return
        write = is_primary()
        self.latest = f"{self.prefix}_basic_stage_{self.state.stage}_latest.keras"
        if write:
            save_model(self.basic_model, self.latest)
        for name in self.monitors:
            value = logs.get(name)
            if value is None or _to_float(value) <= self.best[name]:
                continue
            self.best[name] = _to_float(value)
            path = f"{self.prefix}_basic_{name}_epoch_{epoch + 1}_{self.best[name]:.6f}.keras"
            self.files[name] = path
            if not write:
                continue
            save_model(self.basic_model, path)
            for old in glob.glob(self._pattern(name)):
                if old != path:
                    os.remove(old)
            print(f">>>> Improved {name} to {self.best[name]:.6f}: saved {path}")


class FullModelCheckpoint(keras.callbacks.Callback):
    """The seed's ``checkpoints/<save_path>``: at every epoch end the basic model followed by the run's classifier
    (``full_model()``, called on every host: the kernel may be gathered) is saved to ``path``, so a seed script
    continues it with ``Train(model=path)`` and ``train(schedule, initial_epoch)``. Exact resume (optimizer, data
    position, random states) is the full-state checkpoint's job. Process 0 writes."""

    def __init__(self, path, full_model, state):
        super().__init__()
        self.path, self.full_model, self.state = path, full_model, state

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.state.stopped:
            return
        model = self.full_model()
        if is_primary():
            save_model(model, self.path)


class SkippedImages(keras.callbacks.Callback):
    """Counts the unreadable images the loader replaced, and reports them (with a few names) at epoch end."""

    def __init__(self, describe, show=3):
        super().__init__()
        self.describe, self.show = describe, show
        self.indices = []

    def record(self, skipped):
        """Called on the host for every batch's ``skipped`` array (-1 = image read fine)."""
        bad = skipped[skipped >= 0]
        if bad.size:
            self.indices += bad.tolist()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # every epoch, so the history list stays aligned with the epochs
            logs["skipped_images"] = len(self.indices)
        if self.indices:
            names = ", ".join(self.describe(i) for i in sorted(set(self.indices))[: self.show])
            print(f"\n>>>> {len(self.indices)} unreadable images were replaced by their neighbours this epoch: {names}")
        self.indices = []


def running_loss(model):
    """The epoch's running mean loss as a float, read between steps (syncs the JAX trainer's state first)."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    for metric in model.metrics:
        if metric.name == "loss":
            return _to_float(metric.result())
    return None


class FullStateCheckpoint(keras.callbacks.Callback):
    """Writes a full-state checkpoint every ``every_steps`` batches and at each epoch end (``checkpoint.py``).

    ``meta_fn(epoch, step)`` gives the counters and history to store for "continue at ``step`` of ``epoch``";
    ``iterator_state_fn(batches)`` the loader state after the ``batches`` this ``fit`` call has trained on.
    ``step_offset`` is the number of batches of the first epoch done before this ``fit`` call (a resumed epoch).
    Must come after the history and best-model callbacks, so an epoch-end checkpoint includes that epoch.

    Mid-epoch work happens at the *start* of the next batch: hooks at batch ends make Keras read every step's
    results back from the device before it queues the next step; batch starts carry no results.
    """

    def __init__(self, directory, optimizer, meta_fn, iterator_state_fn, state, every_steps=0, step_offset=0,
                 keep=KEEP):
        super().__init__()
        self.keep = keep
        self.directory, self.optimizer, self.meta_fn = directory, optimizer, meta_fn
        self.iterator_state_fn, self.state, self.every_steps = iterator_state_fn, state, every_steps
        self.step_offset = step_offset
        self.epoch, self.trained, self.step, self._epoch_start, self._begun, self._lengths = 0, 0, 0, 0, None, {}

    def _save(self, epoch, step, history_lengths=None):
        """Checkpoint "continue at ``step`` of ``epoch``"; ``history_lengths`` keeps only that many entries of each
        history list (an epoch cut short is recorded when the resumed run finishes it, once)."""
        if self.state.stopped:
            return
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # the JAX trainer keeps variables outside the model between epochs
        meta = self.meta_fn(epoch, step)
        if history_lengths is not None:
            meta = {**meta, "history": {key: list(values)[:history_lengths.get(key, 0)]
                                        for key, values in meta["history"].items()}}
        save_state(self.directory, self.model, self.optimizer, meta, self.iterator_state_fn(self.trained), self.keep)
        self.state.last_checkpoint = f"{self.directory} (epoch {epoch + 1}, batch {step})" if step else \
            f"{self.directory} (end of epoch {epoch})"

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._epoch_start, self._begun = epoch, self.trained, None
        self._lengths = {key: len(values) for key, values in self.state.history.items() if isinstance(values, list)}

    def on_train_batch_begin(self, batch, logs=None):
        """``batch`` batches of this epoch are done: count them, and checkpoint every ``every_steps``."""
        self._begun = batch
        self.trained = self._epoch_start + batch
        self.step = self.step_offset + batch
        if batch and self.every_steps and self.step % self.every_steps == 0:
            self.save_now()

    def save_now(self):
        """Checkpoint the position after the last trained batch, unless the epoch's loss is not finite."""
        loss = running_loss(self.model)
        if loss is not None and not math.isfinite(loss) and not self.state.stopped:
            self.state.stop(self.model, "Loss is NaN or Inf", self.epoch, self.step)
        self._save(self.epoch, self.step)

    def on_epoch_end(self, epoch, logs=None):
        steps = self.params["steps"]  # this fit call's epoch length
        done = steps if self._begun is None else min(steps, self._begun + getattr(self.model, "steps_per_execution", 1))
        if done < steps and self.model.stop_training:  # a callback stopped the epoch early: save where it stopped
            self.trained, self.step = self._epoch_start + done, self.step_offset + done
            self._save(epoch, self.step, self._lengths)
            return
        self.trained = self._epoch_start + steps
        self.step_offset = 0
        self._save(epoch + 1, 0)


class RestoreEpochMetrics(keras.callbacks.Callback):
    """Puts a checkpoint's running loss/accuracy back at the start of the resumed epoch (after Keras resets them)."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        if self.directory is not None:
            restore_metrics(self.directory, self.model)
            self.directory = None


class CatchStopSignals:
    """While a run trains, SIGINT / SIGTERM only set ``state.signal``; ``StopOnSignal`` acts on it between batches.

    A context manager around the whole run (the handlers stay installed between ``fit`` calls); the previous
    handlers come back at its end. Handlers can only be installed from the main thread; elsewhere it does nothing.
    """

    def __init__(self, state):
        self.state, self.previous = state, {}

    def _request(self, signum, frame):
        self.state.signal = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


class StopOnSignal(keras.callbacks.Callback):
    """A stop signal (``state.signal``): finish the batch, write a full-state checkpoint, stop the run cleanly.

    Once the current batch is done (at the next batch's start), ``checkpoint`` (the stage's
    ``FullStateCheckpoint``) writes the position and the run stops, so that nothing records what follows; a
    signal during an epoch's last batch stops after the epoch-end checkpoint instead.

    On several hosts a signal may reach them at different batches, and all must stop at the same one (the
    checkpoint is collective): the hosts compare their requests every ``sync_every`` batches and at epoch ends,
    and all stop when any host was signalled.
    """

    def __init__(self, state, checkpoint, sync_every=20):
        super().__init__()
        self.state, self.checkpoint, self.sync_every = state, checkpoint, sync_every

    def _agreed(self, batch=None):
        """The request every host acts on: this host's own on one host; on several, any host's, compared at batch
        multiples of ``sync_every`` and at epoch ends (``batch`` None)."""
        if process_count() == 1:
            return self.state.signal
        if batch is not None and batch % self.sync_every:
            return None
        return next((name for name in gather_objects(self.state.signal) if name), None)

    def on_train_batch_begin(self, batch, logs=None):
        """Checkpoint the batches done so far and stop; the step Keras runs after this hook is not recorded."""
        requested = self._agreed(batch)
        if requested and not self.state.stopped:
            self.state.signal = requested
            if batch:  # at batch 0 the epoch-end checkpoint already holds this position
                self.checkpoint.save_now()
            self.state.stop_for_signal(self.model, self.checkpoint.directory)

    def on_epoch_end(self, epoch, logs=None):
        requested = self._agreed()
        if requested and not self.state.stopped:  # the epoch-end checkpoint was just written
            self.state.signal = requested
            self.state.stop_for_signal(self.model, self.checkpoint.directory)


class OneRun(keras.callbacks.Callback):
    """The user's callbacks (and TensorBoard) seeing one run across the stages' ``fit`` calls: ``on_train_begin``
    at the first stage only and ``on_train_end`` once, from ``end_run``, so a ``CSVLogger`` gets a row for every
    epoch of every stage and TensorBoard one event stream with global steps."""

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks = list(callbacks)
        self.started = False
        self.async_safe = all(getattr(callback, "async_safe", False) for callback in self.callbacks)

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        if not self.started:
            self.started = True
            self._each("on_train_begin", logs)

    def on_train_end(self, logs=None):
        """Called by each ``fit``; the run's end is ``end_run``."""

    def end_run(self, logs=None):
        if self.started:
            self._each("on_train_end", logs)

    def _each(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_epoch_begin(self, epoch, logs=None):
        self._each("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._each("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._each("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._each("on_train_batch_end", batch, logs)
