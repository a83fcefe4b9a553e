"""The keras-insightface command: train face-recognition embedding models, then evaluate, compare, search, export
and convert them. keras-insightface COMMAND --help lists a command's options with their defaults.

Examples:
    keras-insightface demo
    keras-insightface train --data datasets/faces_emore --eval datasets/lfw.bin --model r50 \\
        --batch-size 512 --scales 16,32,64 --epochs 5,5,40 --mixed-precision mixed_bfloat16
    keras-insightface train r50.toml --batch-size 256 --set stage.2.epoch=20     # flags override the file
    keras-insightface train --resume checkpoints      # continue the run whose <name>_config.json is there
    keras-insightface train r50.toml --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on host 0
    keras-insightface eval -m checkpoints/r50_basic_lfw_epoch_40_0.998.keras --eval lfw.bin cfp_fp.bin
    keras-insightface convert folders2rec datasets/my_faces datasets/my_faces_rec
    keras-insightface convert make-bin datasets/held_out datasets/held_out.bin --pairs 3000
    keras-insightface convert seed-h5 old_seed_basic_model.h5 r100_basic.keras
    keras-insightface convert arcface-torch ms1mv3_arcface_r50_fp16/backbone.pth r50_ms1mv3.keras --model r50
    keras-insightface convert onnx buffalo_l/w600k_r50.onnx w600k_r50.keras    # the network read from the graph
    keras-insightface ijb -m r50_basic.keras -d datasets/ijb --subset IJBC --save-scores r50_ijbc.npz
    keras-insightface distill-data datasets/faces_emore emore_r100_teacher.npz -m r100_teacher.onnx --flip
    keras-insightface drop-topk datasets/faces_emore emore_clean.npz -m r50_basic.keras \\
        --kernel checkpoints/r50_subcenter_state --loss-top-k 3
    keras-insightface align raw_faces/ aligned_faces/ --landmarks landmarks.csv --size 112x112
    keras-insightface align raw_photos/ aligned_faces/ --detector det_10g.onnx --det-size 640
    keras-insightface compare a.jpg b.jpg -m r50_basic.keras --threshold checkpoints/r50_hist.json --eval-set lfw
    keras-insightface search query.jpg --gallery people/ -m r50_basic.keras -k 5 [--detector det_10g.onnx]
    keras-insightface summary -m r50
    keras-insightface export -m r50_basic.keras --format onnx      # also tflite (--fp16), savedmodel; verified
    keras-insightface plot checkpoints/r50_hist.json checkpoints/r100_hist.json --epochs 5,5,40 -o r50_r100.png --choose
    keras-insightface eval-folder -m r50_basic.keras datasets/my_faces --fprs 1e-4,1e-3,1e-2

Exit codes: 0 done; 2 bad input (the message names the file, record or option); train / demo: 3 stopped on a
NaN loss or a collapsed float16 loss scale, 4 stopped by SIGTERM / SIGINT after writing a checkpoint (resume it).
"""

import sys

import keras_insightface  # noqa: F401 - selects the JAX backend before Keras is imported
from keras_insightface.cli import evaluate, tools, train
from keras_insightface.cli.args import CommandParser, SubCommands
from keras_insightface.errors import DataError


def make_parser():
    """The whole command line: the module docstring's first paragraph above the commands, its examples below."""
    summary, _, rest = __doc__.partition("\n\n")
    parser = CommandParser(prog="keras-insightface", description=summary, epilog=rest)
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks for input errors")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND", action=SubCommands,
                                parser_class=CommandParser)
    for commands in (train, evaluate, tools):
        commands.add_commands(sub)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (DataError, ValueError) as error:
        if args.traceback:
            raise
        print(f"keras-insightface {args.command}: error: {error}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
