"""Optimizers with the weight-decay conventions face-recognition recipes use."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class L2SGD(keras.optimizers.SGD):
    """SGD with coupled L2 weight decay: ``grad + l2 * w`` enters the momentum, as PyTorch/MXNet SGD do.

    (Keras's ``weight_decay`` argument is decoupled, i.e. SGDW; insightface recipes use this one.)

    Example:
        >>> optimizer = L2SGD(learning_rate=0.1, momentum=0.9, l2=5e-4)
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, l2=5e-4, name="l2sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(variable, self.l2))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
