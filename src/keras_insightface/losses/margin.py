"""Margin-softmax losses by their seed names: ``ArcfaceLoss``, ``ArcfaceLossSimple``, ``CosFaceLoss``.

A margin loss is a small, serialisable description of how the target-class cosine is changed before the
softmax. ``MarginHead`` applies it inside the model (it sees the labels), so the training loss is a plain
cross-entropy on its logits. Stage dicts keep the seed's spelling: ``{"loss": ArcfaceLoss(scale=16)}``.

Example:
    >>> import numpy as np
    >>> loss = ArcfaceLoss(scale=16)
    >>> cos = np.array([[0.8, 0.1], [0.2, 0.5]], "float32")
    >>> logits = loss.logits(cos, np.array([0, 1]))
    >>> np.asarray(logits).astype(float).round(3).tolist()
    [[6.631, 1.6], [3.2, 0.378]]
"""

import math

from keras import ops

_EPS = 1e-7


class MarginLoss:
    """Base of the margin family: ``logits(cos, labels)`` returns scaled logits with the margin applied."""

    def __init__(self, scale=64.0, label_smoothing=0.0):
        if scale <= 0:
            raise ValueError(f"{type(self).__name__} scale must be positive, received scale={scale}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), received label_smoothing={label_smoothing}")
        self.scale, self.label_smoothing = float(scale), float(label_smoothing)

    def target_logit(self, target_cos):
        """The margin-adjusted cosine of the target class (before scaling)."""
        raise NotImplementedError

    def logits(self, cos, labels):
        onehot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), ops.shape(cos)[-1], dtype=cos.dtype)
        target = ops.sum(cos * onehot, axis=-1, keepdims=True)
        return (cos + onehot * (self.target_logit(target) - target)) * self.scale

    def get_config(self):
        return {"scale": self.scale, "label_smoothing": self.label_smoothing}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ArcfaceLoss(MarginLoss):
    """Combined margin ``cos(m1 * theta + m2) - m3`` (ArcFace m2=0.5; SphereFace-style m1; CosFace-style m3).

    Past ``theta = (pi - m2) / m1`` the curve stops decreasing; there the seed's fallback
    ``theta_min - cos(m1 * theta + m2) + m3`` with ``theta_min = -2 (1 + m3)`` keeps it monotonic.
    """

    def __init__(self, margin1=1.0, margin2=0.5, margin3=0.0, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        if margin1 <= 0:
            raise ValueError(f"ArcfaceLoss margin1 must be positive, received margin1={margin1}")
        self.margin1, self.margin2, self.margin3 = float(margin1), float(margin2), float(margin3)
        self.threshold = math.cos((math.pi - self.margin2) / self.margin1)
        self.theta_min = (-1 - self.margin3) * 2

    def target_logit(self, target_cos):
        clipped = ops.clip(target_cos, -1 + _EPS, 1 - _EPS)
        theta = ops.cos(ops.arccos(clipped) * self.margin1 + self.margin2) - self.margin3
        return ops.where(target_cos > self.threshold, theta, self.theta_min - theta)

    def get_config(self):
        return {"margin1": self.margin1, "margin2": self.margin2, "margin3": self.margin3, **super().get_config()}


class ArcfaceLossSimple(MarginLoss):
    """ArcFace additive angular margin via ``cos(theta + m) = cos*cos(m) - sin*sin(m)``, with the same fallback."""

    def __init__(self, margin=0.5, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin = float(margin)
        self.threshold = math.cos(math.pi - self.margin)

    def target_logit(self, target_cos):
        sin = ops.sqrt(ops.maximum(1 - ops.square(target_cos), 0.0))
        theta = target_cos * math.cos(self.margin) - sin * math.sin(self.margin)
        return ops.where(target_cos > self.threshold, theta, -2 - theta)

    def get_config(self):
        return {"margin": self.margin, **super().get_config()}


class CosFaceLoss(MarginLoss):
    """Additive cosine margin (CosFace / AM-softmax): target ``cos - m``."""

    def __init__(self, margin=0.35, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin = float(margin)

    def target_logit(self, target_cos):
        return target_cos - self.margin

    def get_config(self):
        return {"margin": self.margin, **super().get_config()}


MARGIN_LOSSES = {cls.__name__: cls for cls in (ArcfaceLoss, ArcfaceLossSimple, CosFaceLoss)}


def get_margin_loss(spec):
    """A margin loss from an instance, a registered class name, or a ``{"class_name", "config"}`` dict."""
    if isinstance(spec, MarginLoss):
        return spec
    if isinstance(spec, str) and spec in MARGIN_LOSSES:
        return MARGIN_LOSSES[spec]()
    if isinstance(spec, dict) and spec.get("class_name") in MARGIN_LOSSES:
        return MARGIN_LOSSES[spec["class_name"]](**spec.get("config", {}))
    raise ValueError(f"Unknown margin loss {spec!r}; available: {', '.join(MARGIN_LOSSES)}")


def serialize_margin_loss(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
