"""Full-state checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``<run>_state/`` with all the training model's variables (weights, BN statistics, margin
statistics, class centers, and the augmentation and sampling RNG states, which ``save_weights`` leaves out), the optimizer's variables (momentum, step
count, hence the schedule position), the epoch's running metrics, the loader's iterator state and the counters
and history. It is written to ``<run>_state.tmp/`` and swapped in by renames, so a run killed at any moment
leaves either the previous or the new checkpoint, never half of one. On several hosts every host takes part
(variables split across hosts are gathered, each host's iterator state is collected) and process 0 writes; the
folder must be on storage every host reads, as the resume reads it on every host.

Example:
    >>> encode_state({"a": b"\\x00\\x01"})
    {'a': {'__bytes__': 'AAE='}}
    >>> decode_state(encode_state({"a": b"\\x00\\x01"}))
    {'a': b'\\x00\\x01'}
"""

import base64
import json
import os
import shutil

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.training.distribute import (
    barrier, gather_objects, host_values, is_primary, process_count, process_index,
)

STATE_FILE = "state.json"


def encode_state(value):
    """JSON-able form of an iterator state (dicts, lists, numbers, strings and bytes)."""
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: encode_state(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_state(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def decode_state(value):
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {key: decode_state(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_state(item) for item in value]
    return value


def _arrays(variables):
    return {f"v{i}": value for i, value in enumerate(host_values(variables))}


def save_state(directory, model, optimizer, meta, iterator_state):
    """Write a checkpoint of ``model`` (a built training model), ``optimizer`` and ``meta`` atomically.

    ``iterator_state`` is this host's loader state; the checkpoint keeps one per host (``"iterators"``).
    """
    arrays = [_arrays(model.variables), _arrays(optimizer.variables), _arrays(model.metrics_variables)]
    iterators = gather_objects(encode_state(iterator_state))
    if is_primary():
        _write(directory, arrays, {**meta, "variable_paths": [v.path for v in model.variables], "iterators": iterators})
    barrier(f"checkpoint {directory} {meta.get('epoch')} {meta.get('step')}")


def _write(directory, arrays, state):
    tmp, old = directory + ".tmp", directory + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, values in zip(("model", "optimizer", "metrics"), arrays):  # save_weights skips RNG seed states
        np.savez(os.path.join(tmp, f"{name}.npz"), **values)
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
        json.dump(state, f)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def latest_state_dir(directory):
    """The complete checkpoint folder to resume from (the previous one if a swap was interrupted), or None."""
    for candidate in (directory, directory + ".old"):
        if os.path.isfile(os.path.join(candidate, STATE_FILE)):
            return candidate
    return None


def _read_state(directory):
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: unreadable checkpoint state ({error}); resume from another checkpoint or "
                        "start the run again") from None


def load_meta(directory):
    """The checkpoint's counters and history, with ``"iterator"``: this host's loader state."""
    meta = _read_state(directory)
    iterators = meta.pop("iterators")
    if len(iterators) != process_count():
        raise DataError(
            f"{directory}: checkpoint written by {len(iterators)} host(s), this run has {process_count()}; each "
            "host's position in its shard of the data is stored, so resume on the same number of hosts"
        )
    meta["iterator"] = decode_state(iterators[process_index()])
    return meta


def _assign(variables, path, what):
    with np.load(path) as stored:
        values = [stored[f"v{i}"] for i in range(len(stored.files))]
    if len(values) != len(variables):
        raise DataError(f"{path}: {len(values)} {what} variables stored, the run has {len(variables)}")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise DataError(f"{path}: {what} variable {variable.path} stored as {value.shape}, needs {variable.shape}")
        variable.assign(value)


def restore_model_and_optimizer(directory, model, optimizer):
    """Load the training model's and the optimizer's variables (the optimizer is built first)."""
    _assign(model.variables, os.path.join(directory, "model.npz"), "model")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    _assign(optimizer.variables, os.path.join(directory, "optimizer.npz"), "optimizer")


def read_variable(directory, name):
    """The stored value of the training-model variable whose path ends with ``name`` (e.g. the classifier kernel
    ``"norm_dense/norm_dense_w"``), for tools that read a run's checkpoint without rebuilding the model."""
    paths = _read_state(directory).get("variable_paths", [])
    found = [i for i, path in enumerate(paths) if path == name or path.endswith("/" + name)]
    if len(found) != 1:
        close = [path for path in paths if name.rsplit("/", 1)[-1] in path]
        raise DataError(f"{directory}: {len(found)} stored variables match {name!r} (similar: {close[:5]})")
    with np.load(os.path.join(directory, "model.npz")) as stored:
        return stored[f"v{found[0]}"]


def restore_metrics(directory, model):
    """Put back the epoch's running metrics (loss and accuracy means), so a resumed epoch logs the same values."""
    _assign(model.metrics_variables, os.path.join(directory, "metrics.npz"), "metric")
