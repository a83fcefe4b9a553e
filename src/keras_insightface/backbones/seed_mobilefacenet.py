"""MobileFaceNet as the seed system (Keras_insightface ``backbones/mobile_facenet.py``) builds it.

This is what the seed's ``buildin_models("mobilefacenet")`` / ``("se_mobilefacenet")`` puts before the
embedding head, layer for layer and with the seed's layer names, so a seed ``.h5`` loads by name. It differs
from the paper / insightface layout (``mobilefacenet_insightface``) in three places:

    - stem: 3x3 stride-2 conv (64) + BN + PReLU, then a 3x3 *separable* conv (depthwise 3x3 and a 1x1
      64 -> 64 pointwise, one ``SeparableConv2D``) + BN + PReLU, where the paper has a plain depthwise conv;
    - residual rule: every block of a stage but the first adds its input (the first block never does, even
      in the stride-1 stage whose input already has 128 channels);
    - no final 1x1 conv to 512: the backbone ends at 128 channels (7x7 for 112x112 inputs). The seed adds a
      512 pointwise conv only with ``buildin_models(..., add_pointwise_conv=True)`` (``pw_conv``/``pw_bn``).

Bottleneck stages (blocks, out channels, first stride, expansion of the input channels):
5x64 s2 t2, 1x128 s2 t4, 6x128 s1 t2, 1x128 s2 t4, 2x128 s1 t2. A bottleneck is 1x1 conv + BN + PReLU,
3x3 depthwise (stride) + BN + PReLU, 1x1 conv + BN, then with ``use_se`` an SE block on the projected
channels (global average pool, biased 1x1 conv to C/16, PReLU, biased 1x1 conv to C, sigmoid, multiply).
Every PReLU shares its slope over height and width (one per channel, initial 0.25). Convolutions use Keras
``same`` padding, i.e. TensorFlow's: a stride-2 3x3 conv on an even map pads only bottom/right.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.seed_mobilefacenet import seed_mobilefacenet
    >>> inputs = keras.Input((112, 112, 3))
    >>> seed_mobilefacenet(inputs).shape
    (None, 7, 7, 128)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, prelu

# (blocks, out channels, stride of the first block, expansion ratio), the seed's defaults
STAGES = ((5, 64, 2, 2), (1, 128, 2, 4), (6, 128, 1, 2), (1, 128, 2, 4), (2, 128, 1, 2))
STEM_CHANNELS = 64
SE_REDUCTION = 16


def _bn_prelu(x, name, options):
    x = batch_norm(x, name + "bn", options["bn_momentum"], options["bn_epsilon"])
    return prelu(x, name + "prelu")


def _conv(x, filters, kernel_size, strides, name):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)


def _se_block(x, name):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "pool")(x)
    y = keras.layers.Conv2D(channels // SE_REDUCTION, 1, name=name + "1_conv")(y)
    y = prelu(y, name + "prelu")
    y = keras.layers.Conv2D(channels, 1, name=name + "2_conv")(y)
    y = keras.layers.Activation("sigmoid", name=name + "sigmoid")(y)
    return keras.layers.Multiply(name=name + "out")([x, y])


def _bottleneck(x, filters, expansion, strides, use_residual, name, options):
    y = _conv(x, int(x.shape[-1] * expansion), 1, 1, name + "1_conv")
    y = _bn_prelu(y, name + "1_", options)
    y = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name + "2_depthwise")(y)
    y = _bn_prelu(y, name + "2_", options)
    y = _conv(y, filters, 1, 1, name + "3_conv")
    y = batch_norm(y, name + "3_bn", options["bn_momentum"], options["bn_epsilon"])
    if options["use_se"]:
        y = _se_block(y, name + "se_")
    if use_residual:
        y = keras.layers.Add(name=name + "add")([x, y])
    return y


def seed_mobilefacenet(inputs, use_se=False, bn_momentum=0.99, bn_epsilon=0.001):
    """Apply the seed's MobileFaceNet to ``inputs``; returns the last bottleneck's 128-channel map.

    ``use_se`` gives the seed's ``se_mobilefacenet``. BN defaults are Keras's (the seed never set them in the
    backbone; its ``buildin_models`` overrides them when given other values, as ours always passes them).
    """
    options = {"use_se": use_se, "bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon}
    x = _conv(inputs, STEM_CHANNELS, 3, 2, "stem_1_conv")
    x = _bn_prelu(x, "stem_1_", options)
    x = keras.layers.SeparableConv2D(
        STEM_CHANNELS, 3, padding="same", use_bias=False, name="stem_2_separable"
    )(x)
    x = _bn_prelu(x, "stem_2_", options)
    for stage, (num_blocks, filters, first_strides, expansion) in enumerate(STAGES):
        for block in range(num_blocks):
            name = f"stack{stage + 1}_block{block + 1}_"
            strides = first_strides if block == 0 else 1
            x = _bottleneck(x, filters, expansion, strides, block > 0, name, options)
    return x
