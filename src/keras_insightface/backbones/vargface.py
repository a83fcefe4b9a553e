"""VarGFaceNet (Yan et al., "VarGFaceNet: An Efficient Variable Group Convolutional Neural Network for
Lightweight Face Recognition", ICCV-W 2019, arXiv:1910.04985): a variable-group-convolution face backbone.

Registered as ``vargfacenet``; the seed system's own reading of it (ReLU, no width multiplier, the 7x7 grouped
conv inside the backbone) is ``vargface`` (``seed_vargface.py``).

Layout from the authors' MXNet code (github.com/zma-c-137/VarGFaceNet, ``VarGFaceNet.py``) and its copy in
insightface ``recognition/symbol/vargfacenet.py``:

* Variable group convolution: a 3x3 convolution with ``channels_in / 8`` groups (a fixed *group size* of 8
  input channels per group) expanding to ``factor * channels_in`` channels, BN + PReLU, then a 1x1
  convolution to the output channels + BN (+ PReLU where noted). Called a "separable conv" below.
* Stem ("head" in the paper): 3x3 stride-1 convolution + BN + PReLU, then a normal block with stride 2,
  ``factor=1`` and a separable-conv shortcut.
* Normal block: sep1 (PReLU at the end) -> sep2 (no final PReLU) -> SE -> add shortcut -> PReLU.
* Down-sampling block (first unit of each stage, stride 2): two parallel separable convs (no final PReLU)
  added and PReLU'd -> sep2 -> add a stride-2 separable-conv shortcut -> PReLU.
* Stages of 3, 7, 4 units with 64, 128, 256 channels after a 32-channel stem, every width multiplied by
  ``multiplier=1.25`` (40 / 80 / 160 / 320 channels); ``factor=2`` in the stages; SE reduction 4 with PReLU
  and biased 1x1 convolutions; BN momentum 0.9; PReLU slopes start at 0.25 (MXNet's default).
* Embedding block: 1x1 convolution to 1024 channels + BN + PReLU, then a 7x7 grouped (group size 8)
  convolution + BN, a 1x1 convolution to 512 + BN + PReLU and the FC embedding.

This function returns the map after the 1x1-to-1024 convolution, BN and PReLU: ``(B, 7, 7, 1024)`` for
112x112 inputs. The rest of the embedding block (the 7x7 grouped "GDC"-like convolution, 1x1 to 512, FC) is
the job of this project's embedding heads (``GDC`` is the closest match).

Choices and deviations:

* ``use_se=True`` follows the paper and the authors' code; insightface's ``sample_config.py`` trains it
  with ``net_se = 0``, so pass ``use_se=False`` for that variant.
* BN epsilon defaults to 1e-5 (this project's convention); the MXNet reference uses 2e-5.
* Stride-2 convolutions pad one pixel on each side explicitly (as MXNet's ``pad=(1, 1)``) instead of
  Keras' asymmetric ``"same"`` padding, so converted weights see the same pixels.
* The reference normalises raw pixels ((x - 127.5) / 128) inside the network; here inputs arrive normalised.
* Grouped convolutions use ``keras.layers.Conv2D(groups=...)``: fine on JAX and PyTorch. TensorFlow's
  non-XLA CPU kernels do not implement grouped convolutions (tensorflow/tensorflow#29005, #53631); on the
  TensorFlow backend run on GPU or with XLA (``jit_compile=True``). Not tested here: the suite runs on JAX.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.vargface import vargfacenet
    >>> inputs = keras.Input((112, 112, 3))
    >>> vargfacenet(inputs).shape
    (None, 7, 7, 1024)
"""

import keras

from keras_insightface.layers.conv_blocks import batch_norm, conv, prelu

STEM_FILTERS = 32
STAGES = ((3, 64), (7, 128), (4, 256))  # (units, filters) before the width multiplier
LAST_CHANNELS = 1024
SE_RATIO = 4


def _sep_conv(x, filters, strides, factor, pointwise_act, name, cfg):
    """Variable group 3x3 conv (group size ``cfg['group_size']``, ``factor`` x channels) + BN + PReLU,
    then 1x1 conv to ``filters`` + BN (+ PReLU if ``pointwise_act``)."""
    channels = x.shape[-1]
    y = conv(x, channels * factor, 3, strides, name + "_group_conv", groups=channels // cfg["group_size"])
    y = batch_norm(y, name + "_group_bn", cfg["momentum"], cfg["epsilon"])
    y = prelu(y, name + "_group_prelu")
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name=name + "_point_conv")(y)
    y = batch_norm(y, name + "_point_bn", cfg["momentum"], cfg["epsilon"])
    if pointwise_act:
        y = prelu(y, name + "_point_prelu")
    return y


def _se(x, name):
    channels = x.shape[-1]
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "_pool")(x)
    y = keras.layers.Conv2D(channels // SE_RATIO, 1, name=name + "_reduce")(y)
    y = prelu(y, name + "_prelu")
    y = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=name + "_expand")(y)
    return keras.layers.Multiply(name=name + "_scale")([x, y])


def _normal_block(x, filters, strides, factor, conv_shortcut, name, cfg):
    if conv_shortcut:
        shortcut = _sep_conv(x, filters, strides, factor, False, name + "_shortcut", cfg)
    else:
        shortcut = x
    y = _sep_conv(x, filters, strides, factor, True, name + "_sep1", cfg)
    y = _sep_conv(y, filters, 1, factor, False, name + "_sep2", cfg)
    if cfg["use_se"]:
        y = _se(y, name + "_se")
    y = keras.layers.Add(name=name + "_add")([shortcut, y])
    return prelu(y, name + "_out_prelu")


def _down_block(x, filters, factor, name, cfg):
    shortcut = _sep_conv(x, filters, 2, factor, False, name + "_shortcut", cfg)
    branch1 = _sep_conv(x, filters, 2, factor, False, name + "_branch1", cfg)
    branch2 = _sep_conv(x, filters, 2, factor, False, name + "_branch2", cfg)
    y = keras.layers.Add(name=name + "_merge")([branch1, branch2])
    y = prelu(y, name + "_merge_prelu")
    y = _sep_conv(y, filters, 1, factor, False, name + "_sep2", cfg)
    y = keras.layers.Add(name=name + "_add")([shortcut, y])
    return prelu(y, name + "_out_prelu")


def vargfacenet(inputs, bn_momentum=0.9, bn_epsilon=1e-5, multiplier=1.25, use_se=True, group_size=8):
    """Apply VarGFaceNet to ``inputs``; returns the 1024-channel map before the embedding head (7x7 at 112).

    ``multiplier`` scales the stem and stage widths (1.25 in the paper); every scaled width must be a
    multiple of ``group_size`` (8 in the paper). ``use_se`` adds squeeze-excitation to the normal blocks.
    """
    if group_size < 1:
        raise ValueError(f"vargfacenet group_size must be positive, received group_size={group_size}")
    widths = [int(STEM_FILTERS * multiplier)] + [int(filters * multiplier) for _, filters in STAGES]
    if multiplier <= 0 or any(width < 1 or width % group_size for width in widths):
        raise ValueError(
            f"vargfacenet widths {widths} (multiplier={multiplier}) must be positive multiples of "
            f"group_size={group_size}"
        )
    cfg = {"momentum": bn_momentum, "epsilon": bn_epsilon, "use_se": use_se, "group_size": group_size}

    x = conv(inputs, widths[0], 3, 1, "stem_conv", groups=1)
    x = batch_norm(x, "stem_bn", bn_momentum, bn_epsilon)
    x = prelu(x, "stem_prelu")
    x = _normal_block(x, widths[0], 2, 1, True, "stem_block", cfg)
    for stage, ((units, _), filters) in enumerate(zip(STAGES, widths[1:])):
        x = _down_block(x, filters, 2, f"stage{stage + 1}_unit1", cfg)
        for unit in range(1, units):
            x = _normal_block(x, filters, 1, 2, False, f"stage{stage + 1}_unit{unit + 1}", cfg)
    x = keras.layers.Conv2D(LAST_CHANNELS, 1, use_bias=False, name="last_conv")(x)
    x = batch_norm(x, "last_bn", bn_momentum, bn_epsilon)
    return prelu(x, "last_prelu")
