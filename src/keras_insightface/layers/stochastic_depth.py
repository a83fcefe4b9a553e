"""StochasticDepth: a residual add that drops the residual branch for whole samples while training.

Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016), in the per-sample form
timm calls ``DropPath`` and insightface arcface_torch's ViT uses: during training each sample keeps its
residual branch with probability ``1 - drop_rate`` and a kept branch is scaled by ``1 / (1 - drop_rate)``,
so the expected output equals ``shortcut + residual``; at inference the layer is a plain add.

Example:
    >>> import numpy as np
    >>> layer = StochasticDepth(0.2)
    >>> shortcut, residual = np.ones((2, 3), "float32"), np.full((2, 3), 2.0, "float32")
    >>> np.asarray(layer([shortcut, residual])).tolist()
    [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class StochasticDepth(keras.layers.Layer):
    """``StochasticDepth(drop_rate)([shortcut, residual])``: ``shortcut + residual`` with per-sample drop.

    In training the residual is multiplied by a mask of shape ``(B, 1, ..., 1)`` drawn from a
    ``keras.random.SeedGenerator`` (1 with probability ``1 - drop_rate``) and divided by ``1 - drop_rate``.
    ``drop_rate=0`` is an exact add in both modes.
    """

    def __init__(self, drop_rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        drop_rate = float(drop_rate)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"StochasticDepth drop_rate must be in [0, 1), received drop_rate={drop_rate}")
        self.drop_rate = drop_rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        if not training or self.drop_rate == 0.0:
            return shortcut + residual
        keep_prob = 1.0 - self.drop_rate
        mask_shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
        uniform = keras.random.uniform(mask_shape, seed=self.seed_generator)
        mask = ops.cast(uniform < keep_prob, residual.dtype)
        return shortcut + residual * (mask / keep_prob)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update(drop_rate=self.drop_rate, seed=self.seed)
        return config
