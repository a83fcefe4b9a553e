"""The command line explains itself: every option documented with its default, one spelling per thing across
commands (old spellings parse the same and stay out of --help), loss and model names in any case."""

import argparse
import re

import pytest

import keras_insightface.cli
from keras_insightface.cli import main, make_parser
from keras_insightface.cli.train import LOSSES, build_schedule
from keras_insightface.losses.registry import get_stage_loss, stage_loss_names
from keras_insightface.training.config import default_of, options


@pytest.fixture(autouse=True)
def _fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # argparse wraps help text to the terminal


def _commands():
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _help(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _entry(text, action):
    """The help entry of ``action``: its invocation line and the more indented lines under it."""
    if action.option_strings:
        first = action.option_strings[0]
    else:
        first = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"  {re.escape(first)}(\s|,|$)", line):
            block = [line]
            for more in lines[index + 1:]:
                if not more.startswith("    "):
                    break
                block.append(more)
            return " ".join(part.strip() for part in block)
    raise AssertionError(f"{first} is not listed in the help")


def _has_default(action):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction, argparse._HelpAction)):
        return None
    return action.default not in (None, False, [], argparse.SUPPRESS) or isinstance(
        action, argparse.BooleanOptionalAction)


def _run_option_default(command, dest):
    """The default ``train`` / ``demo`` uses for a run option: the command's preset, else the config's own."""
    name = dest.removeprefix("option:")
    preset = _commands()[command].get_default("preset")
    return preset.get(name, default_of(options()[name][1]))


def test_top_help_shows_the_description_and_every_example(capsys):
    out = _help(capsys, [])
    summary, _, rest = keras_insightface.cli.__doc__.partition("\n\n")
    assert " ".join(summary.split()) in " ".join(out.split())
    examples = [line.strip() for line in rest.splitlines() if line.strip().startswith("keras-insightface ")]
    assert len(examples) > 20
    for line in examples:
        assert line in out, line
    assert "Exit codes: 0 done" in out
    for name in _commands():
        assert re.search(rf"^    {re.escape(name)}\b", out, re.M), name


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_has_help_and_shows_its_default(capsys, command):
    parser = _commands()[command]
    out = _help(capsys, [command])
    help_text = parser.description or ""
    assert help_text and " ".join(help_text.split())[:60] in " ".join(out.split())  # what the command does
    checked = 0
    for action in parser._actions:
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        entry = _entry(out, action)
        invocation = ", ".join(action.option_strings) if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{command} {invocation}: no help text"
        if action.dest.startswith("option:"):
            default = _run_option_default(command, action.dest)
            wanted = default not in (None, [])
        else:
            default, wanted = action.default, _has_default(action)
        if wanted:
            assert "(default: " in entry, f"{command} {invocation}: no default in {entry!r}"
            if isinstance(action, argparse.BooleanOptionalAction):
                assert f"(default: {action.option_strings[0 if default else 1]})" in entry
            elif isinstance(default, (int, float, str)) and not isinstance(default, bool):
                assert f"(default: {default}" in entry, entry
        checked += 1
    assert checked >= 2


def test_defaults_read_as_typed(capsys):
    train = _help(capsys, ["train"])
    assert "(default: 128)" in _entry(train, _action("train", "-b"))
    assert "(default: r50)" in _entry(train, _action("train", "--model"))
    assert "(default: 5,5,40)" in _entry(train, _action("train", "--epochs"))
    assert "(default: 16,32,64)" in _entry(train, _action("train", "--scales"))
    assert "(default: arcface)" in _entry(train, _action("train", "--loss"))
    assert "(default: false)" in _entry(train, _action("train", "--overwrite"))
    lr_schedule = _entry(train, _action("train", "--lr-schedule"))
    assert "(default: cosine)" in lr_schedule and "from lr_decay_steps" not in lr_schedule  # the command's, not Train's
    assert "(default: 0.0001,0.001,0.01)" in _entry(_help(capsys, ["eval-folder"]), _action("eval-folder", "--fprs"))
    assert "(default: 64)" in _entry(_help(capsys, ["eval"]), _action("eval", "-b"))


def _action(command, flag):
    return next(a for a in _commands()[command]._actions if flag in a.option_strings)


def _parse(argv):
    return vars(make_parser().parse_args(argv))


@pytest.mark.parametrize("old, new, hidden", [
    (["eval", "-m", "a.keras", "-t", "lfw.bin", "cfp_fp.bin"],
     ["eval", "-m", "a.keras", "--eval", "lfw.bin", "cfp_fp.bin"], ["-t", "--test-bin"]),
    (["eval", "--test-bin", "lfw.bin", "-m", "a.keras"], ["eval", "-e", "lfw.bin", "-m", "a.keras"], ["--test-bin"]),
    (["compare", "a.jpg", "b.jpg", "-m", "a.keras", "--set", "lfw"],
     ["compare", "a.jpg", "b.jpg", "-m", "a.keras", "--eval-set", "lfw"], ["--set"]),
    (["export", "a.keras", "--format", "tflite"], ["export", "-m", "a.keras", "--format", "tflite"], []),
    (["summary", "r50", "--runs", "2"], ["summary", "--model", "r50", "--runs", "2"], []),
    (["drop-topk", "faces", "kept.npz", "-m", "a.keras", "--kernel", "k.npy", "--top-k", "3"],
     ["drop-topk", "faces", "kept.npz", "-m", "a.keras", "--kernel", "k.npy", "--loss-top-k", "3"], ["--top-k"]),
])
def test_old_spellings_parse_as_the_new_and_stay_hidden(capsys, old, new, hidden):
    parsed = _parse(old)
    assert parsed == _parse(new)
    assert not any(key.startswith("old positional") for key in parsed)
    out = _help(capsys, new[:1])
    for flag in hidden:
        assert not re.search(rf"(^|[\s\[]){re.escape(flag)}\b", out), flag
    if new[0] in ("export", "summary"):  # the model is -m only
        assert "positional arguments" not in out
    assert re.search(r"usage: keras-insightface \S+ \[-h\] -m MODEL", out)  # required, in either spelling


@pytest.mark.parametrize("argv, message", [
    (["export"], "the following arguments are required: -m/--model"),
    (["summary", "r50", "-m", "r100"], "-m/--model is given twice"),
    (["eval", "-m", "a.keras"], "the following arguments are required: -e/--eval"),
])
def test_model_and_packs_missing_or_twice(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command, extra, default", [
    ("eval", ["-m", "a.keras", "-e", "lfw.bin"], True),
    ("eval-folder", ["faces", "-m", "a.keras"], False),
    ("distill-data", ["faces", "out.npz", "-m", "a.keras"], False),
])
def test_flip_is_one_flag_pair_everywhere(command, extra, default):
    assert _parse([command, *extra])["flip"] is default
    assert _parse([command, *extra, "--flip"])["flip"] is True
    assert _parse([command, *extra, "--no-flip"])["flip"] is False
    assert "no_flip" not in _parse([command, *extra, "--no-flip"])


def test_same_thing_same_flag_in_every_command():
    short = {"batch_size": "-b", "option:batch_size": "-b", "model": "-m", "option:basic_model": "-m",
             "eval": "-e", "option:eval_paths": "-e"}
    long = {"batch_size": "--batch-size", "option:batch_size": "--batch-size", "model": "--model",
            "option:basic_model": "--model", "eval": "--eval", "option:eval_paths": "--eval"}
    seen = set()
    for name, parser in _commands().items():
        for action in parser._actions:
            if action.dest in short and action.help is not argparse.SUPPRESS:
                assert {short[action.dest], long[action.dest]} <= set(action.option_strings), (name, action.dest)
                seen.add((name, short[action.dest]))
            assert "--set" not in action.option_strings or action.dest == "set" or action.help is argparse.SUPPRESS
    assert {("train", "-b"), ("train", "-m"), ("train", "-e"), ("eval", "-e"), ("export", "-m"), ("summary", "-m"),
            ("summary", "-b"), ("ijb", "-b"), ("search", "-m"), ("demo", "-b"), ("convert", "-m")} <= seen
    assert not any(flag in _commands()["demo"]._option_string_actions for flag in ("--data", "--eval"))  # demo's own


def test_run_switches_also_work_bare_as_in_the_other_commands():
    bare = _parse(["train", "--overwrite", "--allow-outside-paths", "--data", "faces"])
    assert bare == _parse(["train", "--overwrite", "true", "--allow-outside-paths", "true", "--data", "faces"])
    assert _parse(["train", "--overwrite", "false"])["option:overwrite"] == "false"
    assert _parse(["eval-folder", "faces", "-m", "a.keras", "--allow-outside-paths"])["allow_outside_paths"] is True


@pytest.mark.parametrize("spelling", ["arcface", "ArcFaceLoss", "arcfaceloss", "ARCFACELOSS", "ArcfaceLoss"])
def test_loss_names_in_any_case_build_the_same_schedule(spelling):
    args = make_parser().parse_args(["train", "--loss", spelling, "--scales", "16,32", "--epochs", "1,2"])
    stages = build_schedule(args.loss, args.scales, args.epochs)
    assert stages == build_schedule("arcface", [16.0, 32.0], [1, 2])
    loss = get_stage_loss({"class_name": stages[1]["loss"], "config": stages[1]["loss_config"]})
    assert type(loss).__name__ == "ArcfaceLoss" and loss.get_config()["scale"] == 32


@pytest.mark.parametrize("name", [*LOSSES, *stage_loss_names()])
def test_every_stage_loss_name_is_accepted(name):
    for spelling in (name, name.upper(), name.lower()):
        stages = build_schedule(make_parser().parse_args(["train", "--loss", spelling]).loss, [16.0], [3])
        assert len(stages) == 1 and stages[0]["epoch"] == 3
        assert stages[0]["loss"].lower() in {known.lower() for known in stage_loss_names()}


def test_loss_without_a_scale_takes_one_stage_per_epoch_entry():
    stages = build_schedule(make_parser().parse_args(["train", "--loss", "BATCHHARDTRIPLETLOSS"]).loss,
                            [16.0, 32.0, 64.0], [2, 3])
    assert stages == [{"loss": "BatchHardTripletLoss", "epoch": 2}, {"loss": "BatchHardTripletLoss", "epoch": 3}]
    assert get_stage_loss(stages[0]["loss"]).alpha == pytest.approx(0.35)
    cosface = [{"loss": "CosFaceLoss", "loss_config": {"scale": 64.0}, "epoch": 1}]
    assert build_schedule("cosface", [64.0], [1]) == cosface


@pytest.mark.parametrize("wrong, close", [("arcfase", "'arcface'"), ("CosFace_Loss", "'CosFaceLoss'"),
                                          ("adaface", "'AdaFaceLoss'")])
def test_unknown_loss_is_an_argparse_error_with_the_closest_names(capsys, wrong, close):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", "faces", "--loss", wrong])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --loss: unknown loss {wrong!r} (did you mean " in err and close in err
    assert "Traceback" not in err


def test_backbone_names_in_any_case(capsys):
    rows = {}
    for name in ("r18_tiny", "R18_TINY"):
        assert main(["models", name, "--emb-shape", "16"]) == 0
        row = capsys.readouterr().out.splitlines()[2].split("|")
        rows[name] = [cell.strip() for cell in row[2:4]]
    assert rows["R18_TINY"] == rows["r18_tiny"] and float(rows["r18_tiny"][0]) > 0
    assert main(["models", "R18_TINI"]) == 2
    assert "did you mean 'r18_tiny'" in capsys.readouterr().err
