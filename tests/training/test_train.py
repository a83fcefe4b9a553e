"""Train end to end on a tiny RecordIO dataset: stages, history JSON, best-model saving, NaN stop, schedule."""

import glob
import json
import re

import keras
import numpy as np
import pytest

from keras_insightface import ArcfaceLoss, CosFaceLoss, Train
from keras_insightface.data.augment import FaceAugment
from keras_insightface.errors import DataError
from keras_insightface.training.optimizers import L2SGD
from keras_insightface.training.schedules import CosineRestarts, WarmupCosine


def _train(tiny_data, tmp_path, **kwargs):
    options = dict(
        eval_paths=[str(tiny_data / "tiny_val.bin")], basic_model="r18_tiny", batch_size=16, emb_shape=16,
        lr_base=0.1, lr_min=1e-4, lr_warmup_steps=1, num_workers=0, checkpoint_dir=str(tmp_path), verbose=0,
        optimizer="sgd", lr_schedule="cosine", append_history=False,
    )
    options.update(kwargs)
    return Train(str(tiny_data / "rec"), "tiny.keras", **options)


class BatchEndThreads(keras.callbacks.Callback):
    """Records which threads run batch-end hooks: Keras moves them off the training loop (so it never waits for a
    step's results) only when every callback's batch-end hook is marked ``async_safe``."""

    def __init__(self):
        super().__init__()
        self.async_safe, self.threads = True, set()

    def on_train_batch_end(self, batch, logs=None):
        import threading

        self.threads.add(threading.current_thread() is threading.main_thread())


def test_two_stage_training_writes_history_and_best_model(tiny_data, tmp_path):
    trainer = _train(tiny_data, tmp_path)
    threads = BatchEndThreads()
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 2}, {"loss": CosFaceLoss(scale=32), "epoch": 2}],
                                callbacks=[threads])
    finally:
        trainer.close()
    assert threads.threads == {False}  # the built-in callbacks keep the step asynchronous
    with open(tmp_path / "tiny_hist.json") as f:
        saved = json.load(f)
    assert saved == history
    for key in ("lr", "loss", "accuracy", "tiny_val", "tiny_val_thresh", "tiny_val_kfold"):
        assert len(saved[key]) == 4, key  # epochs accumulate across the two stages
    assert saved["loss"][-1] < saved["loss"][0]
    assert saved["skipped_images"] == [1, 1, 1, 1]
    assert saved["accuracy"][-1] > 0.5  # 8 well-separated classes (chance 0.125), 16 steps
    assert saved["lr"][0] > saved["lr"][-1] == pytest.approx(1e-4, rel=1e-3)  # cosine ends at lr_min
    best = glob.glob(str(tmp_path / "tiny_basic_tiny_val_epoch_*.keras"))
    assert len(best) == 1 and best[0] == trainer.best_model_path  # older best files are removed
    epoch = int(best[0].split("_epoch_")[1].split("_")[0])
    assert float(best[0].rsplit("_", 1)[1][:-6]) == pytest.approx(max(saved["tiny_val"]), abs=1e-6)
    assert saved["tiny_val"][epoch - 1] == max(saved["tiny_val"])
    loaded = keras.saving.load_model(best[0])
    assert loaded.output_shape == (None, 16)


class RunCalls(keras.callbacks.Callback):
    """Records on_train_begin, each epoch end and on_train_end."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("begin")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(epoch)

    def on_train_end(self, logs=None):
        self.calls.append("end")


def test_batch_level_evaluation_latest_model_per_stage_and_tensorboard(tiny_data, tmp_path):
    import shutil

    second = shutil.copy(tiny_data / "tiny_val.bin", tmp_path / "other_val.bin")
    trainer = _train(tiny_data, tmp_path, eval_every_steps=1, tensorboard_dir=str(tmp_path / "tb"),
                     eval_paths=[str(tiny_data / "tiny_val.bin"), second])
    csv, calls = tmp_path / "log.csv", RunCalls()
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}, {"loss": ArcfaceLoss(scale=32), "epoch": 1}],
                                callbacks=[keras.callbacks.CSVLogger(str(csv)), calls])
    finally:
        trainer.close()
    # user callbacks see one run across the stages: a CSV row per epoch of every stage, one begin and end
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("epoch,") and [row.split(",")[0] for row in rows[1:]] == ["0", "1"]
    assert calls.calls == ["begin", 0, 1, "end"]
    steps = trainer.eval_callbacks[0].step_results
    assert [(epoch, batch) for epoch, batch, _ in steps] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    # evaluated with the weights of that moment (stale weights would repeat the epoch's first result)
    thresholds = [result["threshold"] for _, _, result in steps[:3]] + [history["tiny_val_thresh"][0]]
    assert len(set(np.round(thresholds, 6))) == 4
    for stage in (1, 2):
        assert keras.saving.load_model(tmp_path / f"tiny_basic_stage_{stage}_latest.keras").output_shape == (None, 16)
    assert glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))
    for name in ("tiny_val", "other_val"):  # a best basic model per eval set
        assert len(glob.glob(str(tmp_path / f"tiny_basic_{name}_epoch_*.keras"))) == 1
    assert trainer.best_model_path == glob.glob(str(tmp_path / "tiny_basic_tiny_val_epoch_*.keras"))[0]


def test_nan_loss_stops_without_saving(tiny_data, tmp_path, capsys):
    trainer = _train(tiny_data, tmp_path, eval_paths=[], lr_base=1e38)  # the run's rate drives any optimizer
    try:
        history = trainer.train({"loss": ArcfaceLoss(scale=16), "epoch": 3, "optimizer": keras.optimizers.SGD()})
    finally:
        trainer.close()
    assert history == {}
    assert not glob.glob(str(tmp_path / "*.keras")) and trainer.best_model_path is None
    assert "Loss is NaN or Inf at epoch 1, batch 4: training stops" in capsys.readouterr().out
    assert trainer.stop_reason == "Loss is NaN or Inf"
    from keras_insightface.cli.train import EXIT_DIVERGED, EXIT_INTERRUPTED, exit_code

    assert exit_code(trainer.stop_reason) == EXIT_DIVERGED == 3 and exit_code("SIGTERM") == EXIT_INTERRUPTED == 4
    assert exit_code(None) == 0


def test_injected_nan_names_the_step_and_the_last_good_checkpoint(tiny_data, tmp_path, capsys):
    """A NaN injected into the images in epoch 2: the run stops there, the epoch-1 checkpoint stays the latest."""

    class PoisonEpochTwo(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

        def call(self, images, training=False):
            x = keras.ops.cast(images, "float32")
            self.calls.assign_add(1.0)
            poison = keras.ops.where(self.calls > 4.5, float("nan"), 0.0)  # batches 5.. = epoch 2
            return x + poison

    trainer = _train(tiny_data, tmp_path, eval_paths=[], augment=PoisonEpochTwo())
    try:
        history = trainer.train({"loss": ArcfaceLoss(scale=16), "epoch": 3})
    finally:
        trainer.close()
    out = capsys.readouterr().out
    assert "Loss is NaN or Inf at epoch 2, batch 4: training stops" in out
    assert f"Last good checkpoint: {tmp_path / 'tiny_state'} (end of epoch 1)" in out
    assert len(history["loss"]) == 1  # epoch 1 only: the NaN epoch is not recorded
    from keras_insightface.training.checkpoint import load_meta

    assert load_meta(str(tmp_path / "tiny_state"))["epoch"] == 1


def test_collapsed_float16_loss_scale_stops_the_run(capsys):
    from keras_insightface.training.callbacks import LossScaleCollapse
    from keras_insightface.training.run_state import RunState

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**15)
    optimizer.build(model.trainable_variables)
    state = RunState()
    collapse = LossScaleCollapse(optimizer, state)
    collapse.set_model(model)
    collapse.on_epoch_end(0)
    assert not state.stopped  # a healthy scale
    optimizer.dynamic_scale.assign(2.0**-3)  # halved 18 times: every step overflowed
    collapse.on_epoch_end(1)
    assert state.stopped and model.stop_training
    assert "float16 loss scale collapsed to 0.125" in capsys.readouterr().out


def test_bad_arguments_and_mixed_precision(tiny_data, tmp_path):
    with pytest.raises(DataError, match="missing.bin: eval .bin file does not exist"):
        _train(tiny_data, tmp_path, eval_paths=[str(tmp_path / "missing.bin")])
    with pytest.raises(ValueError, match="mixed_precision: expected one of float32, mixed_bfloat16, mixed_float16, "
                                         "received 'fp8'"):
        _train(tiny_data, tmp_path, mixed_precision="fp8")
    trainer = _train(tiny_data, tmp_path, eval_paths=[], mixed_precision="mixed_bfloat16", random_status=3,
                     random_cutout_mask_area=0.3)
    assert trainer.parts.augment.random_status == 3 and trainer.parts.augment.random_cutout_mask_area == 0.3
    custom = FaceAugment(auto_augment_policy="face", hue_delta=0.02)
    assert _train(tiny_data, tmp_path, eval_paths=[], augment=custom).parts.augment is custom
    assert trainer.basic_model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert trainer.basic_model.output.dtype == "float32" and trainer.parts.head.compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    try:
        with pytest.raises(ValueError, match="Stage 0 needs a positive 'epoch'"):
            trainer.train([{"loss": ArcfaceLoss()}])
    finally:
        trainer.close()


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(0.1, total_steps=110, warmup_steps=10, lr_min=0.001)
    values = np.array([float(schedule(step)) for step in range(0, 111)])
    np.testing.assert_allclose(values[:11], np.linspace(0, 0.1, 11), atol=1e-7)
    assert values[60] == pytest.approx(0.001 + 0.5 * 0.099)  # half way through the cosine
    assert values[110] == pytest.approx(0.001)
    assert np.all(np.diff(values[10:]) <= 1e-9)
    shifted = WarmupCosine(0.1, total_steps=110, warmup_steps=10, lr_min=0.001, step_offset=60)
    assert float(shifted(0)) == pytest.approx(values[60])


def test_l2_sgd_is_coupled_weight_decay():
    var = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = L2SGD(learning_rate=0.1, momentum=0.9, l2=0.01)
    grads = [np.array([0.5, 0.5], "float32")] * 2
    w, m = np.array([1.0, -2.0]), np.zeros(2)
    for g in grads:
        optimizer.apply_gradients([(g, var)])
        m = 0.9 * m - 0.1 * (g + 0.01 * w)
        w = w + m
    np.testing.assert_allclose(np.asarray(var), w, rtol=1e-6)


def test_cosine_restarts_follow_the_seed():
    steps_per_epoch = 3
    schedule = CosineRestarts(0.1, first_steps=16 * steps_per_epoch, cooldown_steps=steps_per_epoch, m_mul=0.5,
                              lr_min=1e-5)
    lr = np.array([float(schedule(s)) for s in range(0, 120 * steps_per_epoch)])
    restarts = [s // steps_per_epoch for s in range(1, len(lr)) if lr[s] > lr[s - 1] + 1e-6]
    assert restarts == [17, 50, 115]
    # Keras's CosineDecayRestarts, as the seed uses it: peaks lr_min + (lr_base - lr_min) * m_mul**i
    assert lr[17 * steps_per_epoch] == pytest.approx(1e-5 + 0.5 * (0.1 - 1e-5))
    assert lr[50 * steps_per_epoch] == pytest.approx(1e-5 + 0.25 * (0.1 - 1e-5))
    assert np.all(lr[16 * steps_per_epoch : 17 * steps_per_epoch] == pytest.approx(1e-5))  # cooldown epoch
    halfway = 8 * steps_per_epoch
    assert lr[halfway] == pytest.approx(1e-5 + 0.5 * (0.1 - 1e-5), rel=1e-5)
    warm = CosineRestarts(0.1, first_steps=10, warmup_steps=5)
    assert [round(float(warm(s)), 3) for s in (0, 2, 5)] == [0.0, 0.04, 0.1]


def test_stage_extras_centerloss_triplet_and_running_statistics_carry_over(tiny_data, tmp_path):
    from keras_insightface.losses.margin import CurricularFaceLoss, MagFaceLoss

    trainer = _train(tiny_data, tmp_path, eval_paths=[], image_per_class=4)
    try:
        history = trainer.train([
            {"loss": CurricularFaceLoss(scale=16), "epoch": 1, "centerloss": 0.1, "triplet": 1, "alpha": 0.3},
        ])
        t_after_stage_1 = float(trainer.parts.margin_head.state_variables["t"])
        history = trainer.train([{"loss": CurricularFaceLoss(scale=16), "epoch": 1}])
        t_after_stage_2 = float(trainer.parts.margin_head.state_variables["t"])
        history = trainer.train([{"loss": MagFaceLoss(scale=16), "epoch": 1, "triplet": 1, "tripletKind": "batch_all"}])
        with pytest.raises(ValueError, match="offline"):
            trainer.train([{"loss": MagFaceLoss(scale=16), "epoch": 1, "triplet": 1, "tripletKind": "offline"}])
    finally:
        trainer.close()
    assert set(history) >= {"centerloss_loss", "embedding_loss", "accuracy", "loss"}
    assert len(history["loss"]) == 3 and len(history["centerloss_loss"]) == 1  # extras only where asked for
    assert len(history["embedding_loss"]) == 2
    assert all(np.isfinite(history["loss"]))
    steps = trainer.loader.steps_per_epoch
    # t is an EMA (alpha 0.01) of the target cosine starting at 0: it keeps growing across stages
    assert 0 < t_after_stage_1 < t_after_stage_2 and steps >= 1
    assert np.abs(np.asarray(trainer.parts.center_loss.centers)).sum() > 0
    assert trainer.parts.head.append_norm  # MagFace reads the embedding norm: the head appended the norm column


def test_partial_fc_training(tiny_data, tmp_path):
    trainer = _train(tiny_data, tmp_path, eval_paths=[], partial_fc_sample_rate=0.5, batch_size=4)
    try:
        assert not trainer.parts.head.built  # built with the first stage
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
        before = np.asarray(trainer.parts.head.kernel).copy()
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])
    finally:
        trainer.close()
    assert trainer.parts.head.num_sample == 4 and len(history["accuracy"]) == 2, history.keys()
    assert np.isfinite(history["loss"]).all(), history
    moved = np.abs(np.asarray(trainer.parts.head.kernel) - before).max(axis=0) > 0
    assert 0 < moved.sum() <= trainer.num_classes  # the sampled classes' columns were trained
    with pytest.raises(ValueError, match="fewer than the batch size"):
        _train(tiny_data, tmp_path, eval_paths=[], partial_fc_sample_rate=0.25, batch_size=8, overwrite=True).train(
            [{"loss": ArcfaceLoss(scale=16), "epoch": 1}]
        )


def test_plain_softmax_stage_uses_a_dense_classifier(tiny_data, tmp_path):
    from keras_insightface.training.optimizers import SGDW

    trainer = _train(tiny_data, tmp_path, eval_paths=[])
    try:
        history = trainer.train([{"loss": "softmax", "epoch": 2}, {"loss": ArcfaceLoss(scale=16), "epoch": 1,
                                                                   "optimizer": "sgdw"}])
    finally:
        trainer.close()
    assert isinstance(trainer.parts.optimizer, SGDW) and trainer.parts.optimizer.lr_base == 0.1
    assert trainer.parts.optimizer.weight_decay == pytest.approx(5e-4 * 0.1)  # L2SGD's decay at lr_base, decoupled
    assert isinstance(trainer.parts.dense_head, keras.layers.Dense) and not trainer.parts.dense_head.use_bias  # the seed's
    assert trainer.parts.head.name == "norm_dense" and trainer.parts.head.built  # the margin stage still had its cosine head
    assert len(history["loss"]) == 3 and history["loss"][1] < history["loss"][0]


def test_config_and_learning_rate_errors_are_clear(tiny_data, tmp_path, capsys):
    from keras_insightface.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(f'[train]\ndata_path = "{tiny_data / "rec"}"\nsave_path = "x.keras"\nbatch_sise = 8\n'
                   '[[stage]]\nloss = "ArcfaceLoss"\nepoch = 1\n')
    assert main(["train", str(bad)]) == 2
    assert "bad.toml: [train] unknown options ['batch_sise']" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "config file does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lr_min=0.5, lr_base=0.1"):
        _train(tiny_data, tmp_path, lr_min=0.5)


def test_a_single_class_dataset_is_an_error(tmp_path):
    from tests.conftest import class_images

    for index, (image, label) in enumerate(class_images(1, 4)):
        (tmp_path / "faces" / str(label)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "faces" / str(label) / f"{index}.jpg").write_bytes(image)
    with pytest.raises(DataError, match="faces: 1 class; face recognition training needs at least 2 identities"):
        Train(str(tmp_path / "faces"), "one.keras", checkpoint_dir=str(tmp_path), num_workers=0, verbose=0)


def test_every_problem_of_the_files_is_reported_at_once(tmp_path):
    """A missing dataset, a pack of genuine pairs only and a misspelt backbone fail together when Train is made,
    before anything is opened or built, and the pack's line says how to make a usable one."""
    from keras_insightface.data.binpack import write_bin
    from tests.conftest import class_images

    images = [image for image, _ in class_images(2, 12, seed=3)]
    write_bin(tmp_path / "genuine.bin", images, [True] * 12)
    with pytest.raises(DataError) as raised:
        Train(str(tmp_path / "no_such_data"), "r.keras", eval_paths=[str(tmp_path / "genuine.bin")],
              basic_model="r5O", checkpoint_dir=str(tmp_path), num_workers=0, verbose=0)
    lines = str(raised.value).splitlines()  # every problem, one line each, in one message
    assert lines[0] == "3 problems, nothing was started:"
    assert re.search(r"no_such_data: dataset path does not exist", lines[1])
    assert re.search(r"genuine.bin: 12 pairs \(12 genuine\); .*convert make-bin", lines[2])
    assert re.search(r"basic_model: Unknown backbone 'r5O' \(did you mean 'r50'", lines[3])


def test_the_progress_display_keeps_the_step_asynchronous(tiny_data, tmp_path, capsys):
    """With progress shown (verbose=1) every batch-end hook still runs off the training loop: no step waits for its
    results to be read back for the display; the plain progress lines still come in order."""
    threads = BatchEndThreads()
    trainer = _train(tiny_data, tmp_path, eval_paths=[], verbose=1)
    try:
        trainer.train([{"loss": ArcfaceLoss(), "epoch": 2}], callbacks=[threads])
    finally:
        trainer.close()
    assert threads.threads == {False}
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" (")[0] for line in lines if "4/4" in line] == ["epoch 1: 4/4", "epoch 2: 4/4"]
