"""Triplet losses mined inside the batch, on L2-normalised embeddings (FaceNet, Schroff et al., CVPR 2015).

Every function maps ``(labels (B,), embeddings (B, D), alpha)`` to a per-sample loss, with masks instead of
boolean gathers so shapes stay static under ``jit``. Batch-hard mining follows Hermans et al., "In Defense of
the Triplet Loss" (2017); the cosine, batch-all, squared and arc-margin forms follow the seed Keras_insightface.
The seed's class names are here with the seed's meaning: ``BatchHardTripletLoss`` (kind ``batch_hard_cosine``),
``BatchAllTripletLoss`` (``batch_all``), ``BatchHardTripletLossEuclidean`` (``batch_hard_squared``),
``ArcBatchHardTripletLoss`` (``batch_hard_arc_margin``), ``OfflineTripletLoss`` (``offline_cosine``) and
``OfflineArcTripletLoss`` (``offline_arc``), the last two on offline-mined triples. ``AcrTripLoss`` is the seed's ArcFace loss with the batch-hard triplet violation taken off the
target logit; ``AcrTripTerm`` is its form for a training step, with the cosines from the run's classifier.

Example:
    >>> import numpy as np
    >>> labels = np.array([0, 0, 1])
    >>> embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], "float32")
    >>> np.asarray(batch_hard_triplet_cosine(labels, embeddings, alpha=0.2)).astype(float).round(3).tolist()
    [0.0, 0.4, 0.0]
    >>> round(float(TripletLoss("batch_hard_cosine", alpha=0.2)(labels, embeddings)), 3)  # mean over the batch
    0.133
"""

import math
import re

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize
from keras_insightface.losses.margin import ArcfaceLoss, labels_and_targets, target_cosine, target_mask

_EPS = 1e-7


def _prepare(labels, embeddings):
    """Normalised float32 embeddings, cosine similarities and the same-label mask (diagonal included)."""
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    emb = l2_normalize(ops.cast(embeddings, "float32"))
    return emb, ops.matmul(emb, ops.transpose(emb)), ops.equal(labels[:, None], labels[None, :])


def _off_diagonal(mask):
    return ops.logical_and(mask, ops.logical_not(ops.cast(ops.eye(ops.shape(mask)[0]), "bool")))


def _safe_sqrt(x):
    """sqrt with zero value and zero gradient at 0: the sqrt branch never sees a zero, so no inf * 0 = NaN."""
    positive = x > 1e-12
    return ops.where(positive, ops.sqrt(ops.where(positive, x, 1.0)), 0.0)


def batch_hard_triplet_cosine(labels, embeddings, alpha=0.35):
    """``relu(max negative cos - min positive cos + alpha)``; the seed's default. No negative counts as cos -1."""
    _, sims, pos_mask = _prepare(labels, embeddings)
    hardest_pos = ops.min(ops.where(pos_mask, sims, 1.0), axis=-1)
    hardest_neg = ops.max(ops.where(pos_mask, -1.0, sims), axis=-1)
    return ops.relu(hardest_neg - hardest_pos + alpha)


def batch_hard_triplet_euclidean(labels, embeddings, alpha=0.35):
    """``relu(max positive distance - min negative distance + alpha)``, Hermans et al.'s batch-hard.

    Self pairs are excluded from the positives (a class seen once has positive distance 0); no negative counts
    as distance 2, the largest between unit vectors. The square root is guarded so duplicated embeddings keep
    finite gradients.
    """
    emb, sims, pos_mask = _prepare(labels, embeddings)
    sq_norm = ops.sum(ops.square(emb), axis=-1)
    dists = _safe_sqrt(ops.maximum(sq_norm[:, None] + sq_norm[None, :] - 2.0 * sims, 0.0))
    hardest_pos = ops.max(ops.where(_off_diagonal(pos_mask), dists, 0.0), axis=-1)
    hardest_neg = ops.min(ops.where(pos_mask, 2.0, dists), axis=-1)
    return ops.relu(hardest_pos - hardest_neg + alpha)


def batch_all_triplet(labels, embeddings, alpha=0.35):
    """The seed's batch-all: mean ``1 - cos`` over positives, plus the mean cosine of the violating negatives.

    A negative j of sample i is counted when ``min positive cos_i - cos_ij < alpha``; its cosine sum is divided
    by (count + 1), so a sample with no such negative adds 0.
    """
    _, sims, pos_mask = _prepare(labels, embeddings)
    pos_float = ops.cast(pos_mask, "float32")
    pos_term = ops.sum(pos_float * (1.0 - sims), axis=-1) / ops.sum(pos_float, axis=-1)
    hardest_pos = ops.min(ops.where(pos_mask, sims, 1.0), axis=-1, keepdims=True)
    valid_neg = ops.logical_and(ops.logical_not(pos_mask), hardest_pos - sims < alpha)
    neg_float = ops.cast(valid_neg, "float32")
    neg_term = ops.sum(neg_float * sims, axis=-1) / (ops.sum(neg_float, axis=-1) + 1.0)
    return pos_term + neg_term


def arc_batch_hard_triplet(labels, embeddings, alpha=0.35):
    """Batch-hard on angles ``theta = arccos(cos)``: ``relu(max positive theta - min negative theta + alpha)``.

    ``alpha`` is in radians. Self pairs are excluded (a class seen once has positive angle 0); no negative
    counts as angle pi.
    """
    _, sims, pos_mask = _prepare(labels, embeddings)
    theta = ops.arccos(ops.clip(sims, -1.0 + _EPS, 1.0 - _EPS))
    hardest_pos = ops.max(ops.where(_off_diagonal(pos_mask), theta, 0.0), axis=-1)
    hardest_neg = ops.min(ops.where(pos_mask, math.pi, theta), axis=-1)
    return ops.relu(hardest_pos - hardest_neg + alpha)


def batch_hard_triplet_squared(labels, embeddings, alpha=0.35):
    """The seed's Euclidean batch-hard on the raw (not normalised) embeddings and squared distances:
    ``relu(max positive d^2 - min negative d^2 + alpha)``.

    A sample is its own positive (distance 0); no negative counts as the largest distance in the batch.
    """
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    emb = ops.cast(embeddings, "float32")
    pos_mask = ops.equal(labels[:, None], labels[None, :])
    sq_norm = ops.sum(ops.square(emb), axis=-1)
    dists = sq_norm[:, None] + sq_norm[None, :] - 2.0 * ops.matmul(emb, ops.transpose(emb))
    hardest_pos = ops.max(ops.where(pos_mask, dists, 0.0), axis=-1)
    hardest_neg = ops.min(ops.where(pos_mask, ops.max(dists), dists), axis=-1)
    return ops.relu(hardest_pos - hardest_neg + alpha)


def batch_hard_triplet_arc_margin(labels, embeddings, alpha=0.35):
    """The seed's ``ArcBatchHardTripletLoss``: ``relu(max negative cos - p')`` with ``p' = cos(theta_p + alpha)``,
    ``theta_p`` the angle of the hardest positive (a sample is its own positive), or ``-2 - p'`` where the hardest
    positive cosine is at most ``cos(pi - alpha)``. ``alpha`` is an angle margin in radians; no negative counts as
    cos -1. ``cos(theta + alpha)`` is expanded as ``c cos(alpha) - sqrt(1 - c^2) sin(alpha)``, exact at c = 1.
    """
    _, sims, pos_mask = _prepare(labels, embeddings)
    hardest_pos = ops.min(ops.where(pos_mask, sims, 1.0), axis=-1)
    sine = _safe_sqrt(ops.maximum(1.0 - ops.square(hardest_pos), 0.0))
    pos_margin = hardest_pos * math.cos(alpha) - sine * math.sin(alpha)
    pos_valid = ops.where(hardest_pos > math.cos(math.pi - alpha), pos_margin, -2.0 - pos_margin)
    hardest_neg = ops.max(ops.where(pos_mask, -1.0, sims), axis=-1)
    return ops.relu(hardest_neg - pos_valid)


def _triples(embeddings, what):
    """``(anchor, positive, negative)`` normalised embeddings of a batch laid out ``[a, p, n, a, p, n, ...]``."""
    batch = embeddings.shape[0]
    if batch is not None and batch % 3:
        raise ValueError(f"{what} needs a batch of [anchor, positive, negative] triples, received B={batch}")
    emb = l2_normalize(ops.cast(embeddings, "float32"))
    triples = ops.reshape(emb, (-1, 3, ops.shape(emb)[-1]))
    return triples[:, 0], triples[:, 1], triples[:, 2]


def offline_triplet(labels, embeddings, alpha=0.35):
    """Pre-mined triples laid out ``[anchor, positive, negative, ...]``: ``relu(|a-p|^2 - |a-n|^2 + alpha)``, (B/3,).

    ``labels`` are accepted for a uniform signature and unused.
    """
    anchor, positive, negative = _triples(embeddings, "offline_triplet")
    pos_dist = ops.sum(ops.square(anchor - positive), axis=-1)
    neg_dist = ops.sum(ops.square(anchor - negative), axis=-1)
    return ops.relu(pos_dist - neg_dist + alpha)


def offline_cosine_triplet(labels, embeddings, alpha=0.35):
    """The seed's ``OfflineTripletLoss`` on ``[anchor, positive, negative, ...]`` triples: ``relu(cos(a, n) -
    cos(a, p) + alpha)``, (B/3,). ``labels`` are unused."""
    anchor, positive, negative = _triples(embeddings, "offline_cosine_triplet")
    return ops.relu(ops.sum(anchor * negative, axis=-1) - ops.sum(anchor * positive, axis=-1) + alpha)


def offline_arc_triplet(labels, embeddings, alpha=0.35):
    """The seed's offline arc triplet on ``[anchor, positive, negative, ...]`` triples, (B/3,).

    ``relu(cos(a, n) - p')`` with ``p' = cos(theta_ap + alpha)``, or ``-2 - p'`` where ``p' <= cos(pi - alpha)``
    (the seed compares the margin-added value, so the fallback starts at ``theta_ap = pi - 2 alpha``). ``labels``
    are accepted for a uniform signature and unused.
    """
    anchor, positive, negative = _triples(embeddings, "offline_arc_triplet")
    pos_cos = ops.sum(anchor * positive, axis=-1)
    neg_cos = ops.sum(anchor * negative, axis=-1)
    pos_margin = ops.cos(ops.arccos(ops.clip(pos_cos, -1.0 + _EPS, 1.0 - _EPS)) + alpha)
    pos_valid = ops.where(pos_margin > math.cos(math.pi - alpha), pos_margin, -2.0 - pos_margin)
    return ops.relu(neg_cos - pos_valid)


TRIPLET_LOSSES = {
    "batch_hard_cosine": batch_hard_triplet_cosine,
    "batch_hard_euclidean": batch_hard_triplet_euclidean,
    "batch_all": batch_all_triplet,
    "arc_batch_hard": arc_batch_hard_triplet,
    "batch_hard_squared": batch_hard_triplet_squared,
    "batch_hard_arc_margin": batch_hard_triplet_arc_margin,
    "offline": offline_triplet,
    "offline_cosine": offline_cosine_triplet,
    "offline_arc": offline_arc_triplet,
}
# kinds that read batches of offline-mined triples (Train's samples_per_mining)
OFFLINE_KINDS = ("offline", "offline_cosine", "offline_arc")


def get_triplet_loss(name):
    """The triplet function registered under ``name`` in ``TRIPLET_LOSSES``."""
    if name not in TRIPLET_LOSSES:
        raise ValueError(f"Unknown triplet loss {name!r}, expected one of {sorted(TRIPLET_LOSSES)}")
    return TRIPLET_LOSSES[name]


@keras.saving.register_keras_serializable(package="keras_insightface")
class TripletLoss(keras.losses.Loss):
    """Keras loss over ``y_true`` = integer labels (B,) and ``y_pred`` = embeddings (B, D); ``kind`` names the mining.

    ``alpha`` is the margin (radians for ``arc_batch_hard``); the seed's default is 0.35.
    """

    def __init__(self, kind="batch_hard_cosine", alpha=0.35, name="triplet_loss", **kwargs):
        self.fn = get_triplet_loss(kind)
        super().__init__(name=name, **kwargs)
        self.kind, self.alpha = kind, float(alpha)

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, self.alpha)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "alpha": self.alpha}


class SeedTripletLoss(TripletLoss):
    """Base of the seed's triplet class names: ``Name(alpha=0.35)``, the kind fixed by the class (``KIND``)."""

    KIND = None

    def __init__(self, alpha=0.35, name=None, **kwargs):
        name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        super().__init__(self.KIND, alpha=alpha, name=name, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("kind")
        return config


@keras.saving.register_keras_serializable(package="keras_insightface")
class BatchHardTripletLoss(SeedTripletLoss):
    """The seed's ``BatchHardTripletLoss(alpha=0.35)``: ``batch_hard_triplet_cosine`` (cosines of normalised
    embeddings, ``relu(hardest negative cos - hardest positive cos + alpha)``)."""

    KIND = "batch_hard_cosine"


@keras.saving.register_keras_serializable(package="keras_insightface")
class BatchAllTripletLoss(SeedTripletLoss):
    """The seed's ``BatchAllTripletLoss(alpha=0.35)``: ``batch_all_triplet``."""

    KIND = "batch_all"


@keras.saving.register_keras_serializable(package="keras_insightface")
class BatchHardTripletLossEuclidean(SeedTripletLoss):
    """The seed's ``BatchHardTripletLossEuclidean(alpha=0.35)``: ``batch_hard_triplet_squared`` (raw embeddings,
    squared distances)."""

    KIND = "batch_hard_squared"


@keras.saving.register_keras_serializable(package="keras_insightface")
class ArcBatchHardTripletLoss(SeedTripletLoss):
    """The seed's ``ArcBatchHardTripletLoss(alpha=0.35)``: ``batch_hard_triplet_arc_margin``."""

    KIND = "batch_hard_arc_margin"


@keras.saving.register_keras_serializable(package="keras_insightface")
class OfflineTripletLoss(SeedTripletLoss):
    """The seed's ``OfflineTripletLoss(alpha=0.35)``: ``offline_cosine_triplet`` on embeddings laid out as
    ``[anchor, positive, negative, ...]``; a ``Train`` stage takes it with ``samples_per_mining`` > 0."""

    KIND = "offline_cosine"


@keras.saving.register_keras_serializable(package="keras_insightface")
class OfflineArcTripletLoss(SeedTripletLoss):
    """The seed's ``OfflineArcTripletLoss(alpha=0.35)``: ``offline_arc_triplet`` on embeddings laid out as
    ``[anchor, positive, negative, ...]``, one value per triple; ``y_true`` is unused. It needs batches of mined
    triples: a ``Train`` stage takes it with ``samples_per_mining`` > 0 (the seed's offline-mined dataset).

    Example:
        >>> import numpy as np
        >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], "float32")  # cos(a, p) = 0.8, cos(a, n) = 0.6
        >>> round(float(OfflineArcTripletLoss(alpha=0.35)(np.zeros(3), emb)), 4)  # 0.6 - cos(acos(0.8) + 0.35)
        0.0542
    """

    KIND = "offline_arc"


@keras.saving.register_keras_serializable(package="keras_insightface")
class AcrTripLoss(keras.losses.Loss):
    """The seed's ``AcrTripLoss``: ArcFace whose target logit also loses the sample's batch-hard triplet violation.

    ``y_pred`` is the seed's layout, ``concatenate([embedding, NormDense cosines])``: the first ``emb_shape``
    columns (the seed fixes 512) are the embedding, the rest the cosines (B, C); ``y_true`` one-hot (B, C) or
    class ids (B,) / (B, 1). Per sample: ``v = max(hardest negative cos - hardest positive cos, 0)`` on the
    normalised embeddings (a sample is its own positive), target ``cos(theta + margin) - v`` (``-2 - cos(theta +
    margin) - v`` past ``theta = pi - margin``), other classes their cosine, all times ``scale``, then the seed's
    cross-entropy (``from_logits``, ``label_smoothing`` as in ``ArcfaceLoss``). The violation is not detached, so
    it also trains the embedding.
    """

    def __init__(self, margin=0.5, scale=64.0, from_logits=True, label_smoothing=0.0, emb_shape=512,
                 name="acr_trip_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if emb_shape < 1:
            raise ValueError(f"AcrTripLoss emb_shape must be a positive width, received emb_shape={emb_shape}")
        self.arcface = ArcfaceLoss(margin2=margin, scale=scale, from_logits=from_logits,
                                   label_smoothing=label_smoothing)
        self.margin, self.emb_shape = float(margin), int(emb_shape)

    def call(self, y_true, y_pred):
        width = y_pred.shape[-1]
        if width is not None and width <= self.emb_shape:
            raise ValueError(f"AcrTripLoss expects y_pred = [embedding ({self.emb_shape}), cosines], received "
                             f"width {width}; set emb_shape to the embedding width")
        return self.per_sample(y_true, y_pred[:, : self.emb_shape], y_pred[:, self.emb_shape :])

    def per_sample(self, y_true, embeddings, cos):
        """The per-sample loss from the embeddings (B, D) and the classifier's cosines (B, C) given apart."""
        cos = ops.cast(cos, "float32")
        labels, targets = labels_and_targets(y_true, cos.shape[-1])
        violation = batch_hard_triplet_cosine(labels, embeddings, alpha=0.0)
        is_target = target_mask(cos, labels)
        target = self.arcface.target_logit(target_cosine(cos, is_target)) - violation[:, None]
        values = ops.where(is_target, target, cos) * self.arcface.scale
        return keras.losses.categorical_crossentropy(
            targets, values, from_logits=self.arcface.from_logits, label_smoothing=self.arcface.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.arcface.scale,
                "from_logits": self.arcface.from_logits, "label_smoothing": self.arcface.label_smoothing,
                "emb_shape": self.emb_shape}


class AcrTripTerm(keras.layers.Layer):
    """``(labels (B,), embeddings (B, D)) -> (AcrTripLoss per sample (B,), the head's cosines (B, C))``.

    How a ``Train`` stage trains with ``AcrTripLoss``: ``head`` is the run's cosine classifier (``NormDense``),
    tracked here so its kernel trains with the embedding; the layer owns no weights of its own.
    """

    def __init__(self, head, loss, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(loss, AcrTripLoss):
            raise ValueError(f"AcrTripTerm needs an AcrTripLoss, received {loss!r}")
        self.head, self.acr_trip = head, loss
        self.built = True

    def call(self, labels, embeddings):
        cos = self.head(embeddings)
        return self.acr_trip.per_sample(labels, embeddings, cos), cos
