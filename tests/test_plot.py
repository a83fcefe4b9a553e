"""hist_plot_split's grid, stages, best marks and overlays; choose_accuracy's tables; the ``plot`` command."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")

from keras_insightface.cli import main  # noqa: E402
from keras_insightface.errors import DataError  # noqa: E402
from keras_insightface.plot import choose_accuracy, hist_plot_split  # noqa: E402

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


def _panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def _runs(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_grid_stages_and_per_stage_best(tmp_path):
    fig = hist_plot_split([_write(tmp_path / "a_hist.json", RUN_A)], epochs=[2, 4], names=["s16", "s32"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "accuracy", "lr", *EVALS]
    lfw = _panel(fig, "lfw")
    assert [line.get_label() for line in _runs(lfw)] == ["a"]
    separators = [line.get_xdata()[0] for line in lfw.get_lines() if line.get_gid() == "stage-separator"]
    assert separators == [2.5]  # between epoch 2 (end of stage 1) and epoch 3
    texts = [text.get_text() for text in lfw.texts]
    assert "0.9500" in texts and "0.9700" in texts  # stage maxima: epochs 1-2 and 3-6
    assert "s16" in texts and "s32" in texts
    loss_texts = [text.get_text() for text in _panel(fig, "loss").texts]
    assert "3.0000" in loss_texts and "1.0000" in loss_texts  # losses mark the stage minimum
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_overlay_axes_reuse_sparse_evals_and_skip_epochs(tmp_path):
    a, b = _write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)
    fig = hist_plot_split([a, b], epochs=[2, 4], customs=["lr", "centerloss_loss"])
    for title in ("loss", "accuracy", *EVALS):
        assert [line.get_label() for line in _runs(_panel(fig, title))] == ["a", "b"]
    assert len(_runs(_panel(fig, "lr, centerloss_loss"))) == 4
    b_lfw = _runs(_panel(fig, "lfw"))[1]
    assert b_lfw.get_xdata().tolist() == [2, 4, 6]  # evaluated every 2nd epoch
    assert len([line for line in _panel(fig, "lfw").get_lines() if line.get_gid() == "stage-separator"]) == 1

    again = hist_plot_split(a, axes=fig.axes, fig_label="a again")
    assert again is fig
    assert [line.get_label() for line in _runs(_panel(fig, "agedb_30"))] == ["a", "b", "a again"]
    assert len({line.get_color() for line in _runs(_panel(fig, "loss"))}) == 3

    skipped = hist_plot_split(a, epochs=[2, 4], names=["s16", "s32"], skip_epochs=3)
    lfw = _panel(skipped, "lfw")
    assert _runs(lfw)[0].get_xdata().tolist() == [4, 5, 6]
    assert not [line for line in lfw.get_lines() if line.get_gid() == "stage-separator"]
    assert "s16" not in [text.get_text() for text in lfw.texts]


def test_choose_accuracy_tables(tmp_path, capsys):
    paths = [_write(tmp_path / "a_hist.json", RUN_A), _write(tmp_path / "b_hist.json", RUN_B)]
    tables = choose_accuracy(paths)
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
    assert choose_accuracy(paths, key_pick="lfw", verbose=False)["lfw max"]["b"]["epoch"] == 4


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
