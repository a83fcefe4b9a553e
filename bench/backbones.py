"""Per backbone: parameters, GFLOPs at 112x112, forward and training-step images/s.

    python bench/backbones.py                               # every registered backbone, batch 256 (GPU setting)
    python bench/backbones.py --cpu                         # CPU-sized: small models, batch 16
    python bench/backbones.py r50 ghostnet --batch-size 128 --precision mixed_bfloat16

Prints a markdown table (and one ``RESULT`` line per backbone). GFLOPs are multiply-accumulates of the
convolutions and matrix products of one forward (``flops.gflops``, insightface's convention).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CPU_SET = ["r18_tiny", "mobilenet", "mobilefacenet_insightface", "ghostnet", "mobilenetv3_small"]


def forward_rate(model, batch_size, repeats=3):
    """Images/s of the compiled inference forward on a device-resident batch (best of ``repeats``)."""
    import jax
    import numpy as np

    from keras_insightface.flops import jitted_forward

    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch_size, 112, 112, 3)).astype("float32"))
    run, variables = jitted_forward(model)
    run(*variables, images).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(*variables, images).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--cpu", action="store_true", help=f"batch 16, 3 steps, models {', '.join(CPU_SET)}")
    args = parser.parse_args()
    if args.cpu:
        args.batch_size, args.steps, args.names = 16, 3, args.names or CPU_SET

    from train_step import measure_train_step

    from keras_insightface.backbones import list_backbones
    from keras_insightface.flops import gflops
    from keras_insightface.models import buildin_models

    print(f"| model | params (M) | GFLOPs | forward img/s | train img/s | (batch {args.batch_size}, {args.precision}) |")
    print("|---|---|---|---|---|---|")
    for name in args.names or list_backbones():
        model = buildin_models(name, emb_shape=512, weights=None, preset="arcface_torch")
        params, flops, forward = model.count_params() / 1e6, gflops(model), forward_rate(model, args.batch_size)
        train, _, device = measure_train_step(name, args.batch_size, args.classes, args.steps, args.precision)
        print(f"| {name} | {params:.2f} | {flops:.3f} | {forward:.1f} | {train:.1f} | {device} |")
        print(f"RESULT backbone={name} params_m={params:.2f} gflops={flops:.3f} forward={forward:.1f} train={train:.1f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
