"""Model surgery the seed's recipes use: activation swaps, BatchNormalization settings, L2 regularisers,
residual adds to stochastic depth and back, mixed precision.

Each function keeps the trained weights: a swap rebuilds the model from its config and copies every
weight whose layer name and shapes still match. The seed system's names (``add_l2_regularizer_2_model``,
``replace_ReLU_with_PReLU``, ``replace_add_with_stochastic_depth``, ``replace_stochastic_depth_with_add``,
``convert_to_mixed_float16``, ``convert_mixed_float16_to_float32``) keep its keywords and meaning and return
the model, over this module's functions.

Example:
    >>> from keras_insightface.models import buildin_models
    >>> from keras_insightface.surgery import add_l2_regularizer_2_model, replace_relu, set_bn_params
    >>> model = buildin_models("mobilenet", emb_shape=16, weights=None)
    >>> prelu = replace_relu(model, "prelu")
    >>> sum(type(layer).__name__ == "PReLU" for layer in prelu.layers)
    27
    >>> set_bn_params(prelu, momentum=0.9, epsilon=2e-5)
    29
    >>> regularised = add_l2_regularizer_2_model(prelu, 1e-3)  # L2(5e-4) on every kernel, as the seed
    >>> float(regularised.get_layer("conv1").kernel_regularizer.l2)
    0.0005
"""

import keras
import numpy as np

from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.layers.conv_blocks import prelu_layer, set_batch_norm
from keras_insightface.layers.stochastic_depth import StochasticDepth


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


def replace_ReLU_with_PReLU(model, target_activation="PReLU", **kwargs):  # noqa: N802 - the seed system's name
    """The seed's ReLU swap: a new model (weights kept) with every ReLU / ``Activation("relu")`` replaced.

    ``target_activation``: ``"PReLU"`` gives a PReLU with slope 0.25 shared over the spatial axes (a 2-D input
    keeps one slope per unit), named with ``_relu`` -> ``_prelu``; another string gives ``Activation(name)``
    named ``_relu`` -> ``_<name>``; a layer class gives ``target_activation(**kwargs)``. ``kwargs`` go to the
    new layers. Each swap is printed, as the seed does.
    """
    is_prelu = isinstance(target_activation, str) and target_activation.lower() == "prelu"
    if isinstance(target_activation, str):
        suffix = "prelu" if is_prelu else target_activation
    elif isinstance(target_activation, type) and issubclass(target_activation, keras.layers.Layer):
        suffix = target_activation.__name__
    else:
        raise ValueError(
            "replace_ReLU_with_PReLU: target_activation must be 'PReLU', an activation name or a Keras layer class,"
            f" received {target_activation!r}"
        )

    def replace(layer):
        if not is_relu(layer):
            return None
        options = {"name": layer.name.replace("_relu", "_" + suffix), **kwargs}
        print(">>>> Convert ReLU:", layer.name, "-->", options["name"])
        if is_prelu:
            shared = [1, 2] if len(layer.input.shape) == 4 else None
            options = {"shared_axes": shared, "alpha_initializer": keras.initializers.Constant(0.25), **options}
            return keras.layers.PReLU(**options)
        if isinstance(target_activation, str):
            return keras.layers.Activation(target_activation, **options)
        return target_activation(**options)

    return _rebuild(model, replace)


def set_bn_params(model, momentum=None, epsilon=None):
    """Set momentum and/or epsilon of every BatchNormalization in place; returns how many were changed.

    (MXNet: 0.9 / 2e-5; PyTorch: 0.9 / 1e-5 in Keras terms; Keras default 0.99 / 1e-3.) Recompile after.
    """
    return set_batch_norm(model, momentum, epsilon)


def _regularised_weights(layer, apply_to_batch_normal, apply_to_bias):
    """``[(layer attribute, variable)]`` the seed regularises in ``layer``: kernels of Dense and convolutions
    (depthwise and pointwise ones too), their biases with ``apply_to_bias``, and BatchNormalization gamma/beta
    and PReLU alpha with ``apply_to_batch_normal``."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        pairs = [("depthwise_regularizer", "depthwise_kernel"), ("pointwise_regularizer", "pointwise_kernel")]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):  # Keras 3 names its weight ``kernel``
        pairs = [("depthwise_regularizer", "kernel")]
    elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        pairs = [("kernel_regularizer", "kernel")]
    elif apply_to_batch_normal and isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{name}_regularizer", getattr(layer, name, None)) for name in ("gamma", "beta")
                if getattr(layer, name, None) is not None]
    elif apply_to_batch_normal and isinstance(layer, keras.layers.PReLU):
        return [("alpha_regularizer", layer.alpha)]
    else:
        return []
    if apply_to_bias and getattr(layer, "bias", None) is not None:
        pairs.append(("bias_regularizer", "bias"))
    return [(attribute, getattr(layer, name)) for attribute, name in pairs if getattr(layer, name, None) is not None]


def add_l2_regularizer(model, weight_decay, apply_to_batch_normal=False, apply_to_bias=False):
    """Attach ``L2(weight_decay / 2)`` (the seed's convention) in place to every kernel of the trainable layers,
    also to their biases with ``apply_to_bias``, and to BN gamma/beta and PReLU alpha with
    ``apply_to_batch_normal``; returns the number of variables regularised. Nested models are reached too.

    The regulariser is set on the variable (so ``model.losses`` has it now) and on the layer's
    ``*_regularizer`` attribute (so a saved model keeps it). Recompile after.
    """
    if not np.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"add_l2_regularizer: weight_decay must be a finite number >= 0, received {weight_decay!r}")
    regularizer = keras.regularizers.L2(weight_decay / 2)
    count = 0
    for layer in model._flatten_layers():
        if not layer.trainable:
            continue
        for attribute, variable in _regularised_weights(layer, apply_to_batch_normal, apply_to_bias):
            setattr(layer, attribute, regularizer)
            variable.regularizer = regularizer
            count += 1
    return count


def add_l2_regularizer_2_model(model, weight_decay, custom_objects=None, apply_to_batch_normal=False,
                               apply_to_bias=False):
    """The seed's L2 surgery: ``add_l2_regularizer`` on ``model``, which is returned (weights kept).

    The added value is ``weight_decay / 2 * sum(w ** 2)`` per weight: ``weight_decay=1e-3`` adds ``L2(5e-4)``,
    the seed's "actual added l2 value is divided by 2". ``custom_objects`` is accepted for the seed's signature
    and not needed: the model is changed in place, not reloaded from its config.
    """
    add_l2_regularizer(model, weight_decay, apply_to_batch_normal=apply_to_batch_normal, apply_to_bias=apply_to_bias)
    return model


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


def seed_survivals(survivals, count):
    """The seed's survival probability of each of ``count`` adds: one float for all, ``(start, end)`` (any pair, as
    the seed) for ``start - (1 - end) * i / count`` at add ``i`` (the last stays just above ``end``), or one
    value per add."""
    if isinstance(survivals, (int, float)):
        values = [float(survivals)] * count
    elif len(survivals) == 2:
        start, end = survivals
        values = [start - (1 - end) * i / count for i in range(count)]
    elif len(survivals) == count:
        values = [float(value) for value in survivals]
    else:
        raise ValueError(f"survivals: a float, (start, end) or one value per Add ({count}), received {survivals!r}")
    if not all(0 < value <= 1 for value in values):
        raise ValueError(f"survivals: survival probabilities must be in (0, 1], received {values}")
    return values


def replace_add_with_stochastic_depth(model, survivals=(1, 0.8)):
    """The seed's stochastic depth: every ``Add`` of ``model`` (in layer order, two inputs ``[shortcut,
    residual]``) with survival probability below 1 becomes ``StochasticDepth(1 - survival)``; a new model with
    the weights kept. ``survivals`` as ``seed_survivals``; an ``add_N`` layer is renamed ``stochastic_depth_N``.
    """
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    if not adds:
        raise ValueError(f"{model.name}: no Add layers to turn into stochastic depth")
    for layer in adds:
        if len(layer.input) != 2:
            raise ValueError(f"{model.name}: Add layer {layer.name!r} has {len(layer.input)} inputs; stochastic "
                             "depth needs two ([shortcut, residual])")
    survival = dict(zip([layer.name for layer in adds], seed_survivals(survivals, len(adds))))

    def replace(layer):
        if survival.get(layer.name, 1.0) >= 1.0:
            return None
        name = layer.name.replace("add_", "stochastic_depth_")
        print("Converting:", layer.name, "-->", name, ", survival_probability:", survival[layer.name])
        return StochasticDepth(1.0 - survival[layer.name], name=name)

    return _rebuild(model, replace)


def remove_stochastic_depth(model):
    """Turn every ``StochasticDepth`` back into a plain ``Add`` (e.g. before export)."""

    def replace(layer):
        return keras.layers.Add(name=layer.name) if isinstance(layer, StochasticDepth) else None

    return _rebuild(model, replace)


def replace_stochastic_depth_with_add(model, drop_survival=False):
    """The seed's inverse: every ``StochasticDepth`` becomes an ``Add`` named ``_stochastic_depth`` ->
    ``_lambda``; a new model with the weights kept.

    This package's ``StochasticDepth`` scales kept branches while training, so at inference it already is a
    plain add: the result computes what the model computes at inference for either ``drop_survival`` (the seed's
    layer scaled the residual by its survival at inference, which ``drop_survival=True`` dropped).
    """
    del drop_survival  # nothing to drop: see the docstring

    def replace(layer):
        if not isinstance(layer, StochasticDepth):
            return None
        name = layer.name.replace("_stochastic_depth", "_lambda")
        print("Converting:", layer.name, "-->", name, ", survival_probability:", 1.0 - layer.drop_rate)
        return keras.layers.Add(name=name)

    return _rebuild(model, replace)


def _with_dtype(model, dtype, keep):
    """A copy of ``model`` whose layers, except those ``keep(layer)`` is true for, compute in ``dtype``; a
    compiled model's compile configuration (a fresh optimizer of the same settings) is applied to the copy."""

    def replace(layer):
        if keep(layer):
            return None
        config = layer.get_config()
        config["dtype"] = dtype
        return layer.__class__.from_config(config)

    rebuilt = _rebuild(model, replace)
    if getattr(model, "compiled", False):
        rebuilt.compile_from_config(model.get_compile_config())
    return rebuilt


def _linear_or(layer, *names):
    if not isinstance(layer, keras.layers.Activation):
        return False
    return keras.activations.serialize(layer.activation) in ("linear", *names)


def convert_to_mixed_float16(model, convert_batch_norm=False):
    """The seed's mixed precision surgery: a copy of ``model`` (weights kept) computing in ``mixed_float16``,
    except inputs, ``NormDense`` heads, softmax / linear activations and, unless ``convert_batch_norm``,
    BatchNormalization layers."""

    def keep(layer):
        if isinstance(layer, (keras.layers.InputLayer, NormDense)) or _linear_or(layer, "softmax"):
            return True
        return not convert_batch_norm and isinstance(layer, keras.layers.BatchNormalization)

    return _with_dtype(model, "mixed_float16", keep)


def convert_mixed_float16_to_float32(model):
    """The seed's way back: a copy of ``model`` (weights kept) with every layer but inputs and linear activations
    computing in float32."""
    return _with_dtype(model, "float32", lambda layer: isinstance(layer, keras.layers.InputLayer) or _linear_or(layer))


def convert_to_batch_renorm(model):
    """The seed's Batch Renormalization surgery, which Keras 3 cannot do: its BatchNormalization has no renorm."""
    raise NotImplementedError(
        f"convert_to_batch_renorm({model.name}): Keras 3's BatchNormalization has no batch renormalization "
        "(renorm); train with plain BatchNormalization (set_bn_params sets its momentum and epsilon)"
    )
