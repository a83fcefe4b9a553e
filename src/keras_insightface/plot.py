"""Training curves and run comparison from history JSON files (the seed's ``hist_plot_split`` and
``choose_accuracy``, with its keywords and meaning), drawn with matplotlib.

A history file is what the trainer writes: ``{key: [one value per epoch]}`` with ``lr``, ``loss``,
``accuracy``, per-output losses and, per verification set ``<name>``, ``<name>``, ``<name>_thresh``,
``<name>_kfold`` and ``<name>_kfold_std``. Verification keys are recorded only on evaluated epochs: a list
``m`` long in a run of ``n`` epochs is read as every ``k = n // m``-th epoch (``eval_freq`` k).

``hist_plot_split`` draws one run, as the seed: a list of files is one run continued over several files, and
runs are compared by passing the returned axes back in. ``plot_runs`` does that for a list of runs and returns
the figure.

The figure reads without help: only panels with curves are shown, at most 3 wide (a run without verification
sets is one row); each panel's title says what it shows and its gid names it (``loss``, ``accuracy``, ``lr``,
``customs``, ``eval:<set>``); epochs are whole and 1-based; the learning rate has its own axis in ``1.0e-04``
notation, log scale when it spans a decade; stage names sit above the panels at the separators; runs share one
legend above the panels; each stage's best value is written beside its marker where it covers no other text.

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
from matplotlib.ticker import Formatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import Bbox

from keras_insightface.atomic import savefig_atomic
from keras_insightface.errors import DataError

EVALS_NAME = ("lfw", "cfp_fp", "agedb_30", "IJBB", "IJBC")  # the seed's verification set names
NOT_EVAL = ("lr", "loss", "accuracy", "img/s", "skipped_images")
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)))
SEPARATOR_GID = "stage-separator"
SERIES_GID = "series:"  # + key: a data curve
BEST_MARK_GID, BEST_VALUE_GID, STAGE_NAME_GID = "best-mark", "best-value", "stage-name"
RUNS_LEGEND_GID = "runs-legend"
EVAL_ROLE, FREE, LR_TWIN = "eval:", "free", "lr-twin"  # panel gids besides loss, accuracy, lr, customs, evals
PANEL_ORDER = ("loss", "accuracy", "lr", "customs", "evals")  # then the eval:<set> panels, in their order
PANEL_SIZE = (6.0, 4.2)  # inches per panel
# where a best-value text may go, in order: (dx, dy) points from its marker, horizontal and vertical alignment
VALUE_PLACES = ((-3, 3, "right", "bottom"), (3, 3, "left", "bottom"), (-3, -3, "right", "top"), (3, -3, "left", "top"),
                (-7, 0, "right", "center"), (7, 0, "left", "center"), (0, 6, "center", "bottom"),
                (0, -6, "center", "top"),
                *((sx * 3, sy * 3 + sy * 9 * step, "right" if sx < 0 else "left", "bottom" if sy > 0 else "top")
                  for step in (1, 2, 3) for sy in (1, -1) for sx in (-1, 1)))


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


class SciFormatter(Formatter):
    """Tick labels in scientific notation (``1.0e-04``), with the fewest mantissa digits that tell the ticks
    apart: a learning rate reads as its exponent, never as ``0.0000``.

    Example:
        >>> SciFormatter().format_ticks([1e-4, 1.5e-4, 2e-4])
        ['1.0e-04', '1.5e-04', '2.0e-04']
    """

    def __call__(self, value, pos=None):
        return f"{value:.1e}"

    def format_ticks(self, values):
        labels = []
        for digits in range(1, 5):
            labels = [f"{value:.{digits}e}" for value in values]
            if len(set(labels)) == len(labels):
                break
        return labels


def _series_lines(ax):
    """The data curves of a panel (not stage separators)."""
    return [line for line in ax.get_lines() if (line.get_gid() or "").startswith(SERIES_GID)]


def _series_keys(ax):
    return list(dict.fromkeys(line.get_gid()[len(SERIES_GID):] for line in _series_lines(ax)))


def _plot_series(ax, series, style, lower_is_better, limit_max, previous):
    """One curve plus, per stage, a marker and the ``%.4f`` value of the stage's best (``lower_is_better`` None:
    no marks, as for ``lr``); y is clipped at ``limit_max`` (the value text keeps the value); ``previous``
    ``(x, y)`` joins the curve to an earlier part. ``style`` is ``(key, label, colour, line style, stages)``."""
    (x, values), (key, label, color, linestyle, stages) = series, style
    shown = np.minimum(values, limit_max)
    line_x, line_y = (np.r_[previous[0], x], np.r_[min(previous[1], limit_max), shown]) if previous else (x, shown)
    ax.plot(line_x, line_y, color=color, label=label, linestyle=linestyle, marker="." if len(x) < 30 else None,
            gid=SERIES_GID + key)
    if lower_is_better is None:
        return
    for first, last in stages:
        inside = (x >= first) & (x <= last)
        best = _best_index(values[inside], lower_is_better)
        if best is None:
            continue
        bx, by = x[inside][best], values[inside][best]
        ax.scatter([bx], [min(by, limit_max)], color=color, marker="v", label="_best", gid=BEST_MARK_GID, zorder=3)
        ax.annotate(f"{by:.4f}", (bx, min(by, limit_max)), xytext=(-3, 3), textcoords="offset points", ha="right",
                    va="bottom", fontsize=8, color=color, gid=BEST_VALUE_GID,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def _draw_stages(ax, stages, names, skip_epochs, color):
    """Dashed separators before each stage but the plot's first epoch, and each stage's name above the panel at
    its separator, once per position."""
    drawn = {line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == SEPARATOR_GID}
    written = {(text.xy[0], text.get_text()) for text in ax.texts if text.get_gid() == STAGE_NAME_GID}
    for index, (first, last) in enumerate(stages):
        if first > 1 and first - 0.5 > skip_epochs + 0.5 and first - 0.5 not in drawn:
            ax.axvline(first - 0.5, color=color, linestyle="--", linewidth=0.8, label="_stage", gid=SEPARATOR_GID)
        name = names[index] if names and index < len(names) else None
        start = max(first, skip_epochs + 1)
        if name and start <= last and (start - 0.5, str(name)) not in written:
            ax.annotate(str(name), (start - 0.5, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(2, 2),
                        textcoords="offset points", ha="left", va="bottom", fontsize=8, color=color,
                        gid=STAGE_NAME_GID, annotation_clip=False)


def _new_axes(evals, eval_split):
    """The seed's panels on a new figure, each named by its gid: ``loss``, ``accuracy``, then ``lr`` and one
    ``eval:<set>`` per verification set (at least three slots, the seed's 2 x 3 grid), or without ``eval_split``
    ``evals`` holding every set. Empty panels are hidden and the rest laid out when the figure is finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if eval_split:
        roles = ["loss", "accuracy", "lr", *(EVAL_ROLE + k for k in evals), *[FREE] * max(0, 3 - len(evals))]
    else:
        roles = ["loss", "accuracy", "evals"]
    fig = Figure()  # not pyplot: no global figure registry, no GUI backend needed
    FigureCanvasAgg(fig)  # a renderer to measure labels with
    axes = [fig.add_subplot(1, len(roles), i + 1) for i in range(len(roles))]
    for ax, role in zip(axes, roles):
        ax.set_gid(role)
    return axes


def _adopt(axes):
    """Name the panels of axes given without names (the seed's ``plt.subplots`` grid) by their seed position."""
    if any(ax.get_gid() for ax in axes):
        return
    if len(axes) < 3:
        raise ValueError(f"axes: the 3, 4 or 6+ axes of an earlier plot, received {len(axes)} without panel names")
    if len(axes) >= 6:
        roles = ["loss", "accuracy", "lr", *[FREE] * (len(axes) - 3)]
    else:
        roles = ["loss", "accuracy", "evals", LR_TWIN]
    for ax, role in zip(axes, roles):
        ax.set_gid(role)


def _panel(axes, role):
    """The panel named ``role``: found, a free verification slot, or a new one (appended to ``axes``)."""
    for ax in axes:
        if ax.get_gid() == role:
            return ax
    if role.startswith(EVAL_ROLE):
        for ax in axes:
            if ax.get_gid() == FREE:
                ax.set_gid(role)
                return ax
    if role == LR_TWIN:
        ax = _panel(axes, "loss").twinx()
    else:
        ax = axes[0].figure.add_subplot(1, 1, 1)
    ax.set_gid(role)
    axes.append(ax)
    return ax


def _panel_texts(ax):
    """``(title, y label)`` saying what the panel named by its gid shows."""
    role, keys = ax.get_gid() or "", _series_keys(ax)
    if role.startswith(EVAL_ROLE):
        return f"{role[len(EVAL_ROLE):]}: verification accuracy", "accuracy"
    fixed = {"loss": ("training loss", "loss"), "accuracy": ("training accuracy", "accuracy"),
             "lr": ("learning rate", "learning rate"), LR_TWIN: ("", "learning rate")}
    if role in fixed:
        return fixed[role]
    if role == "evals":
        return "verification accuracy: " + ", ".join(keys), "accuracy"
    return ", ".join(keys), "value"


def _run_roles(history, evals, others, eval_split, label):
    """``[(panel, key, line label, line style)]`` of one run: single-quantity panels label lines by run, shared
    ones by ``<key> - <run>`` with a line style per key."""
    accuracy_key = "accuracy" if "accuracy" in history else "logits_accuracy"
    rows = [("loss", "loss", label, "-"), ("accuracy", accuracy_key, label, "-")]
    for i, key in enumerate(evals):
        rows.append((EVAL_ROLE + key, key, label, "-") if eval_split else
                    ("evals", key, f"{key} - {label}", LINE_STYLES[i % len(LINE_STYLES)]))
    customs = [key for key in others if key != "lr"]
    if "lr" in others:
        rows.append(("lr", "lr", label, "-") if eval_split else (LR_TWIN, "lr", f"lr - {label}", ":"))
    for i, key in enumerate(customs):  # per-output losses: their own panel, or beside the loss in one row
        style = LINE_STYLES[(i + 1) % len(LINE_STYLES)]
        rows.append(("customs" if eval_split else "loss", key, f"{key} - {label}", style))
    return [row for row in rows if history.get(row[1])]


def _draw_run(history, axes, eval_split, keys, label, stage_args, join_args):
    """Draw one run's curves on ``axes`` (panels created as needed); returns ``{key: last value}`` drawn.

    ``keys`` is ``(evals, others)``; ``stage_args`` ``(epochs, names, skip_epochs)``; ``join_args``
    ``(init_epoch, pre_item, limit_loss_max)``."""
    (epochs, names, skip_epochs), (init_epoch, pre_item, limit_loss_max) = stage_args, join_args
    runs_drawn = len([line for line in _series_lines(_panel(axes, "loss")) if line.get_gid() == SERIES_GID + "loss"])
    color = f"C{runs_drawn % 10}"
    total = len(history["loss"])
    if epochs:
        total = min(total, int(sum(epochs)))
    stages = [(first + init_epoch, last + init_epoch) for first, last in _stage_ranges(epochs, total)]
    drawn, touched = {}, []
    for role, key, line_label, linestyle in _run_roles(history, *keys, eval_split, label):
        epoch_of = key_epochs(history, key)
        values = np.asarray(history[key], dtype="float64")[epoch_of <= total]
        x = epoch_of[epoch_of <= total] + init_epoch
        if not len(x):
            continue
        join_key = "accuracy" if key == "logits_accuracy" else key
        drawn[join_key] = float(values[-1])
        keep = x > skip_epochs
        if not keep.any():
            continue
        joined = init_epoch > 0 and join_key in pre_item and x[keep][0] == init_epoch + 1 and init_epoch > skip_epochs
        previous = (init_epoch, float(pre_item[join_key])) if joined else None
        lower = None if key == "lr" else key == "loss" or key.endswith("_loss")
        limit = limit_loss_max if key == "loss" else np.inf
        ax = _panel(axes, role)
        style = (join_key, line_label, color, linestyle, stages)
        _plot_series(ax, (x[keep], values[keep]), style, lower, limit, previous)
        touched.append(_panel(axes, "loss") if role == LR_TWIN else ax)
    for ax in dict.fromkeys(touched):
        _draw_stages(ax, stages if epochs or init_epoch else [], names, skip_epochs, color)
    return drawn


def _lr_axis(ax):
    """The learning-rate axis: log scale when the drawn rates span a decade or more, ticks as ``1.0e-04``."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype="float64") for line in _series_lines(ax)])
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    if len(positive) and len(positive) == len(values) and positive.max() >= 10 * positive.min():
        low, high = positive.min(), positive.max()
        ax.set_yscale("log")
        if math.log10(high / low) <= 2.5:
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        else:  # ticks at the decades only: the axis ends at whole decades, so both ends are labelled
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,)))
            ends = math.floor(math.log10(low) + 0.01), math.ceil(math.log10(high) - 0.01)  # 9.99e-06 is 1e-05
            ax.set_ylim(10.0 ** ends[0] / 1.15, 10.0 ** ends[1] * 1.15)
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_yscale("linear")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_formatter(SciFormatter())


def _epoch_axis(ax, twin):
    """Whole 1-based epochs on x, half an epoch (or 2 %) of room on each side of the curves."""
    lines = _series_lines(ax) + (_series_lines(twin) if twin is not None else [])
    xs = np.concatenate([np.asarray(line.get_xdata(), dtype="float64") for line in lines])
    low, high = float(xs.min()), float(xs.max())
    pad = max(0.5, 0.02 * (high - low))
    ax.set_xlim(low - pad, high + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def _arrange(fig, shown, others, twin):
    """Lay the drawn panels on a grid at most 3 wide, 2 x 2 for four (the figure sized to fit); hidden ones on
    its first cell."""
    from matplotlib.gridspec import GridSpec

    cols = 2 if len(shown) == 4 else min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig.set_size_inches(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows)
    grid = GridSpec(rows, cols, figure=fig)
    for index, ax in enumerate(shown):
        ax.set_subplotspec(grid[index // cols, index % cols])
    for ax in others:
        ax.set_subplotspec(grid[0, 0])
    if twin is not None:
        twin.set_subplotspec(_panel([*shown, *others], "loss").get_subplotspec())


def _runs_legend(fig, loss_ax):
    """One legend of the runs (their colours) above the panels; returns the height it takes (figure fraction)."""
    for legend in list(fig.legends):
        if legend.get_gid() == RUNS_LEGEND_GID:
            legend.remove()
    runs = [line for line in _series_lines(loss_ax) if line.get_gid() == SERIES_GID + "loss"]
    legend = fig.legend(runs, [line.get_label() for line in runs], loc="upper center", ncols=min(len(runs), 6),
                        fontsize=10, frameon=False, bbox_to_anchor=(0.5, 1.0))
    legend.set_gid(RUNS_LEGEND_GID)
    height = legend.get_window_extent(fig.canvas.get_renderer()).height
    return (height + 4) / (fig.get_size_inches()[1] * fig.dpi)


def _apart(box, boxes, margin=1.0):
    """Whether ``box`` overlaps none of ``boxes`` (display pixels, ``margin`` of room)."""
    return all(box.x1 + margin <= other.x0 or other.x1 + margin <= box.x0 or box.y1 + margin <= other.y0
               or other.y1 + margin <= box.y0 for other in boxes)


def _inside(box, frame):
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def _fit_stage_names(ax, renderer):
    """Stage names side by side above the panel, or upright when they would run into each other; the title is
    lifted above them."""
    names = [text for text in ax.texts if text.get_gid() == STAGE_NAME_GID]
    if not names:
        ax.set_title(ax.get_title(), pad=6)
        return
    for text in names:
        text.set(rotation=0, ha="left", va="bottom")
        text.xyann = (2, 2)
    frame = ax.get_window_extent(renderer)
    boxes = [text.get_window_extent(renderer) for text in names]
    crowded = any(box.x1 > frame.x1 + 2 or not _apart(box, boxes[:i], margin=6) for i, box in enumerate(boxes))
    if crowded:
        for text in names:
            text.set(rotation=90, ha="center", va="bottom")
            text.xyann = (0, 2)
        boxes = [text.get_window_extent(renderer) for text in names]
    points = 72.0 / ax.figure.dpi
    ax.set_title(ax.get_title(), pad=6 + 2 + max(box.height for box in boxes) * points)


def _curve_points(axes):
    """Points every ~3 pixels along the curves of ``axes`` (display coordinates), to keep texts off them."""
    points = [np.empty((0, 2))]
    for line in [line for ax in axes for line in _series_lines(ax)]:
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype="float64"))
        xy = xy[np.isfinite(xy).all(axis=1)]
        for start, end in zip(xy[:-1], xy[1:]):
            steps = max(int(np.hypot(*(end - start)) / 3.0), 1)
            points.append(start + np.linspace(0.0, 1.0, steps, endpoint=False)[:, None] * (end - start))
        points.append(xy[-1:])
    return np.concatenate(points)


def _place_values(ax, renderer, twin=None):
    """Put each best-value text beside its marker where it overlaps no other text, marker or legend, stays inside
    the panel and covers the fewest curve points (first such place of a fixed order)."""
    texts = [text for text in ax.texts if text.get_gid() == BEST_VALUE_GID]
    if not texts:
        return
    frame = ax.get_window_extent(renderer)
    placed = []
    for marks in ax.collections:
        if marks.get_gid() == BEST_MARK_GID:
            for x, y in marks.get_offset_transform().transform(marks.get_offsets()):
                placed.append(Bbox.from_extents(x - 4, y - 4, x + 4, y + 4))
    if ax.get_legend() is not None:
        placed.append(ax.get_legend().get_window_extent(renderer))
    curves = _curve_points([ax] if twin is None else [ax, twin])
    for text in sorted(texts, key=lambda text: tuple(text.xy)):
        best, best_score = None, None
        for dx, dy, ha, va in VALUE_PLACES:
            text.set(ha=ha, va=va)
            text.xyann = (dx, dy)
            box = text.get_window_extent(renderer)
            covered = int(((curves[:, 0] >= box.x0) & (curves[:, 0] <= box.x1) & (curves[:, 1] >= box.y0)
                           & (curves[:, 1] <= box.y1)).sum())
            score = (not _inside(box, frame), sum(not _apart(box, [other]) for other in placed), covered)
            if best_score is None or score < best_score:
                best, best_score = (dx, dy, ha, va, box), score
            if score == (False, 0, 0):
                break
        dx, dy, ha, va, box = best
        text.set(ha=ha, va=va)
        text.xyann = (dx, dy)
        placed.append(box)


def _style_panel(ax, twin):
    """Title, y label, grid, the epoch axis; the learning-rate axis; a legend of keys where a panel holds several
    (the runs have the figure's legend). ``twin`` is the loss panel's learning-rate axis, if any."""
    role = ax.get_gid()
    title, ylabel = _panel_texts(ax)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, linestyle=":", linewidth=0.6)
    twin = twin if role == "loss" else None
    _epoch_axis(ax, twin)
    if role == "lr":
        _lr_axis(ax)
    handles = _series_lines(ax) + (_series_lines(twin) if twin is not None else [])
    if role in ("customs", "evals") or len({line.get_gid() for line in handles}) > 1:
        many = len(handles) > 3
        ax.legend(handles, [line.get_label() for line in handles], fontsize=7 if many else 8, ncols=2 if many else 1,
                  loc="best", framealpha=0.8)
    elif ax.get_legend() is not None:
        ax.get_legend().remove()


def _finish(axes, caller, skip_epochs):
    """Hide empty panels, lay out the rest, name them, scale the epoch and learning-rate axes, draw the legends,
    then place the stage names and value texts so that no two texts overlap."""
    if not any(_series_lines(ax) for ax in axes):
        raise ValueError(f"{caller}: nothing to draw: no epoch of the histories comes after skip_epochs={skip_epochs}")
    fig = axes[0].figure
    twin = next((ax for ax in axes if ax.get_gid() == LR_TWIN), None)
    hosts = [ax for ax in axes if ax is not twin]
    order = {role: rank for rank, role in enumerate(PANEL_ORDER)}
    twin_drawn = twin is not None and bool(_series_lines(twin))
    shown = sorted((ax for ax in hosts if _series_lines(ax) or (ax.get_gid() == "loss" and twin_drawn)),
                   key=lambda ax: order.get(ax.get_gid(), len(order)))
    for ax in hosts:
        ax.set_visible(ax in shown)
    _arrange(fig, shown, [ax for ax in hosts if ax not in shown], twin)
    for ax in shown:
        _style_panel(ax, twin)
    if twin is not None:
        twin.set_visible(twin_drawn)
        if twin_drawn:
            twin.set_ylabel(_panel_texts(twin)[1])
            _lr_axis(twin)
    if not hasattr(fig.canvas, "get_renderer"):  # a canvas that cannot measure text: the default places
        fig.tight_layout()
        return
    top = 1.0 - _runs_legend(fig, _panel(axes, "loss"))
    renderer = fig.canvas.get_renderer()
    for ax in shown:  # before the layout, whose panels are only wider: names that fit now still fit
        _fit_stage_names(ax, renderer)
    fig.tight_layout(rect=(0, 0, 1, top))
    renderer = fig.canvas.get_renderer()
    for ax in shown:
        _place_values(ax, renderer, twin if ax.get_gid() == "loss" and twin_drawn else None)


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


def _eval_split_of(axes):
    """Whether given axes are the split grid (a panel per verification set) or the seed's one row."""
    return not any(ax.get_gid() == "evals" for ax in axes)


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
    """Plot one run's history on the seed's panels; returns ``HistPlot(axes, pre_item)``, the seed's pair.

    Panels: training loss, training accuracy, learning rate (its own axis, ``1.0e-04`` ticks, log scale when it
    spans a decade), other ``customs`` (per-output losses) together, and one per verification set. A panel with
    nothing to draw is hidden and the others fill a grid at most 3 wide; each axes' gid names its panel
    (``loss``, ``accuracy``, ``lr``, ``customs``, ``eval:<set>``; one row: ``evals`` and the loss panel's
    learning-rate axis ``lr-twin``). Epochs are whole, 1-based; runs share one legend above the panels.

    Args:
        history: a history file, a dict, or a list of files continuing one run (values concatenated, as the seed).
        epochs: epochs per stage: dashed separators between stages, each stage's best value (lowest for losses)
            marked and written; only the first ``sum(epochs)`` epochs are drawn. None: all epochs, one stage.
        names: stage names, written above each panel at the stage's start.
        customs: keys drawn besides loss and accuracy: verification sets each get a panel, ``lr`` its own, other
            keys (per-output losses) share one. None: ``lr`` and every set found; ``[]``: every set found.
        save: write the figure to this file; ``""`` writes ``<last history file without extension>.svg``.
        axes: the axes of an earlier call (its returned ``axes``, or ``fig.axes``) to draw this run on too; a
            run drawn on given axes gets the next colour. They decide ``eval_split``.
        init_epoch: the x position of the history's epoch 0 (a run continued from ``init_epoch``).
        pre_item: the earlier part's ``pre_item``: with ``init_epoch`` > 0 each curve starts from that part's
            last value at epoch ``init_epoch``.
        fig_label: the run's legend label (default: the last file name without ``_hist.json``).
        eval_split: one panel per verification set (True) or the seed's one row: every set in the third panel
            with its own line style, ``lr`` on a second y axis of the loss panel, other customs beside the loss.
        limit_loss_max: clip drawn loss values above this (early losses can flatten the rest of the curve).
        skip_epochs: leave out epochs up to this one (x keeps the real epoch numbers).
        eval_names: (ours) the verification sets to draw, in place of those in ``customs``.

    Returns:
        ``(axes, pre_item)``: a numpy array of the axes (the seed's order: loss, accuracy, lr, verification
        slots; panels made later are appended), and ``{key: last value}`` of every drawn key, to pass as
        ``pre_item`` with ``init_epoch`` when plotting the run's next part.

    Example:
        >>> run = {"lr": [0.1, 0.01], "loss": [2.0, 1.0], "accuracy": [0.5, 0.8]}
        >>> run.update({"lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})
        >>> axes, pre_item = hist_plot_split(run, epochs=[1, 1], names=["s16", "s32"])
        >>> [ax.get_title() for ax in axes if ax.get_visible()]
        ['training loss', 'training accuracy', 'learning rate', 'lfw: verification accuracy']
        >>> pre_item
        {'loss': 1.0, 'accuracy': 0.8, 'lfw': 0.95, 'lr': 0.01}
        >>> part2 = {"lr": [0.001], "loss": [0.9], "accuracy": [0.85], "lfw": [0.96], "lfw_thresh": [0.3]}
        >>> axes, _ = hist_plot_split(part2, axes=axes, init_epoch=2, pre_item=pre_item, fig_label="part 2")
        >>> [line.get_xydata().tolist() for line in axes[0].get_lines() if line.get_label() == "part 2"]
        [[[2.0, 1.0], [3.0, 0.9]]]
    """
    history, label, last_path = _one_run(history)
    label = label if fig_label is None else str(fig_label)
    evals, others = _split_customs(history, customs, eval_names)
    evals = [k for k in evals if k in history]
    if axes is None:
        axes = _new_axes(evals, eval_split)
    else:
        axes = list(np.ravel(axes))
        _adopt(axes)
        eval_split = _eval_split_of(axes)
    drawn = _draw_run(history, axes, eval_split, (evals, others), label, (epochs, names, skip_epochs),
                      (init_epoch, pre_item or {}, limit_loss_max))
    _finish(axes, "hist_plot_split", skip_epochs)
    if save is not None:
        if save == "" and last_path is None:
            raise ValueError("hist_plot_split: save='' names the figure after the history file; give a path")
        savefig_atomic(axes[0].figure, save or os.path.splitext(last_path)[0] + ".svg")
    return HistPlot(np.array(axes, dtype=object), drawn)


def plot_runs(history_paths, epochs=None, names=None, customs=None, axes=None, fig_label=None, skip_epochs=0,
              eval_names=None):
    """Overlay several runs (history files or dicts) on one figure and return it; only panels with curves.

    Each run is drawn as by ``hist_plot_split``, in its own colour. ``customs`` are the keys besides loss,
    accuracy and the verification sets (default ``["lr"]``: ``lr`` on its own panel, others, e.g. per-output
    losses, share one), ``eval_names`` the verification sets (default: every set of any run); ``fig_label`` is
    one label per run (or one string for a single run); ``axes=fig.axes`` adds the runs to an earlier figure.
    ``epochs``, ``names`` and ``skip_epochs`` as in ``hist_plot_split``.

    Example:
        >>> a = {"lr": [0.1, 0.01], "loss": [2.0, 1.0], "accuracy": [0.5, 0.8]}
        >>> a.update({"lfw": [0.9, 0.95], "lfw_thresh": [0.3, 0.3]})
        >>> b = {**a, "loss": [2.5, 1.5], "lfw": [0.8, 0.97]}
        >>> fig = plot_runs([a, b], fig_label=["a", "b"])
        >>> [ax.get_gid() for ax in fig.axes]
        ['loss', 'accuracy', 'lr', 'eval:lfw']
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
        axes = _new_axes(eval_names, True)
    else:
        axes = list(np.ravel(axes))
        _adopt(axes)
    eval_split = _eval_split_of(axes)
    for (history, _), label in zip(runs, labels):
        evals, others = _split_customs(history, [*customs, *eval_names], eval_names)
        _draw_run(history, axes, eval_split, ([k for k in evals if k in history], others), label,
                  (epochs, names, skip_epochs), (0, {}, 1e9))
    fig = axes[0].figure
    if any(_series_lines(ax) for ax in axes):  # the figure keeps only panels with curves
        for ax in [ax for ax in axes if not _series_lines(ax)]:
            fig.delaxes(ax)
            axes.remove(ax)
    _finish(axes, "plot_runs", skip_epochs)
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


def _sorted_rows(table, key):
    """``table``'s rows in ascending order of column ``key`` (a ``(max, epoch)`` cell by its max), runs without
    it last, as the seed's ``sort_metric``."""

    def order(item):
        value = item[1].get(key)
        value = value[0] if isinstance(value, tuple) else value
        return (value is None, value if value is not None else 0.0)

    return dict(sorted(table.items(), key=order))


def _ranking_key(histories, wheres, key_picks, metric_key, picked):
    """``(set ranking the first table, None or a line saying why it is not metric_key)``: ``metric_key`` when
    every run has it; the last of given ``key_picks`` without it (the seed's rule); else the first of
    ``key_picks`` that every run has."""
    shared = [k for k in key_picks if all(history.get(k) for history in histories)]
    if metric_key in shared:
        return metric_key, None
    if picked and metric_key not in key_picks and key_picks and key_picks[-1] in shared:
        return key_picks[-1], f"ranking by {key_picks[-1]}, the last of key_picks ({metric_key} is not among them)"
    if not shared:
        sets = "; ".join(f"{where}: {', '.join(k for k in key_picks if history.get(k))}"
                         for history, where in zip(histories, wheres))
        raise DataError(f"choose_accuracy: no verification set is in every run ({sets}); nothing ranks them all")
    having = [where for history, where in zip(histories, wheres) if history.get(metric_key)]
    if not having:
        why = f"no run has {metric_key}"
    elif metric_key not in key_picks:
        why = f"{metric_key} is not among the compared sets"
    else:
        why = f"{metric_key} is not in every run (only in {', '.join(having)})"
    return shared[0], f"{why}: ranking by {shared[0]}, the first verification set every run has"


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
        metric_key: the set ranking the first table when every run has it; when ``key_picks`` is given without
            it, their last set (the seed); otherwise the first of ``key_picks`` that every run has, and a printed
            line says so. The first table's title names the set used; no set in every run is a ``DataError``.
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
    wheres = ["history" if isinstance(path, dict) else os.fspath(path) for path in paths]
    picked = key_picks is not None
    if key_picks is None:
        key_picks = list(dict.fromkeys(k for history, _ in runs for k in eval_keys(history)))
    key_picks = list(key_picks)
    for (history, _), where in zip(runs, wheres):
        if not any(history.get(k) for k in key_picks):
            raise DataError(f"{where}: no verification results to compare")
    metric_key, note = _ranking_key([history for history, _ in runs], wheres, key_picks, metric_key, picked)
    if verbose and note:
        print(f">>>> {note}")
    titles = [f"{metric_key} max", "all max", "sum max", "latest"]
    tables = {title: {} for title in titles}
    for index, ((history, label), where) in enumerate(zip(runs, wheres)):
        keys = [k for k in key_picks if history.get(k)]
        run = label[skip_name_len:] or label
        run = run if run not in tables["latest"] else f"{run}_{index}"
        values = np.asarray(history[metric_key], dtype="float64")
        best_epoch = int(key_epochs(history, metric_key)[int(np.nanargmax(values))])
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
