"""Margin heads against an independent numpy computation: logits and gradients of the training loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from keras_insightface.heads.margin import MarginHead
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.losses.cross_entropy import MarginCrossEntropy
from keras_insightface.losses.margin import ArcfaceLoss, ArcfaceLossSimple, CosFaceLoss, get_margin_loss

RNG = np.random.default_rng(0)
COS = np.concatenate([RNG.uniform(-0.99, 0.99, (6, 5)), [[-0.95, 0.3, 0.1, 0.0, 0.2]]]).astype("float32")
LABELS = np.array([0, 1, 2, 3, 4, 1, 0])  # the last row's target sits past the fallback threshold


def numpy_arcface(cos, labels, m1, m2, m3, scale):
    """Target logit cos(m1*acos(t) + m2) - m3, or its mirror below threshold; d(target logit)/dt."""
    t = cos[np.arange(len(labels)), labels].astype("float64")
    angle = m1 * np.arccos(t) + m2
    threshold = np.cos((np.pi - m2) / m1)
    valid = t > threshold
    theta = np.where(valid, np.cos(angle) - m3, -2 * (1 + m3) - (np.cos(angle) - m3))
    dtheta = np.sin(angle) * m1 / np.sqrt(1 - t**2) * np.where(valid, 1, -1)
    logits = cos.astype("float64").copy()
    logits[np.arange(len(labels)), labels] = theta
    return logits * scale, dtheta * scale


def numpy_loss_and_grad(logits, labels, smoothing=0.0):
    """Softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    onehot = np.eye(logits.shape[1])[labels]
    target = (1 - smoothing) * onehot + smoothing / logits.shape[1]
    loss = -(target * np.log(prob)).sum(axis=1)
    return loss, prob - target


def keras_loss_and_grad(margin, cos, labels):
    head, ce = MarginHead(margin), MarginCrossEntropy(margin.label_smoothing, reduction=None)

    def total(c):
        return jnp.sum(ce(labels, head([c, labels])))

    logits = np.asarray(head([cos, labels]))
    per_sample = np.asarray(ce(labels, logits))
    return logits, per_sample, np.asarray(jax.grad(total)(jnp.asarray(cos)))


@pytest.mark.parametrize("m1,m2,m3,scale", [(1.0, 0.5, 0.0, 64.0), (1.0, 0.3, 0.2, 16.0), (0.9, 0.4, 0.15, 32.0)])
def test_arcface_combined_logits_and_gradients(m1, m2, m3, scale):
    margin = ArcfaceLoss(margin1=m1, margin2=m2, margin3=m3, scale=scale)
    want_logits, dtheta = numpy_arcface(COS, LABELS, m1, m2, m3, scale)
    logits, loss, grad = keras_loss_and_grad(margin, COS, LABELS)
    np.testing.assert_allclose(logits, want_logits, rtol=2e-5, atol=2e-4)
    want_loss, want_dlogits = numpy_loss_and_grad(want_logits, LABELS)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-4)
    want_grad = want_dlogits * scale
    rows = np.arange(len(LABELS))
    want_grad[rows, LABELS] = want_dlogits[rows, LABELS] * dtheta
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-4)


def test_arcface_fallback_is_monotonic_past_pi():
    margin = ArcfaceLoss(scale=1.0)
    t = np.linspace(-0.999, 0.999, 401, dtype="float32")[:, None]
    target = np.asarray(margin.target_logit(t))[:, 0]
    assert np.all(np.diff(target) > 0), "target logit must increase with the cosine everywhere"
    assert np.asarray(margin.target_logit(np.float32([[-0.999]])))[0, 0] < -1  # below every plain cosine


def test_arcface_simple_matches_combined():
    labels = LABELS
    simple = np.asarray(MarginHead(ArcfaceLossSimple(margin=0.5, scale=64))([COS, labels]))
    combined = np.asarray(MarginHead(ArcfaceLoss(margin2=0.5, scale=64))([COS, labels]))
    np.testing.assert_allclose(simple, combined, rtol=1e-4, atol=1e-3)


def test_cosface_logits_and_gradients():
    scale, m = 30.0, 0.35
    logits, loss, grad = keras_loss_and_grad(CosFaceLoss(margin=m, scale=scale), COS, LABELS)
    want = COS.astype("float64").copy()
    want[np.arange(len(LABELS)), LABELS] -= m
    want *= scale
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-4)
    want_loss, want_dlogits = numpy_loss_and_grad(want, LABELS)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad, want_dlogits * scale, rtol=1e-3, atol=1e-4)


def test_label_smoothing_matches_numpy():
    logits = RNG.normal(size=(4, 6)).astype("float32")
    labels = np.array([0, 5, 2, 2])
    got = np.asarray(MarginCrossEntropy(0.1, reduction=None)(labels, logits))
    want, _ = numpy_loss_and_grad(logits.astype("float64"), labels, smoothing=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_norm_dense_is_cosine_and_subcenter_max():
    x = RNG.normal(size=(3, 8)).astype("float32")
    layer = NormDense(4, loss_top_k=2)
    cos = np.asarray(layer(x))
    w = np.asarray(layer.kernel)
    full = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(cos, full.reshape(3, 4, 2).max(axis=-1), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(cos) <= 1 + 1e-6)


def test_margin_loss_lookup_and_validation():
    assert isinstance(get_margin_loss("CosFaceLoss"), CosFaceLoss)
    restored = get_margin_loss({"class_name": "ArcfaceLoss", "config": {"scale": 16.0, "margin2": 0.4}})
    assert restored.scale == 16.0 and restored.margin2 == 0.4
    with pytest.raises(ValueError, match="Unknown margin loss"):
        get_margin_loss("NoSuchLoss")
    with pytest.raises(ValueError, match="scale must be positive"):
        ArcfaceLoss(scale=0)


def test_softmax_loss_passes_dense_logits_through():
    from keras_insightface.losses.margin import SoftmaxLoss

    loss = get_margin_loss("categorical_crossentropy")
    assert isinstance(loss, SoftmaxLoss) and loss.plain_head and not ArcfaceLoss().plain_head
    logits = np.array([[3.0, -2.0], [0.5, 7.0]], "float32")
    np.testing.assert_array_equal(np.asarray(loss.logits(logits, np.array([1, 0]))), logits)
