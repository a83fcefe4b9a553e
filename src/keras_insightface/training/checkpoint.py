"""Full-state checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``<run>_state/`` with all the training model's variables (weights, BN statistics, margin
statistics, class centers, and the augmentation and sampling RNG states, which ``save_weights`` leaves out), the
optimizer's variables (momentum, step count, hence the schedule position), the epoch's running metrics, the
loader's iterator state and the counters and history, and ``manifest.json``: every file's size and SHA-256.

It is written to ``<run>_state.tmp/`` (the manifest last) and rotated in by renames: the older checkpoints move
to ``<run>_state.1/``, ``.2/``, ... and the last ``keep`` (default 2) are kept, so a run killed at any moment
leaves complete checkpoints only. ``latest_state_dir`` checks each against its manifest, newest first, and
resumes from the newest intact one, saying which it skipped and why (a truncated or changed file). On several hosts every host takes part
(variables split across hosts are gathered, each host's iterator state is collected) and process 0 writes; the
folder must be on storage every host reads, as the resume reads it on every host.

Example:
    >>> encode_state({"a": b"\\x00\\x01"})
    {'a': {'__bytes__': 'AAE='}}
    >>> decode_state(encode_state({"a": b"\\x00\\x01"}))
    {'a': b'\\x00\\x01'}
"""

import base64
import glob
import hashlib
import json
import os
import shutil

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.hosts import is_primary, process_count, process_index
from keras_insightface.training.distribute import barrier, gather_objects, host_values

STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
KEEP = 2  # full-state checkpoints kept: the latest and the one before, to fall back to


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


def save_state(directory, model, optimizer, meta, iterator_state, keep=KEEP):
    """Write a checkpoint of ``model`` (a built training model), ``optimizer`` and ``meta`` atomically, keeping
    the ``keep`` latest checkpoints.

    ``iterator_state`` is this host's loader state; the checkpoint keeps one per host (``"iterators"``).
    """
    arrays = [_arrays(model.variables), _arrays(optimizer.variables), _arrays(model.metrics_variables)]
    iterators = gather_objects(encode_state(iterator_state))
    if is_primary():
        _write(directory, arrays, {**meta, "variable_paths": [v.path for v in model.variables], "iterators": iterators},
               keep)
    barrier(f"checkpoint {directory} {meta.get('epoch')} {meta.get('step')}")


def _digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(directory, arrays, state, keep=KEEP):
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        for name, values in zip(("model", "optimizer", "metrics"), arrays):  # save_weights skips RNG seed states
            np.savez(os.path.join(tmp, f"{name}.npz"), **values)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state, f)
        files = {name: {"size": os.path.getsize(os.path.join(tmp, name)), "sha256": _digest(os.path.join(tmp, name))}
                 for name in sorted(os.listdir(tmp))}
        with open(os.path.join(tmp, MANIFEST_FILE), "w") as f:  # last: a folder with a manifest is complete
            json.dump({"files": files}, f, indent=1)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{directory}: cannot write the checkpoint ({error.strerror or error}); the previous "
                        "checkpoints are kept") from None
    _rotate(directory, tmp, keep)


def _rotate(directory, tmp, keep):
    """``tmp`` becomes ``directory``, which becomes ``.1``, ``.1`` becomes ``.2`` ...; those past ``keep`` go. Each
    step is one rename, so every folder that exists at any moment is a complete checkpoint."""
    shutil.rmtree(f"{directory}.{keep}", ignore_errors=True)
    for index in range(keep - 1, 0, -1):
        if os.path.isdir(f"{directory}.{index}"):
            os.replace(f"{directory}.{index}", f"{directory}.{index + 1}")
    if os.path.isdir(directory):
        os.replace(directory, f"{directory}.1")
    os.replace(tmp, directory)
    shutil.rmtree(f"{directory}.{keep}", ignore_errors=True)
    shutil.rmtree(directory + ".old", ignore_errors=True)  # the single previous checkpoint of older versions


def verify(directory):
    """Why the checkpoint folder ``directory`` cannot be resumed from (a missing, truncated or changed file), or
    None when every file matches its manifest. A folder of an older version (no manifest) needs a state.json."""
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.exists(manifest_path):
        return None if os.path.isfile(os.path.join(directory, STATE_FILE)) else "no state.json"
    try:
        with open(manifest_path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable {MANIFEST_FILE} ({error})"
    for name, expected in files.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        size = os.path.getsize(path)
        if size != expected.get("size"):
            return f"{name} is {size} bytes, the manifest says {expected.get('size')} (truncated or replaced)"
        if _digest(path) != expected.get("sha256"):
            return f"{name} differs from its checksum in the manifest (corrupted)"
    return None


def checkpoint_dirs(directory):
    """The checkpoint folders of ``directory``, newest first: itself, ``.1``, ``.2``, ... (also past a gap that an
    interrupted rotation left) and an older version's ``.old``."""
    older = [path for path in glob.glob(glob.escape(directory) + ".*") if path.rsplit(".", 1)[1].isdigit()]
    older.sort(key=lambda path: int(path.rsplit(".", 1)[1]))
    return [path for path in (directory, *older, directory + ".old") if os.path.isdir(path)]


def latest_state_dir(directory, report=print):
    """The newest intact checkpoint folder of ``directory`` (``verify``), or None; each one skipped is reported
    (``report``) with the reason."""
    for candidate in checkpoint_dirs(directory):
        problem = verify(candidate)
        if problem is None:
            return candidate
        report(f">>>> checkpoint {candidate} skipped: {problem}")
    return None


def _read_state(directory):
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
        problem = None if isinstance(state, dict) else f"a JSON {type(state).__name__}, expected an object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = error
    if problem is not None:
        raise DataError(f"{path}: unreadable checkpoint state ({problem}); resume from another checkpoint or "
                        "start the run again")
    return state


def load_meta(directory):
    """The checkpoint's counters and history, with ``"iterator"``: this host's loader state."""
    meta = _read_state(directory)
    iterators = meta.pop("iterators", None)
    if not isinstance(iterators, list):
        raise DataError(f"{os.path.join(directory, STATE_FILE)}: no per-host loader states ('iterators'); resume from "
                        "another checkpoint or start the run again")
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
