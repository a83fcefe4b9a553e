"""Sparse softmax cross-entropy on margin logits, with the seed's optional label smoothing."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class MarginCrossEntropy(keras.losses.Loss):
    """Cross-entropy of integer labels against logits; ``label_smoothing`` spreads mass uniformly over classes."""

    def __init__(self, label_smoothing=0.0, name="margin_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        log_z = ops.logsumexp(y_pred, axis=-1)
        target = ops.take_along_axis(y_pred, labels[:, None], axis=-1)[:, 0]
        if self.label_smoothing:
            target = (1 - self.label_smoothing) * target + self.label_smoothing * ops.mean(y_pred, axis=-1)
        return log_z - target

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
