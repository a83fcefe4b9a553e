"""EfficientNet V1 B0-B7 (Tan & Le 2019) and V2 B0-B3 / S / M / L (Tan & Le 2021) from ``keras.applications``.

The seed system built them from the ``keras_efficientnet_v2`` package, whose layers match Keras's in shape
(parameter counts equal at 112x112: 5,919,312 for V2 B0, 4,049,564 + Keras's 7 normalisation statistics for
V1 B0) but whose BatchNormalization uses momentum 0.9, epsilon 1e-3: those are the defaults here.
V2 models are built without their rescaling (inputs here are already normalised); V1 models always rescale,
see ``applications.py``. ImageNet weights on request (``weights="imagenet"``). That package's V2-T, V2-XL and
V1-L2, which ``keras.applications`` lacks, are built in ``efficientnet_extra.py``.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.efficientnet import efficientnet_v2
    >>> efficientnet_v2(keras.Input((112, 112, 3)), variant="b0").shape
    (None, 4, 4, 1280)
"""

from keras_insightface.backbones.applications import keras_application

V2_VARIANTS = ("b0", "b1", "b2", "b3", "s", "m", "l")
V1_VARIANTS = tuple(f"b{index}" for index in range(8))
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-3  # keras_efficientnet_v2's, which the seed used


def efficientnet_v2(inputs, variant="b0", weights=None, bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON):
    """The last feature map of EfficientNetV2-``variant`` (b0, b1, b2, b3, s, m, l)."""
    if variant not in V2_VARIANTS:
        raise ValueError(f"efficientnet_v2 variant must be one of {V2_VARIANTS}, received {variant!r}")
    return keras_application(inputs, f"EfficientNetV2{variant.upper()}", weights, bn_momentum, bn_epsilon)


def efficientnet_v1(inputs, variant="b0", weights=None, bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON):
    """The last feature map of EfficientNet-``variant`` (b0 ... b7)."""
    if variant not in V1_VARIANTS:
        raise ValueError(f"efficientnet_v1 variant must be one of {V1_VARIANTS}, received {variant!r}")
    return keras_application(inputs, f"EfficientNet{variant.upper()}", weights, bn_momentum, bn_epsilon)
