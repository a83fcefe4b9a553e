"""NormDense: cosine similarity between the L2-normalised embedding and L2-normalised class centers."""

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


@keras.saving.register_keras_serializable(package="keras_insightface")
class NormDense(keras.layers.Layer):
    """Class-center layer of margin-softmax training: outputs cos(theta) for every class, shape (B, units).

    The kernel has shape ``(embedding_size, units * loss_top_k)``; with ``loss_top_k > 1`` each class has
    ``loss_top_k`` sub-centers and the closest one is used (sub-center ArcFace). Computed in float32 even
    under mixed precision, because margins act on cosines close to 1.

    ``append_norm=True`` (MagFace, AdaFace) appends one column, ``-||x||`` of the raw float32 input, so the
    output is ``(B, units + 1)``; ``MarginHead`` splits it off. It is negative, as the seed, so that an accuracy
    argmax over this output never picks it.

    The arguments are the seed's, in its order: ``NormDense(units, kernel_regularizer, loss_top_k, append_norm,
    partial_fc_split)``; ``partial_fc_split`` > 1 (the seed's class-split kernel) is an error naming
    ``PartialFC``, its replacement here.

    Example:
        >>> import numpy as np
        >>> layer = NormDense(10)
        >>> layer(np.ones((2, 8), "float32")).shape
        (2, 10)
    """

    def __init__(self, units=1000, kernel_regularizer=None, loss_top_k=1, append_norm=False, partial_fc_split=0,
                 kernel_initializer="glorot_normal", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if units < 1 or loss_top_k < 1:
            raise ValueError(f"NormDense needs units >= 1 and loss_top_k >= 1, received {units=}, {loss_top_k=}")
        if partial_fc_split > 1:
            raise ValueError(f"NormDense(partial_fc_split={partial_fc_split}): the seed's class-split kernel is not "
                             f"built; PartialFC(units, sample_rate={1 / partial_fc_split:g}) samples the classes")
        self.units, self.loss_top_k, self.append_norm = int(units), int(loss_top_k), bool(append_norm)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="norm_dense_w",
            shape=(input_shape[-1], self.units * self.loss_top_k),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        cos = ops.matmul(l2_normalize(inputs), l2_normalize(self.kernel, axis=0))
        if self.loss_top_k > 1:
            cos = ops.max(ops.reshape(cos, (-1, self.units, self.loss_top_k)), axis=-1)
        if self.append_norm:
            cos = ops.concatenate([cos, -ops.sqrt(ops.sum(ops.square(inputs), axis=-1, keepdims=True))], axis=-1)
        return cos

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units + int(self.append_norm))

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            loss_top_k=self.loss_top_k,
            append_norm=self.append_norm,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
