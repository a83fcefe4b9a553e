"""hist_plot_split: one panel per metric and verification set, stage separators, overlaid runs."""

import json

import matplotlib

matplotlib.use("Agg")

from keras_insightface.plot import hist_plot_split  # noqa: E402


def test_panels_stages_and_best_annotation(tmp_path):
    run_a = {"lr": [0.1, 0.05, 0.01], "loss": [3.0, 2.0, 1.0], "accuracy": [0.2, 0.5, 0.8],
             "lfw": [0.9, 0.95, 0.93], "lfw_thresh": [0.3, 0.3, 0.3], "lfw_kfold": [0.9, 0.94, 0.93]}
    path = tmp_path / "a_hist.json"
    path.write_text(json.dumps(run_a))
    run_b = {**run_a, "agedb_30": [0.7, 0.8, 0.85]}
    fig = hist_plot_split([str(path), run_b], epochs=[1, 2], names=["s16", "s32"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "accuracy", "lr", "lfw", "agedb_30"]
    lfw = next(ax for ax in fig.axes if ax.get_title() == "lfw")
    assert [line.get_label() for line in lfw.get_lines() if not line.get_label().startswith("_")] == ["a", "run"]
    assert any(text.get_text() == "0.9500" for text in lfw.texts)  # best epoch annotated
    assert any(text.get_text() == "s32" for text in lfw.texts)
    separators = [line for line in lfw.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in separators] == [1.5]
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
