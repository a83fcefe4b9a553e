"""The margin-softmax family against float64 numpy written from each paper / official code.

Each loss gets its logits, running statistics and extra loss compared with a numpy reference, and its
gradients (jax.grad of ``sum(W * logits) + sum(V * extra)``) compared with central finite differences of the
reference. Running statistics are checked through ``MarginHead`` over several batches, through ``fit``, and
through ``.keras`` / ``save_weights`` round trips.
"""

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

from keras_insightface.heads.margin import MarginHead  # also registers MarginHead for load_model
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.losses.cross_entropy import MarginCrossEntropy
from keras_insightface.losses.margin import (
    MARGIN_LOSSES,
    AdaCosLoss,
    AdaFaceLoss,
    AirFaceLoss,
    ArcfaceLoss,
    ArcfaceLossSimple,
    CosFaceLoss,
    CurricularFaceLoss,
    MagFaceLoss,
    MarginSoftmax,
    SphereFaceLoss,
    get_margin_loss,
    serialize_margin_loss,
)

EPS = 1e-7


def make_batch(seed, batch, classes=6):
    """Cosines in (-0.9, 0.95), labels, norms across MagFace's [10, 110] and past both ends."""
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-0.9, 0.95, (batch, classes))
    labels = rng.integers(0, classes, batch)
    norms = rng.uniform(3.0, 130.0, batch)
    return cos, labels, norms


COS, LABELS, _ = make_batch(1, 8)
LABELS[:] = [0, 1, 2, 3, 4, 5, 0, 3]
NORMS = np.array([5.0, 12.0, 25.0, 40.0, 60.0, 90.0, 105.0, 130.0])
COS[0, 0] = -0.985  # fallback branches; AdaFace: theta + m clipped at pi - eps (small norm)
COS[6, 0] = -0.95  # fallback branches
COS[6, 1] = -0.99  # CurricularFace: below cos(theta + m) = -0.984 but above the fallback target -1.19: not hard
COS[7, 3] = -0.99  # fallback branches
COS[5, 5] = 0.96  # AdaFace: theta - m clipped at eps (large norm)
COS[1, 4] = 0.9995  # AdaFace: cosine clipped at 1 - 1e-3


def rows_of(labels):
    return np.arange(len(labels))


def onehot_of(labels, classes):
    return np.eye(classes, dtype=bool)[labels]


# ---------------------------------------------------------------- numpy references (float64)
# Each takes (cos, labels, state, norms, training) and returns (logits, new_state, extra or None).


def np_arcface(cos, labels, state, norms, training, m1=1.0, m2=0.5, m3=0.0, s=64.0):
    """Combined margin cos(m1*theta + m2) - m3, mirrored to -2(1+m3) - (...) past theta = (pi - m2) / m1."""
    out, rows = cos.copy(), rows_of(labels)
    t = cos[rows, labels]
    value = np.cos(m1 * np.arccos(np.clip(t, -1 + EPS, 1 - EPS)) + m2) - m3
    out[rows, labels] = np.where(t > np.cos((np.pi - m2) / m1), value, -2 * (1 + m3) - value)
    return out * s, state, None


def np_arcface_simple(cos, labels, state, norms, training, m=0.5, s=64.0):
    out, rows = cos.copy(), rows_of(labels)
    t = cos[rows, labels]
    value = t * np.cos(m) - np.sqrt(1 - t**2) * np.sin(m)
    out[rows, labels] = np.where(t > np.cos(np.pi - m), value, -2 - value)
    return out * s, state, None


def np_cosface(cos, labels, state, norms, training, m=0.35, s=64.0):
    out = cos.copy()
    out[rows_of(labels), labels] -= m
    return out * s, state, None


def np_curricular(cos, labels, state, norms, training, m=0.5, s=64.0, t_alpha=0.01):
    """Official CurricularFace: mask = cos > cos(theta + m); t updated (no grad) before it is used."""
    cos, rows = np.clip(cos, -1, 1), rows_of(labels)
    target = cos[rows, labels][:, None]
    cos_theta_m = target * np.cos(m) - np.sqrt(1 - target**2) * np.sin(m)
    final = np.where(target > np.cos(np.pi - m), cos_theta_m, target - np.sin(np.pi - m) * m)
    t = state["t"]
    if training:
        t = target.mean() * t_alpha + (1 - t_alpha) * t
        state = {"t": t}
    out = np.where(cos > cos_theta_m, cos * (t + cos), cos)
    out[rows, labels] = final[:, 0]
    return out * s, state, None


def np_airface(cos, labels, state, norms, training, m=0.4, s=64.0):
    theta = np.arccos(np.clip(cos, -1 + EPS, 1 - EPS))
    theta[rows_of(labels), labels] += m
    return (np.pi - 2 * theta) / np.pi * s, state, None


def np_magface(cos, labels, state, norms, training, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0, s=64.0):
    """Official MagLinear (easy_margin=False) + MagLoss.calc_loss_G, per sample."""
    x_norm = np.clip(norms, l_a, u_a)[:, None]
    ada_margin = (u_m - l_m) / (u_a - l_a) * (x_norm - l_a) + l_m
    cos_theta = np.clip(cos, -1, 1)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    cos_theta_m = cos_theta * np.cos(ada_margin) - sin_theta * np.sin(ada_margin)
    mm = np.sin(np.pi - ada_margin) * ada_margin
    cos_theta_m = np.where(cos_theta > np.cos(np.pi - ada_margin), cos_theta_m, cos_theta - mm)
    one_hot = onehot_of(labels, cos.shape[1])
    output = np.where(one_hot, cos_theta_m, cos_theta) * s
    return output, state, lambda_g * (x_norm / u_a**2 + 1 / x_norm)[:, 0]


def np_adaface(cos, labels, state, norms, training, m=0.4, h=0.333, t_alpha=0.01, s=64.0):
    """Official AdaFace head.py forward."""
    eps = 1e-3
    cosine = np.clip(cos, -1 + eps, 1 - eps)
    safe_norms = np.clip(norms, 0.001, 100)[:, None]
    batch_mean, batch_std = state["batch_mean"], state["batch_std"]
    if training:
        batch_mean = safe_norms.mean() * t_alpha + (1 - t_alpha) * batch_mean
        batch_std = safe_norms.std(ddof=1) * t_alpha + (1 - t_alpha) * batch_std
        state = {"batch_mean": batch_mean, "batch_std": batch_std}
    margin_scaler = np.clip((safe_norms - batch_mean) / (batch_std + eps) * h, -1, 1)
    one_hot = onehot_of(labels, cos.shape[1])
    m_arc = one_hot * (m * margin_scaler * -1)
    theta_m = np.clip(np.arccos(cosine) + m_arc, eps, np.pi - eps)
    cosine = np.cos(theta_m) - one_hot * (m + m * margin_scaler)
    return cosine * s, state, None


def np_adacos(cos, labels, state, norms, training, max_median=np.pi / 4):
    """Official dynamic AdaCos: B_avg over non-target exp(s * cos), torch.median (lower) of target angles."""
    scale = state["scale"]
    if training:
        one_hot = onehot_of(labels, cos.shape[1])
        theta = np.arccos(np.clip(cos, -1 + EPS, 1 - EPS))
        b_avg = np.where(one_hot, 0.0, np.exp(scale * cos)).sum() / cos.shape[0]
        target_theta = np.sort(theta[one_hot])
        theta_med = target_theta[(len(target_theta) - 1) // 2]
        scale = np.log(b_avg) / np.cos(min(max_median, theta_med))
        state = {"scale": scale}
    return scale * cos, state, None


def np_margin_softmax(logits, labels, state, norms, training, power=2, scale=0.4, scale_all=1.0, from_logits=False):
    """The seed's MarginSoftmax on the softmax of the Dense head's logits; from_logits=False -> log probabilities."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    out, rows = shifted / shifted.sum(axis=1, keepdims=True), rows_of(labels)
    t = out[rows, labels]
    if power != 1 and scale == 0:
        out[rows, labels] = t**power
    elif power == 1 and scale != 0:
        out[rows, labels] = t * scale
    else:
        out[rows, labels] = (t**power + t * scale) / 2
    out *= scale_all
    if not from_logits:
        out = np.log(np.clip(out / out.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7))
    return out, state, None


def ref(fn, **params):
    return lambda cos, labels, state, norms, training: fn(cos, labels, dict(state), norms, training, **params)


# (id, loss, numpy reference, state to start from in the logits / gradient tests)
CASES = [
    ("arcface", ArcfaceLoss(), ref(np_arcface), {}),
    ("arcface_combined", ArcfaceLoss(0.9, 0.4, 0.15, scale=32), ref(np_arcface, m1=0.9, m2=0.4, m3=0.15, s=32.0), {}),
    ("arcface_simple", ArcfaceLossSimple(margin=0.45), ref(np_arcface_simple, m=0.45), {}),
    ("sphereface", SphereFaceLoss(), ref(np_arcface, m1=1.35, m2=0.0), {}),
    ("cosface", CosFaceLoss(scale=30), ref(np_cosface, s=30.0), {}),
    ("curricular", CurricularFaceLoss(), ref(np_curricular), {"t": 0.3}),
    ("curricular_params", CurricularFaceLoss(0.4, 32, t_alpha=0.2), ref(np_curricular, m=0.4, s=32.0, t_alpha=0.2),
     {"t": -0.1}),
    ("airface", AirFaceLoss(), ref(np_airface), {}),
    ("magface", MagFaceLoss(), ref(np_magface), {}),
    ("magface_params", MagFaceLoss(1, 51, 0.45, 1.0, scale=32, regularizer_loss_lambda=5),
     ref(np_magface, l_a=1.0, u_a=51.0, l_m=0.45, u_m=1.0, lambda_g=5.0, s=32.0), {}),
    ("adaface", AdaFaceLoss(), ref(np_adaface), {"batch_mean": 50.0, "batch_std": 10.0}),
    ("adaface_params", AdaFaceLoss(0.6, 0.5, 0.3, scale=32), ref(np_adaface, m=0.6, h=0.5, t_alpha=0.3, s=32.0),
     {"batch_mean": 30.0, "batch_std": 40.0}),
    ("adacos", AdaCosLoss(6), ref(np_adacos), {"scale": 5.0}),
    ("adacos_median", AdaCosLoss(6, max_median=2.5), ref(np_adacos, max_median=2.5), {"scale": 9.0}),
    ("margin_softmax", MarginSoftmax(), ref(np_margin_softmax), {}),
    ("margin_softmax_power", MarginSoftmax(power=3, margin_scale=0.0), ref(np_margin_softmax, power=3, scale=0), {}),
    ("margin_softmax_linear", MarginSoftmax(power=1, scale=0.8, scale_all=16, from_logits=True),
     ref(np_margin_softmax, power=1, scale=0.8, scale_all=16.0, from_logits=True), {}),
]
IDS = [case[0] for case in CASES]
STATEFUL = [case for case in CASES if case[1].initial_state() or case[1].needs_norm]


def f32(x):
    return jnp.asarray(x, "float32")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name,loss,reference,state", CASES, ids=IDS)
def test_logits_state_and_extra_match_reference(name, loss, reference, state, training):
    state = state or loss.initial_state()
    logits, new_state, extra = loss.compute(f32(COS), LABELS, state, norms=f32(NORMS), training=training)
    want, want_state, want_extra = reference(COS, LABELS, state, NORMS, training)
    assert np.asarray(logits).dtype == np.float32 and logits.shape == COS.shape
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=2e-4 * loss.scale)
    assert set(new_state) == set(want_state) == set(loss.initial_state())
    for key in want_state:
        np.testing.assert_allclose(float(new_state[key]), want_state[key], rtol=1e-5, err_msg=key)
    if not training:
        assert new_state is state  # nothing changes outside training
    if want_extra is None:
        assert extra is None
    else:
        np.testing.assert_allclose(np.asarray(extra), want_extra, rtol=1e-5)


def test_fallback_and_clip_branches_are_exercised():
    """The data hits each branch the references distinguish, so the comparisons above cover them."""
    target = COS[rows_of(LABELS), LABELS]
    assert (target < np.cos(np.pi - 0.5)).sum() >= 3  # ArcFace / CurricularFace fallback
    assert (target < np.cos(np.pi / 1.35)).sum() >= 3  # SphereFace fallback
    margin = (0.8 - 0.45) / 100 * (np.clip(NORMS, 10, 110) - 10) + 0.45
    assert (target < np.cos(np.pi - margin)).sum() >= 3  # MagFace fallback with per-sample margins
    assert (NORMS < 10).any() and (NORMS > 110).any()  # MagFace norm clip
    scaler = np.clip((NORMS - 50) / (10 + 1e-3) * 0.333, -1, 1)
    theta = np.arccos(np.clip(target, -1 + 1e-3, 1 - 1e-3)) - 0.4 * scaler
    assert (theta > np.pi - 1e-3).any() and (theta < 1e-3).any()  # AdaFace theta clip, both ends
    cos_theta_m = target * np.cos(0.5) - np.sqrt(1 - target**2) * np.sin(0.5)
    hard = (COS > cos_theta_m[:, None]) & ~onehot_of(LABELS, COS.shape[1])
    assert 5 < hard.sum() < hard.size - 10  # CurricularFace: both hard and easy negatives
    assert not hard[6, 1] and COS[6, 1] > target[6] - np.sin(np.pi - 0.5) * 0.5  # the mask uses cos(theta + m)
    assert np.median(np.arccos(target)) < 2.5  # AdaCos with max_median=2.5 uses the median angle


def finite_difference(fn, x, step=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (fn(up) - fn(down)) / (2 * step)
    return grad


@pytest.mark.parametrize("name,loss,reference,state", CASES, ids=IDS)
def test_gradients_match_finite_differences(name, loss, reference, state):
    """Training step: the statistics are updated from the batch and carry no gradient (held fixed in the FD)."""
    state = state or loss.initial_state()
    rng = np.random.default_rng(7)
    weights, norm_weights = rng.normal(size=COS.shape), rng.normal(size=NORMS.shape)

    def total(cos, norms):
        logits, _, extra = loss.compute(cos, LABELS, state, norms=norms, training=True)
        value = jnp.sum(f32(weights) * logits)
        return value if extra is None else value + jnp.sum(f32(norm_weights) * extra)

    grad_cos, grad_norms = map(np.asarray, jax.grad(total, argnums=(0, 1))(f32(COS), f32(NORMS)))
    _, updated, _ = reference(COS, LABELS, state, NORMS, True)

    def numpy_total(cos, norms):
        logits, _, extra = reference(cos, LABELS, updated, norms, False)
        value = np.sum(weights * logits)
        return value if extra is None else value + np.sum(norm_weights * extra)

    want_cos = finite_difference(lambda c: numpy_total(c, NORMS), COS)
    np.testing.assert_allclose(grad_cos, want_cos, rtol=1e-3, atol=1e-3 * np.abs(want_cos).max())
    if isinstance(loss, MagFaceLoss):  # the norm reaches both the margin and the regulariser
        want_norms = finite_difference(lambda n: numpy_total(COS, n), NORMS)
        np.testing.assert_allclose(grad_norms, want_norms, rtol=1e-3, atol=1e-3 * np.abs(want_norms).max())
        assert np.all(grad_norms[(NORMS < loss.lower_a) | (NORMS > loss.upper_a)] == 0)
    else:  # AdaFace detaches the norm, as the official code; the others do not read it
        assert np.all(grad_norms == 0)


def head_input(loss, cos, norms):
    """What NormDense(append_norm=True) gives a needs_norm loss: cosines, then -||x||."""
    columns = [cos, -norms[:, None]] if loss.needs_norm else [cos]
    return np.concatenate(columns, axis=1).astype("float32")


@pytest.mark.parametrize("name,loss,reference,state", STATEFUL, ids=[case[0] for case in STATEFUL])
def test_head_updates_statistics_over_batches(name, loss, reference, state):
    head = MarginHead(loss)
    state = loss.initial_state()
    assert not head.weights  # built on the first call
    for step, batch in enumerate((8, 5, 6)):
        cos, labels, norms = make_batch(10 + step, batch)
        logits = head([head_input(loss, cos, norms), labels], training=True)
        want, state, extra = reference(cos, labels, state, norms, True)
        np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=2e-4 * loss.scale)
        assert [v.name for v in head.non_trainable_weights] == list(loss.initial_state())
        for variable in head.non_trainable_weights:
            assert variable.dtype == "float32"
            np.testing.assert_allclose(float(variable.numpy()), state[variable.name], rtol=1e-5)
        if extra is None:
            assert not head.losses
        else:
            np.testing.assert_allclose(float(head.losses[0]), extra.mean(), rtol=1e-5)
    stored = [float(v.numpy()) for v in head.non_trainable_weights]
    cos, labels, norms = make_batch(20, 7)
    logits = head([head_input(loss, cos, norms), labels], training=False)
    assert [float(v.numpy()) for v in head.non_trainable_weights] == stored
    assert not head.losses
    np.testing.assert_allclose(np.asarray(logits), reference(cos, labels, state, norms, False)[0], rtol=1e-5,
                               atol=2e-4 * loss.scale)


def test_norm_dense_append_norm_feeds_margin_head():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(6, 16)) * rng.uniform(1, 40, (6, 1))).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 0])
    dense = NormDense(5, append_norm=True)
    out = np.asarray(dense(x))
    w = np.asarray(dense.kernel).astype("float64")
    norms = np.linalg.norm(x.astype("float64"), axis=1)
    cos = (x / norms[:, None]) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    assert out.shape == (6, 6)
    np.testing.assert_allclose(out[:, :-1], cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, -1], -norms, rtol=1e-5)
    assert np.all(out.argmax(axis=1) < 5)  # the norm column never wins an accuracy argmax
    restored = NormDense.from_config(dense.get_config())
    assert restored.append_norm and restored.compute_output_shape((None, 16)) == (None, 6)
    for loss, reference in ((MagFaceLoss(), np_magface), (AdaFaceLoss(), np_adaface)):
        head = MarginHead(loss)
        logits = np.asarray(head([out, labels], training=True))
        want, _, extra = reference(cos, labels, loss.initial_state(), norms, True)
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=2e-3)
        if extra is not None:
            np.testing.assert_allclose(float(head.losses[0]), extra.mean(), rtol=1e-5)
    embeddings, label_input = keras.Input((16,)), keras.Input((), dtype="int32")
    cos_output = NormDense(5, append_norm=True)(embeddings)
    model = keras.Model([embeddings, label_input], MarginHead(AdaFaceLoss())([cos_output, label_input]))
    assert cos_output.shape == (None, 6) and model.output_shape == (None, 5)
    assert MarginHead(CosFaceLoss()).compute_output_shape([(None, 5), (None,)]) == (None, 5)


def test_fit_updates_statistics_and_adds_the_extra_loss():
    """The JAX trainer path: state assigned inside the jitted step, MagFace's extra loss in the total."""
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(8, 16)) * rng.uniform(5, 120, (8, 1))).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    for loss, reference in ((MagFaceLoss(scale=16), ref(np_magface, s=16.0)), (AdaFaceLoss(), ref(np_adaface))):
        embeddings, label_input = keras.Input((16,)), keras.Input((), dtype="int32")
        dense = NormDense(5, append_norm=True)
        model = keras.Model([embeddings, label_input], MarginHead(loss)([dense(embeddings), label_input]))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=MarginCrossEntropy())
        w = np.asarray(dense.kernel).astype("float64")
        norms = np.linalg.norm(x.astype("float64"), axis=1)
        cos = (x / norms[:, None]) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
        state = loss.initial_state()
        for _ in range(2):
            got = model.train_on_batch([x, labels], labels)
            logits, state, extra = reference(cos, labels, state, norms, True)
            shifted = logits - logits.max(axis=1, keepdims=True)
            want = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[rows_of(labels), labels])
            want += 0.0 if extra is None else extra.mean()
            np.testing.assert_allclose(got, want, rtol=1e-4)
        for variable in model.non_trainable_weights:
            np.testing.assert_allclose(float(variable.numpy()), state[variable.name], rtol=1e-5)


def stateful_model(loss, classes=6):
    cos = keras.Input((classes + int(loss.needs_norm),))
    labels = keras.Input((), dtype="int32")
    return keras.Model([cos, labels], MarginHead(loss, name="margin")([cos, labels]))


@pytest.mark.parametrize("loss", [CurricularFaceLoss(), AdaFaceLoss(), AdaCosLoss(6)], ids=lambda x: type(x).__name__)
def test_statistics_survive_saving(loss, tmp_path):
    model = stateful_model(loss)
    for step in range(3):
        cos, labels, norms = make_batch(30 + step, 8)
        model([head_input(loss, cos, norms), labels], training=True)
    stored = {v.name: float(v.numpy()) for v in model.non_trainable_weights}
    assert stored != loss.initial_state()
    cos, labels, norms = make_batch(40, 5)
    inputs = [head_input(loss, cos, norms), labels]
    want = np.asarray(model(inputs, training=False))

    model.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras")
    assert {v.name: float(v.numpy()) for v in loaded.non_trainable_weights} == stored
    np.testing.assert_allclose(np.asarray(loaded(inputs, training=False)), want, rtol=1e-6)
    assert type(loaded.get_layer("margin").loss) is type(loss)

    model.save_weights(tmp_path / "head.weights.h5")
    fresh = stateful_model(get_margin_loss(serialize_margin_loss(loss)))
    fresh.load_weights(tmp_path / "head.weights.h5")
    assert {v.name: float(v.numpy()) for v in fresh.non_trainable_weights} == stored


@pytest.mark.parametrize("name,loss,reference,state", CASES, ids=IDS)
def test_serialisation_round_trip(name, loss, reference, state):
    config = serialize_margin_loss(loss)
    restored = get_margin_loss(json.loads(json.dumps(config)))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    assert restored.initial_state() == loss.initial_state() and restored.needs_norm == loss.needs_norm
    head = MarginHead.from_config(json.loads(json.dumps(MarginHead(loss).get_config())))
    assert head.loss.get_config() == loss.get_config()
    assert repr(restored) == repr(loss)


def test_registry_lists_the_family():
    assert set(MARGIN_LOSSES) == {
        "ArcfaceLoss", "ArcfaceLossSimple", "CosFaceLoss", "SphereFaceLoss", "CurricularFaceLoss", "AirFaceLoss",
        "MagFaceLoss", "AdaFaceLoss", "AdaCosLoss", "MarginSoftmax", "SoftmaxLoss",
    }
    assert isinstance(get_margin_loss("CurricularFaceLoss"), CurricularFaceLoss)
    assert get_margin_loss({"class_name": "AdaCosLoss", "config": {"num_classes": 10}}).scale == pytest.approx(
        np.sqrt(2) * np.log(9)
    )


@pytest.mark.parametrize("loss", [CurricularFaceLoss(label_smoothing=0.1), AirFaceLoss(label_smoothing=0.1)],
                         ids=lambda x: type(x).__name__)
def test_label_smoothing_with_new_losses(loss):
    reference = {CurricularFaceLoss: np_curricular, AirFaceLoss: np_airface}[type(loss)]
    assert get_margin_loss(serialize_margin_loss(loss)).label_smoothing == 0.1
    logits = MarginHead(loss)([COS.astype("float32"), LABELS])
    got = np.asarray(MarginCrossEntropy(loss.label_smoothing, reduction=None)(LABELS, logits))
    want_logits = reference(COS, LABELS, loss.initial_state(), NORMS, False)[0]
    log_prob = want_logits - np.log(np.exp(want_logits - want_logits.max(1, keepdims=True)).sum(1, keepdims=True))
    log_prob -= want_logits.max(1, keepdims=True)
    target = 0.9 * onehot_of(LABELS, COS.shape[1]) + 0.1 / COS.shape[1]
    np.testing.assert_allclose(got, -(target * log_prob).sum(1), rtol=1e-4)


def test_validation():
    with pytest.raises(ValueError, match="num_classes >= 3"):
        AdaCosLoss(2)
    with pytest.raises(ValueError, match="lower_a < upper_a"):
        MagFaceLoss(lower_a=110, upper_a=10)
    with pytest.raises(ValueError, match="needs the embedding norms"):
        MagFaceLoss().logits(COS, LABELS)
    logits = AdaFaceLoss().logits(f32(COS), LABELS, norms=f32(NORMS))  # the stateless convenience
    np.testing.assert_allclose(np.asarray(logits), np_adaface(COS, LABELS, AdaFaceLoss().initial_state(), NORMS,
                                                              False)[0], rtol=1e-5, atol=2e-3)


BACKEND_SCRIPT = """
import json, sys
import numpy as np
import keras_insightface
import keras
from keras_insightface.heads.margin import MarginHead
from keras_insightface.losses.margin import get_margin_loss

data = json.loads(sys.argv[1])
out = {}
for name, spec in data["losses"].items():
    head = MarginHead(get_margin_loss(spec))
    steps = []
    for cos, labels, training in data["batches"][name]:
        logits = head([np.array(cos, "float32"), np.array(labels, "int32")], training=training)
        steps.append(keras.ops.convert_to_numpy(logits).tolist())
    out[name] = {"logits": steps, "state": [float(np.asarray(v.numpy())) for v in head.non_trainable_weights]}
print(json.dumps(out))
"""


def backend_data():
    losses, batches = {}, {}
    for name, loss, _, _ in CASES:
        losses[name] = serialize_margin_loss(loss)
        batches[name] = []
        for step, training in enumerate((True, True, False)):
            cos, labels, norms = make_batch(50 + step, 6)
            batches[name].append((head_input(loss, cos, norms).tolist(), labels.tolist(), training))
    return {"losses": losses, "batches": batches}


def run_backend(backend, data):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = str(Path(__file__).parents[2] / "src")
    args = [sys.executable, "-c", BACKEND_SCRIPT, json.dumps(data)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_other_backends_match_the_reference(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} not installed (pip install -e .[compat])")
    data = backend_data()
    got = run_backend(backend, data)
    for name, loss, reference, _ in CASES:
        state = loss.initial_state()
        for step, training in enumerate((True, True, False)):
            cos, labels, norms = make_batch(50 + step, 6)
            want, state, _ = reference(cos, labels, state, norms, training)
            np.testing.assert_allclose(np.array(got[name]["logits"][step]), want, rtol=1e-4, atol=2e-4 * loss.scale,
                                       err_msg=f"{backend} {name} step {step}")
        np.testing.assert_allclose(got[name]["state"], list(state.values()), rtol=1e-5, err_msg=f"{backend} {name}")
