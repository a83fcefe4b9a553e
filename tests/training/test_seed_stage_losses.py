"""The seed README's scheduler examples in ``Train``: each seed loss name trains its stage kind for an epoch.

One ``Train`` runs the softmax, triplet, center and AcrTrip stages in turn (as one seed schedule would), a second
one the distill stage on stored teacher embeddings. The loss values of the mapped losses are checked against the
seed in tests/heads_losses/test_seed_stage_loss_values.py; here each stage's training model is checked to hold
the mapped parts, and its loss to be finite.
"""

import keras
import numpy as np
import pytest

from keras_insightface import Train, losses
from keras_insightface.data.insightface_rec import InsightfaceRec
from keras_insightface.losses.distillation import DistillCosineLoss
from keras_insightface.losses.margin import SoftmaxLoss
from keras_insightface.losses.triplet import AcrTripTerm


def _train(data, tmp_path, **kwargs):
    options = dict(basic_model="r18_tiny", emb_shape=16, batch_size=16, num_workers=0, verbose=0, optimizer="sgd",
                   lr_base=0.1, append_history=False, checkpoint_dir=str(tmp_path))
    options.update(kwargs)
    return Train(str(data), "seed_stage_losses.keras", **options)


def _epoch_losses(trainer, stage):
    """Train ``stage`` for its epoch; returns the history's entries of that epoch."""
    history = trainer.train([stage])
    return {name: values[-1] for name, values in history.items() if isinstance(values, list) and values}


def test_seed_scheduler_examples_train_softmax_triplet_center_and_acr_trip_stages(tiny_data, tmp_path):
    trainer = _train(tiny_data / "rec", tmp_path, image_per_class=4)
    center = losses.CenterLoss(num_classes=8, emb_shape=16)
    try:
        logs = _epoch_losses(trainer, {"loss": losses.scale_softmax, "epoch": 1})
        task = trainer.parts.train_model
        assert type(task.margin_head.loss) is SoftmaxLoss and isinstance(task.head, keras.layers.Dense)
        assert np.isfinite(logs["loss"]) and not trainer.run.grouped

        cce = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
        logs = _epoch_losses(trainer, {"loss": cce, "centerloss": 0.01, "epoch": 1})
        task = trainer.parts.train_model
        assert task.margin_head.loss.label_smoothing == 0.1 and task.cross_entropy.label_smoothing == 0.1
        assert task.weights_by_term == {"crossentropy": 1.0, "centerloss": 0.01}
        assert np.isfinite([logs["loss"], logs["centerloss_loss"]]).all()
        extra_centers = trainer.parts.center_loss

        for loss, kind in ((losses.BatchAllTripletLoss(0.3), "batch_all"),
                           (losses.BatchHardTripletLoss(0.25), "batch_hard_cosine")):
            logs = _epoch_losses(trainer, {"loss": loss, "epoch": 1})
            task = trainer.parts.train_model
            assert task.embedding_loss is loss and loss.kind == kind and task.margin_head is None
            assert task.weights_by_term == {"embedding": 1.0} and trainer.run.grouped  # identity-group batches
            assert np.isfinite(logs["loss"]) and logs["loss"] > 0

        logs = _epoch_losses(trainer, {"loss": center, "triplet": 10, "alpha": 0.25, "epoch": 1})
        task = trainer.parts.train_model
        assert task.center_loss is center and trainer.parts.center_loss is center and center is not extra_centers
        assert task.weights_by_term == {"centerloss": 1.0, "embedding": 10.0} and task.embedding_loss.alpha == 0.25
        assert np.isfinite([logs["loss"], logs["centerloss_loss"], logs["embedding_loss"]]).all()
        assert np.abs(np.asarray(center.centers)).sum(axis=1).min() > 0  # every class's center moved

        trainer.parts.head.build(trainer.basic_model.output_shape)  # no margin stage before: built here to compare
        kernel = np.array(trainer.parts.head.kernel)
        accuracies = len(trainer.history.get("accuracy", []))
        logs = _epoch_losses(trainer, {"loss": losses.AcrTripLoss(margin=0.5, scale=16.0), "epoch": 1})
        task = trainer.parts.train_model
        assert isinstance(task.embedding_loss, AcrTripTerm) and task.embedding_loss.head is trainer.parts.head
        assert task.margin_head is None and task.weights_by_term == {"embedding": 1.0}
        assert np.isfinite(logs["loss"]) and logs["loss"] > 0
        # the classifier's accuracy logged, as the seed's AcrTripLoss stage
        assert len(trainer.history["accuracy"]) == accuracies + 1 and 0 <= logs["accuracy"] <= 1
        assert not np.allclose(np.array(trainer.parts.head.kernel), kernel)  # the cosine classifier trains
        with pytest.raises(ValueError, match=r"Stage 0: CenterLoss\(num_classes=10, emb_shape=None\) does not fit"):
            trainer.train([{"loss": losses.CenterLoss(num_classes=10), "epoch": 1}])
    finally:
        trainer.close()
    assert len(trainer.history["loss"]) == 6 and np.isfinite(trainer.history["loss"]).all()


def test_distiller_loss_cosine_trains_a_distill_stage(tiny_data, tmp_path):
    rec = InsightfaceRec(tiny_data / "rec")
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(8, 8))[rec.labels] + 0.1 * rng.normal(size=(len(rec), 8))
    npz = tmp_path / "distilled.npz"
    np.savez(npz, rec_path=str(tiny_data / "rec" / "train.rec"), image_classes=rec.labels,
             embeddings=teacher.astype("float32"))
    trainer = _train(npz, tmp_path, allow_outside_paths=True)
    try:
        logs = _epoch_losses(trainer, {"loss": losses.distiller_loss_cosine, "epoch": 1})
    finally:
        trainer.close()
    task = trainer.parts.train_model
    assert task.margin_head is None and isinstance(task.distance, DistillCosineLoss)
    assert task.weights_by_term == {"distill": 1.0} and task.projection is not None  # student 16-d -> teacher 8-d
    assert np.isfinite(logs["loss"]) and 0 < logs["loss"] < 2  # 1 - cos
