"""Model surgery the seed's recipes use: activation swaps, BatchNormalization settings, L2 regularisers,
residual adds to stochastic depth and back.

Each function keeps the trained weights: a swap rebuilds the model from its config and copies every
weight whose layer name and shapes still match.

Example:
    >>> from keras_insightface.models import buildin_models
    >>> from keras_insightface.surgery import replace_relu, set_bn_params
    >>> model = buildin_models("mobilenet", emb_shape=16)
    >>> prelu = replace_relu(model, "prelu")
    >>> sum(type(layer).__name__ == "PReLU" for layer in prelu.layers)
    27
    >>> set_bn_params(prelu, momentum=0.9, epsilon=2e-5)
    29
"""

import keras
import numpy as np

from keras_insightface.layers.conv_blocks import prelu_layer
from keras_insightface.layers.stochastic_depth import StochasticDepth

KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")  # the regularised weights of those layers


def is_relu(layer):
    """A ``ReLU`` layer (also ReLU6, as the seed converts those too) or an ``Activation("relu")``."""
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and keras.activations.serialize(layer.activation) == "relu"


def copy_weights(source, target):
    """Copy weights layer by layer where names and weight shapes match; returns how many layers were copied."""
    copied = 0
    for layer in target.layers:
        try:
            old = source.get_layer(layer.name)
        except ValueError:
            continue
        old_weights, new_weights = old.get_weights(), layer.get_weights()
        if old_weights and [w.shape for w in old_weights] == [w.shape for w in new_weights]:
            layer.set_weights(old_weights)
            copied += 1
    return copied


def _rebuild(model, replace):
    def convert(layer):
        new = replace(layer)
        return new if new is not None else layer.__class__.from_config(layer.get_config())

    rebuilt = keras.models.clone_model(model, clone_function=convert)
    copy_weights(model, rebuilt)
    return rebuilt


def replace_relu(model, target="prelu"):
    """A copy of ``model`` with every ReLU replaced by ``target``: ``"prelu"`` (alpha 0.25, one per channel,
    shared over the spatial axes, as MXNet/PyTorch) or any Keras activation name such as ``"swish"``.
    """

    def replace(layer):
        if not is_relu(layer):
            return None
        name = layer.name.replace("relu", target) if "relu" in layer.name else f"{layer.name}_{target}"
        if target.lower() == "prelu":
            return prelu_layer(name, shared_axes=(1, 2) if len(layer.input.shape) == 4 else None)
        return keras.layers.Activation(target, name=name)

    return _rebuild(model, replace)


def set_bn_params(model, momentum=None, epsilon=None):
    """Set momentum and/or epsilon of every BatchNormalization in place; returns how many were changed.

    (MXNet: 0.9 / 2e-5; PyTorch: 0.9 / 1e-5 in Keras terms; Keras default 0.99 / 1e-3.) Recompile after.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        if momentum is not None:
            layer.momentum = float(momentum)
        if epsilon is not None:
            layer.epsilon = float(epsilon)
    return len(layers)


def add_l2_regularizer(model, weight_decay, apply_to_batch_normal=False):
    """Attach ``L2(weight_decay / 2)`` (the seed's convention) to every kernel, and to BN gamma/beta and PReLU
    alpha when ``apply_to_batch_normal``; returns the number of variables regularised. Recompile after.
    """
    regularizer = keras.regularizers.L2(weight_decay / 2)
    count = 0
    for layer in model._flatten_layers():
        if isinstance(layer, KERNEL_LAYERS):  # Keras 3 names a DepthwiseConv2D's weight ``kernel``
            variables = [getattr(layer, name) for name in KERNEL_NAMES if getattr(layer, name, None) is not None]
        elif apply_to_batch_normal and isinstance(layer, (keras.layers.BatchNormalization, keras.layers.PReLU)):
            variables = list(layer.trainable_weights)
        else:
            continue
        for variable in variables:
            variable.regularizer = regularizer
            count += 1
    return count


def is_residual_add(layer):
    """This package's residual adds: two inputs ``[shortcut, residual]`` and a name ending in ``_add``
    (``_out`` in ResNetV2, which keeps keras.applications' names)."""
    named = layer.name.endswith(("_add", "_out"))
    return isinstance(layer, keras.layers.Add) and named and len(layer.input) == 2


def add_stochastic_depth(model, drop_rate=0.2, is_residual=is_residual_add):
    """Replace residual adds by ``StochasticDepth`` whose drop rate grows linearly from 0 at the first block to
    ``drop_rate`` at the last (survival 1 -> 0.8 for the seed's default), keeping layer names and weights.
    """
    adds = [layer.name for layer in model.layers if is_residual(layer)]
    if not adds:
        raise ValueError(f"{model.name}: no residual Add layers to turn into stochastic depth")
    rates = dict(zip(adds, np.linspace(0.0, drop_rate, len(adds)).tolist()))

    def replace(layer):
        return StochasticDepth(rates[layer.name], name=layer.name) if layer.name in rates else None

    return _rebuild(model, replace)


def remove_stochastic_depth(model):
    """Turn every ``StochasticDepth`` back into a plain ``Add`` (e.g. before export)."""

    def replace(layer):
        return keras.layers.Add(name=layer.name) if isinstance(layer, StochasticDepth) else None

    return _rebuild(model, replace)
