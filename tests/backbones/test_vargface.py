"""VarGFaceNet: output shape, group size 8, and a parameter count computed independently from the paper layout."""

import keras
import numpy as np
import pytest

from keras_insightface.backbones.vargface import vargfacenet


def vargfacenet_parameter_count(multiplier=1.25, use_se=True, group_size=8):
    """Independent count of the MXNet reference layout (no reference run here: MXNet is not installed).

    BN holds 4 values per channel, PReLU one per channel. A separable conv is a 3x3 conv with group_size input
    channels per group expanding to factor * c_in, BN, PReLU, then 1x1 to c_out, BN (+ PReLU)."""

    def sep(c_in, c_out, factor, act):
        hidden = c_in * factor
        return 9 * group_size * hidden + 4 * hidden + hidden + hidden * c_out + 4 * c_out + (c_out if act else 0)

    def se(c):
        r = c // 4
        return (c * r + r) + r + (r * c + c)

    def normal(c_in, c_out, factor, conv_shortcut):
        shortcut = sep(c_in, c_out, factor, False) if conv_shortcut else 0
        body = sep(c_in, c_out, factor, True) + sep(c_out, c_out, factor, False) + (se(c_out) if use_se else 0)
        return shortcut + body + c_out

    def down(c_in, c_out):
        return 3 * sep(c_in, c_out, 2, False) + c_out + sep(c_out, c_out, 2, False) + c_out

    stem = int(32 * multiplier)
    total = 27 * stem + 4 * stem + stem + normal(stem, stem, 1, True)
    c_in = stem
    for units, filters in ((3, 64), (7, 128), (4, 256)):
        c_out = int(filters * multiplier)
        total += down(c_in, c_out) + (units - 1) * normal(c_out, c_out, 2, False)
        c_in = c_out
    return total + c_in * 1024 + 4 * 1024 + 1024


@pytest.fixture(scope="module")
def vargface_model():
    inputs = keras.Input((112, 112, 3))
    return keras.Model(inputs, vargfacenet(inputs))


def test_vargfacenet_shape_and_parameter_count(vargface_model):
    assert vargface_model.output_shape == (None, 7, 7, 1024)
    assert vargface_model.count_params() == vargfacenet_parameter_count() == 4_042_980


def test_variable_group_convolution_has_group_size_8(vargface_model):
    layer = vargface_model.get_layer("stage2_unit2_sep1_group_conv")
    assert layer.groups == 160 // 8 and tuple(layer.kernel.shape) == (3, 3, 8, 320)


def test_vargfacenet_forward_is_finite(vargface_model):
    images = np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32")
    out = vargface_model.predict_on_batch(images)
    assert out.shape == (2, 7, 7, 1024) and np.all(np.isfinite(out))


def test_bad_multiplier():
    with pytest.raises(ValueError, match="multiplier=1.1"):
        vargfacenet(keras.Input((112, 112, 3)), multiplier=1.1)
