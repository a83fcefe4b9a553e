"""Training commands: ``train`` (flags, a config file, or ``--resume DIR``) and ``demo``.

The run options are not written here: every option of the run configuration (``training/config.py``) becomes a
flag (``batch_size`` -> ``--batch-size``, plus the aliases it names, e.g. ``--data``, ``--model``, ``--eval``), so a
``Train`` keyword, a config file's ``[train]`` key and a flag are one thing. Next to a config file, a flag
overrides the file's value and the run says so. ``--loss``, ``--scales`` and ``--epochs`` write the stages.
"""

import argparse
import contextlib
import glob
import os
import time

from keras_insightface.cli.args import SHORT_FLAGS, float_list, int_list, loss_name, show_default
from keras_insightface.errors import DataError, RunProblems
from keras_insightface.hosts import is_primary
from keras_insightface.training.preflight import file_problems, run_problems
from keras_insightface.training.run_files import prefix_of
from keras_insightface.training.run_log import tee_console
from keras_insightface.training.config import (
    TrainConfig, apply_overrides, default_of, load_config, options, parse_value,
)

LOSSES = {"arcface": "ArcfaceLoss", "arcface_simple": "ArcfaceLossSimple", "cosface": "CosFaceLoss"}
METAVARS = {int: "N", float: "X", bool: "{true,false}", list: "PATH", dict: "TABLE"}
OPTION = "option:"  # argparse destination prefix of the generated option flags
EXIT_DIVERGED = 3  # the run stopped on a NaN loss or a collapsed loss scale
EXIT_INTERRUPTED = 4  # the run stopped on SIGTERM / SIGINT after a checkpoint: resume it
STAGE_FLAGS = {"loss": "arcface", "scales": [16, 32, 64], "epochs": [5, 5, 40]}
# The command line trains arcface_torch's recipe (SGD 0.1, one cosine over the run); Train's defaults are the
# seed's (Adam 0.001, exponential decay). A run of an existing name is an error here, not an appended history.
RECIPE = {"basic_model": "r50", "model_preset": "arcface_torch", "optimizer": "sgd", "lr_base": 0.1, "lr_min": 1e-5,
          "lr_schedule": "cosine", "append_history": False, "save_full_model": False}
TRAIN_PRESET = RECIPE  # save_path: default_run_name
DEMO_PRESET = {
    **RECIPE, "basic_model": "r18_tiny", "emb_shape": 128, "batch_size": 64, "lr_warmup_steps": 1,
    "save_path": "demo_r18_tiny.keras", "checkpoint_dir": os.path.join("runs", "demo"), "overwrite": True,
}
DEMO_STAGES = {"loss": "arcface", "scales": [16, 32, 64], "epochs": [2, 2, 2]}


def build_schedule(loss, scales, epochs):
    """Config ``[[stage]]`` tables from ``--loss``, ``--scales`` and ``--epochs``: one stage per scale, or, for a
    loss without a scale (softmax, triplet, distillation losses), one stage per ``--epochs`` entry."""
    import inspect

    from keras_insightface.losses.margin import ALIASES, MARGIN_LOSSES
    from keras_insightface.losses.registry import OTHER_STAGE_LOSSES

    name = loss_name(loss, LOSSES)
    loss_class = {**MARGIN_LOSSES, **OTHER_STAGE_LOSSES}.get(ALIASES.get(name, name))
    if loss_class is None or "scale" not in inspect.signature(loss_class).parameters:
        return [{"loss": name, "epoch": epoch} for epoch in epochs]
    if len(scales) != len(epochs):
        raise ValueError(f"--scales and --epochs need the same length, received {scales} and {epochs}")
    return [{"loss": name, "loss_config": {"scale": scale}, "epoch": epoch} for scale, epoch in zip(scales, epochs)]


def results_table(history, eval_names, stage_epochs=None):
    """The per-epoch markdown table printed at the end of a run."""
    stage_of = []
    for index, count in enumerate(stage_epochs or []):
        stage_of += [index + 1] * count
    header = ["epoch", "stage", "lr", "loss", "accuracy"]
    for name in eval_names:
        header += [name, f"{name} thresh", f"{name} 10-fold"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for epoch in range(len(history.get("loss", []))):
        row = [str(epoch + 1), str(stage_of[epoch]) if epoch < len(stage_of) else "-"]
        accuracy = history.get("accuracy", [])
        row += [f"{history['lr'][epoch]:.2e}", f"{history['loss'][epoch]:.4f}",
                f"{accuracy[epoch]:.4f}" if epoch < len(accuracy) else "-"]
        for name in eval_names:
            values = [history.get(key, []) for key in (name, name + "_thresh", name + "_kfold")]
            std = history.get(name + "_kfold_std", [])
            if epoch < len(values[0]):
                row += [f"{values[0][epoch]:.4f}", f"{values[1][epoch]:.4f}", f"{values[2][epoch]:.4f} ± {std[epoch]:.4f}"]
            else:
                row += ["-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_option_flags(parser, preset, stage_preset, fixed=()):
    """One flag per run option (default: ``preset``, else the option's own) but the ``fixed`` ones the command
    sets itself, and the stage flags."""
    group = parser.add_argument_group(
        "run options", "every option of the run config (a config file's [train] keys, Train's keywords); "
        "next to a config file, a flag overrides the file's value")
    aliases = {flag for _, field in options().values() for flag in field.metadata["flags"]}
    for name, (_, field) in options().items():
        if name in fixed:
            continue
        own = f"--{name.replace('_', '-')}"  # unless another option's alias (--model is basic_model's)
        flags = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
        flags += [own] * (own not in aliases) + list(field.metadata["flags"])
        default = preset.get(name, default_of(field))
        text, own_default = field.metadata["help"], field.metadata["help"].find(" (default: ")
        if name in preset and own_default >= 0:  # the command's default replaces the one the option's help names
            text = text[:own_default] + text[text.index(")", own_default) + 1:]
        if default not in (None, []):
            text += f" (default: {show_default(default)})"
        metavar = METAVARS.get(field.type, name.split("_")[-1].upper())
        kwargs = dict(dest=OPTION + name, default=argparse.SUPPRESS, metavar=metavar, help=text.replace("%", "%%"))
        if field.type is list:
            kwargs["nargs"] = "*"
        elif field.type is bool:  # a bare --overwrite, as the other commands' switches, or --overwrite false
            kwargs.update(nargs="?", const="true")
        group.add_argument(*flags, **kwargs)
    stages = parser.add_argument_group("stages", "one stage per scale, or per --epochs entry for a loss without a "
                                       "scale (without a config file, or to replace its stages)")
    stages.add_argument("--loss", type=lambda text: loss_name(text, LOSSES), default=argparse.SUPPRESS, metavar="LOSS",
                        help=f"loss of every stage, in any case: {', '.join(LOSSES)} or a stage loss name "
                             "(ArcfaceLoss, CosFaceLoss, AdaFaceLoss, CurricularFaceLoss, MagFaceLoss, SoftmaxLoss, "
                             f"BatchHardTripletLoss, ...) (default: {stage_preset['loss']})")
    stages.add_argument("--scales", type=float_list, default=argparse.SUPPRESS,
                        help="the loss's scale per stage, e.g. 16,32,64; a loss without a scale (softmax, triplet) "
                             f"takes one stage per --epochs entry (default: {show_default(stage_preset['scales'])})")
    stages.add_argument("--epochs", type=int_list, default=argparse.SUPPRESS,
                        help=f"epochs per stage, e.g. 5,5,40 (default: {show_default(stage_preset['epochs'])})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="config override, e.g. train.batch_size=256 or stage.1.epoch=20 (repeatable)")
    parser.set_defaults(preset=preset, stage_preset=stage_preset)


def given_options(args):
    """The options given as flags: text options as typed, others parsed as TOML values (numbers, booleans,
    arrays, tables)."""
    known, given = options(), {}
    for key, raw in vars(args).items():
        if key.startswith(OPTION):
            name = key[len(OPTION):]
            given[name] = raw if known[name][1].type in (str, list) else parse_value(raw)
    return given


def run_config(args, extra=None):
    """The ``TrainConfig`` of a ``train`` / ``demo`` command line (``extra``: options the command sets itself).

    With a config file (or ``--resume DIR``'s saved config) the file is the base and each given flag overrides
    it, with a line saying so; without one, the command's preset is. A run given no ``save_path`` is named
    ``default_run_name``.
    """
    return TrainConfig.from_dict(*config_dict(args, extra))


def checked_config(args, extra=None):
    """``run_config``, with every problem of the options, the stages, the files they name and the run's own
    checkpoints found at once (``training/preflight.py``) and raised together as ``RunProblems``."""
    config, where = config_dict(args, extra)
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    problems = []
    try:
        built = TrainConfig.from_dict(config, where)
    except RunProblems as error:
        problems += error.problems
    except ValueError as error:
        problems.append(str(error))
    problems += file_problems(train) + run_problems(train, resume=bool(getattr(args, "resume", False)))
    if problems:
        raise RunProblems(problems)
    return built


def config_dict(args, extra=None):
    """The command line's config dict (``{"train": ..., "stage": ...}``) and where it came from."""
    given = {**given_options(args), **(extra or {})}
    stage_flags = {key: getattr(args, key) for key in STAGE_FLAGS if hasattr(args, key)}
    resume_dir = getattr(args, "resume", None) if isinstance(getattr(args, "resume", None), str) else None
    path = resume_config(resume_dir) if resume_dir else getattr(args, "config", None)
    if path:
        config = load_config(path)
        if not resume_dir and isinstance(config.get("train"), dict):  # the file's values over the command's recipe
            config["train"] = {**args.preset, **config["train"]}
        if resume_dir:  # the run in DIR, wherever it was first written
            run_dir = os.path.dirname(os.path.abspath(path))
            stored = config["train"].get("checkpoint_dir")
            if stored is None or os.path.abspath(stored) != run_dir:
                print(f">>>> resuming the run in {run_dir} (its config named checkpoint_dir {stored!r})")
            config["train"]["checkpoint_dir"] = run_dir
            config["train"]["save_path"] = os.path.basename(config["train"]["save_path"])
        for name, value in given.items():
            was = config["train"].get(name, "its default")
            print(f">>>> {name} = {value!r} from the command line (the config file has {was!r})")
            config["train"][name] = value
        if stage_flags:
            print(f">>>> stages from the command line ({', '.join('--' + key for key in stage_flags)})")
            config["stage"] = build_schedule(**{**args.stage_preset, **stage_flags})
    else:
        if "data_path" not in given:
            raise DataError("train needs --data (or a config file: keras-insightface train run.toml)")
        config = {"train": {**args.preset, **given}, "stage": build_schedule(**{**args.stage_preset, **stage_flags})}
    config = apply_overrides(config, args.set or [])
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    if train and not train.get("save_path") and train.get("data_path"):
        train["save_path"] = default_run_name(train, config.get("stage") or [])
        print(f">>>> run name {train['save_path']} (from the model, loss and data; --save-path names it)")
    return config, path or "command line"


def default_run_name(train, stages):
    """``<model>_<loss>_<data>.keras`` for a run given no ``save_path``, e.g. ``r50_arcface_faces_emore.keras``."""
    model = train.get("basic_model")
    if isinstance(model, str):
        model = os.path.splitext(os.path.basename(model))[0] if model.endswith((".keras", ".h5")) else model.lower()
    else:
        model = "model"
    loss = stages[0].get("loss", "loss") if stages and isinstance(stages[0], dict) else "loss"
    loss = loss if isinstance(loss, str) else type(loss).__name__
    loss = loss[:-4] if loss.lower().endswith("loss") and len(loss) > 4 else loss
    data = os.path.normpath(str(train["data_path"]))
    if os.path.isfile(data):  # a .rec names its folder; a list or npz file its stem
        data = os.path.dirname(data) if data.endswith(".rec") else os.path.splitext(data)[0]
    data = os.path.basename(data)
    name = "_".join(part for part in (model, loss.lower(), data) if part)
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name) + ".keras"


def run_training(config, baseline=False, resume=False):
    """Train per ``config``; write the resolved config, history JSON, best basic model and a PNG plot; print the
    results table (and, with ``baseline``, the untrained model's accuracy on each pack). Returns the exit code."""
    from keras_insightface.training.config import schedule
    from keras_insightface.training.runner import claim_run, finished_run, release_run
    from keras_insightface.training.train import Train

    stages = schedule(config.stages)
    prefix = prefix_of(config.run.save_path, config.run.checkpoint_dir)
    if resume:
        finished = finished_run(prefix, stages)
        if finished:  # nothing to train: say so before building or compiling anything
            print(finished)
            return 0
    start = time.time()
    log = tee_console(prefix + "_train.log", start=False) if is_primary() else contextlib.nullcontext()
    with log as written:
        trainer = Train(**config.train_kwargs())
        claim_run(trainer.run, resume)  # before anything is written: the lock, and no new run over an old one
        if written is not None:
            written.start()  # the log from the command's first line, now that the run folder is this run's
        try:
            return _train_and_report(config, trainer, stages, baseline, resume, start)
        finally:
            release_run(trainer.run)
            trainer.close()


def _train_and_report(config, trainer, stages, baseline, resume, start):
    from keras_insightface.evaluation.verification import evaluate_bin
    from keras_insightface.training.config import save_resolved

    if is_primary():
        save_resolved(config, trainer.prefix + "_config.json")  # what `train --resume DIR` reruns
        print(f">>>> config: {trainer.prefix}_config.json")
    untrained = {}
    if baseline:
        for path in config.run.eval_paths:
            untrained[path] = evaluate_bin(trainer.basic_model, path, config.data.batch_size)
    history = trainer.train(stages, resume=resume)
    names = [callback.name for callback in trainer.eval_callbacks]
    epochs = [int(stage["epoch"]) for stage in stages]
    plot_path = trainer.run.plot_path  # written by the run (runner.write_plot)
    print("\n" + results_table(history, names, epochs) + "\n")
    for path, result in untrained.items():
        name = os.path.splitext(os.path.basename(path))[0]
        best = max(history.get(name, [float("nan")]))
        print(f"{name}: untrained model {result['accuracy']:.4f} (10-fold {result['kfold_mean']:.4f}),"
              f" best after training {best:.4f}")
    print(f"history: {trainer.history_path}\nbest basic model: {trainer.best_model_path}\nplot: {plot_path}\n"
          f"log: {trainer.run.log_path}")
    print(f"total time {time.time() - start:.0f} s")
    return exit_code(trainer.stop_reason)


def exit_code(stop_reason):
    """0 for a finished run, ``EXIT_INTERRUPTED`` after a stop signal, ``EXIT_DIVERGED`` after a NaN stop."""
    if stop_reason is None:
        return 0
    code = EXIT_INTERRUPTED if stop_reason in ("SIGTERM", "SIGINT") else EXIT_DIVERGED
    print(f">>>> the run stopped early ({stop_reason}): exit code {code}")
    return code


def cmd_demo(args):
    from keras_insightface.demo.synthetic import generate_dataset

    cache = args.cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "keras_insightface", "synthetic"
    )
    start = time.time()
    paths = generate_dataset(cache, seed=args.data_seed)
    print(f">>>> Generated dataset ready in {cache} ({time.time() - start:.0f} s)")
    config = checked_config(args, extra={"data_path": str(paths["train"]), "eval_paths": [str(paths["val"])]})
    return run_training(config, baseline=True)


def resume_config(target):
    """The resolved config ``--resume DIR`` continues: ``DIR/<name>_config.json`` (or that file itself)."""
    if os.path.isfile(target):
        return target
    found = sorted(glob.glob(os.path.join(glob.escape(target), "*_config.json")))
    if len(found) != 1:
        what = f"{len(found)} run configs ({', '.join(found)})" if found else "no <name>_config.json"
        raise DataError(f"{target}: {what}; pass the run's config: --resume {target}/<name>_config.json")
    return found[0]


def join_hosts(args):
    """Start a run of several hosts when the flags or ``KERAS_DISTRIBUTION_*`` environment variables ask for it."""
    asked = args.coordinator or args.num_processes or os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if asked:
        from keras_insightface.training.distribute import initialize_hosts

        initialize_hosts(args.coordinator, args.num_processes, args.process_id)


def cmd_train(args):
    join_hosts(args)
    return run_training(checked_config(args), resume=bool(args.resume))


def add_commands(sub):
    """Register ``demo`` and ``train`` on ``sub`` (the parser's subparsers)."""
    common = "[-m MODEL] [-b N] [--loss LOSS] [--scales SCALES] [--epochs EPOCHS] [OPTION ...]"  # not all 60 flags
    demo = sub.add_parser("demo", usage=f"%(prog)s [-h] {common}",
                          help="generate the synthetic face dataset, train a small model, evaluate")
    add_option_flags(demo, DEMO_PRESET, DEMO_STAGES, fixed=("data_path", "eval_paths"))  # the generated dataset
    demo.add_argument("--cache-dir", default=None, metavar="DIR", help="where the generated dataset is kept "
                      "(default: keras_insightface/synthetic in $XDG_CACHE_HOME or ~/.cache)")
    demo.add_argument("--data-seed", type=int, default=0, help="seed of the generated faces and identities")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", usage=f"%(prog)s [-h] [CONFIG] [--resume [DIR]] [--data PATH] [-e [PATH ...]] "
                                          f"{common}",
                           help="train on a .rec folder, class folders or a list file, or from a config file")
    train.add_argument("config", nargs="?", help="a .toml/.json run config ([train] + [[stage]]); flags override it")
    train.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                       help="continue from the run's latest full-state checkpoint (<checkpoint_dir>/<name>_state); "
                            "with DIR, the run whose <name>_config.json is there, with no other flags needed")
    hosts = train.add_argument_group("several hosts", "run the same command on every host")
    hosts.add_argument("--coordinator", help="HOST:PORT of process 0 (or KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    hosts.add_argument("--num-processes", type=int, help="hosts in the run (or KERAS_DISTRIBUTION_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int,
                       help="this host's index, 0 = coordinator (or KERAS_DISTRIBUTION_PROCESS_ID)")
    add_option_flags(train, TRAIN_PRESET, STAGE_FLAGS)
    train.set_defaults(func=cmd_train)
