"""Argument helpers shared by the commands: the parser classes (defaults in every help line, hidden old
spellings), list and number parsers, loss names, embedding and detector options."""

import argparse
import copy
import difflib
import types

# what every -m / --model option opens (inference/embedders.py open_model)
MODEL_FILES = ".keras, seed .h5, .onnx (NCHW or NHWC), TorchScript .pt/.pth or an arcface_torch state dict .pth"
# one short flag per thing, in every command that takes it (train's come from the run options' names)
SHORT_FLAGS = types.MappingProxyType({"batch_size": "-b", "basic_model": "-m", "eval_paths": "-e"})
OLD_POSITIONAL = "old positional:"  # destination prefix of a positional kept hidden as an option's old spelling


def show_default(value):
    """A default as it is typed on the command line: lists comma-separated, booleans lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(show_default(item) for item in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default at the end of its help line, options that are required once their old spellings
    are resolved shown as required in the usage, and texts with indented lines (examples) kept as written."""

    def _fill_text(self, text, width, indent):
        if "\n " in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "(default" in text or default is None or default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {action.option_strings[0 if default else 1]})"
        if default is False or default == []:
            return text
        return f"{text} (default: {show_default(default).replace('%', '%%')})"

    def add_usage(self, usage, actions, groups, prefix=None):
        shown = []
        for action in actions:
            if getattr(action, "required_after_aliases", False):
                action = copy.copy(action)
                action.required = True
            shown.append(action)
        super().add_usage(usage, shown, groups, prefix)


class CommandParser(argparse.ArgumentParser):
    """A command's parser: ``HelpFormatter`` help, and old flag spellings kept as hidden aliases for one release
    (argparse cannot hide one option string of an action, so an old spelling is a second, hidden action)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_old_spelling(self, action, *flags):
        """Parse ``flags`` (or, with none, a positional argument) as ``action``, without listing them in --help.

        A required ``action`` stays required (in the usage and after parsing) but is met by either spelling.
        """
        if action.required:
            action.required = False
            action.required_after_aliases = True
        if flags:
            return self.add_argument(*flags, dest=action.dest, nargs=action.nargs, type=action.type,
                                     choices=action.choices, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return self.add_argument(OLD_POSITIONAL + action.dest, nargs="?", type=action.type, default=None,
                                 help=argparse.SUPPRESS)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            old = vars(namespace).pop(OLD_POSITIONAL + action.dest, None)
            if old is not None:
                if getattr(namespace, action.dest, None) is not None:
                    self.error(f"{'/'.join(action.option_strings)} is given twice: as the option and as the "
                               f"positional argument (its old spelling); give only {action.option_strings[-1]}")
                setattr(namespace, action.dest, old)
        missing = ["/".join(action.option_strings) for action in self._actions
                   if getattr(action, "required_after_aliases", False)
                   and getattr(namespace, action.dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return namespace, extras


class SubCommands(argparse._SubParsersAction):
    """The subcommands: a command's --help starts with its line of the top-level list (unless it has its own
    description)."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        return super().add_parser(name, **kwargs)


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def float_list(text):
    return [float(v) for v in text.split(",") if v.strip()]


def auto_or_float(text):
    return text if text == "auto" else float(text)


def loss_name(text, aliases):
    """A ``--loss`` value in the loss registry's spelling: a short name of ``aliases`` (``arcface``) or any stage
    loss name, in any case (``ArcFaceLoss``, ``cosfaceloss``); an unknown name gets the closest known ones."""
    from keras_insightface.losses.registry import stage_loss_names

    known = {name.lower(): name for name in [*aliases, *stage_loss_names()]}
    name = known.get(text.lower())
    if name is None:
        close = difflib.get_close_matches(text.lower(), list(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(known[key]) for key in close)}?)" if close else ""
        raise argparse.ArgumentTypeError(f"unknown loss {text!r}{hint}; known: {', '.join(known.values())}")
    return aliases.get(name, name)


def add_embedding_args(parser):
    """Options of the commands that run a model over a dataset (distill-data, drop-topk)."""
    parser.add_argument("-b", "--batch-size", type=int, default=256, metavar="N", help="images per batch")
    parser.add_argument("--num-workers", type=int, default=None, metavar="N",
                        help="decode threads (default: cores - 1)")
    for which in ("mean", "std"):
        parser.add_argument(f"--input-{which}", type=auto_or_float, default="auto",
                            help=f".onnx/.pt models: the {which} of their (x - mean) / std input; auto: the format's "
                                 "convention (127.5, or 0 / 1 for a graph that normalises itself)")
    add_outside_arg(parser)


def add_outside_arg(parser):
    """``--allow-outside-paths``: list/npz entries may name images outside the list's folder."""
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="let a list file or npz list name images outside its folder (e.g. absolute paths)")


def dataset(args, name="data"):
    """The dataset named by ``args.<name>``, opened with ``--allow-outside-paths``."""
    from keras_insightface.data.sources import open_source

    return open_source(getattr(args, name), allow_outside=args.allow_outside_paths)


def detector(args):
    """The ``--detector`` model (``None`` without one), with ``--det-size`` and ``--det-threshold``."""
    if not args.detector:
        return None
    from keras_insightface.inference.detect import load_detector, parse_input_size

    return load_detector(args.detector, input_size=parse_input_size(args.det_size), score_threshold=args.det_threshold)


def add_detector_args(parser, detector_help, group=None):
    """``--detector`` (in ``group``, e.g. one exclusive with ``--landmarks``) and its options."""
    (group or parser).add_argument("--detector", help=f"SCRFD detector .onnx (e.g. det_10g.onnx): {detector_help}")
    parser.add_argument("--det-size", default="640", help="detector input SIDE or HEIGHTxWIDTH (dynamic-size models)")
    parser.add_argument("--det-threshold", type=float, default=0.5, help="detector score threshold")


def prepare(args, model):
    """The ``prepare`` hook of compare / search: align each image's main face when a detector is given."""
    found = detector(args)
    if found is None:
        return None
    from keras_insightface.inference.detect import face_aligner

    return face_aligner(found, model.size)
