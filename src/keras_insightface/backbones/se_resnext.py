"""SE-ResNeXt (Xie et al. 2017 ResNeXt with Hu et al. 2018 squeeze-excitation) as the seed system built it:
titu1994's ``keras_squeeze_excite_network.se_resnext.SEResNextImageNet(include_top=False, depth=...)``.

Layout:
    - stem: 7x7 conv, stride 2, 64 channels, BN, LeakyReLU (slope 0.3), 3x3 max pool, stride 2;
    - stages of bottlenecks with ``filters = cardinality * width * 2**stage`` (128, 256, 512, 1024 at the
      defaults) and ``2 * filters`` output channels; the first block of every stage but the first strides by 2;
    - bottleneck: 1x1 conv to ``filters`` + BN + LeakyReLU -> 3x3 grouped conv (``cardinality`` groups, the
      stride) + BN + LeakyReLU -> 1x1 conv to ``2 * filters`` + BN -> SE -> add the shortcut -> LeakyReLU. The
      shortcut is the input, or a 1x1 conv (the stride) + BN where the channels differ;
    - SE: global average pool -> dense to 1/16 of the channels, ReLU -> dense back, sigmoid -> multiply (he-normal
      denses without bias).
Every conv is bias-free with a he-normal initialiser, padding ``same`` (TensorFlow's, as the reference), and an
L2 ``weight_decay`` kernel regulariser (5e-4, the reference's default; 0: none) that the training loss includes;
BatchNormalization at Keras's 0.99 / 1e-3. No pooling after the last stage; no pretrained weights exist for it.
The reference builds its grouped conv as ``cardinality`` convs on ``Lambda`` slices whose loop index is read
late, so when its model runs every group reads the last group's channels; here each group reads its own (one
``Conv2D(groups=cardinality)``): the same parameters, and the reference's outputs once its slices are fixed.
``depth=(3, 4, 6, 3)`` is SE-ResNeXt-50 (25,563,072 parameters), ``(3, 4, 23, 3)`` SE-ResNeXt-101 (47,009,728).

Example:
    >>> import keras
    >>> from keras_insightface.backbones.se_resnext import se_resnext
    >>> se_resnext(keras.Input((112, 112, 3)), depth=(1, 1, 1, 1), width=1).shape
    (None, 4, 4, 512)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm

LEAKY_SLOPE = 0.3  # Keras's LeakyReLU default, which the reference uses
SE_RATIO = 16


def _conv(x, filters, kernel_size, strides, name, regularizer, groups=1):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", groups=groups, use_bias=False,
        kernel_initializer="he_normal", kernel_regularizer=regularizer, name=name,
    )(x)


def _leaky_relu(x, name):
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name + "_leaky_relu")(x)


def _se_block(x, name):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    y = keras.layers.Dense(channels // SE_RATIO, "relu", use_bias=False, kernel_initializer="he_normal",
                           name=name + "_reduce")(y)
    y = keras.layers.Dense(channels, "sigmoid", use_bias=False, kernel_initializer="he_normal",
                           name=name + "_expand")(y)
    return keras.layers.Multiply(name=name + "_multiply")([x, y])


def _bottleneck(x, filters, cardinality, strides, name, regularizer, bn):
    shortcut = x
    if x.shape[-1] != 2 * filters:
        shortcut = _conv(x, 2 * filters, 1, strides, name + "_shortcut_conv", regularizer)
        shortcut = batch_norm(shortcut, name + "_shortcut_bn", *bn)
    y = _conv(x, filters, 1, 1, name + "_1_conv", regularizer)
    y = _leaky_relu(batch_norm(y, name + "_1_bn", *bn), name + "_1")
    y = _conv(y, filters, 3, strides, name + "_2_conv", regularizer, groups=cardinality)
    y = _leaky_relu(batch_norm(y, name + "_2_bn", *bn), name + "_2")
    y = batch_norm(_conv(y, 2 * filters, 1, 1, name + "_3_conv", regularizer), name + "_3_bn", *bn)
    y = _se_block(y, name + "_se")
    return _leaky_relu(keras.layers.Add(name=name + "_add")([shortcut, y]), name + "_out")


def se_resnext(inputs, depth=(3, 4, 6, 3), cardinality=32, width=4, weight_decay=5e-4, weights=None,
               bn_momentum=0.99, bn_epsilon=1e-3):
    """The last feature map of SE-ResNeXt: ``depth`` blocks per stage, ``cardinality`` groups of ``width``
    channels in the first stage's grouped convs; ``weight_decay``: L2 on every conv kernel (0: none).
    ``weights``: ``None`` only (there are no pretrained weights; ``buildin_models`` loads a weights file)."""
    depth = tuple(depth)
    if not depth or not all(isinstance(count, int) and count > 0 for count in depth):
        raise ValueError(f"se_resnext depth must be positive block counts per stage, received depth={depth}")
    if cardinality < 1 or width < 1:
        raise ValueError(f"se_resnext cardinality and width must be positive, received cardinality={cardinality}, "
                         f"width={width}")
    if weight_decay < 0:
        raise ValueError(f"se_resnext weight_decay must be >= 0, received weight_decay={weight_decay}")
    if weights is not None:
        raise ValueError(
            f"se_resnext: no pretrained weights are available offline for this backbone (the reference package "
            f"ships none), received weights={weights!r}; pass weights=None, or to buildin_models a weights file path"
        )
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    bn = (bn_momentum, bn_epsilon)
    x = _conv(inputs, 64, 7, 2, "stem_conv", regularizer)
    x = _leaky_relu(batch_norm(x, "stem_bn", *bn), "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(depth):
        filters = cardinality * width * 2**stage
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, filters, cardinality, strides, f"stack{stage + 1}_block{block}", regularizer, bn)
    return x
