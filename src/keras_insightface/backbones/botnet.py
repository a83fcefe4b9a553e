"""BoTNet: a ResNet-v1 whose last stage attends globally instead of convolving (Bottleneck Transformer).

Srinivas et al., "Bottleneck Transformers for Visual Recognition" (CVPR 2021): a ResNet-50/101/152 whose
last-stage bottlenecks replace the 3x3 convolution by multi-head self-attention with 2-D relative
position embeddings (``MHSAWithPositionEmbedding``, 4 heads). Global attention is affordable there because
the map is small, and it relates distant face parts that a 3x3 kernel never sees together.

Layer order (the reference, as the seed system builds it):
    - stem: 7x7 stride-2 conv (3-pixel zero pad) -> BN -> ReLU -> 3x3 stride-2 max-pool (1-pixel pad)
    - four stages of ResNet-v1 bottlenecks (blocks 3/4/6/3, 3/4/23/3, 3/8/36/3 for depth 50/101/152),
      ``1x1 conv -> BN -> ReLU -> 3x3 conv (stride) -> BN -> ReLU -> 1x1 conv (4x) -> BN (gamma 0)``, plus
      a 1x1 conv + BN projection shortcut in each stage's first block, then add -> ReLU. The stride is on
      the 3x3 conv (ResNet v1.5, as the reference) with an explicit 1-pixel pad. Stage strides are
      ``1, 2, 2, strides``.
    - last stage: the 3x3 conv becomes ``MHSAWithPositionEmbedding`` (4 heads of 128 channels over the
      512-channel bottleneck), followed by a 2x2 stride-2 average pool ("same" padding) in a stride-2
      block. As in the reference, the projection shortcut of this stage is conv -> BN -> ReLU;
      ``shortcut_act_none=True`` drops that ReLU (a plain conv -> BN shortcut like the other stages, the
      seed's ``shortcut_act_none`` variant). The ReLU after every add is kept in both cases.

The seed's face variants are keywords: ``activation`` replaces every ReLU (any Keras activation, or
``prelu``: one learnt slope per channel, initial 0.25, as the seed's ``replace_ReLU_with_PReLU`` makes them);
those layers are named ``..._<activation>``, except the one after each add, which stays ``..._out``.
``conv_no_bias=True`` (default) is the seed's BoTNet, whose convolutions carry no bias ("botnet50 without
bias"); ``conv_no_bias=False`` gives every convolution (stem, shortcuts, 1x1 and 3x3) a bias, like the
``keras.applications`` ResNet50 whose first three stages the seed's first BoTNet reused. The attention
projections never have a bias.

For 112x112 faces the map is 56 after the stem conv, 28 after the pool, then 28/14/7 over stages 1-3.
``strides=1`` (the seed's face setting) keeps the last stage at 7x7, so the output is ``(7, 7, 2048)``
and attention runs over 49 positions; ``strides=2`` (the ImageNet BoTNet) pools it to ``(4, 4, 2048)``.
No pooling or embedding head is applied here.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.botnet import botnet
    >>> inputs = keras.Input((112, 112, 3))
    >>> botnet(inputs, depth=50).shape
    (None, 7, 7, 2048)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, check_activation, prelu_layer
from keras_insightface.layers.mhsa import MHSAWithPositionEmbedding

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck channels; stage outputs are 4x these
EXPANSION = 4
NUM_HEADS = 4


def _act(x, name, options):
    """``options['activation']`` as a layer named ``name``: a per-channel PReLU for ``prelu``."""
    activation = options["activation"]
    if activation.lower() == "prelu":
        return prelu_layer(name)(x)
    return keras.layers.Activation(activation, name=name)(x)


def _conv(x, filters, kernel_size, strides, name, options):
    if kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="valid", use_bias=not options["conv_no_bias"], name=name
    )(x)


def _bottleneck(x, width, strides, use_mhsa, name, options):
    momentum, epsilon, act = options["bn_momentum"], options["bn_epsilon"], options["activation"]
    filters = width * EXPANSION
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, strides, name + "_shortcut_conv", options)
        shortcut = batch_norm(shortcut, name + "_shortcut_bn", momentum, epsilon)
        if use_mhsa and not options["shortcut_act_none"]:
            shortcut = _act(shortcut, f"{name}_shortcut_{act}", options)
    else:
        shortcut = x
    y = _conv(x, width, 1, 1, name + "_1_conv", options)
    y = batch_norm(y, name + "_1_bn", momentum, epsilon)
    y = _act(y, f"{name}_1_{act}", options)
    if use_mhsa:
        y = MHSAWithPositionEmbedding(num_heads=NUM_HEADS, relative=options["relative"], name=name + "_2_mhsa")(y)
        if strides != 1:
            y = keras.layers.AveragePooling2D(2, strides=2, padding="same", name=name + "_2_pool")(y)
    else:
        y = _conv(y, width, 3, strides, name + "_2_conv", options)
    y = batch_norm(y, name + "_2_bn", momentum, epsilon)
    y = _act(y, f"{name}_2_{act}", options)
    y = _conv(y, filters, 1, 1, name + "_3_conv", options)
    y = batch_norm(y, name + "_3_bn", momentum, epsilon, zero_gamma=True)
    y = keras.layers.Add(name=name + "_add")([shortcut, y])
    return _act(y, name + "_out", options)


def botnet(
    inputs,
    depth=50,
    strides=1,
    relative=True,
    shortcut_act_none=False,
    activation="relu",
    conv_no_bias=True,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
):
    """Apply BoTNet-``depth`` (50/101/152) to ``inputs``; returns the last feature map (2048 channels).

    ``strides`` is the last stage's stride: 1 keeps its input resolution (7x7 for 112x112 faces), 2 halves
    it (4x4). ``relative=False`` uses absolute instead of relative position embeddings.
    ``shortcut_act_none=True`` removes the ReLU the reference applies to the last stage's projection
    shortcut. ``activation`` replaces every ReLU (a Keras activation name or ``prelu``); ``conv_no_bias=False``
    adds a bias to every convolution. The input's height and width must be static, since the attention
    embeddings are sized by the last-stage map.
    """
    if depth not in BLOCKS:
        raise ValueError(f"botnet depth must be one of {sorted(BLOCKS)}, received depth={depth}")
    if strides not in (1, 2):
        raise ValueError(f"botnet strides must be 1 or 2, received strides={strides}")
    if inputs.shape[1] is None or inputs.shape[2] is None:
        raise ValueError(f"botnet needs a static input height and width, received shape {tuple(inputs.shape)}")
    check_activation(activation, "botnet")
    options = {
        "relative": relative,
        "shortcut_act_none": shortcut_act_none,
        "activation": activation,
        "conv_no_bias": conv_no_bias,
        "bn_momentum": bn_momentum,
        "bn_epsilon": bn_epsilon,
    }
    x = _conv(inputs, 64, 7, 2, "stem_conv", options)
    x = batch_norm(x, "stem_bn", bn_momentum, bn_epsilon)
    x = _act(x, f"stem_{activation}", options)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    stage_strides = (1, 2, 2, strides)
    num_stages = len(STAGE_WIDTHS)
    for stage, (num_blocks, width, stage_stride) in enumerate(zip(BLOCKS[depth], STAGE_WIDTHS, stage_strides)):
        use_mhsa = stage == num_stages - 1
        for block in range(num_blocks):
            block_strides = stage_stride if block == 0 else 1
            x = _bottleneck(x, width, block_strides, use_mhsa, f"stack{stage + 1}_block{block + 1}", options)
    return x
