"""Faults during a run: Ctrl-C keeps finished stages and resumes to the same results; a diverging stage fails alone.

The main Ctrl-C test drives `python -m stacked_ae run` in a subprocess and sends it a real SIGINT; the others raise
KeyboardInterrupt at a chosen point in-process. The divergence tests use learning rates that overflow linear units
within one epoch (sigmoid units saturate instead, and their losses stay finite).
"""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from stacked_ae.cli import main
from stacked_ae.pipeline.config import dumps_toml, from_dict
from stacked_ae.pipeline.rundir import RunFolderBusy
from stacked_ae.pipeline.runner import run_pipeline

TINY_TOML = """
name = "tiny"
seeds = [0]
arms = ["pretrained", "random", "frozen"]   # after a resume, frozen reads the pretrained encoder from disk
[data]
dataset = "digits"
budgets = ["all"]
[model]
sizes = [24, 12]
[pretrain]
epochs = 1
batch_size = 64
noise = 0.2
[finetune]
epochs = 2
lr = [0.01, 0.03]
batch_size = 64
patience = 2
"""


def comparable(path: Path) -> pd.DataFrame:
    """results.csv without the wall-clock column (the only one that may differ between runs)."""
    return pd.read_csv(path).drop(columns=["wall_seconds"])


def interrupt_when(cmd: list[str], ready, timeout: float = 120,
                   sig: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Start `cmd`, send `sig` (default SIGINT, Ctrl-C) as soon as `ready()` holds, and return the finished process."""
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec:
    # Python would then never raise KeyboardInterrupt. Give the child the default disposition, as a
    # terminal's foreground job has.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be interrupted:\n{proc.stderr.read()}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def assert_clean_stop(result: subprocess.CompletedProcess, run_dir: Path, code: int = 130) -> dict[str, int]:
    """Exit `code` with a resume hint, no traceback, every stage file whole JSON, no temp file left; returns mtimes."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "run the same command again to resume" in result.stderr and "Traceback" not in result.stderr, \
        result.stderr
    stages = sorted((run_dir / "stages").glob("*.json")) if (run_dir / "stages").is_dir() else []
    for path in stages:
        json.loads(path.read_text())
    leftovers = [p.name for p in run_dir.rglob(".*.tmp*")]
    assert not leftovers, f"temp files left behind: {leftovers}"
    # the tables list exactly the finished stages, so that `sae report` shows them
    assert listed_stages(run_dir) == {p.stem for p in stages if p.name.startswith("arm_")}
    return {p.name: p.stat().st_mtime_ns for p in stages}


def listed_stages(run_dir: Path) -> set[str]:
    """The arm stages that results.csv lists, named as their stage records are."""
    results = pd.read_csv(run_dir / "results.csv", dtype={"budget": str})
    return {f"arm_seed{r.seed}_budget{r.budget}_{r.arm}" for r in results.itertuples()}


def test_ctrl_c_keeps_finished_stages_and_resumes_to_the_same_results(tmp_path):
    """Ctrl-C once an arm has finished, then a rerun: the kept stages are not redone and the results equal those
    of an uninterrupted run."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML)
    run_dir = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "stacked_ae", "run", str(pipeline), "--out", str(run_dir), "--quiet", "--no-report",
           "--device", "cpu"]
    interrupted = interrupt_when(cmd, lambda: any(run_dir.glob("stages/arm_*.json")))
    kept = assert_clean_stop(interrupted, run_dir)
    assert any(name.startswith("arm_") for name in kept) and len(kept) < 1 + 3, kept   # some, not all, stages

    assert main(cmd[3:]) == 0           # the same command, resumed (in-process: one interpreter start is enough)
    stages = run_dir / "stages"
    assert {name: (stages / name).stat().st_mtime_ns for name in kept} == kept, "finished stages were redone"
    reference = tmp_path / "uninterrupted"
    run_pipeline(from_dict(tomllib.loads(TINY_TOML)), reference, device="cpu", progress=False)
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(reference / "results.csv"))


def test_sigterm_stops_a_run_like_ctrl_c_with_exit_143(tmp_path):
    """`kill PID` (SIGTERM: how one stops `nohup sae run ... &`, whose SIGINT the shell ignores, and what batch
    schedulers send) once an arm has finished: exit 143, "terminated" and the resume hint, finished stages kept
    and not redone by the rerun."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML)
    run_dir = tmp_path / "terminated"
    cmd = [sys.executable, "-m", "stacked_ae", "run", str(pipeline), "--out", str(run_dir), "--quiet", "--no-report",
           "--device", "cpu"]
    stopped = interrupt_when(cmd, lambda: any(run_dir.glob("stages/arm_*.json")), sig=signal.SIGTERM)
    kept = assert_clean_stop(stopped, run_dir, code=143)
    assert stopped.stderr.strip().startswith("terminated: finished stages are kept in"), stopped.stderr
    assert any(name.startswith("arm_") for name in kept) and len(kept) < 1 + 3, kept
    assert main(cmd[3:]) == 0
    stages = run_dir / "stages"
    assert {name: (stages / name).stat().st_mtime_ns for name in kept} == kept, "finished stages were redone"
    assert len(pd.read_csv(run_dir / "results.csv")) == 3


def test_a_report_after_a_stopped_rerun_shows_the_stages_it_finished(tmp_path):
    """A finished run, rerun under a new fine-tuning setting and stopped by SIGTERM after some arms: the tables,
    and the report `sae report` renders from them, hold the stages this stopped invocation finished (and not
    only those the start of the run found current), and the report names the ones still to run."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML)
    run_dir = tmp_path / "run"
    base = ["run", str(pipeline), "--out", str(run_dir), "--quiet", "--no-report", "--device", "cpu"]
    assert main(base) == 0
    cmd = [sys.executable, "-m", "stacked_ae", *base, "--set", "finetune.patience=1"]
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("arm_*.json")}
    rewritten = lambda: sum(p.stat().st_mtime_ns != before.get(p.name) for p in (run_dir / "stages").glob("arm_*"))
    stopped = interrupt_when(cmd, lambda: rewritten() >= 1, sig=signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    redone = {p.stem for p in (run_dir / "stages").glob("arm_*.json") if p.stat().st_mtime_ns != before[p.name]}
    assert 1 <= len(redone) < 3, redone
    assert listed_stages(run_dir) == redone

    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert f"{len(redone)} of 3 seed × budget × arm results are in" in report, report
    results = pd.read_csv(run_dir / "results.csv")
    row = re.search(r"^\| all \| 0 \| [0-9a-f]{12} \| (.*) \|$", report, re.M).group(1).split(" | ")  # per-seed row
    for arm, cell in zip(["pretrained", "random", "frozen"], row, strict=True):
        done = f"arm_seed0_budgetall_{arm}" in redone
        expected = f"{100 * results.query('arm == @arm')['test_error'].iloc[0]:.2f}" if done else "—"
        assert cell == expected, (arm, row)


def test_sigterm_keeps_its_previous_handler_after_a_run(tmp_path):
    """The SIGTERM handler is the run's only: after `sae run` returns, the caller's handler is back."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML.replace('"pretrained", "random", "frozen"', '"random"'))
    mine = lambda signum, frame: None   # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["run", str(pipeline), "--out", str(tmp_path / "run"), "--quiet", "--no-report",
                     "--device", "cpu"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_during_pretraining_abandons_it_cleanly(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of greedy pretraining (its first layer trained): exit 130 with the resume hint, and
    neither a stage record nor an encoder file of the abandoned stage."""
    from stacked_ae.core import pretrain
    real_fit = pretrain.fit_autoencoder
    calls = []

    def fit_then_ctrl_c(*args, **kwargs):
        calls.append(kwargs["stage"])
        if len(calls) == 2:          # layer 1 is trained; Ctrl-C arrives while layer 2 trains
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pretrain, "fit_autoencoder", fit_then_ctrl_c)
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML)
    run_dir = tmp_path / "run"
    assert main(["run", str(pipeline), "--out", str(run_dir), "--quiet", "--no-report", "--device", "cpu"]) == 130
    assert len(calls) == 2, calls
    err = capsys.readouterr().err
    assert err.strip() == f"interrupted: finished stages are kept in {run_dir}; run the same command again to resume"
    assert not (run_dir / "stages").exists() and not (run_dir / "encoders").exists()
    assert not list(run_dir.rglob(".*.tmp*")) and (run_dir / "config.json").is_file()


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """Ctrl-C between writing the temp file and renaming it: readers still see the old file, whole."""
    from stacked_ae.core import files
    from stacked_ae.pipeline import rundir
    path = tmp_path / "stages" / "arm.json"
    rundir.write_json(path, {"version": 1})

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in path.parent.iterdir()] == ["arm.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """A write that fails before the rename (a full disk at fsync) raises, keeps the old file and cleans up."""
    from stacked_ae.core import files
    path = tmp_path / "encoders" / "seed0.pt"
    files.atomic_write(path, b"old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["seed0.pt"]


def test_ctrl_c_after_force_says_to_resume_without_force(tmp_path, monkeypatch, capsys):
    """After `--force`, the resume hint drops --force: rerunning with it would discard the stages just kept."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(TINY_TOML)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("stacked_ae.pipeline.runner.run_pipeline", interrupted)
    assert main(["run", str(pipeline), "--out", str(tmp_path / "run"), "--force", "--quiet"]) == 130
    assert "run the same command without --force again to resume" in capsys.readouterr().err


# ---------------------------------------------------------------- divergence

DIVERGING = {
    "name": "diverging",
    "seeds": [0, 1],
    "arms": ["pretrained", "random", "frozen", "logreg"],
    "data": {"dataset": "digits", "budgets": ["all"]},
    "model": {"sizes": [16, 8], "output_activation": "linear"},   # squared error on linear outputs overflows
    "pretrain": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 1e6},
    "finetune": {"epochs": 2, "lr": [0.01], "batch_size": 64, "patience": 2},
}


def test_diverging_pretraining_fails_its_arms_and_the_others_go_on(tmp_path):
    """Pretraining with lr=1e6 fails the pretrained and frozen arms of every seed, naming the layer, the epoch
    and the lr; the random and logistic-regression arms of both seeds still finish."""
    results = run_pipeline(from_dict(DIVERGING), tmp_path / "run", device="cpu", progress=False)
    table = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(table[["seed", "arm", "status"]], results[["seed", "arm", "status"]])
    failed = table[table["arm"].isin(["pretrained", "frozen"])]
    assert len(failed) == 4 and (failed["status"] == "failed").all(), table[["seed", "arm", "status"]]
    for row in failed.itertuples():
        assert f"pretraining, seed {row.seed}: pretrain layer 1/2 (64->16): training loss became" in row.message
        assert "at epoch 1 (lr=1e+06)" in row.message, row.message
    ok = table[table["arm"].isin(["random", "logreg"])]
    assert len(ok) == 4 and (ok["status"] == "ok").all() and ok["test_error"].astype(float).lt(0.9).all(), ok
    # the run summary's counts: both pretrainings were computed (and failed); a rerun reuses their failed records
    assert results.attrs["stages"] == {"computed": 8, "reused": 0, "pretrain computed": 2, "pretrain reused": 0}
    again = run_pipeline(from_dict(DIVERGING), tmp_path / "run", device="cpu", progress=False)
    assert again.attrs["stages"] == {"computed": 0, "reused": 8, "pretrain computed": 0, "pretrain reused": 2}


def test_diverging_fine_tuning_is_marked_in_results_summary_and_report(tmp_path, capsys):
    """`sae run --set finetune.lr=[1e6]` with SGD on linear units: the neural fine-tuned arms fail (the message names
    the arm, the epoch and the lr), the run still ends with exit 0, and results.csv, the summary and the report
    mark each failure."""
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('name = "diverging"\nseeds = [0]\narms = ["pretrained", "random", "logreg"]\n'
                        '[data]\nbudgets = ["all"]\n[model]\nsizes = [16, 8]\nactivation = "linear"\n'
                        '[pretrain]\nepochs = 1\n[finetune]\nepochs = 2\npatience = 2\n')
    out = tmp_path / "run"
    code = main(["run", str(pipeline), "--out", str(out), "--quiet", "--device", "cpu",
                 "--set", "finetune.lr=[1e6]", "--set", "finetune.optimizer=sgd"])
    assert code == 0
    printed = capsys.readouterr().out
    results = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("arm")
    assert list(results["status"]) == ["failed", "failed", "ok"], results[["status", "message"]]
    for arm in ("pretrained", "random"):
        message = results.loc[arm, "message"]
        assert message.startswith(f"{arm}: every learning rate diverged: seed 0, budget all, {arm} lr=1e+06: "
                                  f"training loss became"), \
            message
        assert "at epoch 1 (lr=1e+06)" in message, message
        assert f"FAILED seed 0, budget all, {arm}: {message}" in printed, printed
    report = (out / "report.md").read_text()
    assert "## Missing or failed" in report and "2 failed stage(s)" in report, report
    assert results.loc["random", "message"] in report


def test_failed_stages_are_cached_and_not_retried(tmp_path):
    """A rerun keeps the records of failed stages (pretraining and fine-tuning) as they are: the failure is
    deterministic, and the rerun's results show the same failures."""
    cfg = from_dict(dict(DIVERGING, seeds=[0], arms=["pretrained", "random"],
                         finetune=dict(DIVERGING["finetune"], lr=[1e6], optimizer="sgd"),
                         model=dict(DIVERGING["model"], activation="linear")))
    first = run_pipeline(cfg, tmp_path / "run", device="cpu", progress=False)
    stages = sorted((tmp_path / "run" / "stages").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in stages}
    assert set(before) == {"pretrain_seed0.json", "arm_seed0_budgetall_pretrained.json",
                           "arm_seed0_budgetall_random.json"}, before
    again = run_pipeline(cfg, tmp_path / "run", device="cpu", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in stages} == before
    assert list(again["status"]) == list(first["status"]) == ["failed", "failed"], again[["arm", "status"]]


# ---------------------------------------------------------------- learning rates of a stage in progress

GRID = {
    "name": "grid",
    "seeds": [0],
    "arms": ["pretrained", "random"],
    "data": {"dataset": "digits", "budgets": ["all"]},
    "model": {"sizes": [24, 12]},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "finetune": {"epochs": 3, "lr": [0.003, 0.03, 0.3], "batch_size": 64, "patience": 3},
}


def stop_at(monkeypatch, module, name: str, stops: set[str]) -> list[str]:
    """Wrap `module.name` (a fit function): record each call's stage, and raise KeyboardInterrupt on a stage in
    `stops` (emptied after, so a later run trains it)."""
    real, calls = getattr(module, name), []

    def fit(*args, **kwargs):
        calls.append(kwargs["stage"])
        if kwargs["stage"] in stops:
            stops.discard(kwargs["stage"])
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fit)
    return calls


@pytest.mark.parametrize("task", ["classification", "reconstruction"])
def test_a_stage_stopped_between_learning_rates_resumes_after_the_finished_ones(tmp_path, monkeypatch, task):
    """Ctrl-C while the third learning rate of the random arm trains: the two finished ones are kept (partial/),
    the rerun trains only the third, removes partial/, and gives the results and the history of an
    uninterrupted run, selected model included (its test metrics are those of the kept weights)."""
    from stacked_ae.pipeline import arms
    settings = dict(GRID, task=task, arms=["pretrained", "random"] + (["pca"] if task == "reconstruction" else []))
    if task == "reconstruction":
        settings["data"] = {"dataset": "digits"}
    cfg = from_dict(settings)
    calls = stop_at(monkeypatch, arms, "fit_classifier" if task == "classification" else "fit_autoencoder",
                    stops := {"seed 0, budget all, random lr=0.3"})
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, run_dir, device="cpu", progress=False)
    kept = sorted(p.name for p in (run_dir / "partial" / "arm_seed0_budgetall_random").iterdir())
    assert kept == ["lr0.003.pt", "lr0.03.pt"] and not stops, kept
    assert not (run_dir / "stages" / "arm_seed0_budgetall_random.json").exists()

    calls.clear()
    run_pipeline(cfg, run_dir, device="cpu", progress=False)
    assert calls == ["seed 0, budget all, random lr=0.3"], calls
    assert not (run_dir / "partial").exists()

    reference = tmp_path / "uninterrupted"
    run_pipeline(cfg, reference, device="cpu", progress=False)
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(reference / "results.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "history.csv"), pd.read_csv(reference / "history.csv"))


def test_kept_learning_rates_follow_the_settings_they_were_trained_under(tmp_path, monkeypatch):
    """A kept learning rate is reused only under the settings it was trained with: after an edit of
    [finetune] epochs every value trains again; after an edit that only widens the grid, the kept values are
    reused and only the new ones train."""
    from stacked_ae.pipeline import arms
    calls = stop_at(monkeypatch, arms, "fit_classifier", stops := {"seed 0, budget all, random lr=0.3"})
    settings = dict(GRID, arms=["random"])
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)

    widened = dict(settings, finetune=dict(GRID["finetune"], lr=[0.001, 0.003, 0.03, 0.3]))
    stops.add("seed 0, budget all, random lr=0.3")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(from_dict(widened), tmp_path / "run", device="cpu", progress=False)
    assert calls == ["seed 0, budget all, random lr=0.001", "seed 0, budget all, random lr=0.3"], calls

    longer = dict(widened, finetune=dict(widened["finetune"], epochs=4))
    calls.clear()
    run_pipeline(from_dict(longer), tmp_path / "run", device="cpu", progress=False)
    assert calls == [f"seed 0, budget all, random lr={lr:g}" for lr in (0.001, 0.003, 0.03, 0.3)], calls


def test_a_diverged_learning_rate_is_kept_as_diverged(tmp_path, monkeypatch):
    """A learning rate that diverged is kept as such: the resumed stage does not train it again and still
    names its failure when every value failed."""
    from stacked_ae.pipeline import arms
    settings = dict(DIVERGING, seeds=[0], arms=["random"],
                    finetune=dict(DIVERGING["finetune"], lr=[1e6, 1e7], optimizer="sgd"),
                    model=dict(DIVERGING["model"], activation="linear"))
    calls = stop_at(monkeypatch, arms, "fit_classifier", {"seed 0, budget all, random lr=1e+07"})
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    calls.clear()
    results = run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    assert calls == ["seed 0, budget all, random lr=1e+07"], calls
    message = results.loc[0, "message"]
    assert "seed 0, budget all, random lr=1e+06: training loss became" in message, message
    assert "seed 0, budget all, random lr=1e+07" in message, message


@pytest.mark.parametrize("task", ["classification", "reconstruction"])
def test_a_stage_stopped_inside_a_learning_rate_resumes_after_its_last_kept_epoch(tmp_path, monkeypatch, caplog,
                                                                                 epoch_killer, task):
    """Ctrl-C in the third epoch of the random arm's second learning rate, its state kept after every epoch:
    the rerun trains only that learning rate's third epoch and the third learning rate, leaves no partial/,
    and gives the results and the history of an uninterrupted run."""
    from stacked_ae.pipeline import arms
    monkeypatch.setattr(arms, "CHECKPOINT_EVERY_S", 0.0)
    settings = dict(GRID, task=task, arms=["random"])
    if task == "reconstruction":
        settings["data"] = {"dataset": "digits"}
    cfg = from_dict(settings)
    stages = stop_at(monkeypatch, arms, "fit_classifier" if task == "classification" else "fit_autoencoder", set())
    epochs, epoch_killer.label = epoch_killer.calls, lambda: stages[-1]
    epoch_killer.at = 3 + 3      # lr 0.003 trains its 3 epochs (patience 3 cannot stop it), then epoch 3 of lr 0.03
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, run_dir, device="cpu", progress=False)
    partial = run_dir / "partial" / "arm_seed0_budgetall_random"
    assert sorted(p.name for p in partial.iterdir()) == ["lr0.003.pt", "lr0.03.epochs.pt"]
    import torch
    earlier = json.loads(torch.load(partial / "lr0.003.pt", weights_only=True)["record"])["seconds"] + \
        torch.load(partial / "lr0.03.epochs.pt", weights_only=True)["elapsed"]
    assert earlier > 0
    assert epochs[-1] == "seed 0, budget all, random lr=0.03"

    epoch_killer.at = 0
    epochs.clear()
    with caplog.at_level(logging.INFO, logger="stacked_ae.pipeline"):
        run_pipeline(cfg, run_dir, device="cpu", progress=False)
    assert "arm_seed0_budgetall_random: lr=0.03 resumes after epoch 2, kept by an interrupted run" in caplog.text
    label = "seed 0, budget all, random lr="
    assert epochs == [label + "0.03"] + [label + "0.3"] * epochs_of(run_dir, 0.3), epochs
    assert not (run_dir / "partial").exists()
    # the stage's time counts the training its stopped run did (kept rate and kept epochs) too
    resumed = pd.read_csv(run_dir / "results.csv").query("arm == 'random'")["wall_seconds"].iloc[0]
    assert resumed >= round(earlier, 3)

    reference = tmp_path / "uninterrupted"
    run_pipeline(cfg, reference, device="cpu", progress=False)
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(reference / "results.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "history.csv"), pd.read_csv(reference / "history.csv"))


def epochs_of(run_dir: Path, lr: float) -> int:
    history = pd.read_csv(run_dir / "history.csv")
    return int((history["lr"] == lr).sum())


def test_pretraining_stopped_in_a_layer_resumes_there_and_leaves_no_partial(tmp_path, monkeypatch, epoch_killer):
    """Ctrl-C in pretraining's second layer: partial/pretrain_seed0 keeps layer 1 and layer 2's state; the
    rerun trains only what was left and writes the encoder and results of an uninterrupted run."""
    from stacked_ae.pipeline import arms
    monkeypatch.setattr(arms, "CHECKPOINT_EVERY_S", 0.0)
    settings = dict(GRID, arms=["pretrained"], pretrain={"epochs": 3, "batch_size": 64})
    cfg = from_dict(settings)
    epochs, epoch_killer.at = epoch_killer.calls, 3 + 2     # killed in epoch 2 of layer 2
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, run_dir, device="cpu", progress=False)
    assert sorted(p.name for p in (run_dir / "partial" / "pretrain_seed0").iterdir()) == \
        ["layer1.pt", "layer2.epochs.pt"]

    epoch_killer.at, epochs[:] = 0, []
    run_pipeline(cfg, run_dir, device="cpu", progress=False)
    assert not (run_dir / "partial").exists()
    reference = tmp_path / "uninterrupted"
    run_pipeline(cfg, reference, device="cpu", progress=False)
    assert (run_dir / "encoders" / "seed0.pt").read_bytes() == (reference / "encoders" / "seed0.pt").read_bytes()
    pd.testing.assert_frame_equal(comparable(run_dir / "results.csv"), comparable(reference / "results.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "pretrain.csv").drop(columns="wall_seconds", errors="ignore"),
                                  pd.read_csv(reference / "pretrain.csv").drop(columns="wall_seconds", errors="ignore"))


# ---------------------------------------------------------------- grids that grow past an edge

def _fake_grid(grid, extend: int, best_at: float, diverge_above: float = float("inf")):
    """Run arms._grid on a validation loss with its minimum at `best_at` (in log10(lr)); returns (selected lr,
    on_grid_edge, the rates in the order tried)."""
    import math
    from types import SimpleNamespace

    from stacked_ae.core.train import TrainingDiverged
    from stacked_ae.pipeline import arms
    finetune = SimpleNamespace(grid=lambda arm: tuple(grid), extend=extend)
    ctx = SimpleNamespace(cfg=SimpleNamespace(finetune=finetune))
    order = []

    def fit_one(lr):
        order.append(lr)
        if lr > diverge_above:
            raise TrainingDiverged(f"lr={lr:g} diverged")
        loss = (math.log10(lr) - math.log10(best_at)) ** 2
        return object(), [{"epoch": 1, "train_loss": loss, "val_loss": loss}], {"val_loss": loss}, (loss,)

    _, metrics, _ = arms._grid(ctx, "random", fit_one, build=None)
    return metrics["lr"], metrics["on_grid_edge"], order


def test_extend_tries_values_beyond_an_edge_until_the_best_is_inside():
    """Beyond an end, the steps repeat the grid's last two at that end (0.01, 0.03, 0.1 goes on with 0.3, 1, 3
    and down with 0.003, 0.001); the search stops once the best is inside what was tried, at the limit, or past
    a value that diverged."""
    assert _fake_grid([0.01, 0.03, 0.1], 3, best_at=0.5) == (0.3, False, [0.01, 0.03, 0.1, 0.3, 1.0])
    assert _fake_grid([0.01, 0.03, 0.1], 3, best_at=0.001) == (0.001, False, [0.01, 0.03, 0.1, 0.003, 0.001, 0.0003])
    assert _fake_grid([1e-4, 3e-4, 1e-3, 3e-3, 1e-2], 3, best_at=1)[2][5:] == [0.03, 0.1, 0.3]
    # the limit reached with the best still on the end: the selection is on the edge of what was tried
    assert _fake_grid([0.01, 0.03, 0.1], 2, best_at=100) == (1.0, True, [0.01, 0.03, 0.1, 0.3, 1.0])
    # a value beyond that diverges bounds the search: the best below it is inside what was tried
    assert _fake_grid([0.01, 0.03, 0.1], 3, best_at=100, diverge_above=0.2) == (0.1, False, [0.01, 0.03, 0.1, 0.3])
    # inside the grid, or extend = 0: nothing beyond
    assert _fake_grid([0.01, 0.03, 0.1], 3, best_at=0.03) == (0.03, False, [0.01, 0.03, 0.1])
    assert _fake_grid([0.01, 0.03, 0.1], 0, best_at=100) == (0.1, True, [0.01, 0.03, 0.1])


def test_extend_reruns_only_the_stages_whose_selection_sat_on_an_edge(tmp_path, monkeypatch):
    """Adding finetune.extend to a finished run: stages whose best rate was inside the grid are kept (extension
    would not have started; their records are reused as they stand, not rewritten, so kept figures drawn from them
    stay current), stages on an edge train again with the grid grown past that edge."""
    from stacked_ae.pipeline import arms
    from stacked_ae.pipeline.status import stage_status
    settings = dict(GRID, arms=["pretrained", "random", "frozen"], seeds=[0, 1],
                    finetune=dict(GRID["finetune"], lr=[0.01, 0.1, 1.0]))
    first = run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    edges = {f"{r.arm} seed {r.seed}" for r in first.itertuples() if r.on_grid_edge}
    assert 0 < len(edges) < len(first), first[["seed", "arm", "lr", "on_grid_edge"]]   # the test needs both kinds

    extended = dict(settings, finetune=dict(settings["finetune"], extend=2))
    from stacked_ae.pipeline.arms import arm_fingerprint
    assert arm_fingerprint(from_dict(extended), 0, "all", "random", "d", 0.1) == \
        arm_fingerprint(from_dict(settings), 0, "all", "random", "d", 0.1)   # kept rates survive adding extend
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "stages").glob("arm_*.json")}
    calls = stop_at(monkeypatch, arms, "fit_classifier", set())
    second = run_pipeline(from_dict(extended), tmp_path / "run", device="cpu", progress=False)
    retrained = {"{2} seed {0}".format(*re.fullmatch(r"seed (\d+), budget (\w+), (\S+) lr=.*", stage).groups())
                 for stage in calls}
    assert retrained == edges
    assert len(calls) >= 3 * len(edges)
    kept = first[~first["on_grid_edge"].astype(bool)]
    pd.testing.assert_frame_equal(comparable_rows(second, kept), comparable_rows(kept, kept))
    for name, blob in before.items():
        if not json.loads(blob)["result"]["on_grid_edge"]:
            assert (tmp_path / "run" / "stages" / name).read_bytes() == blob, name
    cfg = from_dict(extended)
    assert {s["state"] for s in stage_status(cfg, tmp_path / "run")} == {"finished"}
    assert not second.loc[second["arm"].isin(["pretrained", "random", "frozen"]), "on_grid_edge"].isna().any()
    from stacked_ae.report.render import render_report
    text = render_report(tmp_path / "run").read_text()
    assert "grid 0.01, 0.1, 1; extended by up to 2 values beyond an end where the best rate sat on it;" in text
    still = second[second["on_grid_edge"].astype(bool)]
    assert ("of the rates tried, after extending the grid: widen it further" in text) == (not still.empty)


def test_raising_extend_reruns_only_the_stages_still_on_an_edge(tmp_path, monkeypatch):
    """Raising finetune.extend from 1 to 3: a stage whose search stopped inside what it tried would stop there
    again, so it is kept; a stage whose best sat on the last value tried trains again, further out."""
    from stacked_ae.pipeline import arms
    from stacked_ae.pipeline.status import stage_status
    settings = dict(GRID, arms=["pretrained", "random", "frozen"], seeds=[0, 1],
                    finetune=dict(GRID["finetune"], lr=[0.003, 0.01, 0.03], extend=1))
    first = run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    edges = {f"{r.arm} seed {r.seed}" for r in first.itertuples() if r.on_grid_edge}
    assert 0 < len(edges) < len(first), first[["seed", "arm", "lr", "on_grid_edge"]]   # the test needs both kinds
    raised = dict(settings, finetune=dict(settings["finetune"], extend=3))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "stages").glob("arm_*.json")}
    stale = {f"{s['arm']} seed {s['seed']}" for s in stage_status(from_dict(raised), tmp_path / "run")
             if s["state"] == "stale"}
    assert stale == edges   # what `sae status` says before the run is what the run does
    calls = stop_at(monkeypatch, arms, "fit_classifier", set())
    second = run_pipeline(from_dict(raised), tmp_path / "run", device="cpu", progress=False)
    retrained = {"{2} seed {0}".format(*re.fullmatch(r"seed (\d+), budget (\w+), (\S+) lr=.*", stage).groups())
                 for stage in calls}
    assert retrained == edges
    kept = first[~first["on_grid_edge"].astype(bool)]
    pd.testing.assert_frame_equal(comparable_rows(second, kept), comparable_rows(kept, kept))
    unchanged = {name for name, blob in before.items() if (tmp_path / "run" / "stages" / name).read_bytes() == blob}
    assert unchanged == {f"arm_seed{r.seed}_budgetall_{r.arm}.json" for r in kept.itertuples()}   # reused as they stand
    assert {s["state"] for s in stage_status(from_dict(raised), tmp_path / "run")} == {"finished"}


def _epochs_by_lr(record: dict) -> dict:
    trained: dict = {}
    for row in record["history"]:
        trained[row["lr"]] = max(trained.get(row["lr"], 0), row["epoch"])
    return trained


def test_raising_the_epoch_cap_retrains_only_the_stages_it_bound(tmp_path, monkeypatch):
    """Raising finetune.epochs under the constant schedule: a stage whose every rate stopped early is what the new
    cap computes, epoch for epoch, so it is reused as it stands (its file not rewritten); a stage
    with a rate that ran to the old cap trains again. The tables equal a fresh run's at the new cap; under a
    cosine schedule, whose steps depend on the cap, every stage trains again."""
    from stacked_ae.pipeline import arms
    from stacked_ae.pipeline.status import stage_status
    settings = dict(GRID, seeds=[0, 1], data={"dataset": "digits", "budgets": [5, "all"]},
                    finetune=dict(GRID["finetune"], epochs=12, lr=[0.03, 0.3], patience=2))
    run_pipeline(from_dict(settings), tmp_path / "run", device="cpu", progress=False)
    raw = {p.stem: p.read_bytes() for p in (tmp_path / "run" / "stages").glob("arm_*.json")}
    before = {key: json.loads(blob) for key, blob in raw.items()}
    bound = {k for k, r in before.items() if max(_epochs_by_lr(r).values()) == 12}
    assert 0 < len(bound) < len(before), {k: _epochs_by_lr(r) for k, r in before.items()}   # both kinds

    raised = dict(settings, finetune=dict(settings["finetune"], epochs=40))
    assert {s["key"] for s in stage_status(from_dict(raised), tmp_path / "run") if s["state"] == "stale"} == bound
    calls = stop_at(monkeypatch, arms, "fit_classifier", set())
    second = run_pipeline(from_dict(raised), tmp_path / "run", device="cpu", progress=False)
    after = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "stages").glob("arm_*.json")}
    assert len(calls) == sum(len(_epochs_by_lr(after[k])) for k in bound)   # the bound stages' rates alone
    for key in set(before) - bound:
        assert (tmp_path / "run" / "stages" / f"{key}.json").read_bytes() == raw[key]   # not trained, not rewritten
    assert {s["state"] for s in stage_status(from_dict(raised), tmp_path / "run")} == {"finished"}
    monkeypatch.undo()
    fresh = run_pipeline(from_dict(raised), tmp_path / "fresh", device="cpu", progress=False)
    pd.testing.assert_frame_equal(second.drop(columns=["wall_seconds"]), fresh.drop(columns=["wall_seconds"]))

    cosine = {**settings, "finetune": dict(settings["finetune"], schedule="cosine")}
    run_pipeline(from_dict(cosine), tmp_path / "cosine", device="cpu", progress=False)
    calls = stop_at(monkeypatch, arms, "fit_classifier", set())
    run_pipeline(from_dict(dict(cosine, finetune=dict(cosine["finetune"], epochs=40))), tmp_path / "cosine",
                 device="cpu", progress=False)
    assert len(calls) == 2 * len(before)   # every stage, each of its 2 rates


def comparable_rows(results: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    keys = rows[["seed", "arm"]].apply(tuple, axis=1)
    picked = results[results[["seed", "arm"]].apply(tuple, axis=1).isin(keys)]
    return picked.drop(columns=["wall_seconds"]).sort_values(["seed", "arm"]).reset_index(drop=True)


HOLD = ("import sys; from stacked_ae.pipeline.rundir import hold; held = hold(sys.argv[1], 'sae run other.toml'); "
        "held.__enter__(); print('held', flush=True); sys.stdin.read()")


def test_a_second_run_of_a_folder_in_use_is_refused_naming_the_first(tmp_path, capsys):
    """While a run holds its folder, another run of it is refused before it writes anything (exit status 2 from
    `sae run`), naming the holder's pid and command; `sae status` says it is running. A killed holder leaves no
    lock behind (the kernel drops it), and a finished run leaves no holder file."""
    settings = dict(GRID, arms=["logreg"])
    cfg, run_dir = from_dict(settings), tmp_path / "run"
    run_pipeline(cfg, run_dir, device="cpu", progress=False)
    run_pipeline(cfg, run_dir, device="cpu", progress=False)     # the first run let go of the folder
    assert not (run_dir / ".sae-run.pid").exists()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=rf"another run is writing this folder \(pid {holder.pid} on .*: "
                                                r"sae run other.toml\)"):
            run_pipeline(cfg, run_dir, device="cpu", progress=False)
        pipeline = tmp_path / "grid.toml"
        pipeline.write_text(dumps_toml(cfg))
        capsys.readouterr()
        assert main(["run", str(pipeline), "--out", str(run_dir), "--quiet"]) == 2
        assert f"another run is writing this folder (pid {holder.pid}" in capsys.readouterr().err
        assert main(["status", str(run_dir)]) == 0
        assert f"running now: pid {holder.pid} on " in capsys.readouterr().out
        after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != ".sae-run.pid"}
        assert after == {p: t for p, t in before.items()}, "a refused run wrote to the folder"
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / ".sae-run.pid").exists()     # left by the killed holder: informative only
    assert main(["status", str(run_dir)]) == 0 and "running now" not in capsys.readouterr().out
    run_pipeline(cfg, run_dir, device="cpu", progress=False)
    assert not (run_dir / ".sae-run.pid").exists()


def test_a_folder_that_cannot_be_locked_still_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    """flock failing for another reason than a holder (a network mount without locks): the run goes on, and the
    log says that a second run would not be refused."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="stacked_ae.pipeline"):
        results = run_pipeline(from_dict(dict(GRID, arms=["logreg"])), tmp_path / "run", device="cpu", progress=False)
    assert list(results["status"]) == ["ok"]
    assert "cannot lock the run folder ([Errno 37] No locks available)" in caplog.text


def test_a_look_by_sae_status_does_not_make_a_starting_run_refuse(tmp_path, monkeypatch):
    """`busy` (sae status) holds a shared lock for an instant: a run starting in that instant waits for it rather
    than reporting the folder in use."""
    import fcntl
    import os

    from stacked_ae.pipeline import rundir
    root = tmp_path / "run"
    root.mkdir()
    looker = os.open(root, os.O_RDONLY)
    fcntl.flock(looker, fcntl.LOCK_SH)           # sae status looking, right as the run starts
    real_sleep = rundir.time.sleep

    looks = [looker]

    def sleep_then_release(seconds):
        while looks:
            os.close(looks.pop())                # the look ends during the run's first wait
        real_sleep(seconds)

    monkeypatch.setattr(rundir.time, "sleep", sleep_then_release)
    with rundir.hold(root, "sae run x.toml"):
        assert rundir.holder(root).endswith(": sae run x.toml")
    assert not looks, "the run never waited for the look to end"
