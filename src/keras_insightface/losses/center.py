"""Center loss: pull each embedding toward a running center of its class (Wen et al., ECCV 2016).

The centers are a non-trainable variable of the layer, so they are saved with the model and survive
checkpoints, and are updated by a moving-average rule during training instead of by the optimizer.

Example:
    >>> import numpy as np
    >>> layer = CenterLoss(num_classes=3, alpha=0.5)
    >>> x, labels = np.array([[1.0, 2.0], [3.0, 0.0], [1.0, 0.0]], "float32"), np.array([0, 0, 2])
    >>> np.asarray(layer([x, labels], training=True)).tolist()  # 0.5 * ||x - c_y||^2 against zero centers
    [2.5, 4.5, 0.5]
    >>> np.asarray(layer.centers).tolist()  # classes 0 and 2 moved half way to their batch means
    [[1.0, 0.5], [0.0, 0.0], [0.5, 0.0]]
"""

import keras
from keras import ops

from keras_insightface.layers.normalize import l2_normalize


@keras.saving.register_keras_serializable(package="keras_insightface")
class CenterLoss(keras.layers.Layer):
    """Per-sample center loss of ``[embedding (B, D), labels (B,)]``, shape (B,); updates the centers when training.

    Loss ``0.5 * ||x - c_y||^2``, or with ``cosine=True`` ``1 - cos(x, c_y)`` (x and centers L2-normalised; the
    centers then track normalised embeddings). With ``training=True``, after the loss is taken, every class j
    in the batch moves ``c_j <- c_j - alpha * sum_{i: y_i=j} (c_j - x_i) / n_j`` with n_j its count in the batch:
    the seed Keras_insightface divides by n_j, Wen et al. by 1 + n_j. The update carries no gradient; the loss
    gradient reaches the embedding only (``x - c_y`` for the Euclidean form).
    """

    def __init__(self, num_classes, alpha=0.5, cosine=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1 or not 0 <= alpha <= 1:
            message = f"CenterLoss needs num_classes >= 1 and 0 <= alpha <= 1, received {num_classes=}, {alpha=}"
            raise ValueError(message)
        self.num_classes, self.alpha, self.cosine = int(num_classes), float(alpha), bool(cosine)

    def build(self, input_shape):
        embedding_shape = input_shape[0]
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, embedding_shape[-1]),
            initializer="zeros",
            dtype="float32",
            trainable=False,
        )

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
            step = self.alpha * (centers_batch - ops.stop_gradient(x)) / counts
            self.centers.assign(self.centers - ops.segment_sum(step, labels, num_segments=self.num_classes))
        return loss

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha, "cosine": self.cosine}
