"""``Train`` means what the seed's ``train.Train`` meant: its positional order and defaults, ``eval_freq`` in
batches above 1, a stage's optimizer object driven by the run's schedule, the history appended across runs of one
``save_path``, a stage without ``loss`` reusing the previous one, ``image_per_class`` filtering (identity groups
only for triplet stages), ``random_status=-1``, ``bottleneckOnly`` from epoch 0 without evaluation, and
``tt.lr_scheduler`` / ``tt.reset_dataset``."""

import json
import math

import keras
import numpy as np
import pytest

from keras_insightface import ArcfaceLoss, Train
from keras_insightface.data.augment import FaceAugment
from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.errors import DataError
from keras_insightface.myCallbacks import CosineLrSchedulerEpoch
from tests.conftest import class_images


def _seed_train(data, tmp_path, *args, **kwargs):
    options = dict(basic_model="r18_tiny", batch_size=16, emb_shape=16, num_workers=0, checkpoint_dir=str(tmp_path),
                   verbose=0)
    options.update(kwargs)
    return Train(str(data), "seed.keras", *args, **options)


def _history(tmp_path):
    return json.loads((tmp_path / "seed_hist.json").read_text())


def test_seed_positional_arguments_defaults_and_refused_features(tiny_data, tmp_path):
    bin_path = str(tiny_data / "tiny_val.bin")
    # Train(data_path, save_path, eval_paths, basic_model, model, compile, output_weight_decay, custom_objects,
    #       pretrained, batch_size, lr_base, ...) as the seed orders them
    trainer = Train(str(tiny_data / "rec"), "seed.keras", [bin_path], "r18_tiny", None, False, 0, {}, None, 16, 0.01,
                    emb_shape=16, num_workers=0, checkpoint_dir=str(tmp_path), verbose=0)
    trainer.close()
    config = trainer.config
    assert (config.model.basic_model, config.head.output_weight_decay, config.data.batch_size) == ("r18_tiny", 0, 16)
    assert config.optimizer.lr_base == 0.01 and config.run.eval_paths == [bin_path]
    # the seed's defaults: Adam, lr_min 1e-6, exponential decay 0.05 per epoch, a history that appends
    assert (config.optimizer.optimizer, config.optimizer.lr_min, config.optimizer.schedule_kind) == (
        "adam", 1e-6, "exponential")
    assert config.run.append_history and config.augment.random_status == 0
    for kwargs, message in [
        (dict(partial_fc_split=2), "partial_fc_sample_rate=0.5"),
        (dict(sam_rho=-0.05), "sam_rho: must be >= 0"),
        (dict(samples_per_mining=-1), "samples_per_mining: must be >= 0"),
        (dict(vpl_start_iters=8000, partial_fc_sample_rate=0.5), "VPL is not available with Partial FC"),
    ]:
        with pytest.raises(ValueError, match=message):
            _seed_train(tiny_data / "rec", tmp_path, **kwargs)
    with pytest.raises(DataError, match="no model to continue; give basic_model"):
        _seed_train(tiny_data / "rec", tmp_path, basic_model=None)


def test_optimizer_object_follows_the_schedule_and_history_appends(tiny_data, tmp_path):
    """The seed sets the rate of any optimizer a stage brings: SGD(0.5) trains at the run's exponential rate
    (lr_base 0.1, lr_decay 0.05 per epoch) and keeps its momentum. A second Train of the same save_path appends
    its epochs to the history; a stage without loss trains with the one before it."""
    trainer = _seed_train(tiny_data / "rec", tmp_path, lr_base=0.1)
    try:
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1,
                        "optimizer": keras.optimizers.SGD(learning_rate=0.5, momentum=0.8)}])
        optimizer = trainer.parts.optimizer
        assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.8
        assert float(optimizer.learning_rate) == pytest.approx(0.1 * math.exp(-0.05), rel=1e-5)  # epoch 1's rate
        trainer.train({"epoch": 1})  # no loss: the previous one
        assert trainer.parts.margin_head.loss.scale == 16
    finally:
        trainer.close()
    first = _history(tmp_path)
    assert len(first["loss"]) == 2 and first["lr"][0] == pytest.approx(0.1 * math.exp(-0.05), rel=1e-5)
    again = _seed_train(tiny_data / "rec", tmp_path, lr_base=0.1)
    try:
        with pytest.raises(ValueError, match="needs a 'loss'"):
            again.train([{"epoch": 1}])  # nothing to reuse yet
        again.train([{"loss": ArcfaceLoss(scale=32), "epoch": 1}])
    finally:
        again.close()
    appended = _history(tmp_path)
    assert len(appended["loss"]) == 3 and appended["loss"][:2] == first["loss"]


def test_eval_freq_bottleneck_only_and_lr_scheduler(tiny_data, tmp_path):
    """eval_freq=2 evaluates every 2 batches besides epoch ends; a bottleneckOnly stage trains epochs 0.. of the
    schedule without evaluation and does not advance the epoch count; tt.lr_scheduler replaces the schedule."""
    trainer = _seed_train(tiny_data / "rec", tmp_path, [str(tiny_data / "tiny_val.bin")], eval_freq=2,
                          lr_base=0.1, optimizer="sgd")
    trainer.lr_scheduler = CosineLrSchedulerEpoch(0.2, first_restart_step=2, lr_min=0.001)
    try:
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1, "bottleneckOnly": True},
                       {"loss": ArcfaceLoss(scale=16), "epoch": 1}])
        assert trainer.initial_epoch == 1  # only the second stage counts
        callback = trainer.eval_callbacks[0]
        assert [(epoch, batch) for epoch, batch, _ in callback.step_results] == [(1, 2)]  # mid-epoch, stage 2 only
        trainer.reset_dataset()  # the seed's: read the data again from its start
        trainer.train({"epoch": 1})
    finally:
        trainer.close()
    history = _history(tmp_path)
    assert len(history["loss"]) == 3 and len(history["tiny_val"]) == 2  # no evaluation in the bottleneck stage
    # per-epoch cosine: epoch 1 of a 2-epoch cycle is half way down (recorded at the end of epoch 0 = step 4)
    assert history["lr"][0] == pytest.approx(0.001 + 0.199 * 0.5, rel=1e-5)
    with pytest.raises(TypeError, match="lr_scheduler must be a scheduler"):
        trainer.lr_scheduler = 0.1


def test_image_per_class_filters_and_groups_only_triplet_stages(tmp_path):
    samples = []
    for label, count in enumerate([8, 8, 8, 8, 2, 3]):
        samples += [(jpeg, label) for jpeg, _ in class_images(1, count, seed=label)]
    write_insightface_rec(tmp_path / "rec", samples, 6)
    trainer = _seed_train(tmp_path / "rec", tmp_path, image_per_class=4, batch_size=8, lr_base=0.1)
    try:
        assert trainer.num_classes == 4  # identities with fewer than 4 images left out, as the seed
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
        assert not trainer.run.grouped  # an ArcFace stage only filters
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1, "triplet": 1.0}])
        assert trainer.run.grouped
        _, labels, *_ = next(iter(trainer.loader.dataset))
        groups = np.asarray(labels).reshape(-1, 4)
        assert (groups == groups[:, :1]).all()  # whole identity groups of image_per_class
    finally:
        trainer.close()


def test_random_status_minus_one_is_no_augmentation():
    images = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3) % 255
    none = FaceAugment(random_status=-1, seed=0)
    np.testing.assert_array_equal(np.asarray(none(images, training=True)), images)
    flips = FaceAugment(random_status=0, seed=0)
    outputs = [np.asarray(flips(images, training=True)) for _ in range(8)]
    assert any(not np.array_equal(out, images) for out in outputs)  # level 0 flips


def test_basic_model_as_the_seeds_layer_index_of_a_full_model(tiny_data, tmp_path):
    from keras_insightface import buildin_models
    from keras_insightface.heads.norm_dense import NormDense

    basic = buildin_models("r18_tiny", emb_shape=16)
    full = keras.Model(basic.inputs, NormDense(8, name="arcface")(basic.output))
    trainer = _seed_train(tiny_data / "rec", tmp_path, basic_model=-2, model=full)
    trainer.close()
    assert trainer.basic_model.output_shape == (None, 16) and trainer.basic_model.layers[-1].name == "embedding"
    np.testing.assert_array_equal(np.asarray(trainer.parts.head.kernel), np.asarray(full.get_layer("arcface").kernel))
    with pytest.raises(DataError, match="basic_model=-1000 is not a layer index"):
        _seed_train(tiny_data / "rec", tmp_path, basic_model=-1000, model=full)
    with pytest.raises(ValueError, match="a layer index names the embedding inside model="):
        _seed_train(tiny_data / "rec", tmp_path, basic_model=-2)


def test_restore_from_break_point_with_the_full_model_saved_every_epoch(tiny_data, tmp_path):
    """The seed's "Restore training from break point": every epoch writes the basic model + classifier as
    ``<checkpoint_dir>/<save_path>`` (a Keras 3 HDF5 file for an ``.h5`` name); ``Train(model=that file)``
    continues its weights and classifier, and ``train(schedule, initial_epoch=N)`` keeps N epochs of history."""
    from keras_insightface.saving import load_model

    trainer = Train(str(tiny_data / "rec"), "seed.h5", basic_model="r18_tiny", batch_size=16, emb_shape=16,
                    num_workers=0, checkpoint_dir=str(tmp_path), verbose=0, lr_base=0.1)
    try:
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 2}])
    finally:
        trainer.close()
    saved = tmp_path / "seed.h5"
    full = load_model(saved)
    images = np.asarray(next(iter(trainer.loader.dataset))[0][:4], "float32")
    np.testing.assert_allclose(np.asarray(full(images)), np.asarray(trainer.parts.head(trainer.basic_model(images))),
                               atol=1e-5)
    for options in (dict(model=str(saved)), dict(basic_model=None)):  # both None: checkpoints/<save_path>, as the seed
        again = Train(str(tiny_data / "rec"), "seed.h5", **{"basic_model": None, **options}, batch_size=16,
                      num_workers=0, checkpoint_dir=str(tmp_path), verbose=0, lr_base=0.1)
        try:
            np.testing.assert_allclose(np.asarray(again.basic_model(images)), np.asarray(trainer.basic_model(images)),
                                       atol=1e-5)
            np.testing.assert_array_equal(np.asarray(again.parts.head.kernel), np.asarray(trainer.parts.head.kernel))
        finally:
            again.close()
    again = Train(str(tiny_data / "rec"), "seed.h5", model=str(saved), batch_size=16, num_workers=0,
                  checkpoint_dir=str(tmp_path), verbose=0, lr_base=0.1)
    try:
        again.train([{"loss": ArcfaceLoss(scale=32), "epoch": 1}], initial_epoch=1)
    finally:
        again.close()
    history = _history(tmp_path)
    assert len(history["loss"]) == 2  # the first epoch kept, the second trained again from the saved model


def test_softmax_stage_classifiers_dense_without_bias_or_euclidean(tiny_data, tmp_path):
    """Softmax stages train the seed's Dense without bias, or EuclideanDense (softmax_classifier='euclidean'),
    which the saved full model keeps and a Train(model=...) continues."""
    from keras_insightface.heads.euclidean_dense import EuclideanDense
    from keras_insightface.losses.margin import SoftmaxLoss

    trainer = _seed_train(tiny_data / "rec", tmp_path, save_full_model=False)
    try:
        trainer.train([{"loss": SoftmaxLoss(), "epoch": 1}])
        assert trainer.parts.dense_head.weights == [trainer.parts.dense_head.kernel]  # no bias, as the seed's
    finally:
        trainer.close()
    assert not (tmp_path / "seed.keras").exists()  # save_full_model=False writes no full model
    trainer = _seed_train(tiny_data / "rec", tmp_path, softmax_classifier="euclidean", lr_base=0.01)
    try:
        trainer.train([{"loss": SoftmaxLoss(), "epoch": 1}])
        head = trainer.parts.dense_head
        assert isinstance(head, EuclideanDense)
    finally:
        trainer.close()
    again = _seed_train(tiny_data / "rec", tmp_path, basic_model=None, model=str(tmp_path / "seed.keras"))
    again.close()
    assert isinstance(again.parts.dense_head, EuclideanDense)
    np.testing.assert_array_equal(np.asarray(again.parts.dense_head.kernel), np.asarray(head.kernel))


def test_vpl_start_iters_trains_margin_stages_with_norm_dense_vpl(tiny_data, tmp_path):
    """The seed's vpl_start_iters: margin stages train NormDenseVPL; below 50 it counts epochs (x steps per
    epoch); the memory holds the last normalised embedding of each class seen and the step it was seen at; a norm
    margin (MagFace) gets the -||x|| column on the same memory; the saved full model holds the plain kernel."""
    from keras_insightface import MagFaceLoss
    from keras_insightface.heads.vpl import NormDenseVPL

    trainer = _seed_train(tiny_data / "rec", tmp_path, lr_base=0.1, vpl_start_iters=1, vpl_allowed_delta=3)
    try:
        steps = trainer.loader.steps_per_epoch
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 2}])
        head = trainer.parts.head
        assert isinstance(head, NormDenseVPL) and (head.start_iters, head.allowed_delta) == (steps, 3)
        assert int(head.iters) == 2 * steps
        seen = np.asarray(head.memory_iters) > 0
        assert seen.sum() == trainer.num_classes  # every class of the data seen in two epochs
        norms = np.linalg.norm(np.asarray(head.memory)[seen], axis=-1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)  # normalised features remembered
        kernel = np.asarray(head.kernel)
        trainer.train([{"loss": MagFaceLoss(), "epoch": 1}])
        assert isinstance(trainer.parts.head, NormDenseVPL) and trainer.parts.head.append_norm
        assert int(trainer.parts.head.iters) == 3 * steps  # memory and step count carried to the new head
        assert not np.array_equal(np.asarray(trainer.parts.head.kernel), kernel)
    finally:
        trainer.close()
    from keras_insightface.saving import load_model

    full = load_model(tmp_path / "seed.keras")
    np.testing.assert_array_equal(np.asarray(full.layers[-1].kernel), np.asarray(trainer.parts.head.kernel))


def test_distill_kl_divergence_stage_trains_the_classifier_toward_a_teacher(tiny_data, tmp_path):
    """The seed's DistillKLDivergenceLoss stage: the run's cosine classifier's scores move toward those of a
    teacher whose output is the classes (its value is Keras's KLDivergence of the two scaled softmaxes, as the
    seed computed it); a teacher of embeddings is refused with the fix."""
    from keras_insightface import buildin_models, losses
    from keras_insightface.heads.norm_dense import NormDense

    kl = losses.DistillKLDivergenceLoss()
    rng = np.random.default_rng(0)
    teacher_cos, student_cos = rng.uniform(-1, 1, (2, 4, 6)).astype("float32")
    expected = keras.losses.KLDivergence()(keras.ops.softmax(teacher_cos * 10), keras.ops.softmax(student_cos * 10))
    assert float(kl(teacher_cos, student_cos)) == pytest.approx(float(expected), rel=1e-4)

    trainer = _seed_train(tiny_data / "rec", tmp_path, random_status=-1, lr_base=0.01, save_full_model=False)
    classes = trainer.num_classes
    trainer.close()
    basic = buildin_models("r18_tiny", emb_shape=16)
    teacher = keras.Model(basic.inputs[0], NormDense(classes, name="norm_dense")(basic.output))
    trainer = _seed_train(tiny_data / "rec", tmp_path, random_status=-1, lr_base=0.01, save_full_model=False,
                          teacher_model_interf=teacher)
    try:
        images = np.asarray(next(iter(trainer.loader.dataset))[0], "float32")

        def distance():
            return float(kl(teacher(images), trainer.parts.head(trainer.basic_model(images))))

        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])  # a class-score teacher: no embedding term
        assert "distill" not in trainer.parts.train_model.weights_by_term
        before = distance()
        trainer.train([{"loss": losses.DistillKLDivergenceLoss(), "epoch": 3}])
        assert distance() < 0.7 * before
    finally:
        trainer.close()
    student = _seed_train(tiny_data / "rec", tmp_path, teacher_model_interf=basic, save_full_model=False)
    try:
        with pytest.raises(ValueError, match="teacher with 16 outputs"):
            student.train([{"loss": losses.DistillKLDivergenceLoss(), "epoch": 1}])
    finally:
        student.close()
