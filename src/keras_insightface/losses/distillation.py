"""Knowledge distillation from a teacher: match its embeddings (cosine or Euclidean) or its cosine logits (KL).

Embedding distillation follows the seed Keras_insightface's ``distiller_loss``; logit distillation is Hinton et
al., "Distilling the Knowledge in a Neural Network" (2015), with the T^2 factor that keeps gradient sizes
independent of the temperature. Teacher targets may be precomputed in fp16, where overflow leaves NaN or inf:
such values are zeroed, and a teacher row with nothing finite left contributes 0 instead of NaN.

Example:
    >>> import numpy as np
    >>> teacher = np.array([[3.0, 4.0], [np.nan, np.nan]], "float32")
    >>> student = np.array([[4.0, 3.0], [1.0, 0.0]], "float32")
    >>> np.asarray(DistillCosineLoss(reduction=None)(teacher, student)).astype(float).round(3).tolist()
    [0.04, 0.0]
    >>> projection_for(student_dim=2, teacher_dim=2) is None, projection_for(128, 512).teacher_dim
    (True, 512)
"""

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


def _clean_teacher(y_true):
    """The teacher with non-finite values zeroed, and whether each row still has a non-zero value."""
    teacher = ops.cast(y_true, "float32")
    teacher = ops.where(ops.isfinite(teacher), teacher, 0.0)
    return teacher, ops.any(ops.not_equal(teacher, 0.0), axis=-1)


def _check_dims(teacher, student):
    t_dim, s_dim = teacher.shape[-1], student.shape[-1]
    if t_dim is not None and s_dim is not None and t_dim != s_dim:
        raise ValueError(
            f"Teacher and student embeddings differ, received teacher_dim={t_dim}, student_dim={s_dim}: "
            "project the student with projection_for(student_dim, teacher_dim)"
        )


class EmbeddingDistill(keras.losses.Loss):
    """Base of the embedding losses: cleans the teacher, normalises both sides, zeroes empty teacher rows."""

    def distance(self, teacher, student):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        _check_dims(y_true, y_pred)
        teacher, valid = _clean_teacher(y_true)
        student = l2_normalize(ops.cast(y_pred, "float32"))
        return ops.where(valid, self.distance(l2_normalize(teacher), student), 0.0)


@keras.saving.register_keras_serializable(package="keras_insightface")
class DistillCosineLoss(EmbeddingDistill):
    """``1 - cos(teacher, student)`` per sample; ``y_true`` teacher embeddings (B, D), ``y_pred`` the student's."""

    def __init__(self, name="distill_cosine", **kwargs):
        super().__init__(name=name, **kwargs)

    def distance(self, teacher, student):
        return 1.0 - ops.sum(teacher * student, axis=-1)


@keras.saving.register_keras_serializable(package="keras_insightface")
class DistillEuclideanLoss(EmbeddingDistill):
    """``||normalize(teacher) - normalize(student)||^2`` per sample: the seed's ``distiller_loss``."""

    def __init__(self, name="distill_euclidean", **kwargs):
        super().__init__(name=name, **kwargs)

    def distance(self, teacher, student):
        return ops.sum(ops.square(teacher - student), axis=-1)


@keras.saving.register_keras_serializable(package="keras_insightface")
class EmbeddingProjection(keras.layers.Layer):
    """Bias-free linear map of the student embedding to the teacher's size, for when the two differ."""

    def __init__(self, teacher_dim, **kwargs):
        super().__init__(**kwargs)
        if teacher_dim < 1:
            raise ValueError(f"EmbeddingProjection needs teacher_dim >= 1, received teacher_dim={teacher_dim}")
        self.teacher_dim = int(teacher_dim)
        self.dense = keras.layers.Dense(self.teacher_dim, use_bias=False, dtype=self.dtype_policy, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.teacher_dim)

    def get_config(self):
        return {**super().get_config(), "teacher_dim": self.teacher_dim}


def projection_for(student_dim, teacher_dim):
    """``None`` when the embedding sizes match, else an ``EmbeddingProjection`` to ``teacher_dim``."""
    if student_dim < 1 or teacher_dim < 1:
        raise ValueError(f"Embedding sizes must be >= 1, received {student_dim=}, {teacher_dim=}")
    return None if int(student_dim) == int(teacher_dim) else EmbeddingProjection(teacher_dim)


@keras.saving.register_keras_serializable(package="keras_insightface")
class DistillKLDivergence(keras.losses.Loss):
    """``T^2 * KL(softmax(scale * t / T) || softmax(scale * s / T))`` per sample, on cosine logits (B, C).

    ``y_true`` holds the teacher's NormDense cosines, ``y_pred`` the student's; both pass through log-softmax,
    which stays stable at scale 64. A teacher row with any non-finite cosine contributes 0.
    """

    def __init__(self, scale=64.0, temperature=1.0, name="distill_kl_divergence", **kwargs):
        super().__init__(name=name, **kwargs)
        if scale <= 0 or temperature <= 0:
            message = f"DistillKLDivergence needs scale > 0 and temperature > 0, received {scale=}, {temperature=}"
            raise ValueError(message)
        self.scale, self.temperature = float(scale), float(temperature)

    def call(self, y_true, y_pred):
        teacher = ops.cast(y_true, "float32")
        valid = ops.all(ops.isfinite(teacher), axis=-1)
        teacher = ops.where(ops.isfinite(teacher), teacher, 0.0)
        factor = self.scale / self.temperature
        log_p = ops.log_softmax(teacher * factor, axis=-1)
        log_q = ops.log_softmax(ops.cast(y_pred, "float32") * factor, axis=-1)
        kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
        return ops.where(valid, kl * self.temperature**2, 0.0)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="keras_insightface")
class DistillKLDivergenceLoss(DistillKLDivergence):
    """The seed's name and default: ``DistillKLDivergence(scale=10)``, ``KL(softmax(10 t) || softmax(10 s))`` of the
    teacher's and the student's class cosines (the seed clipped probabilities at 1e-7; here log-softmax is exact).
    In a stage it trains the run's cosine classifier toward a teacher whose output is the classes."""

    def __init__(self, scale=10.0, temperature=1.0, name="distill_kl_divergence", **kwargs):
        super().__init__(scale=scale, temperature=temperature, name=name, **kwargs)
