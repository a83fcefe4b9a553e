"""Training curves from history JSON files (the seed's ``hist_plot_split``), drawn with matplotlib.

Example:
    >>> from keras_insightface.plot import hist_plot_split
    >>> fig = hist_plot_split(["checkpoints/r50_hist.json"], epochs=[5, 5, 40], names=["s16", "s32", "s64"])  # doctest: +SKIP
    >>> fig.savefig("r50.png")                                                                                # doctest: +SKIP
"""

import json
import os

import numpy as np

_NOT_EVAL = {"lr", "loss", "accuracy", "img/s", "skipped_images"}


def _eval_keys(history):
    return [k for k in history if k not in _NOT_EVAL and not k.endswith(("_thresh", "_kfold", "_kfold_std"))]


def _load(path_or_dict):
    if isinstance(path_or_dict, dict):
        return path_or_dict, "run"
    with open(path_or_dict) as f:
        return json.load(f), os.path.splitext(os.path.basename(path_or_dict))[0].removesuffix("_hist")


def hist_plot_split(history_paths, epochs=None, names=None, axes=None, fig_label=None, skip_epochs=0):
    """Plot loss, accuracy, learning rate and every verification set per epoch; runs are overlaid.

    ``epochs`` (epochs per stage) draws stage separators and labels them with ``names``; each
    verification panel marks the best epoch. Returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if isinstance(history_paths, (str, dict)):
        history_paths = [history_paths]
    runs = [_load(p) for p in history_paths]
    eval_keys = list(dict.fromkeys(k for history, _ in runs for k in _eval_keys(history)))
    panels = ["loss", "accuracy", "lr"] + eval_keys
    if axes is None:
        cols = 3
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        axes = axes.ravel()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
    fig = axes[0].figure
    for history, run_name in runs:
        label = fig_label or run_name
        for ax, key in zip(axes, panels):
            values = np.asarray(history.get(key, []), dtype="float64")[skip_epochs:]
            if not len(values):
                continue
            x = np.arange(skip_epochs + 1, skip_epochs + len(values) + 1)
            ax.plot(x, values, marker="." if len(values) < 30 else None, label=label)
            if key in eval_keys:
                best = int(np.argmax(values))
                ax.annotate(f"{values[best]:.4f}", (x[best], values[best]), textcoords="offset points", xytext=(0, 6))
            ax.set_title(key)
            ax.set_xlabel("epoch")
    if epochs:
        bounds = np.cumsum(epochs)[:-1]
        for ax in axes[: len(panels)]:
            for bound in bounds:
                ax.axvline(bound + 0.5, color="gray", linestyle="--", linewidth=0.8)
            if names:
                starts = np.concatenate([[0], bounds])
                for start, name in zip(starts, names):
                    ax.text(start + 1, 0.02, name, transform=ax.get_xaxis_transform(), fontsize=8, color="gray")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
