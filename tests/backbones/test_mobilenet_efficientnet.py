"""MobileNet v1 (Keras's) / m1 (own layers, counted), MobileNet v2 / v3 and EfficientNetV2 (Keras applications)
as backbones."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones import get_backbone
from keras_insightface.backbones.mobilenet import V1_BLOCKS
from keras_insightface.models import buildin_models


def mobilenet_v1_parameter_count(alpha=1.0):
    """Stem conv + BN, then per block: depthwise 3x3 + BN and pointwise 1x1 + BN (BN: 4 per channel)."""
    width = int(32 * alpha)
    total = 27 * width + 4 * width
    for filters, _ in V1_BLOCKS:
        out = int(filters * alpha)
        total += 9 * width + 4 * width + width * out + 4 * out
        width = out
    return total


@pytest.mark.parametrize("name,size", [("mobilenet", 3), ("mobilenet_m1", 7)])  # Keras's v1 pads stride 2 bottom/right
def test_mobilenet_v1_layout(name, size):
    inputs = keras.Input((112, 112, 3))
    backbone = keras.Model(inputs, get_backbone(name)(inputs))
    assert backbone.output_shape == (None, size, size, 1024)
    assert backbone.count_params() == mobilenet_v1_parameter_count()


@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv3_small", "efficientnetv2b0"])
def test_keras_application_backbones_embed(name):
    model = buildin_models(name, output_layer="GDC", emb_shape=32, weights=None)
    assert model.output_shape == (None, 32)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers[2:])  # only our normalize
    out = model.predict_on_batch(np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32"))
    assert np.all(np.isfinite(out))
