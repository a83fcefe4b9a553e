"""VarGFaceNet as the seed system (Keras_insightface ``backbones/vargface.py``) builds it, registered as ``vargface``.

The seed's own reading of VarGFaceNet, which differs from the authors' MXNet layout (``vargfacenet``): no
width multiplier by default (32 / 64 / 128 / 256 channels), one activation everywhere (``activation``:
``relu`` by default, ``prelu`` or any Keras activation), SE off by default (``se_ratio``), and the
embedding block's 7x7 grouped conv + BN is part of the backbone, which therefore ends at ``(1, 1, 1024)``
for 112x112 inputs; the embedding head (GDC etc.) comes after it.

Layer order, with the seed's layer names:
    - "separable conv" ``<name>``: kxk conv with ``in / 8`` groups to ``in * hidden_ratio`` channels
      (``<name>1_conv``) + BN + activation, then 1x1 conv to the output channels (``<name>2_conv``) + BN;
    - block: shortcut = a separable conv (``shortcut_``, first block of a stack and the stem) or the input;
      body = one separable conv (``sep1_``) or, in a stack's first block, two parallel ones (``sep1_1_``,
      ``sep1_2_``) added (``merge_``), then the activation (``sep1_<act>``), a stride-1 separable conv
      (``sep2_``), an SE block if ``se_ratio`` (not in a stack's first block), add the shortcut, activation
      (``output_<act>``);
    - stem: 3x3 conv (``stem_strides``) + BN + activation, then a stride-2 block with ``hidden_ratio`` 1;
    - stacks of 3 / 7 / 4 blocks with 64 / 128 / 256 channels (times ``channel_expand``), first block stride 2;
    - output: 1x1 conv to ``output_num_features`` + BN + activation, then a conv with a square kernel as tall
      as the map and ``output_num_features / 8`` groups (``output_2_conv``, no padding) + BN.
SE: mean over height and width, biased 1x1 conv to ``int(C * se_ratio)``, activation, biased 1x1 conv to C,
sigmoid, multiply. Every conv is bias-free except SE's; kxk convs pad ``k // 2`` on every side (PyTorch style,
the seed's ``use_torch_padding``); BN momentum 0.9 and epsilon 1e-5 unless given; conv kernels start from the
seed's He-style initialiser (scale 2, fan out, truncated normal).

Grouped convolutions use ``Conv2D(groups=...)``: fine on JAX and PyTorch; TensorFlow's non-XLA CPU kernels
lack them (see ``vargface.py``).

Example:
    >>> import keras
    >>> from keras_insightface.backbones.seed_vargface import seed_vargface
    >>> inputs = keras.Input((112, 112, 3))
    >>> seed_vargface(inputs).shape
    (None, 1, 1, 1024)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, check_activation, prelu_layer

GROUP_SIZE = 8


def _initializer():
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def _activation(x, name, activation):
    """The seed's ``activation_by_name``: a layer named ``<name><activation>``."""
    if activation.lower() == "prelu":
        return prelu_layer(name + "prelu")(x)
    return keras.layers.Activation(activation, name=name + activation)(x)


def _conv(x, filters, kernel_size, strides, name, groups=1, padding="same"):
    if padding == "same" and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=name + "pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        use_bias=False,
        groups=groups,
        kernel_initializer=_initializer(),
        name=name + "conv",
    )(x)


def _bn(x, name, options, activation=None):
    x = batch_norm(x, name + "bn", options["bn_momentum"], options["bn_epsilon"])
    return _activation(x, name, activation) if activation else x


def _separable(x, out_channels, strides, hidden_ratio, name, options):
    channels = x.shape[-1]
    x = _conv(x, int(channels * hidden_ratio), 3, strides, name + "1_", groups=channels // GROUP_SIZE)
    x = _bn(x, name + "1_", options, options["activation"])
    x = _conv(x, out_channels, 1, 1, name + "2_")
    return _bn(x, name + "2_", options)


def _se_block(x, se_ratio, name, options):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "pool")(x)
    y = keras.layers.Conv2D(int(channels * se_ratio), 1, kernel_initializer=_initializer(), name=name + "1_conv")(y)
    y = _activation(y, name, options["activation"])
    y = keras.layers.Conv2D(channels, 1, kernel_initializer=_initializer(), name=name + "2_conv")(y)
    y = _activation(y, name, "sigmoid")
    return keras.layers.Multiply(name=name + "out")([x, y])


def _block(x, out_channels, conv_shortcut, is_merge, strides, hidden_ratio, se_ratio, name, options):
    activation = options["activation"]
    if conv_shortcut:
        shortcut = _separable(x, out_channels, strides, hidden_ratio, name + "shortcut_", options)
    else:
        shortcut = x
    if is_merge:
        first = _separable(x, out_channels, strides, hidden_ratio, name + "sep1_1_", options)
        second = _separable(x, out_channels, strides, hidden_ratio, name + "sep1_2_", options)
        y = keras.layers.Add(name=name + "merge_")([first, second])
    else:
        y = _separable(x, out_channels, strides, hidden_ratio, name + "sep1_", options)
    y = _activation(y, name + "sep1_", activation)
    y = _separable(y, out_channels, 1, hidden_ratio, name + "sep2_", options)
    if se_ratio > 0:
        y = _se_block(y, se_ratio, name + "se_", options)
    y = keras.layers.Add(name=name + "add")([shortcut, y])
    return _activation(y, name + "output_", activation)


def _check(num_blocks, channels, hidden_ratio, output_num_features):
    """Every grouped conv (``in / 8`` groups) must split its input and output channels evenly."""
    if len(num_blocks) != len(channels) - 1 or any(count < 1 for count in num_blocks):
        raise ValueError(
            f"vargface num_blocks {list(num_blocks)} must be positive, one per out_channels {list(channels[1:])}"
        )
    convs = [(channels[0], channels[0])] + [(width, int(width * hidden_ratio)) for width in channels]
    for in_width, out_width in convs + [(output_num_features, output_num_features)]:
        groups = in_width // GROUP_SIZE
        if groups < 1 or in_width % groups or out_width < 1 or out_width % groups:
            raise ValueError(
                f"vargface: a grouped conv from {in_width} to {out_width} channels cannot use {in_width} // "
                f"{GROUP_SIZE} groups (stem/stack widths {list(channels)}, hidden_ratio={hidden_ratio}, "
                f"output_num_features={output_num_features})"
            )


def seed_vargface(
    inputs,
    num_blocks=(3, 7, 4),
    out_channels=(64, 128, 256),
    channel_expand=1,
    hidden_ratio=2,
    stem_width=32,
    stem_strides=1,
    se_ratio=0,
    activation="relu",
    output_num_features=1024,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
):
    """Apply the seed's VarGFaceNet to ``inputs``; returns the BN output of the 7x7 grouped conv (1x1 at 112).

    Keywords are the seed's ``VargFace`` ones: ``channel_expand`` scales the stem and stack widths,
    ``hidden_ratio`` is the grouped convs' expansion, ``se_ratio`` > 0 adds SE blocks, ``activation`` is
    ``relu``, ``prelu`` or any Keras activation name (the seed's ``hard_swish`` is Keras's).
    """
    if inputs.shape[1] is None:
        raise ValueError(f"vargface needs a static input height (its last conv spans the map), received {inputs.shape}")
    check_activation(activation, "vargface")
    if not se_ratio >= 0:
        raise ValueError(f"vargface se_ratio must be >= 0, received se_ratio={se_ratio}")
    stem_width = int(stem_width * channel_expand)
    widths = [int(width * channel_expand) for width in out_channels]
    _check(num_blocks, [stem_width, *widths], hidden_ratio, output_num_features)
    options = {"activation": activation, "bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon}

    x = _conv(inputs, stem_width, 3, stem_strides, "stem_1_")
    x = _bn(x, "stem_1_", options, activation)
    x = _block(x, stem_width, True, False, 2, 1, se_ratio, "stem_", options)
    for stack, (count, width) in enumerate(zip(num_blocks, widths)):
        for block in range(count):
            first = block == 0
            name = f"stack{stack + 1}_block{block + 1}_"
            x = _block(x, width, first, first, 2 if first else 1, hidden_ratio, 0 if first else se_ratio, name, options)

    x = _conv(x, output_num_features, 1, 1, "output_1_")
    x = _bn(x, "output_1_", options, activation)
    groups = output_num_features // GROUP_SIZE
    x = _conv(x, output_num_features, int(x.shape[1]), 1, "output_2_", groups=groups, padding="valid")
    return _bn(x, "output_2_", options)
