"""Images/s and peak device memory of the compiled training step with a chosen classifier (full ``NormDense`` or
``PartialFC``), and optionally a JAX profile of a few steps: the big-head and profile figures of ``bench/gpu.sh``.

    python bench/gpu_step.py --classes 2059906 --name big_head_full                  # WebFace42M-size head, r50
    python bench/gpu_step.py --classes 2059906 --sample-rate 0.1 --name big_head_pfc0.1
    python bench/gpu_step.py --classes 93431 --steps 5 --profile /tmp/profile --name profile
    python bench/gpu_step.py --cpu --classes 20000 --name big_head_full                # r18_tiny, batch 32, float32

The training model is built as ``bench/train_step.py``'s (``FaceTask``: ``FaceAugment(seed=0)``, the classifier,
``MarginHead(ArcfaceLoss(scale=64))``, ``L2SGD(0.1)``, jitted), with the classifier as Train makes it for
``partial_fc_sample_rate``: ``PartialFC(classes, rate)`` below 1, ``NormDense(classes)`` at 1. With the full head the
compiled program is the one ``train_step.py`` compiles, so with JAX's persistent compilation cache a profile after
that bench skips compilation. The batch is put on the device once, so only the step is measured.

Peak memory is the device's ``peak_bytes_in_use`` (``jax.Device.memory_stats``, GPU); where JAX reports none (CPU)
it is the process's peak resident memory, and the unit says which. One setting per process, so the peak is that
setting's. Out of device memory is reported, not raised: ``RESULT <name>_img/s FAILED (OOM: ...)`` and the peak.

With ``--profile DIR``, ``--profile-steps`` more steps run inside ``jax.profiler.trace(DIR)`` after the measurement;
the trace's events are summed per name (``summarize_trace``) and the busiest are printed, so the log can be read
without a trace viewer.

Prints ``RESULT <name>_img/s <value> img/s`` and ``RESULT <name>_peak_gb <value> GB_device|GB_host_rss`` (and with
``--profile``, ``RESULT <name>_trace_mb``).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import resource
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def build_task(model_name, classes, precision, sample_rate=1.0, emb_shape=512):
    """The compiled training model of ``train_step.measure_train_step`` with the classifier of ``sample_rate``."""
    from keras_insightface.data.augment import FaceAugment
    from keras_insightface.heads.margin import MarginHead
    from keras_insightface.heads.norm_dense import NormDense
    from keras_insightface.heads.partial_fc import PartialFC
    from keras_insightface.losses.margin import ArcfaceLoss
    from keras_insightface.models import buildin_models
    from keras_insightface.training.model_setup import dtype_policy
    from keras_insightface.training.optimizers import L2SGD
    from keras_insightface.training.task import FaceTask

    with dtype_policy(precision):
        basic = buildin_models(model_name, emb_shape=emb_shape, weights=None, preset="arcface_torch")
        head = PartialFC(classes, sample_rate, seed=0) if sample_rate < 1 else NormDense(classes)
        model = FaceTask(basic, FaceAugment(seed=0), head=head, margin_head=MarginHead(ArcfaceLoss(scale=64)))
    model.compile(optimizer=L2SGD(0.1), jit_compile=True)
    return model


def device_batches(batch_size, classes, image_size=112):
    """An endless generator of one random uint8 batch and its labels, put on the device once."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8))
    labels = jax.device_put(rng.integers(0, classes, (batch_size,), dtype=np.int32))
    while True:
        yield images, labels


def peak_memory():
    """``(GB, unit)``: the device's peak bytes in use where JAX reports them, else this process's peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 1e9, "GB_device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "GB_host_rss"  # kilobytes on Linux


def is_out_of_memory(error):
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def summarize_trace(trace_dir, top=25, python_top=8):
    """The busiest events of the ``*.trace.json.gz`` that ``jax.profiler.trace`` wrote under ``trace_dir``:
    ``[(process, kind, event name, total ms, count)]``, processes (host, each device) by their total time, in each
    the ``top`` longest XLA / runtime events (``kind`` "op") and the ``python_top`` longest Python frames (names
    starting with ``$``, ``kind`` "python")."""
    paths = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
    if not paths:
        raise FileNotFoundError(f"{trace_dir}: no plugins/profile/*/*.trace.json.gz written by jax.profiler.trace")
    with gzip.open(max(paths, key=os.path.getmtime)) as file:
        events = json.load(file).get("traceEvents", [])
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    totals = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            entry = totals[names.get(event.get("pid"), str(event.get("pid")))][event.get("name", "?")]
            entry[0] += event["dur"] / 1000
            entry[1] += 1
    rows = []
    for process, by_name in sorted(totals.items(), key=lambda item: -sum(v[0] for v in item[1].values())):
        ranked = sorted(by_name.items(), key=lambda item: -item[1][0])
        for kind, limit in (("op", top), ("python", python_top)):
            chosen = [(name, ms, count) for name, (ms, count) in ranked if name.startswith("$") == (kind == "python")]
            rows += [(process, kind, name, ms, count) for name, ms, count in chosen[:limit]]
    return rows


def profile_steps(model, data, steps, trace_dir):
    """Run ``steps`` more training steps inside ``jax.profiler.trace(trace_dir)``; returns the trace's size in MB."""
    import jax

    with jax.profiler.trace(trace_dir):
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)  # fit ends by reading the logs: synchronised
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, files in os.walk(trace_dir) for name in files)
    return size / 1e6


def measure(args):
    """Compile and warm up (2 steps), then time ``args.steps`` steps; returns img/s."""
    model = build_task(args.model, args.classes, args.precision, args.sample_rate, args.emb_shape)
    data = device_batches(args.batch_size, args.classes)
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    start = time.perf_counter()
    history = model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
    rate = args.steps * args.batch_size / (time.perf_counter() - start)
    print(f"{args.name}: loss {history.history['loss'][-1]:.3f} after {args.steps + 2} steps")
    return model, data, rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="prefix of the RESULT names")
    parser.add_argument("--model", default="r50")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=2_059_906)
    parser.add_argument("--sample-rate", type=float, default=1.0, help="Partial FC's rate; 1.0: full NormDense")
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--emb-shape", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="timed steps, after 2 compile / warm-up steps")
    parser.add_argument("--profile", default=None, help="trace --profile-steps more steps into this folder")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="CPU-sized: r18_tiny, batch 32, float32, 3 steps")
    args = parser.parse_args()
    if args.cpu:
        args.model, args.batch_size, args.precision, args.steps = "r18_tiny", 32, "float32", 3

    import jax

    device = jax.devices()[0]
    print(f"{args.name}: {args.model} batch {args.batch_size}, {args.classes} classes, sample rate "
          f"{args.sample_rate}, {args.precision} on {device.platform}:{device.device_kind}")
    try:
        model, data, rate = measure(args)
    except Exception as error:  # noqa: BLE001 - out of memory is a figure here; anything else is raised
        if not is_out_of_memory(error):
            raise
        message = " ".join(str(error).split())[:300]
        print(f"OOM: {message}")
        peak, unit = peak_memory()
        print(f"RESULT {args.name}_img/s FAILED (OOM: {message[:120]})")
        print(f"RESULT {args.name}_peak_gb {peak:.2f} {unit}")
        raise SystemExit(3) from None
    peak, unit = peak_memory()
    print(f"RESULT {args.name}_img/s {rate:.1f} img/s")
    print(f"RESULT {args.name}_peak_gb {peak:.2f} {unit}")
    if args.profile:
        size = profile_steps(model, data, args.profile_steps, args.profile)
        print(f"RESULT {args.name}_trace_mb {size:.1f} MB")
        print(f"{args.name}: {args.profile_steps} steps traced into {args.profile}; busiest events (ms, count):")
        for process, kind, name, ms, count in summarize_trace(args.profile):
            print(f"  {ms:10.2f} {count:6d}  {process[:32]:32s} {kind:6s}  {name[:160]}")


if __name__ == "__main__":
    main()
