"""Wall time of test files under XLA CPU flag sets: what the suite's time is made of (compiling tiny programs more
than running them) and which flags shorten it.

Each flag set runs the same pytest selection in a fresh process with an empty JAX compilation cache (as a clean
CI clone has), one worker, and prints the wall time and the pytest outcome line.

    python bench/test_flags.py                                   # the default files, each flag set below
    python bench/test_flags.py tests/training/test_train.py --flags= --flags=--xla_backend_optimization_level=0

Prints one table row and one ``RESULT`` line per flag set.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("tests/training/test_train.py", "tests/training/test_stages.py")
FLAG_SETS = ("", "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
             "--xla_cpu_use_thunk_runtime=false")


def run(files, flags):
    """(seconds, pytest's last line) of ``files`` under ``flags`` with a cold compilation cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PLATFORMS": "cpu"}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT,
                                env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    return seconds, lines[-1] if lines else result.stderr.strip()[-200:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", default=list(FILES), help="test files or node ids (default: %(default)s)")
    parser.add_argument("--flags", action="append", help="an XLA_FLAGS value to measure (repeatable; default: all)")
    args = parser.parse_args()
    print(f"files: {' '.join(args.files)}\n\n| XLA_FLAGS | wall s | pytest |\n|---|---|---|")
    for flags in args.flags if args.flags is not None else FLAG_SETS:
        seconds, outcome = run(args.files, flags)
        print(f"| `{flags or '(default)'}` | {seconds:.1f} | {outcome} |", flush=True)
        print(f"RESULT test_wall_s[{flags or 'default'}] {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
