"""Start-up cost, each run a fresh process as a user's command is, without the persistent compilation cache and
then twice with an empty one (the first run fills it, the second reuses it):

1. ``open``: an r50 ``.keras`` loaded and run once on 2 images;
2. ``eval``: ``keras-insightface eval`` of that model on a 20-image pack, against the same model exported to ONNX
   (issue 18's target: the ``.keras`` eval at most 2x the ONNX eval);
3. ``train``: the demo configuration (``keras-insightface demo``'s options on its generated dataset) until its
   first training step ends (target: the second run at most 1/3 of the first).

    python bench/startup.py                      # all three, r50
    python bench/startup.py --only eval --model r18_tiny

Prints tables and one ``RESULT <name> <seconds> s`` line per measurement (wall clock of the whole process).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN = """
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
CLI = "import sys; from keras_insightface.cli import main; sys.exit(main(sys.argv[1:]))"
FIRST_STEP = """
import json, os, sys, time
start = time.perf_counter()
import keras
from keras_insightface.cli.train import DEMO_PRESET, DEMO_STAGES, build_schedule
from keras_insightface.training.config import TrainConfig, schedule
from keras_insightface.training.train import Train


class FirstStep(keras.callbacks.Callback):
    seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if FirstStep.seconds is None:
            FirstStep.seconds = time.perf_counter() - start
        self.model.stop_training = True


train = {**DEMO_PRESET, "data_path": sys.argv[1], "eval_paths": [sys.argv[2]], "checkpoint_dir": sys.argv[3],
         "verbose": 0}
config = TrainConfig.from_dict({"train": train, "stage": build_schedule(**DEMO_STAGES)})
trainer = Train(**config.train_kwargs())
made = time.perf_counter() - start
trainer.train(schedule(config.stages)[:1], callbacks=[FirstStep()])
trainer.close()
print(json.dumps({"setup": made, "first_step": FirstStep.seconds}))
"""


def _env(extra):
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "KERAS_INSIGHTFACE_"))}
    return {**base, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT / "src"), **extra}


def _run(code, args, env):
    """``(seconds of the whole process, its last stdout line)``."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            env=_env(env))
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"bench/startup.py: {args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return seconds, (result.stdout.strip().splitlines() or [""])[-1]


def _cache_runs(folder, name):
    cache = {"XDG_CACHE_HOME": str(Path(folder) / f"cache_{name}")}
    return [("no_cache", {"KERAS_INSIGHTFACE_COMPILATION_CACHE": "0"}), ("cache_first", cache),
            ("cache_second", cache)]


def bench_open(folder, model_path, model):
    print(f"\n| open ({model}) | process s | load s | first predict s |\n|---|---|---|---|")
    for name, env in _cache_runs(folder, "open"):
        seconds, line = _run(OPEN, [model_path], env)
        times = json.loads(line)
        print(f"| {name} | {seconds:.1f} | {times['load']:.1f} | {times['predict']:.1f} |")
        print(f"RESULT open_{name} {seconds:.2f} s")


def _pack(path, count=20):
    """A 20-image pack (5 genuine, 5 impostor pairs) of generated faces."""
    from keras_insightface.data.binpack import write_bin
    from keras_insightface.demo.synthetic_faces import render_faces, sample_identities

    import numpy as np
    import simplejpeg

    traits = sample_identities(count, seed=5)
    faces = render_faces(traits, list(range(count)), seed=6)
    images = [simplejpeg.encode_jpeg(np.ascontiguousarray(face), quality=90) for face in faces]
    write_bin(path, images, [True] * 5 + [False] * 5)


def bench_eval(folder, model_path, model):
    from keras_insightface.export import export_model

    pack, onnx_path = Path(folder) / "pack20.bin", Path(folder) / f"{model}.onnx"
    _pack(pack)
    export_model(str(model_path), str(onnx_path), format="onnx", verify=False)
    print(f"\n| eval ({model}, 20 images) | .keras s | .onnx s | ratio |\n|---|---|---|---|")
    results = {}
    for name, env in _cache_runs(folder, "eval"):
        keras_s, _ = _run(CLI, ["eval", "-m", model_path, "--eval", pack], env)
        onnx_s, _ = _run(CLI, ["eval", "-m", onnx_path, "--eval", pack], env)
        results[name] = keras_s / onnx_s
        print(f"| {name} | {keras_s:.1f} | {onnx_s:.1f} | {keras_s / onnx_s:.2f} |")
        print(f"RESULT eval_keras_{name} {keras_s:.2f} s\nRESULT eval_onnx_{name} {onnx_s:.2f} s")
    return results


def bench_train(folder):
    from keras_insightface.demo.synthetic import generate_dataset

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "keras_insightface",
                         "synthetic")
    paths = generate_dataset(cache, seed=0)  # the demo's dataset (kept in the user's cache as `demo` keeps it)
    print("\n| train (demo configuration) | process s to the first step | of which set-up s |\n|---|---|---|")
    firsts = {}
    for index, (name, env) in enumerate(_cache_runs(folder, "train")):
        out = Path(folder) / f"train_{index}"
        seconds, line = _run(FIRST_STEP, [paths["train"], paths["val"], out], env)
        times = json.loads(line)
        firsts[name] = times["first_step"]
        print(f"| {name} | {times['first_step']:.1f} | {times['setup']:.1f} |")
        print(f"RESULT train_first_step_{name} {times['first_step']:.2f} s")
    return firsts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="r50", help="buildin_models name (arcface_torch preset) for open / eval")
    parser.add_argument("--only", choices=["open", "eval", "train"], help="one measurement (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / f"{args.model}.keras"
        subprocess.run([sys.executable, "-c", "import sys, keras_insightface as k; k.buildin_models(sys.argv[1], "
                        "weights=None, preset='arcface_torch').save(sys.argv[2])", args.model, str(model_path)],
                       check=True, env=_env({"KERAS_INSIGHTFACE_COMPILATION_CACHE": "0"}))
        if args.only in (None, "open"):
            bench_open(folder, model_path, args.model)
        if args.only in (None, "eval"):
            ratios = bench_eval(folder, model_path, args.model)
            print(f"RESULT eval_keras_over_onnx {ratios['cache_second']:.2f} x (target <= 2)")
        if args.only in (None, "train"):
            firsts = bench_train(folder)
            print(f"RESULT train_second_over_first {firsts['cache_second'] / firsts['cache_first']:.2f} x "
                  "(target <= 0.33)")


if __name__ == "__main__":
    main()
