"""Training curves and run comparison from history JSON files (the seed's ``hist_plot_split`` and
``choose_accuracy``, with its keywords and meaning), drawn with matplotlib.

A history file is what the trainer writes: ``{key: [one value per epoch]}`` with ``lr``, ``loss``,
``accuracy``, per-output losses and, per verification set ``<name>``, ``<name>``, ``<name>_thresh``,
``<name>_kfold`` and ``<name>_kfold_std``. Verification keys are recorded only on evaluated epochs: a list
``m`` long in a run of ``n`` epochs is read as every ``k = n // m``-th epoch (``eval_freq`` k).

``hist_plot_split`` draws one run, as the seed: a list of files is one run continued over several files, and
runs are compared by passing the returned axes back in. ``plot_runs`` does that for a list of runs and returns
the figure.

Example:
    >>> axes, pre_item = hist_plot_split("checkpoints/r50_hist.json", epochs=[5, 5, 40])      # doctest: +SKIP
    >>> axes, _ = hist_plot_split("checkpoints/r100_hist.json", epochs=[5, 5, 40], axes=axes)  # doctest: +SKIP
    >>> axes[0].figure.savefig("r50_r100.png")                                                 # doctest: +SKIP
    >>> tables = choose_accuracy(["checkpoints/r50_hist.json", "checkpoints/r100_hist.json"])  # doctest: +SKIP
"""

import collections
import json
import math
import os

import numpy as np

from keras_insightface.atomic import savefig_atomic
from keras_insightface.errors import DataError

EVALS_NAME = ("lfw", "cfp_fp", "agedb_30", "IJBB", "IJBC")  # the seed's verification set names
NOT_EVAL = ("lr", "loss", "accuracy", "img/s", "skipped_images")
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)))
SEPARATOR_GID = "stage-separator"


def load_history(path_or_dict):
    """``(history, label)``: the history JSON at ``path_or_dict`` (or a dict as is) checked to hold numeric lists.

    Example:
        >>> load_history({"loss": [2.0, 1.0], "lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})[1]
        'run'
    """
    if isinstance(path_or_dict, dict):
        history, name, label = path_or_dict, "history", "run"
    else:
        name = str(path_or_dict)
        try:
            with open(name) as f:
                history = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{name}: history file does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{name}: not a readable history JSON file ({error})") from None
        label = os.path.splitext(os.path.basename(name))[0].removesuffix("_hist")
    if not isinstance(history, dict):
        raise DataError(f"{name}: a history file holds an object of lists, found {type(history).__name__}")
    for key, values in history.items():
        try:
            ok = isinstance(values, list) and np.asarray(values, dtype="float64").ndim == 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{name}: {key!r} is not a list of numbers (one per epoch)")
    if not history.get("loss"):
        raise DataError(f"{name}: no 'loss' values; not a training history")
    return history, label


def _one_run(history):
    """``(history, label, last path or None)`` of one run: a path, a dict, or a list of them continued in order
    (the seed concatenates every key's values over the files)."""
    parts = [history] if isinstance(history, (str, os.PathLike, dict)) else list(history)
    if not parts:
        raise ValueError("hist_plot_split: no history given")
    loaded = [load_history(part) for part in parts]
    merged = {}
    for part, _ in loaded:
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    last = parts[-1]
    return merged, loaded[-1][1], None if isinstance(last, dict) else os.fspath(last)


def eval_keys(history):
    """The verification sets of ``history``: keys recorded with a ``<name>_thresh`` companion, in file order."""
    return [k for k in history if k not in NOT_EVAL and k + "_thresh" in history]


def _is_eval(history, key):
    return key not in NOT_EVAL and (key + "_thresh" in history or key in EVALS_NAME)


def key_epochs(history, key):
    """1-based epochs of ``history[key]``: every epoch, or every ``n // m``-th for a shorter eval list.

    Example:
        >>> key_epochs({"loss": [3, 2, 1, 0.5, 0.4, 0.3], "lfw": [0.9, 0.95, 0.97]}, "lfw").tolist()
        [2, 4, 6]
    """
    count, epochs = len(history[key]), len(history["loss"])
    step = max(epochs // count, 1) if count else 1
    return np.arange(1, count + 1) * step


def _stage_ranges(epochs, total):
    """``[(first, last)]`` 1-based epochs of each stage; one stage of every epoch when ``epochs`` is empty."""
    if not epochs:
        return [(1, total)]
    ends = np.cumsum(epochs)
    return [(int(end - count + 1), int(end)) for count, end in zip(epochs, ends)]


def _best_index(values, lower_is_better):
    """The last index of the best finite value (the seed marks the latest peak), or None when none is finite."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    masked = np.where(finite, -values if lower_is_better else values, -np.inf)
    return len(masked) - 1 - int(np.argmax(masked[::-1]))


def _plot_series(ax, series, color, label, linestyle, stages, lower_is_better, limit_max, previous):
    """One curve plus, per stage, a marker and the ``%.4f`` text of the stage's best value; y is clipped at
    ``limit_max`` (the text keeps the value); ``previous`` ``(x, y)`` joins the curve to an earlier part."""
    x, values = series
    shown = np.minimum(values, limit_max)
    line_x, line_y = (np.r_[previous[0], x], np.r_[min(previous[1], limit_max), shown]) if previous else (x, shown)
    ax.plot(line_x, line_y, color=color, label=label, linestyle=linestyle, marker="." if len(x) < 30 else None)
    for first, last in stages:
        inside = (x >= first) & (x <= last)
        best = _best_index(values[inside], lower_is_better)
        if best is None:
            continue
        bx, by = x[inside][best], values[inside][best]
        ax.scatter([bx], [min(by, limit_max)], color=color, marker="v", label="_best")
        ax.text(bx, min(by, limit_max), f"{by:.4f}", va="bottom", ha="right", fontsize=8, rotation=-30, color=color)


def _draw_stages(ax, stages, names, skip_epochs, color):
    """Dashed separators before each stage but the plot's first epoch, and the stage names, once per position."""
    drawn = {line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == SEPARATOR_GID}
    texts = {(t.get_position()[0], t.get_text()) for t in ax.texts}
    for index, (first, last) in enumerate(stages):
        if first > 1 and first - 0.5 > skip_epochs + 0.5 and first - 0.5 not in drawn:
            line = ax.axvline(first - 0.5, color=color, linestyle="--", linewidth=0.8, label="_stage")
            line.set_gid(SEPARATOR_GID)
        name = names[index] if names and index < len(names) else None
        start = max(first, skip_epochs + 1)
        if name and start <= last and (start, name) not in texts:
            ax.text(start, 0.03, name, transform=ax.get_xaxis_transform(), rotation=-90, va="bottom", fontsize=8)


def _new_axes(num_evals, eval_split):
    """The seed's grid, 3 wide: loss, accuracy, customs, then one panel per verification set (at least 2 x 3);
    without ``eval_split`` one row whose third panel holds every verification set."""
    from matplotlib.figure import Figure

    rows = 1 + max(1, math.ceil(num_evals / 3)) if eval_split else 1
    fig = Figure(figsize=(18, 5 * rows))  # not pyplot: no global figure registry, no GUI backend needed
    axes = list(fig.subplots(rows, 3, squeeze=False).ravel())
    for ax in axes[3 + num_evals :]:
        ax.set_visible(False)
    for ax, title in zip(axes, ["loss", "accuracy"]):
        ax.set_title(title)
    return axes


def _eval_axis(axes, key):
    """The panel titled ``key`` among ``axes[3:]``, else the first unused one, which gets that title."""
    for ax in axes[3:]:
        if ax.get_title() == key:
            return ax
    for ax in axes[3:]:
        if not ax.get_title():
            ax.set_title(key)
            ax.set_visible(True)
            return ax
    raise DataError(f"hist_plot_split: no free panel for verification set {key!r} in the given axes")


def _add_title(ax, key):
    titles = [title for title in ax.get_title().split(", ") if title]
    if key not in titles:
        ax.set_title(", ".join([*titles, key]))


def _split_customs(history, customs, eval_names):
    """``(verification sets, other keys)`` to draw: ``customs`` None is ``lr`` and every set found, ``[]``
    every set found, else exactly the listed keys; ``eval_names`` (ours) names the sets instead."""
    if customs is None:
        customs = ["lr", *eval_keys(history)]
    elif not customs:
        customs = [k for k in history if _is_eval(history, k)]
    if isinstance(customs, str):
        customs = [customs]
    if eval_names is not None:
        return list(eval_names), [k for k in customs if not _is_eval(history, k) and k not in eval_names]
    return [k for k in customs if _is_eval(history, k)], [k for k in customs if not _is_eval(history, k)]


class HistPlot(collections.namedtuple("HistPlot", ["axes", "pre_item"])):
    """``hist_plot_split``'s result: the seed's ``(axes, pre_item)`` pair, plus its ``figure`` and ``savefig``."""

    @property
    def figure(self):
        return self.axes[0].figure

    def savefig(self, *args, **kwargs):
        return self.figure.savefig(*args, **kwargs)


def hist_plot_split(
    history,
    epochs=None,
    names=None,
    customs=None,
    save=None,
    axes=None,
    init_epoch=0,
    pre_item=None,
    fig_label=None,
    eval_split=True,
    limit_loss_max=1e9,
    skip_epochs=0,
    *,
    eval_names=None,
):
    """Plot one run's history on the seed's grid; returns ``HistPlot(axes, pre_item)``, the seed's pair.

    Args:
        history: a history file, a dict, or a list of files continuing one run (values concatenated, as the seed).
        epochs: epochs per stage: dashed separators between stages, each stage's best value (lowest for losses)
            marked and written; only the first ``sum(epochs)`` epochs are drawn. None: all epochs, one stage.
        names: stage names written at each stage start.
        customs: keys drawn besides loss and accuracy: verification sets each get a panel, other keys (``lr``,
            per-output losses) share the third one. None: ``lr`` and every set found; ``[]``: every set found.
        save: write the figure to this file; ``""`` writes ``<last history file without extension>.svg``.
        axes: the axes of an earlier call (its returned ``axes``, or ``fig.axes``) to draw this run on too; a
            run drawn on given axes gets the next colour. Their count sets ``eval_split`` (6 or more: split).
        init_epoch: the x position of the history's epoch 0 (a run continued from ``init_epoch``).
        pre_item: the earlier part's ``pre_item``: with ``init_epoch`` > 0 each curve starts from that part's
            last value at epoch ``init_epoch``.
        fig_label: the run's legend label (default: the last file name without ``_hist.json``).
        eval_split: one panel per verification set (True) or every set in the third panel with its own line
            style, the other customs then on a second y axis of the loss panel (False).
        limit_loss_max: clip drawn loss values above this (early losses can flatten the rest of the curve).
        skip_epochs: leave out epochs up to this one (x keeps the real epoch numbers).
        eval_names: (ours) the verification sets to draw, in place of those in ``customs``.

    Returns:
        ``(axes, pre_item)``: a numpy array of the axes, and ``{key: last value}`` of every drawn key, to pass
        as ``pre_item`` with ``init_epoch`` when plotting the run's next part.

    Example:
        >>> run = {"lr": [0.1, 0.01], "loss": [2.0, 1.0], "accuracy": [0.5, 0.8]}
        >>> run.update({"lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})
        >>> axes, pre_item = hist_plot_split(run, epochs=[1, 1], names=["s16", "s32"])
        >>> [ax.get_title() for ax in axes if ax.get_visible()], pre_item
        (['loss', 'accuracy', 'lr', 'lfw'], {'loss': 1.0, 'accuracy': 0.8, 'lfw': 0.95, 'lr': 0.01})
        >>> part2 = {"lr": [0.001], "loss": [0.9], "accuracy": [0.85], "lfw": [0.96], "lfw_thresh": [0.3]}
        >>> axes, _ = hist_plot_split(part2, axes=axes, init_epoch=2, pre_item=pre_item, fig_label="part 2")
        >>> [line.get_xydata().tolist() for line in axes[0].get_lines() if line.get_label() == "part 2"]
        [[[2.0, 1.0], [3.0, 0.9]]]
    """
    history, label, last_path = _one_run(history)
    label = label if fig_label is None else str(fig_label)
    pre_item = pre_item or {}
    evals, others = _split_customs(history, customs, eval_names)
    evals = [k for k in evals if k in history]
    if axes is None:
        axes = _new_axes(len(evals), eval_split)
    else:
        axes = list(np.ravel(axes))
        eval_split = len(axes) >= 6
    runs_drawn = len([line for line in axes[0].get_lines() if not line.get_label().startswith("_")])
    color = f"C{runs_drawn % 10}"
    total = len(history["loss"])
    if epochs:
        total = min(total, int(sum(epochs)))
    stages = [(first + init_epoch, last + init_epoch) for first, last in _stage_ranges(epochs, total)]
    accuracy_key = "accuracy" if "accuracy" in history else "logits_accuracy"
    panels = [(axes[0], "loss", label, "-"), (axes[1], accuracy_key, label, "-")]
    if eval_split:
        panels += [(_eval_axis(axes, k), k, label, "-") for k in evals]
        custom_ax = axes[2]
    else:
        panels += [(axes[2], k, f"{k} - {label}", LINE_STYLES[i % 5]) for i, k in enumerate(evals)]
        if others and len(axes) < 4:
            axes.append(axes[0].twinx())  # the seed's second y axis on the loss panel
        custom_ax = axes[3] if others else None
    panels += [(custom_ax, k, f"{k} - {label}", LINE_STYLES[i % 5]) for i, k in enumerate(others) if k in history]
    drawn = {}
    for ax, key, line_label, style in panels:
        if not history.get(key):
            continue
        epoch_of = key_epochs(history, key)
        values = np.asarray(history[key], dtype="float64")[epoch_of <= total]
        x = epoch_of[epoch_of <= total] + init_epoch
        if not len(x):
            continue
        drawn[key if key != "logits_accuracy" else "accuracy"] = float(values[-1])
        keep = x > skip_epochs
        if not keep.any():
            continue
        join_key = "accuracy" if key == "logits_accuracy" else key
        joined = init_epoch > 0 and join_key in pre_item and x[keep][0] == init_epoch + 1 and init_epoch > skip_epochs
        previous = (init_epoch, float(pre_item[join_key])) if joined else None
        lower = key == "loss" or key.endswith("_loss")
        limit = limit_loss_max if key == "loss" else np.inf
        _plot_series(ax, (x[keep], values[keep]), color, line_label, style, stages, lower, limit, previous)
        if ax is axes[2]:
            _add_title(ax, key)
    for ax in axes:
        if ax.get_visible() and ax.get_title():
            _draw_stages(ax, stages if epochs or init_epoch else [], names, skip_epochs, color)
    for ax in axes:
        if ax.get_visible() and any(not line.get_label().startswith("_") for line in ax.get_lines()):
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
    figure = axes[0].figure
    figure.tight_layout()
    if save is not None:
        if save == "" and last_path is None:
            raise ValueError("hist_plot_split: save='' names the figure after the history file; give a path")
        savefig_atomic(figure, save or os.path.splitext(last_path)[0] + ".svg")
    return HistPlot(np.array(axes, dtype=object), drawn)


def plot_runs(history_paths, epochs=None, names=None, customs=None, axes=None, fig_label=None, skip_epochs=0,
              eval_names=None):
    """Overlay several runs (history files or dicts) on one grid and return the figure.

    Each run is one ``hist_plot_split`` call on the shared axes, in its own colour. ``customs`` are the third
    panel's keys (default ``["lr"]``), ``eval_names`` the verification sets (default: every set of any run);
    ``fig_label`` is one label per run (or one string for a single run); ``axes=fig.axes`` adds the runs to an
    earlier figure. ``epochs``, ``names`` and ``skip_epochs`` as in ``hist_plot_split``.

    Example:
        >>> a = {"lr": [0.1, 0.01], "loss": [2.0, 1.0], "accuracy": [0.5, 0.8]}
        >>> a.update({"lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})
        >>> b = {**a, "loss": [2.5, 1.5], "lfw": [0.8, 0.97]}
        >>> fig = plot_runs([a, b], fig_label=["a", "b"])
        >>> [line.get_label() for line in fig.axes[3].get_lines()]
        ['a', 'b']
    """
    if isinstance(history_paths, (str, os.PathLike, dict)):
        history_paths = [history_paths]
    runs = [load_history(p) for p in history_paths]
    if fig_label is not None:
        labels = [fig_label] if isinstance(fig_label, str) else list(fig_label)
        if len(labels) != len(runs):
            raise ValueError(f"fig_label: {len(labels)} labels for {len(runs)} runs")
    else:
        labels = [label for _, label in runs]
    customs = ["lr"] if customs is None else list(customs)
    if eval_names is None:
        eval_names = list(dict.fromkeys(k for history, _ in runs for k in eval_keys(history) if k not in customs))
    if axes is None:
        axes = _new_axes(len(eval_names), True)
        for ax, key in zip(axes[3:], eval_names):
            ax.set_title(key)
    for (history, _), label in zip(runs, labels):
        axes, _ = hist_plot_split(history, epochs, names, [*customs, *eval_names], axes=axes, fig_label=label,
                                  skip_epochs=skip_epochs, eval_names=eval_names)
    return axes[0].figure


def _at_epoch(history, keys, epoch):
    """``{key: value at epoch}`` for the verification sets evaluated at ``epoch`` (1-based)."""
    row = {}
    for key in keys:
        where = np.flatnonzero(key_epochs(history, key) == epoch)
        if len(where):
            row[key] = float(history[key][where[0]])
    return row


def _markdown(rows, columns):
    """A markdown table of ``{run: {column: cell}}``; floats as ``%.4f``, ``(value, epoch)`` as ``value, epoch``."""

    def cell(value):
        if isinstance(value, tuple):
            return f"{value[0]:.4f}, {value[1]}"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| run | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for run, row in rows.items():
        lines.append(f"| {run} | " + " | ".join(cell(row[c]) if c in row else "-" for c in columns) + " |")
    return "\n".join(lines)


def _sorted_rows(table, key):
    """``table``'s rows in ascending order of column ``key`` (a ``(max, epoch)`` cell by its max), runs without
    it last, as the seed's ``sort_metric``."""

    def order(item):
        value = item[1].get(key)
        value = value[0] if isinstance(value, tuple) else value
        return (value is None, value if value is not None else 0.0)

    return dict(sorted(table.items(), key=order))


class AccuracyTables(tuple):
    """``choose_accuracy``'s result: the seed's ``(metric max, all max, sum max)`` tables; ``latest`` is the
    fourth table and ``tables`` all four by title."""

    def __new__(cls, tables):
        self = super().__new__(cls, list(tables.values())[:3])
        self.tables = tables
        self.latest = list(tables.values())[3]
        return self


def choose_accuracy(aa, skip_name_len=0, sort_metric=False, metric_key="agedb_30", key_picks=None, *,
                    key_pick=None, eval_names=None, verbose=True):
    """The seed's four comparison tables of runs: best ``metric_key`` epoch, each set's max, best sum, latest.

    Args:
        aa: history files (or dicts) of the runs.
        skip_name_len: leave this many leading characters out of each run's name (a shared prefix).
        sort_metric: print each table's rows in ascending order of ``metric_key``.
        metric_key: the set ranking the first table; when ``key_picks`` lacks it, their last set (the seed); a
            run without it is ranked by its own last set.
        key_picks: the verification sets in the tables (default: every set found).
        key_pick, eval_names: (ours) ``metric_key`` and ``key_picks`` under this package's earlier names.
        verbose: print the tables as markdown.

    Returns:
        ``AccuracyTables``: ``(metric max, all max, sum max)`` as the seed, plus ``.latest`` and ``.tables``
        (``{title: table}`` with titles ``"<metric_key> max"``, ``"all max"``, ``"sum max"``, ``"latest"``).
        A table is ``{run: {column: value}}`` with the sets and ``epoch``: the 1-based epoch (the seed printed
        0-based list indices); ``all max`` cells are ``(max, epoch)``.

    Example:
        >>> run = {"loss": [2.0, 1.0], "lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]}
        >>> run.update({"agedb_30": [0.8, 0.7], "agedb_30_thresh": [0.3, 0.3]})
        >>> metric_max, all_max, sum_max = choose_accuracy([run], verbose=False)
        >>> metric_max["run"], all_max["run"]["lfw"]
        ({'lfw': 0.9, 'agedb_30': 0.8, 'epoch': 1}, (0.95, 2))
    """
    if key_pick is not None:
        metric_key = key_pick
    if eval_names is not None:
        key_picks = eval_names
    if isinstance(skip_name_len, bool) or not isinstance(skip_name_len, int) or skip_name_len < 0:
        raise ValueError(f"choose_accuracy: skip_name_len must be an integer >= 0, received {skip_name_len!r}")
    paths = [aa] if isinstance(aa, (str, os.PathLike, dict)) else list(aa)
    runs = [load_history(p) for p in paths]
    if key_picks is None:
        key_picks = list(dict.fromkeys(k for history, _ in runs for k in eval_keys(history)))
    key_picks = list(key_picks)
    if key_picks and metric_key not in key_picks:
        metric_key = key_picks[-1]
    titles = [f"{metric_key} max", "all max", "sum max", "latest"]
    tables = {title: {} for title in titles}
    for index, ((history, label), path) in enumerate(zip(runs, paths)):
        where = "history" if isinstance(path, dict) else path
        keys = [k for k in key_picks if history.get(k)]
        if not keys:
            raise DataError(f"{where}: no verification results to compare")
        run = label[skip_name_len:] or label
        run = run if run not in tables["latest"] else f"{run}_{index}"
        pick = metric_key if metric_key in keys else keys[-1]
        values = np.asarray(history[pick], dtype="float64")
        best_epoch = int(key_epochs(history, pick)[int(np.nanargmax(values))])
        tables[titles[0]][run] = {**_at_epoch(history, keys, best_epoch), "epoch": best_epoch}
        tables["all max"][run] = {}
        for key in keys:
            series = np.asarray(history[key], dtype="float64")
            best = int(np.nanargmax(series))
            tables["all max"][run][key] = (float(series[best]), int(key_epochs(history, key)[best]))
        common = sorted(set.intersection(*(set(key_epochs(history, k).tolist()) for k in keys)))
        if not common:
            raise DataError(f"{where}: no epoch evaluates every set")
        sums = [sum(_at_epoch(history, keys, e).values()) for e in common]
        sum_epoch = int(common[int(np.nanargmax(sums))])
        tables["sum max"][run] = {**_at_epoch(history, keys, sum_epoch), "epoch": sum_epoch}
        latest = int(max(key_epochs(history, k)[-1] for k in keys))
        tables["latest"][run] = {**_at_epoch(history, keys, latest), "epoch": latest}
    if verbose:
        columns = list(key_picks)
        for title in titles:
            rows = _sorted_rows(tables[title], metric_key) if sort_metric else tables[title]
            print(f"\n>>>> {title}:\n{_markdown(rows, columns if title == 'all max' else [*columns, 'epoch'])}")
    return AccuracyTables(tables)
