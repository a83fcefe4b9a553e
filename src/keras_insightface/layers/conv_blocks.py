"""Small functional building blocks the backbones share: BN, PReLU / activations, PyTorch-aligned convs, and
``set_batch_norm`` that changes every BatchNormalization of a built model (backbones made elsewhere).

Stride-2 convolutions pad ``kernel_size // 2`` pixels explicitly and then use ``valid`` padding, as PyTorch
and MXNet do (Keras ``same`` pads only bottom/right), so converted weights line up.

Example:
    >>> import keras
    >>> from keras_insightface.layers.conv_blocks import batch_norm, conv, prelu
    >>> x = conv(keras.Input((112, 112, 3)), 16, 3, strides=2, name="stem_conv")
    >>> prelu(batch_norm(x, "stem_bn", 0.9, 1e-5), "stem_prelu").shape
    (None, 56, 56, 16)
"""

import keras


def batch_norm(x, name, momentum, epsilon, zero_gamma=False):
    """BatchNormalization; ``zero_gamma`` starts a residual branch at zero (ResNet / BoTNet practice)."""
    gamma = "zeros" if zero_gamma else "ones"
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, gamma_initializer=gamma, name=name)(x)


def prelu_layer(name, shared_axes=(1, 2)):
    """PReLU with MXNet/PyTorch's initial slope 0.25, one slope per channel shared over the spatial axes."""
    shared = list(shared_axes) if shared_axes else None
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=shared, name=name)


def prelu(x, name):
    return prelu_layer(name)(x)


def check_activation(kind, where):
    """Raise a ``ValueError`` naming ``where`` unless ``kind`` is ``prelu`` (any case) or a Keras activation name."""
    if isinstance(kind, str) and kind.lower() == "prelu":
        return
    try:
        if not isinstance(kind, str):
            raise TypeError(kind)
        keras.activations.get(kind)
    except (ValueError, TypeError):
        raise ValueError(
            f"{where} activation must be 'prelu' or a Keras activation name (relu, swish, gelu, ...), "
            f"received activation={kind!r}"
        ) from None


def apply_activation(x, name, kind):
    """``kind`` = ``prelu`` in any case (see ``prelu_layer``) or any Keras activation; the layer is named
    ``<name>_<kind>``."""
    if kind.lower() == "prelu":
        return prelu(x, f"{name}_prelu")
    return keras.layers.Activation(kind, name=f"{name}_{kind}")(x)


def set_batch_norm(model, momentum=None, epsilon=None):
    """Set ``momentum`` and / or ``epsilon`` (``None`` keeps it) of every BatchNormalization in ``model``, nested
    models included; returns how many there are. Keras reads both at call time, so a built model takes them."""
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        if momentum is not None:
            layer.momentum = float(momentum)
        if epsilon is not None:
            layer.epsilon = float(epsilon)
    return len(layers)


def conv(x, filters, kernel_size, strides=1, name="conv", groups=1, use_bias=False, depthwise=False,
         kernel_initializer="glorot_uniform"):
    """Conv2D (or DepthwiseConv2D when ``depthwise``) with explicit padding for strided kernels larger than 1.

    ``kernel_initializer``: a name or a config dict (each layer gets its own initializer, so its own draw)."""
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=use_bias, depthwise_initializer=kernel_initializer,
            name=name,
        )(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=use_bias,
        kernel_initializer=kernel_initializer, name=name,
    )(x)
