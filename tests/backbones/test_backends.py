"""The same weights give the same embeddings on the JAX and PyTorch backends (a representative subset).

PyTorch is an optional extra (``pip install -e .[compat]``); without it the test is skipped with a reason.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backbones.backend_outputs import build

REPRESENTATIVE = ["r18_tiny", "mobilefacenet", "ghostnet", "botnet50", "vit_t"]


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
                elif "gamma" in weight.path:
                    weights.append(rng.uniform(0.5, 1.5, shape))
                else:
                    weights.append(rng.normal(0, 0.1, shape))
            layer.set_weights(weights)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed (pip install -e .[compat])")
def test_jax_and_torch_backends_agree(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    np.save(tmp_path / "inputs.npy", inputs)
    expected = {}
    for name in REPRESENTATIVE:
        model = build(name)
        _randomise_batchnorm(model, rng)
        model.save_weights(tmp_path / f"{name}.weights.h5")
        expected[name] = np.asarray(model(inputs, training=False))
    script = Path(__file__).with_name("backend_outputs.py")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, str(script), str(tmp_path), *REPRESENTATIVE], env=env, check=True, timeout=600)
    for name in REPRESENTATIVE:
        got = np.load(tmp_path / f"{name}.torch.npy")
        scale = np.abs(expected[name]).max()
        assert scale > 0 and np.abs(got - expected[name]).max() / scale < 1e-4, name
