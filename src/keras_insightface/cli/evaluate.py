"""Evaluation commands: eval (.bin packs), ijb (IJB-B/C), eval-folder and plot (training curves)."""

import argparse
import os
from pathlib import Path

from keras_insightface.atomic import savefig_atomic
from keras_insightface.cli.args import MODEL_FILES, add_embedding_args, dataset, float_list, int_list
from keras_insightface.errors import DataError


def cmd_eval(args):
    """The metrics table of every pack, then each pack's lines in insightface's and in the seed's printout."""
    from keras_insightface.evaluation.verification import VerificationSet, insightface_lines, seed_line
    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model)
    print("| set | accuracy | threshold | 10-fold | VAL@FAR=1e-3 | FAR | XNorm |\n|---|---|---|---|---|---|---|")
    results = []
    for path in args.eval:
        dataset = VerificationSet(path)
        result = dataset.evaluate(model, args.batch_size, flip=args.flip)
        results.append((dataset.name, result))
        print(
            f"| {dataset.name} | {result['accuracy']:.4f} | {result['threshold']:.4f} |"
            f" {result['kfold_mean']:.4f} ± {result['kfold_std']:.4f} |"
            f" {result['val']:.4f} ± {result['val_std']:.4f} | {result['far']:.5f} | {result['xnorm']:.4f} |"
        )
    print("\ninsightface (arcface_torch eval/verification.py: 10-fold accuracy on squared L2 distance):")
    for name, result in results:
        print("\n".join(insightface_lines(name, result, flip=args.flip)))
    print("seed (evals.py eval_callback: best accuracy over the top 10% impostor cosine thresholds):")
    for name, result in results:
        print(seed_line(name, result["accuracy"], result["threshold"]))


def cmd_ijb(args):
    """IJB-B/C 1:1 verification (TAR at FAR table, ROC plot) and optionally 1:N identification, or plot-only."""
    from keras_insightface.evaluation import ijb, ijb_meta

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
    meta = ijb_meta.read_meta(args.data_dir, args.subset)
    galleries = ijb_meta.read_identification_meta(args.data_dir, args.subset) if args.identification else None
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
    from keras_insightface.plot import choose_accuracy, plot_runs

    fig = plot_runs(
        args.histories, epochs=args.epochs, names=args.names, customs=args.customs, skip_epochs=args.skip_epochs
    )
    savefig_atomic(fig, args.out)
    print(f">>>> plot: {len(args.histories)} run(s) -> {args.out}")
    if args.choose:
        choose_accuracy(args.histories, key_pick=args.key_pick)


def cmd_eval_folder(args):
    from keras_insightface.evaluation.folder import eval_folder, results_table
    from keras_insightface.inference.embedders import open_model

    model = open_model(args.model, args.input_mean, args.input_std)
    result = eval_folder(dataset(args), model, args.batch_size, args.flip, args.num_workers, args.fprs)
    print(f">>>> eval-folder: {result['images']} images, {result['classes']} classes, {result['trials']} top-1 trials")
    print(results_table(result, os.path.splitext(os.path.basename(args.model))[0]))


def add_commands(sub):
    """Register this module's subcommands on ``sub`` (the parser's subparsers)."""
    evaluate = sub.add_parser(
        "eval", help="verification accuracy, VAL@FAR=1e-3 and XNorm of a model on .bin packs, with insightface's"
        " and the seed's printout lines"
    )
    evaluate.add_argument("-m", "--model", required=True, help=f"basic model: {MODEL_FILES}")
    packs = evaluate.add_argument("-e", "--eval", nargs="+", required=True, metavar="PACK",
                                  help=".bin verification packs (lfw.bin, cfp_fp.bin, ...), as train's --eval")
    evaluate.add_old_spelling(packs, "-t", "--test-bin")
    evaluate.add_argument("-b", "--batch-size", type=int, default=64, metavar="N", help="images per batch")
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                          help="add the horizontally flipped image's embedding to each image's (insightface's "
                               "Accuracy-Flip)")
    evaluate.set_defaults(func=cmd_eval)

    ijb = sub.add_parser("ijb", help="IJB-B/IJB-C 1:1 verification (TAR at FAR, ROC) and 1:N identification")
    ijb.add_argument("-m", "--model", help=f"basic model: {MODEL_FILES}")
    ijb.add_argument("-d", "--data-dir", help="folder holding IJBC/ (or IJBB/) with meta/ and loose_crop/")
    ijb.add_argument("-s", "--subset", default="IJBC", type=str.upper, choices=["IJBB", "IJBC"],
                     help="which benchmark of --data-dir (any case)")
    ijb.add_argument("-b", "--batch-size", type=int, default=64, metavar="N", help="images per batch")
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
    plot.add_argument("--epochs", type=int_list, help="epochs per stage, e.g. 5,5,40 (stage separators)")
    plot.add_argument("--names", type=lambda text: text.split(","), help="stage names, e.g. s16,s32,s64")
    plot.add_argument("--customs", type=lambda text: text.split(","), help="keys of the third panel (default lr)")
    plot.add_argument("--skip-epochs", type=int, default=0, help="leave out the first N epochs")
    plot.add_argument("-o", "--out", default="hist.png", help="output image (.png, .svg, .pdf)")
    plot.add_argument("--choose", action="store_true", help="print the four run comparison tables")
    plot.add_argument("--key-pick", default="agedb_30", help="verification set ranking the first table")
    plot.set_defaults(func=cmd_plot)

    folder = sub.add_parser("eval-folder", help="top-1 against class centers and TPR@FPR on a class-folder dataset")
    folder.add_argument("data", help="class-folder root, train.rec folder or list file")
    folder.add_argument("-m", "--model", required=True, help=f"basic model: {MODEL_FILES}")
    folder.add_argument("--fprs", type=float_list, default=[1e-4, 1e-3, 1e-2], help="comma-separated FPRs")
    folder.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                        help="add the horizontally flipped image's embedding to each image's")
    add_embedding_args(folder)
    folder.set_defaults(func=cmd_eval_folder)
