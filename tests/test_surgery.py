"""Model surgery keeps weights: ReLU swaps, BatchNormalization settings, L2 regularisers."""

import keras
import numpy as np

from keras_insightface.surgery import (
    add_l2_regularizer,
    add_stochastic_depth,
    remove_stochastic_depth,
    replace_relu,
    set_bn_params,
)


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(5, name="dense")(x)
    x = keras.layers.Activation("relu", name="out_relu")(x)
    return keras.Model(inputs, x)


def test_relu_to_prelu_keeps_weights_and_matches_relu_on_positive_inputs():
    model = _small_model()
    model.get_layer("bn").set_weights([np.full(4, 2.0), np.full(4, 10.0), np.zeros(4), np.ones(4)])  # BN out > 0
    swapped = replace_relu(model, "prelu")
    names = [layer.name for layer in swapped.layers]
    assert "conv_prelu" in names and "out_prelu" in names and "conv_relu" not in names
    assert swapped.get_layer("conv_prelu").shared_axes == [1, 2] and swapped.get_layer("out_prelu").shared_axes is None
    np.testing.assert_allclose(swapped.get_layer("conv_prelu").get_weights()[0], 0.25)
    for name in ("conv", "bn", "dense"):
        for old, new in zip(model.get_layer(name).get_weights(), swapped.get_layer(name).get_weights()):
            np.testing.assert_array_equal(old, new)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    relu_out, prelu_out = model.predict_on_batch(x), swapped.predict_on_batch(x)
    positive = relu_out > 0
    np.testing.assert_allclose(prelu_out[positive], relu_out[positive], rtol=1e-5)  # same weights, same path
    assert np.all(prelu_out[~positive] <= 0)


def test_relu_to_swish():
    swapped = replace_relu(_small_model(), "swish")
    assert swapped.get_layer("conv_swish").get_config()["activation"] in ("swish", "silu")  # Keras names it silu


def test_bn_params_set_in_place():
    model = _small_model()
    assert set_bn_params(model, momentum=0.9, epsilon=2e-5) == 1
    assert model.get_layer("bn").momentum == 0.9 and model.get_layer("bn").epsilon == 2e-5


def test_l2_regularizer_losses():
    model = _small_model()
    assert add_l2_regularizer(model, 5e-4) == 2
    kernels = [model.get_layer("conv").kernel, model.get_layer("dense").kernel]
    want = sum(2.5e-4 * float(np.sum(np.square(np.asarray(k)))) for k in kernels)
    assert np.isclose(float(sum(np.asarray(loss) for loss in model.losses)), want, rtol=1e-5)
    assert add_l2_regularizer(model, 5e-4, apply_to_batch_normal=True) == 4  # + BN gamma and beta


def test_l2_regularizer_reaches_depthwise_and_separable_kernels():
    """Keras 3 names a DepthwiseConv2D's weight ``kernel`` (Keras 2: ``depthwise_kernel``): every GDC head has one."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    model = keras.Model(inputs, x)
    assert add_l2_regularizer(model, 5e-4) == 3
    kernels = [model.get_layer("dw").kernel, model.get_layer("sep").depthwise_kernel,
               model.get_layer("sep").pointwise_kernel]
    want = sum(2.5e-4 * float(np.sum(np.square(np.asarray(k)))) for k in kernels)
    assert np.isclose(float(sum(np.asarray(loss) for loss in model.losses)), want, rtol=1e-5)


def test_stochastic_depth_round_trip_keeps_weights():
    from keras_insightface.layers.stochastic_depth import StochasticDepth
    from keras_insightface.models import buildin_models

    model = buildin_models("r18_tiny", emb_shape=8)
    deep = add_stochastic_depth(model, drop_rate=0.2)
    layers = [layer for layer in deep.layers if isinstance(layer, StochasticDepth)]
    assert len(layers) == 8 and [layer.name for layer in layers][0] == "stack1_block1_add"
    np.testing.assert_allclose([layer.drop_rate for layer in layers], np.linspace(0, 0.2, 8), atol=1e-7)
    x = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(deep.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    back = remove_stochastic_depth(deep)
    assert not any(isinstance(layer, StochasticDepth) for layer in back.layers)
    assert sum(isinstance(layer, keras.layers.Add) for layer in back.layers) == 8
    np.testing.assert_allclose(back.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-5)
