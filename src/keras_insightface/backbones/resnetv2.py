"""ResNet V2 (pre-activation ResNet), laid out as ``keras.applications.ResNet50V2/101V2/152V2``.

He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016): every bottleneck starts with
BN -> ReLU ("pre-activation") and its residual sum is left un-normalised, so the identity path runs
straight from input to output; one ``post_bn`` -> ReLU closes the network.

Layer order and names are those of ``keras.applications`` (``conv1_conv``, ``conv2_block1_preact_bn``,
``conv2_block1_0_conv``, ..., ``conv5_block3_out``, ``post_bn``, ``post_relu``), and the layers with
weights are created in the same order, so its ImageNet weights load by name or by order:
    - stem: 7x7 stride-2 conv with bias (3-pixel zero pad, no BN) -> 3x3 stride-2 max-pool (1-pixel pad)
    - stages ``conv2``..``conv5`` of 3/4/6/3, 3/4/23/3 or 3/8/36/3 bottlenecks (depth 50/101/152), widths
      64/128/256/512 and outputs 4x: ``preact BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv (stride,
      1-pixel pad) -> BN -> ReLU -> 1x1 conv (4x, bias)``, added to the shortcut. The first block of a stage
      projects the pre-activation with a 1x1 conv (bias); the others pass the input through, subsampled by a
      1x1 max-pool in the strided block. The stride sits on the LAST block of conv2, conv3 and conv4.
    - ``post_bn`` -> ReLU.

112x112 faces end at 4x4. The seed's face variants: ``first_conv_k3_stride_1`` (3x3 stride-1 stem, ending
at 7x7 like IR-ResNet), ``pad_same`` (Keras ``same`` padding instead of the zero-pad layers), ``conv_no_bias``
and ``activation`` (any Keras activation, or ``prelu``). No pooling or embedding head is applied here.
``weights="imagenet"`` copies Keras's ImageNet weights in by layer name (the seed built these names from
``keras.applications``, weights included); the variants that change a weight's shape cannot take them.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.resnetv2 import resnet_v2
    >>> inputs = keras.Input((112, 112, 3))
    >>> resnet_v2(inputs, depth=50).shape
    (None, 4, 4, 2048)
    >>> resnet_v2(inputs, depth=50, first_conv_k3_stride_1=True).shape
    (None, 7, 7, 2048)
"""

import keras

from keras_insightface.backbones.applications import imagenet_application
from keras_insightface.layers.conv_blocks import apply_activation, batch_norm

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck channels; stage outputs are 4x these
STAGE_STRIDES = (2, 2, 2, 1)  # on each stage's last block, as keras.applications' stack2
EXPANSION = 4


def _padded_conv(x, filters, kernel_size, strides, pad_name, name, options, use_bias):
    """A kernel > 1 conv: explicit symmetric zero pad + ``valid`` (Keras applications) or ``same`` (``pad_same``)."""
    if options["pad_same"]:
        padding = "same"
    else:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name)(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name
    )(x)


def _pointwise(x, filters, strides, name, use_bias):
    return keras.layers.Conv2D(filters, 1, strides=strides, use_bias=use_bias, name=name)(x)


def _block(x, width, strides, conv_shortcut, name, options):
    """One pre-activation bottleneck; ``conv_shortcut`` projects the pre-activation (first block of a stage)."""
    momentum, epsilon, activation = options["bn_momentum"], options["bn_epsilon"], options["activation"]
    bias = not options["conv_no_bias"]
    preact = batch_norm(x, name + "_preact_bn", momentum, epsilon)
    preact = apply_activation(preact, name + "_preact", activation)
    if conv_shortcut:
        shortcut = _pointwise(preact, width * EXPANSION, strides, name + "_0_conv", bias)
    elif strides > 1:
        shortcut = keras.layers.MaxPooling2D(1, strides=strides, name=name + "_0_pool")(x)
    else:
        shortcut = x
    y = _pointwise(preact, width, 1, name + "_1_conv", False)
    y = batch_norm(y, name + "_1_bn", momentum, epsilon)
    y = apply_activation(y, name + "_1", activation)
    y = _padded_conv(y, width, 3, strides, name + "_2_pad", name + "_2_conv", options, False)
    y = batch_norm(y, name + "_2_bn", momentum, epsilon)
    y = apply_activation(y, name + "_2", activation)
    y = _pointwise(y, width * EXPANSION, 1, name + "_3_conv", bias)
    return keras.layers.Add(name=name + "_out")([shortcut, y])


def resnet_v2(
    inputs,
    depth=50,
    activation="relu",
    pad_same=False,
    conv_no_bias=False,
    first_conv_k3_stride_1=False,
    bn_momentum=0.99,
    bn_epsilon=1.001e-5,
    weights=None,
):
    """Apply ResNet``depth``V2 (50/101/152) to ``inputs``; returns the map after ``post_bn`` + activation.

    Defaults reproduce ``keras.applications.ResNet{depth}V2(include_top=False)`` layer for layer.
    ``activation`` replaces every ReLU (layers named ``..._<activation>``, e.g. ``post_swish``); ``pad_same``
    drops the zero-pad layers for ``same`` padding; ``conv_no_bias`` removes every conv bias;
    ``first_conv_k3_stride_1`` makes the stem a 3x3 stride-1 conv (7x7 output for 112x112 faces).
    ``weights``: ``None`` or ``"imagenet"`` (Keras's, downloaded).
    """
    if depth not in BLOCKS:
        raise ValueError(f"resnet_v2 depth must be one of {sorted(BLOCKS)}, received depth={depth}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"resnet_v2 weights must be None or 'imagenet', received weights={weights!r}")
    options = {
        "activation": activation,
        "pad_same": pad_same,
        "conv_no_bias": conv_no_bias,
        "bn_momentum": bn_momentum,
        "bn_epsilon": bn_epsilon,
    }
    stem_kernel, stem_strides = (3, 1) if first_conv_k3_stride_1 else (7, 2)
    x = _padded_conv(inputs, 64, stem_kernel, stem_strides, "conv1_pad", "conv1_conv", options, not conv_no_bias)
    if pad_same:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    else:
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (num_blocks, width, strides) in enumerate(zip(BLOCKS[depth], STAGE_WIDTHS, STAGE_STRIDES)):
        for block in range(num_blocks):
            last = block == num_blocks - 1
            x = _block(x, width, strides if last else 1, block == 0, f"conv{stage + 2}_block{block + 1}", options)
    x = batch_norm(x, "post_bn", bn_momentum, bn_epsilon)
    x = apply_activation(x, "post", activation)
    if weights == "imagenet":
        _copy_imagenet_weights(keras.Model(keras.utils.get_source_inputs(inputs), x), depth, tuple(inputs.shape[1:]))
    return x


def _copy_imagenet_weights(model, depth, input_shape):
    """Keras's ImageNet ResNet``depth``V2 weights into ``model``, layer by layer name; every one must fit."""
    model_name = f"ResNet{depth}V2"
    constructor = getattr(keras.applications, model_name)
    reference = imagenet_application(
        model_name, lambda: constructor(include_top=False, weights="imagenet", input_shape=input_shape)
    )
    names = {layer.name for layer in model.layers}
    for layer in reference.layers:
        if not layer.weights:
            continue
        target = model.get_layer(layer.name) if layer.name in names else None
        if target is None or [tuple(w.shape) for w in target.weights] != [tuple(w.shape) for w in layer.weights]:
            raise ValueError(
                f"resnet{depth}v2: Keras's ImageNet weights do not fit layer {layer.name!r} of this variant "
                "(first_conv_k3_stride_1, conv_no_bias and activation='prelu' change the weights): pass weights=None"
            )
        target.set_weights(layer.get_weights())
