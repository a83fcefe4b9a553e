"""Shared test helpers: the real-faces fixture folder and small generated datasets."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# One XLA compilation cache for every test process (xdist workers and the runs they start): building a model
# compiles a small random-initialiser program per weight shape (~0.25 s each on CPU), the same ones in every test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import simplejpeg  # noqa: E402

REAL_FACES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real_faces"


@pytest.fixture
def real_faces():
    """``../shared/fixtures/real_faces`` beside the checkout; skipped when the shared folder is absent."""
    if not REAL_FACES.is_dir():
        pytest.skip(f"real-face fixtures not found at {REAL_FACES} (../shared is only beside a project checkout)")
    return REAL_FACES


@pytest.fixture
def structure_only():
    """For tests of a model's structure (layers, parameter counts, settings), which never look at weight values:
    weights start as zeros instead of running their random initialisers, each an XLA program compiled for its
    weight shape (most of a model build's time with an empty compilation cache, as on a clean CI clone)."""
    from keras_insightface.file_weights import weights_from_file

    with weights_from_file():
        yield


def jpeg(image, quality=90):
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image, dtype=np.uint8), quality=quality)


def class_images(num_classes, per_class, seed=0, size=112):
    """Noisy copies of one random pattern per class: a dataset a tiny model separates in a few steps."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (num_classes, 8, 8, 3)).repeat(size // 8, 1).repeat(size // 8, 2)
    samples = []
    for label in range(num_classes):
        for _ in range(per_class):
            noisy = patterns[label] + rng.normal(0, 20, patterns[label].shape)
            samples.append((jpeg(np.clip(noisy, 0, 255)), label))
    return samples

