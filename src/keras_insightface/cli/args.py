"""Argument helpers shared by the commands: list and number parsers, embedding and detector options."""

# what every -m / --model option opens (inference/embedders.py open_model)
MODEL_FILES = ".keras, seed .h5, .onnx (NCHW or NHWC), TorchScript .pt/.pth or an arcface_torch state dict .pth"


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def float_list(text):
    return [float(v) for v in text.split(",") if v.strip()]


def auto_or_float(text):
    return text if text == "auto" else float(text)


def add_embedding_args(parser):
    """Options of the commands that run a model over a dataset (distill-data, drop-topk)."""
    parser.add_argument("-b", "--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None, help="decode threads (default: cores - 1)")
    parser.add_argument("--input-mean", type=auto_or_float, default="auto", help=".onnx/.pt: (x - mean) / std")
    parser.add_argument("--input-std", type=auto_or_float, default="auto", help=".onnx/.pt: (x - mean) / std")
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
