"""One run configuration: every ``Train`` option is a config-file key and a flag of the same meaning, a flag next
to a config file wins (and says so), values are checked with errors naming key and value, the resolved config
holds the defaults and reads back to the same run."""

import inspect

import pytest

from keras_insightface.cli import make_parser
from keras_insightface.cli.train import run_config
from keras_insightface.errors import DataError
from keras_insightface.training.config import TrainConfig, apply_overrides, options, schedule
from keras_insightface.training.train import Train

# a valid, non-default value of every option, as a flag would type it (and as TOML holds it)
SAMPLES = {
    "data_path": ("faces/rec", "faces/rec"), "batch_size": ("32", 32), "num_workers": ("3", 3),
    "image_per_class": ("4", 4), "strict_data": ("true", True), "jpeg_quality_level": ("2.5", 2.5),
    "basic_model": ("r100", "r100"), "emb_shape": ("256", 256), "output_layer": ("E", "E"),
    "model": ("full.keras", "full.keras"), "pretrained": ("pre.h5", "pre.h5"),
    "mixed_precision": ("mixed_bfloat16", "mixed_bfloat16"), "partial_fc_sample_rate": ("0.1", 0.1),
    "output_weight_decay": ("0", 0.0), "teacher_model_interf": ("teacher.keras", "teacher.keras"),
    "random_status": ("3", 3), "random_cutout_mask_area": ("0.3", 0.3),
    "augment": ("{hue_delta = 0.1}", {"hue_delta": 0.1}), "mixup_alpha": ("0.4", 0.4), "lr_base": ("0.2", 0.2),
    "lr_min": ("0.001", 0.001), "lr_decay": ("0.5", 0.5), "lr_decay_steps": ("10,20", [10, 20]),
    "lr_schedule": ("step", "step"), "lr_warmup_steps": ("2", 2), "weight_decay": ("0.0001", 0.0001),
    "momentum": ("0.95", 0.95), "sam_rho": ("0.05", 0.05), "save_path": ("r100.keras", "r100.keras"),
    "checkpoint_dir": ("out", "out"),
    "eval_paths": (["lfw.bin", "agedb_30.bin"], ["lfw.bin", "agedb_30.bin"]), "eval_freq": ("2", 2),
    "eval_every_steps": ("500", 500), "checkpoint_every_steps": ("1000", 1000), "tensorboard_dir": ("tb", "tb"),
    "distribution": ("none", None), "model_parallel": ("4", 4), "seed": ("7", 7), "verbose": ("0", 0),
    "keep_checkpoints": ("3", 3), "overwrite": ("true", True), "allow_outside_paths": ("true", True),
    "optimizer": ("sgdw", "sgdw"), "lr_t_mul": ("3", 3.0), "steps_per_execution": ("2", 2),
    "append_history": ("true", True), "model_preset": ("arcface_torch", "arcface_torch"),
    "weights": ("imagenet", "imagenet"), "save_full_model": ("false", False),
    "softmax_classifier": ("euclidean", "euclidean"), "vpl_start_iters": ("-1", -1),
    "vpl_allowed_delta": ("100", 100), "samples_per_mining": ("0", 0.0),
}


def _parse(argv):
    return make_parser().parse_args(argv)


def test_every_train_option_is_a_flag_and_a_config_key():
    from keras_insightface.training.seed_options import SEED_POSITIONAL

    parameters = [name for name in inspect.signature(Train.__init__).parameters if name != "self"]
    seed_only = set(SEED_POSITIONAL) - set(options())  # the seed's keywords mapped to ours (seed_options.py)
    assert parameters[3:3 + len(SEED_POSITIONAL)] == list(SEED_POSITIONAL)  # the seed's positional order
    assert set(parameters) - seed_only == set(options()) == set(SAMPLES)  # one list of options, each with a sample here
    argv = ["train"]
    for name, (typed, _) in SAMPLES.items():
        flag = f"--{name.replace('_', '-')}" if name != "model" else "--full-model"  # --model is basic_model's
        argv += [flag, *typed] if isinstance(typed, list) else [flag, typed]
    from_flags = run_config(_parse(argv)).train_kwargs()
    from_file = TrainConfig.from_dict({"train": {name: value for name, (_, value) in SAMPLES.items()},
                                       "stage": [{"loss": "ArcfaceLoss", "epoch": 1}]}).train_kwargs()
    expected = {name: value for name, (_, value) in SAMPLES.items()}
    assert from_flags == from_file == expected
    assert Train.__init__.__signature__.parameters["batch_size"].default == 128  # help() shows the defaults


def test_the_seed_flags_still_work():
    args = _parse(["train", "--data", "faces", "--model", "r34", "--eval", "lfw.bin", "--warmup", "1",
                   "--checkpoint-every", "50", "--scales", "16,64", "--epochs", "2,3", "--loss", "cosface"])
    config = run_config(args)
    assert (config.data.data_path, config.model.basic_model, config.run.eval_paths) == ("faces", "r34", ["lfw.bin"])
    assert config.optimizer.lr_warmup_steps == 1 and config.run.checkpoint_every_steps == 50
    assert config.stages == [{"loss": "CosFaceLoss", "loss_config": {"scale": 16.0}, "epoch": 2},
                             {"loss": "CosFaceLoss", "loss_config": {"scale": 64.0}, "epoch": 3}]
    assert config.run.save_path == "r34_cosface_faces.keras"  # default_run_name: model, loss, data
    with pytest.raises(DataError, match="train needs --data"):
        run_config(_parse(["train", "--batch-size", "4"]))


def test_a_flag_next_to_a_config_file_wins_and_says_so(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[train]\ndata_path = "faces"\nsave_path = "r50.keras"\nbatch_size = 8\nlr_base = 0.05\n'
                    '[[stage]]\nloss = "ArcfaceLoss"\nloss_config = {scale = 16}\nepoch = 2\n')
    config = run_config(_parse(["train", str(path), "--batch-size", "4", "--set", "stage.0.epoch=3"]))
    assert config.data.batch_size == 4 and config.optimizer.lr_base == 0.05 and config.stages[0]["epoch"] == 3
    assert ">>>> batch_size = 4 from the command line (the config file has 8)" in capsys.readouterr().out
    config = run_config(_parse(["train", str(path), "--epochs", "1,1", "--scales", "16,32"]))
    assert [stage["epoch"] for stage in config.stages] == [1, 1]  # the stage flags replace the file's stages
    assert "stages from the command line (--scales, --epochs)" in capsys.readouterr().out


def test_values_are_checked_with_the_key_and_the_value():
    base = dict(data_path="faces", save_path="r50.keras")
    for options_, message in [
        (dict(batch_size="big"), "batch_size: expected an integer, received 'big'"),
        (dict(batch_size=0), "batch_size: must be positive, received 0"),
        (dict(lr_decay_steps="a,b"), "lr_decay_steps: expected an epoch count or a list of epochs, received 'a,b'"),
        (dict(output_layer="GNAP"), "output_layer: expected one of GDC, E, GAP, F, received 'GNAP'"),
        (dict(lr_schedule="step"), "lr_schedule 'step' needs lr_decay_steps as a list of epochs, received 0"),
        (dict(partial_fc_sample_rate=0), r"partial_fc_sample_rate: must be in \(0, 1\], received 0"),
        (dict(strict_data="maybe"), "strict_data: expected true or false, received 'maybe'"),
        (dict(eval_paths=3), "eval_paths: expected a list of paths, received 3"),
        (dict(batch_sise=8), r"unknown options \['batch_sise'\]; the options are data_path, batch_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_kwargs(**base, **options_)
    with pytest.raises(ValueError, match="save_path: required"):
        TrainConfig.from_kwargs(data_path="faces")
    with pytest.raises(DataError, match="needs a \\[train\\] table and at least one \\[\\[stage\\]\\]"):
        TrainConfig.from_dict({"train": base}, "run.toml")
    with pytest.raises(ValueError, match=r"run.toml: \[\[stage\]\] Stage 1: unknown keys \['epochs'\]"):
        TrainConfig.from_dict({"train": base, "stage": [{"loss": "ArcfaceLoss", "epoch": 1}, {"epochs": 2}]},
                              "run.toml")
    with pytest.raises(ValueError, match=r"run.toml: \[\[stage\]\] Unknown margin loss|run.toml: \[\[stage\]\] .*Arcface"):
        TrainConfig.from_dict({"train": base, "stage": [{"loss": "Arcface", "epoch": 1}]}, "run.toml")
    with pytest.raises(ValueError, match="run.toml: \\[train\\] batch_size: expected an integer, received 1.5"):
        TrainConfig.from_dict({"train": {**base, "batch_size": 1.5}, "stage": [{"epoch": 1}]}, "run.toml")


def test_overrides_and_stage_typos_are_clear_errors():
    config = {"train": {"data_path": "faces", "save_path": "r50.keras"}, "stage": [{"loss": "ArcfaceLoss", "epoch": 1}]}
    with pytest.raises(ValueError, match=r"override 'stage.5.epoch=3': no such entry in the config .*stage.0.epoch=3"):
        apply_overrides(config, ["stage.5.epoch=3"])
    with pytest.raises(ValueError, match="override 'train.batch_size.x=3': no such entry"):
        apply_overrides(config, ["train.batch_size=8", "train.batch_size.x=3"])
    typo = apply_overrides(config, ["stage.0.loss_config={scal = 16}"])
    with pytest.raises(ValueError, match=r"run.toml: \[\[stage\]\] .*scal"):
        TrainConfig.from_dict(typo, "run.toml")


def test_the_resolved_config_has_every_default_and_reads_back(tmp_path):
    config = TrainConfig.from_kwargs(data_path="faces", save_path="r50.keras", lr_decay_steps=[3, 6],
                                     stages=[{"loss": "ArcfaceLoss", "loss_config": {"scale": 16}, "epoch": 5}])
    saved = config.to_dict()
    unset = {name for name, value in config.train_kwargs().items() if value is None}
    assert set(saved["train"]) == set(options()) - unset and saved["train"]["momentum"] == 0.9
    again = TrainConfig.from_dict(apply_overrides(saved, ["train.seed=3"]))
    assert again.train_kwargs() == {**config.train_kwargs(), "seed": 3} and again.stages == config.stages
    from keras_insightface.losses.margin import ArcfaceLoss

    as_object = TrainConfig.from_kwargs(data_path="f", save_path="r.keras", stages=[{"loss": ArcfaceLoss(scale=32),
                                                                                      "epoch": 1}])
    stage = as_object.to_dict()["stage"][0]
    assert stage["loss"] == "ArcfaceLoss" and stage["loss_config"]["scale"] == 32


def test_config_files_name_every_stage_loss_and_write_them_back():
    """A config file names any stage loss (triplet, center, AcrTrip, distillation, the seed's loss functions),
    case-insensitively; the resolved config writes each back under its class name and reads it back."""
    from keras_insightface.losses.distillation import DistillKLDivergenceLoss
    from keras_insightface.losses.seed_functions import scale_softmax
    from keras_insightface.losses.triplet import AcrTripLoss, BatchHardTripletLoss

    stages = [{"loss": "batchhardtripletloss", "loss_config": {"alpha": 0.3}, "epoch": 1},
              {"loss": "AcrTripLoss", "loss_config": {"scale": 32}, "epoch": 1},
              {"loss": "DistillKLDivergenceLoss", "epoch": 1}, {"loss": "scale_softmax", "epoch": 1}]
    config = TrainConfig.from_dict({"train": {"data_path": "faces", "save_path": "r.keras"}, "stage": stages}, "r.toml")
    losses = [stage["loss"] for stage in schedule(config.stages)]
    assert isinstance(losses[0], BatchHardTripletLoss) and losses[0].alpha == 0.3
    assert isinstance(losses[1], AcrTripLoss) and losses[1].arcface.scale == 32
    assert isinstance(losses[2], DistillKLDivergenceLoss) and losses[2].scale == 10 and losses[3] is scale_softmax
    written = TrainConfig.from_kwargs(data_path="faces", save_path="r.keras",
                                      stages=[{"loss": loss, "epoch": 1} for loss in losses]).to_dict()["stage"]
    assert [stage["loss"] for stage in written] == ["BatchHardTripletLoss", "AcrTripLoss", "DistillKLDivergenceLoss",
                                                   "scale_softmax"]
    again = TrainConfig.from_dict({"train": {"data_path": "faces", "save_path": "r.keras"}, "stage": written}, "r.toml")
    assert [type(stage["loss"]) for stage in schedule(again.stages)] == [type(loss) for loss in losses]
    with pytest.raises(ValueError, match=r"Stage 1: Unknown stage loss 'BatchHardTriplet' \(did you mean "
                                         r"'BatchHardTripletLoss'\?\)"):
        TrainConfig.from_dict({"train": {"data_path": "faces", "save_path": "r.keras"},
                               "stage": [stages[0], {"loss": "BatchHardTriplet", "epoch": 1}]}, "r.toml")
