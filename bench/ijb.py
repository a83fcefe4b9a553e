"""IJB-C 1:1 scoring at full size on random embeddings: everything after the model (features, pooling, pairs, ROC).

    python bench/ijb.py                 # IJB-C sizes, mode N0D1F1
    python bench/ijb.py --modes all     # the 8 N/D/F modes (pooling and pair scores per mode, one ROC each)

IJB-C: 469,375 images, 23,124 templates (3,531 gallery x 19,593 probe), 15,658,489 template pairs of which
19,557 genuine, drawn here as distinct cells of the gallery x probe grid in a shuffled order; 512-d float32
embeddings and flip embeddings, images in a shuffled order, a few medias per template. Goal: <= 60 s on 2 CPU
cores for one mode. Prints one ``RESULT`` line with the seconds of each part (setup not counted).
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def synthetic_ijbc(images, gallery, probes, pairs, genuine, dim, seed=0):
    """Random embeddings, flip embeddings, faceness scores, template / media ids and gallery x probe pairs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    templates_count = gallery + probes
    extra = rng.integers(0, templates_count, images - templates_count)  # every template gets at least one image
    templates = rng.permutation(np.r_[np.arange(templates_count), extra])
    medias = templates * 8 + rng.integers(0, 4, images)
    embeddings = rng.standard_normal((images, dim), dtype=np.float32)
    flip_embeddings = embeddings + 0.3 * rng.standard_normal((images, dim), dtype=np.float32)
    face_scores = rng.uniform(0.5, 1.0, images).astype(np.float32)
    cells = rng.permutation(gallery * probes)[:pairs]
    p1, p2 = cells // probes, gallery + cells % probes
    labels = np.zeros(pairs, bool)
    labels[rng.choice(pairs, genuine, replace=False)] = True
    return embeddings, flip_embeddings, face_scores, templates, medias, p1, p2, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=469_375)
    parser.add_argument("--gallery", type=int, default=3_531)
    parser.add_argument("--probes", type=int, default=19_593)
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--genuine", type=int, default=19_557)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--modes", default="N0D1F1", help="comma-separated N/D/F modes, or 'all'")
    args = parser.parse_args()

    import keras_insightface  # noqa: F401 - the package's environment defaults
    from keras_insightface.evaluation import ijb

    start = time.perf_counter()
    data = synthetic_ijbc(args.images, args.gallery, args.probes, args.pairs, args.genuine, args.dim)
    embeddings, flip_embeddings, face_scores, templates, medias, p1, p2, labels = data
    print(f"setup {time.perf_counter() - start:.1f} s: {args.images} images, {len(p1)} pairs", flush=True)
    modes = ijb.ALL_MODES if args.modes == "all" else tuple(args.modes.split(","))
    seconds = dict(features=0.0, pool=0.0, pairs=0.0, roc=0.0)
    rocs = {}
    for mode in modes:
        tick = time.perf_counter()
        features = ijb.image_features(embeddings, flip_embeddings, face_scores, mode)
        seconds["features"] += time.perf_counter() - tick
        tick = time.perf_counter()
        pooled, ids = ijb.pool_templates(features, templates, medias)
        seconds["pool"] += time.perf_counter() - tick
        del features
        tick = time.perf_counter()
        scores = ijb.pair_scores(pooled, ids, p1, p2)
        seconds["pairs"] += time.perf_counter() - tick
        tick = time.perf_counter()
        rocs[mode] = ijb.Roc(scores, labels)
        rocs[mode].tar_at_far()
        rocs[mode].auc()
        seconds["roc"] += time.perf_counter() - tick
    total = sum(seconds.values())
    print(ijb.markdown_table(rocs))
    parts = " ".join(f"{name}_s={value:.2f}" for name, value in seconds.items())
    print(f"RESULT ijb images={args.images} templates={args.gallery + args.probes} pairs={len(p1)} dim={args.dim} "
          f"modes={len(modes)} {parts} total_s={total:.2f} cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
