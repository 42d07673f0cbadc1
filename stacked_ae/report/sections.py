"""The sections of a run's report as blocks: setup, results with the paired test, published
figures, what is missing or failed, per-seed values. Number formats are fixed here, so the
same files always give the same text.
"""
from __future__ import annotations

import math
from collections import Counter

from .markup import Block, Bullets, Heading, Para, Table
from .rundata import UNRECORDED, RunData
from .stats import ALPHA, WILCOXON_MIN_N, Paired, Summary, compare_arms, fmt_p, holm, per_seed, summarize, verdict

DASH = "—"


# ---------------------------------------------------------------- number formats

def metric_name(run: RunData) -> str:
    return "test error (%)" if run.metric == "test_error" else "test SSE"


def metric_noun(run: RunData) -> str:
    return "test error" if run.metric == "test_error" else "test SSE"


def diff_unit(run: RunData) -> str:
    return "percentage points" if run.metric == "test_error" else "SSE per image"


def fmt_value(run: RunData, value: float) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{100 * value:.2f}" if run.metric == "test_error" else f"{value:.2f}"


def fmt_mean_std(run: RunData, s: Summary) -> str:
    if s.n == 0:
        return DASH
    if s.n == 1:
        return fmt_value(run, s.mean)
    return f"{fmt_value(run, s.mean)} ± {fmt_value(run, s.std)}"


def fmt_ci(run: RunData, s: Summary) -> str:
    if s.n == 0:
        return "no results"
    if s.n == 1:
        return DASH
    return f"[{fmt_value(run, s.lo)}, {fmt_value(run, s.hi)}]"


def fmt_seconds(seconds) -> str:
    """Wall time in minutes (seconds below one minute)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or math.isnan(seconds):
        return DASH
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:,.1f} min"


# ---------------------------------------------------------------- intro and setup

def architecture(run: RunData) -> str:
    widths = run.layer_widths
    if widths is None:
        return "unknown (no `sizes` in config.json)"
    return "-".join(widths)


def intro(run: RunData) -> str:
    shared = "the same labeled subset" if run.task == "classification" else "the same training images"
    return (f"Greedy layer-wise pretraining against the same `{architecture(run)}` network trained from random "
            f"initialisation ({run.task}, dataset `{run.dataset.get('name', 'unknown')}`). Every arm of a seed "
            f"and label budget sees {shared}, so arms are compared **paired by seed**. Rendered by "
            f"`sae report` from the files of the run directory `{run.path.name}` alone.")


def stage_order(stage: str) -> tuple[int, str]:
    known = ("pretrain", "finetune", "baselines")
    return (known.index(stage) if stage in known else len(known), stage)


def setup_rows(run: RunData) -> list[tuple[str, str]]:
    data, man = run.dataset, run.manifest
    shape = "×".join(str(s) for s in run.image_shape) or "not images"
    seconds = man.get("stage_seconds") or {}
    total = sum(v for v in seconds.values() if isinstance(v, (int, float)))
    known = lambda v: DASH if v in (None, "") else str(v)  # noqa: E731
    return [
        ("pipeline", run.name), ("run directory", f"`{run.path.name}`"), ("task", run.task),
        ("dataset", f"{known(data.get('name'))} ({known(run.n_classes)} classes)"),
        ("split sizes", f"train {known(data.get('n_train'))}, validation {known(data.get('n_val'))}, "
                        f"test {known(data.get('n_test'))}"),
        ("input", f"{known(data.get('n_features'))} features; image shape {shape}"),
        ("architecture", architecture(run)),
        ("label budgets (per class)", ", ".join(run.budgets) or DASH),
        ("labels used (training / validation)", labels_used(run)),
        ("model selection", selection_protocol(run)),
        ("seeds", f"{', '.join(map(str, run.seeds))} (n = {len(run.seeds)})"),
        ("arms", ", ".join(run.arms) or DASH),
        ("versions", f"stacked-ae {known(man.get('stacked_ae_version'))}, torch {known(man.get('torch_version'))}, "
                     f"Python {known(man.get('python_version'))}"),
        ("command", f"`{man['command']}`" if man.get("command") else DASH),
        ("platform", known(man.get("platform"))),
        ("git commit", known(man.get("git_commit")) + (" (with uncommitted changes)" if man.get("git_dirty") else "")),
        *([("invocations", f"{len(man['invocations'])} (the run was resumed; the command above is the last)")]
          if len(man.get("invocations", [])) > 1 else []),
        ("device", devices(run)),
        ("started / finished", f"{known(man.get('started'))} / {known(man.get('finished'))}"),
        ("wall time", "; ".join(f"{k} {fmt_seconds(seconds[k])}" for k in sorted(seconds, key=stage_order))
         + (f"; total {fmt_seconds(total)}" if seconds else DASH)),
    ]


def devices(run: RunData) -> str:
    """Where the stages in the tables ran, counted from their stage records as the Compute table counts them
    (`cpu: 80 stages`, or a GPU and a CPU for a run resumed on another machine); where no record names a device,
    the counts the run's end wrote to the manifest, else the last invocation's device."""
    counts = sum(run.stage_devices.values(), Counter())
    if set(counts) <= {UNRECORDED}:
        counts = Counter(run.manifest.get("stage_devices") or {})
    if not counts:
        return str(run.manifest.get("device") or DASH)
    return "; ".join(f"{device}: {n} stage{'s' if n != 1 else ''}" for device, n in sorted(counts.items()))


def labels_used(run: RunData) -> str:
    """Per budget, the labeled training examples and the validation examples model selection used."""
    res, parts = run.results, []
    for b in run.budgets:
        rows = res[res["budget"] == b]
        n_train = _one_count(rows, "n_labeled")
        n_val = _one_count(rows, "n_val_labeled")
        if n_val == DASH and run.dataset.get("n_val") is not None:
            n_val = f"{run.dataset['n_val']:,} (whole split)"
        parts.append(f"{b}: {n_train} / {n_val}")
    return "; ".join(parts) or DASH


def _one_count(rows, column: str) -> str:
    if column not in rows or rows[column].dropna().empty:
        return DASH
    values = sorted({int(v) for v in rows[column].dropna()})
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"


def val_per_class(run: RunData) -> str | None:
    """The run's data.val_per_class; "all" for runs from before the setting (they used the whole split)."""
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    return str(data.get("val_per_class", "all")) if run.config else None


def optimistic_budgets(run: RunData) -> list[str]:
    """The budgets (not "all") whose model selection saw more validation labels than training labels: not what a
    user with the budget has. Read from results.csv's label counts (`data.val_per_class = "all"`, or an integer
    above a budget); runs from before `n_val_labeled` was kept are judged by the setting."""
    if run.task != "classification":
        return []
    res = run.results
    if not {"n_labeled", "n_val_labeled"} <= set(res.columns) or res["n_val_labeled"].isna().all():
        return [b for b in run.budgets if b != "all"] if val_per_class(run) == "all" else []
    above = res[res["n_val_labeled"] > res["n_labeled"]]
    return [b for b in run.budgets if b != "all" and b in set(above["budget"].astype(str))]


def optimistic(run: RunData) -> bool:
    return bool(optimistic_budgets(run))


def optimistic_words(run: RunData) -> str:
    """"budget 10" or "budgets 10 and 100"."""
    budgets = optimistic_budgets(run)
    listed = " and ".join([", ".join(budgets[:-1]), budgets[-1]]) if len(budgets) > 1 else budgets[0]
    return f"budget{'s' if len(budgets) > 1 else ''} {listed}"


def selection_protocol(run: RunData) -> str:
    setting = val_per_class(run)
    if run.task != "classification":
        return "on the whole validation split"
    if setting == "budget":
        return ("`data.val_per_class = \"budget\"`: as many validation labels per class as training labels "
                "(the whole split at budget all)")
    if setting == "all":
        return ("`data.val_per_class = \"all\"`: the whole validation split at every budget; **low-budget results "
                "are optimistic** (more validation labels than training labels)")
    text = (f"`data.val_per_class = {setting}`: {setting} validation labels per class at every budget, or all that "
            f"a class has")
    if optimistic(run):
        text += (f"; **results at {optimistic_words(run)} are optimistic** (more validation labels than training "
                 f"labels)")
    return text


def setup_table(runs: list[RunData], labels: list[str] | None = None, skip: tuple[str, ...] = ()) -> Table:
    """One column per run; rows that only some runs have (a resumed run's invocations) are dashes elsewhere."""
    columns = [dict(setup_rows(run)) for run in runs]
    keys: list[str] = []
    for run in runs:
        keys += [key for key, _ in setup_rows(run) if key not in skip and key not in keys]
    header = ("setting", *(labels or ["value"]))
    return Table(header, tuple((key, *(col.get(key, DASH) for col in columns)) for key in keys), "l" * len(header))


# ---------------------------------------------------------------- results and the paired test

def summary_rows(run: RunData) -> list[tuple[str, str, Summary]]:
    ok = run.ok()
    return [(b, arm, summarize(per_seed(ok, b, arm, run.metric))) for b in run.budgets for arm in run.arms]


def paired_rows(run: RunData) -> list[tuple[str, Paired, float]]:
    """(budget, paired test, Holm-adjusted p over the report's budgets) per budget."""
    ok = run.ok()
    pairs = [(b, compare_arms(ok, b, run.metric)) for b in run.budgets]
    adjusted = holm([p.p for _, p in pairs])
    return [(b, p, adj) for (b, p), adj in zip(pairs, adjusted, strict=True)]


def fmt_diff(run: RunData, paired: Paired) -> tuple[str, str]:
    """(mean difference, 95% CI) of pretrained - random, signed."""
    d = paired.diff
    mean = DASH if d.n == 0 else f"{'+' if d.mean > 0 else ''}{fmt_value(run, d.mean)}"
    return mean, fmt_ci(run, d)


def results_blocks(run: RunData, wide: Table | None = None) -> list[Block]:
    rows = tuple((b, arm, fmt_mean_std(run, s), fmt_ci(run, s), str(s.n)) for b, arm, s in summary_rows(run))
    blocks: list[Block] = [
        Heading(2, "Results"),
        *([Para(f"The {metric_name(run)}, mean ± standard deviation over seeds:"), wide] if wide else []),
        Para(f"The {metric_name(run)} of each label budget and arm over seeds: mean ± sample standard deviation, "
             f"the 95% confidence interval of the mean (t distribution, n − 1 degrees of freedom) and n, the "
             f"number of seeds that finished. Failed stages are left out and listed under **Missing or failed**."),
        Table(("budget", "arm", f"{metric_name(run)}: mean ± std", "95% CI", "n"), rows, "llrrr"),
        *knn_blocks(run),
        Heading(3, "Paired difference: pretrained − random"),
    ]
    if not {"pretrained", "random"} <= set(run.arms):
        missing = sorted({"pretrained", "random"} - set(run.arms))
        return blocks + [Para(f"No paired comparison: the run has no arm {', '.join(missing)}.")]
    return blocks + paired_blocks(run)


def knn_means(run: RunData) -> dict[str, Summary]:
    """Per arm, the kNN accuracy of the codes over seeds (reconstruction runs that recorded it)."""
    ok = run.ok()
    if run.task != "reconstruction" or "knn_accuracy" not in ok or not ok["knn_accuracy"].notna().any():
        return {}
    ok = ok[ok["knn_accuracy"].notna()]
    out = {}
    for arm in run.arms:
        s = summarize(per_seed(ok, "all", arm, "knn_accuracy"))
        if s.n:
            out[arm] = s
    return out


def knn_blocks(run: RunData) -> list[Block]:
    knn = knn_means(run)
    if not knn:
        return []
    rows = tuple((arm, f"{100 * s.mean:.2f}" + (f" ± {100 * s.std:.2f}" if s.n > 1 else ""), str(s.n))
                 for arm, s in knn.items())
    return [Heading(3, "Codes: k-nearest-neighbour accuracy"),
            Para("How well each arm's codes keep the classes apart, without training on any label: the test "
                 "accuracy (%) of a 5-nearest-neighbour vote among the codes of all training images "
                 "(Euclidean distance), mean ± std over seeds. Higher is better."),
            Table(("arm", "kNN accuracy (%)", "n"), rows, "lrr")]


def paired_blocks(run: RunData) -> list[Block]:
    pairs = paired_rows(run)
    if not pairs:
        return [Para("No paired comparison: neither results.csv nor config.json names a label budget.")]
    rows = []
    for b, p, adj in pairs:
        mean, ci = fmt_diff(run, p)
        t = DASH if math.isnan(p.t) else f"{p.t:.3f}"
        wil = fmt_p(p.p_wilcoxon) if p.n >= WILCOXON_MIN_N else f"{DASH} (n < {WILCOXON_MIN_N})"
        rows.append((b, str(p.n), mean, ci, t, fmt_p(p.p), fmt_p(adj), wil))
    return [
        Para(f"Per seed, pretrained minus random at the same budget and labeled subset, in {diff_unit(run)} "
             f"(negative: pretraining lowered the {metric_noun(run)}). Test: two-sided paired t-test, "
             f"`scipy.stats.ttest_rel`, over the seeds where both arms finished; the interval is the t interval "
             f"of the mean difference. The Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, two-sided) is "
             f"shown from n ≥ {WILCOXON_MIN_N} pairs. Each budget is a test of its own: the verdicts use the "
             f"t-test's p-values adjusted over {_tested_budgets(pairs)} by Holm-Bonferroni (Holm 1979). "
             f"Significance level alpha = {ALPHA:g}."),
        Table(("budget", "pairs", "mean difference", "95% CI", "t", "p (paired t-test)", "p (Holm)",
               "p (Wilcoxon)"), tuple(rows), "lrrrrrrr"),
        Para("**Verdict** per budget:"),
        Bullets(tuple(f"**budget {b}**: {verdict(p, p_adjusted=adj)}" + _difference_note(run, p)
                      for b, p, adj in pairs)),
        *([Para(optimistic_note(run))] if optimistic(run) else []),
    ]


def optimistic_note(run: RunData) -> str:
    if val_per_class(run) == "all":
        return ("**Optimistic at low budgets:** model selection used the whole validation split at every budget "
                "(`data.val_per_class = \"all\"`), more validation labels than training labels; a user with that "
                "many labels could not select this way.")
    return (f"**Optimistic at {optimistic_words(run)}:** model selection used more validation labels than training "
            f"labels there (`data.val_per_class = {val_per_class(run)}`); a user with that many labels could not "
            f"select this way.")


def _difference_note(run: RunData, p: Paired) -> str:
    if p.n == 0:
        return ""
    return f"; mean difference {fmt_diff(run, p)[0]} {diff_unit(run)} over {p.n} paired seed{'' if p.n == 1 else 's'}"


# ---------------------------------------------------------------- published figures

def reference_blocks(run: RunData) -> list[Block]:
    if not run.reference:
        return []
    ok, rows = run.ok(), []
    for metric in ("test_error", "test_sse"):
        for (budget, arm), value in run.published(metric).items():
            s = summarize(per_seed(ok[ok[metric].notna()], budget, arm, metric)) if metric in ok else summarize([])
            scale = 100.0 if metric == "test_error" else 1.0
            measured = DASH if s.n == 0 else f"{scale * s.mean:.2f}" + ("" if s.n < 2 else f" ± {scale * s.std:.2f}")
            unit = " (%)" if metric == "test_error" else ""
            rows.append((f"{metric}{unit}", budget, arm, measured, str(s.n), f"{scale * value:.2f}"))
    source = run.reference.get("source", "not given")
    if not rows:
        return [Heading(2, "Published figures"), Para(f"The config's `reference` (source: {source}) has no "
                                                       f"`test_error` or `test_sse` values to compare.")]
    return [Heading(2, "Published figures"),
            Para(f"Published values beside this run's. Source: **{source}**. A value given without a budget is "
                 f"compared at the run's largest budget."),
            Table(("metric", "budget", "arm", "this run: mean ± std", "n", "published"), tuple(rows), "lllrrr")]


# ---------------------------------------------------------------- missing, failed, per seed

def _seeds(seeds: set) -> str:
    return ", ".join(str(int(s)) for s in sorted(seeds))


def coverage_notes(run: RunData) -> list[str]:
    ok, failed, notes = run.ok(), run.failed(), []
    seen_arms = set(run.results["arm"].dropna())
    for arm in run.arms:
        if arm not in seen_arms:
            notes.append(f"arm `{arm}`: no results at all (listed in the config).")
    for b in run.budgets:
        for arm in [a for a in run.arms if a in seen_arms]:
            done = set(per_seed(ok, b, arm, run.metric).index)
            rows = run.results[(run.results["budget"] == b) & (run.results["arm"] == arm)]
            bad = set(failed[(failed["budget"] == b) & (failed["arm"] == arm)]["seed"])
            empty = set(rows["seed"]) - done - bad
            absent = set(run.seeds) - set(rows["seed"])
            if len(done) < len(run.seeds):
                parts = [f"budget {b}, arm `{arm}`: {len(done)} of {len(run.seeds)} seeds finished"]
                parts += [f"failed: seed {_seeds(bad)}"] if bad else []
                parts += [f"no {run.metric} value: seed {_seeds(empty)}"] if empty else []
                parts += [f"no row: seed {_seeds(absent)}"] if absent else []
                notes.append("; ".join(parts) + ".")
    return notes


def missing_blocks(run: RunData) -> list[Block]:
    notes = run.notes + coverage_notes(run)
    failed = run.failed()
    blocks: list[Block] = [Heading(2, "Missing or failed")]
    if not notes and failed.empty:
        return blocks + [Para("Nothing is missing: every seed × budget × arm finished and every file is present.")]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    if not failed.empty:
        rows = tuple((str(r.seed), str(r.budget), str(r.arm), str(r.message) or DASH)
                     for r in failed.itertuples())
        blocks += [Para(f"{len(rows)} failed stage(s), with their messages:"),
                   Table(("seed", "budget", "arm", "message"), rows, "rlll")]
    return blocks


def per_seed_blocks(run: RunData) -> list[Block]:
    res, rows = run.results, []
    shared = "labeled subset" if run.task == "classification" else "training images"
    for b in run.budgets:
        for seed in run.seeds:
            cells = res[(res["budget"] == b) & (res["seed"] == seed)]
            hashes = sorted(set(cells["subset_hash"].dropna().astype(str)))
            values = []
            for arm in run.arms:
                row = cells[cells["arm"] == arm]
                if row.empty:
                    values.append(DASH)
                elif row["status"].iloc[0] != "ok":
                    values.append("failed")
                else:
                    values.append(fmt_value(run, float(row[run.metric].iloc[0])))
            rows.append((b, str(seed), " / ".join(hashes) or DASH, *values))
    return [Heading(2, "Per-seed results"),
            Para(f"The {metric_name(run)} of every seed; `failed`: the stage failed, {DASH}: no row. Every arm of a "
                 f"seed and budget trains on the same {shared} (its hash in the subset column)."),
            Table(("budget", "seed", "subset", *run.arms), tuple(rows), "lrl" + "r" * len(run.arms))]


def version_blocks(run: RunData) -> list[Block]:
    """Stages made by another stacked-ae version or commit than the run's last invocation (resumed runs)."""
    last = (run.manifest.get("stacked_ae_version"), run.manifest.get("git_commit"))
    others: dict[tuple, list[str]] = {}
    for key, record in run.stage_records.items():
        if "stacked_ae_version" not in record:
            continue   # written before stage records named their version: nothing to compare
        made = (record.get("stacked_ae_version"), record.get("git_commit"))
        if made != last:
            others.setdefault(made, []).append(key)
    if not others:
        return []
    items = tuple(f"{len(stages)} stage(s) by stacked-ae {version}"
                  f"{f' at commit {commit[:12]}' if commit else ''}: {', '.join(stages[:6])}"
                  f"{' ...' if len(stages) > 6 else ''}" for (version, commit), stages in sorted(
                      others.items(), key=lambda kv: str(kv[0])))
    return [Heading(2, "Stages from other versions"),
            Para(f"The last run used stacked-ae {last[0] or DASH} at commit {(last[1] or DASH)[:12]}; these "
                 f"finished stages were reused from earlier invocations made by other code:"),
            Bullets(items)]


def _tested_budgets(pairs) -> str:
    """'the 3 budgets', or 'the 2 budgets that have a test (of 3)': Holm's m counts only budgets with a p-value."""
    tested = sum(not math.isnan(p.p) for _, p, _ in pairs)
    if tested == 0:
        return "the budgets that have a test (none here)"
    if tested == len(pairs):
        return f"the {tested} budget{'s' if tested != 1 else ''}"
    return f"the {tested} budget{'s that have' if tested != 1 else ' that has'} a test (of {len(pairs)})"
