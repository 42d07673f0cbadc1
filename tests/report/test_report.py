"""Tests of the report: numbers against pandas and scipy, figures, self-contained HTML, determinism,
and graceful rendering of incomplete runs. Built on a synthetic run directory in the exact
docs/run-directory.md format, with tiny real StackedEncoder checkpoints (8x8 images, 64-16-2).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stacked_ae import StackedEncoder
from stacked_ae.report.render import render_report

RESULT_COLUMNS = ["task", "seed", "budget", "arm", "status", "message", "n_labeled", "subset_hash", "lr",
                  "epochs_trained", "best_epoch", "val_error", "val_loss", "test_error", "test_loss", "test_sse",
                  "wall_seconds"]
NN_ARMS = ("pretrained", "random", "frozen")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TEST, N_SAMPLES, N_CLASSES = 120, 80, 10


def _result_row(task, seed, budget, arm, rng, n_labeled):
    base = {"pretrained": 0.10, "random": 0.14, "frozen": 0.20, "logreg": 0.12, "pca-logreg": 0.16,
            "pca": 14.0}[arm]
    nn = arm in NN_ARMS
    row = dict(task=task, seed=seed, budget=budget, arm=arm, status="ok", message="", n_labeled=n_labeled,
               subset_hash=f"{seed:04d}{budget:>8}".replace(" ", "0"), lr=0.01 if nn else None,
               epochs_trained=5 if nn else None, best_epoch=4 if nn else None, val_error=None, val_loss=0.3,
               test_error=None, test_loss=0.3 + rng.normal(0, 0.01), test_sse=None, wall_seconds=1.5)
    if task == "classification":
        scale = 1.0 if budget == "all" else 2.0
        row["val_error"] = round(base * scale + rng.normal(0, 0.01), 6)
        row["test_error"] = round(base * scale + rng.normal(0, 0.015), 6)
    else:
        row["test_sse"] = round((base if arm == "pca" else 4.0 + (arm == "random")) + rng.normal(0, 0.3), 6)
    return row


def _history_rows(task, seed, budget, arm, rng):
    rows = []
    for lr in (0.1, 0.01):
        for epoch in range(1, 6):
            err = 0.5 / epoch + rng.uniform(0, 0.05) if task == "classification" else None
            rows.append(dict(seed=seed, budget=budget, arm=arm, lr=lr, epoch=epoch,
                             train_loss=1.0 / epoch, val_loss=1.1 / epoch + rng.uniform(0, 0.05),
                             val_error=err, selected=lr == 0.01))
    return rows


def make_run_dir(root: Path, *, task="classification", seeds=(0, 1, 2), budgets=("10", "all"), arms=None,
                 reference=None, sizes=(16, 2)) -> Path:
    """Write a complete synthetic run directory (docs/run-directory.md) and return its path."""
    arms = list(arms or (NN_ARMS + ("logreg", "pca-logreg") if task == "classification"
                         else ("pretrained", "random", "pca")))
    budgets = budgets if task == "classification" else ("all",)
    root.mkdir(parents=True)
    rng = np.random.default_rng(123)
    config = {"name": root.name, "task": task, "seeds": list(seeds), "arms": arms,
              "data": {"dataset": "digits"}, "model": {"sizes": list(sizes)},
              "finetune": {"budgets": [b if b == "all" else int(b) for b in budgets], "epochs": 5}}
    if reference is not None:
        config["reference"] = reference
    (root / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    manifest = {"stacked_ae_version": "0.1.0", "torch_version": "2.x", "python_version": "3.11.2",
                "platform": "Linux-x86_64", "git_commit": "0123456789abcdef", "device": "cpu",
                "started": "2024-01-01T00:00:00Z", "finished": "2024-01-01T00:01:00Z",
                "dataset": {"name": "digits", "n_train": 1213, "n_val": 135, "n_test": N_TEST, "n_features": 64,
                            "image_shape": [8, 8], "classes": [str(c) for c in range(N_CLASSES)]},
                "stage_seconds": {"pretrain": 3.25, "finetune": 40.5, "baselines": 1.0}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    results, history, pretrain = [], [], []
    for seed in seeds:
        StackedEncoder.random(64, list(sizes), seed=seed).save(root / "encoders" / f"seed{seed}.pt")
        for budget in budgets:
            n_labeled = 1213 if budget == "all" else int(budget) * N_CLASSES
            for arm in arms:
                results.append(_result_row(task, seed, budget, arm, rng, n_labeled))
                if arm in NN_ARMS:
                    history += _history_rows(task, seed, budget, arm, rng)
                if task == "classification":
                    pred = rng.integers(0, N_CLASSES, N_TEST).astype(np.int64)
                    (root / "predictions").mkdir(exist_ok=True)
                    np.save(root / "predictions" / f"seed{seed}_budget{budget}_{arm}.npy", pred)
                elif arm in ("pretrained", "random"):
                    StackedEncoder.random(64, list(sizes), seed=100 + seed).save(
                        root / "models" / f"seed{seed}_budgetall_{arm}.pt")
        for layer in range(1, len(sizes) + 1):
            for epoch in range(1, 6):
                pretrain.append(dict(seed=seed, layer=layer, epoch=epoch, train_loss=0.7 / epoch + 0.1 * layer,
                                     val_loss=0.75 / epoch + 0.1 * layer))
    pd.DataFrame(results, columns=RESULT_COLUMNS).to_csv(root / "results.csv", index=False)
    pd.DataFrame(history).to_csv(root / "history.csv", index=False)
    pd.DataFrame(pretrain).to_csv(root / "pretrain.csv", index=False)
    y_test = rng.integers(0, N_CLASSES, N_TEST).astype(np.int64)
    np.savez(root / "samples.npz", X=rng.uniform(0, 1, (N_SAMPLES, 64)).astype(np.float32),
             y=y_test[:N_SAMPLES], y_test=y_test, image_shape=np.array([8, 8]),
             classes=np.array([str(c) for c in range(N_CLASSES)]))
    return root


# ---------------------------------------------------------------- fixtures and helpers

SEEDS = (0, 1, 2, 3, 4, 5)   # six seeds, so the Wilcoxon column is filled too
REFERENCE = {"source": "Vincent et al. 2010, Table 3", "test_error": {"pretrained": 0.0128}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A complete classification run directory, rendered once; returns the path of report.md."""
    run = make_run_dir(tmp_path_factory.mktemp("runs") / "digits-sdae", seeds=SEEDS, reference=REFERENCE)
    return render_report(run)


def ok_results(run_dir: Path) -> pd.DataFrame:
    res = pd.read_csv(run_dir / "results.csv", dtype={"budget": str})
    return res[res["status"] == "ok"]


def table_row(md: str, *cells: str) -> list[str] | None:
    """The cells of the first Markdown table row that starts with `cells`, or None."""
    for line in md.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and parts[:len(cells)] == list(cells):
            return parts
    return None


def p_format(p: float) -> str:
    """The report's p-value format: four decimals, scientific below 1e-4."""
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def rewrite_results(run_dir: Path, edit) -> None:
    res = pd.read_csv(run_dir / "results.csv", dtype={"budget": str, "message": str})
    edit(res).to_csv(run_dir / "results.csv", index=False)


# ---------------------------------------------------------------- the numbers

@pytest.mark.parametrize("budget", ["10", "all"])
@pytest.mark.parametrize("arm", ["pretrained", "random", "logreg"])
def test_headline_numbers_equal_pandas(rendered, budget, arm):
    """Mean ± std and the t interval of each budget and arm equal those computed from results.csv."""
    res = ok_results(rendered.parent)
    errors = res[(res["budget"] == budget) & (res["arm"] == arm)]["test_error"] * 100
    n, mean, std = len(errors), errors.mean(), errors.std()
    half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)
    row = table_row(rendered.read_text(), budget, arm)
    assert row == [budget, arm, f"{mean:.2f} ± {std:.2f}", f"[{mean - half:.2f}, {mean + half:.2f}]", str(n)], row


@pytest.mark.parametrize("budget", ["10", "all"])
def test_paired_test_equals_scipy(rendered, budget):
    """The paired difference, its t and p, and the Wilcoxon p equal scipy's on the same seed pairs."""
    res = ok_results(rendered.parent)
    wide = res[res["budget"] == budget].pivot(index="seed", columns="arm", values="test_error")
    pre, rand = wide["pretrained"], wide["random"]
    t, p = stats.ttest_rel(pre, rand)
    row = table_row(rendered.read_text(), budget, str(len(SEEDS)))
    assert row is not None, "no paired-difference row"
    _, n, mean, _ci, t_text, p_text, holm_text, w_text = row
    assert float(mean) == pytest.approx((pre - rand).mean() * 100, abs=0.006)
    assert float(t_text) == pytest.approx(t, abs=5e-4)
    assert p_text == p_format(p), (p_text, p)
    ps = {}
    for b in ("10", "all"):
        pair = res[res["budget"] == b].pivot(index="seed", columns="arm", values="test_error")
        ps[b] = stats.ttest_rel(pair["pretrained"], pair["random"]).pvalue
    low, high = sorted(ps.values())
    holm = {ps_key: (min(1, 2 * low) if value == low else max(min(1, 2 * low), high)) for ps_key, value in ps.items()}
    assert holm_text == p_format(holm[budget]), (holm_text, holm)
    assert w_text == p_format(stats.wilcoxon(pre, rand).pvalue)


def test_report_names_the_test_and_gives_a_verdict_per_budget(rendered):
    """The report says which test it used and gives one verdict line per budget."""
    md = rendered.read_text()
    assert "scipy.stats.ttest_rel" in md
    verdicts = re.findall(r"^- \*\*budget (\S+)\*\*: (.*)$", md, flags=re.M)
    assert [b for b, _ in verdicts] == ["10", "all"]
    assert verdicts[0][1].startswith("pretraining helped"), verdicts[0]  # pretrained is 8 points better at 10


def test_header_and_published_figures(rendered):
    """The header carries the setup from config.json and manifest.json; published values sit beside measured ones."""
    md = rendered.read_text()
    for text in ("64-16-2", "train 1213, validation 135, test 120", "0123456789abcdef", "pretrain 3 s",
                 "Vincent et al. 2010, Table 3"):
        assert text in md, text
    assert table_row(md, "test_error (%)", "all", "pretrained")[-1] == "1.28"


# ---------------------------------------------------------------- figures and HTML

def test_every_referenced_figure_is_a_valid_png(rendered):
    """Each figure report.md links to exists, starts with the PNG magic bytes and opens in PIL."""
    from PIL import Image
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rendered.read_text())
    names = {Path(p).stem for p in paths}
    assert names == {"label_efficiency", "finetune_curves", "pretrain_loss", "codes", "latent_grid",
                     "reconstructions", "filters", "confusion"}, names
    for rel in paths:
        path = rendered.parent / rel
        assert path.read_bytes()[:8] == PNG_MAGIC, rel
        with Image.open(path) as image:
            image.verify()


def test_html_is_self_contained(rendered):
    """report.html embeds every figure as a data URI and links to nothing outside itself."""
    page = (rendered.parent / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page and "<link" not in page


def test_rendering_twice_gives_identical_bytes(rendered):
    """The same files give a byte-identical report.md (and, with stable PNGs, report.html)."""
    first_md, first_html = rendered.read_bytes(), (rendered.parent / "report.html").read_bytes()
    again = render_report(rendered.parent)
    assert again.read_bytes() == first_md
    assert (rendered.parent / "report.html").read_bytes() == first_html


# ---------------------------------------------------------------- incomplete runs

def _fail_one_stage(res: pd.DataFrame) -> pd.DataFrame:
    """Seed 1, budget 10, arm random failed; arm logreg (listed in the config) has no rows at all."""
    res = res[res["arm"] != "logreg"].copy()
    hit = (res["seed"] == 1) & (res["budget"] == "10") & (res["arm"] == "random")
    res["message"] = res["message"].astype(object)
    res.loc[hit, ["status", "message"]] = ["failed", "TrainingDiverged: loss became nan at epoch 3"]
    res.loc[hit, ["test_error", "test_loss", "val_error", "val_loss"]] = np.nan
    return res


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory) -> str:
    """report.md of a run with a missing arm and a failed stage."""
    run = make_run_dir(tmp_path_factory.mktemp("runs") / "incomplete", arms=("pretrained", "random", "logreg"))
    rewrite_results(run, _fail_one_stage)
    return render_report(run).read_text()


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """report.md of a single-seed run without history.csv, pretrain.csv and samples.npz."""
    run = make_run_dir(tmp_path_factory.mktemp("runs") / "bare", seeds=(0,), arms=("pretrained", "random"))
    for name in ("history.csv", "pretrain.csv", "samples.npz"):
        (run / name).unlink()
    return render_report(run)


def test_missing_arm_still_renders_and_says_so(incomplete):
    """A config arm with no rows is named as missing and shows no numbers."""
    assert "arm `logreg`: no results at all (listed in the config)." in incomplete
    assert table_row(incomplete, "10", "logreg") == ["10", "logreg", "—", "no results", "0"]


def test_failed_stage_is_listed_with_its_message(incomplete):
    """A failed row is left out of the statistics and of the pairs, and listed with its message."""
    md = incomplete
    assert table_row(md, "1", "10", "random", "TrainingDiverged: loss became nan at epoch 3") is not None
    assert "budget 10, arm `random`: 2 of 3 seeds finished; failed: seed 1." in md
    assert table_row(md, "10", "random")[-1] == "2"
    assert table_row(md, "10", "2") is not None                   # the paired test runs on 2 seeds
    assert table_row(md, "10", "1")[-2] == "failed"               # the per-seed table marks it


def test_holm_counts_only_the_budgets_that_have_a_test(tmp_path):
    """Two seeds, and seed 1's random network failed at budget 10: that budget has one pair and no test, so Holm
    adjusts over the one budget that has a test, and the text says so (not 'over the 2 budgets')."""
    run = make_run_dir(tmp_path / "holm", seeds=(0, 1), arms=("pretrained", "random"))
    rewrite_results(run, _fail_one_stage)
    md = render_report(run).read_text()
    assert "adjusted over the 1 budget that has a test (of 2) by Holm-Bonferroni" in md
    assert "adjusted over the 2 budgets" not in md
    assert "adjusted over the 3 budgets by Holm-Bonferroni" in render_report(
        make_run_dir(tmp_path / "three", budgets=("10", "100", "all"), arms=("pretrained", "random"))).read_text()


def test_paired_comparison_without_one_arm_says_why(tmp_path):
    """Without any random-arm result the paired section says there is nothing to pair."""
    run = make_run_dir(tmp_path / "run", seeds=(0, 1), budgets=("all",), arms=("pretrained", "random"))
    rewrite_results(run, lambda res: res[res["arm"] != "random"])
    (run / "samples.npz").unlink()
    md = render_report(run).read_text()
    assert "**budget all**: no paired comparison (no seed has both arms)" in md


def test_single_seed_renders_without_intervals(bare):
    """With one seed the report shows the values and says that no interval or test is possible."""
    md = bare.read_text()
    assert table_row(md, "all", "pretrained")[3] == "—"
    assert "no test (a single paired seed)" in md
    assert md.count("One seed: no confidence intervals and no tests") == 1, "say it once"
    assert "n=1" not in md
    assert "1 of 1 seeds" not in md and "seeds finished" not in md, "a single seed is not a missing one"


def test_missing_optional_files_are_named(bare):
    """Without history, pretraining log and samples the report renders and names each gap."""
    md = bare.read_text()
    for text in ("`history.csv` is missing", "`pretrain.csv` is missing", "`samples.npz` is missing"):
        assert text in md, text
    assert (bare.parent / "figures" / "label_efficiency.png").is_file()


def test_non_image_data_skip_image_figures_with_a_note(tmp_path):
    """An empty image_shape draws the codes but not the image figures, and says why."""
    run = make_run_dir(tmp_path / "run", seeds=(0, 1), arms=("pretrained", "random"))
    samples = dict(np.load(run / "samples.npz"))
    np.savez(run / "samples.npz", **{**samples, "image_shape": np.array([], dtype=np.int64)})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"]["image_shape"] = []
    (run / "manifest.json").write_text(json.dumps(manifest))
    md = render_report(run).read_text()
    assert "`image_shape` is empty (the data are not images)" in md
    assert (run / "figures" / "codes.png").is_file() and not (run / "figures" / "filters.png").exists()


# ---------------------------------------------------------------- other pipelines and several runs

def test_reconstruction_run_reports_test_sse(tmp_path):
    """A reconstruction run reports test_sse per arm, the paired SSE difference and the published SSE."""
    reference = {"source": "Hinton & Salakhutdinov 2006, Fig. 2B", "test_sse": {"pretrained": 3.00, "pca": 13.87}}
    run = make_run_dir(tmp_path / "recon", task="reconstruction", reference=reference, sizes=(16, 4))
    md = render_report(run).read_text()
    res = ok_results(run)
    sse = res[res["arm"] == "pca"]["test_sse"]
    assert table_row(md, "all", "pca")[2] == f"{sse.mean():.2f} ± {sse.std():.2f}"
    wide = res.pivot(index="seed", columns="arm", values="test_sse")
    assert table_row(md, "all", "3")[5] == p_format(stats.ttest_rel(wide["pretrained"], wide["random"]).pvalue)
    assert table_row(md, "test_sse", "all", "pca")[-1] == "13.87"
    assert "2-D PCA projection of the 4-D codes" in md
    for name in ("test_sse", "interpolations", "reconstructions"):
        assert (run / "figures" / f"{name}.png").is_file(), name
    assert "pretrained, fine-tuned; random, fine-tuned; greedy stack, not fine-tuned" in md


def test_several_runs_give_a_side_by_side_comparison(tmp_path):
    """Two run directories give one table with a column block per run, in `comparison/` beside them."""
    a = make_run_dir(tmp_path / "a", seeds=(0, 1), arms=("pretrained", "random"))
    b = make_run_dir(tmp_path / "b", task="reconstruction", seeds=(0, 1))
    md_path = render_report([a, b])
    assert md_path == tmp_path / "comparison" / "report.md"
    md = md_path.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| budget | arm |"))
    assert "a: test error (%)" in header and "b: test SSE" in header
    res = ok_results(a)
    pre = res[(res["budget"] == "all") & (res["arm"] == "pretrained")]["test_error"] * 100
    assert table_row(md, "all", "pretrained")[2] == f"{pre.mean():.2f} ± {pre.std():.2f}"
    assert (tmp_path / "comparison" / "figures" / "results.png").read_bytes()[:8] == PNG_MAGIC
    assert 'src="data:image/png;base64,' in (tmp_path / "comparison" / "report.html").read_text()


def test_absent_reference_leaves_out_the_published_section(bare):
    """A config without `reference` renders without a published-figures section."""
    assert "## Published figures" not in bare.read_text()


@pytest.mark.parametrize("resumed_first", [True, False])
def test_side_by_side_runs_that_differ_in_every_optional_field(tmp_path, resumed_first):
    """A resumed run beside a fresh one (either order), one seed beside several, a failed stage, other arms:
    the comparison renders, with a dash where a run lacks a setting row."""
    resumed = make_run_dir(tmp_path / "resumed", seeds=(0, 1, 2))
    manifest = json.loads((resumed / "manifest.json").read_text())
    manifest["invocations"] = [{"command": "sae run x.toml"}, {"command": "sae run x.toml"}]
    (resumed / "manifest.json").write_text(json.dumps(manifest))
    rewrite_results(resumed, _fail_one_stage)
    single = make_run_dir(tmp_path / "single", seeds=(0,), arms=("pretrained", "random", "logreg"))
    dirs = [resumed, single] if resumed_first else [single, resumed]
    md = render_report(dirs, tmp_path / "side").read_text()
    row = table_row(md, "invocations")
    assert row is not None and row[1 if resumed_first else 2].startswith("2 (the run was resumed")
    assert row[2 if resumed_first else 1] == "—"


def test_holm_adjustment_matches_its_definition():
    """Holm-Bonferroni: sorted p times (m, m-1, ...), running maximum, capped at 1; nan (no test) is not counted."""
    from stacked_ae.report.stats import holm
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([float("nan"), 0.02, 0.04])
    assert np.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.04])


def test_stages_made_by_another_version_are_listed(tmp_path):
    """A resumed run whose stages came from other code says which stages and which version made them."""
    run = make_run_dir(tmp_path / "mixed", seeds=(0, 1), arms=("pretrained", "random"))
    (run / "stages").mkdir()
    same = {"stacked_ae_version": "0.1.0", "git_commit": "0123456789abcdef"}
    (run / "stages" / "arm_seed0_budgetall_random.json").write_text(json.dumps(same))
    (run / "stages" / "arm_seed1_budgetall_random.json").write_text(
        json.dumps({"stacked_ae_version": "0.0.9", "git_commit": "fedcba9876543210"}))
    md = render_report(run).read_text()
    assert "1 stage(s) by stacked-ae 0.0.9 at commit fedcba987654: arm_seed1_budgetall_random" in md
    assert "arm_seed0_budgetall_random" not in md.split("## Stages from other versions")[1]


def test_setup_names_the_devices_the_stages_ran_on(tmp_path):
    """A run resumed on another machine says how many stages each device made, not only the last invocation's
    device: counted from the stage records, as the Compute table counts them; from the manifest's stage_devices
    where no record names a device; a manifest without the counts shows that device."""
    run = make_run_dir(tmp_path / "devices", seeds=(0,), arms=("pretrained", "random"))
    md = render_report(run).read_text()
    assert "| device | cpu |" in md
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stage_devices"] = {"cpu": 1, "cuda:0 (NVIDIA H200)": 4}
    (run / "manifest.json").write_text(json.dumps(manifest))
    md = render_report(run).read_text()
    assert "| device | cpu: 1 stage; cuda:0 (NVIDIA H200): 4 stages |" in md
    assert "| arm | wall time | pretraining |\n" in md          # no stage record names a device: no column

    gpu, stages = "cuda:0 (NVIDIA H200)", run / "stages"
    stages.mkdir()
    for key, device in [("arm_seed0_budget10_pretrained", gpu), ("arm_seed0_budgetall_pretrained", gpu),
                        ("arm_seed0_budget10_random", gpu), ("arm_seed0_budgetall_random", "cpu"),
                        ("pretrain_seed0", gpu)]:
        (stages / f"{key}.json").write_text(json.dumps({"device": device}))
    manifest["stage_devices"] = {"cpu": 5}          # stale counts: the records win
    (run / "manifest.json").write_text(json.dumps(manifest))
    md = render_report(run).read_text()
    assert f"| device | cpu: 1 stage; {gpu}: 4 stages |" in md
    assert ("The stages ran on more than one device (a scikit-learn baseline on the CPU of that device's machine): "
            "compare times within a device.") in md
    assert f"of greedy pretraining, shared ({gpu}) | {gpu} |" in md
    assert f"| cpu ×1, {gpu} ×1 |" in md

    for record in stages.glob("*.json"):                # one known device, one record that names none
        record.write_text(json.dumps({"device": "cpu"}))
    (stages / "pretrain_seed0.json").write_text(json.dumps({}))
    md = render_report(run).read_text()
    assert "| device | cpu: 4 stages; not recorded: 1 stage |" in md
    assert "| arm | wall time | pretraining |\n" in md and "more than one device" not in md


def test_confusion_matrix_cells_and_colour_bar_share_the_unit(tmp_path, monkeypatch):
    """Cells are written in % of the true class, and the colour bar runs over the same 0-100 %."""
    from stacked_ae.report import plots
    from stacked_ae.report.rundata import load_run
    run_dir = make_run_dir(tmp_path / "cm", seeds=(0,), arms=("pretrained",))
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    y_test = np.load(run_dir / "samples.npz")["y_test"]
    plots.plot_confusion(load_run(run_dir), y_test, [str(c) for c in range(N_CLASSES)], "pretrained", [0],
                         tmp_path / "c.png")
    image_ax, bar_ax = figures[0].axes
    cells = [float(t.get_text()) for t in image_ax.texts]
    assert max(cells) > 1 and sum(cells) == pytest.approx(100 * N_CLASSES, abs=N_CLASSES)   # rows sum to 100 %
    assert bar_ax.get_ylim() == pytest.approx((0, 100)) and "%" in bar_ax.get_ylabel()


def test_side_by_side_shows_the_settings_that_differ_and_distinct_labels(tmp_path):
    """Two folders of the same pipeline name get their paths as labels; the differing settings get a table."""
    a = make_run_dir(tmp_path / "x" / "run", seeds=(0, 1), arms=("pretrained", "random"))
    b = make_run_dir(tmp_path / "y" / "run", seeds=(0, 1, 2), arms=("pretrained", "random"), sizes=(16, 4))
    md = render_report([a, b], tmp_path / "side").read_text()
    assert table_row(md, "`model.sizes`", "[16, 2]", "[16, 4]") is not None
    assert table_row(md, "`seeds`", "[0, 1]", "[0, 1, 2]") is not None
    assert table_row(md, "`name`") is None, "equal settings are not listed"
    assert f"**{a}** = `{a}`" in md and f"**{b}** = `{b}`" in md


def test_report_spells_stage_keys_as_the_pipeline_writes_them():
    """The report reads stages/{key}.json by names it spells itself (it never imports the runner): they must be
    the names the pipeline gives its records."""
    from stacked_ae.pipeline.rundir import arm_key, pretrain_key
    from stacked_ae.report.rundata import arm_stage_key, pretrain_stage_key
    for seed, budget, label in [(0, 10, "10"), (3, "all", "all")]:
        for arm in ("pretrained", "pca-logreg"):
            assert arm_stage_key(seed, label, arm) == arm_key(seed, budget, arm)
    assert pretrain_stage_key(4) == pretrain_key(4) == "pretrain_seed4"


def test_report_names_devices_and_pretrained_arms_as_the_pipeline_does():
    """The report spells the manifest's device key for records without a device, and the arms built on
    pretraining, itself (it never imports the pipeline): they must be the pipeline's."""
    from stacked_ae.pipeline.arms import NEEDS_PRETRAINING
    from stacked_ae.pipeline.runner import UNRECORDED
    from stacked_ae.report import rundata
    assert rundata.UNRECORDED == UNRECORDED
    assert set(rundata.PRETRAINED_ARMS) == set(NEEDS_PRETRAINING)


def test_equal_paired_differences_up_to_rounding_get_no_test():
    """Error rates are multiples of 1/n_test: differences equal up to float rounding (a spread of about 1e-17)
    have zero variance, so there is no t-test, not a 'significant' p of about 1e-15."""
    from stacked_ae.report.stats import paired_test, verdict

    pre = pd.Series([199 / 449, 156 / 449], index=[1, 3])
    rand = pd.Series([197 / 449, 154 / 449], index=[1, 3])
    assert np.ptp((pre - rand).to_numpy()) > 0          # the rounding this test is about
    paired = paired_test(pre, rand)
    assert np.isnan(paired.t) and np.isnan(paired.p)
    assert verdict(paired) == "no test: the paired differences have zero variance"
    assert paired.diff.mean == pytest.approx(2 / 449)
    # a real spread, however small against the values, is still tested
    varied = paired_test(pre, pd.Series([197 / 449, 155 / 449], index=[1, 3]))
    assert np.isfinite(varied.p)


def test_a_figure_that_fails_while_saving_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """plots.save writes a PNG atomically: a savefig that fails half-way leaves the previous file as it was and no
    temp file beside it (a report viewer never shows half a figure)."""
    from stacked_ae.report import plots
    path = tmp_path / "figures" / "f.png"
    fig = plots.new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    plots.save(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def fails(target, **kwargs):
        target.write(b"\x89PNG half")
        raise OSError("disk full")
    monkeypatch.setattr(fig, "savefig", fails)
    with pytest.raises(OSError, match="disk full"):
        plots.save(fig, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["f.png"]


def test_a_count_of_validation_labels_above_a_budget_is_called_optimistic_there(tmp_path):
    """`data.val_per_class = 20` at budgets 10 and all: at 10, selection saw more validation labels (200) than
    training labels (100), so the verdicts, the summary and the setup say those results are optimistic; with 100
    validation labels at budget 10 nothing is."""
    for n_val, optimistic in ((200, True), (100, False)):
        run = make_run_dir(tmp_path / str(n_val))
        config = json.loads((run / "config.json").read_text())
        config["data"]["val_per_class"] = 20
        (run / "config.json").write_text(json.dumps(config))
        rewrite_results(run, lambda res, n=n_val: res.assign(
            n_val_labeled=np.where(res["budget"] == "10", n, 135)))
        text = render_report(run).read_text()
        assert ("**Optimistic at budget 10:** model selection used more validation labels than training labels "
                "there (`data.val_per_class = 20`)" in text) == optimistic
        assert ("Model selection used more validation labels than training labels at budget 10: those results are "
                "optimistic." in text) == optimistic
        assert ("**results at budget 10 are optimistic**" in text) == optimistic
        assert ("ptimistic" in text) == optimistic
