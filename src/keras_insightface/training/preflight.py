"""Checks of a run before anything is built or compiled, so a run with several mistakes fails in seconds with all of
them in one message (``RunProblems``) instead of one per attempt, some of them minutes in.

``file_problems(options)`` reads the run's options as a config file or ``Train`` keywords give them (a dict) and
checks what they name: the data, every eval pack (its pairs, without decoding the images), the model files or
backbone name, and the output folder. ``run_problems`` adds the run's own history: a new run over an old one, or a
``--resume`` with nothing to resume.

Example:
    >>> for line in file_problems({"data_path": "no/such/dataset", "basic_model": "r5O", "save_path": "r50.keras"}):
    ...     print(line[:70])
    no/such/dataset: dataset path does not exist
    basic_model: Unknown backbone 'r5O' (did you mean 'r50'?); available: 
"""

import os

from keras_insightface.errors import DataError
from keras_insightface.training.run_files import check_new_run, prefix_of

MODEL_SUFFIXES = (".keras", ".h5")


def problem_of(check, *args):
    """The message of the input error ``check(*args)`` raises, or None."""
    try:
        check(*args)
    except (DataError, ValueError, TypeError, OSError, ImportError) as error:
        return str(error)
    return None


WHAT = {"data_path": "dataset path", "eval_paths": "eval .bin file"}


def _exists(name, path):
    if not os.path.exists(path):
        raise DataError(f"{path}: {WHAT.get(name, name + ' file')} does not exist")


def _model_reference(name, value):
    """A model option names an existing ``.keras`` / ``.h5`` file or a registered backbone."""
    if not isinstance(value, str):
        return
    if value.endswith(MODEL_SUFFIXES) or os.sep in value:
        _exists(name, value)
        return
    from keras_insightface.backbones import get_backbone

    try:
        get_backbone(value)
    except ValueError as error:
        raise DataError(f"{name}: {error}") from None


def _output_folder(options):
    """The run folder can be made and written."""
    folder = os.path.dirname(prefix_of(options.get("save_path") or "", options.get("checkpoint_dir", "checkpoints")))
    existing = folder or "."
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"checkpoint_dir: {folder}: cannot be written ({existing} is not a writable folder)")


def file_problems(options, check_pack=None):
    """Every problem of the files ``options`` (a run's option dict) names, as messages; [] when none.

    ``check_pack(path)`` checks an existing eval pack (default: its pairs, images not decoded); a caller that
    decodes the packs anyway passes its decoder, so each pack is read once."""
    if check_pack is None:
        from keras_insightface.evaluation.verification import check_pack

    found = []
    data = options.get("data_path")
    if isinstance(data, str):
        found.append(problem_of(_exists, "data_path", data))
    for path in options.get("eval_paths") or []:
        found.append(problem_of(_exists, "eval_paths", path) or problem_of(check_pack, path))
    for name in ("basic_model", "model", "pretrained", "teacher_model_interf"):
        check = _model_reference if name == "basic_model" else _model_file
        found.append(problem_of(check, name, options.get(name)))
    if options.get("save_path"):
        found.append(problem_of(_output_folder, options))
    return [message for message in found if message]


def _model_file(name, value):
    if isinstance(value, str) and value.endswith(MODEL_SUFFIXES):
        _exists(name, value)


def run_problems(options, resume):
    """The run's own files: a new run where one already trained (``check_new_run``), or ``resume`` without a
    checkpoint to continue."""
    if not options.get("save_path"):
        return []
    from keras_insightface.training.checkpoint import checkpoint_dirs

    prefix = prefix_of(options["save_path"], options.get("checkpoint_dir", "checkpoints"))
    if resume:
        if not checkpoint_dirs(prefix + "_state"):
            return [f"{prefix}_state: no checkpoint to resume from (the run has not written one yet); start it "
                    "without --resume"]
        return []
    if options.get("overwrite") or options.get("append_history", True):
        return []
    return [message for message in [problem_of(check_new_run, prefix, False, False)] if message]
