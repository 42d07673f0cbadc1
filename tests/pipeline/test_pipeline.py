"""The runner on a tiny digits pipeline: arms, shared subsets, caching, resume, determinism."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from stacked_ae.pipeline.config import from_dict
from stacked_ae.pipeline.runner import RunDirError, run_pipeline

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "data": {"dataset": "digits", "budgets": [5, "all"]},
    "model": {"sizes": [24, 12]},
    "pretrain": {"epochs": 2, "batch_size": 64, "noise": 0.2},
    "finetune": {"epochs": 3, "lr": [0.01, 0.03], "batch_size": 64, "patience": 2},
}
TINY_TOML = """
name = "tiny"
seeds = [0, 1]
[data]
dataset = "digits"
budgets = [5, "all"]
[model]
sizes = [24, 12]
[pretrain]
epochs = 2
batch_size = 64
noise = 0.2
[finetune]
epochs = {epochs}
lr = [0.01, 0.03]
batch_size = 64
patience = 2
"""


def comparable(path: Path) -> pd.DataFrame:
    """results.csv without the wall-clock column (the only one that may differ between runs)."""
    return pd.read_csv(path).drop(columns=["wall_seconds"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    results = run_pipeline(from_dict(TINY), out, device="cpu", progress=False)
    return out, results


def test_every_arm_appears_for_every_seed_and_budget(tiny_run):
    """results.csv has one ok row per seed x budget x arm."""
    out, _ = tiny_run
    results = pd.read_csv(out / "results.csv", dtype={"budget": str})
    assert len(results) == 2 * 2 * 5
    assert set(results["status"]) == {"ok"}
    counts = results.groupby(["seed", "budget"])["arm"].apply(sorted)
    for arms in counts:
        assert arms == sorted(["pretrained", "random", "frozen", "logreg", "pca-logreg"])
    assert results["test_error"].between(0, 1).all()


def test_arms_of_a_seed_share_the_labeled_subset(tiny_run):
    """All arms of a (seed, budget) record the same subset hash; seeds draw different subsets."""
    _, results = tiny_run
    hashes = results.groupby(["seed", "budget"])["subset_hash"].nunique()
    assert (hashes == 1).all(), hashes
    five = results[results["budget"] == "5"].groupby("seed")["subset_hash"].first()
    assert five[0] != five[1]
    assert (results[results["budget"] == "5"]["n_labeled"] == 50).all()


def test_each_arm_selects_a_grid_value_on_validation(tiny_run):
    """Neural arms keep one lr from the grid, the one with the lowest validation error."""
    out, results = tiny_run
    neural = results[results["arm"].isin(["pretrained", "random", "frozen"])]
    assert set(neural["lr"]).issubset({0.01, 0.03})
    history = pd.read_csv(out / "history.csv", dtype={"budget": str})
    for (seed, budget, arm), rows in history.groupby(["seed", "budget", "arm"]):
        best_per_lr = rows.groupby("lr").apply(lambda r: r.sort_values(["val_error", "val_loss"]).iloc[0],
                                                include_groups=False)
        chosen = rows[rows["selected"]]["lr"].unique()
        assert len(chosen) == 1
        best = best_per_lr.sort_values(["val_error", "val_loss"]).index[0]
        assert chosen[0] == best, (seed, budget, arm, chosen, best_per_lr)


def test_pretraining_is_shared_and_logged_per_layer(tiny_run):
    """One encoder file per seed; pretrain.csv has every layer and epoch of every seed."""
    out, _ = tiny_run
    assert sorted(p.name for p in (out / "encoders").iterdir()) == ["seed0.pt", "seed1.pt"]
    pre = pd.read_csv(out / "pretrain.csv")
    assert len(pre) == 2 * 2 * 2      # seeds x layers x epochs
    assert pre["val_loss"].notna().all()


def test_random_arm_starts_from_the_weights_pretraining_started_from(tmp_path, monkeypatch):
    """In a run, the random arm's initial stack equals, tensor for tensor, the untrained layers that greedy
    pretraining of the same seed began with (both recorded as the run makes them)."""
    import torch

    import stacked_ae.core.pretrain as pretrain_module
    from stacked_ae.pipeline import arms
    pretrain_starts, random_starts = [], []
    real_fit, real_fresh = pretrain_module.fit_autoencoder, arms.fresh_stack
    clone = lambda module: {k: t.detach().clone() for k, t in module.state_dict().items()}  # noqa: E731

    def recording_fit(layer, X, *args, **kwargs):
        pretrain_starts.append(clone(layer))
        return real_fit(layer, X, *args, **kwargs)

    def recording_fresh(ctx, seed):
        stack = real_fresh(ctx, seed)
        random_starts.append(clone(stack))
        return stack

    monkeypatch.setattr(pretrain_module, "fit_autoencoder", recording_fit)
    monkeypatch.setattr(arms, "fresh_stack", recording_fresh)
    small = dict(TINY, seeds=[1], data={"dataset": "digits", "budgets": [5]}, arms=["pretrained", "random"])
    run_pipeline(from_dict(small), tmp_path / "contract", device="cpu", progress=False)
    assert len(pretrain_starts) == 2 and random_starts, (len(pretrain_starts), len(random_starts))
    for k, start in enumerate(pretrain_starts):
        for name, t in start.items():
            assert torch.equal(random_starts[0][f"layers.{k}.{name}"], t), f"layer {k + 1} {name} differs"


def test_random_stack_takes_a_config_or_its_fields():
    """StackedEncoder.random reads layer settings from a PretrainConfig or from its fields, not both."""
    import torch

    from stacked_ae import PretrainConfig, StackedEncoder
    cfg = PretrainConfig(epochs=2, batch_size=64, noise=0.2)
    fresh = StackedEncoder.random(64, [24, 12], seed=1, config=cfg)
    assert torch.equal(fresh.layers[0].encoder.linear.weight,
                       StackedEncoder.random(64, [24, 12], seed=1, epochs=2, batch_size=64, noise=0.2)
                       .layers[0].encoder.linear.weight)
    with pytest.raises(TypeError, match="config or settings"):
        StackedEncoder.random(64, [24, 12], config=cfg, noise=0.3)


def test_rerun_after_completion_trains_nothing(tiny_run):
    """A second run finds every stage finished: no stage file is rewritten, the results are equal."""
    out, results = tiny_run
    stages = sorted((out / "stages").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in stages}
    again = run_pipeline(from_dict(TINY), out, device="cpu", progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in sorted((out / "stages").iterdir())}
    assert before == after
    pd.testing.assert_frame_equal(again, results)


def test_manifest_records_every_invocation(tiny_run, tmp_path):
    """Each run of a folder appends its command, start time and commit; the first start is kept."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["random"])
    out = tmp_path / "twice"
    run_pipeline(from_dict(small), out, device="cpu", progress=False)
    first = json.loads((out / "manifest.json").read_text())
    threads = torch.get_num_threads()
    run_pipeline(from_dict(small), out, device="cpu", progress=False, threads=threads + 1)
    assert torch.get_num_threads() == threads, "the caller's thread count is restored"
    second = json.loads((out / "manifest.json").read_text())
    assert len(first["invocations"]) == 1 and len(second["invocations"]) == 2
    assert second["started"] == first["started"] == first["invocations"][0]["started"]
    assert second["invocations"][0] == first["invocations"][0]
    assert all(set(i) == {"command", "started", "git_commit", "git_dirty", "torch_threads"}
               for i in second["invocations"])
    # the threads each invocation trained with, not the caller's setting before it
    assert [i["torch_threads"] for i in second["invocations"]] == [threads, threads + 1]
    assert second["torch_threads"] == threads + 1
    assert second["git_dirty"] == second["invocations"][-1]["git_dirty"]
    assert "/" not in second["command"].split()[0]


def test_git_dirty_looks_at_the_package_source_only(tmp_path):
    """Edited source makes a run 'dirty'; a run folder or pipeline file changed in the same checkout does not."""
    import subprocess

    from stacked_ae.pipeline.runner import _git_dirty
    assert _git_dirty(tmp_path) is None                      # not a git checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "results.csv").write_text("a\n1\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *args], check=True)
    assert _git_dirty(tmp_path / "pkg") is False
    (tmp_path / "reports" / "results.csv").write_text("a\n2\n")
    (tmp_path / "pkg" / "new_untracked.py").write_text("")
    assert _git_dirty(tmp_path / "pkg") is False
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert _git_dirty(tmp_path / "pkg") is True


def test_same_seed_gives_identical_results(tiny_run, tmp_path):
    """An independent run of the same config gives the same results.csv (wall time aside)."""
    out, _ = tiny_run
    run_pipeline(from_dict(TINY), tmp_path / "again", device="cpu", progress=False)
    pd.testing.assert_frame_equal(comparable(tmp_path / "again" / "results.csv"), comparable(out / "results.csv"))


def test_changed_finetune_settings_reuse_pretraining_and_redo_the_arms(tmp_path, caplog):
    """After editing [finetune], pretraining is reused untouched, every arm reruns, and the results
    equal those of a fresh run of the edited config."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["pretrained", "random"])
    edited = dict(small, finetune=dict(TINY["finetune"], epochs=4))
    run_dir = tmp_path / "edited"
    run_pipeline(from_dict(small), run_dir, device="cpu", progress=False)
    stages = run_dir / "stages"
    before = {p.name: p.stat().st_mtime_ns for p in stages.iterdir()}
    run_pipeline(from_dict(edited), run_dir, device="cpu", progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in stages.iterdir()}
    assert after["pretrain_seed0.json"] == before["pretrain_seed0.json"]
    assert all(after[name] != before[name] for name in before if name.startswith("arm_"))
    assert "finetune.epochs" in caplog.text
    run_pipeline(from_dict(edited), tmp_path / "fresh", device="cpu", progress=False)
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(tmp_path / "fresh" / "results.csv"))


def test_changed_model_redoes_pretraining(tmp_path):
    """Editing [model] invalidates the pretraining stage as well as the arms."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["pretrained"])
    run_dir = tmp_path / "model"
    run_pipeline(from_dict(small), run_dir, device="cpu", progress=False)
    first = (run_dir / "stages" / "pretrain_seed0.json").stat().st_mtime_ns
    run_pipeline(from_dict(dict(small, model={"sizes": [20, 12]})), run_dir, device="cpu", progress=False)
    assert (run_dir / "stages" / "pretrain_seed0.json").stat().st_mtime_ns != first
    assert pd.read_csv(run_dir / "results.csv")["status"].tolist() == ["ok"]


def test_output_path_that_is_a_file_is_refused(tmp_path):
    """--out pointing at an existing file is a RunDirError."""
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RunDirError, match="not a folder"):
        run_pipeline(from_dict(TINY), path, device="cpu", progress=False)


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_of_other_files_is_never_written_or_cleared(tmp_path, force):
    """--out naming a folder that holds other files and no config.json or manifest.json is refused before anything
    is written, with --force too (which would clear models/ and report.md); an empty folder is fine."""
    folder = tmp_path / "mine"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "mine.pt").write_text("precious")
    (folder / "report.md").write_text("notes")
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    with pytest.raises(RunDirError, match=r"mine: is not a run folder \(no config.json or manifest.json\) and holds "
                                          r"other files \(models, report.md\); give --out a new or empty folder"):
        run_pipeline(from_dict(TINY), folder, device="cpu", progress=False, force=force)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == before
    assert (folder / "models" / "mine.pt").read_text() == "precious"


def test_killed_run_resumes_to_the_same_results(tiny_run, tmp_path):
    """SIGKILL during fine-tuning, then a rerun, ends with the results of an uninterrupted run."""
    out, _ = tiny_run
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML.format(epochs=3))
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "stacked_ae", "run", str(pipeline), "--out", str(run_dir), "--quiet",
           "--no-report", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    stages = run_dir / "stages"
    while time.monotonic() < deadline and proc.poll() is None:
        if stages.is_dir() and len(list(stages.glob("arm_*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(stages.glob("arm_*.json")))
    assert 2 <= done < 20, done
    for path in stages.glob("arm_*.json"):     # no stage record is ever half-written
        assert json.loads(path.read_text())["result"]["status"] == "ok", path
    for path in stages.glob("*.json"):         # pretraining records too: every stage file parses
        json.loads(path.read_text())
    assert not (run_dir / "results.csv").exists()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(out / "results.csv"))


def test_force_starts_over(tiny_run, tmp_path):
    """--force discards finished stages of a folder and reruns them."""
    run_dir = tmp_path / "forced"
    cfg = from_dict(dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": ["all"]}, arms=["random"]))
    run_pipeline(cfg, run_dir, device="cpu", progress=False)
    stage = run_dir / "stages" / "arm_seed0_budgetall_random.json"
    first = stage.stat().st_mtime_ns
    run_pipeline(cfg, run_dir, device="cpu", progress=False, force=True)
    assert stage.stat().st_mtime_ns != first


REPO = Path(__file__).resolve().parents[2]
# Every committed reference report: a rendered folder beside its shipped pipeline (a run still training has no
# report.md yet, and joins the list once rendered).
SHIPPED_REPORTS = sorted(p.parent.name for p in REPO.glob("reports/*/report.md")
                         if (REPO / "pipelines" / f"{p.parent.name}.toml").is_file())
KEPT_FIGURE_NOTE = " (Drawn when the run's checkpoints were present; the files they came from are unchanged.)"


def test_every_shipped_pipeline_with_a_report_is_checked():
    assert {"quickstart", "quickstart-conv", "mnist-sdae", "mnist-deep-ae", "mnist-2d",
            "fashion-mnist-sdae"} <= set(SHIPPED_REPORTS), SHIPPED_REPORTS


@pytest.mark.parametrize("name", SHIPPED_REPORTS)
def test_shipped_reports_are_rendered_by_todays_code(name, tmp_path):
    """A committed report.md is what `sae report` writes today from the committed folder: a change of the
    report's code re-renders the reference reports, so no committed report keeps older wording or tables.
    Checkpoints are not committed, so figures drawn from them carry a note when re-rendered without them."""
    import shutil

    from stacked_ae.report.render import render_report
    folder = REPO / "reports" / name
    copy = tmp_path / name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("models", "encoders", "partial"))
    committed = (folder / "report.md").read_text()
    fresh = render_report(copy).read_text()
    assert fresh.replace(KEPT_FIGURE_NOTE, "") == committed.replace(KEPT_FIGURE_NOTE, ""), (
        f"reports/{name}/report.md differs from today's render: run `sae report reports/{name}` and commit it")


@pytest.mark.parametrize("name", SHIPPED_REPORTS)
def test_shipped_run_folders_still_load_with_todays_code(name):
    """The committed run folders' config.json files read with today's code (settings added later take their
    defaults) and describe the shipped pipeline's data and model, so `sae run` can resume them in place."""
    from stacked_ae.pipeline.config import load_config
    root = Path(__file__).resolve().parents[2]
    cfg = from_dict(json.loads((root / "reports" / name / "config.json").read_text()))
    shipped = load_config(root / "pipelines" / f"{name}.toml")
    assert (cfg.data.dataset, cfg.data.split_seed, cfg.model, cfg.name) == \
        (shipped.data.dataset, shipped.data.split_seed, shipped.model, shipped.name)
    assert sorted((root / "reports" / name / "stages").glob("*.json")), f"reports/{name}/stages is empty"


@pytest.mark.parametrize("name", SHIPPED_REPORTS)
def test_shipped_stages_are_current_or_marked_as_older(name):
    """Every committed stage record either names an older protocol (absent: made before records named it), so
    `sae run` recomputes it, or matches the fingerprint today's code computes from the run's own config.json
    and data (or the legacy form of it that today's code still accepts, the settings hashed as written):
    fingerprints that change without a new protocol would rerun, or silently reuse, shipped stages."""
    from stacked_ae.pipeline.arms import PROTOCOL
    folder = Path(__file__).resolve().parents[2] / "reports" / name
    records = {p.stem: json.loads(p.read_text()) for p in (folder / "stages").glob("*.json")}
    assert records and all(r.get("protocol", 0) <= PROTOCOL for r in records.values())
    current = {key for key, record in records.items() if record.get("protocol") == PROTOCOL}
    if not current:
        return
    cfg = from_dict(json.loads((folder / "config.json").read_text()))
    stamps = _today_fingerprints(cfg, _data_id(cfg))
    stale = sorted(key for key in current if records[key]["fingerprint"] not in stamps.get(key, ()))
    assert not stale, f"reports/{name}: {len(stale)} stages of protocol {PROTOCOL} no longer match: {stale[:5]}"


def _data_id(cfg) -> str:
    """The content hash of a pipeline's data; skips when the MNIST / Fashion-MNIST files are absent."""
    from stacked_ae.core.data import DATA_ENV, DataNotFoundError
    from stacked_ae.pipeline.rundir import dataset_fingerprint
    from stacked_ae.pipeline.runner import check_data
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    try:
        return dataset_fingerprint(check_data(cfg, None if cfg.data.dataset == "digits" else
                                              os.environ.get(DATA_ENV) or shared))
    except DataNotFoundError as err:
        pytest.skip(f"{cfg.data.dataset} files not found ({err})")


def _today_fingerprints(cfg, data_id: str) -> dict:
    from stacked_ae.pipeline.arms import arm_fingerprint, pretrain_fingerprint
    from stacked_ae.pipeline.executors import arm_stages
    from stacked_ae.pipeline.rundir import budget_label
    stamps = {f"pretrain_seed{seed}": {pretrain_fingerprint(cfg, seed, data_id, legacy=old) for old in (False, True)}
              for seed in cfg.seeds}
    for seed, budget, arm in arm_stages(cfg):
        stamps[f"arm_seed{seed}_budget{budget_label(budget)}_{arm}"] = {
            arm_fingerprint(cfg, seed, budget, arm, data_id, legacy=old) for old in (False, True)}
    return stamps


def _fingerprints(settings: dict, data_id: str = "d") -> dict:
    from stacked_ae.pipeline.arms import arm_fingerprint, pretrain_fingerprint
    cfg = from_dict(settings)
    stamps = {arm: arm_fingerprint(cfg, 0, 5, arm, data_id) for arm in cfg.arms}
    return {"pretrain": pretrain_fingerprint(cfg, 0, data_id), **stamps}


def test_fingerprints_cover_what_each_stage_depends_on_and_nothing_else():
    """A [pretrain] training, corruption or penalty edit reruns pretraining and the arms built on it, never the
    random arm or the baselines; an edit of the initial weights' shape (tied) reaches the random arm too;
    [finetune] never reaches pretraining or the baselines; new data (another content hash) reruns everything;
    the lists of seeds and budgets, the name, the executor and the references do not."""
    base = dict(TINY, arms=["pretrained", "random", "frozen", "logreg", "pca-logreg"])
    before = _fingerprints(base)

    def changed(settings=None, data_id="d"):
        after = _fingerprints(settings or base, data_id)
        return {stage for stage in before if after[stage] != before[stage]}

    for edit in ({"epochs": 3}, {"lr": 0.01}, {"noise": 0.4}, {"corruption": "gaussian"}, {"sparsity": 0.1}):
        assert changed(dict(base, pretrain=dict(base["pretrain"], **edit))) == {"pretrain", "pretrained", "frozen"}
    assert changed(dict(base, pretrain=dict(base["pretrain"], tied=True))) == {
        "pretrain", "pretrained", "frozen", "random"}
    assert changed(dict(base, finetune=dict(base["finetune"], epochs=9))) == {"pretrained", "frozen", "random"}
    assert changed(dict(base, data=dict(base["data"], val_per_class="all"))) == {
        "pretrained", "frozen", "random", "logreg", "pca-logreg"}
    assert changed(dict(base, model={"sizes": [24, 10]})) == set(before) - {"logreg"}   # pixels need no model
    assert changed(data_id="other") == set(before)
    assert changed(dict(base, seeds=[0, 5], data=dict(base["data"], budgets=[5, 20]))) == set()
    assert changed(dict(base, name="renamed", reference={"source": "a paper"},
                        run={"executor": "ray", "workers": 2})) == set()


def test_equal_settings_written_two_ways_are_one_stage():
    """A per-layer list whose values are all equal is that one value (`noise = [0.2, 0.2]` is `noise = 0.2`), and
    the frozen arm, a linear probe that uses no dropout, is the same stage under any [finetune] dropout; a list
    that does differ per layer, and dropout for the fine-tuned arms, are other stages."""
    base = dict(TINY, arms=["pretrained", "random", "frozen", "logreg"])
    before = _fingerprints(base)

    def changed(pretrain=None, model=None, finetune=None):
        after = _fingerprints(dict(base, pretrain=dict(base["pretrain"], **(pretrain or {})),
                                   model=dict(base["model"], **(model or {})),
                                   finetune=dict(base["finetune"], **(finetune or {}))))
        return {stage for stage in before if after[stage] != before[stage]}

    assert changed(pretrain={"noise": [0.2, 0.2], "epochs": [2, 2], "tied": [False, False]}) == set()
    assert changed(model={"activation": ["sigmoid", "sigmoid"]}) == set()
    assert changed(pretrain={"noise": [0.2, 0.3]}) == {"pretrain", "pretrained", "frozen"}
    assert changed(finetune={"dropout": 0.3, "input_dropout": 0.1}) == {"pretrained", "random"}


def test_records_stamped_before_the_settings_were_normalised_are_reused(tmp_path):
    """A run folder whose records carry the fingerprints of the settings as written (how stage records were
    stamped before per-layer lists and the probe's dropout were normalised) is finished as it stands: `sae run`
    trains nothing and rewrites no record, and `sae status` counts every stage finished."""
    from stacked_ae.pipeline.arms import arm_fingerprint, pretrain_fingerprint
    from stacked_ae.pipeline.rundir import RunDir
    from stacked_ae.pipeline.status import stage_status
    settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]},
                    arms=["pretrained", "random", "frozen"], pretrain=dict(TINY["pretrain"], noise=[0.2, 0.2]),
                    finetune=dict(TINY["finetune"], dropout=0.2))
    cfg, out = from_dict(settings), tmp_path / "run"
    run_pipeline(cfg, out, device="cpu", progress=False)
    run, data_id = RunDir(out), json.loads((out / "manifest.json").read_text())["dataset"]["fingerprint"]
    old = {"pretrain_seed0": pretrain_fingerprint(cfg, 0, data_id, legacy=True),
           **{f"arm_seed0_budget5_{arm}": arm_fingerprint(cfg, 0, 5, arm, data_id, legacy=True) for arm in cfg.arms}}
    for key, stamp in old.items():
        record = run.read_stage(key)
        assert record["fingerprint"] != stamp or key.endswith("random"), key   # random: noise is not its setting
        (out / "stages" / f"{key}.json").write_text(json.dumps({**record, "fingerprint": stamp}))
    written = {p.name: p.read_bytes() for p in (out / "stages").iterdir()}
    results = run_pipeline(cfg, out, device="cpu", progress=False)
    assert results.attrs["stages"] == {"computed": 0, "reused": 3, "pretrain computed": 0, "pretrain reused": 1}
    assert {p.name: p.read_bytes() for p in (out / "stages").iterdir()} == written
    assert {s["state"] for s in stage_status(cfg, out)} == {"finished"}


def test_mirrored_decoders_rerun_only_the_stages_whose_decoders_changed(monkeypatch):
    """"auto" decoders above non-sigmoid, non-linear units mirror those units (they were linear): such pipelines
    rerun pretraining, the arms built on it and, in reconstruction, the unrolled random network, never the
    random classifier or the baselines; sigmoid and linear stacks keep every fingerprint they had."""
    import stacked_ae.pipeline.arms as arms

    def moved(settings):
        today = _fingerprints(settings)
        with monkeypatch.context() as m:
            m.setattr(arms, "_decoders", lambda cfg: {})      # the fingerprints from before decoders mirrored
            before = _fingerprints(settings)
        return {stage for stage in today if today[stage] != before[stage]}

    classify = dict(TINY, arms=["pretrained", "random", "frozen", "logreg", "pca-logreg"])
    assert moved(classify) == set()
    assert moved(dict(classify, model={"sizes": [24, 12], "activation": ["sigmoid", "linear"]})) == set()
    relu = dict(classify, model={"sizes": [24, 12], "activation": "relu"})
    assert moved(relu) == {"pretrain", "pretrained", "frozen"}
    recon = dict(relu, task="reconstruction", arms=[], data={"dataset": "digits", "budgets": ["all"]})
    assert moved(recon) == {"pretrain", "pretrained", "random"}


def test_a_probe_grid_moves_only_the_frozen_arm_and_is_what_it_tries(tmp_path):
    """finetune.probe_lr gives the frozen arm (a linear probe) its own grid: only its fingerprint moves (a
    pipeline without it keeps every fingerprint and config.json key it had), it trains exactly those rates, and
    its grid edge is judged against them, in results.csv and in the report's Tuning section."""
    import json

    from stacked_ae.report.render import render_report
    base = dict(TINY, arms=["pretrained", "random", "frozen", "logreg", "pca-logreg"])
    probed = dict(base, finetune=dict(TINY["finetune"], probe_lr=[0.03, 0.1, 0.3]))
    before, after = _fingerprints(base), _fingerprints(probed)
    assert {stage for stage in after if after[stage] != before[stage]} == {"frozen"}
    assert "probe_lr" not in from_dict(base).to_dict()["finetune"]
    same = dict(base, finetune=dict(TINY["finetune"], probe_lr=[]))
    assert _fingerprints(same) == before

    cfg = from_dict(dict(probed, seeds=[0], data={"dataset": "digits", "budgets": ["all"]}))
    results = run_pipeline(cfg, tmp_path / "run", device="cpu", progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert sorted(history.loc[history["arm"] == "frozen", "lr"].unique()) == [0.03, 0.1, 0.3]
    assert sorted(history.loc[history["arm"] == "random", "lr"].unique()) == [0.01, 0.03]
    frozen = results[results["arm"] == "frozen"].iloc[0]
    assert frozen["lr"] in (0.03, 0.1, 0.3) and bool(frozen["on_grid_edge"]) == (frozen["lr"] != 0.1)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["finetune"]["probe_lr"] == [0.03, 0.1, 0.3]
    text = render_report(tmp_path / "run").read_text()
    assert "grid 0.01, 0.03; frozen: 0.03, 0.1, 0.3;" in text
    row = next(line for line in text.splitlines() if line.startswith("| all | frozen |"))
    assert ("at the" in row) == (frozen["lr"] != 0.1), row


def test_the_random_arms_start_depends_on_no_pretrain_setting_but_its_fingerprints():
    """StackedEncoder.random gives the same weights whatever the [pretrain] settings outside INIT_FIELDS (and
    layer activations), so leaving them out of the random arm's fingerprint never reuses a stale result."""
    import torch

    from stacked_ae.core.model import StackedEncoder
    from stacked_ae.core.pretrain_config import LAYER_FIELDS
    from stacked_ae.pipeline.arms import INIT_FIELDS
    others = {"corruption": "gaussian", "noise": 0.3, "sparsity": 0.2, "sparsity_target": 0.1, "contractive": 0.5}
    assert set(others) == set(LAYER_FIELDS) - set(INIT_FIELDS) - {"activation", "output_activation"}
    plain = StackedEncoder.random(16, [8, 4], seed=3).state_dict()
    edited = StackedEncoder.random(16, [8, 4], seed=3, **others).state_dict()
    assert plain.keys() == edited.keys()
    for key in plain:
        torch.testing.assert_close(edited[key], plain[key], rtol=0, atol=0, msg=key)
    tied = StackedEncoder.random(16, [8, 4], seed=3, tied=True).state_dict()
    assert tied.keys() != plain.keys()


def test_an_arms_fingerprint_does_not_depend_on_the_other_arms():
    """Adding or dropping arms from a pipeline leaves the stages of the arms it keeps reusable."""
    from stacked_ae.pipeline.arms import arm_fingerprint, pretrain_fingerprint
    full = from_dict(dict(TINY, arms=["pretrained", "random", "frozen", "logreg", "pca-logreg"]))
    for arm in full.arms:
        alone = from_dict(dict(TINY, arms=[arm]))
        assert arm_fingerprint(alone, 1, "all", arm, "d") == arm_fingerprint(full, 1, "all", arm, "d"), arm
    assert pretrain_fingerprint(from_dict(dict(TINY, arms=["frozen"])), 0, "d") == pretrain_fingerprint(full, 0, "d")


def test_stages_of_another_protocol_are_recomputed(tmp_path, monkeypatch):
    """A rerun reuses every finished stage; once the code's protocol changes (seed streams, validation), none."""
    from stacked_ae.pipeline import arms
    settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["pretrained", "logreg"])
    run_dir = _run(settings, tmp_path / "run").parent
    stamps = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")}
    _run(settings, run_dir)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")} == stamps
    monkeypatch.setattr(arms, "PROTOCOL", arms.PROTOCOL + 1)
    _run(settings, run_dir)
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in (run_dir / "stages").glob("*.json"))


def test_stage_records_keep_the_version_commit_and_device_that_made_them(tiny_run):
    """Each stage record names the stacked-ae version, the git commit (null outside git), the protocol and the
    device it came from; the manifest counts the stages per device."""
    from stacked_ae import __version__
    from stacked_ae.pipeline.arms import PROTOCOL
    records = [json.loads(p.read_text()) for p in (tiny_run[0] / "stages").glob("*.json")]
    assert records and all(r["stacked_ae_version"] == __version__ and "git_commit" in r for r in records)
    assert all(r["protocol"] == PROTOCOL for r in records)
    assert all(r["device"] == "cpu" for r in records)
    assert json.loads((tiny_run[0] / "manifest.json").read_text())["stage_devices"] == {"cpu": len(records)}


def test_validation_labels_match_the_budget_and_are_shared_by_the_arms(tiny_run):
    """val_per_class = "budget": at 5 labels per class model selection sees 5 validation labels per class
    (at most what a class has), the same subset for every arm; at "all" the whole validation split."""
    from stacked_ae.core.data import load_dataset
    results = pd.read_csv(tiny_run[0] / "results.csv", dtype={"budget": str})
    data = load_dataset("digits")
    per_class = data.y_val.bincount(minlength=data.n_classes)
    want = {"5": int(per_class.clamp(max=5).sum()), "all": len(data.y_val)}
    for budget, group in results.groupby("budget"):
        assert set(group["n_val_labeled"]) == {want[budget]}, (budget, sorted(set(group["n_val_labeled"])))


def test_val_per_class_count_and_all(tmp_path):
    """An integer k gives k validation labels per class at every budget (all that a class has where it has fewer);
    "all" the whole split. Where selection saw more validation labels than training labels (k above a budget, or
    "all"), the report calls those budgets' results optimistic, in its setup, summary and verdicts."""
    from stacked_ae.core.data import load_dataset
    from stacked_ae.report.render import render_report
    data = load_dataset("digits")
    per_class = data.y_val.bincount(minlength=data.n_classes)
    assert 5 < int(per_class.min()) < 50
    cases = ((3, int(per_class.clamp(max=3).sum()), None),
             (50, len(data.y_val), "Model selection used more validation labels than training labels at budget 5"),
             ("all", len(data.y_val), "Model selection used the whole validation split at every budget"))
    for setting, want, warning in cases:
        settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5, "all"], "val_per_class": setting},
                        arms=["logreg"])
        path = _run(settings, tmp_path / str(setting))
        results = pd.read_csv(path)
        assert set(results["n_val_labeled"]) == {want}, (setting, results["n_val_labeled"].tolist())
        text = render_report(path.parent).read_text()
        assert ("optimistic" in text) == (warning is not None), setting
        if warning:
            assert warning in text
        if setting == 50:
            assert "`data.val_per_class = 50`: 50 validation labels per class at every budget, or all that a class " \
                   "has; **results at budget 5 are optimistic**" in text


def test_logreg_baselines_choose_C_on_validation(tiny_run):
    """logreg and pca-logreg record the regularisation strength they selected, one of the grid's values."""
    from stacked_ae.pipeline.arms import C_GRID
    results = pd.read_csv(tiny_run[0] / "results.csv")
    chosen = results[results["arm"].isin(["logreg", "pca-logreg"])]["C"]
    assert len(chosen) and chosen.isin(C_GRID).all(), chosen.tolist()


def test_results_flag_selections_on_the_edge_of_their_grid(tiny_run):
    """on_grid_edge is true exactly where the selected lr (networks) or C (baselines) is an end of its grid."""
    from stacked_ae.pipeline.arms import C_GRID, on_grid_edge
    assert [on_grid_edge(v, (1e-3, 1e-2, 1e-1)) for v in (1e-3, 1e-2, 1e-1)] == [True, False, True]
    assert on_grid_edge(5e-4, (5e-4,))
    results = pd.read_csv(tiny_run[0] / "results.csv")
    # inf (no regularisation) is a limit, and the value below it is inside the grid
    assert not on_grid_edge(float("inf"), C_GRID) and not on_grid_edge(1000.0, C_GRID)
    ends = {"lr": {0.01, 0.03}, "C": {min(C_GRID)}}
    for _, row in results.iterrows():
        column = "C" if row["arm"] in ("logreg", "pca-logreg") else "lr"
        assert row["on_grid_edge"] == (row[column] in ends[column]), row.to_dict()


def test_samples_follow_the_data_split(tmp_path):
    """samples.npz is redrawn when the split changes (else figures would show another test set)."""
    import numpy as np
    settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": ["all"]}, arms=["logreg"])
    run_dir = _run(settings, tmp_path / "run").parent
    first = np.load(run_dir / "samples.npz")["y_test"]
    _run(dict(settings, data=dict(settings["data"], split_seed=1)), run_dir)
    second = np.load(run_dir / "samples.npz")["y_test"]
    predictions = np.load(run_dir / "predictions" / "seed0_budgetall_logreg.npy")
    assert not np.array_equal(first, second)
    assert (predictions == second).mean() > 0.8, "the predictions and samples.npz describe different test sets"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"PK\x03\x04" + b"\0" * 64,
                                    lambda b: b""], ids=["truncated", "bad-zip", "empty"])
def test_a_damaged_samples_file_is_redrawn_and_the_report_names_it(tmp_path, damage, capsys):
    """A damaged samples.npz: `sae report` says which file in one line; the next run redraws it, reusing the stages."""
    import numpy as np

    from stacked_ae.cli import main
    settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": ["all"]}, arms=["logreg"])
    run_dir = _run(settings, tmp_path / "run").parent
    samples = run_dir / "samples.npz"
    first = np.load(samples)["y_test"]
    stages = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")}
    samples.write_bytes(damage(samples.read_bytes()))
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "samples.npz: not a readable samples file" in err, err
    _run(settings, run_dir)
    assert np.array_equal(np.load(samples)["y_test"], first)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")} == stages


def test_a_data_file_is_known_by_its_contents_not_its_path(tmp_path):
    """Edited contents at the same path rerun every stage; the same contents at another path reuse them all."""
    import numpy as np
    rng = np.random.default_rng(0)
    X, y = rng.random((240, 16)).astype(np.float32), np.arange(240) % 3
    np.savez(tmp_path / "a.npz", X=X, y=y)
    np.savez(tmp_path / "b.npz", X=X, y=y)
    settings = dict(TINY, seeds=[0], data={"dataset": str(tmp_path / "a.npz"), "budgets": [5]},
                    model={"sizes": [8, 4]}, arms=["pretrained", "logreg"])
    run_dir = _run(settings, tmp_path / "run").parent

    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")}

    first = stamps()
    _run(dict(settings, data=dict(settings["data"], dataset=str(tmp_path / "b.npz"))), run_dir)
    assert stamps() == first
    X[0, 0] = 1.0 - X[0, 0]   # one value of 3,840 changes
    np.savez(tmp_path / "a.npz", X=X, y=y)
    _run(settings, run_dir)
    assert all(stamps()[name] != first[name] for name in first), "stages of the old data file were reused"


def test_run_pipeline_restores_the_thread_count(tmp_path):
    """`threads` applies to the run only: torch's setting is the caller's again afterwards."""
    import torch
    before = torch.get_num_threads()
    settings = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": ["all"]}, arms=["random"])
    run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False,
                 threads=2 if before == 1 else 1)
    assert torch.get_num_threads() == before


def test_a_run_that_fails_before_its_first_stage_leaves_no_config(tmp_path):
    """Bad data fails before the run folder is written, so the next good run does not see a changed config."""
    from stacked_ae.core.data import DataNotFoundError
    settings = dict(TINY, seeds=[0], data={"dataset": str(tmp_path / "missing.npz"), "budgets": ["all"]})
    with pytest.raises(DataNotFoundError):
        run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_finetune_dropout_reaches_the_fine_tuned_arms_only(tmp_path):
    """[finetune] dropout changes what the pretrained and random arms learn; the frozen arm (a linear
    probe on codes computed once) is trained exactly as without it."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]},
                 arms=["pretrained", "random", "frozen"])
    dropped = dict(small, finetune=dict(TINY["finetune"], dropout=0.3, input_dropout=0.1))
    plain = comparable(_run(small, tmp_path / "plain")).set_index("arm")
    drop = comparable(_run(dropped, tmp_path / "drop")).set_index("arm")
    for arm in ("pretrained", "random"):
        assert drop.loc[arm, "val_loss"] != plain.loc[arm, "val_loss"], arm
    assert drop.loc["frozen", "val_loss"] == plain.loc["frozen", "val_loss"]


def _run(settings: dict, out: Path) -> Path:
    run_pipeline(from_dict(settings), out, device="cpu", progress=False)
    return out / "results.csv"


def test_a_run_folder_from_before_new_settings_is_resumed_silently(tmp_path, caplog):
    """A config.json written before `precision` and `dropout` existed is read with their defaults: a rerun
    of the same pipeline reports no change and trains nothing."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["pretrained"])
    out = tmp_path / "old"
    run_pipeline(from_dict(small), out, device="cpu", progress=False)
    config = json.loads((out / "config.json").read_text())
    del config["pretrain"]["precision"]
    for key in ("precision", "dropout", "input_dropout"):
        del config["finetune"][key]
    (out / "config.json").write_text(json.dumps(config))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    run_pipeline(from_dict(small), out, device="cpu", progress=False)
    assert "config changed" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()} == before


def test_changing_how_stages_run_is_not_a_config_change(tmp_path, caplog):
    """[run] (executor, workers, ...) never changes a stage: a rerun with other [run] settings warns of no change
    and trains nothing, while a [finetune] edit is named."""
    small = dict(TINY, seeds=[0], data={"dataset": "digits", "budgets": [5]}, arms=["random"])
    out = tmp_path / "run"
    run_pipeline(from_dict(small), out, device="cpu", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    with caplog.at_level(logging.WARNING, logger="stacked_ae.pipeline"):
        run_pipeline(from_dict(dict(small, run={"workers": 3, "shared_folder": False})), out, device="cpu",
                     progress=False)
    assert "config changed" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()} == before
    with caplog.at_level(logging.WARNING, logger="stacked_ae.pipeline"):
        run_pipeline(from_dict(dict(small, finetune=dict(small["finetune"], epochs=2))), out, device="cpu",
                     progress=False)
    assert "the config changed since the last run (finetune.epochs)" in caplog.text


def test_tables_and_compute_times_hold_only_todays_stages(tiny_run, tmp_path, monkeypatch):
    """Records made under other settings stay in stages/ but never reach the tables, the compute times or the
    figures: a rerun stopped before its first stage leaves results.csv without the rows it would redo (the
    baselines, which a [finetune] edit leaves alone, stay); a run of seed 1 alone sums seed 1's stages; without a
    pretrained arm, pretrain.csv is empty and no figure is drawn from the encoders left behind."""
    import shutil

    import stacked_ae.pipeline.runner as runner
    from stacked_ae.report.figures import _model_files
    from stacked_ae.report.rundata import load_run

    out, _ = tiny_run
    run_dir = tmp_path / "tiny"
    shutil.copytree(out, run_dir)
    n_records = len(list((run_dir / "stages").glob("*.json")))

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(runner, "run_local", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(from_dict(dict(TINY, finetune=dict(TINY["finetune"], epochs=4))), run_dir, device="cpu",
                         progress=False)
    rows = pd.read_csv(run_dir / "results.csv")
    assert sorted(set(rows["arm"])) == ["logreg", "pca-logreg"] and len(rows) == 2 * 2 * 2, rows[["seed", "arm"]]
    assert len(list((run_dir / "stages").glob("*.json"))) == n_records      # nothing deleted

    shutil.rmtree(run_dir)
    shutil.copytree(out, run_dir)
    run_pipeline(from_dict(dict(TINY, seeds=[1])), run_dir, device="cpu", progress=False)
    records = [json.loads(p.read_text()) for p in (run_dir / "stages").glob("*seed1*.json")]
    pretrain = sum(r["wall_seconds"] for r in records if "result" not in r)
    finetune = sum(r["result"]["wall_seconds"] for r in records if "result" in r and r["result"]["arm"] in
                   ("pretrained", "random", "frozen"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    seconds = manifest["stage_seconds"]
    assert manifest["stage_devices"] == {"cpu": len(records)}, manifest["stage_devices"]   # seed 1's alone
    # the manifest rounds to 0.1 s: half a step, and the float error of a sum such as 0.45000000000000007
    assert seconds["pretrain"] == pytest.approx(pretrain, abs=0.0501), (seconds, pretrain)
    assert seconds["finetune"] == pytest.approx(finetune, abs=0.0501), (seconds, finetune)
    assert set(pd.read_csv(run_dir / "pretrain.csv")["seed"]) == {1}

    run_pipeline(from_dict(dict(TINY, arms=["random", "logreg"], pretrain=dict(TINY["pretrain"], epochs=3))),
                 run_dir, device="cpu", progress=False)
    assert len(pd.read_csv(run_dir / "pretrain.csv")) == 0
    assert (run_dir / "encoders" / "seed0.pt").is_file() and _model_files(load_run(run_dir)) is None
