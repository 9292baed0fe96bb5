"""PNG plots of the aggregates (matplotlib, Agg backend). Missing runs are left out (gaps), never zero."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from results.aggregate import method_labels  # noqa: E402
from results.curves import panel_order  # noqa: E402


def _nan_if_none(value):
    return math.nan if value is None else value


def _mean_or_nan(summary):
    return math.nan if summary is None else summary.mean


def plot_base2new_hm(table, path):
    """Grouped bars: HM per dataset (and the average) for every method."""
    labels = method_labels(table.methods)
    groups = table.datasets + ["Average"]
    width = 0.8 / len(table.methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.0))
    for i, method in enumerate(table.methods):
        heights = [_nan_if_none(table.cells[method, d][2]) for d in table.datasets]
        heights.append(_nan_if_none(table.average[method][2]))
        positions = [g + (i - (len(table.methods) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(positions, heights, width=width, label=labels[method])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylabel("HM of base and novel accuracy (%)")
    ax.set_title("Base-to-novel generalization: harmonic mean per dataset")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(curves, path, x_label, title, log2_x=False, reverse_x=False):
    """One panel per dataset plus an ``Average`` panel: accuracy vs x, a line per method."""
    labels = method_labels(curves.methods)
    panels = curves.datasets + ["Average"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for method in curves.methods:
            if panel == "Average":
                ys = [_nan_if_none(curves.average[method, x][0]) for x in curves.xs]
            else:
                ys = [_mean_or_nan(curves.cells[method, panel, x]) for x in curves.xs]
            ax.plot(curves.xs, ys, marker="o", label=labels[method])
        if log2_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(curves.xs)
            ax.set_xticklabels([str(x) for x in curves.xs])
        if reverse_x:
            ax.invert_xaxis()
        ax.set_title(panel)
        ax.set_xlabel(x_label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PANEL_TITLES = {"train_loss": "training loss", "train_acc": "training accuracy (%)", "lr": "learning rate",
                "val_accuracy": "val accuracy (%)"}


def plot_training_curves(runs, labels, path, title="Training curves"):
    """One panel per column of the runs' ``curves.csv`` (loss, accuracy, LR, val accuracy, ...), a line per run.

    Missing values (e.g. epochs without validation) are gaps; a column that only some runs have is drawn for those.
    """
    names = panel_order(sorted({name for run in runs for name in run.columns}))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, label in zip(runs, labels):
            if name not in run.columns:
                continue
            points = [(e, v) for e, v in zip(run.epochs, run.columns[name]) if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(PANEL_TITLES.get(name, name))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, texts = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, texts, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(3, max(1, len(texts))))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
