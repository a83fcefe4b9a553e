"""Sharpness-Aware Minimization (Foret et al. 2021) inside a model's compiled JAX train step, as the seed's
``SAMModel`` trains: the gradient ``g`` at the weights ``w``, the step ``e = rho * g / (||g|| + 1e-12)`` with
``||g||`` the global norm over all trainable variables, the gradient at ``w + e``, and the optimizer applies that
second gradient to ``w``.

As in the seed, both forward passes run in training mode one after the other: BatchNormalization moving
statistics, a margin's running statistics and center-loss centers take both updates, the second pass seeing the
first's. Unlike a stateful re-run, the second pass makes the same random draws as the first (``SeedGenerator``
states are rewound for it): the same augmentation, mixup pairs, Partial FC sample and dropout masks, as the
seed's two passes saw one batch from its input pipeline. The loss and metrics reported are the first pass's, as a
plain step's (the seed's logged loss averaged the losses at ``w`` and ``w + e``).

Weight decay applied by the optimizer (``L2SGD``'s coupled L2, ``sgdw``/``adamw``) is not part of ``g``; L2
kernel regularizers of the model are, as in the seed. Loss scaling (``LossScaleOptimizer``) needs nothing more: the
step ``e`` does not depend on the scale, and a non-finite gradient makes the applied gradient non-finite too, so
the optimizer skips the step and lowers the scale. With ``gradient_accumulation_steps`` each micro-batch
takes its own SAM gradient at the same weights and the optimizer averages them.

Example:
    >>> import numpy as np, keras
    >>> class Tiny(keras.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.dense = keras.layers.Dense(1, kernel_initializer="ones")
    ...     def call(self, x):
    ...         return self.dense(x)
    ...     def train_step(self, state, data):
    ...         return sam_train_step(self, state, data, rho=0.05)
    >>> model = Tiny()
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    >>> round(float(model.fit(x, y, batch_size=4, verbose=0).history["loss"][0]), 3)  # at w, before the update
    4.0
"""

import jax
import keras
from keras import ops

NORM_EPSILON = 1e-12  # the seed's: rho / (||g|| + 1e-12)


def sharpness_step(gradients, rho):
    """``e = rho * g / (||g|| + 1e-12)`` per variable, ``||g||`` the global norm of all ``gradients`` (float32)."""
    norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(gradient, "float32"))) for gradient in gradients))
    scale = rho / (norm + NORM_EPSILON)
    return [ops.cast(ops.cast(gradient, "float32") * scale, gradient.dtype) for gradient in gradients]


def check_rho(rho):
    """``rho`` as a float; a clear error for a negative radius, or SAM asked of a backend other than JAX."""
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not rho >= 0:
        raise ValueError(f"sam_rho: must be a number >= 0 (0: no SAM), received {rho!r}")
    if rho > 0 and keras.backend.backend() != "jax":
        raise NotImplementedError(f"sam_rho: SAM training is built for the JAX backend, not "
                                  f"{keras.backend.backend()!r}")
    return float(rho)


def _is_random_state(variable):
    """A ``keras.random.SeedGenerator``'s state: the counter its layer's random draws come from."""
    return variable.name == "seed_generator_state"


def sam_train_step(model, state, data, rho):
    """The JAX ``train_step(state, data)`` of a compiled ``model`` with SAM of radius ``rho``: returns
    ``(logs, state)`` as ``keras.Model.train_step`` on the JAX backend does. Pure array code, traced once."""
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    gradient_of = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)

    def pass_at(weights, non_trainable_values):
        return gradient_of(weights, non_trainable_values, metrics_variables, x, y, sample_weight, training=True,
                           optimizer_variables=optimizer_variables)

    (_, (loss, y_pred, after_first, first_metrics)), gradients = pass_at(trainable, non_trainable)
    perturbed = [weight + ops.cast(step, weight.dtype)
                 for weight, step in zip(trainable, sharpness_step(gradients, rho))]
    rewound = [before if _is_random_state(variable) else after
               for variable, before, after in zip(model.non_trainable_variables, non_trainable, after_first)]
    (_, (_, _, after_second, _)), sharp_gradients = pass_at(perturbed, rewound)
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, sharp_gradients, trainable)
    logs, metrics_variables = model._update_metrics_variables(first_metrics, loss, x, y, y_pred, sample_weight)
    return logs, (trainable, after_second, optimizer_variables, metrics_variables)
