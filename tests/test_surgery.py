"""Model surgery keeps weights: ReLU swaps, BatchNormalization settings, L2 regularisers, stochastic depth,
mixed precision; the seed's surgery names with the seed's values."""

import keras
import numpy as np

import pytest

from keras_insightface.surgery import (
    add_l2_regularizer,
    add_l2_regularizer_2_model,
    add_stochastic_depth,
    convert_mixed_float16_to_float32,
    convert_to_batch_renorm,
    convert_to_mixed_float16,
    remove_stochastic_depth,
    replace_add_with_stochastic_depth,
    replace_ReLU_with_PReLU,
    replace_relu,
    replace_stochastic_depth_with_add,
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


def _l2_sum(model, l2, *variables):
    """``(l2 * sum of squares of variables, the model's loss terms)``."""
    want = l2 * sum(float(np.sum(np.square(np.asarray(v)))) for v in variables)
    return want, float(sum(np.asarray(x) for x in model.losses))


def test_seed_add_l2_regularizer_2_model_values_and_saving(tmp_path):
    from keras_insightface.saving import load_model

    model = _small_model()
    model.get_layer("dense").bias.assign(np.full(5, 0.5))
    # the seed (models.py add_l2_regularizer_2_model, commit 520a9da): keras.regularizers.L2(weight_decay / 2),
    # its README: "add_l2_regularizer_2_model(basic_model, 1e-3) will add keras.regularizers.L2(5e-4)"
    assert add_l2_regularizer_2_model(model, 1e-3) is model
    conv, dense = model.get_layer("conv"), model.get_layer("dense")
    assert float(conv.kernel_regularizer.l2) == pytest.approx(5e-4) and dense.bias_regularizer is None
    want, got = _l2_sum(model, 5e-4, conv.kernel, dense.kernel)
    assert got == pytest.approx(want, rel=1e-5)
    # kept in the saved model's config, so a reloaded model has the same loss terms
    model.save(tmp_path / "m.keras")
    assert float(sum(np.asarray(x) for x in load_model(tmp_path / "m.keras").losses)) == pytest.approx(got, rel=1e-5)

    model = _small_model()
    model.get_layer("conv").trainable = False  # the seed regularises trainable layers only
    add_l2_regularizer_2_model(model, 1e-3, {}, True, True)  # the seed's positional order
    bn, dense = model.get_layer("bn"), model.get_layer("dense")
    assert model.get_layer("conv").kernel_regularizer is None
    want, got = _l2_sum(model, 5e-4, bn.gamma, bn.beta, dense.kernel, dense.bias)
    assert got == pytest.approx(want, rel=1e-5) and float(dense.bias_regularizer.l2) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="weight_decay"):
        add_l2_regularizer(model, -1.0)


def test_seed_replace_relu_with_prelu(capsys):
    model = _small_model()
    model.get_layer("bn").set_weights([np.full(4, 2.0), np.full(4, 10.0), np.zeros(4), np.ones(4)])
    swapped = replace_ReLU_with_PReLU(model)
    assert swapped is not model and "conv_relu" in [layer.name for layer in model.layers]  # a new model
    prelu = swapped.get_layer("conv_prelu")
    assert type(prelu).__name__ == "PReLU" and prelu.shared_axes == [1, 2]
    np.testing.assert_allclose(prelu.get_weights()[0], 0.25)  # the seed: MXNet / PyTorch's initial 0.25
    assert swapped.get_layer("out_prelu").shared_axes is None  # a 2-D input keeps a slope per unit
    np.testing.assert_array_equal(swapped.get_layer("conv").get_weights()[0], model.get_layer("conv").get_weights()[0])
    assert ">>>> Convert ReLU: conv_relu --> conv_prelu" in capsys.readouterr().out

    swish = replace_ReLU_with_PReLU(model, "swish")
    assert swish.get_layer("conv_swish").get_config()["activation"] in ("swish", "silu")
    elu = replace_ReLU_with_PReLU(model, keras.layers.ELU, alpha=0.5)  # a layer class gets the kwargs
    assert elu.get_layer("conv_ELU").alpha == 0.5
    with pytest.raises(ValueError, match="target_activation"):
        replace_ReLU_with_PReLU(model, 3)


def _residual_model(adds=4):
    inputs = keras.Input((4, 4, 2))
    x = inputs
    for i in range(1, adds + 1):
        x = keras.layers.Add(name=f"add_{i}")([x, keras.layers.Conv2D(2, 1, name=f"conv_{i}")(x)])
    return keras.Model(inputs, x)


def test_seed_stochastic_depth_survivals_and_back(capsys):
    from keras_insightface.layers.stochastic_depth import StochasticDepth

    model = _residual_model()
    deep = replace_add_with_stochastic_depth(model)  # the seed's (1, 0.8): survival 1 - 0.2 * i / 4 at add i
    layers = {layer.name: layer for layer in deep.layers if isinstance(layer, StochasticDepth)}
    assert list(layers) == ["stochastic_depth_2", "stochastic_depth_3", "stochastic_depth_4"]  # add_1 survives: 1
    np.testing.assert_allclose([layer.drop_rate for layer in layers.values()], [0.05, 0.1, 0.15], atol=1e-12)
    assert "Converting: add_2 --> stochastic_depth_2 , survival_probability: 0.95" in capsys.readouterr().out
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(deep.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    constant = replace_add_with_stochastic_depth(model, 0.9)
    assert [round(layer.drop_rate, 6) for layer in constant.layers if isinstance(layer, StochasticDepth)] == [0.1] * 4

    back = replace_stochastic_depth_with_add(deep)
    assert not any(isinstance(layer, StochasticDepth) for layer in back.layers)
    assert sum(isinstance(layer, keras.layers.Add) for layer in back.layers) == 4
    np.testing.assert_allclose(back.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    with pytest.raises(ValueError, match="survival probabilities"):
        replace_add_with_stochastic_depth(model, (1, 0.8, 0.5, 0.0))


def test_seed_mixed_precision_round_trip_and_batch_renorm():
    model = _small_model()
    model.compile(optimizer="sgd", loss="mse")
    half = convert_to_mixed_float16(model)
    assert half.get_layer("conv").dtype_policy.name == "mixed_float16"
    assert half.get_layer("bn").dtype_policy.name == "float32"  # BatchNormalization kept unless asked
    assert half.compiled and half.optimizer is not model.optimizer
    assert convert_to_mixed_float16(model, convert_batch_norm=True).get_layer("bn").dtype_policy.name == "mixed_float16"
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(half.predict_on_batch(x), "float32"), model.predict_on_batch(x), atol=2e-2)
    full = convert_mixed_float16_to_float32(half)
    assert {layer.dtype_policy.name for layer in full.layers[1:]} == {"float32"}
    np.testing.assert_allclose(full.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    with pytest.raises(NotImplementedError, match="renorm"):
        convert_to_batch_renorm(model)
