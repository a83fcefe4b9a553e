"""Images/s of the evaluation loop with flip (``embed_views``: each image and its mirror) for a Keras model.

    python bench/eval_views.py                       # r18 (arcface_torch preset), 512 images, batch 128
    python bench/eval_views.py --model r50 --images 2048 --batch-size 256

Prints one ``RESULT`` line: the median of 3 timed passes after a warm-up (compilation) pass.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="r18")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import numpy as np

    import keras_insightface as kif
    from keras_insightface.inference.embed import embed_views
    from keras_insightface.inference.embedders import open_model

    embedder = open_model(kif.buildin_models(args.model, weights=None, preset="arcface_torch"))
    images = np.random.default_rng(0).integers(0, 256, (args.images, 112, 112, 3), dtype=np.uint8)
    embed_views(embedder, images, args.batch_size, flip=True)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        embed_views(embedder, images, args.batch_size, flip=True)
        seconds.append(time.perf_counter() - start)
    print(f"RESULT eval_views_{args.model}_img/s {args.images / statistics.median(seconds):.1f} img/s (flip on, "
          f"batch {args.batch_size})")


if __name__ == "__main__":
    main()
