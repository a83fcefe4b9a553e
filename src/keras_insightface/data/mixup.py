"""Mixup inside the compiled step (Zhang et al. 2018, as the seed does it): per-sample Beta(alpha, alpha) weights
and partners from a shuffle of the batch, for integer labels (``Mixup``) or one-hot labels (``mixup``)."""

import keras
from keras import ops


def mixup_weights(batch, alpha, seed_generator):
    """The seed's mixup draws: per-sample weights ``max(w, 1 - w)`` of ``w ~ Beta(alpha, alpha)`` (``> 0.9`` ->
    1, no mixing) and partner indices from a shuffle of the batch."""
    first = keras.random.gamma((batch,), alpha, seed=seed_generator)
    second = keras.random.gamma((batch,), alpha, seed=seed_generator)
    weight = first / ops.maximum(first + second, 1e-12)
    weight = ops.maximum(weight, 1.0 - weight)
    weight = ops.where(weight > 0.9, 1.0, weight)
    return weight, keras.random.shuffle(ops.arange(batch), seed=seed_generator)


def mix_images(images, weight, partner):
    """``weight_b * x_b + (1 - weight_b) * x_partner[b]`` per sample."""
    image_weight = ops.reshape(ops.cast(weight, images.dtype), (-1, 1, 1, 1))
    return images * image_weight + ops.take(images, partner, axis=0) * (1 - image_weight)


@keras.saving.register_keras_serializable(package="keras_insightface")
class Mixup(keras.layers.Layer):
    """Mixup inside the training step for integer labels: ``images -> [mixed images, weight (B,), partner (B,)]``.

    The loss is then ``weight * CE(label) + (1 - weight) * CE(label[partner])`` (``training.task.FaceTask``).
    Outside training the images pass unchanged with weight 1 and each sample its own partner.
    """

    def __init__(self, alpha, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not alpha > 0:
            raise ValueError(f"Mixup needs alpha > 0, received alpha={alpha}")
        self.alpha, self.seed = float(alpha), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        batch = ops.shape(images)[0]
        if not training:
            return [images, ops.ones((batch,), "float32"), ops.arange(batch)]
        weight, partner = mixup_weights(batch, self.alpha, self.seed_generator)
        return [mix_images(images, weight, partner), weight, partner]

    def compute_output_shape(self, input_shape):
        return [input_shape, (input_shape[0],), (input_shape[0],)]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "seed": self.seed}


def mixup(images, labels_onehot, alpha, seed_generator):
    """Mixup (Zhang et al. 2018) as the seed: one Beta(alpha, alpha) weight per sample, partner from a shuffle.

    ``w = max(w, 1-w)`` so each sample keeps the larger share; ``w > 0.9`` counts as no mixing (w = 1).
    Sample b becomes ``w_b * x_b + (1 - w_b) * x_perm[b]`` for images and labels alike. Beta is drawn as
    ``g1 / (g1 + g2)`` from two Gamma(alpha) draws. Pass a ``keras.random.SeedGenerator`` (inside a
    compiled step, one owned by a layer or model).

    Example:
        >>> import numpy as np, keras
        >>> images, labels = np.zeros((4, 8, 8, 3), "float32"), np.eye(4, dtype="float32")
        >>> mixed, mixed_labels = mixup(images, labels, 0.4, keras.random.SeedGenerator(0))
        >>> np.allclose(np.asarray(mixed_labels).sum(axis=1), 1.0)
        True
    """
    images = ops.convert_to_tensor(images)
    labels = ops.cast(labels_onehot, "float32")
    weight, partner = mixup_weights(ops.shape(images)[0], alpha, seed_generator)
    mixed_images = mix_images(images, weight, partner)
    label_weight = weight[:, None]
    mixed_labels = labels * label_weight + ops.take(labels, partner, axis=0) * (1.0 - label_weight)
    return mixed_images, mixed_labels
