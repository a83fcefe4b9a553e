"""EuclideanDense: logits that are minus half the squared distance to each class center, up to a constant.

``x . w_j - (||x||^2 + ||w_j||^2) / 2 = -||x - w_j||^2 / 2``: a softmax on these is a Gaussian classifier with
shared unit variance, so embeddings learn to sit close (in Euclidean distance, not angle) to their center.

Example:
    >>> import numpy as np
    >>> layer = EuclideanDense(3)
    >>> layer(np.zeros((2, 4), "float32")).shape
    (2, 3)
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class EuclideanDense(keras.layers.Layer):
    """``(B, D) -> (B, units)``: ``x . w - (||x||^2 + ||w||^2) / 2`` per class column ``w`` of the kernel."""

    def __init__(self, units, kernel_initializer="glorot_normal", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"EuclideanDense needs units >= 1, received {units=}")
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units), initializer=self.kernel_initializer)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        x_sq = ops.sum(ops.square(x), axis=-1, keepdims=True)
        w_sq = ops.sum(ops.square(self.kernel), axis=0, keepdims=True)
        return ops.matmul(x, self.kernel) - (x_sq + w_sq) / 2

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
