"""Optimizers with the weight-decay conventions face-recognition recipes use."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_insightface")
class L2SGD(keras.optimizers.SGD):
    """SGD with coupled L2 weight decay: ``grad + l2 * w`` enters the momentum, as PyTorch/MXNet SGD do.

    (Keras's ``weight_decay`` argument is decoupled, i.e. SGDW; insightface recipes use this one.)

    A variable with a ``sparse_class_axis`` attribute (Partial FC's kernel) is updated only in the classes whose
    gradient is non-zero, i.e. the classes sampled this step: their momentum and weight decay advance, the
    others stay exactly as they were.

    Example:
        >>> optimizer = L2SGD(learning_rate=0.1, momentum=0.9, l2=5e-4)
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, l2=5e-4, name="l2sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, variable.dtype)
        axis = getattr(variable, "sparse_class_axis", None)
        touched = None
        if axis is not None:
            other_axes = tuple(i for i in range(len(variable.shape)) if i != axis)
            touched = ops.any(ops.not_equal(gradient, 0), axis=other_axes, keepdims=True)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(variable, self.l2))
        if touched is None:
            return super().update_step(gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.multiply(gradient, learning_rate)
        if self.momentum:
            velocity = self.momentums[self._get_variable_index(variable)]
            new_velocity = ops.subtract(ops.multiply(velocity, self.momentum), step)
            self.assign(velocity, ops.where(touched, new_velocity, ops.convert_to_tensor(velocity)))
            step = ops.subtract(step, ops.multiply(new_velocity, self.momentum)) if self.nesterov else -new_velocity
        value = ops.convert_to_tensor(variable)
        self.assign(variable, ops.where(touched, ops.subtract(value, step), value))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
