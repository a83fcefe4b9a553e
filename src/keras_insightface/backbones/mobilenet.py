"""MobileNet v1 (with the seed's ``mobilenet_m1`` stride-1 stem), v2 and v3 small/large.

v1 follows Howard et al. 2017: a 3x3 conv (32 x alpha) then 13 depthwise-separable blocks
(64, 128/2, 128, 256/2, 256, 512/2, 5 x 512, 1024/2, 1024), each depthwise 3x3 + BN + ReLU6 and pointwise
1x1 + BN + ReLU6. ``stem_strides=1`` is the seed's ``mobilenet_m1``: 7x7 instead of 4x4 maps at 112x112.
v2 / v3 are Keras applications built without weights and without their own rescaling (inputs here are
already normalised); their BatchNormalization keeps Keras's defaults.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.mobilenet import mobilenet_v1
    >>> mobilenet_v1(keras.Input((112, 112, 3)), stem_strides=1).shape
    (None, 7, 7, 1024)
"""

import keras

V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))


def _conv_bn_relu6(x, layer, name, momentum, epsilon):
    x = layer(x)
    x = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name + "_bn")(x)
    return keras.layers.ReLU(6.0, name=name + "_relu")(x)


def mobilenet_v1(inputs, alpha=1.0, stem_strides=2, bn_momentum=0.9, bn_epsilon=1e-5):
    """MobileNet v1 feature map; ``alpha`` scales every width, ``stem_strides=1`` gives ``mobilenet_m1``."""
    if alpha <= 0 or stem_strides not in (1, 2):
        raise ValueError(f"mobilenet_v1 needs alpha > 0 and stem_strides 1 or 2, received {alpha=}, {stem_strides=}")
    stem = keras.layers.Conv2D(int(32 * alpha), 3, strides=stem_strides, padding="same", use_bias=False, name="stem_conv")
    x = _conv_bn_relu6(inputs, stem, "stem", bn_momentum, bn_epsilon)
    for index, (filters, strides) in enumerate(V1_BLOCKS, 1):
        name = f"block{index}"
        depthwise = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name + "_dw")
        x = _conv_bn_relu6(x, depthwise, name + "_dw", bn_momentum, bn_epsilon)
        pointwise = keras.layers.Conv2D(int(filters * alpha), 1, use_bias=False, name=name + "_pw")
        x = _conv_bn_relu6(x, pointwise, name + "_pw", bn_momentum, bn_epsilon)
    return x


def _application(constructor, inputs, **kwargs):
    return constructor(input_tensor=inputs, include_top=False, weights=None, **kwargs).output


def mobilenet_v2(inputs, alpha=1.0, bn_momentum=None, bn_epsilon=None):
    """Keras's MobileNetV2 (4x4x1280 at 112x112). BN settings are Keras's; the arguments are accepted for the registry."""
    return _application(keras.applications.MobileNetV2, inputs, alpha=alpha)


def mobilenet_v3(inputs, size="large", alpha=1.0, bn_momentum=None, bn_epsilon=None):
    """Keras's MobileNetV3 ``small`` or ``large`` (4x4 maps at 112x112), without its built-in rescaling."""
    if size not in ("small", "large"):
        raise ValueError(f"mobilenet_v3 size must be 'small' or 'large', received {size!r}")
    constructor = keras.applications.MobileNetV3Small if size == "small" else keras.applications.MobileNetV3Large
    return _application(constructor, inputs, alpha=alpha, include_preprocessing=False)
