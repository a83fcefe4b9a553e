"""Start-up cost of opening a model: an r50 ``.keras`` loaded and run once, in fresh processes, without the
persistent compilation cache, then twice with an empty one (the first run fills it, the second reuses it).

    python bench/startup.py                 # r50 (arcface_torch preset), batch 2
    python bench/startup.py --model r18_tiny

Prints one ``RESULT startup_<run> <seconds> s`` line per run with the load and first-predict seconds.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
start = time.perf_counter()
import numpy as np
from keras_insightface.saving import load_model
imported = time.perf_counter()
model = load_model(sys.argv[1])
loaded = time.perf_counter()
model.predict_on_batch(np.zeros((2, *model.input_shape[1:]), "float32"))
done = time.perf_counter()
print(json.dumps({"import": imported - start, "load": loaded - imported, "predict": done - loaded}))
"""


def timed_run(path, env):
    """Seconds of import, load and first predict in a fresh process with ``env``."""
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "KERAS_INSIGHTFACE_"))}
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True,
                            env={**base, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT / "src"), **env})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="r50", help="buildin_models name (arcface_torch preset)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{args.model}.keras"
        subprocess.run([sys.executable, "-c", "import sys, keras_insightface as k; k.buildin_models(sys.argv[1], "
                        "weights=None, preset='arcface_torch').save(sys.argv[2])", args.model, str(path)],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                                        "KERAS_INSIGHTFACE_COMPILATION_CACHE": "0"})
        cache = {"XDG_CACHE_HOME": str(Path(folder) / "cache")}
        runs = [("no_cache", {"KERAS_INSIGHTFACE_COMPILATION_CACHE": "0"}), ("cache_first", cache),
                ("cache_second", cache)]
        print(f"| run ({args.model}) | import s | load s | first predict s |\n|---|---|---|---|")
        for name, env in runs:
            times = timed_run(path, env)
            print(f"| {name} | {times['import']:.1f} | {times['load']:.1f} | {times['predict']:.1f} |")
            print(f"RESULT startup_{name} {times['load'] + times['predict']:.2f} s")


if __name__ == "__main__":
    main()
