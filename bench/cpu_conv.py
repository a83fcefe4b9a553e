"""XLA's CPU convolution gradients under the XLA flags JAX offers: the microbenchmark behind issue 19's CPU gap.

A 3x3 convolution, 64 -> 64 channels at 56x56 (an r50 stage-1 layer), batch 16, float32, NHWC as Keras lays it
out: the jitted forward, the weight gradient and the input gradient, each the median of 7 runs, in a fresh process
per flag set (``XLA_FLAGS`` is read once per process).

    python bench/cpu_conv.py                              # the default and each flag set below
    python bench/cpu_conv.py --flags "--xla_cpu_use_xnnpack=true"

Prints one table row and one ``RESULT`` line per flag set.
"""

import argparse
import os
import subprocess
import sys

FLAG_SETS = ("", "--xla_cpu_use_onednn=true", "--xla_cpu_experimental_onednn_custom_call=true",
             "--xla_cpu_use_xnnpack=true", "--xla_cpu_use_thunk_runtime=false", "--xla_cpu_enable_fast_math=true",
             "--xla_cpu_multi_thread_eigen=false")
CHILD = """
import statistics, time
import jax, numpy as np
x = jax.numpy.asarray(np.random.default_rng(0).standard_normal((16, 56, 56, 64), np.float32))
w = jax.numpy.asarray(np.random.default_rng(1).standard_normal((3, 3, 64, 64), np.float32) * 0.05)
def loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y * y).mean()
def ms(f):
    jax.block_until_ready(f(w, x))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        jax.block_until_ready(f(w, x))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
print(ms(jax.jit(loss)), ms(jax.jit(jax.grad(loss, 0))), ms(jax.jit(jax.grad(loss, 1))))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", action="append", help="an XLA_FLAGS value to measure (repeatable; default: all)")
    args = parser.parse_args()
    print("| XLA_FLAGS | forward ms | weight gradient ms | input gradient ms |\n|---|---|---|---|")
    for flags in args.flags or FLAG_SETS:
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env)
        if result.returncode:
            print(f"| `{flags}` | failed: {result.stderr.strip().splitlines()[-1]} | | |")
            continue
        forward, weights, inputs = map(float, result.stdout.split())
        print(f"| `{flags or '(default)'}` | {forward:.1f} | {weights:.1f} | {inputs:.1f} |")
        print(f"RESULT cpu_conv_weight_grad_ms[{flags or 'default'}] {weights:.1f} ms")


if __name__ == "__main__":
    main()
