"""Side-by-side report of several run directories: one column block per run for the setup, the
results and the paired difference pretrained - random, plus one results figure with a panel per run.
Each run's own report.md keeps its details and figures.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import sections
from .markup import Block, Bullets, Figure, Heading, Para, Table
from .plots import plot_results
from .rundata import RunData, sorted_budgets
from .stats import fmt_p, verdict

DASH = sections.DASH


def run_labels(runs: list[RunData]) -> list[str]:
    """Pipeline names; where names repeat, the folders' paths (numbered only if those repeat too)."""
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        names = [str(run.path) for run in runs]
    if len(set(names)) < len(names):
        names = [f"{name} ({i + 1})" for i, name in enumerate(names)]
    return names


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys -> JSON text of each leaf."""
    out = {}
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value)
    return out


def differing_settings(runs: list[RunData], labels: list[str]) -> list[Block]:
    """The config settings that differ between the runs, by dotted key, one column per run."""
    flat = [flatten(run.config) for run in runs]
    keys = sorted({k for f in flat for k in f})
    rows = tuple((f"`{k}`", *(f.get(k, DASH) for f in flat)) for k in keys if len({f.get(k) for f in flat}) > 1)
    if not rows:
        return [Heading(2, "Settings that differ"), Para("None: every run has the same config.json settings.")]
    return [Heading(2, "Settings that differ"),
            Para("The config.json settings whose values differ between the runs (dotted keys)."),
            Table(("setting", *labels), rows, "l" * (len(labels) + 1))]


def comparison_blocks(runs: list[RunData], fig_dir: Path) -> list[Block]:
    labels = run_labels(runs)
    names = ", ".join(f"**{label}** = `{run.path}`" for label, run in zip(labels, runs, strict=True))
    return [
        Heading(1, f"Comparison of {len(runs)} runs: greedy pretraining vs random initialisation"),
        Para(f"Each run's own statistics side by side, one column block per run ({names}). Each run's "
             f"report.md has its figures, per-seed values and config."),
        *differing_settings(runs, labels),
        Heading(2, "Setup"), sections.setup_table(runs, labels, skip=("run directory", "command", "platform")),
        *results_blocks(runs, labels),
        *paired_blocks(runs, labels),
        *reference_and_missing(runs, labels),
        *figure_blocks(runs, labels, fig_dir),
    ]


def _union(runs: list[RunData], attr: str) -> list[str]:
    seen: list[str] = []
    for run in runs:
        seen += [v for v in getattr(run, attr) if v not in seen]
    return sorted_budgets(seen) if attr == "budgets" else seen


def results_blocks(runs: list[RunData], labels: list[str]) -> list[Block]:
    cells = [{(b, a): s for b, a, s in sections.summary_rows(run)} for run in runs]
    rows = []
    for b in _union(runs, "budgets"):
        for arm in _union(runs, "arms"):
            row = [b, arm]
            for run, table in zip(runs, cells, strict=True):
                s = table.get((b, arm))
                row += [DASH, "not in this run", DASH] if s is None else \
                    [sections.fmt_mean_std(run, s), sections.fmt_ci(run, s), str(s.n)]
            if any((b, arm) in table for table in cells):
                rows.append(tuple(row))
    header = ["budget", "arm"]
    for run, label in zip(runs, labels, strict=True):
        header += [f"{label}: {sections.metric_name(run)}", f"{label}: 95% CI", f"{label}: n"]
    return [Heading(2, "Results"),
            Para("Per run: mean ± std over seeds, the 95% t confidence interval of the mean and n seeds."),
            Table(tuple(header), tuple(rows), "ll" + "rrr" * len(runs))]


def paired_blocks(runs: list[RunData], labels: list[str]) -> list[Block]:
    pairs = [{b: (p, adj) for b, p, adj in sections.paired_rows(run)} if {"pretrained", "random"} <= set(run.arms)
             else {} for run in runs]
    rows = []
    for b in _union(runs, "budgets"):
        row = [b]
        for run, table in zip(runs, pairs, strict=True):
            p, adj = table.get(b, (None, None))
            row += [DASH, DASH, DASH] if p is None else [*sections.fmt_diff(run, p), fmt_p(adj)]
        rows.append(tuple(row))
    verdicts = [f"**{label}, budget {b}**: {verdict(p, p_adjusted=adj)} (n = {p.n})"
                for label, table in zip(labels, pairs, strict=True) for b, (p, adj) in table.items()]
    header = ["budget"]
    for label in labels:
        header += [f"{label}: mean difference", f"{label}: 95% CI", f"{label}: p (Holm)"]
    return [Heading(2, "Paired difference: pretrained − random"),
            Para("Per seed, pretrained minus random (percentage points of test error, or SSE per image); "
                 "two-sided paired t-test, `scipy.stats.ttest_rel`, its p-values adjusted over each run's "
                 "budgets by Holm-Bonferroni; alpha = 0.05."),
            Table(tuple(header), tuple(rows), "l" + "rrr" * len(runs)),
            Bullets(tuple(verdicts) or ("no run has both a pretrained and a random arm.",))]


def reference_and_missing(runs: list[RunData], labels: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Published figures and missing results")]
    for run, label in zip(runs, labels, strict=True):
        blocks.append(Heading(3, label))
        blocks += [b for b in sections.reference_blocks(run) if not isinstance(b, Heading)]
        if not run.reference:
            blocks.append(Para("No published figures in this run's config."))
        blocks += [b for b in sections.missing_blocks(run) if not isinstance(b, Heading)]
    return blocks


def figure_blocks(runs: list[RunData], labels: list[str], fig_dir: Path) -> list[Block]:
    fig_dir.mkdir(parents=True, exist_ok=True)
    usable = [(run, label) for run, label in zip(runs, labels, strict=True) if not run.ok().empty]
    if not usable:
        return [Heading(2, "Figures"), Para("**Not drawn:** no run has finished results.")]
    path = fig_dir / "results.png"
    caption = plot_results([r for r, _ in usable], [label for _, label in usable], path)
    return [Heading(2, "Figures"), Heading(3, "Results by run"),
            Figure(f"figures/{path.name}", caption, "Results by run")]
