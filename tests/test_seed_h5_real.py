"""The seed's own ``.h5`` files (written by Keras_insightface with TF-Keras 2, ``../shared/fixtures/seed_h5``) load
into Keras 3 and reproduce the embeddings and cosines the seed computed for the same 20 real faces.

The expected arrays were computed by the seed's code in TF-Keras 2 (see the folder's README): this is a check
against a result this project did not write. Our loaded models take RGB 0..255 (the seed's normalisation is
inserted as the first layer); ``normalize_inside=False`` gives the seed's own input convention.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from keras_insightface.saving import split_full_model
from keras_insightface.seed_h5 import load_seed_h5

SEED_H5 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "seed_h5"
FILES = ["mobilefacenet_gdc512", "mobilefacenet_e256", "ghostnet_gdc512", "mobilefacenet_gdc512_arcface100"]


def _relative(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.fixture
def seed_dir():
    if not SEED_H5.is_dir():
        pytest.skip(f"seed .h5 fixtures not found at {SEED_H5} (../shared is only beside a project checkout)")
    return SEED_H5


@pytest.mark.parametrize("name", FILES)
def test_seed_file_reproduces_the_seeds_numbers(seed_dir, name):
    expected = np.load(seed_dir / f"{name}_expected.npz")
    meta = json.loads((seed_dir / f"{name}_meta.json").read_text())
    model = load_seed_h5(seed_dir / f"{name}.h5")
    assert model.count_params() == meta["params"]
    images = expected["images"].astype("float32")
    outputs = np.asarray(model(images, training=False))
    flipped = np.asarray(model(images[:, :, ::-1], training=False))
    if "cosines" in expected:  # the full training model: NormDense cosines, and its embedding layer
        assert _relative(outputs, expected["cosines"]) <= 1e-5
        assert _relative(flipped, expected["cosines_flip"]) <= 1e-5
        basic, head = split_full_model(model)
        assert head.name == "arcface" and tuple(head.kernel.shape) == (512, 100)
        outputs, flipped = (np.asarray(basic(x, training=False)) for x in (images, images[:, :, ::-1]))
    assert _relative(outputs, expected["embeddings"]) <= 1e-5
    assert _relative(outputs + flipped, expected["embeddings_flip_sum"]) <= 1e-5


def test_seed_input_convention_is_one_keyword_away(seed_dir):
    expected = np.load(seed_dir / "mobilefacenet_gdc512_expected.npz")
    raw = load_seed_h5(seed_dir / "mobilefacenet_gdc512.h5", normalize_inside=False)
    normalised = (expected["images"].astype("float32") - 127.5) * 0.0078125
    assert _relative(raw(normalised, training=False), expected["embeddings"]) <= 1e-5
