"""Verification metrics against hand-computed values, and flip-summed embedding of a pack."""

import keras
import numpy as np
import pytest

from keras_insightface.data.binpack import write_bin
from keras_insightface.evaluation.verification import (
    best_threshold_accuracy,
    embed_images,
    evaluate_bin,
    kfold_accuracy,
    VerificationSet,
    pair_scores,
)
from keras_insightface.errors import DataError
from tests.conftest import jpeg


def test_seed_metric_by_hand():
    genuine = [0.9, 0.8, 0.65, 0.62, 0.58, 0.3]
    impostor = [0.05 + 0.02 * i for i in range(18)] + [0.6, 0.7]  # 20 impostors: candidates 0.6 and 0.7
    scores = np.array(genuine + impostor)
    issame = np.array([True] * len(genuine) + [False] * len(impostor))
    order = np.random.default_rng(1).permutation(len(scores))
    accuracy, threshold = best_threshold_accuracy(scores[order], issame[order])
    # at 0.6: genuine above = 4 (0.9, 0.8, 0.65, 0.62), impostors at or below = 19 -> 23 / 26
    # at 0.7: genuine above = 2, impostors at or below = 20 -> 22 / 26
    assert threshold == pytest.approx(0.6)
    assert accuracy == pytest.approx(23 / 26)


def _unit_pairs(squared_distances):
    angles = np.arccos(1 - np.asarray(squared_distances) / 2)
    first = np.stack([np.ones_like(angles), np.zeros_like(angles)], axis=1)
    second = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return first, second


def test_insightface_kfold_by_hand():
    # 20 pairs -> 10 folds of 2; pairs alternate genuine (d=0.105) and impostor (d=2.0),
    # except genuine pair 6 (fold 3) which is far apart (d=3.0).
    issame = np.array([True, False] * 10)
    distances = np.where(issame, 0.105, 2.0)
    distances[6] = 3.0
    first, second = _unit_pairs(distances)
    mean, std = kfold_accuracy(first * 3.0, second, issame)  # scale must not matter: vectors are normalised
    # every fold's threshold (chosen on the other nine) is 0.11; fold 3 gets 1 of 2 right, the rest 2 of 2
    assert mean == pytest.approx(0.95)
    assert std == pytest.approx(0.15)


def test_kfold_needs_enough_pairs_and_seed_metric_needs_both_kinds():
    with pytest.raises(ValueError, match="at least 10 pairs"):
        kfold_accuracy(np.ones((3, 2)), np.ones((3, 2)), [True, False, True])
    with pytest.raises(ValueError, match="genuine and impostor"):
        best_threshold_accuracy([0.1, 0.2], [True, True])


def _linear_model(weights):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], use_bias=False)
    model = keras.Model(inputs, dense(x))
    dense.set_weights([weights])
    return model


def test_embed_images_flip_sum_and_padding():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(48, 3)).astype("float32")
    images = rng.integers(0, 256, (5, 4, 4, 3)).astype("uint8")
    model = _linear_model(weights)
    flat = images.astype("float32").reshape(5, -1)
    flipped = images[:, :, ::-1].astype("float32").reshape(5, -1)
    np.testing.assert_allclose(embed_images(model, images, batch_size=4, flip=False), flat @ weights, rtol=1e-4)
    np.testing.assert_allclose(
        embed_images(model, images, batch_size=4, flip=True), flat @ weights + flipped @ weights, rtol=1e-4
    )


def test_pair_scores_are_cosines():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(pair_scores(emb), [1.0, np.sqrt(0.5)])


def test_evaluate_bin_on_a_written_pack(tmp_path):
    rng = np.random.default_rng(3)
    bases = rng.integers(0, 256, (12, 4, 4, 3))
    images, issame = [], []
    for i in range(12):  # genuine pairs: two noisy copies; impostor pairs: two different bases
        same = i % 2 == 0
        a, b = bases[i], bases[i] if same else bases[(i + 5) % 12]
        images += [jpeg(np.clip(a + rng.normal(0, 3, a.shape), 0, 255)), jpeg(np.clip(b + rng.normal(0, 3, b.shape), 0, 255))]
        issame.append(same)
    write_bin(tmp_path / "toy.bin", images, issame)
    model = _linear_model(rng.normal(size=(48, 16)).astype("float32"))
    result = evaluate_bin(model, tmp_path / "toy.bin", batch_size=8)
    assert set(result) == {"accuracy", "threshold", "kfold_mean", "kfold_std"}
    assert result["accuracy"] == 1.0  # random projections keep near-identical images close


def test_too_small_or_one_sided_pack_is_rejected_up_front(tmp_path):
    images = [jpeg(np.zeros((8, 8, 3)))] * 24
    write_bin(tmp_path / "few.bin", images[:8], [True, False] * 2)
    with pytest.raises(DataError, match="few.bin: 4 pairs .2 genuine.; verification needs at least 10 pairs"):
        VerificationSet(tmp_path / "few.bin")
    write_bin(tmp_path / "same.bin", images, [True] * 12)
    with pytest.raises(DataError, match="same.bin: 12 pairs .12 genuine."):
        VerificationSet(tmp_path / "same.bin")
