"""Package surface: JAX chosen as the default backend on import, the seed's public names, the console script."""

import os
import subprocess
import sys
from importlib import metadata

import keras_insightface


def _backend_after_import(env_backend):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    code = "import os, keras_insightface; print(os.environ['KERAS_BACKEND'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_import_selects_jax_unless_chosen():
    assert _backend_after_import(None).strip() == "jax"
    assert _backend_after_import("torch").strip() == "torch"


def test_public_names_and_console_script():
    for name in ("buildin_models", "NormDense", "ArcfaceLoss", "CosFaceLoss", "Train", "eval_callback", "hist_plot_split"):
        assert callable(getattr(keras_insightface, name)), name
    for name in keras_insightface._PUBLIC:  # every lazily exported name resolves
        assert getattr(keras_insightface, name) is not None, name
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts["keras-insightface"] == "keras_insightface.cli:main"
