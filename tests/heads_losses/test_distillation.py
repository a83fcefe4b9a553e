"""Distillation losses against numpy float64: values, non-finite teachers, KL gradients, projection, jit."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from keras_insightface.losses.distillation import (
    DistillCosineLoss,
    DistillEuclideanLoss,
    DistillKLDivergence,
    EmbeddingProjection,
    projection_for,
)

RNG = np.random.default_rng(1)
STUDENT = RNG.normal(size=(10, 16)).astype("float32")
TEACHER = (STUDENT + RNG.normal(size=(10, 16))).astype("float32")
BAD_TEACHER = TEACHER.copy()
BAD_TEACHER[2] = np.nan  # fp16 overflow of a whole row
BAD_TEACHER[5, :3] = [np.inf, -np.inf, np.nan]  # partly broken row: the finite rest still counts
BAD_TEACHER[7] = 0.0
COS_T = np.tanh(RNG.normal(size=(10, 12))).astype("float32")
COS_S = np.tanh(RNG.normal(size=(10, 12))).astype("float32")


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def np_embedding_loss(teacher, student, kind):
    out = []
    for t, s in zip(teacher.astype("float64"), student.astype("float64")):
        t = np.where(np.isfinite(t), t, 0.0)
        if not np.any(t):
            out.append(0.0)
        elif kind == "cosine":
            out.append(1 - t @ s / np.linalg.norm(t) / np.linalg.norm(s))
        else:
            out.append(np.sum((t / np.linalg.norm(t) - s / np.linalg.norm(s)) ** 2))
    return np.array(out)


def np_kl(teacher, student, scale, temperature):
    def log_softmax(z):
        z = z * scale / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(teacher.astype("float64")), log_softmax(student.astype("float64"))
    kl = temperature**2 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return np.where(np.all(np.isfinite(teacher), axis=-1), kl, 0.0)


@pytest.mark.parametrize("cls,kind", [(DistillCosineLoss, "cosine"), (DistillEuclideanLoss, "euclidean")])
@pytest.mark.parametrize("teacher", [TEACHER, BAD_TEACHER], ids=["clean", "non_finite"])
def test_embedding_losses_match_numpy(cls, kind, teacher):
    got = np.asarray(cls(reduction=None)(teacher, STUDENT))
    want = np_embedding_loss(teacher, STUDENT, kind)
    assert np.all(np.isfinite(got)) and want.min() >= 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(cls()(teacher, STUDENT)), want.mean(), rtol=1e-5)


@pytest.mark.parametrize("cls", [DistillCosineLoss, DistillEuclideanLoss])
def test_non_finite_teacher_rows_give_finite_gradients(cls):
    loss = cls(reduction=None)
    grad = jax.grad(lambda s: jnp.sum(loss(BAD_TEACHER, s)))(jnp.asarray(STUDENT))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[[2, 7]] == 0)  # nothing finite left in the teacher: no signal
    assert np.any(np.asarray(grad)[5] != 0)


def test_embedding_losses_reject_mismatched_sizes():
    with pytest.raises(ValueError, match="teacher_dim=16, student_dim=8"):
        DistillCosineLoss()(TEACHER, STUDENT[:, :8])


@pytest.mark.parametrize("scale,temperature", [(64.0, 1.0), (64.0, 4.0), (16.0, 2.0)])
def test_kl_divergence_matches_numpy_and_finite_differences(scale, temperature):
    loss = DistillKLDivergence(scale=scale, temperature=temperature, reduction=None)
    want = np_kl(COS_T, COS_S, scale, temperature)
    assert want.min() > 0
    np.testing.assert_allclose(np.asarray(loss(COS_T, COS_S)), want, rtol=1e-4, atol=1e-4)
    grad = np.asarray(jax.grad(lambda s: jnp.sum(loss(COS_T, s)))(jnp.asarray(COS_S)))
    student, h = COS_S.astype("float64"), 1e-6
    numeric = np.zeros_like(student)
    for index in np.ndindex(student.shape):
        step = np.zeros_like(student)
        step[index] = h
        plus, minus = np_kl(COS_T, student + step, scale, temperature), np_kl(COS_T, student - step, scale, temperature)
        numeric[index] = (plus.sum() - minus.sum()) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)


def test_kl_divergence_skips_non_finite_teacher_rows():
    teacher = COS_T.copy()
    teacher[4, 1] = np.nan
    loss = DistillKLDivergence(reduction=None)
    got = np.asarray(loss(teacher, COS_S))
    np.testing.assert_allclose(got, np_kl(teacher, COS_S, 64.0, 1.0), rtol=1e-4, atol=1e-4)
    assert got[4] == 0
    grad = np.asarray(jax.grad(lambda s: jnp.sum(loss(teacher, s)))(jnp.asarray(COS_S)))
    assert np.all(np.isfinite(grad)) and np.all(grad[4] == 0)


def test_kl_divergence_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature=0"):
        DistillKLDivergence(temperature=0)


def test_projection_only_when_sizes_differ(tmp_path):
    assert projection_for(512, 512) is None
    projection = projection_for(128, 512)
    assert isinstance(projection, EmbeddingProjection) and projection.teacher_dim == 512
    inputs = keras.Input((8,))
    model = keras.Model(inputs, projection_for(8, 16)(inputs))
    assert model.output_shape == (None, 16)
    assert [tuple(w.shape) for w in model.weights] == [(8, 16)]  # bias-free
    model.save(tmp_path / "projection.keras")
    loaded = keras.saving.load_model(tmp_path / "projection.keras")
    np.testing.assert_allclose(loaded.predict(STUDENT[:, :8], verbose=0), model.predict(STUDENT[:, :8], verbose=0))
    with pytest.raises(ValueError, match="student_dim=0"):
        projection_for(0, 8)


@pytest.mark.parametrize("loss", [DistillCosineLoss(), DistillEuclideanLoss(), DistillKLDivergence(32.0, 2.0)])
def test_losses_serialise(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()


def test_distillation_inside_jit():
    losses = [DistillCosineLoss(reduction=None), DistillEuclideanLoss(reduction=None)]
    for loss in losses:
        jitted = jax.jit(lambda t, s: loss(t, s))(BAD_TEACHER, STUDENT)
        np.testing.assert_allclose(np.asarray(jitted), np.asarray(loss(BAD_TEACHER, STUDENT)), rtol=1e-6, atol=1e-6)
    kl = DistillKLDivergence(reduction=None)
    np.testing.assert_allclose(np.asarray(jax.jit(kl)(COS_T, COS_S)), np.asarray(kl(COS_T, COS_S)), rtol=1e-5)
