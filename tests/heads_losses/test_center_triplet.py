"""Center and triplet losses against independent numpy float64 loops: values, gradients, center state, saving."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.triplet import TRIPLET_LOSSES, TripletLoss, get_triplet_loss, offline_triplet

RNG = np.random.default_rng(0)
LABELS = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4])  # class 2 appears once
EMB = RNG.normal(size=(10, 8)).astype("float32")
SAME_LABELS = np.zeros(6, "int64")  # nobody has a negative
SAME_EMB = RNG.normal(size=(6, 8)).astype("float32")


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def np_center_step(centers, x, labels, alpha, cosine):
    """Per-sample loss against the current centers, then the seed's update (divide by the class count + 1)."""
    x = normalize(x) if cosine else x
    loss = []
    for i, label in enumerate(labels):
        center = centers[label]
        loss.append(1 - x[i] @ normalize(center) if cosine else 0.5 * np.sum((x[i] - center) ** 2))
    new = centers.copy()
    for label in np.unique(labels):
        members = x[labels == label]
        new[label] = centers[label] - alpha * np.sum(centers[label] - members, axis=0) / (len(members) + 1)
    return np.array(loss), new


def np_triplet(kind, labels, emb, alpha):
    """Loop implementations of every triplet kind, written from their definitions."""
    e = normalize(emb.astype("float64"))
    if kind == "offline":
        triples = e.reshape(-1, 3, e.shape[-1])
        return np.array([max(np.sum((a - p) ** 2) - np.sum((a - n) ** 2) + alpha, 0) for a, p, n in triples])
    batch = len(labels)
    sims = e @ e.T
    out = []
    for i in range(batch):
        pos = [j for j in range(batch) if labels[j] == labels[i]]
        neg = [j for j in range(batch) if labels[j] != labels[i]]
        others = [j for j in pos if j != i]
        if kind == "batch_hard_cosine":
            hard_neg = max(sims[i, neg]) if neg else -1.0
            out.append(max(hard_neg - min(sims[i, pos]) + alpha, 0))
        elif kind == "batch_hard_euclidean":
            dist = np.linalg.norm(e[i] - e, axis=-1)
            hard_pos = max(dist[others]) if others else 0.0
            hard_neg = min(dist[neg]) if neg else 2.0
            out.append(max(hard_pos - hard_neg + alpha, 0))
        elif kind == "arc_batch_hard":
            theta = np.arccos(np.clip(sims[i], -1 + 1e-7, 1 - 1e-7))
            hard_pos = max(theta[others]) if others else 0.0
            hard_neg = min(theta[neg]) if neg else np.pi
            out.append(max(hard_pos - hard_neg + alpha, 0))
        elif kind == "batch_all":
            pos_term = np.mean(1 - sims[i, pos])
            hard_pos = min(sims[i, pos])
            valid = [j for j in neg if hard_pos - sims[i, j] < alpha]
            out.append(pos_term + sum(sims[i, valid]) / (len(valid) + 1))
    return np.array(out)


def numeric_grad(fn, x, h=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        grad[index] = (fn(x + step) - fn(x - step)) / (2 * h)
    return grad


# ---------------------------------------------------------------- center loss


@pytest.mark.parametrize("cosine", [False, True])
def test_center_loss_three_training_steps_match_numpy(cosine):
    layer = CenterLoss(num_classes=7, alpha=0.3, cosine=cosine)
    centers = np.zeros((7, 8))
    for step in range(3):
        x = RNG.normal(size=(10, 8)).astype("float32")
        labels = RNG.permutation(LABELS)
        want_loss, centers = np_center_step(centers, x.astype("float64"), labels, 0.3, cosine)
        np.testing.assert_allclose(np.asarray(layer([x, labels], training=True)), want_loss, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(layer.centers), centers, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(layer.centers)[[5, 6]] == 0)  # classes never seen stay at zero


def test_center_loss_without_training_leaves_centers():
    layer = CenterLoss(num_classes=5)
    layer([EMB, LABELS], training=True)
    before = np.asarray(layer.centers).copy()
    for training in (False, None):
        loss = layer([EMB, LABELS], training=training)
        np.testing.assert_allclose(np.asarray(loss), np_center_step(before, EMB, LABELS, 0.5, False)[0], rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer.centers), before)
    assert not layer.trainable_weights and [w.name for w in layer.non_trainable_weights] == ["centers"]


def test_center_loss_gradient_reaches_embedding_only():
    layer = CenterLoss(num_classes=5)
    layer.build([EMB.shape, LABELS.shape])
    centers = RNG.normal(size=(5, 8)).astype("float32")
    layer.centers.assign(centers)

    def total(x, non_trainable):
        loss, new = layer.stateless_call([], non_trainable, [x, LABELS], training=True)
        return jnp.sum(loss), new

    (_, new), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(EMB), [jnp.asarray(centers)])
    np.testing.assert_allclose(np.asarray(grad), EMB - centers[LABELS], rtol=1e-5, atol=1e-6)  # d/dx = x - c_y
    np.testing.assert_allclose(np.asarray(new[0]), np_center_step(centers, EMB, LABELS, 0.5, False)[1], atol=1e-5)


def test_cosine_center_loss_gradient_matches_finite_differences():
    layer = CenterLoss(num_classes=5, cosine=True)
    layer.build([EMB.shape, LABELS.shape])
    centers = RNG.normal(size=(5, 8)).astype("float32")
    layer.centers.assign(centers)
    grad = jax.grad(lambda x: jnp.sum(layer([x, LABELS], training=False)))(jnp.asarray(EMB))
    centers64 = centers.astype("float64")
    want = numeric_grad(lambda x: np_center_step(centers64, x, LABELS, 0.5, True)[0].sum(), EMB.astype("float64"))
    np.testing.assert_allclose(np.asarray(grad), want, atol=1e-4)


def test_center_loss_update_inside_jit():
    layer = CenterLoss(num_classes=5, alpha=0.5)
    layer.build([EMB.shape, LABELS.shape])
    step = jax.jit(lambda nt, x, y: layer.stateless_call([], nt, [x, y], training=True))
    centers = np.zeros((5, 8))
    non_trainable = [v.value for v in layer.non_trainable_variables]
    for _ in range(2):
        loss, non_trainable = step(non_trainable, EMB, LABELS)
        want_loss, centers = np_center_step(centers, EMB.astype("float64"), LABELS, 0.5, False)
        np.testing.assert_allclose(np.asarray(loss), want_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(non_trainable[0]), centers, rtol=1e-5, atol=1e-5)


def test_center_loss_updates_during_fit():
    embedding, labels = keras.Input((8,)), keras.Input((), dtype="int32")
    loss = CenterLoss(num_classes=5, name="center")([keras.layers.Dense(8)(embedding), labels])
    model = keras.Model([embedding, labels], loss)
    model.compile("sgd", loss=lambda _, per_sample: per_sample)
    model.fit([EMB, LABELS], np.zeros(10), batch_size=5, epochs=1, verbose=0)
    centers = np.asarray(model.get_layer("center").centers)
    assert np.all(np.abs(centers[[0, 1, 3, 4]]).sum(axis=1) > 0)


def test_center_loss_centers_survive_save_and_load(tmp_path):
    embedding, labels = keras.Input((8,)), keras.Input((), dtype="int32")
    model = keras.Model([embedding, labels], CenterLoss(5, alpha=0.25, cosine=True, name="center")([embedding, labels]))
    model([EMB, LABELS], training=True)
    model.save(tmp_path / "center.keras")
    loaded = keras.saving.load_model(tmp_path / "center.keras")
    layer = loaded.get_layer("center")
    assert (layer.num_classes, layer.alpha, layer.cosine) == (5, 0.25, True)
    assert np.abs(np.asarray(layer.centers)).sum() > 0
    np.testing.assert_array_equal(np.asarray(layer.centers), np.asarray(model.get_layer("center").centers))


def test_center_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes=0"):
        CenterLoss(0)
    with pytest.raises(ValueError, match="alpha=1.5"):
        CenterLoss(3, alpha=1.5)


# ---------------------------------------------------------------- triplet losses

BATCH_KINDS = ["batch_hard_cosine", "batch_hard_euclidean", "batch_all", "arc_batch_hard"]


@pytest.mark.parametrize("kind", BATCH_KINDS)
@pytest.mark.parametrize("labels,emb", [(LABELS, EMB), (SAME_LABELS, SAME_EMB)], ids=["mixed", "no_negative"])
@pytest.mark.parametrize("alpha", [0.35, 1.2])
def test_triplet_matches_numpy(kind, labels, emb, alpha):
    got = np.asarray(get_triplet_loss(kind)(labels, emb, alpha))
    want = np_triplet(kind, labels, emb, alpha)
    assert got.shape == (len(labels),) and (alpha < 1 or want.max() > 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("kind", BATCH_KINDS)
def test_triplet_gradient_matches_finite_differences(kind):
    grad = jax.grad(lambda e: jnp.sum(get_triplet_loss(kind)(LABELS, e, 0.35)))(jnp.asarray(EMB))
    want = numeric_grad(lambda e: np_triplet(kind, LABELS, e, 0.35).sum(), EMB.astype("float64"))
    np.testing.assert_allclose(np.asarray(grad), want, atol=2e-4)


@pytest.mark.parametrize("kind", sorted(TRIPLET_LOSSES))
def test_triplet_gradients_finite_with_duplicated_embeddings(kind):
    labels = np.array([0, 0, 1, 2, 2, 3])
    emb = jnp.asarray(EMB[[0, 0, 0, 1, 1, 2]])  # duplicates within a class and across classes
    grad = jax.grad(lambda e: jnp.sum(get_triplet_loss(kind)(labels, e, 0.35)))(emb)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.isfinite(np.asarray(get_triplet_loss(kind)(labels, emb, 0.35))))


def test_offline_triplet_matches_numpy_and_rejects_partial_triples():
    got = np.asarray(offline_triplet(LABELS[:9], EMB[:9], 0.5))
    want = np_triplet("offline", LABELS[:9], EMB[:9], 0.5)
    assert got.shape == (3,) and want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    with pytest.raises(ValueError, match="B=10"):
        offline_triplet(LABELS, EMB, 0.5)
    with pytest.raises(ValueError, match="B=10"):
        TripletLoss("offline")(LABELS, EMB)


@pytest.mark.parametrize("kind", sorted(TRIPLET_LOSSES))
def test_triplet_inside_jit(kind):
    labels, emb = LABELS[:9], EMB[:9]
    fn = get_triplet_loss(kind)
    jitted = jax.jit(lambda y, e: fn(y, e, 0.35))(labels, emb)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(fn(labels, emb, 0.35)), rtol=1e-6, atol=1e-6)


def test_triplet_loss_class_reduces_and_serialises():
    loss = TripletLoss("arc_batch_hard", alpha=0.3, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(LABELS, EMB)), np_triplet("arc_batch_hard", LABELS, EMB, 0.3), atol=1e-5)
    mean = TripletLoss("batch_all", alpha=0.3)(LABELS, EMB)
    np.testing.assert_allclose(float(mean), np_triplet("batch_all", LABELS, EMB, 0.3).mean(), rtol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, TripletLoss)
    assert (restored.kind, restored.alpha, restored.reduction) == ("arc_batch_hard", 0.3, None)
    with pytest.raises(ValueError, match="'hardest'"):
        TripletLoss("hardest")


# ---------------------------------------------------------------- other backends

BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras_insightface, keras
from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.distillation import DistillCosineLoss, DistillEuclideanLoss, DistillKLDivergence
from keras_insightface.losses.triplet import TRIPLET_LOSSES
data = {k: np.array(v, dtype="int64" if k == "labels" else "float32") for k, v in json.loads(sys.argv[1]).items()}
out = {k: np.asarray(keras.ops.convert_to_numpy(fn(data["labels"], data["emb"], 0.35))).tolist()
       for k, fn in TRIPLET_LOSSES.items()}
layer = CenterLoss(5, alpha=0.5)
for _ in range(2):
    out["center"] = keras.ops.convert_to_numpy(layer([data["emb"], data["labels"]], training=True)).tolist()
out["centers"] = keras.ops.convert_to_numpy(layer.centers).tolist()
for cls in (DistillCosineLoss, DistillEuclideanLoss, DistillKLDivergence):
    loss = cls(reduction=None)
    out[loss.name] = keras.ops.convert_to_numpy(loss(data["teacher"], data["emb"])).tolist()
print(json.dumps(out))
"""


def run_losses(backend, data):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = str(Path(__file__).parents[2] / "src")
    args = [sys.executable, "-c", BACKEND_SCRIPT, json.dumps({k: v.tolist() for k, v in data.items()})]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def jax_results():
    teacher = EMB[::-1] + RNG.normal(size=EMB.shape).astype("float32")
    teacher[3] = np.nan
    data = {"labels": LABELS[:9], "emb": EMB[:9], "teacher": teacher[:9]}
    return data, run_losses("jax", data)


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_other_backends_agree_with_jax(backend, jax_results):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed (pip install -e .[compat])")
    data, want = jax_results
    got = run_losses(backend, data)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(np.array(got[key]), np.array(want[key]), rtol=1e-4, atol=1e-5, err_msg=key)
