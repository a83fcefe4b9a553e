"""MobileFaceNet (Chen et al., 2018), the paper / insightface layout: registry name ``mobilefacenet_insightface``.

The registry's ``mobilefacenet`` / ``se_mobilefacenet`` are the seed system's layout (``seed_mobilefacenet``:
separable stem, no residual on a stage's first block, no final 512 conv, the seed's layer names).

Layer order follows the paper's Table 1 and insightface arcface_torch:
    - stem: 3x3 stride-2 conv, 64 channels, BN, PReLU;
    - depthwise 3x3 (the paper's "depthwise conv3x3, 64"), BN, PReLU. The seed uses a SeparableConv2D here
      (an extra 1x1 64->64 pointwise); the paper and insightface do not, and neither does this module;
    - bottleneck stages (blocks, out channels, first stride, expansion t of the input channels):
      5x64 s2 t2, 1x128 s2 t4, 6x128 s1 t2, 1x128 s2 t4, 2x128 s1 t2. A bottleneck is 1x1 expand conv + BN +
      PReLU, depthwise 3x3 (stride) + BN + PReLU, 1x1 project conv + BN (linear), then, with ``use_se``, the
      seed's SE block (on the projected channels: global average pool, biased 1x1 conv to C/16, PReLU, biased
      1x1 conv to C, sigmoid, multiply), and a residual add when stride is 1 and channels match (as the paper
      and insightface; the seed skips it on the first block of every stage);
    - the final 1x1 conv to 512 + BN + PReLU (the paper's "conv1x1, 512"; the seed builds it as the
      model's ``header_pointwise`` layers / ``add_pointwise_conv``). 112x112 inputs end at 7x7x512.
Stride-2 3x3 convolutions pad one pixel explicitly, as PyTorch/MXNet do, so converted weights line up.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.mobilefacenet import mobilefacenet
    >>> inputs = keras.Input((112, 112, 3))
    >>> mobilefacenet(inputs).shape
    (None, 7, 7, 512)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, conv, prelu

# (blocks, out channels, stride of the first block, expansion ratio)
STAGES = ((5, 64, 2, 2), (1, 128, 2, 4), (6, 128, 1, 2), (1, 128, 2, 4), (2, 128, 1, 2))
SE_REDUCTION = 16
EMBEDDING_CHANNELS = 512


def _conv1x1(x, filters, name, use_bias=False):
    return keras.layers.Conv2D(filters, 1, use_bias=use_bias, name=name)(x)


def _se_block(x, name):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    y = _conv1x1(y, max(1, channels // SE_REDUCTION), name + "_reduce_conv", use_bias=True)
    y = prelu(y, name + "_prelu")
    y = _conv1x1(y, channels, name + "_expand_conv", use_bias=True)
    y = keras.layers.Activation("sigmoid", name=name + "_sigmoid")(y)
    return keras.layers.Multiply(name=name + "_multiply")([x, y])


def _bottleneck(x, filters, strides, expansion, use_se, name, momentum, epsilon):
    in_channels = x.shape[-1]
    y = _conv1x1(x, in_channels * expansion, name + "_expand_conv")
    y = prelu(batch_norm(y, name + "_expand_bn", momentum, epsilon), name + "_expand_prelu")
    y = conv(y, None, 3, strides, name + "_dw_conv", depthwise=True)
    y = prelu(batch_norm(y, name + "_dw_bn", momentum, epsilon), name + "_dw_prelu")
    y = _conv1x1(y, filters, name + "_project_conv")
    y = batch_norm(y, name + "_project_bn", momentum, epsilon)
    if use_se:
        y = _se_block(y, name + "_se")
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=name + "_add")([x, y])
    return y


def mobilefacenet(inputs, use_se=False, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5):
    """Apply MobileFaceNet to ``inputs``; returns the 512-channel map after the final 1x1 conv.

    ``use_se`` adds the seed's SE block to every bottleneck. ``width`` scales the stem and stage channels
    (insightface's ``scale``); the final 512 stays fixed.
    """
    if not width > 0:
        raise ValueError(f"mobilefacenet width must be positive, received width={width}")

    def scaled(channels):
        return max(1, int(round(channels * width)))

    x = conv(inputs, scaled(64), 3, 2, "stem_conv")
    x = prelu(batch_norm(x, "stem_bn", bn_momentum, bn_epsilon), "stem_prelu")
    x = conv(x, None, 3, 1, "stem_dw_conv", depthwise=True)
    x = prelu(batch_norm(x, "stem_dw_bn", bn_momentum, bn_epsilon), "stem_dw_prelu")
    for stage, (num_blocks, filters, first_strides, expansion) in enumerate(STAGES):
        for block in range(num_blocks):
            strides = first_strides if block == 0 else 1
            name = f"stack{stage + 1}_block{block + 1}"
            x = _bottleneck(x, scaled(filters), strides, expansion, use_se, name, bn_momentum, bn_epsilon)
    x = _conv1x1(x, EMBEDDING_CHANNELS, "pointwise_conv")
    x = batch_norm(x, "pointwise_bn", bn_momentum, bn_epsilon)
    return prelu(x, "pointwise_prelu")
