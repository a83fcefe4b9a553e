"""Model and data tools: models, convert, distill-data, drop-topk, align, compare, search, export, summary."""

import argparse
import glob
import os
from pathlib import Path

from keras_insightface.cli.args import (
    MODEL_FILES, add_detector_args, add_embedding_args, add_outside_arg, dataset, detector, prepare,
)
from keras_insightface.errors import DataError

INSIGHTFACE_KINDS = ("arcface-torch", "onnx")
INSIGHTFACE_ARCHS = ("r18", "r34", "r50", "r100", "r200", "mbf")  # insightface_import.ARCHS, without importing it


def cmd_models(args):
    from keras_insightface.backbones import list_backbones
    from keras_insightface.flops import gflops
    from keras_insightface.models import buildin_models

    names = args.names or list_backbones()
    print(f"| model | parameters (M) | GFLOPs at 112x112 | (GDC head, emb {args.emb_shape}) |\n|---|---|---|---|")
    for name in names:
        model = buildin_models(name, emb_shape=args.emb_shape, weights=None, preset="arcface_torch")
        print(f"| {name} | {model.count_params() / 1e6:.3f} | {gflops(model):.3f} | |")


def cmd_convert(args):
    from keras_insightface.data import convert
    from keras_insightface.data.outputs import refuse_existing

    if args.model is not None and args.kind not in INSIGHTFACE_KINDS:
        raise DataError(f"--model applies to {' and '.join(INSIGHTFACE_KINDS)} only, not to {args.kind}")
    packing = ("--image-size", args.image_size != "112x112"), ("--resize", args.resize), ("--skip-bad", args.skip_bad)
    misplaced = [flag for flag, given in packing if given]
    if misplaced and args.kind != "folders2rec":
        raise DataError(f"{', '.join(misplaced)} applies to folders2rec only, not to {args.kind}")
    if args.kind == "seed-h5":
        from keras_insightface.seed_h5 import convert_seed_h5

        refuse_existing(args.dst, args.overwrite)
        convert_seed_h5(args.src, args.dst)
        print(f">>>> seed-h5: {args.src} -> {args.dst}")
    elif args.kind in INSIGHTFACE_KINDS:
        from keras_insightface.inference.insightface_import import convert_insightface

        refuse_existing(args.dst, args.overwrite)
        model = convert_insightface(args.src, args.dst, args.kind, args.model)
        print(f">>>> {args.kind}: {args.src} -> {args.dst} ({model.name}, {model.output_shape[-1]}-d embedding, "
              "input RGB 0..255)")
    elif args.kind == "rec2folders":
        count = convert.rec_to_folders(args.src, args.dst, overwrite=args.overwrite)
        print(f">>>> rec2folders: {args.src} -> {args.dst} ({count} images; class folders named from the pack's "
              "classes.txt, by label number without one)")
    elif args.kind == "folders2rec":
        report = convert.folders_to_rec(
            args.src, args.dst, image_size=convert.parse_image_size(args.image_size), resize=args.resize,
            skip_bad=args.skip_bad, overwrite=args.overwrite, allow_outside=args.allow_outside_paths,
        )
        for line in report.skipped[: convert.SHOWN]:
            print(f"left out: {line}")
        names = "class names in classes.txt" if report.class_names else "no class names (not a class-folder source)"
        print(f">>>> folders2rec: {args.src} -> {args.dst} ({report.images} images of "
              f"{report.image_size[0]}x{report.image_size[1]}, {report.classes} classes, {len(report.resized)} "
              f"resized, {len(report.skipped)} left out; {names})")
    else:
        _, issame = convert.make_bin(args.src, args.dst, args.pairs, seed=args.seed, overwrite=args.overwrite,
                                     allow_outside=args.allow_outside_paths)
        print(f">>>> make-bin: {args.src} -> {args.dst} ({int(issame.sum())} genuine and {int((~issame).sum())} "
              "impostor pairs in 10 folds)")


def cmd_distill_data(args):
    from keras_insightface.inference.distill_data import distill_data
    from keras_insightface.inference.embedders import open_model

    teacher = open_model(args.model, args.input_mean, args.input_std)
    out = distill_data(dataset(args), teacher, args.out, args.batch_size, args.flip, args.num_workers)
    print(f">>>> distill-data: {args.data} embedded by {args.model} -> {out}")


def cmd_drop_topk(args):
    from keras_insightface.inference.embedders import open_model
    from keras_insightface.training.drop_topk import drop_topk_data

    model = open_model(args.model, args.input_mean, args.input_std)
    drop_topk_data(
        dataset(args), model, args.kernel, args.top_k, args.out, args.limit_deg, args.batch_size, args.num_workers
    )


def cmd_align(args):
    from keras_insightface.inference.align import parse_size
    from keras_insightface.inference.align_folder import align_folder

    report = align_folder(args.src, args.dst, args.landmarks, parse_size(args.size), detector=detector(args))
    print(f">>>> align: {report['aligned']} faces from {args.src} -> {args.dst} ({args.size})")
    for key, what in (("without_landmarks", "images without landmarks"), ("missing_images", "landmarks without image"),
                      ("no_face", "images without a detected face")):
        if report.get(key):
            print(f"{len(report[key])} {what}: {', '.join(report[key][:5])}{' ...' if len(report[key]) > 5 else ''}")


def cmd_compare(args):
    from keras_insightface.evaluation.compare import compare
    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model)
    result = compare(model, args.image_a, args.image_b, args.threshold, prepare(args, model), args.eval_set)
    print(f"similarity  {result['similarity']:.4f}  (cosine of flip-summed embeddings, -1..1)")
    if result["threshold"] is None:
        print("same person: no threshold given (--threshold NUMBER, a .bin pack or a training history .json)")
        return
    verdict, relation = ("SAME person", ">") if result["same"] else ("DIFFERENT people", "<=")
    print(f"threshold   {result['threshold']:.4f}  ({result['threshold_source']})")
    print(f"{verdict}: {result['similarity']:.4f} {relation} {result['threshold']:.4f}")


def cmd_search(args):
    from keras_insightface.evaluation.gallery import Gallery
    from keras_insightface.inference.embedders import open_model
    from keras_insightface.inference.fingerprint import file_fingerprint, model_fingerprint

    model = open_model(args.model)
    model_id = model_fingerprint(args.model)
    if args.detector:  # crops from another detector are other embeddings: another cache
        model_id += f"|detector:{file_fingerprint(args.detector)}"
    gallery = Gallery(model, args.gallery, cache_path=args.cache, model_id=model_id, prepare=prepare(args, model))
    print(
        f">>>> gallery {args.gallery}: {len(gallery.identities)} identities, {len(gallery)} images"
        f" ({gallery.embedded} embedded now, {gallery.reused} from the cache {gallery.cache_path},"
        f" {gallery.dropped} removed)"
    )
    print("| rank | identity | score (best image) | center score | best image |\n|---|---|---|---|---|")
    for rank, match in enumerate(gallery.search(args.image, top_k=args.top_k), 1):
        image = os.path.relpath(match.image, args.gallery)
        print(f"| {rank} | {match.identity} | {match.score:.4f} | {match.center_score:.4f} | {image} |")


def cmd_export(args):
    """Export a basic model and print the verification against the Keras model."""
    import numpy as np

    from keras_insightface.data.decode import decode_image
    from keras_insightface.inference.images import IMAGE_SUFFIXES
    from keras_insightface.export import ExportError, MissingExtraError, export_model

    suffix = {"onnx": ".onnx", "tflite": ".tflite", "savedmodel": "_savedmodel"}[args.format]
    out = args.out or os.path.splitext(args.model)[0] + ("_fp16" if args.fp16 else "") + suffix
    images = None
    if args.images:
        paths = sorted(glob.glob(os.path.join(glob.escape(args.images), "*")))
        paths = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)][:8]
        if not paths:
            raise DataError(f"{args.images}: no {'/'.join(IMAGE_SUFFIXES)} images to verify on")
        images = np.stack([decode_image(Path(path).read_bytes(), where=path) for path in paths])
    try:
        result = export_model(args.model, out, format=args.format, fp16=args.fp16, fold_bn=args.fold_bn,
                              verify=args.verify, images=images, route=args.route, opset=args.opset)
    except (ExportError, MissingExtraError) as error:
        raise DataError(str(error)) from None
    print(f">>>> export: {args.model} -> {result.path} ({result.format}{', fp16' if result.fp16 else ''}, "
          f"{result.route} route, {len(result.folded_batch_norms)} BatchNormalization folded, {result.seconds:.1f} s)")
    print(">>>> " + (result.verification.summary() if result.verification else "verification skipped (--no-verify)"))


def cmd_summary(args):
    from keras_insightface.summary import format_summary, model_summary

    info = model_summary(args.model, batch_size=args.batch_size, runs=args.runs)
    print(format_summary(info))
    if info["latency_batch_size"] != args.batch_size:
        print(f"note: the graph's batch is fixed at {info['latency_batch_size']}, so it was timed at that batch, "
              f"not at --batch-size {args.batch_size}")


def add_commands(sub):
    """Register this module's subcommands on ``sub`` (the parser's subparsers)."""
    models = sub.add_parser("models", help="list backbones with parameters and GFLOPs (multiply-accumulates, one"
                                           " 112x112 forward, as insightface's tables)")
    models.add_argument("names", nargs="*", help="backbone names (default: all)")
    models.add_argument("--emb-shape", type=int, default=512, help="embedding size of the GDC head")
    models.set_defaults(func=cmd_models)

    convert = sub.add_parser(
        "convert", help="convert datasets (rec2folders, folders2rec, make-bin), seed .h5 models (seed-h5) or "
                        "insightface weights (arcface-torch .pth state dicts, model-zoo onnx files)",
        description="folders2rec packs class folders (or any dataset) into train.rec/train.idx/property and "
                    "classes.txt (the class folder names); rec2folders unpacks one, its folders named from "
                    "classes.txt; make-bin draws a verification pack of genuine and impostor pairs.",
    )
    convert.add_argument("kind", choices=["rec2folders", "folders2rec", "make-bin", "seed-h5", *INSIGHTFACE_KINDS],
                         help="what to convert: rec2folders, folders2rec, make-bin (datasets); seed-h5, "
                              "arcface-torch, onnx (models)")
    convert.add_argument(
        "src", help="a train.rec folder (rec2folders), any dataset (folders, list file, npz), a seed .h5 (seed-h5), "
                    "an arcface_torch backbone .pth (arcface-torch) or an insightface recognition .onnx (onnx)"
    )
    convert.add_argument(
        "dst", help="output folder (rec2folders, folders2rec), .bin path (make-bin) or .keras path (seed-h5, "
                    "arcface-torch, onnx)"
    )
    convert.add_argument("-m", "--model", choices=INSIGHTFACE_ARCHS, type=str.lower,
                         help="arcface-torch, onnx: the source network (default: read from the file)")
    convert.add_argument(
        "--pairs", type=int, default=3000,
        help="make-bin: genuine pairs, and as many impostor ones; any number from 10, so that each of the 10 folds "
             "(sklearn KFold(n_splits=10) of all pairs, as insightface's verification) holds both kinds",
    )
    convert.add_argument("--seed", type=int, default=0, help="make-bin: seed of the random pairs")
    convert.add_argument(
        "--image-size", default="112x112",
        help="folders2rec: HEIGHTxWIDTH of the pack (its property file); every image must have it (training "
             "decodes at that size), else the packing stops listing them: see --resize and --skip-bad",
    )
    convert.add_argument("--resize", action="store_true",
                         help="folders2rec: resize images of another size to --image-size (decoded, resized, "
                              "re-encoded as JPEG quality 95) and count them in the final line")
    convert.add_argument("--skip-bad", action="store_true",
                         help="folders2rec: leave out images of another size (without --resize) and unreadable "
                              "ones, listed")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace an existing output: train.rec (folders2rec), a .bin (make-bin), a .keras "
                              "(seed-h5, arcface-torch, onnx), a folder of class folders (rec2folders)")
    add_outside_arg(convert)
    convert.set_defaults(func=cmd_convert)

    distill = sub.add_parser(
        "distill-data", help="store a teacher's embeddings of every image of a dataset (an npz for distillation)"
    )
    distill.add_argument("data", help="train.rec folder, class-folder root, list file or npz list")
    distill.add_argument("out", help="output .npz (embeddings, image_classes, image_names or rec_path)")
    distill.add_argument("-m", "--model", required=True, help=f"teacher: {MODEL_FILES}")
    distill.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                         help="add the horizontally flipped image's embedding to each image's")
    add_embedding_args(distill)
    distill.set_defaults(func=cmd_distill_data)

    drop = sub.add_parser(
        "drop-topk", help="sub-center cleaning: keep images near their class's dominant sub-center (an npz list)"
    )
    drop.add_argument("data", help="the dataset the sub-center head was trained on")
    drop.add_argument("out", help="output .npz list of the kept images")
    drop.add_argument("-m", "--model", required=True, help=f"the run's basic model: {MODEL_FILES}")
    drop.add_argument("--kernel", required=True, help="NormDense kernel: .npy file or <name>_state folder")
    top_k = drop.add_argument("--loss-top-k", dest="top_k", type=int, required=True, metavar="K",
                              help="sub-centers per class: the loss_top_k of the run's NormDense head")
    drop.add_old_spelling(top_k, "--top-k")
    drop.add_argument("--limit-deg", type=float, default=75, help="keep images at most this angle from the dominant")
    add_embedding_args(drop)
    drop.set_defaults(func=cmd_drop_topk)

    align = sub.add_parser("align", help="5-point alignment of raw face images into ArcFace crops (JPEG)")
    align.add_argument("src", help="folder of raw .jpg/.png images")
    align.add_argument("dst", help="output folder: the crops under the same relative paths")
    source = align.add_mutually_exclusive_group(required=True)
    source.add_argument("--landmarks", help="CSV (path,x1,y1,...,x5,y5) or JSON {path: [[x, y] x 5]}")
    add_detector_args(align, "align each image's main face", group=source)
    align.add_argument("--size", default="112x112", help="crop HEIGHTxWIDTH: 112x112 or 112x96 (or 128x128, 224x224)")
    align.set_defaults(func=cmd_align)

    model_help = f"basic model: {MODEL_FILES}"

    compare = sub.add_parser("compare", help="cosine similarity of two faces, and same/different at a threshold")
    compare.add_argument("image_a", help="first face: an aligned crop of the model's input size (or any photo with "
                                         "--detector)")
    compare.add_argument("image_b", help="second face")
    compare.add_argument("-m", "--model", required=True, help=model_help)
    compare.add_argument("--threshold", help="cosine threshold: a number, a .bin pack (the model's best threshold on "
                                             "it) or a <name>_hist.json")
    eval_set = compare.add_argument("--eval-set", metavar="NAME", help="with a history .json: its verification "
                                    "set, e.g. lfw (default: the first in the file)")
    compare.add_old_spelling(eval_set, "--set")
    add_detector_args(compare, "align each photo's main face first")
    compare.set_defaults(func=cmd_compare)

    search = sub.add_parser("search", help="rank the identities of a gallery folder (one sub-folder each) by a face")
    search.add_argument("image", help="query face: an aligned crop of the model's input size (or a photo with --detector)")
    search.add_argument("--gallery", required=True, help="folder of identities: <name>/*.jpg (or <name>.jpg)")
    search.add_argument("-m", "--model", required=True, help=model_help)
    search.add_argument("-k", "--top-k", type=int, default=5, help="identities to list")
    search.add_argument("--cache", help="embedding cache .npz (default: a hidden file in the gallery, per model)")
    add_detector_args(search, "align the main face of the query and of every gallery photo")
    search.set_defaults(func=cmd_search)

    export = sub.add_parser("export", help="export a basic model to ONNX, TFLite or a SavedModel, verified against Keras")
    model = export.add_argument("-m", "--model", required=True, help="basic model: .keras or seed .h5")
    export.add_old_spelling(model)
    export.add_argument("--format", default="onnx", choices=["onnx", "tflite", "savedmodel"], help="output format")
    export.add_argument("-o", "--out", help="output .onnx/.tflite file or SavedModel folder (default: beside MODEL)")
    export.add_argument("--fp16", action="store_true", help="float16 weights (tflite) / weights and arithmetic (onnx)")
    export.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="fold BatchNormalization layers into the convolution or dense before them")
    export.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the exported model's embeddings with the Keras model's")
    export.add_argument("--images", help="folder of aligned face crops (.jpg/.png) to verify on (the first 8)")
    export.add_argument("--route", default="auto", choices=["auto", "jax", "tensorflow"],
                        help="graph source for the converters (auto: JAX, then the TensorFlow backend)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset")
    export.set_defaults(func=cmd_export)

    summary = sub.add_parser("summary", help="parameters, GFLOPs (multiply-accumulates; XLA's FLOPs beside), CPU"
                                             " latency, embedding size and input of a model")
    model = summary.add_argument("-m", "--model", required=True, help="a .keras / seed .h5 basic model, an .onnx or "
                                                                      ".tflite file, or a backbone name "
                                                                      "(keras-insightface models lists them)")
    summary.add_old_spelling(model)
    summary.add_argument("--runs", type=int, default=20, help="timed calls for the median latency")
    summary.add_argument("-b", "--batch-size", type=int, default=1, metavar="N",
                         help="batch of the latency measurement")
    summary.set_defaults(func=cmd_summary)
