"""The margin-softmax family: ArcFace, SphereFace, CosFace, CurricularFace, AirFace, MagFace, AdaFace, AdaCos.

Each margin loss is a ``keras.losses.Loss`` with the seed's constructor keywords, used two ways:

- ``model.compile(loss=ArcfaceLoss(scale=16))`` on a model ending in ``NormDense`` (the seed's way):
  ``loss(y_true, y_pred)`` with ``y_true`` one-hot (B, C) or class ids (B,) / (B, 1) and ``y_pred`` the cosines
  (B, C) (MagFace / AdaFace: (B, C + 1), ``-||x||`` last, from ``NormDense(append_norm=True)``) is the seed's
  ``categorical_crossentropy(y_true, margin values, from_logits, label_smoothing)``, plus MagFace's regulariser.
- In a stage dict, ``{"loss": ArcfaceLoss(scale=16)}``: ``MarginHead`` applies ``compute`` inside the model (it
  sees the labels) and ``Train`` adds a cross-entropy on its logits.

Some losses keep running statistics (CurricularFace ``t``, AdaFace ``batch_mean``/``batch_std``, AdaCos
``scale``). ``compute`` takes the statistics and returns the new ones, and ``MarginHead`` stores them as
non-trainable model variables, so they are saved and restored with the weights. A compiled Keras loss has no
place for state under JAX, so there each batch uses its own statistics (see each class).

Example:
    >>> import numpy as np
    >>> loss = ArcfaceLoss(scale=16)
    >>> cos = np.array([[0.8, 0.1], [0.2, 0.5]], "float32")
    >>> logits = loss.logits(cos, np.array([0, 1]))
    >>> np.asarray(logits).astype(float).round(3).tolist()
    [[6.631, 1.6], [3.2, 0.378]]
    >>> round(float(loss(np.array([0, 1]), cos)), 4)  # the batch mean of the cross-entropy on those logits
    1.4434

    A training step of a loss with running statistics returns the updated ones (here ``t = 0.01 * 0.65``):

    >>> curricular = CurricularFaceLoss(scale=16)
    >>> logits, state, extra = curricular.compute(cos, np.array([0, 1]), curricular.initial_state(), training=True)
    >>> round(float(state["t"]), 6), extra
    (0.0065, None)
"""

import math
import re

import keras
from keras import ops

_EPS = 1e-7
_LOSS_KEYS = ("name", "reduction")  # keras.losses.Loss's own config entries


def target_mask(cos, labels):
    """Boolean (B, C) mask of the target classes of integer ``labels``."""
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    return ops.cast(ops.one_hot(labels, ops.shape(cos)[-1], dtype="float32"), "bool")


def target_cosine(cos, is_target):
    """The target-class cosine of each sample, shape (B, 1)."""
    return ops.sum(ops.where(is_target, cos, ops.zeros_like(cos)), axis=-1, keepdims=True)


def _angle(cos, eps=_EPS):
    """``arccos`` of the cosine clipped away from +-1, where the derivative of arccos is infinite."""
    return ops.arccos(ops.clip(cos, -1 + eps, 1 - eps))


def labels_and_targets(y_true, num_classes):
    """``(labels (B,) int32, targets (B, C) float32)`` from one-hot ``y_true`` (B, C) or class ids (B,) / (B, 1).

    The layout is read from the static shape; one-hot rows give their argmax as the label and are kept as the
    cross-entropy target.
    """
    shape = tuple(y_true.shape)
    if len(shape) == 2 and shape[-1] == num_classes and num_classes != 1:
        targets = ops.cast(y_true, "float32")
        return ops.cast(ops.argmax(targets, axis=-1), "int32"), targets
    if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        return labels, ops.one_hot(labels, num_classes, dtype="float32")
    raise ValueError(f"y_true must be one-hot (batch, {num_classes}) or class ids (batch,) / (batch, 1), "
                     f"received shape {shape}")


def _log_probabilities(values):
    """What a ``from_logits=False`` cross-entropy reads from ``values``: the log of the values normalised to sum 1
    and clipped to [eps, 1 - eps] (as ``keras.losses.categorical_crossentropy``)."""
    eps = keras.config.epsilon()
    return ops.log(ops.clip(values / ops.sum(values, axis=-1, keepdims=True), eps, 1 - eps))


def _alias(owner, kwargs, alias, name, value, default, hint=""):
    """The value of keyword ``name``, or of its other spelling ``alias`` when that is given instead."""
    if alias not in kwargs:
        return value
    if value != default:
        raise ValueError(f"{owner} received both {name}={value!r} and {alias}={kwargs[alias]!r}, two spellings of "
                         f"one keyword; give one{hint}")
    return kwargs.pop(alias)


class MarginLoss(keras.losses.Loss):
    """Base of the margin family.

    ``margin_values(cos, labels, state, norms, training, rate)`` returns ``(values, new_state, extra)``: the
    scaled float32 margin values (B, C) the seed feeds its cross-entropy, the running statistics after this batch
    (``state`` itself when nothing changes) and an optional per-sample extra loss (B,) added to the
    cross-entropy; ``rate`` overrides the statistics' EMA rate (1.0: this batch alone). ``compute`` turns the
    values into logits for a from-logits cross-entropy (``MarginHead``); ``call`` is the Keras loss. Stateless
    losses only define ``target_logit``, the margin-adjusted target cosine.

    Args:
        scale: the logit scale s.
        from_logits: as the seed's cross-entropy call: True reads the margin values as logits (softmax), False
            as probabilities (normalised to sum 1 and clipped, then the log). Under ``MarginHead`` False gives
            their log as logits, so Train's cross-entropy is the seed's while no value is clipped (clipping
            adds the log of the clipped values' sum).
        label_smoothing: targets ``(1 - ls) * one_hot + ls / C``, as ``keras.losses.categorical_crossentropy``.
        **kwargs: ``name``, ``reduction``, ``dtype`` of ``keras.losses.Loss``.
    """

    needs_norm = False
    plain_head = False  # True: the head is an unnormalised Dense classifier (SoftmaxLoss, MarginSoftmax)

    def __init__(self, scale=64.0, from_logits=True, label_smoothing=0.0, **kwargs):
        kwargs.setdefault("name", re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower())  # no counter suffix
        super().__init__(**kwargs)
        if scale <= 0:
            raise ValueError(f"{type(self).__name__} scale must be positive, received scale={scale}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), received label_smoothing={label_smoothing}")
        if from_logits not in (True, False):
            raise ValueError(f"from_logits must be True or False, received from_logits={from_logits!r}")
        self.scale, self.from_logits, self.label_smoothing = float(scale), bool(from_logits), float(label_smoothing)

    @property
    def logit_scale(self):
        """The factor applied to every margin value (``scale``; MarginSoftmax's ``scale_all``)."""
        return self.scale

    def initial_state(self):
        """Initial running statistics ``{name: float}``; ``{}`` for a stateless loss."""
        return {}

    def target_logit(self, target_cos):
        """The margin-adjusted cosine of the target class (before scaling)."""
        raise NotImplementedError

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        """``-> (values (B, C) float32, new_state, extra (B,) or None)``; ``training`` updates the statistics."""
        cos = ops.cast(cos, "float32")
        is_target = target_mask(cos, labels)
        values = ops.where(is_target, self.target_logit(target_cosine(cos, is_target)), cos) * self.logit_scale
        return values, state, None

    def compute(self, cos, labels, state, norms=None, training=False):
        """``-> (logits (B, C) float32, new_state, extra (B,) or None)`` for a from-logits cross-entropy."""
        values, state, extra = self.margin_values(cos, labels, state, norms=norms, training=training)
        return (values if self.from_logits else _log_probabilities(values)), state, extra

    def logits(self, cos, labels, norms=None):
        """Logits with the initial statistics and no update (a stateless convenience)."""
        return self.compute(cos, labels, self.initial_state(), norms=norms)[0]

    def _norms(self, norms):
        if norms is None:
            raise ValueError(f"{type(self).__name__} needs the embedding norms (NormDense(append_norm=True))")
        return ops.reshape(ops.cast(norms, "float32"), (-1,))

    def split_norms(self, y_pred):
        """``(cosines, norms or None)`` of a ``NormDense`` output; the norm column is ``-||x||``, last."""
        y_pred = ops.cast(y_pred, "float32")
        if not self.needs_norm:
            return y_pred, None
        if y_pred.shape[-1] is not None and y_pred.shape[-1] < 2:
            raise ValueError(f"{type(self).__name__} needs the cosines and the norm column of "
                             f"NormDense(append_norm=True), received y_pred of shape {tuple(y_pred.shape)}")
        return y_pred[:, :-1], -y_pred[:, -1]

    def call(self, y_true, y_pred):
        """Per-sample seed loss; the running statistics come from this batch alone (see the class)."""
        cos, norms = self.split_norms(y_pred)
        labels, targets = labels_and_targets(y_true, cos.shape[-1])
        values, _, extra = self.margin_values(cos, labels, self.initial_state(), norms=norms, training=True, rate=1.0)
        loss = keras.losses.categorical_crossentropy(
            targets, values, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )
        return loss if extra is None else loss + extra

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing}

    @classmethod
    def from_config(cls, config):
        """Also reads the seed's configs, whose Keras 2 ``reduction`` is ``"auto"``."""
        config = dict(config)
        if config.get("reduction") == "auto":
            config["reduction"] = "sum_over_batch_size"
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items() if k not in _LOSS_KEYS)
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_insightface")
class ArcfaceLoss(MarginLoss):
    """Combined margin ``cos(m1 * theta + m2) - m3`` (ArcFace m2=0.5; SphereFace-style m1; CosFace-style m3).

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019. Past
    ``theta = (pi - m2) / m1`` the curve stops decreasing; there the seed's fallback
    ``theta_min - cos(m1 * theta + m2) + m3`` with ``theta_min = -2 (1 + m3)`` keeps it monotonic.
    """

    def __init__(self, margin1=1.0, margin2=0.5, margin3=0.0, scale=64.0, from_logits=True, label_smoothing=0.0,
                 **kwargs):
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        if margin1 <= 0:
            raise ValueError(f"{type(self).__name__} margin1 must be positive, received margin1={margin1}")
        self.margin1, self.margin2, self.margin3 = float(margin1), float(margin2), float(margin3)
        self.threshold = math.cos((math.pi - self.margin2) / self.margin1)
        self.theta_min = (-1 - self.margin3) * 2

    def target_logit(self, target_cos):
        theta = ops.cos(_angle(target_cos) * self.margin1 + self.margin2) - self.margin3
        return ops.where(target_cos > self.threshold, theta, self.theta_min - theta)

    def get_config(self):
        return {**super().get_config(), "margin1": self.margin1, "margin2": self.margin2, "margin3": self.margin3}


@keras.saving.register_keras_serializable(package="keras_insightface")
class SphereFaceLoss(ArcfaceLoss):
    """Multiplicative angular margin ``cos(m * theta)``: the combined form with m1=margin, m2=m3=0.

    Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017, in the normalised
    form of the ArcFace paper (the seed writes it ``ArcfaceLoss(margin1=m, margin2=0)``); past ``theta = pi / m``
    the ArcfaceLoss fallback keeps the target monotonic.
    """

    def __init__(self, margin=1.35, scale=64.0, from_logits=True, label_smoothing=0.0, **kwargs):
        super().__init__(margin, 0.0, 0.0, scale, from_logits, label_smoothing, **kwargs)
        self.margin = float(margin)

    def get_config(self):
        return {**MarginLoss.get_config(self), "margin": self.margin}


@keras.saving.register_keras_serializable(package="keras_insightface")
class ArcfaceLossSimple(MarginLoss):
    """ArcFace additive angular margin via ``cos(theta + m) = cos*cos(m) - sin*sin(m)``, with the same fallback."""

    def __init__(self, margin=0.5, scale=64.0, from_logits=True, label_smoothing=0.0, **kwargs):
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        self.margin = float(margin)
        self.threshold = math.cos(math.pi - self.margin)

    def target_logit(self, target_cos):
        sin = ops.sqrt(ops.maximum(1 - ops.square(target_cos), 0.0))
        theta = target_cos * math.cos(self.margin) - sin * math.sin(self.margin)
        return ops.where(target_cos > self.threshold, theta, -2 - theta)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="keras_insightface")
class CosFaceLoss(MarginLoss):
    """Additive cosine margin: target ``cos - m``.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018 (also AM-softmax).
    """

    def __init__(self, margin=0.35, scale=64.0, from_logits=True, label_smoothing=0.0, **kwargs):
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        self.margin = float(margin)

    def target_logit(self, target_cos):
        return target_cos - self.margin

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="keras_insightface")
class CurricularFaceLoss(MarginLoss):
    """ArcFace target plus curriculum re-weighting of the hard negatives.

    Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face Recognition", CVPR 2020,
    as the official code: the target is ``ct = cos(theta + m)`` (``cos - sin(pi - m) * m`` past
    ``theta = pi - m``, where the seed takes ``-2 - ct``); a non-target cosine above ``ct`` is a hard negative and
    becomes ``cos * (t + cos)``. ``t``, the running mean of the target cosine (EMA rate ``t_alpha``, no
    gradient), starts at the seed's ``hard_scale`` and is updated from the batch first and then used, so easy
    samples dominate early and hard negatives weigh more as ``t`` grows.

    As a compiled Keras loss (no state under JAX), ``t`` is this batch's mean target cosine, the value the EMA
    tracks without its lag of about ``1 / t_alpha`` steps; under ``MarginHead`` it is the running EMA.
    """

    def __init__(self, margin=0.5, scale=64.0, from_logits=True, label_smoothing=0.0, hard_scale=0.0, t_alpha=0.01,
                 **kwargs):
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        if not 0 < t_alpha <= 1:
            raise ValueError(f"CurricularFaceLoss t_alpha must be in (0, 1], received t_alpha={t_alpha}")
        self.margin, self.hard_scale, self.t_alpha = float(margin), float(hard_scale), float(t_alpha)
        self.threshold = math.cos(math.pi - self.margin)
        self.mm = math.sin(math.pi - self.margin) * self.margin

    def initial_state(self):
        return {"t": self.hard_scale}

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        cos = ops.clip(ops.cast(cos, "float32"), -1.0, 1.0)
        is_target = target_mask(cos, labels)
        target = target_cosine(cos, is_target)
        ct = ops.cos(_angle(target) + self.margin)
        final = ops.where(target > self.threshold, ct, target - self.mm)
        t = ops.cast(state["t"], "float32")
        if training:
            rate = self.t_alpha if rate is None else rate
            t = ops.stop_gradient(rate * ops.mean(target) + (1 - rate) * t)
            state = {"t": t}
        others = ops.where(cos > ct, cos * (t + cos), cos)
        return ops.where(is_target, final, others) * self.scale, state, None

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "hard_scale": self.hard_scale, "t_alpha": self.t_alpha}


@keras.saving.register_keras_serializable(package="keras_insightface")
class AirFaceLoss(MarginLoss):
    """Linear-arc logits: every class ``(pi - 2 theta) / pi``, the target ``(pi - 2 (theta + m)) / pi``.

    Li et al., "AirFace: Lightweight and Efficient Model for Face Recognition", ICCVW 2019: a logit linear in
    the angle keeps the gradient constant over theta instead of vanishing near 0 and pi. The target is the
    seed's; for the other classes the seed's code keeps the plain cosine, this follows the paper.
    """

    def __init__(self, margin=0.4, scale=64.0, from_logits=True, label_smoothing=0.0, **kwargs):
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        self.margin = float(margin)

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        cos = ops.cast(cos, "float32")
        theta = _angle(cos) + ops.cast(target_mask(cos, labels), "float32") * self.margin
        return (math.pi - 2 * theta) / math.pi * self.scale, state, None

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="keras_insightface")
class MagFaceLoss(MarginLoss):
    """ArcFace with a margin growing with the embedding norm, plus a norm regulariser.

    Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality Assessment", CVPR 2021,
    as the official code: ``a = clip(||x||, min_feature_norm, max_feature_norm)``, margin ``m(a)`` linear from
    ``min_margin`` to ``max_margin``, target ``cos(theta + m(a))`` (``cos - sin(pi - m) * m`` past
    ``theta = pi - m``), and the extra loss ``regularizer_loss_lambda * (a / max_feature_norm**2 + 1 / a)`` per
    sample, which pushes the norm up for easy (high-quality) samples. The gradient flows into the norm through
    both terms. ``use_cosface_margin`` makes the target ``cos - m(a)``. Where the seed differs: it clips the
    cosines to 1 - 1e-3 and takes ``min(cos(theta + m), cos)`` instead of the fallback past ``pi - m``.

    The seed's keywords, with the official names accepted too: ``min_feature_norm`` (``lower_a``),
    ``max_feature_norm`` (``upper_a``), ``min_margin`` (``lower_m``), ``max_margin`` (``upper_m``),
    ``regularizer_loss_lambda`` (``lambda_g``). ``curricular_hard_scale`` is kept in the config and, as in the
    seed, has no effect.
    """

    needs_norm = True

    def __init__(self, min_feature_norm=10.0, max_feature_norm=110.0, min_margin=0.45, max_margin=0.8, scale=64.0,
                 regularizer_loss_lambda=35.0, use_cosface_margin=False, curricular_hard_scale=-1,
                 from_logits=True, label_smoothing=0.0, **kwargs):
        owner = "MagFaceLoss"
        lower_a = _alias(owner, kwargs, "lower_a", "min_feature_norm", min_feature_norm, 10.0)
        upper_a = _alias(owner, kwargs, "upper_a", "max_feature_norm", max_feature_norm, 110.0)
        lower_m = _alias(owner, kwargs, "lower_m", "min_margin", min_margin, 0.45)
        upper_m = _alias(owner, kwargs, "upper_m", "max_margin", max_margin, 0.8)
        lambda_g = _alias(owner, kwargs, "lambda_g", "regularizer_loss_lambda", regularizer_loss_lambda, 35.0)
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        if not 0 < lower_a < upper_a:
            raise ValueError("MagFaceLoss needs 0 < lower_a < upper_a (min_feature_norm < max_feature_norm), "
                             f"received min_feature_norm={lower_a}, max_feature_norm={upper_a}")
        self.lower_a, self.upper_a, self.lower_m, self.upper_m = map(float, (lower_a, upper_a, lower_m, upper_m))
        self.lambda_g = float(lambda_g)
        self.use_cosface_margin, self.curricular_hard_scale = bool(use_cosface_margin), float(curricular_hard_scale)

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        a = ops.clip(self._norms(norms), self.lower_a, self.upper_a)
        m = (self.upper_m - self.lower_m) / (self.upper_a - self.lower_a) * (a - self.lower_a) + self.lower_m
        m = m[:, None]
        cos = ops.clip(ops.cast(cos, "float32"), -1.0, 1.0)
        is_target = target_mask(cos, labels)
        target = target_cosine(cos, is_target)
        if self.use_cosface_margin:
            final = target - m
        else:
            final = ops.where(
                target > ops.cos(math.pi - m), ops.cos(_angle(target) + m), target - ops.sin(math.pi - m) * m
            )
        extra = self.lambda_g * (a / self.upper_a**2 + 1 / a)
        return ops.where(is_target, final, cos) * self.scale, state, extra

    def get_config(self):
        return {
            **super().get_config(), "min_feature_norm": self.lower_a, "max_feature_norm": self.upper_a,
            "min_margin": self.lower_m, "max_margin": self.upper_m, "regularizer_loss_lambda": self.lambda_g,
            "use_cosface_margin": self.use_cosface_margin, "curricular_hard_scale": self.curricular_hard_scale,
        }


@keras.saving.register_keras_serializable(package="keras_insightface")
class AdaFaceLoss(MarginLoss):
    """Margin adapted to image quality, measured by the embedding norm relative to the batch statistics.

    Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022, as the official head.py and
    the seed: ``z = clip((||x|| - batch_mean) / (batch_std + eps) * margin_alpha, -1, 1)`` (norms clipped to
    [0.001, 100], no gradient); target ``cos(clip(theta - m z, eps, pi - eps)) - (m + m z)``: ArcFace-like for
    low-quality (small-norm) samples, CosFace-like for high-quality ones. ``batch_mean``/``batch_std`` are EMAs
    (rate ``mean_std_alpha``) of the batch mean and unbiased std of the norms, updated first and then used.
    ``margin_alpha`` is the paper's h, ``mean_std_alpha`` its t_alpha; both spellings are accepted.

    As a compiled Keras loss (no state under JAX), ``batch_mean``/``batch_std`` are this batch's own, the values
    the EMAs track; under ``MarginHead`` they are the running EMAs. A seed config's ``_batch_mean_`` /
    ``_batch_std_`` become the initial statistics.
    """

    needs_norm = True
    eps = 1e-3

    def __init__(self, margin=0.4, margin_alpha=0.333, mean_std_alpha=0.01, scale=64.0, from_logits=True,
                 label_smoothing=0.0, **kwargs):
        margin_alpha = _alias("AdaFaceLoss", kwargs, "h", "margin_alpha", margin_alpha, 0.333)
        mean_std_alpha = _alias("AdaFaceLoss", kwargs, "t_alpha", "mean_std_alpha", mean_std_alpha, 0.01)
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        if not 0 < mean_std_alpha <= 1:
            raise ValueError(f"AdaFaceLoss mean_std_alpha must be in (0, 1], received mean_std_alpha={mean_std_alpha}")
        self.margin, self.margin_alpha, self.mean_std_alpha = float(margin), float(margin_alpha), float(mean_std_alpha)
        self.initial_statistics = {"batch_mean": 20.0, "batch_std": 100.0}  # a seed config may set them

    def initial_state(self):
        return dict(self.initial_statistics)

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        norms = ops.stop_gradient(ops.clip(self._norms(norms), 0.001, 100.0))
        mean, std = ops.cast(state["batch_mean"], "float32"), ops.cast(state["batch_std"], "float32")
        if training:
            rate = self.mean_std_alpha if rate is None else rate
            count = ops.cast(ops.shape(norms)[0], "float32")
            batch_mean = ops.mean(norms)
            batch_std = ops.sqrt(ops.sum(ops.square(norms - batch_mean)) / ops.maximum(count - 1, 1.0))
            mean = ops.stop_gradient(rate * batch_mean + (1 - rate) * mean)
            std = ops.stop_gradient(rate * batch_std + (1 - rate) * std)
            state = {"batch_mean": mean, "batch_std": std}
        scaler = ops.clip((norms - mean) / (std + self.eps) * self.margin_alpha, -1.0, 1.0)[:, None]
        cos = ops.clip(ops.cast(cos, "float32"), -1 + self.eps, 1 - self.eps)
        is_target = target_mask(cos, labels)
        theta = ops.clip(ops.arccos(target_cosine(cos, is_target)) - self.margin * scaler, self.eps,
                         math.pi - self.eps)
        final = ops.cos(theta) - (self.margin + self.margin * scaler)
        return ops.where(is_target, final, cos) * self.scale, state, None

    def get_config(self):
        config = {**super().get_config(), "margin": self.margin, "margin_alpha": self.margin_alpha,
                  "mean_std_alpha": self.mean_std_alpha}
        defaults = {"batch_mean": 20.0, "batch_std": 100.0}
        config.update({f"_{key}_": value for key, value in self.initial_statistics.items() if value != defaults[key]})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        statistics = {key: float(config.pop(f"_{key}_")) for key in ("batch_mean", "batch_std") if f"_{key}_" in config}
        loss = super().from_config(config)
        loss.initial_statistics.update(statistics)
        return loss


@keras.saving.register_keras_serializable(package="keras_insightface")
class AdaCosLoss(MarginLoss):
    """No margin; the scale adapts to the batch (dynamic AdaCos).

    Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively Learning Deep Face
    Representations", CVPR 2019: the scale starts at ``scale``, or ``sqrt(2) * log(num_classes - 1)`` when it is
    0 (the seed's default, with ``num_classes=1000``); each training batch first sets
    ``scale = log(B_avg) / cos(min(max_median, theta_med))``, ``B_avg`` the batch mean of the summed
    ``exp(scale * cos)`` over the non-target classes and ``theta_med`` the (lower) median target angle, without
    gradient, then uses it: logits ``scale * cos``. For an odd batch the seed's median index is one lower.

    As a compiled Keras loss (no state under JAX), every batch computes its scale from the initial one; since
    ``B_avg`` is close to ``num_classes - 1`` while non-target cosines are near 0, that is close to the running
    value. Under ``MarginHead`` the scale is carried from batch to batch.
    """

    def __init__(self, num_classes=1000, scale=0.0, max_median=math.pi / 4, from_logits=True, label_smoothing=0.0,
                 **kwargs):
        if scale < 0:
            raise ValueError(f"AdaCosLoss scale must be >= 0 (0: from num_classes), received scale={scale}")
        if scale == 0:
            if num_classes < 3:
                raise ValueError(f"AdaCosLoss needs num_classes >= 3, received num_classes={num_classes}")
            scale = math.sqrt(2) * math.log(num_classes - 1)
        super().__init__(scale, from_logits, label_smoothing, **kwargs)
        self.num_classes, self.max_median = int(num_classes), float(max_median)

    def initial_state(self):
        return {"scale": self.scale}

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        cos = ops.cast(cos, "float32")
        scale = ops.cast(state["scale"], "float32")
        if training:
            is_target = target_mask(cos, labels)
            count = ops.shape(cos)[0]
            others = ops.where(is_target, -1e30, scale * cos)
            log_b_avg = ops.logsumexp(others) - ops.log(ops.cast(count, "float32"))
            theta = ops.sort(_angle(target_cosine(cos, is_target))[:, 0])
            theta_med = ops.take(theta, (count - 1) // 2)
            scale = ops.stop_gradient(log_b_avg / ops.cos(ops.minimum(self.max_median, theta_med)))
            state = {"scale": scale}
        return scale * cos, state, None

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "max_median": self.max_median}


@keras.saving.register_keras_serializable(package="keras_insightface")
class MarginSoftmax(MarginLoss):
    """The seed's margin softmax: a margin on the softmax probability of the target class.

    The target probability p becomes ``(p**power + scale * p) / 2`` (``p**power`` when ``scale == 0``,
    ``scale * p`` when ``power == 1``), every value is multiplied by ``scale_all`` and the seed's cross-entropy
    reads them as probabilities (``from_logits=False``, its default). So ``scale`` is the coefficient of the
    linear term (also spelled ``margin_scale``), not a logit scale; ``scale_all`` is the overall factor.

    The seed trains it as a softmax stage: a ``Dense`` classifier with a softmax output. As a compiled Keras loss
    ``y_pred`` is those probabilities (end the model with a softmax); under ``Train`` the head is a ``Dense``
    classifier (``plain_head``) and ``compute`` takes the softmax of its logits first.
    """

    plain_head = True

    def __init__(self, power=2, scale=0.4, scale_all=1.0, from_logits=False, label_smoothing=0.0, **kwargs):
        scale = _alias("MarginSoftmax", kwargs, "margin_scale", "scale", scale, 0.4,
                       " (scale is the coefficient of the linear term, the overall factor is scale_all)")
        if scale_all <= 0:
            raise ValueError(f"MarginSoftmax scale_all must be positive, received scale_all={scale_all}")
        super().__init__(scale_all, from_logits, label_smoothing, **kwargs)
        self.power, self.scale, self.scale_all = power, float(scale), float(scale_all)

    @property
    def logit_scale(self):
        return self.scale_all

    def target_logit(self, target_cos):
        if self.power != 1 and self.scale == 0:
            return ops.power(target_cos, self.power)
        if self.power == 1 and self.scale != 0:
            return target_cos * self.scale
        return (ops.power(target_cos, self.power) + target_cos * self.scale) / 2

    def compute(self, cos, labels, state, norms=None, training=False):
        """From the ``Dense`` head's logits: the margin acts on their softmax, as on the seed's softmax output."""
        return super().compute(ops.softmax(ops.cast(cos, "float32"), axis=-1), labels, state, norms, training)

    def get_config(self):
        return {**super().get_config(), "power": self.power, "scale": self.scale, "scale_all": self.scale_all}


@keras.saving.register_keras_serializable(package="keras_insightface")
class SoftmaxLoss(MarginLoss):
    """Plain softmax: the logits of an unnormalised ``Dense`` classifier, no margin, no scale.

    The seed's ``categorical_crossentropy`` stage; ``plain_head`` tells ``Train`` to use a ``Dense`` head
    (with bias) instead of the cosine ``NormDense``. As a Keras loss ``y_pred`` is logits (``from_logits=True``)
    or probabilities; under ``MarginHead`` the head's logits pass through unchanged either way.
    """

    plain_head = True

    def __init__(self, label_smoothing=0.0, from_logits=True, **kwargs):
        super().__init__(1.0, from_logits, label_smoothing, **kwargs)

    def margin_values(self, cos, labels, state, norms=None, training=False, rate=None):
        return ops.cast(cos, "float32"), state, None

    def compute(self, cos, labels, state, norms=None, training=False):
        return ops.cast(cos, "float32"), state, None

    def get_config(self):
        config = super().get_config()
        config.pop("scale")
        return config


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
        return MARGIN_LOSSES[spec["class_name"]].from_config(spec.get("config", {}))
    raise ValueError(f"Unknown margin loss {spec!r}; available: {', '.join(MARGIN_LOSSES)}")


def serialize_margin_loss(loss):
    """``{"class_name", "config"}`` of a margin loss, read back by ``get_margin_loss``."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
