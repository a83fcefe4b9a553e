"""MarginHead: applies a margin loss to cosine logits inside the model, where the labels are visible."""

import keras
from keras import ops

from keras_insightface.losses.margin import get_margin_loss, serialize_margin_loss


@keras.saving.register_keras_serializable(package="keras_insightface")
class MarginHead(keras.layers.Layer):
    """``[cos, labels] -> scaled logits`` with the margin of ``loss`` on the target class (float32).

    The loss's running statistics (``loss.initial_state()``) live here as non-trainable float32 scalars named
    after their keys, so they are saved and restored with the model weights. With ``training`` true the head
    updates them from the batch and adds the loss's extra per-sample term (MagFace) as ``mean(extra)`` through
    ``add_loss`` (``logits_and_extra`` returns it instead, for the training task's ``compute_loss``); otherwise
    it uses the stored values and changes nothing. For a loss with ``needs_norm``
    (MagFace, AdaFace) the last column of ``cos`` is ``-||x||`` from ``NormDense(append_norm=True)``; it is
    split off and the logits have one column fewer.

    Example:
        >>> import numpy as np
        >>> from keras_insightface.losses.margin import CosFaceLoss
        >>> head = MarginHead(CosFaceLoss(scale=10))
        >>> np.asarray(head([np.array([[0.5, 0.2]], "float32"), np.array([0])])).round(2).tolist()
        [[1.5, 2.0]]
    """

    def __init__(self, loss, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.loss = get_margin_loss(loss)

    def build(self, input_shape):
        self.state_variables = {
            name: self.add_weight(
                name=name, shape=(), dtype="float32", initializer=keras.initializers.Constant(value), trainable=False
            )
            for name, value in self.loss.initial_state().items()
        }

    def logits_and_extra(self, cos, labels, training=False):
        """``(logits, extra per-sample loss (B,) or None)``; ``training`` updates the running statistics."""
        cos = ops.cast(cos, "float32")
        norms = None
        if self.loss.needs_norm:
            norms, cos = -cos[:, -1], cos[:, :-1]
        state = {name: variable.value for name, variable in self.state_variables.items()}
        logits, new_state, extra = self.loss.compute(cos, labels, state, norms=norms, training=bool(training))
        if training:
            for name, variable in self.state_variables.items():
                if new_state[name] is not state[name]:
                    variable.assign(ops.cast(new_state[name], "float32"))
        return logits, extra

    def call(self, inputs, training=None):
        logits, extra = self.logits_and_extra(*inputs, training=training)
        if training and extra is not None:
            self.add_loss(ops.mean(extra))
        return logits

    def compute_output_shape(self, input_shape):
        batch, classes = input_shape[0][0], input_shape[0][-1]
        if self.loss.needs_norm and classes is not None:
            classes -= 1
        return (batch, classes)

    def get_config(self):
        return {**super().get_config(), "loss": serialize_margin_loss(self.loss)}
