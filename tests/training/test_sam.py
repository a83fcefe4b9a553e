"""SAM (``training/sam.py``, the seed's ``SAMModel`` and ``Train(sam_rho=...)``): one step equals the update
computed in numpy (global gradient norm, the second gradient at ``w + e`` applied to ``w``), ``rho=0`` is the plain
step exactly, BatchNormalization statistics take both passes' updates as the seed's did (numbers measured with the
seed's code), both passes make the same random draws, loss scaling and gradient accumulation work, and ``Train``
trains with it."""

import keras
import numpy as np
import pytest

from keras_insightface import ArcfaceLoss, Train
from keras_insightface.data.augment import FaceAugment
from keras_insightface.heads.margin import MarginHead
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.losses.margin import CurricularFaceLoss
from keras_insightface.training.config import TrainConfig
from keras_insightface.training.sam import sam_train_step
from keras_insightface.training.task import FaceTask

RHO, LR = 0.05, 0.1


def _inputs():
    """The seed measurement's data and weights (the same draws, in the same order)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 2)).astype("float32")
    w1, b1 = rng.normal(size=(3, 4)).astype("float32") * 0.5, rng.normal(size=(4,)).astype("float32") * 0.1
    w2, b2 = rng.normal(size=(4, 2)).astype("float32") * 0.5, rng.normal(size=(2,)).astype("float32") * 0.1
    return x, y, [w1, b1, w2, b2]


class Tiny(keras.Model):
    """Dense(4) -> tanh or BatchNormalization -> Dropout -> Dense(2); ``rho`` None trains with Keras's step."""

    def __init__(self, rho=None, dropout=0.0, batch_norm=False):
        super().__init__()
        self.rho = rho
        self.first = keras.layers.Dense(4, activation=None if batch_norm else "tanh")
        self.norm = keras.layers.BatchNormalization(momentum=0.5, epsilon=1e-3) if batch_norm else None
        self.drop = keras.layers.Dropout(dropout, seed=7)
        self.second = keras.layers.Dense(2)

    def call(self, x, training=None):
        h = self.first(x)
        if self.norm is not None:
            h = self.norm(h, training=training)
        return self.second(self.drop(h, training=training))

    def train_step(self, state, data):
        if self.rho is None:
            return super().train_step(state, data)
        return sam_train_step(self, state, data, self.rho)


def _fit(model, weights, optimizer, x, y, batch_size=6, epochs=1):
    """``(the Dense weights after training from ``weights``, the history)``."""
    model(x[:1])  # builds the layers (inference: no random draw, no statistics update)
    dense = [model.first.kernel, model.first.bias, model.second.kernel, model.second.bias]
    for variable, value in zip(dense, weights):
        variable.assign(value)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0).history
    return [np.asarray(variable) for variable in dense], history


def _loss_and_gradients(weights, x, y, mask):
    """Mean squared error of tanh(x w1 + b1) * mask -> w2, b2, and its gradients, by hand."""
    w1, b1, w2, b2 = (w.astype("float64") for w in weights)
    a = np.tanh(x @ w1 + b1)
    out = (a * mask) @ w2 + b2
    d_out = 2 * (out - y) / out.size
    d_hidden = (d_out @ w2.T) * mask * (1 - a ** 2)
    return np.mean((out - y) ** 2), [x.T @ d_hidden, d_hidden.sum(0), (a * mask).T @ d_out, d_out.sum(0)]


def _sam_gradient(weights, x, y, mask, rho):
    """The gradient at ``w + rho * g / (||g|| + 1e-12)``, ``||g||`` over all variables together."""
    _, gradients = _loss_and_gradients(weights, x, y, mask)
    norm = np.sqrt(sum(np.sum(g ** 2) for g in gradients))
    perturbed = [w + rho * g / (norm + 1e-12) for w, g in zip(weights, gradients)]
    return _loss_and_gradients(perturbed, x, y, mask)[1]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_one_step_equals_numpy(dropout):
    """Plain SGD: ``w - lr * g(w + e)``; with dropout both passes use the layer's one mask of this step."""
    x, y, weights = _inputs()
    model = Tiny(RHO, dropout)
    updated, history = _fit(model, weights, keras.optimizers.SGD(LR), x, y)
    mask = np.ones((6, 4))
    if dropout:  # the layer's first draw: a fresh generator of its seed
        mask = np.asarray(keras.random.dropout(np.ones((6, 4), "float32"), dropout, seed=keras.random.SeedGenerator(7)))
        assert 0 < (mask == 0).sum() < mask.size
        assert np.asarray(model.drop.seed_generator.state).tolist() == [7, 1]  # one draw used, not two
    sharp = _sam_gradient(weights, x, y, mask, RHO)
    for new, old, gradient in zip(updated, weights, sharp):
        np.testing.assert_allclose(new, old - LR * gradient, rtol=1e-5, atol=1e-6)
    plain = _loss_and_gradients(weights, x, y, mask)
    assert history["loss"][0] == pytest.approx(plain[0], rel=1e-5)  # reported at w, as a plain step
    moved = [old - LR * g for old, g in zip(weights, plain[1])]
    assert max(np.abs(new - m).max() for new, m in zip(updated, moved)) > 1e-4  # SAM is not the plain step


def test_zero_rho_is_the_plain_step_exactly():
    x, y, weights = _inputs()
    sam, sam_history = _fit(Tiny(0.0), weights, keras.optimizers.SGD(LR, momentum=0.9), x, y, batch_size=3)
    plain, plain_history = _fit(Tiny(None), weights, keras.optimizers.SGD(LR, momentum=0.9), x, y, batch_size=3)
    for a, b in zip(sam, plain):
        np.testing.assert_array_equal(a, b)
    assert sam_history == plain_history


def test_batch_norm_statistics_take_both_passes_as_the_seed():
    """Measured with the seed's code (commit 520a9da): ``models.SAMModel(Input(3) -> Dense(4) ->
    BatchNormalization(momentum=0.5, epsilon=1e-3) -> Dense(2), rho=0.05)`` compiled with SGD(0.1) and "mse", one
    ``fit`` step on ``_inputs()`` (batch 6). The moving statistics are updated at ``w`` and then again at ``w + e``."""
    x, y, weights = _inputs()
    model = Tiny(RHO, batch_norm=True)
    updated, history = _fit(model, weights, keras.optimizers.SGD(LR), x, y)
    seed = {
        "first.kernel": [[-0.6142747, 0.24049057, -0.18656923, 0.3210242],
                         [0.1379962, 0.2988296, -0.3898057, -0.03776894],
                         [0.24935468, 0.7829059, -0.5858312, 0.7416048]],
        "gamma": [0.83865774, 0.88609934, 0.9790897, 0.98555416],
        "beta": [0.03411401, 0.02382742, -0.01965379, 0.0109644],
        "moving_mean": [0.19848135, -0.03450321, 0.18654177, -0.22329101],
        "moving_variance": [0.42468625, 0.36551833, 0.395001, 0.58300227],
        "second.kernel": [[0.6483809, 0.8745574], [0.85391337, 0.5486909], [0.1666388, -0.5731554],
                          [-0.00326336, 0.28471905]],
        "second.bias": [-0.12682131, 0.07247205],
    }
    ours = {"first.kernel": updated[0], "second.kernel": updated[2], "second.bias": updated[3],
            **{name: np.asarray(getattr(model.norm, name)) for name in ("gamma", "beta", "moving_mean",
                                                                         "moving_variance")}}
    for name, expected in seed.items():
        np.testing.assert_allclose(ours[name], expected, rtol=2e-5, atol=1e-6, err_msg=name)
    # the seed logged 1.2999808, the mean of the losses at w and w + e (its compiled loss ran twice); we log the
    # loss at w (1.1781949 with these inputs), as a plain step does
    assert history["loss"][0] == pytest.approx(1.1781949, rel=1e-5)


def test_loss_scaling_and_gradient_accumulation():
    x, y, weights = _inputs()
    mask = np.ones((6, 4))
    plain, _ = _fit(Tiny(RHO), weights, keras.optimizers.SGD(LR), x, y)
    scaled, _ = _fit(Tiny(RHO), weights, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LR)), x, y)
    for a, b in zip(scaled, plain):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # the step e does not depend on the loss scale
    # two micro-batches of 3: each its own SAM gradient at the same weights, averaged into one update
    accumulated, _ = _fit(Tiny(RHO), weights, keras.optimizers.SGD(LR, gradient_accumulation_steps=2), x, y,
                          batch_size=3)
    halves = [_sam_gradient(weights, x[i:i + 3], y[i:i + 3], mask[:3], RHO) for i in (0, 3)]
    for new, old, first, second in zip(accumulated, weights, *halves):
        np.testing.assert_allclose(new, old - LR * (first + second) / 2, rtol=1e-5, atol=1e-6)


def _face_task(sam_rho):
    keras.utils.set_random_seed(3)
    basic = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 128, -1),
                              keras.layers.Conv2D(4, 3, strides=2), keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)], name="tiny")
    task = FaceTask(basic, FaceAugment(random_status=2, seed=5), head=NormDense(4, name="norm_dense"),
                    margin_head=MarginHead(CurricularFaceLoss(scale=16)), sam_rho=sam_rho)
    task.compile(optimizer=keras.optimizers.SGD(LR), jit_compile=True)
    return task


def test_face_task_reports_the_plain_steps_metrics_and_draws():
    """The loss and accuracy logged are those at ``w`` (the plain step's), the augmentation draws once per step;
    the weights, BN and margin statistics move differently."""
    images = np.random.default_rng(1).integers(0, 255, (8, 16, 16, 3), dtype="uint8")
    labels = np.arange(8) % 4
    runs = {}
    for rho in (RHO, 0.0):
        task = _face_task(rho)
        history = task.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        basic = task.basic_model
        runs[rho] = history, {name: np.asarray(variable) for name, variable in [
            ("draws", task.augment.seed_generator.state), ("kernel", basic.layers[-1].kernel),
            ("moving_mean", basic.layers[2].moving_mean), ("t", task.margin_head.state_variables["t"])]}
    (sam_history, sam), (plain_history, plain) = runs[RHO], runs[0.0]
    assert set(sam_history) == set(plain_history) == {"accuracy", "loss"} and np.isfinite(sam_history["loss"][0])
    for name in plain_history:
        assert sam_history[name][0] == pytest.approx(plain_history[name][0], rel=1e-6), name
    assert sam["draws"].tolist() == plain["draws"].tolist() and plain["draws"][1] > 0
    for name in ("kernel", "moving_mean", "t"):
        assert not np.allclose(sam[name], plain[name], rtol=1e-6, atol=0), name


def _train(data, tmp_path, **options):
    return Train(str(data / "rec"), f"sam{options.get('sam_rho', 0)}.keras", basic_model="r18_tiny", emb_shape=16,
                 batch_size=16, num_workers=0, verbose=0, optimizer="sgd", lr_base=0.1, append_history=False,
                 checkpoint_dir=str(tmp_path), **options)


def test_train_with_sam_rho(tiny_data, tmp_path):
    weights, losses = {}, {}
    for rho in (0.05, 0):
        trainer = _train(tiny_data, tmp_path, sam_rho=rho)
        try:
            assert trainer.config.optimizer.sam_rho == rho
            history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
            assert trainer.parts.train_model.sam_rho == rho
            losses[rho], weights[rho] = history["loss"][0], trainer.basic_model.get_weights()
        finally:
            trainer.close()
    assert np.isfinite(losses[0.05])
    assert max(np.abs(a - b).max() for a, b in zip(weights[0.05], weights[0])) > 1e-5


def test_negative_rho_is_an_error():
    with pytest.raises(ValueError, match="sam_rho: must be >= 0"):
        TrainConfig.from_kwargs(data_path="faces", save_path="r.keras", sam_rho=-0.05)
    with pytest.raises(ValueError, match="sam_rho: must be a number >= 0"):
        FaceTask(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), FaceAugment(random_status=-1),
                 sam_rho=-1)


def test_the_seeds_positional_sam_rho_reaches_the_config():
    from keras_insightface.training.seed_options import SEED_POSITIONAL, seed_train_options

    position = SEED_POSITIONAL.index("sam_rho")
    options, _ = seed_train_options((None,) * position + (0.05,), {})
    assert options["sam_rho"] == 0.05
    config = TrainConfig.from_kwargs(data_path="faces", save_path="r.keras", sam_rho=options["sam_rho"])
    default = TrainConfig.from_kwargs(data_path="faces", save_path="r.keras")
    assert config.optimizer.sam_rho == 0.05 and default.optimizer.sam_rho == 0
