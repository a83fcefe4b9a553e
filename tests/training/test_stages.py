"""The seed's stage keys in ``Train``: lossTopK, lossWeight, bottleneckOnly, type, distill; checks at the start."""

import math

import keras
import numpy as np
import pytest

from keras_insightface import ArcfaceLoss, Train
from keras_insightface.data.insightface_rec import InsightfaceRec
from keras_insightface.losses.distillation import DistillEuclideanLoss
from keras_insightface.training.stages import plan_stage


def _train(data, tmp_path, **kwargs):
    options = dict(basic_model="r18_tiny", batch_size=16, emb_shape=16, lr_base=0.1, lr_min=1e-4, num_workers=0,
                   checkpoint_dir=str(tmp_path), verbose=0, optimizer="sgd", append_history=False)
    options.update(kwargs)
    return Train(str(data), "stages.keras", **options)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_bottleneck_only_then_sub_centers_then_weighted_loss(tiny_data, tmp_path):
    trainer = _train(tiny_data / "rec", tmp_path)
    backbone = _weights(trainer.basic_model)
    optimizers = []

    def run(stage):
        trainer.train([stage])
        optimizers.append(trainer.parts.optimizer)
        return trainer.history

    try:
        run({"loss": ArcfaceLoss(scale=16), "epoch": 1, "bottleneckOnly": True})
        assert trainer.initial_epoch == 0  # as the seed: a bottleneckOnly stage does not advance the epochs
        for before, after in zip(backbone, _weights(trainer.basic_model)):
            np.testing.assert_array_equal(before, after)  # the backbone (BN statistics too) did not move
        assert trainer.basic_model.trainable  # unfrozen after the stage
        kernel = np.array(trainer.parts.head.kernel)
        run({"loss": ArcfaceLoss(scale=16), "epoch": 1, "lossTopK": 3})
        assert trainer.parts.head.loss_top_k == 3 and tuple(trainer.parts.head.kernel.shape) == (16, 8 * 3)
        assert not np.allclose(np.array(trainer.basic_model.get_weights()[0]), backbone[0])  # trains now
        assert kernel.shape == (16, 8)
        history = run({"loss": ArcfaceLoss(scale=16), "epoch": 1, "lossTopK": 3, "lossWeight": 0.0})
    finally:
        trainer.close()
    # other trainable variables (frozen backbone, sub-center kernel) -> a fresh optimizer; same ones -> carried on
    assert optimizers[0] is not optimizers[1] and optimizers[1] is optimizers[2]
    assert history["loss"][-1] == 0.0 and history["loss"][1] > 0  # lossWeight scales the stage's main loss
    assert len(history["loss"]) == 3


def test_distillation_from_stored_embeddings_and_a_distill_only_stage(tiny_data, tmp_path):
    """An npz naming the .rec with one teacher embedding per record (as distill-data writes): the margin stage
    adds the distillation term (student 16-d projected to the teacher's 8-d), a type 'distill' stage trains on
    it alone and brings it down."""
    rec = InsightfaceRec(tiny_data / "rec")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 8))  # teacher embeddings cluster by identity, so they can be matched
    embeddings = centers[rec.labels] + 0.1 * rng.normal(size=(len(rec), 8))
    npz = tmp_path / "distilled.npz"
    np.savez(npz, rec_path=str(tiny_data / "rec" / "train.rec"), image_classes=rec.labels,
             embeddings=embeddings.astype("float32"))
    trainer = _train(npz, tmp_path, allow_outside_paths=True)  # an npz written elsewhere, naming an absolute path
    try:
        history = trainer.train([
            {"loss": ArcfaceLoss(scale=16), "epoch": 1, "lossWeight": 0.0, "distill": 2.0},
            {"type": "distill", "loss": DistillEuclideanLoss(), "epoch": 3},
        ])
    finally:
        trainer.close()
    assert trainer.parts.distill_projection is not None and trainer.parts.distill_projection.teacher_dim == 8
    assert trainer.parts.train_model.stored_teacher and trainer.parts.train_model.margin_head is None
    assert history["loss"][0] == pytest.approx(2.0 * history["distill_loss"][0], rel=1e-5)
    assert history["loss"][-1] < history["loss"][1]  # the distill-only stage learns the teacher
    assert "accuracy" not in history or len(history["accuracy"]) == 1


def test_in_step_teacher_is_frozen(tiny_data, tmp_path):
    teacher_trainer = _train(tiny_data / "rec", tmp_path, emb_shape=8, seed=3)
    teacher_path = str(tmp_path / "teacher.keras")
    teacher_trainer.basic_model.save(teacher_path)
    teacher_trainer.close()
    trainer = _train(tiny_data / "rec", tmp_path, teacher_model_interf=teacher_path)
    frozen = _weights(trainer.parts.teacher)
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
    finally:
        trainer.close()
    assert np.isfinite(history["distill_loss"][0]) and history["distill_loss"][0] > 0
    for before, after in zip(frozen, _weights(trainer.parts.teacher)):
        np.testing.assert_array_equal(before, after)


def test_stage_errors_name_the_stage(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"Stage 1: unknown keys \['lossTopk'\]"):
        [plan_stage(i, s) for i, s in enumerate([{"loss": ArcfaceLoss(), "epoch": 1}, {"lossTopk": 3, "epoch": 1}])]
    with pytest.raises(ValueError, match="Stage 0: type 'triplet' does not fit the loss"):
        plan_stage(0, {"loss": ArcfaceLoss(), "type": "triplet", "epoch": 1})
    with pytest.raises(ValueError, match="lossTopK must be a positive integer, > 1 only with a margin loss"):
        plan_stage(0, {"loss": "softmax", "lossTopK": 2, "epoch": 1})
    with pytest.raises(ValueError, match="needs a positive 'epoch'"):
        plan_stage(0, {"loss": ArcfaceLoss(), "epoch": 1.5})
    assert plan_stage(0, {"type": "triplet", "epoch": 1, "tripletKind": "batch_all"}).embedding_loss.kind == "batch_all"
    trainer = _train(tiny_data / "rec", tmp_path)
    try:
        from keras_insightface.training.optimizers import SGDW, Lookahead, named_optimizer

        named = named_optimizer("lookahead_sgdw", 0.1)
        assert isinstance(named, Lookahead) and isinstance(named.optimizer, SGDW)
        with pytest.raises(ValueError, match="Unknown optimizer 'sgdd': use sgd, sgdw, adamw, radam, ranger, lookahead_"):
            named_optimizer("sgdd", 0.1)
        with pytest.raises(ValueError, match="Stage 0: distillation needs teacher embeddings"):
            trainer.train([{"loss": ArcfaceLoss(), "epoch": 1, "distill": 1.0}])
        with pytest.raises(ValueError, match="Stage 0: triplet losses need batches of identity groups"):
            trainer.train([{"type": "triplet", "epoch": 1}])
    finally:
        trainer.close()


def test_full_model_pretrained_weights_and_output_weight_decay(tiny_data, tmp_path):
    import keras

    from keras_insightface import buildin_models
    from keras_insightface.heads.norm_dense import NormDense

    basic = buildin_models("r18_tiny", emb_shape=16)
    full = keras.Model(basic.inputs, NormDense(8, loss_top_k=2, name="arcface")(basic.output))
    full.save(tmp_path / "full.keras")
    other = buildin_models("r18_tiny", emb_shape=32)  # another embedding size: the backbone fits, the neck not
    other.save(tmp_path / "other.keras")

    trainer = _train(tiny_data / "rec", tmp_path, model=str(tmp_path / "full.keras"), output_weight_decay=0)
    try:
        assert trainer.parts.head.loss_top_k == 2
        np.testing.assert_array_equal(np.array(trainer.parts.head.kernel), np.array(full.get_layer("arcface").kernel))
        for mine, theirs in zip(trainer.basic_model.get_weights(), basic.get_weights()):
            np.testing.assert_array_equal(mine, theirs)
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1, "lossTopK": 2}])
        assert trainer.parts.optimizer.decay_factors == {"norm_dense_w": 0.0, "dense_softmax/kernel": 0.0,
                                                         "euclidean_dense/kernel": 0.0}
    finally:
        trainer.close()

    trainer = _train(tiny_data / "rec", tmp_path, pretrained=str(tmp_path / "other.keras"), output_weight_decay=0.001)
    try:
        stem = [layer.name for layer in other.layers if layer.weights][0]
        for mine, theirs in zip(trainer.basic_model.get_layer(stem).get_weights(), other.get_layer(stem).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
        assert trainer.basic_model.output_shape == (None, 16)  # the embedding layers stayed as built
        assert trainer.parts.optimizer_settings["decay_factors"]["norm_dense_w"] == pytest.approx(0.001 / 5e-4)
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="output_weight_decay must be >= 0"):
        _train(tiny_data / "rec", tmp_path, output_weight_decay=-1)


def test_mixup_cross_entropy_against_numpy():
    """FaceTask's loss with mixup: each sample's cross-entropy weighted between its label's and its partner's
    label's margin logits (the classifier here passes the cosines through)."""
    from keras_insightface.data.mixup import Mixup
    from keras_insightface.heads.margin import MarginHead
    from keras_insightface.losses.margin import CosFaceLoss
    from keras_insightface.training.task import FaceTask

    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (4, 5)).astype("float32")
    labels, partner = np.array([0, 3, 1, 4]), np.array([2, 0, 3, 1])
    weight = np.array([1.0, 0.6, 0.75, 0.5], "float32")
    basic = keras.Sequential([keras.Input((112, 112, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    task = FaceTask(basic, keras.layers.Identity(), head=keras.layers.Identity(),
                    margin_head=MarginHead(CosFaceLoss(scale=8, margin=0.3)), mixup=Mixup(0.4))
    outputs = {"embedding": cos, "mix_weight": weight, "partner": partner}
    got = float(task.compute_loss(y=labels, y_pred=outputs, training=True))

    def crossentropy(target):
        z = 8 * (cos - 0.3 * np.eye(5)[target])
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(4), target] - np.log(np.exp(z).sum(1)))

    expected = weight * crossentropy(labels) + (1 - weight) * crossentropy(labels[partner])
    np.testing.assert_allclose(got, expected.mean(), rtol=1e-5)
    assert float(task.accuracy_tracker.result()) == np.mean(cos.argmax(1) == labels)


def test_mixup_in_train_and_its_limits(tiny_data, tmp_path):
    from keras_insightface.losses.margin import CurricularFaceLoss

    trainer = _train(tiny_data / "rec", tmp_path, mixup_alpha=0.4)
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
        assert np.isfinite(history["loss"][0]) and "mixup" in [layer.name for layer in trainer.parts.train_model.layers]
        with pytest.raises(ValueError, match="mixup_alpha needs a margin loss without running statistics"):
            trainer.train([{"loss": CurricularFaceLoss(), "epoch": 1}])
    finally:
        trainer.close()


def test_learning_rate_follows_one_curve_across_stages_and_optimizer_changes(tiny_data, tmp_path):
    """The seed's cosine with restarts over 3 stages (the 2nd names another optimizer, the 3rd trains other
    variables): the LR of every batch is the one curve at the global batch count."""
    import keras

    from keras_insightface.training.schedules import CosineRestarts

    class RecordLR(keras.callbacks.Callback):
        values = []

        def on_train_batch_begin(self, batch, logs=None):
            self.model.jax_state_sync()  # the optimizer's step count lives in the JAX trainer's state mid-epoch
            self.values.append(float(np.asarray(self.model.optimizer.learning_rate)))

    trainer = _train(tiny_data / "rec", tmp_path, lr_base=0.1, lr_min=0.001, lr_decay=0.5, lr_decay_steps=2,
                     lr_warmup_steps=1)
    try:
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1},
                       {"loss": ArcfaceLoss(scale=32), "epoch": 1, "optimizer": "sgdw"},
                       {"loss": ArcfaceLoss(scale=32), "epoch": 1, "lossTopK": 2}], callbacks=[RecordLR()])
    finally:
        trainer.close()
    from keras_insightface.training.optimizers import SGDW

    # sub-centers = other variables: a fresh optimizer of the kind the run was using, at the current position
    assert isinstance(trainer.parts.optimizer, SGDW) and trainer.parts.optimizer.iterations.value < 2 * trainer.loader.steps_per_epoch
    steps = trainer.loader.steps_per_epoch
    curve = CosineRestarts(0.1, 2 * steps, cooldown_steps=steps, m_mul=0.5, lr_min=0.001, warmup_steps=steps,
                           warmup_start=0.001)  # the seed's: warmup from lr_min
    expected = [float(curve(step)) for step in range(3 * steps)]
    np.testing.assert_allclose(RecordLR.values, expected, rtol=1e-5, atol=1e-8)
    assert len(set(np.round(RecordLR.values, 6))) > 6  # warmup, cosine, cooldown at lr_min: a real curve


@pytest.mark.parametrize("kwargs, kind", [
    (dict(lr_decay_steps=[3, 6]), "StepDecay"),
    (dict(lr_schedule="exponential", lr_decay=0.5), "ExponentialDecay"),
    (dict(lr_schedule="polynomial"), "PolynomialDecay"),
    (dict(lr_decay_steps=2), "CosineRestarts"),
    (dict(lr_schedule="cosine"), "WarmupCosine"),
    (dict(), "ExponentialDecay"),  # the seed's default
])
def test_train_builds_each_schedule_at_the_current_epoch(tiny_data, tmp_path, kwargs, kind):
    trainer = _train(tiny_data / "rec", tmp_path, lr_warmup_steps=1, **kwargs)
    try:
        schedule = trainer.parts.schedule_at(2, total_epochs=10)  # e.g. a later stage with a new optimizer
    finally:
        trainer.close()
    steps = trainer.loader.steps_per_epoch
    assert type(schedule).__name__ == kind and schedule.step_offset == 2 * steps and schedule.warmup_steps == steps
    if kind == "StepDecay":
        assert schedule.boundaries == [3 * steps, 6 * steps]
        assert float(schedule(4 * steps - 2 * steps)) == pytest.approx(0.1 * 0.05)  # epoch 4: one boundary passed
    if kind == "ExponentialDecay":
        # step steps + 1 of an optimizer started at epoch 2 is in epoch 3, two epochs after the 1-epoch warmup:
        # the seed's lr_base * exp(-lr_decay * 2)
        decay = kwargs.get("lr_decay", 0.05)
        assert float(schedule(steps + 1)) == pytest.approx(0.1 * math.exp(-2 * decay), rel=1e-5)
    with pytest.raises(ValueError, match="lr_schedule 'step' needs lr_decay_steps as a list of epochs"):
        _train(tiny_data / "rec", tmp_path, lr_schedule="step")

