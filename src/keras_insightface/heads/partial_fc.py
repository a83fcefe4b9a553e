"""Partial FC: a cosine classifier that scores only a fixed-size sample of the classes at each step.

An et al., "Partial FC: Training 10 Million Identities on a Single Machine" (ICCVW 2021), as arcface_torch's
``partial_fc_v2``: every step keeps the class centers of the batch's labels (positives) and fills the rest of
``num_sample = ceil(sample_rate * units)`` with random other classes. ``num_sample`` is fixed, so the compiled
step keeps static shapes. Only the sampled columns of the kernel get a gradient; ``L2SGD`` also leaves the
momentum and weight decay of the other columns untouched (the kernel is marked with ``sparse_class_axis``).

Example:
    >>> import numpy as np
    >>> head = PartialFC(100, sample_rate=0.1, seed=0)
    >>> cos, labels = head([np.ones((4, 8), "float32"), np.array([3, 3, 50, 99])])
    >>> cos.shape, np.asarray(labels).tolist() == sorted(np.asarray(labels).tolist())
    ((4, 10), True)
"""

import math

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


@keras.saving.register_keras_serializable(package="keras_insightface")
class PartialFC(keras.layers.Layer):
    """``[embedding, labels] -> (cos over the sampled classes (B, num_sample), labels as positions in the sample)``.

    Args:
        units: number of classes; the kernel is ``(embedding_size, units)`` like ``NormDense``'s, so weights move
            between the two.
        sample_rate: fraction of classes scored per step; 1.0 is the full classifier.
        interclass_filtering_threshold: > 0 zeroes non-target cosines above it (arcface_torch's filter for
            label noise: another identity that close is probably the same person).
        seed: seed of the negative sampling.

    The sample must hold every class of the batch: ``num_sample`` must be at least the batch size.
    The sampled indices are sorted, so the remapped labels keep the order of the class ids.
    """

    def __init__(self, units, sample_rate=0.1, interclass_filtering_threshold=0.0, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if units < 1 or not 0 < sample_rate <= 1:
            raise ValueError(f"PartialFC needs units >= 1 and 0 < sample_rate <= 1, received {units=}, {sample_rate=}")
        self.units, self.sample_rate = int(units), float(sample_rate)
        self.num_sample = min(self.units, math.ceil(self.sample_rate * self.units))
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        embedding_shape = input_shape[0]
        self.kernel = self.add_weight(
            name="norm_dense_w", shape=(embedding_shape[-1], self.units), initializer="glorot_normal"
        )
        self.kernel.sparse_class_axis = 1  # read by L2SGD: update only the columns that got a gradient

    def sample(self, labels):
        """Sorted class indices ``(num_sample,)``: all positives, then random negatives."""
        positive = ops.max(ops.one_hot(labels, self.units, dtype="float32"), axis=0)
        noise = keras.random.uniform((self.units,), seed=self.seed_generator)
        _, index = ops.top_k(ops.where(positive > 0, 2.0, noise), self.num_sample)
        return ops.sort(index)

    def call(self, inputs):
        embedding, labels = inputs
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        batch = labels.shape[0]
        if batch is not None and batch > self.num_sample:
            raise ValueError(
                f"PartialFC samples {self.num_sample} of {self.units} classes, fewer than the batch size {batch}: "
                "raise sample_rate so that every class of a batch fits"
            )
        kernel = ops.cast(self.kernel, "float32")
        if self.num_sample < self.units:
            index = self.sample(labels)
            kernel = ops.take(kernel, index, axis=1)
            position = ops.scatter(index[:, None], ops.arange(self.num_sample, dtype="int32"), (self.units,))
            labels = ops.take(position, labels)
        x = l2_normalize(ops.cast(embedding, "float32"), axis=-1)
        cos = ops.matmul(x, l2_normalize(kernel, axis=0))
        if self.interclass_filtering_threshold > 0:
            target = ops.one_hot(labels, ops.shape(cos)[-1], dtype="bool")
            noisy = ops.logical_and(ops.stop_gradient(cos) > self.interclass_filtering_threshold, ~target)
            cos = ops.where(noisy, 0.0, cos)
        return cos, labels

    def compute_output_spec(self, inputs):
        embedding, labels = inputs
        batch = embedding.shape[0]
        return (
            keras.KerasTensor((batch, self.num_sample), dtype="float32"),
            keras.KerasTensor((batch,), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            sample_rate=self.sample_rate,
            interclass_filtering_threshold=self.interclass_filtering_threshold,
            seed=self.seed,
        )
        return config
