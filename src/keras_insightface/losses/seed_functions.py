"""The seed's plain loss functions, ``losses.scale_softmax`` and ``losses.distiller_loss_cosine``, with its formulas.

Each works as a Keras loss function ``fn(y_true, y_pred)``. In a ``Train`` stage dict they name a stage kind, as
the seed reads a function's name: ``scale_softmax`` a softmax stage (``SoftmaxLoss``: a ``Dense`` classifier and
the cross-entropy of its logits) and ``distiller_loss_cosine`` a distill stage (``DistillCosineLoss``).

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.7, 0.2, 0.1]], "float32")  # a softmax output, as the seed's softmax stage gives
    >>> round(float(scale_softmax(np.array([[1.0, 0, 0]]), probs)[0]), 4)  # -log(0.7): the scale cancels
    0.3567
    >>> teacher, student = np.array([[3.0, 4.0]], "float32"), np.array([[4.0, 3.0]], "float32")
    >>> round(float(distiller_loss_cosine(teacher, student)[0]), 4)  # 1 - cos
    0.04
"""

import keras
from keras import ops

from keras_insightface.losses.margin import labels_and_targets

_NORM_EPS = 1e-5  # the seed adds it to both norms


def scale_softmax(y_true, y_pred, scale=64.0, from_logits=False, label_smoothing=0.0):
    """``categorical_crossentropy(y_true, y_pred * scale)`` per sample: the seed's function (its losses.py up to
    commit 7b515dc; the README of 520a9da still names it).

    ``y_pred`` is the softmax output (B, C); ``y_true`` one-hot (B, C) or class ids. With the default
    ``from_logits=False`` the scaled values are normalised to sum 1 again, so ``scale`` cancels and this is the
    cross-entropy of the softmax output.
    """
    y_pred = ops.cast(y_pred, "float32")
    _, targets = labels_and_targets(y_true, y_pred.shape[-1])
    return keras.losses.categorical_crossentropy(
        targets, y_pred * scale, from_logits=from_logits, label_smoothing=label_smoothing
    )


def distiller_loss_cosine(true_emb, pred_emb):
    """``1 - cos(teacher, student)`` per sample, each divided by its norm + 1e-5; a non-finite teacher value is
    replaced by ``sqrt(1 / D)`` first, as the seed does (``DistillCosineLoss``, what a stage trains, zeroes it)."""
    teacher, student = ops.cast(true_emb, "float32"), ops.cast(pred_emb, "float32")
    teacher = ops.where(ops.isfinite(teacher), teacher, (1.0 / teacher.shape[-1]) ** 0.5)
    teacher = teacher / (ops.norm(teacher, axis=-1, keepdims=True) + _NORM_EPS)
    student = student / (ops.norm(student, axis=-1, keepdims=True) + _NORM_EPS)
    return 1.0 - ops.sum(teacher * student, axis=-1)
