"""Input-pipeline throughput: read + decode per core, the grain loader with worker processes, augmentation cost.

    python bench/loader.py                       # generated 112x112 .rec in a temp dir
    python bench/loader.py --data datasets/faces_emore --workers 1,15 --batches 200

Goal: >= 5,000 img/s per worker core at 112x112 (decode of JPEG crops), and enough workers to feed ~7,000+
img/s for an r50 step on one H200; augmentation of a batch of 512 <= 5% of an r50 step on the GPU.
Prints ``RESULT`` lines.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def _int_list(text):
    return [int(v) for v in text.split(",")]


def decode_rate(source, count):
    """Images/s of read + decode in this process (one core)."""
    from keras_insightface.data.decode import decode_image

    count = min(count, len(source))
    start = time.perf_counter()
    for index in range(count):
        decode_image(source[index][0])
    return count / (time.perf_counter() - start)


def loader_rate(source, batch_size, workers, batches):
    """Images/s delivered by the grain loader (uint8 batches in the main process) after a warm-up."""
    from keras_insightface.data.loader import make_loader

    iterator = iter(make_loader(source, batch_size, num_workers=workers).dataset)
    try:
        for _ in range(min(10, batches)):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        iterator.close()


def augment_ms(batch_size, repeats=3, **options):
    """Milliseconds per batch of FaceAugment(**options) in training mode, compiled, on the default device."""
    import jax
    import numpy as np

    from keras_insightface.data.augment import FaceAugment

    layer = FaceAugment(seed=0, **options)
    layer.build((batch_size, 112, 112, 3))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch_size, 112, 112, 3), dtype=np.uint8))

    @jax.jit
    def run(seed_state, batch):
        return layer.stateless_call([], [seed_state], batch, training=True)[0]

    state = layer.non_trainable_variables[0].value
    run(state, images).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(state, images).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="a dataset (default: generate 4,000 synthetic faces)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=_int_list, default=[1, max(1, (os.cpu_count() or 2) - 1)])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--decode-images", type=int, default=2000)
    parser.add_argument("--augment-batch", type=int, default=512)
    args = parser.parse_args()

    from keras_insightface.data.sources import open_source
    from keras_insightface.demo.synthetic import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or generate_dataset(tmp, num_identities=200, images_per_identity=20, num_val_identities=10,
                                             num_pairs=20)["train"]
        source = open_source(data)
        print(f"RESULT decode_per_core img/s={decode_rate(source, args.decode_images):.0f} source={source.name}")
        for workers in dict.fromkeys(args.workers):
            rate = loader_rate(source, args.batch_size, workers, args.batches)
            print(f"RESULT loader workers={workers} batch={args.batch_size} img/s={rate:.0f} cores={os.cpu_count()}")
    for options in ({"random_status": 0}, {"random_status": 3}, {"random_status": 100}, {"auto_augment_policy": "face"}):
        ms = augment_ms(args.augment_batch, **options)
        print(f"RESULT augment {options} batch={args.augment_batch} ms/batch={ms:.1f}")


if __name__ == "__main__":
    main()
