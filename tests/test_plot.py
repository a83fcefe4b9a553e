"""hist_plot_split's panels, stages, best marks, the seed's keywords and ``(axes, pre_item)``; plot_runs' overlays;
choose_accuracy's tables and the seed's keywords; the ``plot`` command. How the figures read (no empty panel,
whole epochs, no overlapping text, the learning-rate axis) is checked in test_plot_review.py."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from keras_insightface.cli import main  # noqa: E402
from keras_insightface.errors import DataError  # noqa: E402
import numpy as np  # noqa: E402

from keras_insightface.plot import choose_accuracy, hist_plot_split, plot_runs  # noqa: E402

EVALS = ("lfw", "cfp_fp", "agedb_30")


def _history(loss, evals, lr=None, every=1):
    """A trainer-style history: per-epoch lr/loss/accuracy, eval lists every ``every``-th epoch."""
    n = len(loss)
    history = {"lr": lr or [0.1] * n, "loss": loss, "accuracy": [0.1 * (i + 1) for i in range(n)]}
    for name, values in evals.items():
        assert len(values) == n // every
        history.update({name: values, name + "_thresh": [0.3] * len(values), name + "_kfold": values})
        history[name + "_kfold_std"] = [0.01] * len(values)
    history["centerloss_loss"] = [5.0 - i for i in range(n)]
    return history


def _write(path, history):
    path.write_text(json.dumps(history))
    return str(path)


RUN_A = _history(
    [4.0, 3.0, 2.5, 2.0, 1.5, 1.0],
    {"lfw": [0.90, 0.95, 0.93, 0.96, 0.97, 0.965], "cfp_fp": [0.80, 0.82, 0.81, 0.85, 0.86, 0.87],
     "agedb_30": [0.70, 0.78, 0.75, 0.80, 0.84, 0.83]},
)
RUN_B = _history(
    [5.0, 4.0, 3.0, 2.0, 1.8, 1.6],
    {"lfw": [0.92, 0.97, 0.96], "cfp_fp": [0.84, 0.83, 0.88], "agedb_30": [0.79, 0.76, 0.82]},
    every=2,
)


def _panel(fig_or_axes, gid):
    """The panel named ``gid`` (``loss``, ``accuracy``, ``lr``, ``customs``, ``eval:<set>``, ``evals``)."""
    return next(ax for ax in getattr(fig_or_axes, "axes", fig_or_axes) if ax.get_gid() == gid)


def _shown(fig_or_axes):
    return [ax.get_gid() for ax in getattr(fig_or_axes, "axes", fig_or_axes) if ax.get_visible()]


def _runs(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_grid_stages_and_per_stage_best(tmp_path):
    fig = hist_plot_split([_write(tmp_path / "a_hist.json", RUN_A)], epochs=[2, 4], names=["s16", "s32"])
    assert _shown(fig) == ["loss", "accuracy", "lr", *(f"eval:{name}" for name in EVALS)]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["training loss", "training accuracy", "learning rate",
                      *(f"{name}: verification accuracy" for name in EVALS)]
    lfw = _panel(fig, "eval:lfw")
    assert [line.get_label() for line in _runs(lfw)] == ["a"]
    separators = [line.get_xdata()[0] for line in lfw.get_lines() if line.get_gid() == "stage-separator"]
    assert separators == [2.5]  # between epoch 2 (end of stage 1) and epoch 3
    texts = [text.get_text() for text in lfw.texts]
    assert "0.9500" in texts and "0.9700" in texts  # stage maxima: epochs 1-2 and 3-6
    assert "s16" in texts and "s32" in texts
    loss_texts = [text.get_text() for text in _panel(fig, "loss").texts]
    assert "3.0000" in loss_texts and "1.0000" in loss_texts  # losses mark the stage minimum
    assert len(_panel(fig, "lr").texts) == 2  # the two stage names; a learning rate has no best value
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_overlay_axes_reuse_sparse_evals_and_skip_epochs(tmp_path):
    a, b = _write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)
    fig = plot_runs([a, b], epochs=[2, 4], customs=["lr", "centerloss_loss"])
    for gid in ("loss", "accuracy", "lr", *(f"eval:{name}" for name in EVALS)):
        assert [line.get_label() for line in _runs(_panel(fig, gid))] == ["a", "b"]
    customs = _panel(fig, "customs")  # per-output losses apart from the learning rate
    assert [line.get_label() for line in _runs(customs)] == ["centerloss_loss - a", "centerloss_loss - b"]
    assert customs.get_title() == "centerloss_loss"
    b_lfw = _runs(_panel(fig, "eval:lfw"))[1]
    assert b_lfw.get_xdata().tolist() == [2, 4, 6]  # evaluated every 2nd epoch
    assert len([line for line in _panel(fig, "eval:lfw").get_lines() if line.get_gid() == "stage-separator"]) == 1

    again = plot_runs(a, axes=fig.axes, fig_label="a again")
    assert again is fig
    assert [line.get_label() for line in _runs(_panel(fig, "eval:agedb_30"))] == ["a", "b", "a again"]
    assert len({line.get_color() for line in _runs(_panel(fig, "loss"))}) == 3

    skipped = hist_plot_split(a, epochs=[2, 4], names=["s16", "s32"], skip_epochs=3)
    lfw = _panel(skipped, "eval:lfw")
    assert _runs(lfw)[0].get_xdata().tolist() == [4, 5, 6]
    assert not [line for line in lfw.get_lines() if line.get_gid() == "stage-separator"]
    assert "s16" not in [text.get_text() for text in lfw.texts]


def test_choose_accuracy_tables(tmp_path, capsys):
    paths = [_write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)]
    tables = choose_accuracy(paths).tables
    assert list(tables) == ["agedb_30 max", "all max", "sum max", "latest"]
    assert tables["agedb_30 max"]["a"] == {"lfw": 0.97, "cfp_fp": 0.86, "agedb_30": 0.84, "epoch": 5}
    assert tables["agedb_30 max"]["b"] == {"lfw": 0.96, "cfp_fp": 0.88, "agedb_30": 0.82, "epoch": 6}
    assert tables["all max"]["a"] == {"lfw": (0.97, 5), "cfp_fp": (0.87, 6), "agedb_30": (0.84, 5)}
    assert tables["all max"]["b"] == {"lfw": (0.97, 4), "cfp_fp": (0.88, 6), "agedb_30": (0.82, 6)}
    assert tables["sum max"]["a"]["epoch"] == 5 and tables["sum max"]["b"]["epoch"] == 6
    assert tables["latest"]["a"] == {"lfw": 0.965, "cfp_fp": 0.87, "agedb_30": 0.83, "epoch": 6}
    out = capsys.readouterr().out
    assert "| a | 0.9700 | 0.8600 | 0.8400 | 5 |" in out
    assert "| b | 0.9700, 4 | 0.8800, 6 | 0.8200, 6 |" in out
    assert choose_accuracy(paths, key_pick="lfw", verbose=False).tables["lfw max"]["b"]["epoch"] == 4


def test_cli_plot_and_bad_files(tmp_path, capsys):
    a, b = _write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)
    out = tmp_path / "runs.png"
    argv = ["plot", a, b, "--epochs", "2,4", "--names", "s16,s32", "--customs", "lr,centerloss_loss"]
    assert main([*argv, "-o", str(out), "--choose"]) == 0
    assert out.stat().st_size > 10_000
    assert ">>>> sum max:" in capsys.readouterr().out

    missing = tmp_path / "missing_hist.json"
    assert main(["plot", str(missing), "-o", str(out)]) == 2
    assert str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken_hist.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken_hist.json"):
        hist_plot_split(str(broken))
    with pytest.raises(DataError, match=r"bad_hist.json: 'lfw' is not a list"):
        hist_plot_split(_write(tmp_path / "bad_hist.json", {**RUN_A, "lfw": "high"}))
    with pytest.raises(DataError, match="no 'loss'"):
        choose_accuracy([_write(tmp_path / "empty_hist.json", {"lr": [0.1]})])


def _loss_line(axes, label):
    return next(line for line in axes[0].get_lines() if line.get_label() == label)


def test_seed_return_pair_and_two_histories_on_the_same_axes(tmp_path):
    a, b = _write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)
    axes, pre_item = hist_plot_split(a, [2, 4])
    assert isinstance(axes, np.ndarray) and axes.shape == (6,)
    # the seed's pre_item: the last value of every drawn key
    assert pre_item == pytest.approx({"loss": 1.0, "accuracy": 0.6, "lfw": 0.965, "cfp_fp": 0.87, "agedb_30": 0.83,
                                      "lr": 0.1})
    again, pre_b = hist_plot_split(b, [2, 4], axes=axes)
    assert list(again) == list(axes)  # the same Axes objects: the seed's way of comparing runs
    lfw = _panel(again, "eval:lfw")
    assert [line.get_label() for line in _runs(lfw)] == ["a", "b"]
    assert _runs(lfw)[0].get_color() != _runs(lfw)[1].get_color()
    assert pre_b["loss"] == 1.6 and pre_b["lfw"] == 0.96


def test_list_of_files_is_one_run_continued_and_init_epoch_joins_parts(tmp_path):
    first = {key: values[:3] for key, values in RUN_A.items() if len(values) == 6}
    second = {key: values[3:] for key, values in RUN_A.items() if len(values) == 6}
    p1, p2 = _write(tmp_path / "part1_hist.json", first), _write(tmp_path / "part2_hist.json", second)
    axes, _ = hist_plot_split([p1, p2])  # the seed concatenates the files: one 6-epoch run, labelled by the last
    np.testing.assert_array_equal(_loss_line(axes, "part2").get_xydata(), np.c_[np.arange(1, 7), RUN_A["loss"]])

    axes, pre_item = hist_plot_split(p1, fig_label="part 1")
    assert pre_item["loss"] == 2.5
    axes, _ = hist_plot_split(p2, axes=axes, init_epoch=3, pre_item=pre_item, fig_label="part 2")
    # the continued part is drawn from epoch 4 on, joined to part 1's last value at epoch 3
    np.testing.assert_array_equal(_loss_line(axes, "part 2").get_xydata(), [[3, 2.5], [4, 2.0], [5, 1.5], [6, 1.0]])
    lfw_part2 = _runs(_panel(axes, "eval:lfw"))[1]
    assert lfw_part2.get_xydata().tolist() == [[3, 0.93], [4, 0.96], [5, 0.97], [6, 0.965]]
    lines = _panel(axes, "eval:lfw").get_lines()
    separators = [line.get_xdata()[0] for line in lines if line.get_gid() == "stage-separator"]
    assert separators == [3.5]  # where the continued part starts


def test_every_seed_keyword(tmp_path):
    a = _write(tmp_path / "a_hist.json", RUN_A)
    out = tmp_path / "seed_order.png"
    # the seed's positional order: history, epochs, names, customs, save
    axes, _ = hist_plot_split(a, [2, 4], ["s16", "s32"], ["lfw", "lr"], str(out))
    assert out.stat().st_size > 10_000
    assert _shown(axes) == ["loss", "accuracy", "lr", "eval:lfw"]
    axes, pre_item = hist_plot_split(
        history=a, epochs=[2], names=["s16"], customs=["lfw", "agedb_30", "lr"], save=str(tmp_path / "k.svg"),
        axes=None, init_epoch=0, pre_item={}, fig_label="run a", eval_split=True, limit_loss_max=3.2, skip_epochs=0,
    )
    assert (tmp_path / "k.svg").stat().st_size > 1_000
    loss = _loss_line(axes, "run a")
    assert loss.get_xydata().tolist() == [[1, 3.2], [2, 3.0]]  # epochs=[2]: the first 2 epochs; 4.0 clipped
    assert "3.0000" in [text.get_text() for text in axes[0].texts]
    assert pre_item == pytest.approx({"loss": 3.0, "accuracy": 0.2, "lfw": 0.95, "agedb_30": 0.78, "lr": 0.1})

    hist_plot_split(a, save="")  # the seed's "": named after the history file
    assert (tmp_path / "a_hist.svg").stat().st_size > 1_000
    with pytest.raises(ValueError, match="give a path"):
        hist_plot_split(RUN_A, save="")

    # customs []: every verification set and no learning rate: its panel is left out, not drawn empty
    axes, pre_item = hist_plot_split(a, customs=[])
    assert _shown(axes) == ["loss", "accuracy", *(f"eval:{name}" for name in EVALS)]
    assert "lr" not in pre_item and not axes[2].get_lines() and not axes[2].get_visible()
    assert axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 3)


def test_eval_split_false_is_one_row(tmp_path):
    a, b = _write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)
    axes, _ = hist_plot_split(a, eval_split=False)
    assert len(axes) == 4 and axes[0].get_subplotspec().get_gridspec().get_geometry() == (1, 3)
    assert axes[2].get_title() == "verification accuracy: lfw, cfp_fp, agedb_30"
    styles = [line.get_linestyle() for line in _runs(axes[2])]
    assert [line.get_label() for line in _runs(axes[2])] == ["lfw - a", "cfp_fp - a", "agedb_30 - a"]
    assert len(set(styles)) == 3
    assert [line.get_label() for line in _runs(axes[3])] == ["lr - a"]  # the loss panel's second y axis
    axes, _ = hist_plot_split(b, axes=axes)  # 4 axes: stays one row
    assert len(axes) == 4 and len(_runs(axes[2])) == 6 and len(_runs(axes[3])) == 2


def test_choose_accuracy_seed_keywords(tmp_path, capsys):
    paths = [_write(tmp_path / "exp_a_hist.json", RUN_A), _write(tmp_path / "exp_b_hist.json", RUN_B)]
    metric_max, all_max, sum_max = choose_accuracy(paths, skip_name_len=4, sort_metric=True, metric_key="lfw",
                                                   key_picks=["lfw", "cfp_fp"])
    assert metric_max == {"a": {"lfw": 0.97, "cfp_fp": 0.86, "epoch": 5},
                          "b": {"lfw": 0.97, "cfp_fp": 0.83, "epoch": 4}}
    assert all_max["b"] == {"lfw": (0.97, 4), "cfp_fp": (0.88, 6)}
    assert sum_max["a"]["epoch"] == 6 and sum_max["b"]["epoch"] == 6
    out = capsys.readouterr().out
    assert ">>>> lfw max:" in out and "| run | lfw | cfp_fp | epoch |" in out and "agedb_30" not in out
    latest = out[out.index(">>>> latest:") :]
    assert latest.index("| b |") < latest.index("| a |")  # sort_metric: ascending lfw, b (0.96) before a (0.965)
    tables = choose_accuracy(paths, metric_key="IJBC", key_picks=["lfw", "agedb_30"], verbose=False)
    assert list(tables.tables) == ["agedb_30 max", "all max", "sum max", "latest"]  # the seed: last of key_picks
    assert tables.latest["exp_a"] == {"lfw": 0.965, "agedb_30": 0.83, "epoch": 6}
    with pytest.raises(ValueError, match="skip_name_len"):
        choose_accuracy(paths, skip_name_len=-1)
