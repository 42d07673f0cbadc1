"""Figures of a run: label-efficiency curve (or test SSE bars), fine-tuning and pretraining curves,
confusion matrix; the autoencoder figures are in ae_plots.py, the choice of figures in figures.py.

Each `plot_*` writes one PNG through matplotlib's Agg canvas (no pyplot state) without a
Software tag, so the same inputs give the same bytes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.files import atomic_write
from .rundata import RunData
from .stats import per_seed, summarize

ARM_COLORS = {"pretrained": "#1f77b4", "random": "#d62728", "frozen": "#2ca02c", "logreg": "#9467bd",
              "pca-logreg": "#8c564b", "pca": "#ff7f0e"}
OTHER_COLORS = ("#17becf", "#bcbd22", "#e377c2", "#7f7f7f")
MAX_PANELS_PER_ROW = 2
DPI = 110
ARM_MARKERS = {"pretrained": "o", "random": "s", "frozen": "^", "logreg": "D", "pca-logreg": "v", "pca": "P"}


def arm_color(arm: str, arms: list[str]) -> str:
    return ARM_COLORS.get(arm) or OTHER_COLORS[arms.index(arm) % len(OTHER_COLORS)]


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def new_figure(width: float, height: float, **kwargs) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> None:
    """PNG without the Software tag, so identical inputs give identical bytes; written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write(path, buffer.getvalue())


def metric_label(run: RunData) -> str:
    return "test error (%)" if run.metric == "test_error" else "test SSE per image"


def metric_scale(run: RunData) -> float:
    return 100.0 if run.metric == "test_error" else 1.0


def budget_positions(run: RunData) -> tuple[dict[str, float], str]:
    """x position of each budget; `all` sits at n_train / n_classes labels per class."""
    numeric = [int(b) for b in run.budgets if b != "all"]
    n_train, n_classes = run.dataset.get("n_train"), run.n_classes
    note = ""
    if n_train and n_classes:
        x_all = n_train / n_classes
    else:
        x_all = 2.0 * max(numeric, default=1)
        note = " (n_train or classes unknown: `all` placed at twice the largest budget)"
    return {b: (x_all if b == "all" else float(b)) for b in run.budgets}, note


# ---------------------------------------------------------------- label efficiency / SSE bars

def plot_results(runs: list[RunData], titles: list[str], path: Path) -> str:
    """One panel per run: the label-efficiency curve (classification) or SSE bars (reconstruction)."""
    ncols = min(len(runs), MAX_PANELS_PER_ROW)
    nrows = -(-len(runs) // ncols)
    fig = new_figure(0.6 + 6.2 * ncols, 4.8 * nrows)
    captions = []
    for i, (run, title) in enumerate(zip(runs, titles, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        draw = draw_label_efficiency if run.metric == "test_error" else draw_sse_bars
        captions.append(draw(ax, run))
        ax.set_title(title, fontsize=11)
    save(fig, path)
    return " ".join(dict.fromkeys(captions))


def draw_label_efficiency(ax, run: RunData) -> str:
    ok, scale = run.ok(), metric_scale(run)
    xs, note = budget_positions(run)
    arms = [a for a in run.arms if a in set(ok["arm"])]
    for i, arm in enumerate(arms):
        jitter = 1.04 ** (i - (len(arms) - 1) / 2)      # keeps error bars apart on the log axis
        points = [(xs[b] * jitter, summarize(per_seed(ok, b, arm, run.metric))) for b in run.budgets]
        points = [(x, s) for x, s in points if s.n > 0]
        ax.errorbar([x for x, _ in points], [s.mean * scale for _, s in points],
                    yerr=[0.0 if s.n < 2 else s.std * scale for _, s in points], capsize=3,
                    marker=ARM_MARKERS.get(arm, "o"), color=arm_color(arm, run.arms), label=arm)
    _reference_markers(ax, run, xs, scale)
    ax.set_xscale("log")
    ax.set_xticks(list(xs.values()), [f"all ({x:.0f})" if b == "all" else b for b, x in xs.items()], minor=False)
    ax.minorticks_off()
    ax.set_xlabel("labels per class (log scale)")
    ax.set_ylabel(metric_label(run))
    ax.grid(alpha=0.3)
    legend_published_last(ax, title="arm")
    return f"Test error vs labels per class (`all`: every training label, n_train / n_classes per class); " \
           f"error bars: ±1 std over seeds{note}."


def legend_published_last(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: "published" in labels[i])
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=9, **kwargs)


def _reference_markers(ax, run: RunData, xs: dict[str, float], scale: float) -> None:
    for (budget, arm), value in run.published(run.metric).items():
        if budget in xs:
            ax.plot([xs[budget]], [value * scale], marker="*", markersize=13, linestyle="none",
                    color=arm_color(arm, run.arms + [arm]), markeredgecolor="black", label=f"{arm}: published")


def draw_sse_bars(ax, run: RunData) -> str:
    ok, budget = run.ok(), run.largest_budget
    arms = [a for a in run.arms if a in set(ok["arm"])]
    for i, arm in enumerate(arms):
        values = per_seed(ok, budget, arm, run.metric).to_numpy()
        s = summarize(values)
        ax.bar(i, s.mean, yerr=0.0 if s.n < 2 else s.std, capsize=4, color=arm_color(arm, run.arms),
               alpha=0.8, label=f"{arm} (n={s.n})")
        ax.plot(np.full(len(values), i), values, "k.", markersize=5)
    values = run.published(run.metric)
    published = [(i, values[(budget, a)]) for i, a in enumerate(arms) if (budget, a) in values]
    if published:
        ax.plot([i + 0.25 for i, _ in published], [v for _, v in published], marker="*", markersize=14,
                color="gold", markeredgecolor="black", linestyle="none", label="published")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_xlabel("arm")
    ax.set_ylabel(metric_label(run))
    ax.grid(axis="y", alpha=0.3)
    legend_published_last(ax)
    return "Test SSE per image by arm: bar = mean, error bar = ±1 std over seeds, dots = single seeds."


# ---------------------------------------------------------------- training curves

def plot_finetune_curves(run: RunData, path: Path) -> str | None:
    """Validation metric per epoch of the selected lr, mean and ±1 std band per arm, largest budget."""
    budget = run.largest_budget
    hist = run.history[(run.history["budget"] == budget) & run.history["selected"]]
    column = "val_error" if run.metric == "test_error" else "val_loss"
    hist = hist[hist[column].notna()]
    if hist.empty:
        return None
    scale = 100.0 if column == "val_error" else 1.0
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    for arm in [a for a in run.arms if a in set(hist["arm"])]:
        by_epoch = hist[hist["arm"] == arm].groupby("epoch")[column]
        mean, std = by_epoch.mean() * scale, by_epoch.std().fillna(0.0) * scale
        color = arm_color(arm, run.arms)
        n = hist.loc[hist["arm"] == arm, "seed"].nunique()
        ax.plot(mean.index, mean.to_numpy(), color=color, label=f"{arm} (n={n} seeds)")
        ax.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=color, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation error (%)" if scale == 100.0 else "validation reconstruction loss")
    ax.set_title(f"Fine-tuning at budget {budget}: validation curve of the selected lr")
    ax.grid(alpha=0.3)
    ax.legend(title="arm", fontsize=9)
    save(fig, path)
    return (f"Validation {'error' if scale == 100.0 else 'loss'} per fine-tuning epoch at budget {budget} "
            f"(selected lr of each arm and seed); line = mean, band = ±1 std over the seeds still training "
            f"at that epoch (runs stopped early drop out).")


def plot_pretrain_curves(run: RunData, path: Path) -> str | None:
    """Reconstruction loss per epoch, one panel per layer (train solid, validation dashed)."""
    frame = run.pretrain
    layers = sorted(int(k) for k in frame["layer"].unique())
    if not layers:
        return None
    widths = run.layer_widths or []
    ncols = min(len(layers), 4)
    nrows = -(-len(layers) // ncols)
    fig = new_figure(3.6 * ncols + 0.6, 3.2 * nrows)
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        rows = frame[frame["layer"] == layer]
        for column, style, color, label in (("train_loss", "-", "#1f77b4", "training"),
                                            ("val_loss", "--", "#ff7f0e", "validation")):
            by_epoch = rows[rows[column].notna()].groupby("epoch")[column]
            if by_epoch.ngroups == 0:
                continue
            mean, std = by_epoch.mean(), by_epoch.std().fillna(0.0)
            ax.plot(mean.index, mean.to_numpy(), style, color=color, label=label)
            ax.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=color, alpha=0.15)
        shape = f" ({widths[layer - 1]} → {widths[layer]})" if len(widths) > layer and widths[0] != "?" else ""
        ax.set_title(f"layer {layer}{shape}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("reconstruction loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n_seeds = frame["seed"].nunique()
    fig.suptitle(f"Greedy pretraining: reconstruction loss per layer (mean ± std over {n_seeds} seeds)")
    save(fig, path)
    return "Greedy layer-wise pretraining: each layer's reconstruction loss of its own input per epoch."


# ---------------------------------------------------------------- confusion matrix

def best_arm_with_predictions(run: RunData) -> tuple[str, list[int]] | None:
    """The arm with the lowest mean test error at the largest budget that has prediction files."""
    ok, budget, best = run.ok(), run.largest_budget, None
    for arm in run.arms:
        values = per_seed(ok, budget, arm, run.metric)
        seeds = [int(s) for s in values.index
                 if (run.path / "predictions" / f"seed{s}_budget{budget}_{arm}.npy").is_file()]
        if seeds and (best is None or values.mean() < best[0]):
            best = (values.mean(), arm, seeds)
    return None if best is None else (best[1], best[2])


def plot_confusion(run: RunData, y_test: np.ndarray, classes: list[str], arm: str, seeds: list[int],
                   path: Path) -> str:
    budget, k = run.largest_budget, len(classes)
    counts = np.zeros((k, k), dtype=np.int64)
    for seed in seeds:
        pred = np.load(run.path / "predictions" / f"seed{seed}_budget{budget}_{arm}.npy", allow_pickle=False)
        if len(pred) != len(y_test):
            raise ValueError(f"predictions/seed{seed}_budget{budget}_{arm}.npy has {len(pred)} entries for "
                             f"{len(y_test)} test labels")
        np.add.at(counts, (y_test.astype(np.int64), pred.astype(np.int64)), 1)
    share = 100.0 * counts / np.maximum(counts.sum(1, keepdims=True), 1)   # % of each true class
    fig = new_figure(max(5.5, 0.5 * k + 2.5), max(4.6, 0.45 * k + 2))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=100.0)
    if k <= 12:
        for (i, j), v in np.ndenumerate(share):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 50 else "black")
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right"
                  if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix: {arm}, budget {budget}, {plural(len(seeds), 'seed')} pooled")
    fig.colorbar(image, ax=ax, label="% of the true class", shrink=0.85)   # the cells' unit
    save(fig, path)
    return (f"Confusion matrix of the best arm at the largest budget ({arm}, budget {budget}); rows are true "
            f"classes, cells show % of each true class, test predictions of {plural(len(seeds), 'seed')} pooled.")
