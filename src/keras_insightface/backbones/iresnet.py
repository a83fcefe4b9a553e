"""IR-ResNet (insightface's ``iresnet``): the standard face-recognition backbone.

Layer order follows insightface arcface_torch and the seed system's ``resnet.py``: a 3x3 stride-1 stem with
BN + activation, then four stages of pre-BN ``IBasicBlock`` (BN -> conv3x3 -> BN -> act -> conv3x3(stride)
-> BN, plus a 1x1 conv + BN shortcut when the shape changes), every stage starting with stride 2. 112x112
inputs end at 7x7. Stride-2 convolutions pad one pixel explicitly, as PyTorch/MXNet do, so converted weights
line up. BN momentum 0.9, epsilon 1e-5 in both references.

Defaults are the seed's (``buildin_models("r50")`` there): ReLU, conv kernels drawn from He's truncated normal
over fan-out (``VarianceScaling(2.0, "fan_out", "truncated_normal")``). arcface_torch uses PReLU
(``activation="prelu"``, slopes 0.25 shared over the spatial axes); ``buildin_models(..., preset="arcface_torch")``
asks for it.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.iresnet import iresnet
    >>> inputs = keras.Input((112, 112, 3))
    >>> iresnet(inputs, depth=18, width=16).shape
    (None, 7, 7, 128)
"""

import keras

from keras_insightface.layers.conv_blocks import apply_activation, batch_norm, check_activation, conv

BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    101: (3, 4, 23, 3),  # the seed's MXNet-layout r101
    200: (6, 26, 60, 6),
}
SE_REDUCTION = 16


def seed_initializer():
    """A new initializer as the seed's convolutions use: He's truncated normal over fan-out."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def _initializer(spec):
    return seed_initializer() if spec is None else spec


def _se(x, name, init):
    """Squeeze-excitation on the residual (reduction 16, ReLU, sigmoid gate), as the seed's ``se_`` models."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    s = keras.layers.Conv2D(
        max(channels // SE_REDUCTION, 1), 1, use_bias=False, kernel_initializer=_initializer(init), name=name + "_reduce"
    )(s)
    s = keras.layers.ReLU(name=name + "_relu")(s)
    s = keras.layers.Conv2D(
        channels, 1, use_bias=False, activation="sigmoid", kernel_initializer=_initializer(init), name=name + "_expand"
    )(s)
    return keras.layers.Multiply(name=name + "_scale")([x, s])


def _basic_block(x, filters, strides, name, options):
    momentum, epsilon, init = options["bn_momentum"], options["bn_epsilon"], options["kernel_initializer"]
    if strides != 1 and x.shape[-1] == filters and options["use_max_pool"]:
        shortcut = keras.layers.MaxPooling2D(1, strides=strides, name=name + "_shortcut_pool")(x)
    elif strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer=_initializer(init), name=name + "_shortcut_conv"
        )(x)
        shortcut = batch_norm(shortcut, name + "_shortcut_bn", momentum, epsilon)
    else:
        shortcut = x
    y = batch_norm(x, name + "_1_bn", momentum, epsilon)
    y = conv(y, filters, 3, 1, name + "_1_conv", kernel_initializer=_initializer(init))
    y = batch_norm(y, name + "_2_bn", momentum, epsilon)
    y = apply_activation(y, name + "_2", options["activation"])
    y = conv(y, filters, 3, strides, name + "_2_conv", kernel_initializer=_initializer(init))
    y = batch_norm(y, name + "_3_bn", momentum, epsilon)
    if options["use_se"]:
        y = _se(y, name + "_se", init)
    return keras.layers.Add(name=name + "_add")([shortcut, y])


def iresnet(
    inputs,
    depth=50,
    width=64,
    stem_strides=1,
    activation="relu",
    use_se=False,
    use_max_pool=False,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    kernel_initializer=None,
):
    """Apply an IR-ResNet of ``depth`` (18/34/50/100/101/200) to ``inputs``; returns the last feature map.

    ``width`` is the stem/first-stage channel count (64 in insightface); stages use 1x, 2x, 4x, 8x.
    ``stem_strides=2`` quarters the compute of every stage (a CPU-sized variant; insightface uses 1).
    ``activation``: ``relu`` (the seed), ``prelu`` (arcface_torch) or any Keras activation name (``swish``,
    ``gelu``...). ``use_se`` adds squeeze-excitation to every residual (the seed's ``se_r50``...).
    ``use_max_pool``: a stride-2 block that keeps its channel count subsamples its shortcut with a 1x1 max-pool
    instead of a 1x1 conv + BN. ``kernel_initializer``: of every convolution, a Keras initializer name;
    ``None`` = the seed's ``VarianceScaling(2.0, "fan_out", "truncated_normal")``.
    """
    if depth not in BLOCKS:
        raise ValueError(f"iresnet depth must be one of {sorted(BLOCKS)}, received depth={depth}")
    if width < 1:
        raise ValueError(f"iresnet width must be positive, received width={width}")
    check_activation(activation, "iresnet")
    options = dict(activation=activation, use_se=use_se, use_max_pool=use_max_pool, bn_momentum=bn_momentum,
                   bn_epsilon=bn_epsilon, kernel_initializer=kernel_initializer)
    x = conv(inputs, width, 3, stem_strides, "stem_conv", kernel_initializer=_initializer(kernel_initializer))
    x = batch_norm(x, "stem_bn", bn_momentum, bn_epsilon)
    x = apply_activation(x, "stem", activation)
    for stage, num_blocks in enumerate(BLOCKS[depth]):
        filters = width * 2**stage
        for block in range(num_blocks):
            strides = 2 if block == 0 else 1
            x = _basic_block(x, filters, strides, f"stack{stage + 1}_block{block + 1}", options)
    return x
