"""MobileNet v1 (Keras's, and the seed's ``mobilenet_m1`` with a stride-1 stem), v2 and v3 small/large.

v1 follows Howard et al. 2017: a 3x3 conv (32 x alpha) then 13 depthwise-separable blocks
(64, 128/2, 128, 256/2, 256, 512/2, 5 x 512, 1024/2, 1024), each depthwise 3x3 + BN + ReLU6 and pointwise
1x1 + BN + ReLU6. ``mobilenet`` is ``keras.applications.MobileNet`` (the seed's ``mobilenet``: 3x3 maps at
112x112, ImageNet weights on request); ``mobilenet_v1(stem_strides=1)`` is the seed's ``mobilenet_m1`` built
here (7x7 maps, BN at Keras's 0.99 / 1e-3 as the seed's copy of Keras's MobileNet). v2 / v3 are Keras
applications without their own rescaling (inputs here are already normalised); see ``applications.py``.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.mobilenet import mobilenet_v1
    >>> mobilenet_v1(keras.Input((112, 112, 3)), stem_strides=1).shape
    (None, 7, 7, 1024)
"""

import keras

from keras_insightface.backbones.applications import keras_application

V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))


def _conv_bn_relu6(x, layer, name, momentum, epsilon):
    x = layer(x)
    x = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name + "_bn")(x)
    return keras.layers.ReLU(6.0, name=name + "_relu")(x)


def mobilenet_v1(inputs, alpha=1.0, stem_strides=2, bn_momentum=0.99, bn_epsilon=1e-3):
    """MobileNet v1 feature map; ``alpha`` scales every width, ``stem_strides=1`` gives ``mobilenet_m1``.

    Every depthwise conv reads its input padded by one pixel on each side, as the seed's ``mobilenet_m1`` (for
    the stride-2 ones this differs from Keras's ``same``, which pads bottom/right only); with ``stem_strides=2``
    a 112x112 input ends at 4x4, where Keras's MobileNet (``mobilenet``) ends at 3x3."""
    if alpha <= 0 or stem_strides not in (1, 2):
        raise ValueError(f"mobilenet_v1 needs alpha > 0 and stem_strides 1 or 2, received {alpha=}, {stem_strides=}")
    stem = keras.layers.Conv2D(int(32 * alpha), 3, strides=stem_strides, padding="same", use_bias=False, name="stem_conv")
    x = _conv_bn_relu6(inputs, stem, "stem", bn_momentum, bn_epsilon)
    for index, (filters, strides) in enumerate(V1_BLOCKS, 1):
        name = f"block{index}"
        x = keras.layers.ZeroPadding2D(1, name=name + "_pad")(x)
        depthwise = keras.layers.DepthwiseConv2D(3, strides=strides, padding="valid", use_bias=False, name=name + "_dw")
        x = _conv_bn_relu6(x, depthwise, name + "_dw", bn_momentum, bn_epsilon)
        pointwise = keras.layers.Conv2D(int(filters * alpha), 1, use_bias=False, name=name + "_pw")
        x = _conv_bn_relu6(x, pointwise, name + "_pw", bn_momentum, bn_epsilon)
    return x


def mobilenet(inputs, alpha=1.0, depth_multiplier=1, weights=None, bn_momentum=None, bn_epsilon=None):
    """Keras's MobileNet (3x3x1024 at 112x112); ``weights`` ``None`` or ``"imagenet"``."""
    return keras_application(
        inputs, "MobileNet", weights, bn_momentum, bn_epsilon, alpha=alpha, depth_multiplier=depth_multiplier
    )


def mobilenet_v2(inputs, alpha=1.0, weights=None, bn_momentum=None, bn_epsilon=None):
    """Keras's MobileNetV2 (4x4x1280 at 112x112); ``weights`` ``None`` or ``"imagenet"``."""
    return keras_application(inputs, "MobileNetV2", weights, bn_momentum, bn_epsilon, alpha=alpha)


def mobilenet_v3(inputs, size="large", alpha=1.0, weights=None, bn_momentum=None, bn_epsilon=None):
    """Keras's MobileNetV3 ``small`` or ``large`` (4x4 maps at 112x112), without its built-in rescaling."""
    if size not in ("small", "large"):
        raise ValueError(f"mobilenet_v3 size must be 'small' or 'large', received {size!r}")
    model_name = "MobileNetV3Small" if size == "small" else "MobileNetV3Large"
    return keras_application(inputs, model_name, weights, bn_momentum, bn_epsilon, alpha=alpha)
