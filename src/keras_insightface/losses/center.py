"""Center loss: pull each embedding toward a running center of its class (Wen et al., ECCV 2016).

The centers are a non-trainable variable of the layer, so they are saved with the model and survive
checkpoints, and are updated by a moving-average rule during training instead of by the optimizer. Used as a
stage's extra term (the stage key ``centerloss``) or, as the seed's ``CenterLoss(num_classes, emb_shape)``, as a
stage's main loss (the seed's type ``center``: the embedding trained by the center loss alone).

Example:
    >>> import numpy as np
    >>> layer = CenterLoss(num_classes=3, alpha=0.5)
    >>> x, labels = np.array([[1.0, 2.0], [3.0, 0.0], [1.0, 0.0]], "float32"), np.array([0, 0, 2])
    >>> np.asarray(layer([x, labels], training=True)).tolist()  # 0.5 * ||x - c_y||^2 against zero centers
    [2.5, 4.5, 0.5]
    >>> (np.asarray(layer.centers) * 6).tolist()  # class 0: 0.5 * (x_0 + x_1) / (2 + 1); class 2: 0.5 * x_2 / 2
    [[4.0, 2.0], [0.0, 0.0], [1.5, 0.0]]
"""

import os

import keras
import numpy as np
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


@keras.saving.register_keras_serializable(package="keras_insightface")
class CenterLoss(keras.layers.Layer):
    """Per-sample center loss of ``[embedding (B, D), labels (B,)]``, shape (B,); updates the centers when training.

    Loss ``0.5 * ||x - c_y||^2``, or with ``cosine=True`` ``1 - cos(x, c_y)`` (x and centers L2-normalised; the
    centers then track normalised embeddings). With ``training=True``, after the loss is taken, every class j
    in the batch moves ``c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)`` with n_j its count in the
    batch (Wen et al.'s update, as the seed Keras_insightface). The update carries no gradient; the loss gradient
    reaches the embedding only (``x - c_y`` for the Euclidean form).

    Args:
        num_classes: identities, rows of the centers.
        emb_shape: the embedding width D (the seed's keyword); None takes it from the embedding. A width that
            differs from the embedding's is an error when the layer is built.
        alpha: the center update rate, in [0, 1].
        initial_file: a ``.npy`` of (num_classes, D) centers to start from, read when the layer is built if the
            file exists (the seed's reload from a center backup). Nothing writes it: the centers are saved with
            the model's weights and the run's checkpoints.
        cosine: the cosine form above. The seed's ``CenterLossCosine`` has the same loss value but moves its
            centers toward the raw embeddings, so it is not this.
    """

    def __init__(self, num_classes, emb_shape=None, alpha=0.5, initial_file=None, cosine=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1 or not 0 <= alpha <= 1 or (emb_shape is not None and emb_shape < 1):
            raise ValueError("CenterLoss needs num_classes >= 1, emb_shape None or >= 1 and 0 <= alpha <= 1, "
                             f"received {num_classes=}, {emb_shape=}, {alpha=}")
        self.num_classes, self.alpha, self.cosine = int(num_classes), float(alpha), bool(cosine)
        self.emb_shape = None if emb_shape is None else int(emb_shape)
        self.initial_file = None if initial_file is None else os.fspath(initial_file)

    def build(self, input_shape):
        width = input_shape[0][-1]
        if self.emb_shape is not None and width is not None and width != self.emb_shape:
            raise ValueError(f"CenterLoss(emb_shape={self.emb_shape}) received embeddings of width {width}; set "
                             "emb_shape to the embedding width (or leave it None)")
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, width if width is not None else self.emb_shape),
            initializer="zeros",
            dtype="float32",
            trainable=False,
        )
        if self.initial_file is not None and os.path.isfile(self.initial_file):
            initial = np.load(self.initial_file)
            if initial.shape != tuple(self.centers.shape):
                raise ValueError(f"{self.initial_file}: centers of shape {initial.shape}, CenterLoss needs "
                                 f"{tuple(self.centers.shape)} (num_classes, embedding width)")
            self.centers.assign(initial.astype("float32"))

    def call(self, inputs, training=None):
        embedding, labels = inputs
        x = ops.cast(embedding, "float32")
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        centers_batch = ops.take(ops.convert_to_tensor(self.centers), labels, axis=0)
        if self.cosine:
            x = l2_normalize(x)
            loss = 1.0 - ops.sum(x * l2_normalize(centers_batch), axis=-1)
        else:
            loss = 0.5 * ops.sum(ops.square(x - centers_batch), axis=-1)
        if training:
            same = ops.cast(ops.equal(labels[:, None], labels[None, :]), "float32")
            counts = ops.sum(same, axis=-1, keepdims=True)
            step = self.alpha * (centers_batch - ops.stop_gradient(x)) / (counts + 1.0)
            self.centers.assign(self.centers - ops.segment_sum(step, labels, num_segments=self.num_classes))
        return loss

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "emb_shape": self.emb_shape,
                "alpha": self.alpha, "initial_file": self.initial_file, "cosine": self.cosine}
