"""Classifier head cost vs identities: full NormDense vs Partial FC, forward + backward + L2SGD update.

    python bench/heads.py                                  # GPU setting: 93k, 1M, 2,059,906 ids, batch 512
    python bench/heads.py --cpu                            # CPU setting: 100k and 1M ids, batch 64
    python bench/heads.py --classes 2059906 --batch-size 512 --sample-rates 1.0 0.2

The head sees random 512-d embeddings (no backbone), so the figures are the head's own: one jitted step of
``head -> ArcFace margin -> cross-entropy -> L2SGD`` on device-resident inputs. Prints a markdown table and one
``RESULT`` line per setting. Each setting runs in its own process, so memory is that setting's peak: the
device's peak bytes in use where JAX reports it (GPU), else the process's peak RSS (CPU).
"""

import argparse
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def build(classes, sample_rate, emb_shape):
    import keras

    from keras_insightface.heads.margin import MarginHead
    from keras_insightface.heads.norm_dense import NormDense
    from keras_insightface.heads.partial_fc import PartialFC
    from keras_insightface.losses.margin import ArcfaceLoss
    from keras_insightface.training.optimizers import L2SGD
    from keras_insightface.training.outputs import PerSampleCrossEntropy, PerSampleLoss

    embeddings = keras.Input((emb_shape,), name="embedding")
    labels = keras.Input((), dtype="int32", name="labels")
    if sample_rate < 1:
        cos, head_labels = PartialFC(classes, sample_rate, seed=0, name="partial_fc")([embeddings, labels])
    else:
        cos, head_labels = NormDense(classes, name="norm_dense")(embeddings), labels
    logits = MarginHead(ArcfaceLoss())([cos, head_labels])
    model = keras.Model([embeddings, labels], PerSampleCrossEntropy()([logits, head_labels]))
    model.compile(optimizer=L2SGD(0.1), loss=PerSampleLoss(), jit_compile=True)
    return model


def peak_memory_gb():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def measure(classes, sample_rate, batch_size, emb_shape, steps):
    """Seconds per step (median of ``steps`` after one compile step)."""
    import numpy as np

    model = build(classes, sample_rate, emb_shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, emb_shape)).astype("float32")
    y = rng.integers(0, classes, batch_size).astype("int32")
    model.train_on_batch([x, y], y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model.train_on_batch([x, y], y)
        times.append(time.perf_counter() - start)
    assert np.isfinite(loss), loss
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="*", default=[93431, 1_000_000, 2_059_906])
    parser.add_argument("--sample-rates", type=float, nargs="*", default=[1.0, 0.2, 0.1])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--emb-shape", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cpu", action="store_true", help="100k and 1M identities, batch 64, 3 steps")
    parser.add_argument("--one", action="store_true", help="internal: measure the first class count and rate")
    args = parser.parse_args()
    if args.cpu:
        args.classes, args.batch_size, args.steps = [100_000, 1_000_000], 64, 3
    if args.one:
        import keras_insightface  # noqa: F401  (JAX backend)

        seconds = measure(args.classes[0], args.sample_rates[0], args.batch_size, args.emb_shape, args.steps)
        print(f"{seconds * 1000:.1f} {peak_memory_gb():.2f}")
        return

    print(f"| identities | sample rate | step ms | peak memory GB | (batch {args.batch_size}, emb {args.emb_shape}) |")
    print("|---|---|---|---|---|")
    for classes in args.classes:
        for rate in args.sample_rates:
            command = [sys.executable, __file__, "--one", "--classes", str(classes), "--sample-rates", str(rate),
                       "--batch-size", str(args.batch_size), "--emb-shape", str(args.emb_shape),
                       "--steps", str(args.steps)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode:
                print(f"| {classes} | {rate} | failed: {run.stderr.strip().splitlines()[-1]} | | |", flush=True)
                continue
            step_ms, memory = run.stdout.split()[-2:]
            print(f"| {classes} | {rate} | {step_ms} | {memory} | |", flush=True)
            print(f"RESULT classes={classes} sample_rate={rate} step_ms={step_ms} peak_gb={memory}")


if __name__ == "__main__":
    main()
