"""The ``keras-insightface`` command: ``demo``, ``train``, ``eval``, ``ijb``, ``align``, ``compare``, ``search``,
``summary``, ``export``, ``convert``, ``models``, ``distill-data``, ``drop-topk``, ``plot`` and ``eval-folder``.

Examples:
    keras-insightface demo
    keras-insightface train --data datasets/faces_emore --eval datasets/lfw.bin --model r50 \\
        --batch-size 512 --scales 16,32,64 --epochs 5,5,40 --mixed-precision mixed_bfloat16
    keras-insightface train r50.toml --set train.batch_size=256
    keras-insightface train --resume checkpoints      # continue the run whose <name>_config.json is there
    keras-insightface train r50.toml --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on host 0
    keras-insightface eval -m checkpoints/r50_basic_lfw_epoch_40_0.998.keras -t lfw.bin cfp_fp.bin
    keras-insightface convert folders2rec datasets/my_faces datasets/my_faces_rec
    keras-insightface convert make-bin datasets/held_out datasets/held_out.bin --pairs 3000
    keras-insightface convert seed-h5 old_seed_basic_model.h5 r100_basic.keras
    keras-insightface ijb -m r50_basic.keras -d datasets/ijb --subset IJBC --save-scores r50_ijbc.npz
    keras-insightface distill-data datasets/faces_emore emore_r100_teacher.npz -m r100_teacher.onnx --flip
    keras-insightface drop-topk datasets/faces_emore emore_clean.npz -m r50_basic.keras \\
        --kernel checkpoints/r50_subcenter_state --top-k 3
    keras-insightface align raw_faces/ aligned_faces/ --landmarks landmarks.csv --size 112x112
    keras-insightface align raw_photos/ aligned_faces/ --detector det_10g.onnx --det-size 640
    keras-insightface compare a.jpg b.jpg -m r50_basic.keras --threshold checkpoints/r50_hist.json --set lfw
    keras-insightface search query.jpg --gallery people/ -m r50_basic.keras -k 5 [--detector det_10g.onnx]
    keras-insightface summary r50
    keras-insightface export r50_basic.keras --format onnx      # also tflite (--fp16), savedmodel; verified
    keras-insightface plot checkpoints/r50_hist.json checkpoints/r100_hist.json --epochs 5,5,40 -o r50_r100.png --choose
    keras-insightface eval-folder -m r50_basic.keras datasets/my_faces --fprs 1e-4,1e-3,1e-2
"""

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import keras_insightface  # noqa: F401 - selects the JAX backend before Keras is imported
from keras_insightface.errors import DataError

LOSSES = {"arcface": "ArcfaceLoss", "arcface_simple": "ArcfaceLossSimple", "cosface": "CosFaceLoss"}


def _int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _float_list(text):
    return [float(v) for v in text.split(",") if v.strip()]


def build_schedule(loss, scales, epochs):
    """Config ``[[stage]]`` tables from ``--loss``, ``--scales`` and ``--epochs`` (one stage per scale)."""
    if len(scales) != len(epochs):
        raise ValueError(f"--scales and --epochs need the same length, received {scales} and {epochs}")
    return [{"loss": LOSSES[loss], "loss_config": {"scale": scale}, "epoch": epoch} for scale, epoch in zip(scales, epochs)]


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
        row += [f"{history['lr'][epoch]:.5f}", f"{history['loss'][epoch]:.4f}", f"{history['accuracy'][epoch]:.4f}"]
        for name in eval_names:
            values = [history.get(key, []) for key in (name, name + "_thresh", name + "_kfold")]
            std = history.get(name + "_kfold_std", [])
            if epoch < len(values[0]):
                row += [f"{values[0][epoch]:.4f}", f"{values[1][epoch]:.4f}", f"{values[2][epoch]:.4f} ± {std[epoch]:.4f}"]
            else:
                row += ["-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _add_train_args(parser, defaults):
    parser.add_argument("--model", default=defaults["model"], help="backbone name for buildin_models")
    parser.add_argument("--emb-shape", type=int, default=defaults["emb_shape"])
    parser.add_argument("--output-layer", default="GDC", choices=["GDC", "E", "GAP", "F"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument("--lr-base", type=float, default=defaults["lr_base"])
    parser.add_argument("--lr-min", type=float, default=1e-5)
    parser.add_argument("--warmup", type=int, default=defaults["warmup"], help="warmup epochs")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--loss", default="arcface", choices=sorted(LOSSES))
    parser.add_argument("--scales", type=_float_list, default=defaults["scales"], help="scale per stage, e.g. 16,32,64")
    parser.add_argument("--epochs", type=_int_list, default=defaults["epochs"], help="epochs per stage, e.g. 5,5,40")
    parser.add_argument("--mixed-precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--save-path", default=defaults["save_path"], help="run name, e.g. r50_arcface.keras")
    parser.add_argument("--checkpoint-dir", default=defaults["checkpoint_dir"])
    parser.add_argument("--num-workers", type=int, default=None, help="decode processes (default: cores - 1)")
    parser.add_argument("--seed", type=int, default=0)


def run_training(args, data_path, eval_paths, baseline=False):
    """Train per ``args``; write history JSON, best basic model and a PNG plot; print the results table."""
    import matplotlib

    matplotlib.use("Agg")
    from keras_insightface.evaluation.verification import evaluate_bin
    from keras_insightface.plot import hist_plot_split
    from keras_insightface.training import config as run_config
    from keras_insightface.training.distribute import is_primary
    from keras_insightface.training.train import Train

    config = {
        "train": dict(
            data_path=str(data_path), save_path=args.save_path, eval_paths=[str(p) for p in eval_paths],
            basic_model=args.model, batch_size=args.batch_size, lr_base=args.lr_base, lr_min=args.lr_min,
            lr_warmup_steps=args.warmup, weight_decay=args.weight_decay, mixed_precision=args.mixed_precision,
            emb_shape=args.emb_shape, output_layer=args.output_layer, checkpoint_dir=args.checkpoint_dir,
            num_workers=args.num_workers, checkpoint_every_steps=getattr(args, "checkpoint_every", 0), seed=args.seed,
        ),
        "stage": build_schedule(args.loss, args.scales, args.epochs),
    }
    schedule = run_config.schedule(config)
    start = time.time()
    trainer = Train(**config["train"])
    if is_primary():
        run_config.save_resolved(config, trainer.prefix + "_config.json")  # what `train --resume DIR` reruns
    print(
        f">>>> {trainer.source.name}: {len(trainer.source)} images, {trainer.num_classes} identities,"
        f" {trainer.loader.steps_per_epoch} steps per epoch of {args.batch_size}"
    )
    untrained = {}
    if baseline:
        for path in eval_paths:
            untrained[path] = evaluate_bin(trainer.basic_model, path, args.batch_size)
    try:
        history = trainer.train(schedule, resume=getattr(args, "resume", False))
    finally:
        trainer.close()
    names = [cb.name for cb in trainer.eval_callbacks]
    plot_path = trainer.prefix + ".png"
    if history and is_primary():
        hist_plot_split(trainer.history_path, epochs=args.epochs, names=[f"scale {s:g}" for s in args.scales]).savefig(
            plot_path
        )
    print("\n" + results_table(history, names, args.epochs) + "\n")
    for path, result in untrained.items():
        name = os.path.splitext(os.path.basename(path))[0]
        best = max(history.get(name, [float("nan")]))
        print(
            f"{name}: untrained model {result['accuracy']:.4f} (10-fold {result['kfold_mean']:.4f}),"
            f" best after training {best:.4f}"
        )
    print(f"history: {trainer.history_path}\nbest basic model: {trainer.best_model_path}\nplot: {plot_path}")
    print(f"total time {time.time() - start:.0f} s")
    return history


def cmd_demo(args):
    from keras_insightface.demo.synthetic import generate_dataset

    cache = args.cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "keras_insightface", "synthetic"
    )
    start = time.time()
    paths = generate_dataset(cache, seed=args.data_seed)
    print(f">>>> Generated dataset ready in {cache} ({time.time() - start:.0f} s)")
    return run_training(args, paths["train"], [paths["val"]], baseline=True)


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
    if isinstance(args.resume, str):  # --resume DIR: the run saved there, as it was started
        return run_config_training(resume_config(args.resume), args.set or [], resume=True)
    if args.config:
        return run_config_training(args.config, args.set or [], args.resume)
    if not args.data:
        raise DataError("train needs --data (or a config file: keras-insightface train run.toml)")
    return run_training(args, args.data, args.eval)


def run_config_training(path, overrides, resume=False):
    """Train from a config file (``training/config.py``); the resolved config is saved next to the history."""
    from keras_insightface.training import config as run_config
    from keras_insightface.training.distribute import is_primary
    from keras_insightface.training.train import Train

    config = run_config.apply_overrides(run_config.load_config(path), overrides)
    stages = run_config.schedule(config)
    trainer = Train(**run_config.train_kwargs(config, Train))
    if is_primary():
        run_config.save_resolved(config, trainer.prefix + "_config.json")
        print(f">>>> config: {trainer.prefix}_config.json")
    try:
        history = trainer.train(stages, resume=resume)
    finally:
        trainer.close()
    names = [cb.name for cb in trainer.eval_callbacks]
    print("\n" + results_table(history, names, [int(stage["epoch"]) for stage in stages]) + "\n")
    print(f"history: {trainer.history_path}\nbest basic model: {trainer.best_model_path}")
    return history


def cmd_eval(args):
    from keras_insightface.evaluation.verification import evaluate_bin

    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model)
    print("| set | accuracy | threshold | 10-fold | VAL@FAR=1e-3 | FAR | XNorm |\n|---|---|---|---|---|---|---|")
    for path in args.test_bin:
        result = evaluate_bin(model, path, args.batch_size, flip=not args.no_flip)
        name = os.path.splitext(os.path.basename(path))[0]
        print(
            f"| {name} | {result['accuracy']:.4f} | {result['threshold']:.4f} |"
            f" {result['kfold_mean']:.4f} ± {result['kfold_std']:.4f} |"
            f" {result['val']:.4f} ± {result['val_std']:.4f} | {result['far']:.5f} | {result['xnorm']:.4f} |"
        )


def cmd_models(args):
    from keras_insightface.backbones import list_backbones
    from keras_insightface.flops import gflops
    from keras_insightface.models import buildin_models

    names = args.names or list_backbones()
    print(f"| model | parameters (M) | GFLOPs at 112x112 | (GDC head, emb {args.emb_shape}) |\n|---|---|---|---|")
    for name in names:
        model = buildin_models(name, emb_shape=args.emb_shape)
        print(f"| {name} | {model.count_params() / 1e6:.3f} | {gflops(model):.3f} | |")


def cmd_convert(args):
    from keras_insightface.data import convert

    if args.kind == "seed-h5":
        from keras_insightface.seed_h5 import convert_seed_h5

        convert_seed_h5(args.src, args.dst)
    elif args.kind == "rec2folders":
        convert.rec_to_folders(args.src, args.dst)
    elif args.kind == "folders2rec":
        convert.folders_to_rec(args.src, args.dst)
    else:
        convert.make_bin(args.src, args.dst, args.pairs, seed=args.seed)
    print(f">>>> {args.kind}: {args.src} -> {args.dst}")


def _auto_or_float(text):
    return text if text == "auto" else float(text)


def _add_embedding_args(parser):
    """Options of the commands that run a model over a dataset (distill-data, drop-topk)."""
    parser.add_argument("-b", "--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None, help="decode threads (default: cores - 1)")
    parser.add_argument("--input-mean", type=_auto_or_float, default="auto", help=".onnx/.pt: (x - mean) / std")
    parser.add_argument("--input-std", type=_auto_or_float, default="auto", help=".onnx/.pt: (x - mean) / std")


def cmd_distill_data(args):
    from keras_insightface.inference.distill_data import distill_data
    from keras_insightface.inference.embedders import open_model

    teacher = open_model(args.model, args.input_mean, args.input_std)
    out = distill_data(args.data, teacher, args.out, args.batch_size, args.flip, args.num_workers)
    print(f">>>> distill-data: {args.data} embedded by {args.model} -> {out}")


def cmd_drop_topk(args):
    from keras_insightface.inference.embedders import open_model
    from keras_insightface.training.drop_topk import drop_topk_data

    model = open_model(args.model, args.input_mean, args.input_std)
    drop_topk_data(
        args.data, model, args.kernel, args.top_k, args.out, args.limit_deg, args.batch_size, args.num_workers
    )


def _detector(args):
    """The ``--detector`` model (``None`` without one), with ``--det-size`` and ``--det-threshold``."""
    if not args.detector:
        return None
    from keras_insightface.inference.detect import load_detector, parse_input_size

    return load_detector(args.detector, input_size=parse_input_size(args.det_size), score_threshold=args.det_threshold)


def _add_detector_args(parser, detector_help, group=None):
    """``--detector`` (in ``group``, e.g. one exclusive with ``--landmarks``) and its options."""
    (group or parser).add_argument("--detector", help=f"SCRFD detector .onnx (e.g. det_10g.onnx): {detector_help}")
    parser.add_argument("--det-size", default="640", help="detector input SIDE or HEIGHTxWIDTH (dynamic-size models)")
    parser.add_argument("--det-threshold", type=float, default=0.5, help="detector score threshold")


def _prepare(args, model):
    """The ``prepare`` hook of compare / search: align each image's main face when a detector is given."""
    detector = _detector(args)
    if detector is None:
        return None
    from keras_insightface.inference.detect import face_aligner

    return face_aligner(detector, model.size)


def cmd_align(args):
    from keras_insightface.inference.align import parse_size
    from keras_insightface.inference.align_folder import align_folder

    report = align_folder(args.src, args.dst, args.landmarks, parse_size(args.size), detector=_detector(args))
    print(f">>>> align: {report['aligned']} faces from {args.src} -> {args.dst} ({args.size})")
    for key, what in (("without_landmarks", "images without landmarks"), ("missing_images", "landmarks without image"),
                      ("no_face", "images without a detected face")):
        if report.get(key):
            print(f"{len(report[key])} {what}: {', '.join(report[key][:5])}{' ...' if len(report[key]) > 5 else ''}")


def cmd_compare(args):
    from keras_insightface.evaluation.compare import compare
    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model)
    result = compare(model, args.image_a, args.image_b, args.threshold, _prepare(args, model), args.set)
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
    gallery = Gallery(model, args.gallery, cache_path=args.cache, model_id=model_id, prepare=_prepare(args, model))
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
        result = export_model(args.model, out, format=args.format, fp16=args.fp16, fold_bn=not args.no_fold_bn,
                              verify=not args.no_verify, images=images, route=args.route, opset=args.opset)
    except (ExportError, MissingExtraError) as error:
        raise DataError(str(error)) from None
    print(f">>>> export: {args.model} -> {result.path} ({result.format}{', fp16' if result.fp16 else ''}, "
          f"{result.route} route, {len(result.folded_batch_norms)} BatchNormalization folded, {result.seconds:.1f} s)")
    print(">>>> " + (result.verification.summary() if result.verification else "verification skipped (--no-verify)"))


def cmd_summary(args):
    from keras_insightface.summary import format_summary, model_summary

    print(format_summary(model_summary(args.model, batch_size=args.batch_size, runs=args.runs)))


def cmd_ijb(args):
    """IJB-B/C 1:1 verification (TAR at FAR table, ROC plot) and optionally 1:N identification, or plot-only."""
    from keras_insightface.evaluation import ijb

    if args.plot_only:
        rocs, curves = ijb.load_scores(args.plot_only)
        stem = Path(args.plot_only[0]).with_suffix("")
        if rocs:
            print(ijb.markdown_table(rocs))
            print(f">>>> ijb: ROC plot -> {ijb.plot_roc(rocs, args.plot or f'{stem}_roc.png')}")
        if curves:
            print(ijb.identification_table(curves))
            print(f">>>> ijb: identification plot -> {ijb.plot_cmc(curves, args.plot_cmc or f'{stem}_cmc.png')}")
        return
    cached = args.embeddings and os.path.isfile(args.embeddings)
    if not args.data_dir or not (args.model or cached):
        raise DataError("give -d DATA_DIR and -m MODEL (or --embeddings with a saved file), or --plot-only SCORES.npz")
    modes = ijb.ALL_MODES if args.modes.strip().lower() == "all" else [m.strip().upper() for m in args.modes.split(",")]
    for mode in modes:
        ijb.parse_mode(mode)
    meta = ijb.read_meta(args.data_dir, args.subset)
    galleries = ijb.read_identification_meta(args.data_dir, args.subset) if args.identification else None
    if cached:
        embeddings, flips = ijb.load_embeddings(args.embeddings, meta.names)
    else:
        from keras_insightface.inference.embed import embed_files

        embeddings, flips = embed_files(args.model, meta.image_paths(), meta.landmarks, args.batch_size,
                                        desc="ijb embeddings")
        if args.embeddings:
            ijb.save_embeddings(args.embeddings, embeddings, flips, meta.names)
    name = args.name or Path(args.model or args.embeddings).stem
    scores = {f"{name}_{mode}": s for mode, s in ijb.verification_scores(meta, embeddings, flips, modes).items()}
    rocs = {key: ijb.Roc(value, meta.labels) for key, value in scores.items()}
    print(ijb.markdown_table(rocs))
    if args.plot:
        print(f">>>> ijb: ROC plot -> {ijb.plot_roc(rocs, args.plot, title=f'ROC on {meta.subset}')}")
    results = None
    if galleries is not None:
        results = ijb.identification_run(meta, galleries, embeddings, flips, modes[0])
        print(ijb.identification_table(results))
        if args.plot_cmc:
            print(f">>>> ijb: identification plot -> {ijb.plot_cmc(results, args.plot_cmc, title=meta.subset)}")
    if args.save_scores:
        ijb.save_scores(args.save_scores, scores, meta.labels, results)
        print(f">>>> ijb: scores -> {args.save_scores}")


def cmd_plot(args):
    from keras_insightface.plot import choose_accuracy, hist_plot_split

    fig = hist_plot_split(
        args.histories, epochs=args.epochs, names=args.names, customs=args.customs, skip_epochs=args.skip_epochs
    )
    fig.savefig(args.out)
    print(f">>>> plot: {len(args.histories)} run(s) -> {args.out}")
    if args.choose:
        choose_accuracy(args.histories, key_pick=args.key_pick)


def cmd_eval_folder(args):
    from keras_insightface.evaluation.folder import eval_folder, results_table
    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model, args.input_mean, args.input_std)
    result = eval_folder(args.data, model, args.batch_size, args.flip, args.num_workers, args.fprs)
    print(f">>>> eval-folder: {result['images']} images, {result['classes']} classes, {result['trials']} top-1 trials")
    print(results_table(result, os.path.splitext(os.path.basename(args.model))[0]))


def make_parser():
    parser = argparse.ArgumentParser(prog="keras-insightface", description=__doc__.split("\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks for input errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate the synthetic face dataset, train a small model, evaluate")
    _add_train_args(
        demo,
        dict(model="r18_tiny", emb_shape=128, batch_size=64, lr_base=0.1, warmup=1, scales=[16, 32, 64],
             epochs=[2, 2, 2], save_path="demo_r18_tiny.keras", checkpoint_dir=os.path.join("runs", "demo")),
    )
    demo.add_argument("--cache-dir", default=None, help="where the generated dataset is kept")
    demo.add_argument("--data-seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train on a .rec folder, class folders or a list file, or from a config file")
    train.add_argument("config", nargs="?", help="a .toml/.json run config ([train] + [[stage]]); other flags ignored")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train.batch_size=256")
    train.add_argument("--data", help="train.rec folder, class-folder root or list file")
    train.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                       help="continue from the run's latest full-state checkpoint (<checkpoint_dir>/<name>_state); "
                            "with DIR, the run whose <name>_config.json is there, with no other flags needed")
    train.add_argument("--checkpoint-every", type=int, default=0, help="full-state checkpoint every N batches")
    train.add_argument("--eval", nargs="*", default=[], help=".bin verification packs")
    hosts = train.add_argument_group("several hosts", "run the same command on every host")
    hosts.add_argument("--coordinator", help="HOST:PORT of process 0 (or KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    hosts.add_argument("--num-processes", type=int, help="hosts in the run (or KERAS_DISTRIBUTION_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int,
                       help="this host's index, 0 = coordinator (or KERAS_DISTRIBUTION_PROCESS_ID)")
    _add_train_args(
        train,
        dict(model="r50", emb_shape=512, batch_size=128, lr_base=0.1, warmup=0, scales=[16, 32, 64],
             epochs=[5, 5, 40], save_path="keras_insightface.keras", checkpoint_dir="checkpoints"),
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="verification accuracy, VAL@FAR=1e-3 and XNorm of a model on .bin packs")
    evaluate.add_argument(
        "-m", "--model", required=True, help="a .keras basic model, seed .h5, .onnx (NCHW or NHWC) or TorchScript .pt"
    )
    evaluate.add_argument("-t", "--test-bin", nargs="+", required=True, help=".bin packs")
    evaluate.add_argument("-b", "--batch-size", type=int, default=64)
    evaluate.add_argument("--no-flip", action="store_true", help="do not add the flipped image's embedding")
    evaluate.set_defaults(func=cmd_eval)

    models = sub.add_parser("models", help="list backbones with parameters and GFLOPs (one forward at 112x112)")
    models.add_argument("names", nargs="*", help="backbone names (default: all)")
    models.add_argument("--emb-shape", type=int, default=512)
    models.set_defaults(func=cmd_models)

    convert = sub.add_parser(
        "convert", help="convert datasets (rec2folders, folders2rec, make-bin) or seed .h5 models (seed-h5)"
    )
    convert.add_argument("kind", choices=["rec2folders", "folders2rec", "make-bin", "seed-h5"])
    convert.add_argument(
        "src", help="a train.rec folder (rec2folders), any dataset (folders, list file, npz) or a seed .h5 (seed-h5)"
    )
    convert.add_argument(
        "dst", help="output folder (rec2folders, folders2rec), .bin path (make-bin) or .keras path (seed-h5)"
    )
    convert.add_argument("--pairs", type=int, default=3000, help="make-bin: genuine pairs (and as many impostor)")
    convert.add_argument("--seed", type=int, default=0)
    convert.set_defaults(func=cmd_convert)

    distill = sub.add_parser(
        "distill-data", help="store a teacher's embeddings of every image of a dataset (an npz for distillation)"
    )
    distill.add_argument("data", help="train.rec folder, class-folder root, list file or npz list")
    distill.add_argument("out", help="output .npz (embeddings, image_classes, image_names or rec_path)")
    distill.add_argument("-m", "--model", required=True, help="teacher: .keras, .h5, .onnx or TorchScript .pt/.pth")
    distill.add_argument("--flip", action="store_true", help="add the flipped image's embedding")
    _add_embedding_args(distill)
    distill.set_defaults(func=cmd_distill_data)

    drop = sub.add_parser(
        "drop-topk", help="sub-center cleaning: keep images near their class's dominant sub-center (an npz list)"
    )
    drop.add_argument("data", help="the dataset the sub-center head was trained on")
    drop.add_argument("out", help="output .npz list of the kept images")
    drop.add_argument("-m", "--model", required=True, help="the run's basic model (.keras, .h5, .onnx, .pt)")
    drop.add_argument("--kernel", required=True, help="NormDense kernel: .npy file or <name>_state folder")
    drop.add_argument("--top-k", type=int, required=True, help="sub-centers per class (loss_top_k of the head)")
    drop.add_argument("--limit-deg", type=float, default=75, help="keep images at most this angle from the dominant")
    _add_embedding_args(drop)
    drop.set_defaults(func=cmd_drop_topk)

    align = sub.add_parser("align", help="5-point alignment of raw face images into ArcFace crops (JPEG)")
    align.add_argument("src", help="folder of raw .jpg/.png images")
    align.add_argument("dst", help="output folder: the crops under the same relative paths")
    source = align.add_mutually_exclusive_group(required=True)
    source.add_argument("--landmarks", help="CSV (path,x1,y1,...,x5,y5) or JSON {path: [[x, y] x 5]}")
    _add_detector_args(align, "align each image's main face", group=source)
    align.add_argument("--size", default="112x112", help="crop HEIGHTxWIDTH: 112x112 or 112x96 (or 128x128, 224x224)")
    align.set_defaults(func=cmd_align)

    model_help = "basic model: .keras, .h5, .onnx or TorchScript .pt/.pth"
    compare = sub.add_parser("compare", help="cosine similarity of two faces, and same/different at a threshold")
    compare.add_argument("image_a", help="first face: an aligned crop of the model's input size (or any photo with "
                                         "--detector)")
    compare.add_argument("image_b", help="second face")
    compare.add_argument("-m", "--model", required=True, help=model_help)
    compare.add_argument("--threshold", help="cosine threshold: a number, a .bin pack (the model's best threshold on "
                                             "it) or a <name>_hist.json")
    compare.add_argument("--set", help="with a history .json: its verification set (default: the first, e.g. lfw)")
    _add_detector_args(compare, "align each photo's main face first")
    compare.set_defaults(func=cmd_compare)

    search = sub.add_parser("search", help="rank the identities of a gallery folder (one sub-folder each) by a face")
    search.add_argument("image", help="query face: an aligned crop of the model's input size (or a photo with --detector)")
    search.add_argument("--gallery", required=True, help="folder of identities: <name>/*.jpg (or <name>.jpg)")
    search.add_argument("-m", "--model", required=True, help=model_help)
    search.add_argument("-k", "--top-k", type=int, default=5, help="identities to list")
    search.add_argument("--cache", help="embedding cache .npz (default: a hidden file in the gallery, per model)")
    _add_detector_args(search, "align the main face of the query and of every gallery photo")
    search.set_defaults(func=cmd_search)

    export = sub.add_parser("export", help="export a basic model to ONNX, TFLite or a SavedModel, verified against Keras")
    export.add_argument("model", help="basic model: .keras or seed .h5")
    export.add_argument("--format", default="onnx", choices=["onnx", "tflite", "savedmodel"])
    export.add_argument("-o", "--out", help="output .onnx/.tflite file or SavedModel folder (default: beside MODEL)")
    export.add_argument("--fp16", action="store_true", help="float16 weights (tflite) / weights and arithmetic (onnx)")
    export.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization layers")
    export.add_argument("--no-verify", action="store_true", help="skip the comparison with the Keras model")
    export.add_argument("--images", help="folder of aligned face crops (.jpg/.png) to verify on (the first 8)")
    export.add_argument("--route", default="auto", choices=["auto", "jax", "tensorflow"],
                        help="graph source for the converters (auto: JAX, then the TensorFlow backend)")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset")
    export.set_defaults(func=cmd_export)

    summary = sub.add_parser("summary", help="parameters, GFLOPs, CPU latency, embedding size and input of a model")
    summary.add_argument("model", help="a .keras / seed .h5 basic model or a backbone name (keras-insightface models)")
    summary.add_argument("--runs", type=int, default=20, help="timed calls for the median latency")
    summary.add_argument("-b", "--batch-size", type=int, default=1, help="batch of the latency measurement")
    summary.set_defaults(func=cmd_summary)

    ijb = sub.add_parser("ijb", help="IJB-B/IJB-C 1:1 verification (TAR at FAR, ROC) and 1:N identification")
    ijb.add_argument("-m", "--model", help="basic model: .keras, .h5, .onnx or TorchScript .pt/.pth")
    ijb.add_argument("-d", "--data-dir", help="folder holding IJBC/ (or IJBB/) with meta/ and loose_crop/")
    ijb.add_argument("-s", "--subset", default="IJBC", type=str.upper, choices=["IJBB", "IJBC"])
    ijb.add_argument("-b", "--batch-size", type=int, default=64)
    ijb.add_argument("--modes", default="N0D1F1", help="N{0,1}D{0,1}F{0,1} modes, comma-separated, or 'all'")
    ijb.add_argument("--embeddings", help="embeddings cache (.npz): read if it exists, else written")
    ijb.add_argument("--identification", action="store_true", help="also run 1:N (galleries and mixed probes)")
    ijb.add_argument("--save-scores", help="write the pair scores, labels and 1:N curves to this .npz")
    ijb.add_argument("--plot", help="ROC plot (.png)")
    ijb.add_argument("--plot-cmc", help="1:N plot: CMC and TPIR at FPIR (.png)")
    ijb.add_argument("--name", help="method name in the tables (default: the model file's stem)")
    ijb.add_argument("--plot-only", nargs="+", metavar="SCORES", help="tables and plots from saved --save-scores files")
    ijb.set_defaults(func=cmd_ijb)

    plot = sub.add_parser("plot", help="training curves of history JSON files (runs overlaid), comparison tables")
    plot.add_argument("histories", nargs="+", help="<name>_hist.json files written by train")
    plot.add_argument("--epochs", type=_int_list, help="epochs per stage, e.g. 5,5,40 (stage separators)")
    plot.add_argument("--names", type=lambda text: text.split(","), help="stage names, e.g. s16,s32,s64")
    plot.add_argument("--customs", type=lambda text: text.split(","), help="keys of the third panel (default lr)")
    plot.add_argument("--skip-epochs", type=int, default=0, help="leave out the first N epochs")
    plot.add_argument("-o", "--out", default="hist.png", help="output image (.png, .svg, .pdf)")
    plot.add_argument("--choose", action="store_true", help="print the four run comparison tables")
    plot.add_argument("--key-pick", default="agedb_30", help="verification set ranking the first table")
    plot.set_defaults(func=cmd_plot)

    folder = sub.add_parser("eval-folder", help="top-1 against class centers and TPR@FPR on a class-folder dataset")
    folder.add_argument("data", help="class-folder root, train.rec folder or list file")
    folder.add_argument("-m", "--model", required=True, help="basic model: .keras, .h5, .onnx or TorchScript .pt/.pth")
    folder.add_argument("--fprs", type=_float_list, default=[1e-4, 1e-3, 1e-2], help="comma-separated FPRs")
    folder.add_argument("--flip", action="store_true", help="add the flipped image's embedding")
    _add_embedding_args(folder)
    folder.set_defaults(func=cmd_eval_folder)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, ValueError) as error:
        if args.traceback:
            raise
        print(f"keras-insightface {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
