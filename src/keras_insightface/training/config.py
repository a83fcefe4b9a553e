"""One run configuration: ``TrainConfig``, built the same way from ``Train(...)`` keywords, a TOML/JSON file and
``keras-insightface train`` flags, validated when built, saved beside the run with its defaults filled in.

The options are grouped in sections (``data``, ``model``, ``head``, ``augment``, ``optimizer``, ``run``); each
option's name is its ``Train`` keyword, its key in the file's ``[train]`` table and (with ``-`` for ``_``) its
flag, so the three cannot drift apart. ``[[stage]]`` tables are the stage dicts, the loss given by name::

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

    keras-insightface train r50.toml --batch-size 256 --set stage.1.epoch=20

Example:
    >>> config = TrainConfig.from_kwargs(data_path="faces", save_path="r50.keras", basic_model="r50", batch_size=256)
    >>> config.data.batch_size, config.optimizer.lr_base, config.train_kwargs()["basic_model"]
    (256, 0.001, 'r50')
    >>> TrainConfig.from_kwargs(data_path="faces", save_path="r50.keras", batch_size="big")
    Traceback (most recent call last):
    ...
    ValueError: batch_size: expected an integer, received 'big'
    >>> apply_overrides({"train": {"batch_size": 512}, "stage": [{"epoch": 5}]},
    ...                 ["train.batch_size=256", "stage.0.epoch=3", 'train.basic_model="r100"'])
    {'train': {'batch_size': 256, 'basic_model': 'r100'}, 'stage': [{'epoch': 3}]}
"""

import copy
import dataclasses
import difflib
import json
import os
import tomllib

from keras_insightface.atomic import write_json_atomic
from keras_insightface.errors import DataError, RunProblems

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULE_KINDS = ("cosine", "cosine_restarts", "exponential", "step", "polynomial")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(key, value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise ValueError(f"{key}: expected an integer, received {value!r}")
    return value


def _float(key, value):
    if not _is_number(value):
        raise ValueError(f"{key}: expected a number, received {value!r}")
    return float(value)


def _bool(key, value):
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool) and value not in (0, 1):
        raise ValueError(f"{key}: expected true or false, received {value!r}")
    return bool(value)


def _text(key, value):
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: expected a non-empty string, received {value!r}")
    return value


def _optional(check):
    def optional(key, value):
        return None if value is None else check(key, value)

    return optional


def _texts(key, value):
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key}: expected a list of paths, received {value!r}")
    return [_text(key, item) for item in value]


def _choice(*choices):
    def choice(key, value):
        if value not in choices:
            raise ValueError(f"{key}: expected one of {', '.join(map(str, choices))}, received {value!r}")
        return value

    return choice


def _decay_steps(key, value):
    """An epoch count, or a list of epochs (also ``"10,20"`` from a flag)."""
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"{key}: expected an epoch count or a list of epochs, received {value!r}") from None
    if isinstance(value, (list, tuple)):
        return [_int(key, item) for item in value]
    return _int(key, value)


def _model_spec(key, value):
    """A name or model file, a Keras model object (Python only), or (basic_model) the seed's layer index of the
    embedding inside ``model``."""
    if hasattr(value, "layers") or (key == "basic_model" and _is_int(value)):
        return value
    return _text(key, value)


def _augment(key, value):
    """A layer (Python), or a table of ``FaceAugment`` keywords (file, flag)."""
    if value is None or isinstance(value, dict) or callable(value):
        return value
    raise ValueError(f"{key}: expected a table of FaceAugment options or a layer, received {value!r}")


def _distribution(key, value):
    """``"auto"``, ``None`` (``"none"`` in a file or flag) or a ``keras.distribution.Distribution``."""
    if value in ("none", "None"):
        return None
    if value is None or value == "auto" or hasattr(value, "scope"):
        return value
    raise ValueError(f"{key}: expected 'auto', 'none' or a keras.distribution.Distribution, received {value!r}")


def option(default, check, help, flags=(), required=False):
    """A config field: its default, its check ``(key, value) -> value``, its help and extra CLI flags."""
    metadata = {"check": check, "help": help, "flags": tuple(flags), "required": required}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class _Section:
    """Checks (and normalises) every field when built; errors name the key and the value received."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.metadata["required"]:
                raise ValueError(f"{field.name}: required (a {field.metadata['help'].split(':')[0]})")
            setattr(self, field.name, field.metadata["check"](field.name, value))


@dataclasses.dataclass
class DataConfig(_Section):
    """Where the images come from and how they are batched."""

    data_path: str = option(None, _optional(_text), "training data: a train.rec folder, class-folder root, "
                            "path<TAB>label list file or npz list (distill-data / drop-topk)", ("--data",), True)
    batch_size: int = option(128, _int, "images per step and data-parallel device (the seed's batch_size)")
    num_workers: int = option(None, _optional(_int), "decode processes (default: cores - 1)")
    image_per_class: int = option(0, _int, "> 1: keep identities with that many images and batch whole identity "
                                  "groups of that size (triplet losses)")
    strict_data: bool = option(False, _bool, "stop at the first unreadable image instead of replacing it")
    allow_outside_paths: bool = option(False, _bool, "let a list file or npz list name images outside its own folder "
                                       "(the seed's absolute-path npz lists); off, such an entry is an error")
    jpeg_quality_level: float = option(0, _float, "L > 0 re-compresses images in the loader at JPEG quality 80 +- 5L")
    samples_per_mining: float = option(0, _float, "> 0: every stage trains on [anchor, positive, negative] triples "
                                       "mined offline each epoch with the current model, as the seed's (> 1 images "
                                       "per mining round, <= 1 a fraction of the dataset; groups of image_per_class, "
                                       "at least 4)")

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_mining > 0 and self.batch_size < 3:
            raise ValueError(f"samples_per_mining: batches of triples need batch_size >= 3, received {self.batch_size}")
        for key in ("batch_size", "image_per_class", "samples_per_mining"):
            if getattr(self, key) < (1 if key == "batch_size" else 0):
                raise ValueError(f"{key}: must be {'positive' if key == 'batch_size' else '>= 0'}, "
                                 f"received {getattr(self, key)}")


@dataclasses.dataclass
class ModelConfig(_Section):
    """The embedding model and where its weights start from."""

    basic_model: str = option(None, _optional(_model_spec), "a buildin_models name, a .keras / seed .h5 file to "
                              "fine-tune, or (Python) a keras.Model; with neither it nor model, the seed's "
                              "checkpoints/<save_path> is continued", ("--model",))
    emb_shape: int = option(512, _int, "embedding size of a built basic model")
    model_preset: str = option(None, _optional(_choice("arcface_torch")), "a built basic model's configuration: "
                               "none = the seed's (relu IR-ResNets, each backbone's BN), arcface_torch = PReLU "
                               "IR-ResNets and BN 0.9 / 1e-5 everywhere")
    weights: str = option(None, _optional(_text), "weights of a built keras.applications backbone: 'imagenet' "
                          "(downloaded by Keras) or a weights file")
    output_layer: str = option("GDC", _choice("GDC", "E", "GAP", "F"), "embedding head of a built basic model")
    model: str = option(None, _optional(_model_spec), "a full model (.keras / seed .h5): its basic model and its "
                        "classifier (when it fits the classes) continue", ("--full-model",))
    pretrained: str = option(None, _optional(_text), "a .keras / .h5 whose weights load into the basic model by "
                             "layer name and shape")
    mixed_precision: str = option("float32", _choice(*PRECISIONS), "dtype policy of the run")


@dataclasses.dataclass
class HeadConfig(_Section):
    """The classifier and the teacher."""

    partial_fc_sample_rate: float = option(1.0, _float, "< 1: Partial FC scores that fraction of the classes per step")
    output_weight_decay: float = option(1, _float, "weight decay of the classifier kernel: 0 none, >= 1 that many "
                                        "times weight_decay, in (0, 1) that value")
    teacher_model_interf: str = option(None, _optional(_model_spec), "a .keras / .h5 teacher run frozen inside the "
                                       "step, distilled into the student (stage key distill)", ("--teacher",))
    softmax_classifier: str = option("dense", _choice("dense", "euclidean"), "the classifier of softmax stages: "
                                     "'dense' (the seed's Dense without bias) or 'euclidean' (EuclideanDense: minus "
                                     "half the squared distance to each class center)")
    vpl_start_iters: int = option(-1, _int, "> 0: Variational Prototype Learning (NormDenseVPL) in margin stages "
                                  "from that step (< 50: that many epochs), as the seed's")
    vpl_allowed_delta: int = option(200, _int, "VPL: a class's remembered feature mixes into its center while at "
                                    "most that many steps old")

    def __post_init__(self):
        super().__post_init__()
        if self.vpl_start_iters > 0 and self.partial_fc_sample_rate < 1:
            raise ValueError("vpl_start_iters needs the full classifier: VPL is not available with Partial FC "
                             f"(partial_fc_sample_rate={self.partial_fc_sample_rate})")
        if self.vpl_allowed_delta < 0:
            raise ValueError(f"vpl_allowed_delta: must be >= 0, received {self.vpl_allowed_delta}")
        if not 0 < self.partial_fc_sample_rate <= 1:
            raise ValueError(f"partial_fc_sample_rate: must be in (0, 1], received {self.partial_fc_sample_rate}")
        if self.output_weight_decay < 0:
            raise ValueError(f"output_weight_decay must be >= 0, received {self.output_weight_decay}")


@dataclasses.dataclass
class AugmentConfig(_Section):
    """On-device augmentation inside the compiled step."""

    random_status: int = option(0, _int, "the seed's level: -1 none, 0 flip, 1 + brightness, 2 + contrast and saturation, "
                                "3 + crop; >= 100 RandAugment with magnitude 5 * random_status / 100")
    random_cutout_mask_area: float = option(0.0, _float, "probability of the seed's face-mask cutout")
    augment: dict = option(None, _augment, "FaceAugment options (a table), or (Python) a layer, instead of "
                           "random_status / random_cutout_mask_area")
    mixup_alpha: float = option(0, _float, "> 0: mixup inside the step, Beta(alpha, alpha) weights")


@dataclasses.dataclass
class OptimizerConfig(_Section):
    """The default optimizer and the learning-rate curve over all stages."""

    optimizer: str = option("adam", _text, "the optimizer of stages that name none: adam (the seed's default), sgd "
                            "(L2SGD), sgdw, adamw, radam, ranger, lookahead_<name>, or a Keras optimizer name")
    lr_base: float = option(0.001, _float, "peak learning rate (the seed's default 0.001 suits adam; SGD recipes "
                            "use 0.1)")
    lr_min: float = option(1e-6, _float, "floor of the learning rate, and where the seed's warmups start")
    lr_decay: float = option(0.05, _float, "exponential: decay rate per epoch (lr_base * exp(-lr_decay * epoch)); "
                             "cosine restarts: m_mul, each restart's peak scale; step: the factor per step")
    lr_decay_steps: int = option(0, _decay_steps, "as the seed: <= 1 exponential decay per epoch; N > 1 cosine "
                                 "restarts every N epochs (per batch; one cosine when lr_min == lr_base * lr_decay); "
                                 "a list of epochs: step decay at those")
    lr_t_mul: float = option(2.0, _float, "cosine restarts: each cycle this many times longer than the previous")
    lr_schedule: str = option(None, _optional(_choice(*SCHEDULE_KINDS)), "the schedule by name (default: from "
                              "lr_decay_steps); cosine = one cosine over the whole run, polynomial = arcface_torch's")
    lr_warmup_steps: int = option(0, _int, "warmup epochs (linear from lr_min; from 0 for cosine / polynomial)",
                                  ("--warmup",))
    weight_decay: float = option(5e-4, _float, "L2 (sgd) or decoupled (sgdw, adamw) weight decay")
    momentum: float = option(0.9, _float, "SGD momentum")
    sam_rho: float = option(0, _float, "> 0: Sharpness-Aware Minimization of that radius (the seed's sam_rho, e.g. "
                            "0.05): each step takes its gradient at the weights moved rho along the normalised "
                            "gradient, two forward and backward passes per step")

    def __post_init__(self):
        super().__post_init__()
        if self.sam_rho < 0:
            raise ValueError(f"sam_rho: must be >= 0 (0: no SAM), received {self.sam_rho}")
        if not 0 <= self.lr_min <= self.lr_base:
            raise ValueError(
                f"learning rates need 0 <= lr_min <= lr_base, received lr_min={self.lr_min}, lr_base={self.lr_base}"
            )
        is_list = isinstance(self.lr_decay_steps, list)
        kind = self.lr_schedule
        if kind is not None and ((kind == "step") != is_list or (kind == "cosine_restarts" and
                                                                  not self.lr_decay_steps > 1)):
            raise ValueError(f"lr_schedule {kind!r} needs lr_decay_steps as "
                             f"{'a list of epochs' if kind == 'step' else 'a number of epochs > 1'}, received "
                             f"{self.lr_decay_steps!r}")

    @property
    def schedule_kind(self):
        """The schedule name: ``lr_schedule``, or as the seed reads ``lr_decay_steps`` (a list of epochs: step
        decay, N > 1: cosine with restarts, <= 1: exponential).

        Example:
            >>> [OptimizerConfig(lr_decay_steps=steps).schedule_kind for steps in ([10, 20], 8, 0)]
            ['step', 'cosine_restarts', 'exponential']
        """
        if self.lr_schedule is not None:
            return self.lr_schedule
        if isinstance(self.lr_decay_steps, list):
            return "step"
        return "cosine_restarts" if self.lr_decay_steps > 1 else "exponential"


@dataclasses.dataclass
class RunConfig(_Section):
    """The run's outputs, evaluation, checkpoints and devices."""

    save_path: str = option(None, _optional(_text), "the run's name, e.g. r50_arcface.keras (a folder in it "
                            "overrides checkpoint_dir; keras-insightface train names a run given none "
                            "<model>_<loss>_<data>.keras)", required=True)
    checkpoint_dir: str = option("checkpoints", _text, "where the history, basic models and checkpoints go")
    eval_paths: list = option([], _texts, ".bin verification packs evaluated at every epoch end (the best basic "
                              "model of each is kept)", ("--eval",))
    eval_freq: int = option(1, _int, "as the seed: 1 evaluates at every epoch end; N > 1 also every N batches")
    eval_every_steps: int = option(0, _int, "also evaluate after every N batches (printed); given, it replaces eval_freq > 1")
    checkpoint_every_steps: int = option(0, _int, "a full-state checkpoint every N batches besides epoch ends",
                                         ("--checkpoint-every",))
    keep_checkpoints: int = option(2, _int, "full-state checkpoints kept (the latest and older ones); resume "
                                   "falls back to the newest intact one")
    tensorboard_dir: str = option(None, _optional(_text), "write Keras TensorBoard logs there")
    distribution: str = option("auto", _distribution, "'auto': every device of every host; 'none': the default "
                               "device only")
    model_parallel: int = option(1, _int, "> 1: shard the classifier kernel over groups of that many devices")
    seed: int = option(0, _int, "weight init, data order and augmentation draws")
    steps_per_execution: int = option(1, _int, "train steps per compiled call (Keras compile's; batch-level "
                                      "callbacks then run every that many steps)")
    overwrite: bool = option(False, _bool, "start over where a run of the same name left its history and "
                             "checkpoints (without it such a run is an error: resume it or rename)")
    append_history: bool = option(True, _bool, "a new run of a save_path that already has a history appends its "
                                  "epochs to it (the seed's My_history); off, such a run is an error unless "
                                  "overwrite")
    save_full_model: bool = option(True, _bool, "at every epoch end, the basic model with the run's classifier "
                                   "as <checkpoint_dir>/<save_path> (the seed's; continue it with model=)")
    verbose: int = option(1, _int, "Keras's progress bar (0: none)")

    def __post_init__(self):
        super().__post_init__()
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints: must be at least 1, received {self.keep_checkpoints}")
        for key in ("eval_freq", "eval_every_steps"):
            if getattr(self, key) < (1 if key == "eval_freq" else 0):
                raise ValueError(f"{key}: must be {'positive' if key == 'eval_freq' else '>= 0'}, received "
                                 f"{getattr(self, key)}")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "head": HeadConfig, "augment": AugmentConfig,
            "optimizer": OptimizerConfig, "run": RunConfig}


def default_of(field):
    """The default value of an option's field (a fresh copy for lists and tables)."""
    return field.default_factory() if callable(field.default_factory) else field.default


def options():
    """``{option name: (section name, dataclasses.Field)}`` of every option, in section order."""
    return {field.name: (section, field) for section, cls in SECTIONS.items() for field in dataclasses.fields(cls)}


@dataclasses.dataclass
class TrainConfig:
    """A whole run: its sections and its stage dicts (``loss`` an object, or a name with ``loss_config``)."""

    data: DataConfig
    model: ModelConfig
    head: HeadConfig
    augment: AugmentConfig
    optimizer: OptimizerConfig
    run: RunConfig
    stages: list = dataclasses.field(default_factory=list)

    @classmethod
    def from_kwargs(cls, stages=(), **kwargs):
        """From ``Train`` keywords (flat option names); unknown names are an error that lists the valid ones."""
        known = options()
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            close = {name: difflib.get_close_matches(name, known, 1) for name in unknown}  # typos: the likely option
            hints = ", ".join(f"{match[0]!r} for {name!r}" for name, match in close.items() if match)
            raise ValueError(f"unknown options {unknown}; the options are {', '.join(known)}"
                             + (f"; did you mean {hints}?" if hints else ""))
        grouped = {section: {} for section in SECTIONS}
        for name, value in kwargs.items():
            grouped[known[name][0]][name] = value
        return cls(**{section: SECTIONS[section](**values) for section, values in grouped.items()},
                   stages=list(stages))

    @classmethod
    def from_dict(cls, config, where="config"):
        """From a ``{"train": {...}, "stage": [...]}`` dict (a file's content); errors name ``where``."""
        unknown = set(config) - {"train", "stage"}
        if unknown or "train" not in config or not config.get("stage"):
            raise DataError(f"{where}: needs a [train] table and at least one [[stage]]; unknown sections "
                            f"{sorted(unknown)}")
        from keras_insightface.training.stages import plan_stage, prepare_schedule

        problems, built = [], None
        try:
            built = cls.from_kwargs(stages=config["stage"], **config["train"])
        except (TypeError, ValueError) as error:
            problems.append(f"{where}: [train] {error}")
        try:  # the stages are checked even when [train] is wrong: every problem in one message
            for index, stage in enumerate(prepare_schedule(schedule(list(config["stage"])))):
                plan_stage(index, stage)
        except (TypeError, ValueError) as error:
            problems.append(f"{where}: [[stage]] {error}")
        if problems:
            raise RunProblems(problems)
        return built

    def train_kwargs(self):
        """The flat ``Train`` keywords, every option included."""
        return {name: getattr(getattr(self, section), name) for name, (section, _) in options().items()}

    def to_dict(self):
        """The resolved config as a file holds it (defaults filled in; ``None`` options left out, as TOML has no
        null); objects that are not plain values (a model, a layer) are named by their type."""
        train = {}
        for name, value in self.train_kwargs().items():
            if value is None:
                continue
            train[name] = value if _plain(value) else f"<{type(value).__name__}>"
        return {"train": train, "stage": [_plain_stage(stage) for stage in self.stages]}


def _plain(value):
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _plain_stage(stage):
    """A stage dict as a file holds it: a loss object becomes its class name and ``loss_config``."""
    stage = dict(stage)
    loss = stage.get("loss")
    if loss is not None and not isinstance(loss, str):
        from keras_insightface.losses.registry import serialize_stage_loss

        serialized = serialize_stage_loss(loss)
        stage["loss"], stage["loss_config"] = serialized["class_name"], serialized["config"]
    return {key: value if _plain(value) else f"<{type(value).__name__}>" for key, value in stage.items()}


def load_config(path):
    """The config dict of a ``.toml`` or ``.json`` file; a clear error for a missing or malformed file (its keys
    and values are checked when ``TrainConfig.from_dict`` builds the run from it, after any overrides)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: config file does not exist")
    try:
        with open(path, "rb") as f:
            config = json.load(f) if str(path).endswith(".json") else tomllib.load(f)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid config file ({error})") from None
    return config


def parse_value(text):
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
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            if isinstance(node, list):
                node[int(last)] = parse_value(text.strip())
            elif isinstance(node, dict):
                node[last] = parse_value(text.strip())
            else:
                raise TypeError(f"{type(node).__name__} has no keys")
        except (IndexError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"override {assignment!r}: no such entry in the config ({error}); list items are "
                             "counted from 0, e.g. stage.0.epoch=3") from None
    return config


def schedule(stages):
    """Stage dicts for ``Train.train``: ``loss`` + ``loss_config`` become the loss object of that name (any stage
    loss: ``losses/registry.py``; the stage keys are checked by ``stages.plan_stage``); errors name the stage."""
    from keras_insightface.losses.registry import get_stage_loss

    result = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ValueError(f"Stage {index}: expected a table of stage keys, received {stage!r}")
        stage = dict(stage)
        if "loss" in stage and isinstance(stage["loss"], str):
            loss_config = stage.pop("loss_config", {})
            spec = {"class_name": stage["loss"], "config": loss_config} if loss_config else stage["loss"]
            try:
                stage["loss"] = get_stage_loss(spec)
            except ValueError as error:
                raise ValueError(f"Stage {index}: {error}") from None
        result.append(stage)
    return result


def save_resolved(config, path):
    """Write the resolved config (a ``TrainConfig`` or its dict) as JSON (temp file, then rename)."""
    data = config.to_dict() if isinstance(config, TrainConfig) else config
    write_json_atomic(path, data)
