"""NormDenseVPL: cosine classifier whose class centers are mixed with recent features of the class.

Deng et al., "Variational Prototype Learning for Deep Face Recognition" (CVPR 2021): a memory keeps the latest
normalised feature of every class; after ``start_iters`` steps, the center of each class whose memory is at most
``allowed_delta`` steps old becomes ``normalize((1 - lambda) * w + lambda * memory)``, so the classifier sees the
features' current distribution rather than only its slowly moving weights. Defaults are the paper's (lambda
0.15, start 8000, delta 200). The memory and step counter are model variables: saved with checkpoints.

Example:
    >>> import numpy as np
    >>> head = NormDenseVPL(10)
    >>> head([np.ones((2, 4), "float32"), np.array([1, 2])], training=True).shape
    (2, 10)
"""

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


@keras.saving.register_keras_serializable(package="keras_insightface")
class NormDenseVPL(keras.layers.Layer):
    """``[embedding, labels] -> cos (B, units)``; with ``training`` the memory of the batch's classes is updated."""

    loss_top_k = 1  # one center per class (the stage head's check, as NormDense's attribute)

    def __init__(self, units, vpl_lambda=0.15, start_iters=8000, allowed_delta=200, append_norm=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if units < 1 or not 0 <= vpl_lambda < 1:
            raise ValueError(f"NormDenseVPL needs units >= 1 and 0 <= vpl_lambda < 1, received {units=}, {vpl_lambda=}")
        self.units, self.vpl_lambda = int(units), float(vpl_lambda)
        self.start_iters, self.allowed_delta = int(start_iters), int(allowed_delta)
        self.append_norm = bool(append_norm)

    def build(self, input_shape):
        """``input_shape``: ``[embedding shape, labels shape]``, or the embedding shape alone."""
        dim = (input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape)[-1]
        self.kernel = self.add_weight(name="norm_dense_w", shape=(dim, self.units), initializer="glorot_normal")
        self.memory = self.add_weight(name="memory", shape=(self.units, dim), initializer="zeros", trainable=False)
        self.memory_iters = self.add_weight(
            name="memory_iters", shape=(self.units,), initializer="zeros", dtype="int32", trainable=False
        )
        self.iters = self.add_weight(name="iters", shape=(), initializer="zeros", dtype="int32", trainable=False)

    def call(self, inputs, training=None):
        embedding, labels = inputs
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        x = l2_normalize(ops.cast(embedding, "float32"), axis=-1)
        iters = self.iters + 1 if training else ops.convert_to_tensor(self.iters)
        recent = ops.logical_and(self.memory_iters > 0, iters - self.memory_iters <= self.allowed_delta)
        fresh = ops.logical_and(iters > self.start_iters, recent)
        mix = ops.where(fresh, self.vpl_lambda, 0.0)
        centers = l2_normalize(l2_normalize(self.kernel, axis=0) * (1 - mix) + ops.transpose(self.memory) * mix, axis=0)
        cos = ops.matmul(x, centers)
        if training:
            self.iters.assign(iters)
            self.memory.assign(ops.scatter_update(self.memory, labels[:, None], ops.stop_gradient(x)))
            self.memory_iters.assign(ops.scatter_update(self.memory_iters, labels[:, None], ops.full_like(labels, iters)))
        if self.append_norm:  # -||x|| as NormDense's last column, for the margins that read norms
            norm = ops.sqrt(ops.sum(ops.square(ops.cast(embedding, "float32")), axis=-1, keepdims=True))
            cos = ops.concatenate([cos, -norm], axis=-1)
        return cos

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units + int(self.append_norm))

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, vpl_lambda=self.vpl_lambda, start_iters=self.start_iters, allowed_delta=self.allowed_delta,
            append_norm=self.append_norm,
        )
        return config
