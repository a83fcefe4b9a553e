"""The plots read well, measured on the figures matplotlib's Agg renderer draws: every panel shown has a curve
(none is left empty), epochs are whole and 1-based, the learning rate is in scientific notation (log scale when
it spans decades), no two texts overlap, the IJB plots label FAR / FPIR at powers of ten; the first comparison
table is titled with a set the runs have."""

import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from keras_insightface.cli import main  # noqa: E402
from keras_insightface.errors import DataError  # noqa: E402
from keras_insightface.evaluation import ijb  # noqa: E402
from keras_insightface.plot import choose_accuracy, plot_runs  # noqa: E402

EVALS = ("lfw", "cfp_fp", "agedb_30")


def _history(epochs, evals=EVALS, lr=None, every=1, shift=0.0):
    """A history as the trainer writes it: per-epoch lr / loss / accuracy, each set every ``every``-th epoch."""
    t = np.arange(1, epochs + 1) / epochs
    history = {"lr": list(lr) if lr is not None else list(0.1 * (1 + np.cos(np.pi * (t - t[0]))) / 2 + 1e-5),
               "loss": list(20 * np.exp(-3 * t) + 2 + shift), "accuracy": list(0.9 * (1 - np.exp(-4 * t)))}
    for i, name in enumerate(evals):
        values = list(0.98 - 0.05 * i - 0.3 * np.exp(-4 * t[every - 1 :: every]) - shift / 50)
        history.update({name: values, f"{name}_thresh": [0.3] * len(values), f"{name}_kfold": values,
                        f"{name}_kfold_std": [0.01] * len(values)})
    return history


def _write(path, history):
    path.write_text(json.dumps({key: [float(v) for v in values] for key, values in history.items()}))
    return str(path)


def _in_view(axis, labels_and_locs):
    low, high = sorted(axis.get_view_interval())
    return [(label, loc) for label, loc in labels_and_locs if low - 1e-9 <= loc <= high + 1e-9 and label]


def _ticks(ax, which="x"):
    """``[(label text, position)]`` of the major ticks drawn inside the view."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    labels = [text.get_text() for text in axis.get_majorticklabels()]
    return _in_view(axis, list(zip(labels, axis.get_majorticklocs())))


def _texts(fig):
    """Every text drawn: tick labels, axis labels, titles, texts on the panels, legend entries."""
    texts = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_visible():
                ticks = list(zip(axis.get_majorticklabels(), axis.get_majorticklocs()))
                texts += [text for text, _ in _in_view(axis, [(t, loc) for t, loc in ticks if t.get_text()])]
                texts.append(axis.label)
        texts += [ax.title, *ax.texts]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    for legend in fig.legends:
        texts += legend.get_texts()
    return [text for text in texts if text.get_visible() and text.get_text()]


def _overlaps(fig):
    """Pairs of drawn texts whose boxes overlap by more than half a pixel."""
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    boxes = np.array([text.get_window_extent(renderer).extents for text in texts])
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    overlap = (np.minimum(x1, x1.T) - np.maximum(x0, x0.T) > 0.5) & (np.minimum(y1, y1.T) - np.maximum(y0, y0.T) > 0.5)
    i, j = np.nonzero(np.triu(overlap, 1))
    return [(texts[a].get_text(), texts[b].get_text()) for a, b in zip(i, j)]


def _check_readable(fig, epochs):
    """Every shown panel has a curve; x ticks are whole epochs within 1..epochs; no texts overlap or leave the
    figure."""
    fig.canvas.draw()
    assert all(ax.get_visible() for ax in fig.axes)  # plot_runs keeps only panels with curves
    for ax in fig.axes:
        curves = [line for line in ax.get_lines() if line.get_gid() != "stage-separator" and len(line.get_xdata())]
        assert curves, f"panel {ax.get_gid()} has nothing drawn"
        if ax.get_gid() == "lr-twin":
            continue
        ticks = _ticks(ax)
        assert ticks, ax.get_gid()
        for label, loc in ticks:
            assert float(loc).is_integer() and 1 <= loc <= epochs and label == str(int(loc)), (ax.get_gid(), ticks)
    assert not _overlaps(fig)
    width, height = fig.canvas.get_width_height()
    for text in _texts(fig):
        box = text.get_window_extent(fig.canvas.get_renderer())
        assert box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= width + 0.5 and box.y1 <= height + 0.5, text.get_text()


def _panel(fig, gid):
    return next(ax for ax in fig.axes if ax.get_gid() == gid)


def test_one_run_of_three_stages_two_runs_and_no_verification_sets(tmp_path):
    a = _write(tmp_path / "r50_hist.json", _history(12))
    b = _write(tmp_path / "r100_hist.json", _history(12, every=2, shift=1.0))
    stages = {"epochs": [2, 4, 6], "names": ["scale 16", "scale 32", "scale 64"]}

    one = plot_runs(a, **stages)
    _check_readable(one, 12)
    assert [ax.get_gid() for ax in one.axes] == ["loss", "accuracy", "lr", *(f"eval:{name}" for name in EVALS)]
    assert [ax.get_title() for ax in one.axes[:3]] == ["training loss", "training accuracy", "learning rate"]
    assert one.axes[3].get_title() == "lfw: verification accuracy"
    lfw = _panel(one, "eval:lfw")
    names = {text.get_text(): text.xy[0] for text in lfw.texts if text.get_gid() == "stage-name"}
    assert names == {"scale 16": 0.5, "scale 32": 2.5, "scale 64": 6.5}  # at the separators
    assert [line.get_xdata()[0] for line in lfw.get_lines() if line.get_gid() == "stage-separator"] == [2.5, 6.5]
    assert [text.get_text() for text in one.legends[0].get_texts()] == ["r50"]
    one.savefig(tmp_path / "one.png")

    two = plot_runs([a, b], **stages)
    _check_readable(two, 12)
    assert [text.get_text() for text in two.legends[0].get_texts()] == ["r50", "r100"]  # one legend of the runs
    (r100,) = [line for line in _panel(two, "eval:agedb_30").get_lines() if line.get_label() == "r100"]
    assert np.asarray(r100.get_xdata()).tolist() == [2, 4, 6, 8, 10, 12]  # evaluated every 2nd epoch
    values = [text.get_text() for text in _panel(two, "eval:lfw").texts if text.get_gid() == "best-value"]
    assert len(values) == 6  # each run's best of each stage
    two.savefig(tmp_path / "two.png")

    bare = plot_runs(_write(tmp_path / "bare_hist.json", _history(12, evals=())), **stages)
    _check_readable(bare, 12)
    assert [ax.get_gid() for ax in bare.axes] == ["loss", "accuracy", "lr"]  # no empty verification panels
    assert bare.axes[0].get_subplotspec().get_gridspec().get_geometry() == (1, 3)
    assert bare.get_size_inches()[1] < one.get_size_inches()[1] / 1.5  # one row of panels, not two
    bare.savefig(tmp_path / "bare.png")

    four = plot_runs(_write(tmp_path / "lfw_hist.json", _history(12, evals=("lfw",))), **stages)
    _check_readable(four, 12)
    assert four.axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 2)  # no empty cells


def test_one_epoch_run_has_one_whole_epoch_tick(tmp_path):
    fig = plot_runs(_write(tmp_path / "one_hist.json", _history(1)), epochs=[1], names=["scale 64"])
    _check_readable(fig, 1)
    for ax in fig.axes:
        assert [label for label, _ in _ticks(ax)] == ["1"]


def test_learning_rate_axis(tmp_path):
    decaying = _history(30, lr=np.geomspace(0.1, 1e-5, 30))
    fig = plot_runs(_write(tmp_path / "decay_hist.json", decaying))
    _check_readable(fig, 30)
    lr = _panel(fig, "lr")
    assert lr.get_yscale() == "log"  # 4 decades
    labels = [label for label, _ in _ticks(lr, "y")]
    assert labels == ["1.0e-05", "1.0e-04", "1.0e-03", "1.0e-02", "1.0e-01"]
    assert not [text for text in lr.texts if text.get_gid() == "best-value"]  # no "0.0000" best learning rate

    flat = plot_runs(_write(tmp_path / "flat_hist.json", _history(6, lr=[1e-4, 1e-4, 8e-5, 6e-5, 6e-5, 5e-5])))
    _check_readable(flat, 6)
    lr = _panel(flat, "lr")
    labels = [label for label, _ in _ticks(lr, "y")]
    assert lr.get_yscale() == "linear" and len(labels) >= 3
    assert all("e-" in label for label in labels) and len(set(labels)) == len(labels)
    assert np.allclose([float(label) for label in labels], [loc for _, loc in _ticks(lr, "y")], rtol=0.05)


def test_choose_titles_its_table_with_a_set_the_runs_have(tmp_path, capsys):
    both = [_write(tmp_path / f"{name}_hist.json", _history(6, evals=("lfw", "cfp_fp"), shift=shift))
            for name, shift in (("a", 0.0), ("b", 1.0))]
    tables = choose_accuracy(both).tables  # the default metric_key agedb_30 is in no run
    assert list(tables)[0] == "lfw max"
    out = capsys.readouterr().out
    assert ">>>> no run has agedb_30: ranking by lfw" in out and ">>>> lfw max:" in out and "agedb_30" not in out[40:]
    for path in both:
        lfw = json.loads(open(path).read())["lfw"]
        run = path.split("/")[-1].removesuffix("_hist.json")
        assert tables["lfw max"][run]["epoch"] == int(np.argmax(lfw)) + 1

    only_cfp = _write(tmp_path / "c_hist.json", _history(6, evals=("cfp_fp",)))
    tables = choose_accuracy([both[0], only_cfp], key_pick="lfw", verbose=False).tables
    assert list(tables)[0] == "cfp_fp max"  # lfw is in run a only: the set both runs have ranks them
    assert tables["cfp_fp max"]["c"]["epoch"] == 6

    assert main(["plot", *both, "-o", str(tmp_path / "runs.png"), "--choose"]) == 0
    out = capsys.readouterr().out
    assert ">>>> lfw max:" in out and "agedb_30 max" not in out
    assert "ranking by lfw, the first verification set every run has" in out

    only_lfw = _write(tmp_path / "d_hist.json", _history(6, evals=("lfw",)))
    with pytest.raises(DataError, match=r"no verification set is in every run .*c_hist.json: cfp_fp.*d_hist.json: lfw"):
        choose_accuracy([only_cfp, only_lfw])


def _captured(monkeypatch):
    """The figures the IJB plot functions write, in order."""
    figures = []

    def keep(fig, path, **kwargs):
        figures.append(fig)

    monkeypatch.setattr(ijb, "savefig_atomic", keep)
    return figures


def _powers_of_ten(ax):
    ticks = _ticks(ax)
    assert ax.get_xscale() == "log" and len(ticks) >= 3
    for label, loc in ticks:
        assert float(np.log10(loc)).is_integer() and "10^" in label, ticks


def test_ijb_roc_and_cmc_plots(monkeypatch, tmp_path):
    figures = _captured(monkeypatch)
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(300), np.zeros(30000)].astype(bool)
    rocs = {f"r{depth}:N0D1F1": ijb.Roc(np.where(labels, gap, 0.0) + rng.normal(0, 1, labels.size), labels)
            for depth, gap in ((50, 3.0), (100, 3.6))}
    assert ijb.plot_roc(rocs, tmp_path / "roc.png", title="ROC on IJBC") == str(tmp_path / "roc.png")
    (roc,) = figures[0].axes
    figures[0].canvas.draw()
    _powers_of_ten(roc)
    assert roc.get_xlim() == pytest.approx((1e-6, 1.0))
    assert "FAR" in roc.get_xlabel() and "TAR" in roc.get_ylabel() and roc.get_title() == "ROC on IJBC"
    legend = [text.get_text() for text in roc.get_legend().get_texts()]
    assert legend == [f"{name} (AUC {100 * r.auc():.2f}%)" for name, r in rocs.items()]
    assert roc.xaxis.get_gridlines()[0].get_visible() and roc.yaxis.get_gridlines()[0].get_visible()
    assert not _overlaps(figures[0])

    gallery = rng.normal(size=(40, 16))
    probes = np.r_[gallery[:30] + rng.normal(0, 0.8, (30, 16)), rng.normal(size=(10, 16))]
    subjects = np.arange(40)
    results = {"G1": ijb.identification(probes, np.r_[subjects[:30], 100 + np.arange(10)], gallery, subjects)}
    results["mean"] = ijb.combine_galleries(results.values())
    ijb.plot_cmc(results, tmp_path / "cmc.png", title="IJBC")
    cmc, tpir = figures[1].axes
    figures[1].canvas.draw()
    ranks = _ticks(cmc)
    assert all(float(loc).is_integer() and label == str(int(loc)) for label, loc in ranks)
    assert 1 <= min(loc for _, loc in ranks) and max(loc for _, loc in ranks) <= 20
    _powers_of_ten(tpir)
    assert "rank" in cmc.get_xlabel() and "FPIR" in tpir.get_xlabel() and "TPIR" in tpir.get_ylabel()
    assert [text.get_text() for text in tpir.get_legend().get_texts()] == ["G1", "mean"]
    assert not _overlaps(figures[1])


def test_nothing_to_draw_is_an_error_not_a_blank_figure(tmp_path):
    path = _write(tmp_path / "short_hist.json", _history(4))
    with pytest.raises(ValueError, match=r"plot_runs: nothing to draw: .*skip_epochs=4"):
        plot_runs(path, skip_epochs=4)
    fig = plot_runs(path, skip_epochs=3)
    _check_readable(fig, 4)
    assert np.asarray(fig.axes[0].get_lines()[0].get_xdata()).tolist() == [4]
