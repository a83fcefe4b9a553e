"""Training curves and run comparison from history JSON files (the seed's ``hist_plot_split`` and
``choose_accuracy``), drawn with matplotlib.

A history file is what the trainer writes: ``{key: [one value per epoch]}`` with ``lr``, ``loss``,
``accuracy``, per-output losses and, per verification set ``<name>``, ``<name>``, ``<name>_thresh``,
``<name>_kfold`` and ``<name>_kfold_std``. Verification keys are recorded only on evaluated epochs: a list
``m`` long in a run of ``n`` epochs is read as every ``k = n // m``-th epoch (``eval_freq`` k).

Example:
    >>> runs = ["checkpoints/r50_hist.json", "checkpoints/r100_hist.json"]
    >>> fig = hist_plot_split(runs, epochs=[5, 5, 40], names=["s16", "s32", "s64"])  # doctest: +SKIP
    >>> fig.savefig("r50_r100.png")                                                   # doctest: +SKIP
    >>> tables = choose_accuracy(runs)                                                # doctest: +SKIP
"""

import json
import math
import os

import numpy as np

from keras_insightface.errors import DataError

NOT_EVAL = ("lr", "loss", "accuracy", "img/s", "skipped_images")
CUSTOM_STYLES = ("-", "-.", ":", (0, (5, 1, 1, 1)))
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


def eval_keys(history):
    """The verification sets of ``history``: keys recorded with a ``<name>_thresh`` companion, in file order."""
    return [k for k in history if k not in NOT_EVAL and k + "_thresh" in history]


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


def _plot_series(ax, x, values, color, label, linestyle, stages, lower_is_better):
    """One run's curve plus, per stage, a marker and the ``%.4f`` text of the stage's best value."""
    ax.plot(x, values, color=color, label=label, linestyle=linestyle, marker="." if len(x) < 30 else None)
    for first, last in stages:
        inside = (x >= first) & (x <= last)
        best = _best_index(values[inside], lower_is_better)
        if best is None:
            continue
        bx, by = x[inside][best], values[inside][best]
        ax.scatter([bx], [by], color=color, marker="v", label="_best")
        ax.text(bx, by, f"{by:.4f}", va="bottom", ha="right", fontsize=8, rotation=-30, color=color)


def _draw_stages(ax, stages, names, skip_epochs, color):
    """Dashed separators between stages and the stage names, once per position on ``ax``."""
    drawn = {line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == SEPARATOR_GID}
    texts = {(t.get_position()[0], t.get_text()) for t in ax.texts}
    for index, (first, _) in enumerate(stages):
        if index and first - 0.5 > skip_epochs + 0.5 and first - 0.5 not in drawn:
            line = ax.axvline(first - 0.5, color=color, linestyle="--", linewidth=0.8, label="_stage")
            line.set_gid(SEPARATOR_GID)
        name = names[index] if names and index < len(names) else None
        start = max(first, skip_epochs + 1)
        if name and start <= stages[index][1] and (start, name) not in texts:
            ax.text(start, 0.03, name, transform=ax.get_xaxis_transform(), rotation=-90, va="bottom", fontsize=8)


def _new_axes(num_evals):
    """The seed's grid, 3 wide: loss, accuracy, customs, then one panel per verification set (at least 2 x 3)."""
    from matplotlib.figure import Figure

    rows = 1 + max(1, math.ceil(num_evals / 3))
    fig = Figure(figsize=(18, 5 * rows))  # not pyplot: no global figure registry, no GUI backend needed
    return fig, list(fig.subplots(rows, 3, squeeze=False).ravel())


def _eval_axis(axes, key, where):
    """The panel titled ``key`` among ``axes[3:]``, else the first unused one, which gets that title."""
    for ax in axes[3:]:
        if ax.get_title() == key:
            return ax
    for ax in axes[3:]:
        if not ax.get_title():
            ax.set_title(key)
            ax.set_visible(True)
            return ax
    raise DataError(f"{where}: no free panel for verification set {key!r} in the given axes")


def hist_plot_split(
    history_paths, epochs=None, names=None, customs=None, axes=None, fig_label=None, skip_epochs=0, eval_names=None
):
    """Plot history files on the seed's grid and return the figure; several files are overlaid as runs.

    Panels: ``loss``, ``accuracy``, the ``customs`` keys (default ``["lr"]``; other per-output losses such as
    ``centerloss_loss`` too), then one per verification set (``eval_names``, default: those found). ``epochs``
    (epochs per stage) draws dashed separators between stages, labelled with ``names``, and each stage's best
    value (lowest for losses) is marked and written. Each run has one colour on every panel and its legend
    label is ``fig_label`` (one string, or one per run) or the file name without ``_hist.json``. Pass
    ``axes=fig.axes`` of an earlier figure to overlay more runs on it. ``skip_epochs`` leaves out the first
    epochs (the x axis keeps the real epoch numbers).

    Example:
        >>> run = {"lr": [0.1, 0.01], "loss": [2.0, 1.0], "accuracy": [0.5, 0.8]}
        >>> run.update({"lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})
        >>> fig = hist_plot_split([run], epochs=[1, 1], names=["s16", "s32"])
        >>> [ax.get_title() for ax in fig.axes if ax.get_visible()]
        ['loss', 'accuracy', 'lr', 'lfw']
    """
    if isinstance(history_paths, (str, os.PathLike, dict)):
        history_paths = [history_paths]
    runs = [load_history(p) for p in history_paths]
    sources = [p if isinstance(p, (str, os.PathLike)) else "history" for p in history_paths]
    if fig_label is not None:
        labels = [fig_label] if isinstance(fig_label, str) else list(fig_label)
        if len(labels) != len(runs):
            raise ValueError(f"fig_label: {len(labels)} labels for {len(runs)} runs")
        runs = [(history, label) for (history, _), label in zip(runs, labels)]
    customs = ["lr"] if customs is None else list(customs)
    if eval_names is None:
        eval_names = list(dict.fromkeys(k for history, _ in runs for k in eval_keys(history) if k not in customs))
    if axes is None:
        fig, axes = _new_axes(len(eval_names))
        for ax in axes[3 + len(eval_names) :]:
            ax.set_visible(False)
        for ax, title in zip(axes, ["loss", "accuracy", ", ".join(customs)]):
            ax.set_title(title)
    else:
        axes = list(np.ravel(axes))
        fig = axes[0].figure
    previous_runs = len([line for line in axes[0].get_lines() if not line.get_label().startswith("_")])
    for offset, ((history, label), where) in enumerate(zip(runs, sources)):
        color = f"C{(previous_runs + offset) % 10}"
        stages = _stage_ranges(epochs, len(history["loss"]))
        panels = [(axes[0], "loss", label, "-"), (axes[1], "accuracy", label, "-")]
        panels += [(axes[2], k, f"{k} - {label}", CUSTOM_STYLES[i % len(CUSTOM_STYLES)]) for i, k in enumerate(customs)]
        panels += [(_eval_axis(axes, k, where), k, label, "-") for k in eval_names if k in history]
        for ax, key, line_label, style in panels:
            if not history.get(key):
                continue
            x, values = key_epochs(history, key), np.asarray(history[key], dtype="float64")
            keep = x > skip_epochs
            if keep.any():
                lower = key == "loss" or key.endswith("_loss")
                _plot_series(ax, x[keep], values[keep], color, line_label, style, stages, lower)
        for ax in axes:
            if ax.get_visible() and ax.get_title():
                _draw_stages(ax, stages if epochs else [], names, skip_epochs, color)
    for ax in axes:
        if ax.get_visible() and any(not line.get_label().startswith("_") for line in ax.get_lines()):
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


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


def choose_accuracy(paths, key_pick="agedb_30", eval_names=None, verbose=True):
    """The seed's four comparison tables of runs: best ``key_pick`` epoch, each set's max, best sum, latest.

    Returns ``{title: {run: {column: value}}}`` with titles ``"<key_pick> max"``, ``"all max"``,
    ``"sum max"`` and ``"latest"``; columns are the verification sets (``eval_names``, default: those found)
    and ``epoch`` (1-based). ``all max`` cells are ``(max, epoch)``. A run without ``key_pick`` is ranked by its
    last verification set, as the seed falls back to its last key. Prints the tables as markdown unless
    ``verbose`` is False.

    Example:
        >>> run = {"loss": [2.0, 1.0], "lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]}
        >>> run.update({"agedb_30": [0.8, 0.7], "agedb_30_thresh": [0.3, 0.3]})
        >>> choose_accuracy([run], verbose=False)["agedb_30 max"]["run"]
        {'lfw': 0.9, 'agedb_30': 0.8, 'epoch': 1}
    """
    if isinstance(paths, (str, os.PathLike, dict)):
        paths = [paths]
    runs = [load_history(p) for p in paths]
    if eval_names is None:
        eval_names = list(dict.fromkeys(k for history, _ in runs for k in eval_keys(history)))
    titles = [f"{key_pick} max", "all max", "sum max", "latest"]
    tables = {title: {} for title in titles}
    for index, ((history, label), path) in enumerate(zip(runs, paths)):
        keys = [k for k in eval_names if history.get(k)]
        if not keys:
            raise DataError(f"{path if not isinstance(path, dict) else 'history'}: no verification results to compare")
        run = label if label not in tables["latest"] else f"{label}_{index}"
        pick = key_pick if key_pick in keys else keys[-1]
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
            raise DataError(f"{path if not isinstance(path, dict) else 'history'}: no epoch evaluates every set")
        sums = [sum(_at_epoch(history, keys, e).values()) for e in common]
        sum_epoch = int(common[int(np.nanargmax(sums))])
        tables["sum max"][run] = {**_at_epoch(history, keys, sum_epoch), "epoch": sum_epoch}
        latest = int(max(key_epochs(history, k)[-1] for k in keys))
        tables["latest"][run] = {**_at_epoch(history, keys, latest), "epoch": latest}
    if verbose:
        for title in titles:
            columns = eval_names if title == "all max" else [*eval_names, "epoch"]
            print(f"\n>>>> {title}:\n{_markdown(tables[title], columns)}")
    return tables
