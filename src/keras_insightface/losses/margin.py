"""The margin-softmax family: ArcFace, SphereFace, CosFace, CurricularFace, AirFace, MagFace, AdaFace, AdaCos.

A margin loss is a small, serialisable description of how the cosines are turned into logits before the
softmax. ``MarginHead`` applies it inside the model (it sees the labels), so the training loss is a plain
cross-entropy on its logits. Stage dicts keep the seed's spelling: ``{"loss": ArcfaceLoss(scale=16)}``.

Some losses keep running statistics (CurricularFace ``t``, AdaFace ``batch_mean``/``batch_std``, AdaCos
``scale``). The loss objects stay stateless: ``compute`` takes the statistics and returns the new ones, and
``MarginHead`` stores them as non-trainable model variables, so they are saved and restored with the weights.
MagFace and AdaFace read the embedding norm (``needs_norm``), which ``NormDense(append_norm=True)`` appends.

Example:
    >>> import numpy as np
    >>> loss = ArcfaceLoss(scale=16)
    >>> cos = np.array([[0.8, 0.1], [0.2, 0.5]], "float32")
    >>> logits = loss.logits(cos, np.array([0, 1]))
    >>> np.asarray(logits).astype(float).round(3).tolist()
    [[6.631, 1.6], [3.2, 0.378]]

    A training step of a loss with running statistics returns the updated ones (here ``t = 0.01 * 0.65``):

    >>> curricular = CurricularFaceLoss(scale=16)
    >>> logits, state, extra = curricular.compute(cos, np.array([0, 1]), curricular.initial_state(), training=True)
    >>> round(float(state["t"]), 6), extra
    (0.0065, None)
"""

import math

from keras import ops

_EPS = 1e-7


def _one_hot(cos, labels):
    """Boolean (B, C) mask of the target classes."""
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.cast(ops.one_hot(labels, ops.shape(cos)[-1], dtype="float32"), "bool")


def _target(cos, is_target):
    """The target-class cosine of each sample, shape (B, 1)."""
    return ops.sum(ops.where(is_target, cos, ops.zeros_like(cos)), axis=-1, keepdims=True)


def _angle(cos, eps=_EPS):
    """``arccos`` of the cosine clipped away from +-1, where the derivative of arccos is infinite."""
    return ops.arccos(ops.clip(cos, -1 + eps, 1 - eps))


class MarginLoss:
    """Base of the margin family.

    ``compute(cos, labels, state, norms, training)`` returns ``(logits, new_state, extra)``: the scaled float32
    logits (B, C), the running statistics after this batch (``state`` itself when nothing changes) and an
    optional per-sample extra loss (B,) that is added to the cross-entropy. Stateless losses only define
    ``target_logit``, the margin-adjusted target cosine.
    """

    needs_norm = False
    plain_head = False  # True: logits from an unnormalised Dense head (SoftmaxLoss)

    def __init__(self, scale=64.0, label_smoothing=0.0):
        if scale <= 0:
            raise ValueError(f"{type(self).__name__} scale must be positive, received scale={scale}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), received label_smoothing={label_smoothing}")
        self.scale, self.label_smoothing = float(scale), float(label_smoothing)

    def initial_state(self):
        """Initial running statistics ``{name: float}``; ``{}`` for a stateless loss."""
        return {}

    def target_logit(self, target_cos):
        """The margin-adjusted cosine of the target class (before scaling)."""
        raise NotImplementedError

    def compute(self, cos, labels, state, norms=None, training=False):
        """``-> (logits (B, C) float32, new_state, extra (B,) or None)``; ``training`` updates the statistics."""
        cos = ops.cast(cos, "float32")
        is_target = _one_hot(cos, labels)
        return ops.where(is_target, self.target_logit(_target(cos, is_target)), cos) * self.scale, state, None

    def logits(self, cos, labels, norms=None):
        """Logits with the initial statistics and no update (a stateless convenience)."""
        return self.compute(cos, labels, self.initial_state(), norms=norms)[0]

    def _norms(self, norms):
        if norms is None:
            raise ValueError(f"{type(self).__name__} needs the embedding norms (NormDense(append_norm=True))")
        return ops.reshape(ops.cast(norms, "float32"), (-1,))

    def get_config(self):
        return {"scale": self.scale, "label_smoothing": self.label_smoothing}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ArcfaceLoss(MarginLoss):
    """Combined margin ``cos(m1 * theta + m2) - m3`` (ArcFace m2=0.5; SphereFace-style m1; CosFace-style m3).

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019. Past
    ``theta = (pi - m2) / m1`` the curve stops decreasing; there the seed's fallback
    ``theta_min - cos(m1 * theta + m2) + m3`` with ``theta_min = -2 (1 + m3)`` keeps it monotonic.
    """

    def __init__(self, margin1=1.0, margin2=0.5, margin3=0.0, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        if margin1 <= 0:
            raise ValueError(f"{type(self).__name__} margin1 must be positive, received margin1={margin1}")
        self.margin1, self.margin2, self.margin3 = float(margin1), float(margin2), float(margin3)
        self.threshold = math.cos((math.pi - self.margin2) / self.margin1)
        self.theta_min = (-1 - self.margin3) * 2

    def target_logit(self, target_cos):
        theta = ops.cos(_angle(target_cos) * self.margin1 + self.margin2) - self.margin3
        return ops.where(target_cos > self.threshold, theta, self.theta_min - theta)

    def get_config(self):
        return {"margin1": self.margin1, "margin2": self.margin2, "margin3": self.margin3, **super().get_config()}


class SphereFaceLoss(ArcfaceLoss):
    """Multiplicative angular margin ``cos(m * theta)``: the combined form with m1=margin, m2=m3=0.

    Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017, in the normalised
    form of the ArcFace paper; past ``theta = pi / m`` the ArcfaceLoss fallback keeps the target monotonic.
    """

    def __init__(self, margin=1.35, scale=64.0, label_smoothing=0.0):
        super().__init__(margin1=margin, margin2=0.0, margin3=0.0, scale=scale, label_smoothing=label_smoothing)
        self.margin = float(margin)

    def get_config(self):
        return {"margin": self.margin, **MarginLoss.get_config(self)}


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
    """Additive cosine margin: target ``cos - m``.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018 (also AM-softmax).
    """

    def __init__(self, margin=0.35, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin = float(margin)

    def target_logit(self, target_cos):
        return target_cos - self.margin

    def get_config(self):
        return {"margin": self.margin, **super().get_config()}


class CurricularFaceLoss(MarginLoss):
    """ArcFace target plus curriculum re-weighting of the hard negatives.

    Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face Recognition", CVPR 2020,
    as the official code: the target is ``ct = cos(theta + m)`` (``cos - sin(pi - m) * m`` past
    ``theta = pi - m``); a non-target cosine above ``ct`` is a hard negative and becomes ``cos * (t + cos)``.
    ``t``, the running mean of the target cosine (EMA rate ``t_alpha``, no gradient), is updated from the batch
    first and then used, so easy samples dominate early and hard negatives weigh more as ``t`` grows.
    """

    def __init__(self, margin=0.5, scale=64.0, t_alpha=0.01, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin, self.t_alpha = float(margin), float(t_alpha)
        self.threshold = math.cos(math.pi - self.margin)
        self.mm = math.sin(math.pi - self.margin) * self.margin

    def initial_state(self):
        return {"t": 0.0}

    def compute(self, cos, labels, state, norms=None, training=False):
        cos = ops.clip(ops.cast(cos, "float32"), -1.0, 1.0)
        is_target = _one_hot(cos, labels)
        target = _target(cos, is_target)
        ct = ops.cos(_angle(target) + self.margin)
        final = ops.where(target > self.threshold, ct, target - self.mm)
        t = ops.cast(state["t"], "float32")
        if training:
            t = ops.stop_gradient(self.t_alpha * ops.mean(target) + (1 - self.t_alpha) * t)
            state = {"t": t}
        others = ops.where(cos > ct, cos * (t + cos), cos)
        return ops.where(is_target, final, others) * self.scale, state, None

    def get_config(self):
        return {"margin": self.margin, "t_alpha": self.t_alpha, **super().get_config()}


class AirFaceLoss(MarginLoss):
    """Linear-arc logits: every class ``(pi - 2 theta) / pi``, the target ``(pi - 2 (theta + m)) / pi``.

    Li et al., "AirFace: Lightweight and Efficient Model for Face Recognition", ICCVW 2019: a logit linear in
    the angle keeps the gradient constant over theta instead of vanishing near 0 and pi.
    """

    def __init__(self, margin=0.4, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin = float(margin)

    def compute(self, cos, labels, state, norms=None, training=False):
        cos = ops.cast(cos, "float32")
        theta = _angle(cos) + ops.cast(_one_hot(cos, labels), "float32") * self.margin
        return (math.pi - 2 * theta) / math.pi * self.scale, state, None

    def get_config(self):
        return {"margin": self.margin, **super().get_config()}


class MagFaceLoss(MarginLoss):
    """ArcFace with a margin growing with the embedding norm, plus a norm regulariser.

    Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality Assessment", CVPR 2021,
    as the official code: ``a = clip(||x||, lower_a, upper_a)``, margin ``m(a)`` linear from ``lower_m`` at
    ``lower_a`` to ``upper_m`` at ``upper_a``, target ``cos(theta + m(a))`` (``cos - sin(pi - m) * m`` past
    ``theta = pi - m``), and the extra loss ``lambda_g * (a / upper_a**2 + 1 / a)`` per sample, which pushes
    the norm up for easy (high-quality) samples. The gradient flows into the norm through both terms.
    """

    needs_norm = True

    def __init__(self, lower_a=10.0, upper_a=110.0, lower_m=0.45, upper_m=0.8, lambda_g=35.0, scale=64.0,
                 label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        if not 0 < lower_a < upper_a:
            raise ValueError(f"MagFaceLoss needs 0 < lower_a < upper_a, received {lower_a=}, {upper_a=}")
        self.lower_a, self.upper_a, self.lower_m, self.upper_m = map(float, (lower_a, upper_a, lower_m, upper_m))
        self.lambda_g = float(lambda_g)

    def compute(self, cos, labels, state, norms=None, training=False):
        a = ops.clip(self._norms(norms), self.lower_a, self.upper_a)
        m = (self.upper_m - self.lower_m) / (self.upper_a - self.lower_a) * (a - self.lower_a) + self.lower_m
        m = m[:, None]
        cos = ops.clip(ops.cast(cos, "float32"), -1.0, 1.0)
        is_target = _one_hot(cos, labels)
        target = _target(cos, is_target)
        final = ops.where(
            target > ops.cos(math.pi - m), ops.cos(_angle(target) + m), target - ops.sin(math.pi - m) * m
        )
        extra = self.lambda_g * (a / self.upper_a**2 + 1 / a)
        return ops.where(is_target, final, cos) * self.scale, state, extra

    def get_config(self):
        return {
            "lower_a": self.lower_a, "upper_a": self.upper_a, "lower_m": self.lower_m, "upper_m": self.upper_m,
            "lambda_g": self.lambda_g, **super().get_config(),
        }


class AdaFaceLoss(MarginLoss):
    """Margin adapted to image quality, measured by the embedding norm relative to the batch statistics.

    Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022, as the official head.py:
    ``z = clip((||x|| - batch_mean) / (batch_std + eps) * h, -1, 1)`` (norms clipped to [0.001, 100], no
    gradient); target ``cos(clip(theta - m z, eps, pi - eps)) - (m + m z)``: ArcFace-like for low-quality
    (small-norm) samples, CosFace-like for high-quality ones. ``batch_mean``/``batch_std`` are EMAs (rate
    ``t_alpha``) of the batch mean and unbiased std of the norms, updated first and then used.
    """

    needs_norm = True
    eps = 1e-3

    def __init__(self, margin=0.4, h=0.333, t_alpha=0.01, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.margin, self.h, self.t_alpha = float(margin), float(h), float(t_alpha)

    def initial_state(self):
        return {"batch_mean": 20.0, "batch_std": 100.0}

    def compute(self, cos, labels, state, norms=None, training=False):
        norms = ops.stop_gradient(ops.clip(self._norms(norms), 0.001, 100.0))
        mean, std = ops.cast(state["batch_mean"], "float32"), ops.cast(state["batch_std"], "float32")
        if training:
            count = ops.cast(ops.shape(norms)[0], "float32")
            batch_mean = ops.mean(norms)
            batch_std = ops.sqrt(ops.sum(ops.square(norms - batch_mean)) / ops.maximum(count - 1, 1.0))
            mean = ops.stop_gradient(self.t_alpha * batch_mean + (1 - self.t_alpha) * mean)
            std = ops.stop_gradient(self.t_alpha * batch_std + (1 - self.t_alpha) * std)
            state = {"batch_mean": mean, "batch_std": std}
        scaler = ops.clip((norms - mean) / (std + self.eps) * self.h, -1.0, 1.0)[:, None]
        cos = ops.clip(ops.cast(cos, "float32"), -1 + self.eps, 1 - self.eps)
        is_target = _one_hot(cos, labels)
        theta = ops.clip(ops.arccos(_target(cos, is_target)) - self.margin * scaler, self.eps, math.pi - self.eps)
        final = ops.cos(theta) - (self.margin + self.margin * scaler)
        return ops.where(is_target, final, cos) * self.scale, state, None

    def get_config(self):
        return {"margin": self.margin, "h": self.h, "t_alpha": self.t_alpha, **super().get_config()}


class AdaCosLoss(MarginLoss):
    """No margin; the scale adapts to the batch (dynamic AdaCos).

    Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively Learning Deep Face
    Representations", CVPR 2019: the scale starts at ``sqrt(2) * log(num_classes - 1)``; each training batch
    first sets ``scale = log(B_avg) / cos(min(max_median, theta_med))``, ``B_avg`` the batch mean of the summed
    ``exp(scale * cos)`` over the non-target classes and ``theta_med`` the (lower) median target angle, without
    gradient, then uses it: logits ``scale * cos``.
    """

    def __init__(self, num_classes, max_median=math.pi / 4, label_smoothing=0.0):
        if num_classes < 3:
            raise ValueError(f"AdaCosLoss needs num_classes >= 3, received num_classes={num_classes}")
        super().__init__(math.sqrt(2) * math.log(num_classes - 1), label_smoothing)
        self.num_classes, self.max_median = int(num_classes), float(max_median)

    def initial_state(self):
        return {"scale": self.scale}

    def compute(self, cos, labels, state, norms=None, training=False):
        cos = ops.cast(cos, "float32")
        scale = ops.cast(state["scale"], "float32")
        if training:
            is_target = _one_hot(cos, labels)
            count = ops.shape(cos)[0]
            others = ops.where(is_target, -1e30, scale * cos)
            log_b_avg = ops.logsumexp(others) - ops.log(ops.cast(count, "float32"))
            theta = ops.sort(_angle(_target(cos, is_target))[:, 0])
            theta_med = ops.take(theta, (count - 1) // 2)
            scale = ops.stop_gradient(log_b_avg / ops.cos(ops.minimum(self.max_median, theta_med)))
            state = {"scale": scale}
        return scale * cos, state, None

    def get_config(self):
        return {"num_classes": self.num_classes, "max_median": self.max_median, "label_smoothing": self.label_smoothing}


class MarginSoftmax(MarginLoss):
    """The seed's margin softmax: a polynomial of the target cosine, ``(cos**power + margin_scale * cos) / 2``.

    As the seed, ``margin_scale == 0`` gives ``cos**power`` and ``power == 1`` gives ``margin_scale * cos``.
    """

    def __init__(self, power=2, margin_scale=0.4, scale=64.0, label_smoothing=0.0):
        super().__init__(scale, label_smoothing)
        self.power, self.margin_scale = power, float(margin_scale)

    def target_logit(self, target_cos):
        if self.power != 1 and self.margin_scale == 0:
            return ops.power(target_cos, self.power)
        if self.power == 1 and self.margin_scale != 0:
            return target_cos * self.margin_scale
        return (ops.power(target_cos, self.power) + target_cos * self.margin_scale) / 2

    def get_config(self):
        return {"power": self.power, "margin_scale": self.margin_scale, **super().get_config()}


class SoftmaxLoss(MarginLoss):
    """Plain softmax: the logits of an unnormalised ``Dense`` classifier, no margin, no scale.

    The seed's ``categorical_crossentropy`` stage; ``plain_head`` tells ``Train`` to use a ``Dense`` head
    (with bias) instead of the cosine ``NormDense``.
    """

    plain_head = True

    def __init__(self, label_smoothing=0.0):
        super().__init__(1.0, label_smoothing)

    def compute(self, cos, labels, state, norms=None, training=False):
        return ops.cast(cos, "float32"), state, None

    def get_config(self):
        return {"label_smoothing": self.label_smoothing}


MARGIN_LOSSES = {
    cls.__name__: cls
    for cls in (
        ArcfaceLoss, ArcfaceLossSimple, CosFaceLoss, SphereFaceLoss, CurricularFaceLoss, AirFaceLoss, MagFaceLoss,
        AdaFaceLoss, AdaCosLoss, MarginSoftmax, SoftmaxLoss,
    )
}
ALIASES = {"softmax": "SoftmaxLoss", "categorical_crossentropy": "SoftmaxLoss"}


def get_margin_loss(spec):
    """A margin loss from an instance, a registered class name, or a ``{"class_name", "config"}`` dict."""
    if isinstance(spec, MarginLoss):
        return spec
    if isinstance(spec, str) and ALIASES.get(spec, spec) in MARGIN_LOSSES:
        return MARGIN_LOSSES[ALIASES.get(spec, spec)]()
    if isinstance(spec, dict) and spec.get("class_name") in MARGIN_LOSSES:
        return MARGIN_LOSSES[spec["class_name"]](**spec.get("config", {}))
    raise ValueError(f"Unknown margin loss {spec!r}; available: {', '.join(MARGIN_LOSSES)}")


def serialize_margin_loss(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
