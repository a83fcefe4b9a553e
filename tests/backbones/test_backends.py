"""The same weights give the same embeddings on the JAX, PyTorch and TensorFlow backends.

CI checks one backbone per family; ``KI_ALL_BACKBONES=1`` checks every registered backbone. PyTorch and
TensorFlow are an optional extra (``pip install -e .[compat]``); without one, its test is skipped with a reason.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backbones.backend_outputs import build

from keras_insightface.backbones import list_backbones  # noqa: E402

# One per family, the cheapest member of each (keras.applications-based: mobilenetv3_small).
REPRESENTATIVE = ["r18_tiny", "resnet50v2", "mobilefacenet", "mobilenetv3_small", "ghostnet", "vargfacenet", "botnet50", "vit_t"]
BACKBONES = list_backbones() if os.environ.get("KI_ALL_BACKBONES") == "1" else REPRESENTATIVE
MODULES = {"torch": "torch", "tensorflow": "tensorflow"}


def _randomise_batchnorm(model, rng):
    """Non-trivial BN statistics and affine weights, so every normalisation path is exercised."""
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = []
            for weight in layer.weights:
                shape = weight.shape
                if "variance" in weight.path:
                    weights.append(rng.uniform(0.5, 1.5, shape))
                elif "gamma" in weight.path:  # <= 1, so 100+ layers deep activations stay in float32's comfort zone
                    weights.append(rng.uniform(0.5, 1.0, shape))
                else:
                    weights.append(rng.normal(0, 0.1, shape))
            layer.set_weights(weights)


@pytest.fixture(scope="module")
def jax_outputs(tmp_path_factory):
    """Weights (random, with non-trivial BN statistics) and JAX embeddings, shared by the backend tests."""
    out_dir = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    np.save(out_dir / "inputs.npy", inputs)
    expected = {}
    for name in BACKBONES:
        model = build(name)
        _randomise_batchnorm(model, rng)
        model.save_weights(out_dir / f"{name}.weights.h5")
        expected[name] = model.predict(inputs, verbose=0)  # one compiled forward: faster than op by op on JAX
    return out_dir, expected


@pytest.mark.parametrize("backend", sorted(MODULES))
def test_other_backends_agree_with_jax(jax_outputs, backend):
    if importlib.util.find_spec(MODULES[backend]) is None:
        pytest.skip(f"{backend} not installed (pip install -e .[compat])")
    out_dir, expected = jax_outputs
    script = Path(__file__).with_name("backend_outputs.py")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(Path(__file__).parents[2])}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    subprocess.run([sys.executable, str(script), str(out_dir), *BACKBONES], env=env, check=True, timeout=1800)
    errors = {}
    for name in BACKBONES:
        got = np.load(out_dir / f"{name}.{backend}.npy")
        scale = np.abs(expected[name]).max()
        errors[name] = float(np.abs(got - expected[name]).max() / scale) if scale > 0 else float("inf")
    assert {name: error for name, error in errors.items() if not error < 1e-4} == {}, backend
