"""MarginHead: applies a margin loss to cosine logits inside the model, where the labels are visible."""

import keras

from keras_insightface.losses.margin import get_margin_loss, serialize_margin_loss


@keras.saving.register_keras_serializable(package="keras_insightface")
class MarginHead(keras.layers.Layer):
    """``[cos, labels] -> scaled logits`` with the margin of ``loss`` on the target class (float32).

    Example:
        >>> import numpy as np
        >>> from keras_insightface.losses.margin import CosFaceLoss
        >>> head = MarginHead(CosFaceLoss(scale=10))
        >>> np.asarray(head([np.array([[0.5, 0.2]], "float32"), np.array([0])])).round(2).tolist()
        [[1.5, 2.0]]
    """

    def __init__(self, loss, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.loss = get_margin_loss(loss)

    def call(self, inputs):
        cos, labels = inputs
        return self.loss.logits(keras.ops.cast(cos, "float32"), labels)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "loss": serialize_margin_loss(self.loss)}
