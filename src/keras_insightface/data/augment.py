"""Augmentation inside the compiled training step: per-sample random ops drawn with ``keras.random``."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class RandomFlipCast(keras.layers.Layer):
    """uint8 NHWC batch -> float32, each sample flipped left-right with probability 0.5 (training only).

    Flip is the seed's baseline augmentation (``random_status=0``); it runs on the accelerator so the
    CPU only decodes JPEGs.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        flip = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return ops.where(flip, ops.flip(images, axis=2), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
