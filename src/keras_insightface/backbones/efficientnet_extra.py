"""EfficientNetV2-T, EfficientNetV2-XL and EfficientNet-L2: the members of the ``keras_efficientnet_v2`` package
(leondgarse, 1.2.2) that the seed system offered and ``keras.applications`` lacks, built with that package's layout.

Layout (the package's ``EfficientNetV2`` builder, which its V1 models use too):
    - stem: 3x3 conv, stride ``first_strides``, ``make_divisible(stem, 8)`` channels, BN, swish;
    - stages of MBConv blocks (expansion, kernel, stride on the first block, channels, repeats). A stage without
      SE is *fused*: its expansion is a 3x3 conv (with the stride) instead of 1x1 conv + depthwise; with
      expansion 1 the fused block is a single 3x3 conv + BN + swish. An unfused block is [1x1 expand conv + BN +
      swish] -> kxk depthwise (stride) + BN + swish -> [SE] -> 1x1 project conv + BN (linear);
    - SE: spatial mean -> biased 1x1 conv to a quarter of the block's input channels -> swish -> biased 1x1 conv
      back -> sigmoid -> multiply;
    - a residual add where the stride is 1 and the channels do not change; block ``i`` of ``n`` drops its branch
      per sample with rate ``drop_connect_rate * i / n`` while training (``StochasticDepth``; a plain ``Add``
      where that rate is 0). The package's defaults: 0 for V2 models, 0.2 for V1;
    - top: 1x1 conv, BN, swish; no pooling.
Every conv has no bias (SE convs excepted) and a He fan-out truncated-normal initialiser; BatchNormalization is
at momentum 0.9, epsilon 1e-3, except V2-T (the package's "torch mode", timm's weights): epsilon 1e-5 and
PyTorch padding (``k // 2`` pixels each side before a strided conv instead of TensorFlow's ``same``).

Variants (channels rounded by ``make_divisible(c, 8)``):
    - ``v2t``: stem 24, top 1024; stages (expansion/channels/repeats/stride) 1/24/2/1, 4/40/4/2, 4/48/4/2 fused,
      then 4/104/6/2, 6/128/9/1, 6/208/14/2 with SE; 3x3 kernels. 12,743,412 parameters.
    - ``v2xl``: stem 32, top 1280; 1/32/4/1, 4/64/8/2, 4/96/8/2 fused, then 4/192/16/2, 6/256/24/1, 6/512/32/2,
      6/640/8/1 with SE; 3x3 kernels. 207,615,832 parameters.
    - ``v1l2``: EfficientNet-B0 (stem 32, top 1280; 1/16/1/1 k3, 6/24/2/2 k3, 6/40/2/2 k5, 6/80/3/2 k3,
      6/112/3/1 k5, 6/192/4/2 k5, 6/320/1/1 k3, SE everywhere) with widths x4.3 and repeats ``ceil(x5.3)``.
      475,894,996 parameters.
No ImageNet weights are available offline for them: ``weights="imagenet"`` is an error.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.efficientnet_extra import efficientnet_extra
    >>> efficientnet_extra(keras.Input((112, 112, 3)), variant="v2t").shape
    (None, 4, 4, 1024)
"""

import math
import types

import keras

from keras_insightface.backbones.ghostnet import make_divisible
from keras_insightface.layers.conv_blocks import batch_norm, conv
from keras_insightface.layers.stochastic_depth import StochasticDepth

# He fan-out truncated normal, the package's CONV_KERNEL_INITIALIZER (each layer gets its own instance)
KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}
}
BN_MOMENTUM = 0.9
# Per stage: (expansion, output channels, repeats, stride of the first block, kernel size, SE)
V1_B0_STAGES = ((1, 16, 1, 1, 3, True), (6, 24, 2, 2, 3, True), (6, 40, 2, 2, 5, True), (6, 80, 3, 2, 3, True),
                (6, 112, 3, 1, 5, True), (6, 192, 4, 2, 5, True), (6, 320, 1, 1, 3, True))
V1_L2_WIDTH, V1_L2_DEPTH = 4.3, 5.3
# title, stem / top channels (before rounding), stages, stages without SE fused (V2), PyTorch padding with
# epsilon 1e-5 (V2-T's "torch mode"), the package's default drop connect rate
VARIANTS = types.MappingProxyType({
    "v2t": ("EfficientNetV2-T", 24, 1024, (
        (1, 24, 2, 1, 3, False), (4, 40, 4, 2, 3, False), (4, 48, 4, 2, 3, False),
        (4, 104, 6, 2, 3, True), (6, 128, 9, 1, 3, True), (6, 208, 14, 2, 3, True),
    ), True, True, 0.0),
    "v2xl": ("EfficientNetV2-XL", 32, 1280, (
        (1, 32, 4, 1, 3, False), (4, 64, 8, 2, 3, False), (4, 96, 8, 2, 3, False), (4, 192, 16, 2, 3, True),
        (6, 256, 24, 1, 3, True), (6, 512, 32, 2, 3, True), (6, 640, 8, 1, 3, True),
    ), True, False, 0.0),
    "v1l2": ("EfficientNet-L2", 32 * V1_L2_WIDTH, 1280 * V1_L2_WIDTH, tuple(
        (expansion, channels * V1_L2_WIDTH, math.ceil(repeats * V1_L2_DEPTH), stride, kernel, se)
        for expansion, channels, repeats, stride, kernel, se in V1_B0_STAGES
    ), False, False, 0.2),
})


def _conv(x, filters, kernel_size, strides, name, torch_padding, depthwise=False):
    """Bias-free conv: PyTorch padding (explicit, see ``conv_blocks.conv``) or TensorFlow's ``same``."""
    if torch_padding:
        return conv(x, filters, kernel_size, strides, name=name, depthwise=depthwise,
                    kernel_initializer=KERNEL_INITIALIZER)
    if depthwise:
        return keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                                            depthwise_initializer=KERNEL_INITIALIZER, name=name)(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                               kernel_initializer=KERNEL_INITIALIZER, name=name)(x)


def _bn(x, name, bn, activation=True):
    x = batch_norm(x, name + "_bn", *bn)
    return keras.layers.Activation("swish", name=name + "_swish")(x) if activation else x


def _se_block(x, filters, name):
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    y = keras.layers.Conv2D(filters, 1, kernel_initializer=KERNEL_INITIALIZER, name=name + "_reduce_conv")(y)
    y = keras.layers.Activation("swish", name=name + "_swish")(y)
    y = keras.layers.Conv2D(x.shape[-1], 1, kernel_initializer=KERNEL_INITIALIZER, name=name + "_expand_conv")(y)
    y = keras.layers.Activation("sigmoid", name=name + "_sigmoid")(y)
    return keras.layers.Multiply(name=name + "_multiply")([x, y])


def _mbconv(x, filters, expansion, kernel_size, strides, use_se, fused, drop_rate, name, torch_padding, bn):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:  # fused: the 3x3 conv carries the stride; unfused: 1x1, the depthwise conv strides
        expand_kernel, expand_strides = (3, strides) if fused else (1, 1)
        y = _conv(y, in_channels * expansion, expand_kernel, expand_strides, name + "_expand_conv", torch_padding)
        y = _bn(y, name + "_expand", bn)
    if not fused:
        y = _conv(y, None, kernel_size, strides, name + "_dw_conv", torch_padding, depthwise=True)
        y = _bn(y, name + "_dw", bn)
    if use_se:
        y = _se_block(y, in_channels // 4, name + "_se")
    if fused and expansion == 1:
        y = _bn(_conv(y, filters, 3, strides, name + "_fused_conv", torch_padding), name + "_fused", bn)
    else:
        y = _bn(_conv(y, filters, 1, 1, name + "_project_conv", torch_padding), name + "_project", bn, False)
    if strides != 1 or in_channels != filters:
        return y
    if drop_rate > 0:
        return StochasticDepth(drop_rate, name=name + "_stochastic_depth")([x, y])
    return keras.layers.Add(name=name + "_add")([x, y])


def efficientnet_extra(inputs, variant="v2t", weights=None, drop_connect_rate=None, first_strides=2,
                       bn_momentum=BN_MOMENTUM, bn_epsilon=None):
    """The last feature map (after the top conv, BN and swish) of ``variant`` (``v2t``, ``v2xl``, ``v1l2``).

    ``weights``: ``None`` only (no pretrained weights are available offline; ``buildin_models`` loads a weights
    file). ``drop_connect_rate``: while training, block ``i`` of ``n`` drops its residual branch with rate
    ``drop_connect_rate * i / n`` (``None``: the package's default, 0 for V2 and 0.2 for V1). ``first_strides``:
    the stem's stride (1 or 2). ``bn_epsilon``: ``None`` is the variant's own (1e-5 for ``v2t``, 1e-3 otherwise).
    """
    if variant not in VARIANTS:
        raise ValueError(f"efficientnet_extra variant must be one of {tuple(VARIANTS)}, received variant={variant!r}")
    title, stem, top, stages, fused_stages, torch_mode, default_drop = VARIANTS[variant]
    if weights is not None:
        raise ValueError(
            f"{title}: no pretrained weights are available offline for this backbone (keras.applications has "
            f"none), received weights={weights!r}; pass weights=None, or to buildin_models a weights file path"
        )
    if first_strides not in (1, 2):
        raise ValueError(f"{title}: first_strides must be 1 or 2, received first_strides={first_strides}")
    drop_connect_rate = default_drop if drop_connect_rate is None else float(drop_connect_rate)
    if not 0 <= drop_connect_rate < 1:
        raise ValueError(
            f"{title}: drop_connect_rate must be in [0, 1), received drop_connect_rate={drop_connect_rate}"
        )
    bn = (bn_momentum, (1e-5 if torch_mode else 1e-3) if bn_epsilon is None else bn_epsilon)

    x = _bn(_conv(inputs, make_divisible(stem, 8), 3, first_strides, "stem_conv", torch_mode), "stem", bn)
    total_blocks, block_index = sum(stage[2] for stage in stages), 0
    for stage_index, (expansion, channels, repeats, strides, kernel_size, use_se) in enumerate(stages):
        for repeat in range(repeats):
            x = _mbconv(
                x, make_divisible(channels, 8), expansion, kernel_size, strides if repeat == 0 else 1, use_se,
                fused_stages and not use_se, drop_connect_rate * block_index / total_blocks,
                f"stack{stage_index}_block{repeat}", torch_mode, bn,
            )
            block_index += 1
    return _bn(_conv(x, make_divisible(top, 8), 1, 1, "top_conv", torch_mode), "top", bn)
