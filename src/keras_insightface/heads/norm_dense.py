"""NormDense: cosine similarity between the L2-normalised embedding and L2-normalised class centers."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class NormDense(keras.layers.Layer):
    """Class-center layer of margin-softmax training: outputs cos(theta) for every class, shape (B, units).

    The kernel has shape ``(embedding_size, units * loss_top_k)``; with ``loss_top_k > 1`` each class has
    ``loss_top_k`` sub-centers and the closest one is used (sub-center ArcFace). Computed in float32 even
    under mixed precision, because margins act on cosines close to 1.

    Example:
        >>> import numpy as np
        >>> layer = NormDense(10)
        >>> layer(np.ones((2, 8), "float32")).shape
        (2, 10)
    """

    def __init__(self, units, loss_top_k=1, kernel_initializer="glorot_normal", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if units < 1 or loss_top_k < 1:
            raise ValueError(f"NormDense needs units >= 1 and loss_top_k >= 1, received {units=}, {loss_top_k=}")
        self.units, self.loss_top_k = int(units), int(loss_top_k)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="norm_dense_w",
            shape=(input_shape[-1], self.units * self.loss_top_k),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        norm_w = self.kernel / ops.sqrt(ops.maximum(ops.sum(ops.square(self.kernel), axis=0, keepdims=True), 1e-12))
        norm_x = inputs / ops.sqrt(ops.maximum(ops.sum(ops.square(inputs), axis=-1, keepdims=True), 1e-12))
        cos = ops.matmul(norm_x, norm_w)
        if self.loss_top_k > 1:
            cos = ops.max(ops.reshape(cos, (-1, self.units, self.loss_top_k)), axis=-1)
        return cos

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            loss_top_k=self.loss_top_k,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
