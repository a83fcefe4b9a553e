"""What the training model reports: per-sample cross-entropy, top-1 correctness and extra losses.

Cross-entropy and accuracy are computed inside the model against the labels the head used (Partial FC
renumbers the classes of its sample, so the loader's labels do not index its logits); the training graph
outputs them per sample and ``PerSampleLoss`` / ``OutputMean`` only average. Extra losses (center loss) are
per-sample outputs too, weighted by the stage.

Example:
    >>> import numpy as np
    >>> TopOneCorrect()([np.array([[0.1, 0.9], [0.8, 0.3]], "float32"), np.array([1, 1])]).tolist()
    [1.0, 0.0]
"""

import keras
from keras import ops

from keras_insightface.losses.cross_entropy import MarginCrossEntropy


@keras.saving.register_keras_serializable(package="keras_insightface")
class PerSampleCrossEntropy(keras.layers.Layer):
    """``[logits (B, C), labels (B,)] -> (B,)``: ``MarginCrossEntropy`` against the head's labels."""

    def __init__(self, label_smoothing=0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.label_smoothing = float(label_smoothing)
        self.cross_entropy = MarginCrossEntropy(self.label_smoothing)

    def call(self, inputs):
        logits, labels = inputs
        return self.cross_entropy.call(labels, logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="keras_insightface")
class TopOneCorrect(keras.layers.Layer):
    """``[cos (B, C), labels (B,)] -> (B,)`` float32: 1 where the highest cosine is the label's.

    ``drop_last_column`` ignores NormDense's appended ``-||x||`` column (MagFace / AdaFace heads).
    """

    def __init__(self, drop_last_column=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.drop_last_column = bool(drop_last_column)

    def call(self, inputs):
        cos, labels = inputs
        if self.drop_last_column:
            cos = cos[:, :-1]
        predicted = ops.argmax(cos, axis=-1)
        return ops.cast(ops.equal(predicted, ops.cast(ops.reshape(labels, (-1,)), predicted.dtype)), "float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "drop_last_column": self.drop_last_column}


@keras.saving.register_keras_serializable(package="keras_insightface")
class OutputMean(keras.metrics.Mean):
    """The mean of a model output (``y_true`` is ignored): the accuracy from ``TopOneCorrect``."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_pred, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="keras_insightface")
class PerSampleLoss(keras.losses.Loss):
    """A loss the model already computed per sample (center loss): ``y_pred`` is the loss, ``y_true`` ignored."""

    def call(self, y_true, y_pred):
        return ops.cast(y_pred, "float32")


class PerSampleDistance(keras.layers.Layer):
    """``loss(teacher, student)`` per sample as a model output (a distillation loss, unreduced), so the teacher
    can come from an input or a frozen model inside the graph while the compiled targets stay the labels."""

    def __init__(self, loss, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.distance = loss

    def call(self, inputs):
        teacher, student = inputs
        return self.distance.call(teacher, student)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)


class MixupCrossEntropy(keras.layers.Layer):
    """Per-sample ``w * CE(logits of label) + (1 - w) * CE(logits of partner's label)`` for mixed images: the
    partner's logits get the margin on its own class (``margin_head`` called again, so only for margin losses
    without running statistics). The seed instead put both margins into one soft-label softmax."""

    def __init__(self, margin_head, label_smoothing=0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.margin_head = margin_head
        self.crossentropy = PerSampleCrossEntropy(label_smoothing)

    def call(self, inputs):
        cos, labels, logits, weight, partner = inputs
        partner_labels = ops.take(labels, ops.cast(partner, "int32"), axis=0)
        partner_logits = self.margin_head([cos, partner_labels])
        own = self.crossentropy([logits, labels])
        return weight * own + (1.0 - weight) * self.crossentropy([partner_logits, partner_labels])

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)
