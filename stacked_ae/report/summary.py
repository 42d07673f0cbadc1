"""The top of a report: the answer per label budget in one sentence each, the budget x arm table, how
every arm was tuned (selected values, best epochs against the cap, with warnings where a selection
sits on the edge of its grid), and what each arm cost in minutes.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

import pandas as pd

from .markup import Block, Bullets, Heading, Para, Table
from .rundata import PRETRAINED_ARMS, UNRECORDED, RunData
from .sections import (
    DASH,
    diff_unit,
    fmt_ci,
    fmt_mean_std,
    fmt_seconds,
    fmt_value,
    knn_means,
    optimistic,
    optimistic_words,
    paired_rows,
    val_per_class,
)
from .stats import ALPHA, fmt_p, per_seed, summarize

BASELINES = ("frozen", "logreg", "pca-logreg", "pca")   # arms that do not fine-tune a pretrained network


def _budget_words(run: RunData, budget: str) -> str:
    if run.task != "classification":
        return "All training images"
    return "All labels" if budget == "all" else f"{budget} labels per class"


def _means(run: RunData, budget: str) -> dict[str, float]:
    ok = run.ok()
    out = {}
    for arm in run.arms:
        s = summarize(per_seed(ok, budget, arm, run.metric))
        if s.n:
            out[arm] = s.mean
    return out


def summary_blocks(run: RunData) -> list[Block]:
    """One sentence per budget: the effect of pretraining, the best arm, and pretraining against the best baseline."""
    lines = []
    pairs = {b: (p, adj) for b, p, adj in paired_rows(run)} if {"pretrained", "random"} <= set(run.arms) else {}
    for b in run.budgets:
        means = _means(run, b)
        if not means:
            lines.append(f"**{_budget_words(run, b)}:** no finished results.")
            continue
        parts = []
        if b in pairs and pairs[b][0].n:
            p, adj = pairs[b]
            effect = f"pretrained − random = {_signed(run, p.diff.mean)} {diff_unit(run)}"
            if p.n >= 2 and not math.isnan(p.p):
                word = ("helped" if p.diff.mean < 0 else "hurt") if adj < ALPHA else "made no significant difference"
                effect += f" (95% CI {fmt_ci(run, p.diff)}, Holm-adjusted p = {fmt_p(adj)}): pretraining {word}"
            parts.append(effect)
        best = min(means, key=means.get)
        parts.append(f"best arm {best} ({fmt_value(run, means[best])})")
        baselines = {a: v for a, v in means.items() if a in BASELINES}
        if "pretrained" in means and baselines:
            rival = min(baselines, key=baselines.get)
            gap = means["pretrained"] - baselines[rival]
            verdict = "beat" if gap < 0 else "did not beat"
            parts.append(f"the pretrained network {verdict} the best baseline, {rival} "
                         f"({fmt_value(run, baselines[rival])}), {'by' if gap < 0 else 'short by'} "
                         f"{fmt_value(run, abs(gap))}")
        knn = knn_means(run)
        if knn:
            best_knn = max(knn, key=lambda a: knn[a].mean)
            parts.append(f"the codes' 5-nearest-neighbour accuracy is highest for {best_knn} ("
                         + ", ".join(f"{a} {100 * s.mean:.1f}%" for a, s in knn.items()) + ")")
        lines.append(f"**{_budget_words(run, b)}:** " + "; ".join(parts) + ".")
    notes = []
    if run.manifest.get("started") and not run.manifest.get("finished"):
        expected = len(run.seeds) * len(run.budgets) * len(run.arms)
        notes.append(Para(f"**Unfinished run:** its last `sae run` stopped before the end (or is still running); "
                          f"{len(run.results)} of {expected} seed × budget × arm results are in (see **Missing or "
                          f"failed**). Run the same command again to resume: finished stages are reused."))
    if len(run.seeds) == 1:
        notes.append(Para("One seed: no confidence intervals and no tests; the numbers are single runs."))
    if optimistic(run) and val_per_class(run) == "all":
        notes.append(Para("Model selection used the whole validation split at every budget: low-budget results "
                          "are optimistic."))
    elif optimistic(run):
        notes.append(Para(f"Model selection used more validation labels than training labels at "
                          f"{optimistic_words(run)}: those results are optimistic."))
    flagged = [f"{row.arm} at budget {row.budget} ({'; '.join(row.reasons)})" for row in tuning_rows(run)
               if row.reasons]
    if flagged:
        notes.append(Para("Possibly under-tuned (see **Tuning**): " + ", ".join(flagged) + "."))
    return [Heading(2, "Summary"), Para(f"{_metric_words(run)}, mean over {_n_seeds(run)}."),
            Bullets(tuple(lines)), *notes]


def _signed(run: RunData, value: float) -> str:
    return f"{'+' if value > 0 else ''}{fmt_value(run, value)}"


def _metric_words(run: RunData) -> str:
    return "Test error in %" if run.metric == "test_error" else "Test squared error per image"


def _n_seeds(run: RunData) -> str:
    return f"{len(run.seeds)} seed" + ("" if len(run.seeds) == 1 else "s")


def wide_table(run: RunData) -> Table:
    """Budget x arm: mean ± std over seeds."""
    ok = run.ok()
    rows = tuple((b, *(fmt_mean_std(run, summarize(per_seed(ok, b, arm, run.metric))) for arm in run.arms))
                 for b in run.budgets)
    return Table(("budget", *run.arms), rows, "l" + "r" * len(run.arms))


# ---------------------------------------------------------------- tuning in view

def _finetune(run: RunData) -> dict:
    section = run.config.get("finetune")
    return section if isinstance(section, dict) else {}


def _truthy(value) -> bool:
    """A results.csv boolean as read back (True / "True"; empty for rows made before the column)."""
    return value is True or str(value).strip().lower() == "true"


def _counts(values) -> str:
    counts = Counter(values)
    return ", ".join(f"{v:g} ×{n}" for v, n in sorted(counts.items()))


EDGE, ONE_VALUE, CAP = ("a selection on an edge of what was tried", "a one-value grid",
                        "best epochs at or near the epoch cap")


class TuningRow(NamedTuple):
    """A row of the Tuning table (its first five fields) and the reasons, in a few words, behind its flag."""
    budget: str
    arm: str
    selected: str
    epochs: str
    flag: str
    reasons: tuple[str, ...] = ()


def tuning_row(run: RunData, budget: str, arm: str, grid: list[float], cap: int | None,
               patience: int | None = None, extended: bool = False) -> TuningRow | None:
    rows = run.ok()
    rows = rows[(rows["budget"] == budget) & (rows["arm"] == arm)]
    if rows.empty:
        return None
    warnings, reasons = [], []
    column = "lr" if "lr" in rows and rows["lr"].notna().any() else "C" if "C" in rows else None
    chosen = [float(v) for v in rows[column].dropna()] if column else []
    selected = f"{column} {_counts(chosen)}" if chosen else DASH
    if column == "lr" and len(grid) > 1 and chosen and extended and "on_grid_edge" in rows:
        # the grid grew beyond its ends where the best rate sat there: the edge is that of the rates tried
        edges = [float(v) for v, edge in zip(rows["lr"], rows["on_grid_edge"], strict=True)
                 if pd.notna(v) and _truthy(edge)]
        sides = (("top", sum(v >= max(grid) for v in edges)), ("bottom", sum(v <= min(grid) for v in edges)))
        for side, count in sides:
            if count:
                reasons.append(EDGE)
                warnings.append(f"{count} of {len(chosen)} at the {side} of the rates tried, after extending the "
                                f"grid: widen it further")
    elif column == "lr" and len(grid) > 1 and chosen:
        for side, end in (("top", max(grid)), ("bottom", min(grid))):
            on_edge = sum(1 for v in chosen if v == end)
            if on_edge:
                reasons.append(EDGE)
                warnings.append(f"{on_edge} of {len(chosen)} at the {side} of the grid: widen the grid")
    elif column == "lr" and len(grid) == 1:
        reasons.append(ONE_VALUE)
        warnings.append("a one-value grid: not tuned")
    elif column == "C" and "on_grid_edge" in rows:
        on_edge = int(rows["on_grid_edge"].map(_truthy).sum())
        if on_edge:
            reasons.append(EDGE)
            warnings.append(f"{on_edge} of {len(chosen)} at an end of the C grid: widen the grid")
    best = [int(v) for v in rows["best_epoch"].dropna()] if "best_epoch" in rows else []
    epochs = DASH
    if best:
        epochs = f"{', '.join(map(str, sorted(best)))} of {cap if cap else '?'}"
        on_cap = sum(1 for e in best if cap and e >= cap)
        if on_cap:
            reasons.append(CAP)
            warnings.append(f"{on_cap} of {len(best)} best epochs on the cap: allow more epochs")
        # A best epoch less than `patience` epochs before the cap: the cap ended training before early
        # stopping could confirm the best, so the validation loss may still have been falling.
        near = sum(1 for e in best if cap and patience and cap - patience < e < cap)
        if near:
            reasons.append(CAP)
            warnings.append(f"{near} of {len(best)} best epochs within the patience ({patience}) of the cap: "
                            f"the cap, not early stopping, ended training; allow more epochs")
    flag = "may be under-tuned: " + "; ".join(warnings) if warnings else "inside the grid and before the cap"
    if not best and not warnings and column != "lr" and not (column == "C" and chosen and "on_grid_edge" in rows):
        flag = DASH   # nothing to check: no epochs, and no record of where C sits in its grid
    elif not best and not warnings:
        flag = "inside the grid"
    return TuningRow(budget, arm, selected, epochs, flag, tuple(dict.fromkeys(reasons)))


def _tuning_settings(run: RunData) -> tuple[list[float], int | None, int | None]:
    """The fine-tuning learning-rate grid, epoch cap and early-stopping patience of the run's config."""
    f = _finetune(run)
    grid = _floats(f.get("lr"))
    cap = f.get("epochs") if isinstance(f.get("epochs"), int) else None
    patience = f.get("patience") if isinstance(f.get("patience"), int) else None
    return grid, cap, patience


def _floats(values) -> list[float]:
    return [float(v) for v in values] if isinstance(values, list) else []


def _probe_grid(run: RunData) -> list[float]:
    """The frozen arm's own grid (finetune.probe_lr), or [] where it shares the networks' grid."""
    return _floats(_finetune(run).get("probe_lr"))


def tuning_rows(run: RunData) -> list[TuningRow]:
    grid, cap, patience = _tuning_settings(run)
    probe, extended = _probe_grid(run), _extend(run) > 0
    return [row for b in run.budgets for arm in run.arms
            if (row := tuning_row(run, b, arm, probe if arm == "frozen" and probe else grid, cap, patience,
                                  extended))]


def _extend(run: RunData) -> int:
    value = _finetune(run).get("extend")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def tuning_blocks(run: RunData) -> list[Block]:
    grid, cap, patience = _tuning_settings(run)
    rows = tuning_rows(run)
    if not rows:
        return []
    probe = _probe_grid(run)
    probe_text = f"; frozen: {', '.join(f'{v:g}' for v in probe)}" if probe and "frozen" in run.arms else ""
    if _extend(run):
        probe_text += (f"; extended by up to {_extend(run)} value{'s' if _extend(run) > 1 else ''} beyond an end "
                       f"where the best rate sat on it")
    return [Heading(2, "Tuning"),
            Para(f"What each arm selected on validation, over seeds: the learning rate (grid "
                 f"{', '.join(f'{v:g}' for v in grid) or DASH}{probe_text}; the count of seeds that chose each "
                 f"value) or the baselines' regularisation C (inf: none), and the best epoch of each seed against "
                 f"the cap of "
                 f"{cap or DASH} epochs{f' (early stopping patience {patience})' if patience else ''}. "
                 f"A selection on the edge of its grid, or a best epoch on the cap or within the patience "
                 f"before it, means the optimum may lie outside what was tried."),
            Table(("budget", "arm", "selected", "best epochs (of cap)", "check"), tuple(row[:5] for row in rows),
                  "lllll")]


# ---------------------------------------------------------------- compute in view

def compute_blocks(run: RunData) -> list[Block]:
    """Minutes per arm over all seeds and budgets; pretraining, shared by the arms built on it, beside them."""
    res = run.results
    if "wall_seconds" not in res:
        return []
    seconds = pd.to_numeric(res["wall_seconds"], errors="coerce")
    per_arm = {arm: float(seconds[res["arm"] == arm].sum()) for arm in run.arms}
    pretrain = (run.manifest.get("stage_seconds") or {}).get("pretrain")
    devices = run.stage_devices
    mixed = len({d for counts in devices.values() for d in counts if d != UNRECORDED}) > 1   # known devices
    rows = []
    for arm in run.arms:
        shared = ""
        if arm in PRETRAINED_ARMS and isinstance(pretrain, (int, float)):
            shared = f"+ {fmt_seconds(pretrain)} of greedy pretraining, shared"
            if mixed:
                shared += f" ({_devices_text(devices.get('pretraining', Counter()))})"
        rows.append((arm, fmt_seconds(per_arm[arm]), shared or DASH,
                     *([_devices_text(devices.get(arm, Counter()))] if mixed else [])))
    return [Heading(2, "Compute"),
            Para("Wall time of each arm summed over seeds and budgets (fine-tuning every grid value, or fitting "
                 "the baseline). Greedy pretraining runs once per seed and serves every budget of the arms built "
                 "on it." + (" The stages ran on more than one device (a scikit-learn baseline on the CPU of "
                             "that device's machine): compare times within a device." if mixed else "")),
            Table(("arm", "wall time", "pretraining", *(["device"] if mixed else [])), tuple(rows),
                  "lrl" + ("l" if mixed else ""))]


def _devices_text(counts: Counter) -> str:
    if not counts:
        return "not recorded"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{device} ×{n}" for device, n in sorted(counts.items()))
