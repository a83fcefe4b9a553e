"""The seed's stage loss names (its README's scheduler examples) mapped to what a ``Train`` stage trains here.

For each name: the stage plan it gives (kind, main term, loss object), and the per-sample value of what that stage
computes on fixed inputs against (1) a float64 numpy implementation of the seed's formula (losses.py of
leondgarse/Keras_insightface, commit 520a9da) and (2) values measured by running the seed's own losses.py (TF 2.21
+ tf_keras, ``TF_USE_LEGACY_KERAS=1``, one-hot labels, ``reduction=NONE``) on the same inputs.
"""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)
import jax
import keras
import numpy as np
import pytest

from keras_insightface import losses
from keras_insightface.heads.margin import MarginHead
from keras_insightface.losses.cross_entropy import MarginCrossEntropy
from keras_insightface.losses.distillation import DistillCosineLoss
from keras_insightface.losses.margin import SoftmaxLoss
from keras_insightface.losses.triplet import AcrTripTerm, get_triplet_loss
from keras_insightface.training.stages import plan_stage

LABELS = np.array([0, 0, 1, 1, 1, 2, 3, 3])  # class 2 appears once
ONE_HOT = np.eye(4)[LABELS]
EMB = np.array([
    [-0.595, 0.631, 1.039, 1.031], [1.818, -0.385, 0.544, -0.366], [-1.425, -0.704, 0.136, -0.915],
    [-0.191, 1.12, 0.57, 0.572], [0.345, -0.175, -1.868, 0.991], [-1.507, 0.216, -0.108, 0.137],
    [0.252, -0.334, 0.901, -1.285], [0.792, -1.692, 1.186, -0.509],
], "float32")
EMB2 = np.array([
    [-1.089, -0.497, -0.089, -0.96], [-0.34, 0.583, 0.169, -0.049], [0.988, 1.887, 1.563, -2.093],
    [1.371, 0.776, 0.408, -0.983], [-0.452, -0.21, -1.393, 1.234], [0.891, -0.013, -0.948, 1.346],
    [0.641, 1.063, -0.419, 2.396], [-0.139, 1.955, -2.005, 0.308],
], "float32")
# classifier cosines; row 6's target (-0.9) is past cos(pi - 0.5), where ArcFace takes its fallback
COS = np.array([
    [-0.667, 0.902, 0.699, 0.766], [0.878, 0.23, -0.245, -0.84], [0.377, 0.25, 0.283, -0.937],
    [0.847, -0.215, -0.817, 0.929], [0.448, 0.044, 0.503, 0.575], [0.317, -0.283, -0.344, 0.322],
    [-0.677, -0.568, -0.576, -0.9], [0.217, 0.006, 0.514, 0.866],
], "float32")
TRIPLES = np.array([  # [anchor, positive, negative] x 2
    [0.083, -2.522, -0.645, -1.225], [-1.407, -0.754, -1.17, 0.326], [0.465, 0.269, -0.829, -0.482],
    [1.678, -0.345, -0.021, -0.588], [0.527, 0.885, 0.796, 0.426], [0.71, -0.213, 0.621, -0.989],
], "float32")
LOGITS = COS * 3.0  # a softmax stage's classifier logits; the seed's softmax stage outputs softmax(LOGITS)

# Measured with the seed (commit 520a9da losses.py), see the module docstring; the calls:
SEED = {
    # BatchHardTripletLoss(0.25)(ONE_HOT, EMB)
    "batch_hard": [1.433373, 1.242262, 1.295217, 1.469659, 0.5699778, 0.0, 0.05894691, 0.2287561],
    # BatchAllTripletLoss(0.3)(ONE_HOT, EMB)
    "batch_all": [0.7124307, 0.7030426, 1.014409, 0.8836772, 0.6788133, 1.192093e-07, 0.454961, 0.4893781],
    # BatchHardTripletLossEuclidean(0.35)(ONE_HOT, EMB)
    "batch_hard_euclidean": [8.56848, 6.207922, 9.392228, 7.600747, 4.001892, 0.0, 0.0, 0.0],
    # ArcBatchHardTripletLoss(0.35)(ONE_HOT, EMB)
    "arc_batch_hard": [1.485403, 1.294292, 1.337969, 1.514729, 0.6127297, 0.0, 0.1030067, 0.2728159],
    # OfflineArcTripletLoss(0.35)(None, TRIPLES)
    "offline_arc": [0.1236543, 0.953887],
    # OfflineTripletLoss(alpha=0.35).__calculate_triplet_loss__(zeros, TRIPLES, 0.35) (measured 2026-12-06)
    "offline_cosine": [0.1327124, 0.9560887],
    # c = CenterLoss(num_classes=4, emb_shape=4, alpha=0.5); c(ONE_HOT, EMB), c.centers, c(ONE_HOT, EMB2), c.centers
    "center_step1": [1.447334, 1.94162, 1.690981, 0.9714825, 2.310578, 1.174069, 1.319043, 2.577902],
    "center_centers1": [[0.2038333, 0.041, 0.2638333, 0.1108333], [-0.158875, 0.030125, -0.14525, 0.081],
                        [-0.37675, 0.054, -0.027, 0.03425], [0.174, -0.3376667, 0.3478333, -0.299]],
    "center_step2": [1.616019, 0.3120294, 6.20385, 2.167514, 1.514936, 2.090304, 5.015507, 5.629282],
    "center_centers2": [[-0.1022778, 0.04166667, 0.1892222, -0.09427778],
                        [0.1390781, 0.3254531, -0.01853126, -0.179625],
                        [-0.05981249, 0.03725, -0.25725, 0.3621875], [0.1996666, 0.2778889, -0.1721111, 0.2513333]],
    # AcrTripLoss(margin=0.5, scale=16)(ONE_HOT, concat([tile(EMB, (1, 128)), COS])): the seed slices 512 columns
    "acr_trip": [48.58853, 10.90014, 26.87304, 45.1273, 21.73475, 17.83885, 7.651776, 0.6486101],
    # the same with label_smoothing=0.1
    "acr_trip_ls": [45.09062, 10.70067, 25.43581, 42.49184, 20.21196, 16.79398, 7.178737, 0.9781131],
    # distiller_loss_cosine(EMB2, EMB); then with EMB2[1, 2] = nan and EMB2[3] = inf
    "distill_cosine": [1.285988, 1.533094, 1.098199, 0.8952717, 0.1052029, 1.369079, 1.822891, 1.929405],
    "distill_cosine_nonfinite": [1.285988, 1.333316, 1.098199, 0.2571346, 0.1052029, 1.369079, 1.822891, 1.929405],
    # tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(ONE_HOT, softmax(LOGITS))
    "cce_ls": [5.175963, 0.4300081, 1.356909, 3.910292, 2.478819, 2.719634, 2.050684, 0.5883039],
    # scale_softmax(ONE_HOT, softmax(LOGITS)), the function of the seed's losses.py up to commit 7b515dc
    "scale_softmax": [5.503563, 0.168333, 1.279884, 4.030592, 2.583369, 2.823734, 2.11661, 0.4487289],
}


# ---------------------------------------------------------------- numpy forms of the seed's formulas (float64)


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_pairs(labels, emb):
    e = np_normalize(emb.astype("float64"))
    return e @ e.T, labels[:, None] == labels[None, :]


def np_batch_hard(labels, emb, alpha):
    sims, pos = np_pairs(labels, emb)
    return np.maximum(np.where(pos, -1, sims).max(1) - np.where(pos, sims, 1).min(1) + alpha, 0)


def np_batch_all(labels, emb, alpha):
    sims, pos = np_pairs(labels, emb)
    pos_term = np.where(pos, 1 - sims, 0).sum(1) / pos.sum(1)
    valid = ~pos & (np.where(pos, sims, 1).min(1, keepdims=True) - sims < alpha)
    return pos_term + np.where(valid, sims, 0).sum(1) / (valid.sum(1) + 1)


def np_batch_hard_squared(labels, emb, alpha):
    e = emb.astype("float64")
    dists = ((e[:, None] - e[None]) ** 2).sum(-1)
    _, pos = np_pairs(labels, emb)
    hard_neg = np.where(pos, dists.max(), dists).min(1)
    return np.maximum(np.where(pos, dists, 0).max(1) + alpha - hard_neg, 0)


def np_arc_margin(labels, emb, alpha):
    sims, pos = np_pairs(labels, emb)
    hard_pos = np.minimum(np.where(pos, sims, 1).min(1), 1.0)
    margin = np.cos(np.arccos(hard_pos) + alpha)
    valid = np.where(hard_pos > np.cos(np.pi - alpha), margin, -2 - margin)
    return np.maximum(np.where(pos, -1, sims).max(1) - valid, 0)


def np_offline_arc(emb, alpha):
    a, p, n = (np_normalize(emb.astype("float64"))[i::3] for i in range(3))
    margin = np.cos(np.arccos((a * p).sum(1)) + alpha)
    valid = np.where(margin > np.cos(np.pi - alpha), margin, -2 - margin)
    return np.maximum((a * n).sum(1) - valid, 0)


def np_center_steps(batches, labels, num_classes, alpha):
    """Per step: the loss against the current centers, then c_j -= alpha * sum(c_j - x_i) / (n_j + 1)."""
    centers, out = np.zeros((num_classes, batches[0].shape[1])), []
    for x in batches:
        x = x.astype("float64")
        loss = 0.5 * ((x - centers[labels]) ** 2).sum(1)
        new = centers.copy()
        for j in np.unique(labels):
            new[j] -= alpha * (centers[j] - x[labels == j]).sum(0) / ((labels == j).sum() + 1)
        centers = new
        out.append((loss, centers))
    return out


def np_cross_entropy(targets, values, from_logits, label_smoothing):
    """tf_keras.losses.categorical_crossentropy: smoothed targets; probabilities normalised and clipped."""
    targets = targets * (1 - label_smoothing) + label_smoothing / targets.shape[1]
    if from_logits:
        log_p = values - np.log(np.exp(values).sum(1, keepdims=True))
    else:
        log_p = np.log(np.clip(values / values.sum(1, keepdims=True), 1e-7, 1 - 1e-7))
    return -(targets * log_p).sum(1)


def np_acr_trip(labels, emb, cos, margin, scale, label_smoothing):
    sims, pos = np_pairs(labels, emb)
    violation = np.maximum(np.where(pos, -1, sims).max(1) - np.where(pos, sims, 1).min(1), 0)
    target = cos[np.arange(len(labels)), labels].astype("float64")
    theta = np.cos(np.arccos(target) + margin)
    valid = np.where(target > np.cos(np.pi - margin), theta, -2 - theta) - violation
    values = cos.astype("float64").copy()
    values[np.arange(len(labels)), labels] = valid
    return np_cross_entropy(np.eye(cos.shape[1])[labels], values * scale, True, label_smoothing)


def np_softmax(x):
    x = x.astype("float64")
    return np.exp(x) / np.exp(x).sum(1, keepdims=True)


def np_distiller_cosine(teacher, student):
    teacher = np.where(np.isfinite(teacher), teacher, np.sqrt(1 / teacher.shape[1])).astype("float64")
    teacher = teacher / (np.linalg.norm(teacher, axis=1, keepdims=True) + 1e-5)
    student = student / (np.linalg.norm(student, axis=1, keepdims=True) + 1e-5)
    return 1 - (teacher * student).sum(1)


def check(got, numpy_value, seed_value, atol=2e-5):
    np.testing.assert_allclose(np.asarray(got, "float64"), numpy_value, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(np.asarray(got, "float64"), seed_value, rtol=2e-5, atol=atol)


def plan(loss, **keys):
    return plan_stage(0, {"loss": loss, "epoch": 1, **keys})


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("make,kind,np_fn,alpha,seed_key", [
    (lambda: losses.BatchHardTripletLoss(0.25), "batch_hard_cosine", np_batch_hard, 0.25, "batch_hard"),
    (lambda: losses.BatchAllTripletLoss(0.3), "batch_all", np_batch_all, 0.3, "batch_all"),
    (lambda: losses.BatchHardTripletLossEuclidean(0.35), "batch_hard_squared", np_batch_hard_squared, 0.35,
     "batch_hard_euclidean"),
    (lambda: losses.ArcBatchHardTripletLoss(0.35), "batch_hard_arc_margin", np_arc_margin, 0.35, "arc_batch_hard"),
], ids=["BatchHard", "BatchAll", "BatchHardEuclidean", "ArcBatchHard"])
def test_seed_triplet_names_train_a_triplet_stage_with_the_seed_values(make, kind, np_fn, alpha, seed_key):
    loss = make()
    stage = plan(loss)
    assert (stage.kind, stage.main_term, stage.grouped, stage.embedding_loss) == ("triplet", "embedding", True, loss)
    assert (loss.kind, loss.alpha) == (kind, alpha)
    per_sample = loss.call(LABELS, EMB)
    check(per_sample, np_fn(LABELS, EMB, alpha), SEED[seed_key], atol=1e-4 if "euclidean" in seed_key else 2e-5)
    assert float(loss(LABELS, EMB)) == pytest.approx(np.mean(SEED[seed_key]), rel=1e-5, abs=1e-6)  # the batch mean
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == loss.get_config()


def test_batch_hard_mean_matches_the_seeds_reduced_loss():
    assert float(losses.BatchHardTripletLoss(0.25)(LABELS, EMB)) == pytest.approx(0.787274, rel=1e-5)  # seed, AUTO


@pytest.mark.parametrize("loss,label_smoothing,seed_key", [
    (keras.losses.CategoricalCrossentropy(label_smoothing=0.1), 0.1, "cce_ls"),
    ("categorical_crossentropy", 0.0, "scale_softmax"),
    (keras.losses.categorical_crossentropy, 0.0, "scale_softmax"),
    (losses.scale_softmax, 0.0, "scale_softmax"),
], ids=["CategoricalCrossentropy", "name", "function", "scale_softmax"])
def test_softmax_spellings_train_a_plain_softmax_stage(loss, label_smoothing, seed_key):
    """The seed's softmax stage: Dense -> softmax, cross-entropy of the probabilities (scale_softmax: the scale
    cancels). Here: the Dense logits through MarginHead(SoftmaxLoss), then the training step's cross-entropy."""
    stage = plan(loss)
    assert stage.kind == "softmax" and isinstance(stage.margin_loss, SoftmaxLoss)
    assert stage.margin_loss.label_smoothing == label_smoothing
    logits = MarginHead(stage.margin_loss)([LOGITS, LABELS], training=True)
    per_sample = MarginCrossEntropy(stage.margin_loss.label_smoothing, reduction=None)(LABELS, logits)
    check(per_sample, np_cross_entropy(ONE_HOT, np_softmax(LOGITS), False, label_smoothing), SEED[seed_key])


def test_scale_softmax_function_is_the_seeds_formula():
    probs = np_softmax(LOGITS).astype("float32")
    got = losses.scale_softmax(ONE_HOT, probs)
    check(got, np_cross_entropy(ONE_HOT, probs * 64.0, False, 0.0), SEED["scale_softmax"])
    got = losses.scale_softmax(LABELS, LOGITS, scale=2.0, from_logits=True, label_smoothing=0.2)  # class ids too
    np.testing.assert_allclose(got, np_cross_entropy(ONE_HOT, LOGITS * 2.0, True, 0.2), rtol=1e-5)


def test_center_loss_as_main_loss_is_a_center_stage_with_the_seeds_update():
    loss = losses.CenterLoss(num_classes=4, emb_shape=4)
    stage = plan(loss, triplet=10, alpha=0.25)
    assert (stage.kind, stage.main_term, stage.grouped, stage.embedding_loss) == ("center", "centerloss", False, loss)
    assert plan_stage(0, {"type": "center", "epoch": 1}).embedding_loss is None  # the run's CenterLoss
    want = np_center_steps([EMB, EMB2], LABELS, 4, 0.5)
    for step, x in enumerate([EMB, EMB2], start=1):
        check(loss([x, LABELS], training=True), want[step - 1][0], SEED[f"center_step{step}"])
        check(loss.centers, want[step - 1][1], SEED[f"center_centers{step}"])


def test_center_loss_seed_keywords(tmp_path):
    centers = np.arange(12, dtype="float32").reshape(3, 4)
    np.save(tmp_path / "centers.npy", centers)
    layer = losses.CenterLoss(3, 4, 0.25, str(tmp_path / "centers.npy"))  # the seed's positional order
    assert (layer.emb_shape, layer.alpha) == (4, 0.25)
    layer.build([(None, 4), (None,)])
    np.testing.assert_array_equal(np.asarray(layer.centers), centers)  # reloaded, as the seed's center backup
    fresh = losses.CenterLoss(3, initial_file=str(tmp_path / "missing.npy"))  # no file yet: zero centers
    fresh.build([(None, 4), (None,)])
    assert not np.asarray(fresh.centers).any()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (restored.emb_shape, restored.initial_file) == (4, str(tmp_path / "centers.npy"))
    with pytest.raises(ValueError, match="emb_shape=8.* width 4"):
        losses.CenterLoss(3, emb_shape=8).build([(None, 4), (None,)])
    with pytest.raises(ValueError, match=r"centers of shape \(3, 4\), CenterLoss needs \(3, 5\)"):
        losses.CenterLoss(3, initial_file=str(tmp_path / "centers.npy")).build([(None, 5), (None,)])


class FixedCosines(keras.layers.Layer):
    """A stand-in classifier whose cosines are ``COS`` whatever the embedding."""

    def call(self, embeddings):
        return keras.ops.convert_to_tensor(COS) + 0.0 * keras.ops.sum(embeddings)


@pytest.mark.parametrize("label_smoothing,seed_key", [(0.0, "acr_trip"), (0.1, "acr_trip_ls")])
def test_acr_trip_loss_is_an_arcface_stage_lowering_the_target_by_the_triplet_violation(label_smoothing, seed_key):
    loss = losses.AcrTripLoss(margin=0.5, scale=16.0, label_smoothing=label_smoothing)
    stage = plan(loss)
    assert (stage.kind, stage.margin_loss, stage.main_term, stage.grouped) == ("arcface", None, "embedding", True)
    want = np_acr_trip(LABELS, EMB, COS, 0.5, 16.0, label_smoothing)
    assert want[6] > 0 and np.ptp(want) > 1  # the fallback row is in, values spread
    term = AcrTripTerm(FixedCosines(), stage.embedding_loss)  # what the stage's training step computes
    values, cos = term(LABELS, EMB)
    check(values, want, SEED[seed_key], atol=1e-4)
    np.testing.assert_allclose(np.asarray(cos), COS, rtol=1e-6)  # the cosines it scored, for the accuracy
    seed_layout = np.concatenate([np.tile(EMB, (1, 128)), COS], axis=1)  # the seed's [embedding (512), cosines]
    check(loss.call(ONE_HOT, seed_layout), want, SEED[seed_key], atol=1e-4)


def test_distiller_loss_cosine_is_a_distill_stage():
    stage = plan(losses.distiller_loss_cosine)
    assert stage.kind == "distill" and isinstance(stage.embedding_loss, DistillCosineLoss)
    want = np_distiller_cosine(EMB2, EMB)
    check(stage.embedding_loss.call(EMB2, EMB), want, SEED["distill_cosine"], atol=5e-5)  # the seed adds 1e-5 to norms
    check(losses.distiller_loss_cosine(EMB2, EMB), want, SEED["distill_cosine"])
    teacher = EMB2.copy()
    teacher[1, 2], teacher[3] = np.nan, np.inf
    got = losses.distiller_loss_cosine(teacher, EMB)  # the function keeps the seed's fill for non-finite values
    check(got, np_distiller_cosine(teacher, EMB), SEED["distill_cosine_nonfinite"])


def test_offline_triplet_values_and_their_stages():
    """The seed's two offline triplet losses on mined triples; in a stage they are triplet stages (which need
    samples_per_mining: tests/training/test_offline_mining.py)."""
    loss = losses.OfflineArcTripletLoss(0.35)
    check(loss.call(None, TRIPLES), np_offline_arc(TRIPLES, 0.35), SEED["offline_arc"])
    a, p, n = (np_normalize(TRIPLES.astype("float64"))[i::3] for i in range(3))
    cosine = losses.OfflineTripletLoss(alpha=0.35)
    check(cosine.call(None, TRIPLES), np.maximum((a * n).sum(1) - (a * p).sum(1) + 0.35, 0), SEED["offline_cosine"])
    assert plan(loss).kind == plan(cosine).kind == "triplet"


def test_stage_errors_name_the_stage_and_the_fix():
    with pytest.raises(ValueError, match="own loss is the embedding term; weigh it with 'lossWeight', not 'triplet'"):
        plan(losses.BatchHardTripletLoss(), triplet=1)
    with pytest.raises(ValueError, match="own loss is the embedding term; .* not 'triplet'"):
        plan(losses.AcrTripLoss(), triplet=1)
    with pytest.raises(ValueError, match="own loss is the centerloss term; .* not 'centerloss'"):
        plan(losses.CenterLoss(4), centerloss=0.1)
    with pytest.raises(ValueError, match="lossTopK must be a positive integer, > 1 only with a margin loss"):
        plan(losses.AcrTripLoss(), lossTopK=3)
    with pytest.raises(ValueError, match="type 'softmax' does not fit the loss"):
        plan(losses.CenterLoss(4), type="softmax")
    with pytest.raises(ValueError, match="Stage 0: the loss function 'mean_squared_error' is not one a stage knows"):
        plan(keras.losses.mean_squared_error)
    with pytest.raises(ValueError, match="Stage 0: Unknown margin loss .*or a triplet, center"):
        plan(keras.losses.MeanSquaredError())
    for name in ("BatchHardTripletLossEuclideanAutoAlpha", "CenterLossCosine",
                 "distiller_loss_euclidean"):
        with pytest.raises(AttributeError, match=f"losses.{name} is not available: "):
            getattr(losses, name)


@pytest.mark.parametrize("kind,np_fn", [("batch_hard_squared", np_batch_hard_squared),
                                        ("batch_hard_arc_margin", np_arc_margin)])
def test_new_triplet_kinds_gradients_match_finite_differences(kind, np_fn):
    grad = np.asarray(jax.grad(lambda e: get_triplet_loss(kind)(LABELS, e, 0.35).sum())(EMB))
    x, want, h = EMB.astype("float64"), np.zeros(EMB.shape), 1e-6
    for index in np.ndindex(EMB.shape):
        step = np.zeros(EMB.shape)
        step[index] = h
        want[index] = (np_fn(LABELS, x + step, 0.35).sum() - np_fn(LABELS, x - step, 0.35).sum()) / (2 * h)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(grad, want, atol=2e-3 if kind == "batch_hard_squared" else 2e-4)
