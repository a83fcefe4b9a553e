"""Shared fixtures of the training tests."""

import pytest

from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from tests.conftest import class_images


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    samples = class_images(8, 8, seed=0)
    samples[13] = (samples[13][0][:100], samples[13][1])  # one truncated JPEG: replaced and reported each epoch
    write_insightface_rec(root / "rec", samples, 8)
    pairs = class_images(8, 2, seed=1)  # two fresh images per class: pairs (same, different) alternate
    images, issame = [], []
    for i in range(8):
        images += [pairs[2 * i][0], pairs[2 * i + 1][0]]
        issame.append(True)
        images += [pairs[2 * i][0], pairs[(2 * i + 2) % 16][0]]
        issame.append(False)
    write_bin(root / "tiny_val.bin", images, issame)
    return root
