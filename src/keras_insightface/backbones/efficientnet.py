"""EfficientNetV2 B0-B3 and S (Tan & Le 2021) from Keras applications, without weights or built-in rescaling.

Inputs here are already normalised, so ``include_preprocessing=False``; the BatchNormalization layers keep
Keras's settings (the registry's ``bn_momentum`` / ``bn_epsilon`` are accepted and not applied).

Example:
    >>> import keras
    >>> from keras_insightface.backbones.efficientnet import efficientnet_v2
    >>> efficientnet_v2(keras.Input((112, 112, 3)), variant="b0").shape
    (None, 4, 4, 1280)
"""

import keras

VARIANTS = {
    "b0": "EfficientNetV2B0",
    "b1": "EfficientNetV2B1",
    "b2": "EfficientNetV2B2",
    "b3": "EfficientNetV2B3",
    "s": "EfficientNetV2S",
}


def efficientnet_v2(inputs, variant="b0", bn_momentum=None, bn_epsilon=None):
    """The last feature map of EfficientNetV2-``variant`` (b0, b1, b2, b3, s)."""
    if variant not in VARIANTS:
        raise ValueError(f"efficientnet_v2 variant must be one of {sorted(VARIANTS)}, received {variant!r}")
    constructor = getattr(keras.applications, VARIANTS[variant])
    return constructor(input_tensor=inputs, include_top=False, weights=None, include_preprocessing=False).output
