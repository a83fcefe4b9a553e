"""GhostNet (Han et al., 2020) as the seed system (Keras_insightface ``ghost_model.py``) uses it, width 1.3.

Layer order:
    - stem: 3x3 conv with ``strides`` (the seed's ``strides``; 1 or 2), ``16 * width`` channels, BN, activation;
    - 16 ghost bottlenecks (kernel, expansion, out, SE, stride):
      3/16/16/-/1, 3/48/24/-/2, 3/72/24/-/1, 5/72/40/SE/2, 5/120/40/SE/1, 3/240/80/-/2, 3/200/80/-/1,
      3/184/80/-/1, 3/184/80/-/1, 3/480/112/SE/1, 3/672/112/SE/1, 5/672/160/SE/2, 5/960/160/-/1,
      5/960/160/SE/1, 5/960/160/-/1, 5/512/160/SE/1. The last expansion is 512, as in the seed (the paper
      and huawei-noah's GhostNet use 960 there);
    - the final 1x1 conv to ``make_divisible(512 * width)`` (664 at width 1.3; the seed takes the last
      expansion, where the paper uses 960) + BN + activation.
Every channel count is ``make_divisible(c * width, 4)``. A ghost module is a 1x1 primary conv to half the
channels + BN (+ act), a cheap 3x3 depthwise on it + BN (+ act), and their concatenation (channels are
multiples of 4, so the halves are exact and no slicing is needed). A bottleneck is ghost module (act) ->
[depthwise kxk stride 2 + BN] -> [SE] -> ghost module (linear), plus a shortcut that is the identity when
stride is 1 and channels match, else depthwise kxk (stride) + BN + 1x1 conv + BN. SE: global average pool,
biased 1x1 conv to ``make_divisible(C / 4)``, ``se_activation`` (ReLU in the seed), biased 1x1 conv to C,
hard sigmoid, multiply. The gate is Keras 3's ``hard_sigmoid``, ``relu6(x + 3) / 6`` on every backend as
GhostNet/PyTorch (tf.keras 2, which the seed ran on, used ``clip(0.2 x + 0.5)``).
Four bottlenecks have stride 2, so 112x112 inputs end at 4x4 (``strides=2``) or 7x7 (``strides=1``).
Stride-2 convolutions pad ``k // 2`` pixels explicitly, as PyTorch does, so converted weights line up.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.ghostnet import ghostnet
    >>> inputs = keras.Input((112, 112, 3))
    >>> ghostnet(inputs, strides=1).shape
    (None, 7, 7, 664)
"""

import math

import keras

from keras_insightface.layers.conv_blocks import apply_activation, batch_norm, conv

# (kernel, expansion, out channels, SE ratio, stride) of the 16 ghost bottlenecks
BLOCKS = (
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2),
    (3, 72, 24, 0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0, 2),
    (3, 200, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1),
    (5, 512, 160, 0.25, 1),
)
ACTIVATIONS = ("relu", "prelu", "swish")


def make_divisible(value, divisor=4):
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), never 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _ghost_module(x, filters, activation, name, momentum, epsilon):
    primary = keras.layers.Conv2D(math.ceil(filters / 2), 1, use_bias=False, name=name + "_primary_conv")(x)
    primary = batch_norm(primary, name + "_primary_bn", momentum, epsilon)
    if activation:
        primary = apply_activation(primary, name + "_primary", activation)
    cheap = conv(primary, None, 3, 1, name + "_cheap_dwconv", depthwise=True)
    cheap = batch_norm(cheap, name + "_cheap_bn", momentum, epsilon)
    if activation:
        cheap = apply_activation(cheap, name + "_cheap", activation)
    return keras.layers.Concatenate(name=name + "_concat")([primary, cheap])


def _se_block(x, ratio, se_activation, name):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    y = keras.layers.Conv2D(make_divisible(channels * ratio), 1, name=name + "_reduce_conv")(y)
    y = apply_activation(y, name, se_activation)
    y = keras.layers.Conv2D(channels, 1, name=name + "_expand_conv")(y)
    y = keras.layers.Activation("hard_sigmoid", name=name + "_hard_sigmoid")(y)
    return keras.layers.Multiply(name=name + "_multiply")([x, y])


def _ghost_bottleneck(x, kernel_size, expansion, filters, se_ratio, strides, acts, name, momentum, epsilon):
    activation, se_activation = acts
    y = _ghost_module(x, expansion, activation, name + "_ghost1", momentum, epsilon)
    if strides > 1:
        y = conv(y, None, kernel_size, strides, name + "_dw_conv", depthwise=True)
        y = batch_norm(y, name + "_dw_bn", momentum, epsilon)
    if se_ratio > 0:
        y = _se_block(y, se_ratio, se_activation, name + "_se")
    y = _ghost_module(y, filters, None, name + "_ghost2", momentum, epsilon)
    if strides == 1 and x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = conv(x, None, kernel_size, strides, name + "_shortcut_dwconv", depthwise=True)
        shortcut = batch_norm(shortcut, name + "_shortcut_dw_bn", momentum, epsilon)
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=name + "_shortcut_conv")(shortcut)
        shortcut = batch_norm(shortcut, name + "_shortcut_bn", momentum, epsilon)
    return keras.layers.Add(name=name + "_add")([shortcut, y])


def ghostnet(inputs, width=1.3, strides=2, activation="relu", se_activation="relu", bn_momentum=0.99, bn_epsilon=1e-3):
    """Apply GhostNet to ``inputs``; returns the feature map after the final 1x1 conv.

    ``strides`` is the stem's stride (1 or 2); ``activation`` (``relu``, ``prelu`` or ``swish``) is used in the
    stem, the ghost modules and the final conv, ``se_activation`` inside the SE blocks. BN momentum / epsilon
    default to Keras's 0.99 / 1e-3, as the seed's ``ghost_model.py`` leaves them.
    """
    if not width > 0:
        raise ValueError(f"ghostnet width must be positive, received width={width}")
    if strides not in (1, 2):
        raise ValueError(f"ghostnet strides must be 1 or 2, received strides={strides}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"ghostnet activation must be one of {ACTIVATIONS}, received activation={activation!r}")
    if se_activation not in ACTIVATIONS:
        raise ValueError(
            f"ghostnet se_activation must be one of {ACTIVATIONS}, received se_activation={se_activation!r}"
        )
    x = inputs
    if strides > 1:
        x = keras.layers.ZeroPadding2D(1, name="stem_conv_pad")(x)
    padding = "valid" if strides > 1 else "same"
    stem_filters = make_divisible(16 * width)
    x = keras.layers.Conv2D(stem_filters, 3, strides=strides, padding=padding, use_bias=False, name="stem_conv")(x)
    x = apply_activation(batch_norm(x, "stem_bn", bn_momentum, bn_epsilon), "stem", activation)
    for index, (kernel_size, expansion, filters, se_ratio, block_strides) in enumerate(BLOCKS):
        expansion, filters = make_divisible(expansion * width), make_divisible(filters * width)
        acts = (activation, se_activation)
        name = f"block{index + 1}"
        x = _ghost_bottleneck(
            x, kernel_size, expansion, filters, se_ratio, block_strides, acts, name, bn_momentum, bn_epsilon
        )
    x = keras.layers.Conv2D(make_divisible(BLOCKS[-1][1] * width), 1, use_bias=False, name="pointwise_conv")(x)
    x = batch_norm(x, "pointwise_bn", bn_momentum, bn_epsilon)
    return apply_activation(x, "pointwise", activation)
