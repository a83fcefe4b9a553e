"""The margin losses as Keras losses, the seed's way: ``loss(y_true, y_pred)`` and ``model.compile(loss=...)``.

Each loss's per-sample value is compared with a float64 numpy implementation of the seed's formula (losses.py of
leondgarse/Keras_insightface, commit 520a9da), for one-hot and sparse labels, label smoothing and both
``from_logits``; a few values measured by running the seed itself anchor the references. Also: the seed's
keywords with the seed's meaning, the per-batch statistics of a compiled loss, training with ``fit`` on a
``NormDense`` model, and serialisation.
"""

import json

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)
import keras
import numpy as np
import pytest

from keras_insightface import losses as seed_names
from keras_insightface.heads.margin import MarginHead
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.losses.margin import (
    AdaCosLoss,
    AdaFaceLoss,
    AirFaceLoss,
    ArcfaceLoss,
    ArcfaceLossSimple,
    CosFaceLoss,
    CurricularFaceLoss,
    MagFaceLoss,
    MarginSoftmax,
    SoftmaxLoss,
    SphereFaceLoss,
    get_margin_loss,
    serialize_margin_loss,
)
from keras_insightface.losses.triplet import AcrTripLoss, OfflineArcTripletLoss

# Fixed inputs: 6 samples, 5 classes; every target cosine above cos(pi - m), where the seed and the published
# forms used here agree (the fallback past it has its own test).
COS = np.array([
    [0.72, 0.046, -0.459, -0.078, 0.332], [-0.568, 0.35, 0.681, -0.534, 0.604],
    [-0.323, 0.443, -0.41, 0.437, 0.838], [0.877, 0.395, -0.355, 0.88, -0.183],
    [0.834, -0.151, 0.242, 0.011, 0.05], [-0.023, 0.6, 0.02, 0.419, 0.273],
])
LABELS = np.array([0, 1, 2, 3, 4, 1])
ONE_HOT = np.eye(5)[LABELS]
NORMS = np.array([5.0, 15.0, 30.0, 60.0, 100.0, 130.0])  # MagFace clips both ends
WITH_NORM = np.concatenate([COS, -NORMS[:, None]], axis=1)  # NormDense(append_norm=True): -||x|| last
LOGITS = np.array([
    [0.792, -1.692, 1.186, -0.509, 0.374], [1.508, -2.163, -0.315, 0.573, 0.899],
    [1.358, 0.606, 0.514, 0.106, 0.266], [0.071, 0.992, 0.159, 0.669, 1.616],
    [1.17, -0.344, -0.103, 0.735, -0.642], [-1.831, -1.011, 0.539, -0.211, -0.357],
])
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)  # the seed's softmax-stage output
EMB = np.array([
    [0.747, -1.052, 2.265, 0.023, -0.324, 2.037, -1.089, -0.497],
    [-0.089, -0.96, -0.34, 0.583, 0.169, -0.049, 0.988, 1.887],
    [1.563, -2.093, 1.371, 0.776, 0.408, -0.983, -0.452, -0.21],
    [-1.393, 1.234, 0.891, -0.013, -0.948, 1.346, 0.641, 1.063],
    [-0.419, 2.396, -0.139, 1.955, -2.005, 0.308, 0.083, -2.522],
    [-0.645, -1.225, -1.407, -0.754, -1.17, 0.326, 0.465, 0.269],
])  # labels 1 repeat (rows 1 and 5): AcrTripLoss's batch-hard triplet has a real positive pair
ROWS = np.arange(len(LABELS))


# ---------------------------------------------------------------- the seed's formulas in numpy (float64)


def seed_cross_entropy(one_hot, values, from_logits, label_smoothing):
    """tf.keras.losses.categorical_crossentropy: smoothed targets; softmax, or normalise + clip + log."""
    target = one_hot * (1 - label_smoothing) + label_smoothing / one_hot.shape[1]
    if from_logits:
        shifted = values - values.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        log_prob = np.log(np.clip(values / values.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7))
    return -(target * log_prob).sum(axis=1)


def with_target(values, target):
    out = values.copy()
    out[ROWS, LABELS] = target
    return out


def seed_arcface(cos, m1=1.0, m2=0.5, m3=0.0, s=64.0, from_logits=True, ls=0.0):
    y = cos[ROWS, LABELS]
    theta = np.cos(np.arccos(y) * m1 + m2) - m3
    theta = np.where(y > np.cos((np.pi - m2) / m1), theta, (-1 - m3) * 2 - theta)
    return seed_cross_entropy(ONE_HOT, with_target(cos, theta) * s, from_logits, ls)


def seed_arcface_simple(cos, m=0.5, s=64.0, from_logits=True, ls=0.0):
    y = cos[ROWS, LABELS]
    theta = y * np.cos(m) - np.sqrt(1 - y**2) * np.sin(m)
    theta = np.where(y > np.cos(np.pi - m), theta, -2 - theta)
    return seed_cross_entropy(ONE_HOT, with_target(cos, theta) * s, from_logits, ls)


def seed_cosface(cos, m=0.35, s=64.0, from_logits=True, ls=0.0):
    return seed_cross_entropy(ONE_HOT, with_target(cos, cos[ROWS, LABELS] - m) * s, from_logits, ls)


def seed_curricular(cos, m=0.5, s=64.0, from_logits=True, ls=0.0):
    """Hard negatives cos * (t + cos) above the target's cos(theta + m); t = this batch's mean target cosine."""
    y = cos[ROWS, LABELS]
    theta = y * np.cos(m) - np.sqrt(1 - y**2) * np.sin(m)
    theta = np.where(y > np.cos(np.pi - m), theta, -2 - theta)
    t = y.mean()
    hard = np.where(cos > theta[:, None], cos * (t + cos), cos)
    return seed_cross_entropy(ONE_HOT, with_target(hard, theta) * s, from_logits, ls)


def airface(cos, m=0.4, s=64.0, from_logits=True, ls=0.0):
    """The seed's target 1 - 2m/pi - 2 theta/pi; the other classes (pi - 2 theta) / pi as the paper (the seed's
    code keeps their plain cosine: the documented departure)."""
    values = 1 - 2 * np.arccos(cos) / np.pi
    target = 1 - 2 * m / np.pi - np.arccos(cos[ROWS, LABELS]) * 2 / np.pi
    return seed_cross_entropy(ONE_HOT, with_target(values, target) * s, from_logits, ls)


def seed_magface(with_norm, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, s=64.0, lam=35.0, cosface=False,
                 from_logits=True, ls=0.0):
    cos = np.clip(with_norm[:, :-1], -1 + 1e-3, 1 - 1e-3)
    norm = np.clip(-with_norm[:, -1], l_a, u_a)
    margin = ((u_m - l_m) / (u_a - l_a) * (norm - l_a) + l_m)[:, None]
    if cosface:
        values = np.where(ONE_HOT > 0, cos - margin, cos) * s
    else:
        arc = np.where(ONE_HOT > 0, cos * np.cos(margin) - np.sqrt(np.maximum(1 - cos**2, 0)) * np.sin(margin), cos)
        values = np.minimum(arc, cos) * s
    return seed_cross_entropy(ONE_HOT, values, from_logits, ls) + lam * (norm / u_a**2 + 1 / norm)


def seed_adaface(with_norm, m=0.4, h=0.333, s=64.0, from_logits=True, ls=0.0):
    """The seed's AdaFace with this batch's norm mean and unbiased std (mean_std_alpha=1)."""
    eps = 1e-3
    cos = np.clip(with_norm[:, :-1], -1 + eps, 1 - eps)
    norm = np.clip(-with_norm[:, -1], 0.001, 100)
    scaled = m * np.clip((norm - norm.mean()) / (norm.std(ddof=1) + eps) * h, -1, 1)[:, None]
    target = np.cos(np.clip(np.arccos(cos) - scaled, eps, np.pi - eps)) - (m + scaled)
    return seed_cross_entropy(ONE_HOT, np.where(ONE_HOT > 0, target, cos) * s, from_logits, ls)


def seed_adacos(cos, num_classes=1000, max_median=np.pi / 4, from_logits=True, ls=0.0):
    """One step from the initial scale sqrt(2) log(num_classes - 1); median index B // 2 - 1 (even batch)."""
    s0 = np.sqrt(2) * np.log(num_classes - 1)
    theta_med = np.sort(np.arccos(cos[ROWS, LABELS]))[len(cos) // 2 - 1]
    b_avg = np.where(ONE_HOT > 0, 0, np.exp(s0 * cos)).sum(axis=1).mean()
    scale = np.log(b_avg) / np.cos(min(max_median, theta_med))
    return seed_cross_entropy(ONE_HOT, cos * scale, from_logits, ls)


def seed_margin_softmax(probs, power=2, scale=0.4, scale_all=1.0, from_logits=False, ls=0.0):
    p = probs[ROWS, LABELS]
    if power != 1 and scale == 0:
        target = p**power
    elif power == 1 and scale != 0:
        target = p * scale
    else:
        target = (p**power + p * scale) / 2
    return seed_cross_entropy(ONE_HOT, with_target(probs, target) * scale_all, from_logits, ls)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def seed_acr_trip(emb, cos, m=0.5, s=64.0, from_logits=True, ls=0.0):
    sims = unit(emb) @ unit(emb).T
    same = LABELS[:, None] == LABELS[None, :]
    violation = np.maximum(np.where(same, -1, sims).max(axis=1) - np.where(same, sims, 1).min(axis=1), 0)
    y = cos[ROWS, LABELS]
    theta = np.cos(np.arccos(y) + m)
    theta = np.where(y > np.cos(np.pi - m), theta, -2 - theta) - violation
    return seed_cross_entropy(ONE_HOT, with_target(cos, theta) * s, from_logits, ls)


def seed_offline_arc(emb, alpha=0.35):
    e = unit(emb)
    anchor, pos, neg = e[::3], e[1::3], e[2::3]
    pos_cos, neg_cos = (anchor * pos).sum(-1), (anchor * neg).sum(-1)
    margin = np.cos(np.arccos(pos_cos) + alpha)
    return np.maximum(neg_cos - np.where(margin > np.cos(np.pi - alpha), margin, -2 - margin), 0)


# (id, loss, y_pred, expected per-sample values)
CASES = [
    ("arcface", ArcfaceLoss(), COS, seed_arcface(COS)),
    ("arcface_combined_ls", ArcfaceLoss(0.9, 0.4, 0.15, 32, True, 0.1), COS,
     seed_arcface(COS, 0.9, 0.4, 0.15, 32, ls=0.1)),
    ("arcface_no_margin", ArcfaceLoss(margin2=0.0, scale=16), COS, seed_arcface(COS, m2=0.0, s=16)),
    ("arcface_probabilities", ArcfaceLoss(scale=1.0, from_logits=False), np.abs(COS),
     seed_arcface(np.abs(COS), s=1.0, from_logits=False)),
    ("arcface_probabilities_ls", ArcfaceLoss(scale=1.0, from_logits=False, label_smoothing=0.2), np.abs(COS),
     seed_arcface(np.abs(COS), s=1.0, from_logits=False, ls=0.2)),
    ("sphereface", SphereFaceLoss(1.35, 32), COS, seed_arcface(COS, m1=1.35, m2=0.0, s=32)),
    ("arcface_simple", ArcfaceLossSimple(0.45, 16), COS, seed_arcface_simple(COS, 0.45, 16)),
    ("cosface_ls", CosFaceLoss(scale=30, label_smoothing=0.1), COS, seed_cosface(COS, s=30, ls=0.1)),
    ("curricular", CurricularFaceLoss(), COS, seed_curricular(COS)),
    ("curricular_ls", CurricularFaceLoss(0.4, 32, label_smoothing=0.1, hard_scale=0.7), COS,
     seed_curricular(COS, 0.4, 32, ls=0.1)),
    ("airface", AirFaceLoss(), COS, airface(COS)),
    ("magface", MagFaceLoss(), WITH_NORM, seed_magface(WITH_NORM)),
    ("magface_cosface", MagFaceLoss(use_cosface_margin=True, scale=32), WITH_NORM,
     seed_magface(WITH_NORM, s=32, cosface=True)),
    ("magface_finetune", MagFaceLoss(1, 51, 0.45, 1, regularizer_loss_lambda=5, label_smoothing=0.1), WITH_NORM,
     seed_magface(WITH_NORM, 1, 51, 0.45, 1, lam=5, ls=0.1)),
    ("adaface", AdaFaceLoss(margin_alpha=0.5), WITH_NORM, seed_adaface(WITH_NORM, h=0.5)),
    ("adaface_ls", AdaFaceLoss(0.6, scale=32, label_smoothing=0.1), WITH_NORM,
     seed_adaface(WITH_NORM, 0.6, s=32, ls=0.1)),
    ("adacos", AdaCosLoss(num_classes=5), COS, seed_adacos(COS, 5)),
    ("adacos_default", AdaCosLoss(max_median=1.2, label_smoothing=0.1), COS, seed_adacos(COS, max_median=1.2, ls=0.1)),
    ("margin_softmax", MarginSoftmax(), PROBS, seed_margin_softmax(PROBS)),
    ("margin_softmax_ls", MarginSoftmax(3, 0.0, label_smoothing=0.1), PROBS,
     seed_margin_softmax(PROBS, 3, 0.0, ls=0.1)),
    ("margin_softmax_linear", MarginSoftmax(power=1, scale=0.8, scale_all=16, from_logits=True), PROBS,
     seed_margin_softmax(PROBS, 1, 0.8, 16, from_logits=True)),
    ("softmax", SoftmaxLoss(label_smoothing=0.1), LOGITS, seed_cross_entropy(ONE_HOT, LOGITS, True, 0.1)),
    ("softmax_probabilities", SoftmaxLoss(from_logits=False), PROBS, seed_cross_entropy(ONE_HOT, PROBS, False, 0.0)),
    ("acr_trip", AcrTripLoss(scale=16, emb_shape=8), np.concatenate([EMB, COS], 1), seed_acr_trip(EMB, COS, s=16)),
    ("acr_trip_ls", AcrTripLoss(0.3, 32, label_smoothing=0.1, emb_shape=8), np.concatenate([EMB, COS], 1),
     seed_acr_trip(EMB, COS, 0.3, 32, ls=0.1)),
]

# Per-sample values from the seed's own classes (TF 2.21 + tf_keras, losses.py at 520a9da), `loss.call(one_hot,
# y_pred)` on the inputs above: CurricularFaceLoss(hard_scale=<batch mean target>) so that its first update
# gives t = the batch mean, AdaFaceLoss(margin_alpha=0.5, mean_std_alpha=1.0), AcrTripLoss(scale=16) with the
# embedding zero-padded to its fixed 512 columns, MarginSoftmax() on softmax(LOGITS).
SEED_MEASURED = {
    "arcface": [2.217626, 52.675877, 104.6455, 21.276279, 81.212585, 17.663506],
    "arcface_combined_ls": [1.959928, 23.852325, 47.519772, 12.479707, 36.293224, 7.679649],
    "curricular": [0.013007, 54.67382, 115.532806, 34.859257, 91.834412, 11.871219],
    "magface": [3.862661, 52.98922, 106.661629, 28.997414, 95.973763, 37.427547],
    "adaface": [0.075634, 46.370983, 104.73687, 26.793064, 76.011185, 18.104486],
    "adacos": [0.473475, 1.76104, 4.121067, 0.839283, 2.619928, 0.849877],
    "margin_softmax": [2.113849, 5.994404, 2.894, 2.951242, 4.040658, 3.648607],
    "margin_softmax_linear": [3.194593, 7.425323, 4.233808, 4.717838, 6.115761, 6.112789],
    "acr_trip": [0.997419, 13.423133, 26.164804, 5.3244, 20.303225, 4.521416],
}
IDS = [case[0] for case in CASES]
LABEL_FORMS = {"one_hot": ONE_HOT, "sparse": LABELS, "sparse_column": LABELS[:, None]}


def per_sample(loss, y_true, y_pred):
    config = {**loss.get_config(), "reduction": None}
    return np.asarray(type(loss).from_config(config)(y_true, y_pred.astype("float32")))


@pytest.mark.parametrize("labels", list(LABEL_FORMS), ids=list(LABEL_FORMS))
@pytest.mark.parametrize("name,loss,y_pred,want", CASES, ids=IDS)
def test_value_matches_the_seed_formula(name, loss, y_pred, want, labels):
    got = per_sample(loss, LABEL_FORMS[labels], y_pred)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(float(loss(LABEL_FORMS[labels], y_pred.astype("float32"))), want.mean(), rtol=2e-5)


@pytest.mark.parametrize("name", list(SEED_MEASURED))
def test_references_match_values_measured_from_the_seed(name):
    case = dict((case[0], case) for case in CASES)[name]
    np.testing.assert_allclose(case[3], SEED_MEASURED[name], rtol=2e-6, atol=2e-5)
    np.testing.assert_allclose(per_sample(case[1], ONE_HOT, case[2]), SEED_MEASURED[name], rtol=2e-5, atol=2e-5)


def test_offline_arc_triplet_matches_the_seed():
    got = np.asarray(OfflineArcTripletLoss(alpha=0.35, reduction=None)(np.zeros(6), EMB.astype("float32")))
    np.testing.assert_allclose(got, seed_offline_arc(EMB), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, [0.978632, 0.150719], rtol=1e-5)  # the seed's OfflineArcTripletLoss.call
    # past theta = pi - 2 alpha the seed's fallback -2 - cos(theta + alpha) applies (it tests the margin value)
    close, far = np.array([1.0, 0.0]), np.array([np.cos(2.6), np.sin(2.6)])
    triple = np.stack([[1.0, 0.0], far, close]).astype("float32")
    assert np.pi - 2 * 0.35 < 2.6 < np.pi - 0.35
    got = float(OfflineArcTripletLoss(alpha=0.35)(np.zeros(3), triple))
    assert got == pytest.approx(1 - (-2 - np.cos(2.6 + 0.35)), rel=1e-5)


def test_arcface_fallback_matches_the_seed():
    cos = COS.copy()
    cos[2, 2] = -0.95  # theta past pi - m: the seed's theta_min - theta
    for loss, want in ((ArcfaceLoss(scale=16), seed_arcface(cos, s=16)),
                       (ArcfaceLossSimple(scale=16), seed_arcface_simple(cos, s=16)),
                       (SphereFaceLoss(scale=16), seed_arcface(cos, m1=1.35, m2=0.0, s=16))):
        np.testing.assert_allclose(per_sample(loss, LABELS, cos), want, rtol=2e-5, atol=2e-5)


def test_compiled_statistics_are_per_batch_and_the_head_keeps_running_ones():
    """A Keras loss call takes the statistics of its batch alone; MarginHead starts from the seed's initial ones."""
    first, second = CurricularFaceLoss(hard_scale=0.0), CurricularFaceLoss(hard_scale=0.9)
    np.testing.assert_allclose(per_sample(first, LABELS, COS), per_sample(second, LABELS, COS), rtol=1e-6)
    assert second.initial_state() == {"t": 0.9}
    _, state, _ = second.compute(COS.astype("float32"), LABELS, second.initial_state(), training=True)
    assert float(state["t"]) == pytest.approx(0.01 * COS[ROWS, LABELS].mean() + 0.99 * 0.9, rel=1e-5)
    adacos = AdaCosLoss(num_classes=5)  # every batch steps from the initial scale: the same batch, the same value
    np.testing.assert_allclose(per_sample(adacos, LABELS, COS), per_sample(adacos, LABELS, COS))
    head = MarginHead(AdaFaceLoss())
    head([WITH_NORM.astype("float32"), LABELS], training=True)
    stats = {v.name: float(v.numpy()) for v in head.non_trainable_weights}
    assert stats["batch_mean"] == pytest.approx(0.01 * np.clip(NORMS, 0, 100).mean() + 0.99 * 20, rel=1e-5)


def test_from_logits_false_under_the_head_gives_the_seed_loss():
    """MarginHead's logits for from_logits=False are log probabilities: Train's cross-entropy on them is the
    seed's probability cross-entropy (exactly while no value is clipped: clipping adds log(sum of the clipped))."""
    positive = 0.5 + 0.45 * np.abs(COS)  # every margin value stays positive
    loss = ArcfaceLoss(scale=1.0, from_logits=False)
    logits = np.asarray(MarginHead(loss)([positive.astype("float32"), LABELS])).astype("float64")
    shifted = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(shifted).sum(axis=1)) - shifted[ROWS, LABELS]
    np.testing.assert_allclose(cross_entropy, seed_arcface(positive, s=1.0, from_logits=False), rtol=1e-5)
    softmax = MarginSoftmax()  # under Train the Dense head gives logits; the margin acts on their softmax
    logits = np.asarray(MarginHead(softmax)([LOGITS.astype("float32"), LABELS])).astype("float64")
    cross_entropy = np.log(np.exp(logits).sum(axis=1)) - logits[ROWS, LABELS]
    np.testing.assert_allclose(cross_entropy, seed_margin_softmax(PROBS), rtol=1e-5)
    assert softmax.plain_head and not ArcfaceLoss().plain_head


SEED_KEYWORDS = [
    (ArcfaceLoss, dict(margin1=0.9, margin2=0.4, margin3=0.1, scale=32.0, from_logits=False, label_smoothing=0.1)),
    (ArcfaceLossSimple, dict(margin=0.45, scale=32.0, from_logits=False, label_smoothing=0.1)),
    (CosFaceLoss, dict(margin=0.3, scale=32.0, from_logits=False, label_smoothing=0.1)),
    (AirFaceLoss, dict(margin=0.3, scale=32.0, from_logits=False, label_smoothing=0.1)),
    (CurricularFaceLoss, dict(margin=0.45, scale=32.0, from_logits=False, label_smoothing=0.1, hard_scale=0.2)),
    (MagFaceLoss, dict(min_feature_norm=1.0, max_feature_norm=51.0, min_margin=0.4, max_margin=1.0, scale=32.0,
                       regularizer_loss_lambda=5.0, use_cosface_margin=True, curricular_hard_scale=0.3,
                       from_logits=False, label_smoothing=0.1)),
    (AdaFaceLoss, dict(margin=0.5, margin_alpha=0.22, mean_std_alpha=0.05, scale=32.0, from_logits=False,
                       label_smoothing=0.1)),
    (AdaCosLoss, dict(num_classes=100, scale=12.0, max_median=0.6, from_logits=False, label_smoothing=0.1)),
    (MarginSoftmax, dict(power=3, scale=0.5, scale_all=8.0, from_logits=True, label_smoothing=0.1)),
    (AcrTripLoss, dict(margin=0.4, scale=32.0, from_logits=False, label_smoothing=0.1)),
    (OfflineArcTripletLoss, dict(alpha=0.25)),
]


@pytest.mark.parametrize("cls,keywords", SEED_KEYWORDS, ids=[cls.__name__ for cls, _ in SEED_KEYWORDS])
def test_every_seed_keyword_is_accepted_and_kept(cls, keywords):
    loss = cls(**keywords, name="seed_name", reduction="sum")
    config = loss.get_config()
    assert {key: config[key] for key in keywords} == keywords
    assert config["name"] == "seed_name" and config["reduction"] == "sum"
    positional = cls(*keywords.values())  # the seed's positional order
    assert {key: positional.get_config()[key] for key in keywords} == keywords


def test_seed_keywords_have_the_seed_meaning():
    assert AdaCosLoss().num_classes == 1000 and AdaCosLoss().scale == pytest.approx(np.sqrt(2) * np.log(999))
    assert AdaCosLoss(scale=7.0).initial_state() == {"scale": 7.0}
    assert CurricularFaceLoss(hard_scale=0.3).initial_state() == {"t": 0.3}
    magface = MagFaceLoss(2, 60, 0.3, 0.9, 16)  # the fifth positional is the seed's scale
    assert (magface.lower_a, magface.upper_a, magface.lower_m, magface.upper_m, magface.scale) == (2, 60, 0.3, 0.9, 16)
    official = MagFaceLoss(lower_a=2, upper_a=60, lower_m=0.3, upper_m=0.9, lambda_g=5, scale=16)
    assert official.get_config() == MagFaceLoss(2, 60, 0.3, 0.9, 16, regularizer_loss_lambda=5).get_config()
    official_names = AdaFaceLoss(h=0.2, t_alpha=0.1)
    assert official_names.get_config() == AdaFaceLoss(margin_alpha=0.2, mean_std_alpha=0.1).get_config()
    with pytest.raises(ValueError, match="both min_feature_norm=2 and lower_a=3"):
        MagFaceLoss(min_feature_norm=2, lower_a=3)
    with pytest.raises(ValueError, match="from_logits must be True or False"):
        ArcfaceLoss(from_logits="no")


def test_margin_softmax_scale_is_the_seeds_linear_coefficient():
    """The seed's MarginSoftmax(scale=s): target (p**2 + s * p) / 2; the overall factor is scale_all (1.0)."""
    loss = MarginSoftmax(scale=0.9)
    assert (loss.scale, loss.scale_all, loss.from_logits, loss.logit_scale) == (0.9, 1.0, False, 1.0)
    np.testing.assert_allclose(per_sample(loss, LABELS, PROBS), seed_margin_softmax(PROBS, scale=0.9), rtol=1e-5)
    linear = MarginSoftmax(power=1, scale=0.5, from_logits=True)
    values = with_target(PROBS, PROBS[ROWS, LABELS] * 0.5)  # scale multiplies the target, not the logits
    np.testing.assert_allclose(per_sample(linear, LABELS, PROBS), seed_cross_entropy(ONE_HOT, values, True, 0.0),
                               rtol=1e-5)
    assert MarginSoftmax(margin_scale=0.7).get_config() == MarginSoftmax(scale=0.7).get_config()
    with pytest.raises(ValueError, match="overall factor is scale_all"):  # the old spelling of the logit scale
        get_margin_loss({"class_name": "MarginSoftmax", "config": {"margin_scale": 0.4, "scale": 64.0}})


ROUND_TRIP = [case[1] for case in CASES] + [OfflineArcTripletLoss(0.2), MagFaceLoss(use_cosface_margin=True)]


@pytest.mark.parametrize("loss", ROUND_TRIP, ids=[f"{type(x).__name__}_{i}" for i, x in enumerate(ROUND_TRIP)])
def test_serialisation_round_trip(loss):
    for restored in (keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss)))),
                     keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))):
        assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    if hasattr(loss, "initial_state"):
        restored = get_margin_loss(json.loads(json.dumps(serialize_margin_loss(loss))))
        assert restored.get_config() == loss.get_config() and restored.initial_state() == loss.initial_state()
        assert repr(restored) == repr(loss)


def test_seed_configs_load():
    """A config written by the seed's get_config (TF-Keras 2: reduction "auto", AdaFace's running statistics)."""
    seed_config = {"reduction": "auto", "name": None, "margin": 0.4, "margin_alpha": 0.333, "mean_std_alpha": 0.01,
                   "scale": 64.0, "from_logits": True, "label_smoothing": 0, "_batch_mean_": 25.5, "_batch_std_": 7.25}
    loss = get_margin_loss({"class_name": "AdaFaceLoss", "config": seed_config})
    assert loss.initial_state() == {"batch_mean": 25.5, "batch_std": 7.25} and loss.reduction == "sum_over_batch_size"
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.initial_state() == loss.initial_state()
    curricular = CurricularFaceLoss.from_config({"reduction": "auto", "name": "curricular_face_loss", "margin": 0.5,
                                                 "scale": 64.0, "from_logits": True, "label_smoothing": 0,
                                                 "hard_scale": 0.42})
    assert curricular.initial_state() == {"t": 0.42}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"y_true must be one-hot \(batch, 5\) or class ids .* shape \(6, 3\)"):
        ArcfaceLoss()(np.zeros((6, 3)), COS.astype("float32"))
    with pytest.raises(ValueError, match="NormDense\\(append_norm=True\\)"):
        MagFaceLoss()(LABELS[:1], np.zeros((1, 1), "float32"))
    with pytest.raises(ValueError, match="set emb_shape to the embedding width"):
        AcrTripLoss()(LABELS, COS.astype("float32"))
    with pytest.raises(ValueError, match="triples"):
        OfflineArcTripletLoss()(np.zeros(4), EMB[:4].astype("float32"))


def test_seed_names_of_the_losses_module():
    assert seed_names.ArcfaceLoss is ArcfaceLoss and seed_names.AcrTripLoss is AcrTripLoss
    assert "OfflineArcTripletLoss" in dir(seed_names)
    with pytest.raises(AttributeError, match="NoSuchLoss"):
        seed_names.NoSuchLoss  # noqa: B018


def random_problem(seed=0, samples=96, classes=10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(samples, 16)).astype("float32"), rng.integers(0, classes, samples)


@pytest.mark.parametrize("loss,one_hot", [(ArcfaceLoss(scale=16), False), (CosFaceLoss(scale=16), True)],
                         ids=["arcface_sparse", "cosface_one_hot"])
def test_compile_and_fit_on_norm_dense(loss, one_hot):
    """The seed's way of training: a model ending in NormDense, compile(loss=...), fit (JAX, jitted)."""
    x, labels = random_problem()
    y = np.eye(10, dtype="float32")[labels] if one_hot else labels
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, NormDense(10)(keras.layers.Dense(32)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    before = model.evaluate(x, y, batch_size=32, verbose=0)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history["loss"]
    after = model.evaluate(x, y, batch_size=32, verbose=0)
    assert np.isfinite(history).all() and history[1] < history[0] and after < 0.9 * before


def test_compile_with_the_norm_column():
    """MagFace reads NormDense(append_norm=True)'s last column; its regulariser is part of the compiled loss."""
    x, labels = random_problem(1, samples=64)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, NormDense(10, append_norm=True)(keras.layers.Dense(32)(inputs)))
    loss = MagFaceLoss(scale=16)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    got = model.evaluate(x, labels, batch_size=64, verbose=0)
    y_pred = np.asarray(model(x)).astype("float64")
    one_hot = np.eye(10)[labels]
    cos, norm = np.clip(y_pred[:, :-1], -1 + 1e-3, 1 - 1e-3), np.clip(-y_pred[:, -1], 10, 110)
    margin = (0.35 / 100 * (norm - 10) + 0.45)[:, None]
    values = np.minimum(np.where(one_hot > 0, np.cos(np.arccos(cos) + margin), cos), cos) * 16
    want = seed_cross_entropy(one_hot, values, True, 0.0) + 35 * (norm / 110**2 + 1 / norm)
    assert got == pytest.approx(want.mean(), rel=1e-4)


def test_norm_dense_takes_the_seeds_arguments_in_its_order():
    """The seed's NormDense(units, kernel_regularizer, loss_top_k, append_norm, partial_fc_split): the regulariser
    adds its loss, sub-centers and the norm column as the seed's; a class-split kernel is an error naming PartialFC."""
    from keras_insightface.models import NormDense

    layer = NormDense(6, keras.regularizers.L2(0.5), 2, True)
    outputs = layer(np.ones((3, 4), "float32"))
    assert outputs.shape == (3, 7) and layer.kernel.shape == (4, 12)
    kernel = np.asarray(layer.kernel)
    assert float(layer.losses[0]) == pytest.approx(0.5 * float((kernel**2).sum()), rel=1e-5)
    again = NormDense.from_config(layer.get_config())
    assert (again.units, again.loss_top_k, again.append_norm) == (6, 2, True)
    assert again.kernel_regularizer.get_config()["l2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="partial_fc_split=2.*PartialFC"):
        NormDense(6, None, 1, False, 2)
