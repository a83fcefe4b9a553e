"""Training runs described by a file: ``[train]`` holds ``Train``'s keywords, ``[[stage]]`` the schedule.

A TOML (or JSON) file, overridable with dotted ``key=value`` assignments, so a run is reproducible from what is
saved next to its checkpoints (``<name>_config.json``, the resolved config)::

    [train]
    data_path = "datasets/faces_emore"
    save_path = "r50_arcface.keras"
    eval_paths = ["datasets/lfw.bin", "datasets/cfp_fp.bin"]
    basic_model = "r50"
    batch_size = 512

    [[stage]]
    loss = "ArcfaceLoss"
    loss_config = {scale = 16}
    epoch = 5

    [[stage]]
    loss = "ArcfaceLoss"
    epoch = 40

    keras-insightface train r50.toml --set train.batch_size=256 --set stage.1.epoch=20

Example:
    >>> config = apply_overrides({"train": {"batch_size": 512}, "stage": [{"epoch": 5}]},
    ...                          ["train.batch_size=256", "stage.0.epoch=3", 'train.basic_model="r100"'])
    >>> config["train"], config["stage"]
    ({'batch_size': 256, 'basic_model': 'r100'}, [{'epoch': 3}])
"""

import copy
import inspect
import json
import os
import tomllib

from keras_insightface.errors import DataError


def load_config(path):
    """The config dict of a ``.toml`` or ``.json`` file; a clear error for a missing or malformed file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: config file does not exist")
    try:
        with open(path, "rb") as f:
            config = json.load(f) if str(path).endswith(".json") else tomllib.load(f)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid config file ({error})") from None
    unknown = set(config) - {"train", "stage"}
    if unknown or "train" not in config or not config.get("stage"):
        raise DataError(f"{path}: needs a [train] table and at least one [[stage]]; unknown sections {sorted(unknown)}")
    return config


def _parse_value(text):
    """A TOML value (number, bool, quoted string, array, inline table); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config, assignments):
    """A copy of ``config`` with each ``dotted.key=value`` set (list items by index: ``stage.0.epoch=3``)."""
    config = copy.deepcopy(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"override {assignment!r} is not key=value")
        *parents, last = key.strip().split(".")
        node = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = _parse_value(text.strip())
        else:
            node[last] = _parse_value(text.strip())
    return config


def train_kwargs(config, train_cls):
    """``Train`` keyword arguments from ``[train]``; unknown keys are an error that lists the valid ones."""
    params = inspect.signature(train_cls.__init__).parameters
    valid = [name for name in params if name != "self"]
    unknown = sorted(set(config["train"]) - set(valid))
    if unknown:
        raise ValueError(f"unknown [train] keys {unknown}; Train takes {', '.join(valid)}")
    missing = [name for name in ("data_path", "save_path") if name not in config["train"]]
    if missing:
        raise ValueError(f"[train] needs {missing}")
    return dict(config["train"])


def schedule(config):
    """Stage dicts for ``Train.train``: ``loss`` + ``loss_config`` become a margin loss object."""
    from keras_insightface.losses.margin import get_margin_loss

    stages = []
    for index, stage in enumerate(config["stage"]):
        stage = dict(stage)
        if "epoch" not in stage or ("loss" not in stage and stage.get("type") not in ("triplet", "distill")):
            raise ValueError(f"stage {index} needs 'epoch' and 'loss' (or type 'triplet' / 'distill'), received {stage}")
        if "loss" not in stage:
            stages.append(stage)
            continue
        loss_config = stage.pop("loss_config", {})
        spec = {"class_name": stage["loss"], "config": loss_config} if loss_config else stage["loss"]
        stage["loss"] = get_margin_loss(spec)
        stages.append(stage)
    return stages


def save_resolved(config, path):
    """Write the resolved config as JSON (temp file, then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, path)
