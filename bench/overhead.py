"""Host overhead per training step: ``Train``'s loop on a trivial model, whose step costs almost nothing, so the
loop's time per step is what the host adds (the batch fetched from the decode workers, its transfer, the step's
dispatch and the per-batch callbacks), against the same compiled model fed one device-resident batch
(``bench/train.py`` ``measure_engine_step``).

    python bench/overhead.py                  # batch 64, 32 identities x 32 generated faces, 4 epochs
    python bench/overhead.py --verbose 1      # with the progress display (plain lines when redirected)

Target (issue 19): at most 1 ms per step. Prints ``RESULT`` lines: the loop's and the bare step's ms per step (the
loop's from the engine's own ``img/s`` history key, epochs 2..E: the ``fit`` batches without the epoch-end work)
and their difference.
"""

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def trivial_model(emb_shape=16):
    """An embedding model of a pooling and a dense layer: a step of it is all overhead."""
    import keras

    inputs = keras.Input((112, 112, 3), name="image")
    x = keras.layers.AveragePooling2D(16, name="pool")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(emb_shape, name="embedding")(x), name="trivial")


class CachedBatches:
    """The loader's first ``count`` batches, decoded once and repeated: the loop's input without JPEG decoding, so
    what is left per step is the host's own work (a queue get, the transfer, dispatch, callbacks)."""

    def __init__(self, iterator, count):
        self.batches = [next(iterator) for _ in range(count)]
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = state["index"]


def loop_ms(history, batch_size):
    """The loop's median ms per step over epochs 2..E (the engine's ``img/s``: ``fit`` batches only)."""
    return statistics.median(1000 * batch_size / rate for rate in history["img/s"][1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=32)
    parser.add_argument("--images-per-class", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs run; the first (compilation) is not counted")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: the project's)")
    parser.add_argument("--verbose", type=int, default=0, help="Train's progress display")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "keras_insightface_bench_train"))
    args = parser.parse_args()

    from train import make_data, measure_engine_step

    from keras_insightface import ArcfaceLoss, Train

    train_dir, _, _ = make_data(args.data_dir, args.classes, args.images_per_class, eval_pairs=10)
    with tempfile.TemporaryDirectory(prefix="bench_overhead") as checkpoint_dir:
        trainer = Train(train_dir, "overhead.keras", basic_model=trivial_model(), batch_size=args.batch_size,
                        random_status=0, num_workers=args.workers, checkpoint_dir=checkpoint_dir,
                        verbose=args.verbose)
        try:
            loader_run = trainer.train([{"loss": ArcfaceLoss(scale=64), "epoch": args.epochs}])
            steps = trainer.loader.steps_per_epoch
            trainer.run.iterator = CachedBatches(trainer.run.iterator, steps)
            cached_run = trainer.train([{"loss": ArcfaceLoss(scale=64), "epoch": args.epochs}],
                                       initial_epoch=args.epochs)
        finally:
            trainer.close()
        engine = measure_engine_step(trainer.parts.train_model, args.batch_size, trainer.num_classes, 4 * steps)
    with_loader = loop_ms(loader_run, args.batch_size)
    cached = loop_ms({"img/s": cached_run["img/s"][args.epochs:]}, args.batch_size)
    engine_ms = 1000 * args.batch_size / engine
    print(f"| batch | steps/epoch | loop ms/step, decoding | loop ms/step, decoded batches | bare step ms/step | "
          f"host overhead ms/step |\n|---|---|---|---|---|---|\n| {args.batch_size} | {steps} | {with_loader:.2f} | "
          f"{cached:.2f} | {engine_ms:.2f} | {cached - engine_ms:.2f} |")
    print(f"RESULT overhead_loop_decoding_ms_per_step {with_loader:.3f} ms")
    print(f"RESULT overhead_loop_decoded_ms_per_step {cached:.3f} ms")
    print(f"RESULT overhead_bare_ms_per_step {engine_ms:.3f} ms")
    print(f"RESULT overhead_host_ms_per_step {cached - engine_ms:.3f} ms (target <= 1)")


if __name__ == "__main__":
    main()
