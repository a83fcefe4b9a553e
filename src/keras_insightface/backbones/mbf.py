"""arcface_torch's MobileFaceNet (``recognition/arcface_torch/backbones/mobilefacenet.py``, ``get_mbf``): ``mbf``.

arcface_torch's MobileFaceNet takes a width ``scale`` (``width`` here: ``buildin_models`` already has a ``scale``
keyword) and ``blocks``; its default, ``scale=2, blocks=(1, 4, 6, 2)``, is the model zoo's 0.45 GFLOPs ``mbf``.
``width=1`` is the paper's MobileFaceNet (``mobilefacenet_insightface``, other layer names). With ``s = width``:
    - stem: 3x3 stride-2 conv to ``64 s``, BN, PReLU;
    - ``blocks[0] == 1``: a 3x3 conv of ``64 s`` channels in 64 groups, BN, PReLU (depthwise only when s = 1);
      otherwise ``blocks[0]`` residual bottlenecks of hidden width 128 (none when 0);
    - three stages, each a stride-2 bottleneck, then residual ones (out channels, hidden width of the first,
      hidden width of the others, count of the others):
      ``64 s``, 128, 128, ``blocks[1]``; ``128 s``, 256, 256, ``blocks[2]``; ``128 s``, 512, 256, ``blocks[3]``.
      Hidden widths are absolute, not multiples of the input channels. A bottleneck is 1x1 conv to the hidden
      width + BN + PReLU, 3x3 depthwise (stride) + BN + PReLU, 1x1 conv + BN (linear), and, when stride 1, an
      add of its input;
    - ``conv_sep``: 1x1 conv to 512, BN, PReLU: the returned map (7x7x512 for 112x112 inputs).
Every conv has no bias. arcface_torch's ``features`` (GDC: 7x7 depthwise conv + BN, flatten, bias-free linear,
BatchNorm1d) is ``buildin_models``' default head (``output_layer="GDC"``, ``use_bias=False``, ``scale=True``),
so ``buildin_models("mbf")`` is arcface_torch's network, parameter for parameter. Stride-2 convolutions pad one
pixel explicitly, as PyTorch does, so converted weights line up.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.mbf import mbf
    >>> inputs = keras.Input((112, 112, 3))
    >>> mbf(inputs).shape
    (None, 7, 7, 512)
    >>> model = keras.Model(inputs, mbf(inputs, width=1, blocks=(2, 1, 1, 1)))
    >>> model.get_layer("stem_block2_expand_conv").filters, model.get_layer("stack3_block1_expand_conv").filters
    (128, 512)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, conv, prelu

BASE_CHANNELS = 64  # the stem's channels per unit of width
STEM_GROUPS = 64  # groups of the stem's second 3x3 conv
STEM_HIDDEN = 128  # hidden width of the stem's residual bottlenecks (blocks[0] > 1)
# (out channels in units of 64 * width, hidden width of the stride-2 bottleneck, hidden width of the residual ones)
STAGES = ((1, 128, 128), (2, 256, 256), (2, 512, 256))
EMBEDDING_CHANNELS = 512


def _conv_bn(x, filters, kernel, strides, name, momentum, epsilon, groups=1, activation=True):
    """arcface_torch's ConvBlock (conv, BN, PReLU) or, without ``activation``, LinearBlock (conv, BN)."""
    depthwise = filters is None
    x = conv(x, filters, kernel, strides, name + "_conv", groups=groups, depthwise=depthwise)
    x = batch_norm(x, name + "_bn", momentum, epsilon)
    return prelu(x, name + "_prelu") if activation else x


def _bottleneck(x, filters, hidden, strides, name, momentum, epsilon):
    """arcface_torch's DepthWise: expand to ``hidden``, depthwise 3x3, linear project; residual when stride 1."""
    y = _conv_bn(x, hidden, 1, 1, name + "_expand", momentum, epsilon)
    y = _conv_bn(y, None, 3, strides, name + "_dw", momentum, epsilon)
    y = _conv_bn(y, filters, 1, 1, name + "_project", momentum, epsilon, activation=False)
    return keras.layers.Add(name=name + "_add")([x, y]) if strides == 1 else y


def _check(width, blocks):
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"mbf width (arcface_torch's scale) must be a positive integer, received width={width!r}")
    counts = blocks if isinstance(blocks, (tuple, list)) else ()
    if len(counts) != 4 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise ValueError(f"mbf blocks must be 4 non-negative integers, received blocks={blocks!r}")


def mbf(inputs, width=2, blocks=(1, 4, 6, 2), bn_momentum=0.9, bn_epsilon=1e-5):
    """Apply arcface_torch's MobileFaceNet (``get_mbf``'s ``scale`` = ``width``) to ``inputs``; returns the
    512-channel map of its ``conv_sep``."""
    _check(width, blocks)
    channels = BASE_CHANNELS * width
    x = _conv_bn(inputs, channels, 3, 2, "stem", bn_momentum, bn_epsilon)
    if blocks[0] == 1:
        depthwise = channels == STEM_GROUPS  # one channel per group: a DepthwiseConv2D
        x = _conv_bn(x, None if depthwise else channels, 3, 1, "stem_group", bn_momentum, bn_epsilon,
                     groups=1 if depthwise else STEM_GROUPS)
    else:
        for block in range(blocks[0]):
            x = _bottleneck(x, channels, STEM_HIDDEN, 1, f"stem_block{block + 1}", bn_momentum, bn_epsilon)
    for stage, ((units, first_hidden, hidden), count) in enumerate(zip(STAGES, blocks[1:]), 1):
        filters = channels * units
        x = _bottleneck(x, filters, first_hidden, 2, f"stack{stage}_block1", bn_momentum, bn_epsilon)
        for block in range(count):
            x = _bottleneck(x, filters, hidden, 1, f"stack{stage}_block{block + 2}", bn_momentum, bn_epsilon)
    return _conv_bn(x, EMBEDDING_CHANNELS, 1, 1, "pointwise", bn_momentum, bn_epsilon)
