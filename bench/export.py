"""CPU latency of an exported ONNX model (onnxruntime) against the Keras model (JAX, jitted), per batch size.

Each model is built with random weights (``buildin_models(name)``, GDC head, emb 512), exported with
``export_model`` (BN folded, verified), then timed: the median of ``--steps`` runs after ``--warmup`` runs, for
each batch size. Keras runs as one ``jax.jit`` of the inference function (``stateless_call``, weights as
arguments, ``block_until_ready``), so neither side pays Python per-layer overhead.

    python bench/export.py                                  # r50 and mobilefacenet_insightface, batch 1 and 64
    python bench/export.py --models mobilefacenet_insightface,r18 --batch-sizes 1,8,64 --steps 20
    python bench/export.py --models r50 --steps 5 --threads 2

Prints a markdown table and one ``RESULT`` line per model and batch size.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def median_ms(fn, steps, warmup):
    """Median wall time of ``fn()`` in milliseconds over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def keras_runner(model):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    forward = jax.jit(lambda images: model.stateless_call(trainable, non_trainable, images, training=False)[0])
    return lambda images: forward(images).block_until_ready()


def onnx_runner(path, threads):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"image": images})[0]


def bench_model(name, batch_sizes, steps, warmup, threads, workdir):
    """Rows ``(model, batch, keras ms, onnx ms)`` and the export seconds for one model."""
    import numpy as np

    from keras_insightface.export import export_model
    from keras_insightface.models import buildin_models

    model = buildin_models(name, weights=None, preset="arcface_torch")
    path = os.path.join(workdir, f"{name}.onnx")
    result = export_model(model, path)
    keras_fn, onnx_fn = keras_runner(model), onnx_runner(path, threads)
    rows = []
    for batch in batch_sizes:
        images = np.random.default_rng(0).uniform(0, 255, (batch, 112, 112, 3)).astype("float32")
        keras_ms = median_ms(lambda: keras_fn(images), steps, warmup)
        onnx_ms = median_ms(lambda: onnx_fn(images), steps, warmup)
        rows.append((name, batch, keras_ms, onnx_ms))
    return rows, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="r50,mobilefacenet_insightface", help="comma-separated buildin_models names")
    parser.add_argument("--batch-sizes", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="timed runs per model and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (JIT compile, allocations)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    lines = ["| model | batch | Keras JAX jit (ms) | ONNX Runtime (ms) | ONNX speed-up |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            rows, result = bench_model(name, batch_sizes, args.steps, args.warmup, args.threads, workdir)
            print(
                f"{name}: exported in {result.seconds:.1f} s by the {result.route} route, "
                f"{len(result.folded_batch_norms)} BN folded; {result.verification.summary()}"
            )
            for model, batch, keras_ms, onnx_ms in rows:
                lines.append(f"| {model} | {batch} | {keras_ms:.1f} | {onnx_ms:.1f} | {keras_ms / onnx_ms:.2f}x |")
                print(f"RESULT export model={model} batch={batch} keras_ms={keras_ms:.2f} onnx_ms={onnx_ms:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
