"""The `sae` command: smoke run with report, validate, datasets, and short errors with exit status 2."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stacked_ae.cli import main

SMOKE = """
name = "smoke"
seeds = [0, 1]
[data]
dataset = "digits"
budgets = [5, "all"]
[model]
sizes = [16, 8]
[pretrain]
epochs = 2
batch_size = 64
[finetune]
epochs = 2
lr = [0.01]
batch_size = 64
patience = 2
"""


@pytest.fixture
def smoke_file(tmp_path) -> Path:
    path = tmp_path / "smoke.toml"
    path.write_text(SMOKE)
    return path


def test_run_writes_results_and_a_report_naming_both_arms(smoke_file, tmp_path, capsys):
    """`sae run` ends with a summary and a report that mentions the pretrained and random arms."""
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained" in printed and "random" in printed and "report:" in printed
    report = (out / "report.md").read_text()
    assert "pretrained" in report and "random" in report
    assert (out / "report.html").is_file()


def test_validate_accepts_a_good_file_and_rejects_a_bad_one(smoke_file, tmp_path, capsys):
    """validate prints ok for a good file; a bad key gives one line and exit status 2."""
    assert main(["validate", str(smoke_file)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[pretrain]\nepoch = 3\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'pretrain.epoch'" in err and "Traceback" not in err


def test_errors_exit_2_without_traceback_from_a_real_process(tmp_path):
    """`python -m stacked_ae` reports bad input in one line with exit 2; --debug shows the traceback."""
    missing = tmp_path / "missing.toml"
    cmd = [sys.executable, "-m", "stacked_ae"]
    plain = subprocess.run(cmd + ["validate", str(missing)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert "no such pipeline file" in plain.stderr and "Traceback" not in plain.stderr
    debug = subprocess.run(cmd + ["--debug", "validate", str(missing)], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_run_with_a_missing_data_root_lists_where_it_looked(tmp_path, capsys):
    """A missing MNIST root is a short error that lists the folders searched."""
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\n[data]\ndataset = "mnist"\n')
    code = main(["run", str(path), "--out", str(tmp_path / "m"), "--data-root", str(tmp_path / "nowhere"),
                 "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "were not found. Looked in" in err and str(tmp_path / "nowhere") in err
    assert "--set data.download=true" in err, "the hint speaks the CLI's language"
    assert not (tmp_path / "m" / "config.json").exists(), "a run that never started leaves no config.json"


def test_a_table_without_its_label_column_names_the_override(tmp_path, capsys):
    """A user table whose label column is named otherwise: the error says which --set fixes it."""
    (tmp_path / "t.csv").write_text("a,b,klass\n0.1,0.2,0\n0.3,0.4,1\n")
    (tmp_path / "p.toml").write_text('name = "t"\n[data]\ndataset = "t.csv"\n')
    assert main(["validate", str(tmp_path / "p.toml")]) == 2
    assert "--set data.label_column=..." in capsys.readouterr().err


def test_budget_larger_than_smallest_class_fails_before_training(tmp_path, capsys):
    """A label budget above the smallest class size is a config error, reported before any stage."""
    path = tmp_path / "b.toml"
    path.write_text('name = "b"\n[data]\ndataset = "digits"\nbudgets = [500]\n')
    assert main(["run", str(path), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "data.budgets: 500 labels per class" in capsys.readouterr().err
    assert not (tmp_path / "b" / "stages").exists()


def test_datasets_lists_every_known_dataset(capsys, tmp_path):
    """`sae datasets` names digits, mnist and fashion-mnist and where each is looked for."""
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion-mnist"):
        assert name in out
    assert str(tmp_path) in out


def test_set_overrides_reach_the_run(smoke_file, tmp_path):
    """--set pretrain.epochs=1 changes the resolved config written into the run folder."""
    import json
    out = tmp_path / "o"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--set", "pretrain.epochs=1",
                 "--set", "seeds=[0]", "--set", "arms=[\"random\"]"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"]["epochs"] == 1 and config["seeds"] == [0] and config["arms"] == ["random"]


def test_precision_flag_sets_both_stages_and_invalidates_their_cache(smoke_file, tmp_path):
    """--precision bf16 reaches [pretrain] and [finetune] in the resolved config, and stages finished
    in fp32 are redone rather than mixed with bf16 ones."""
    import json
    out = tmp_path / "p"
    common = ["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu",
              "--set", "seeds=[0]", "--set", "data.budgets=[5]", "--set", "arms=[\"pretrained\"]"]
    assert main(common) == 0
    first = (out / "stages" / "pretrain_seed0.json").stat().st_mtime_ns
    assert main([*common, "--precision", "bf16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"]["precision"] == "bf16" and config["finetune"]["precision"] == "bf16"
    assert (out / "stages" / "pretrain_seed0.json").stat().st_mtime_ns != first


def test_version_prints_the_package_version(capsys):
    """`sae --version` names the installed version and exits 0."""
    from stacked_ae import __version__
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"sae (stacked-ae) {__version__}"


def test_validate_checks_several_files_and_their_label_budgets(smoke_file, tmp_path, capsys):
    """Each file gets a line; budgets are checked against the data (digits: always found); one bad file → exit 2."""
    too_big = tmp_path / "big.toml"
    too_big.write_text(SMOKE.replace('budgets = [5, "all"]', 'budgets = [500]'))
    one_seed = tmp_path / "one.toml"
    one_seed.write_text(SMOKE.replace("seeds = [0, 1]", "seeds = [0]"))
    assert main(["validate", str(smoke_file), str(one_seed), str(too_big)]) == 2
    captured = capsys.readouterr()
    assert "smoke.toml: ok (classification, 2 seeds" in captured.out and "budgets fit" in captured.out
    assert "one.toml: ok (classification, 1 seed," in captured.out
    assert "data.budgets: 500 labels per class" in captured.err


def test_validate_says_when_it_could_not_look_at_the_data(tmp_path, capsys, monkeypatch):
    """MNIST without a data root: the settings are ok, and the line says the data were not checked."""
    monkeypatch.delenv("STACKED_AE_DATA", raising=False)
    path = tmp_path / "m.toml"
    path.write_text(SMOKE.replace('dataset = "digits"', 'dataset = "mnist"'))
    assert main(["validate", str(path)]) == 0
    assert "data not checked: mnist: the IDX files" in capsys.readouterr().out


def test_a_bad_override_is_blamed_on_the_override(smoke_file, capsys):
    """`--set pretrain.epoch=2` names the override, not the pipeline file."""
    assert main(["validate", str(smoke_file), "--set", "pretrain.epoch=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sae: error: --set pretrain.epoch=2: unknown key 'pretrain.epoch'"), err


def test_relative_data_paths_are_relative_to_the_pipeline_file(tmp_path, monkeypatch, capsys):
    """A pipeline file naming `data/mine.npz` runs from any working directory, and names the same absolute file
    from each (so a run's config.json does not change with the directory it is started from)."""
    import numpy as np
    from sklearn.datasets import load_digits
    folder = tmp_path / "study"
    (folder / "data").mkdir(parents=True)
    X, y = load_digits(return_X_y=True)
    np.savez(folder / "data" / "mine.npz", X=X, y=y)
    (folder / "p.toml").write_text(SMOKE.replace('dataset = "digits"', 'dataset = "data/mine.npz"'))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "study/p.toml"]) == 0
    assert "budgets fit" in capsys.readouterr().out
    from stacked_ae.pipeline.config import load_config
    here = load_config("study/p.toml").data.dataset
    monkeypatch.chdir(folder / "data")
    assert load_config("../p.toml").data.dataset == here == str(folder.resolve() / "data" / "mine.npz")


def test_progress_is_plain_log_lines_when_stderr_is_not_a_terminal(smoke_file, tmp_path, capsys):
    """Under pytest stderr is not a terminal: no redrawn bars (carriage returns), one line per stage."""
    assert main(["run", str(smoke_file), "--out", str(tmp_path / "run"), "--no-report", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err
    assert err.count(": ok in ") == 2 * 2 * 5, err[-500:]


def test_a_log_gets_a_training_runs_epoch_lines_at_most_every_heartbeat(smoke_file, tmp_path, capsys,
                                                                          monkeypatch):
    """A stage that trains for long still shows in a log: its epoch lines, named by seed, budget, arm and rate,
    come through once HEARTBEAT_SECONDS of its training have passed since the last one (0 here: every epoch;
    the default keeps fast stages to their one line). The loggers are as they were afterwards."""
    import logging

    from stacked_ae import cli
    monkeypatch.setattr(cli, "HEARTBEAT_SECONDS", 0.0)
    core = logging.getLogger("stacked_ae.core")
    before = (core.level, core.propagate, list(core.handlers))
    assert main(["run", str(smoke_file), "--out", str(tmp_path / "run"), "--no-report", "--device", "cpu",
                 "--set", "seeds=[0]", "--set", 'arms=["random"]']) == 0
    err = capsys.readouterr().err
    for epoch in (1, 2):
        line = next(x for x in err.splitlines() if f"seed 0, budget all, random lr=0.01: epoch {epoch}/2, " in x)
        assert "train loss " in line and "val error " in line and "best epoch " in line and " s/epoch" in line
    assert err.count("seed 0, budget 5, random lr=0.01: epoch ") == 2, err
    assert (core.level, core.propagate, list(core.handlers)) == before


def test_heartbeat_lets_through_one_epoch_line_per_interval_of_each_run_and_every_warning():
    import logging

    from stacked_ae.cli import Heartbeat

    def record(level=logging.INFO, **extra):
        rec = logging.LogRecord("stacked_ae.core.train", level, __file__, 1, "m", (), None)
        rec.__dict__.update(extra)
        return rec

    beat = Heartbeat(120.0, "heartbeat")
    shown = [(run, t) for t in range(0, 601, 30) for run in ("a", "b")
             if beat.filter(record(heartbeat=(run, t + (15 if run == "b" else 0))))]
    assert shown == [(run, t) for t in (120, 240, 360, 480, 600) for run in ("a", "b")]
    assert not beat.filter(record())                        # the core's other progress lines stay out
    assert beat.filter(record(logging.WARNING))


def test_status_lists_finished_missing_and_stale_stages(smoke_file, tmp_path, capsys):
    """After a run every stage is finished; a [finetune] edit makes the network arms stale (not the baselines
    or pretraining); a new seed adds missing stages; --json gives the same for scripts."""
    import json
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{out}: 22 stages: 22 finished, 0 failed, 0 stale, 0 missing"
    assert main(["status", str(out), str(smoke_file), "--set", "finetune.epochs=3", "--set", "seeds=[0, 1, 2]",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"finished": 2 + 2 * 2 * 2, "failed": 0, "stale": 2 * 2 * 3, "missing": 11}
    stale = {s["arm"] for s in report["stages"] if s["state"] == "stale"}
    assert stale == {"pretrained", "random", "frozen"}


def test_status_counts_a_pretraining_whose_encoder_is_gone_as_sae_run_treats_it(smoke_file, tmp_path, capsys):
    """A finished pretraining whose encoders/seedS.pt was deleted (reference runs ship without checkpoints): while
    every arm is finished nothing retrains it and status says finished; once an arm that starts from it must
    train, `sae run` trains it again, and status counts it as a stage that would rerun, saying why."""
    import json
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    (out / "encoders" / "seed0.pt").unlink()
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["stale"] == 0

    edit = ["--set", "finetune.epochs=3"]
    assert main(["status", str(out), str(smoke_file), *edit, "--json"]) == 0
    pretraining = {s["key"]: s for s in json.loads(capsys.readouterr().out)["stages"] if s["arm"] is None}
    assert {k: s["state"] for k, s in pretraining.items()} == {"pretrain_seed0": "stale", "pretrain_seed1": "finished"}
    assert pretraining["pretrain_seed0"]["reason"].startswith(
        "would rerun: its encoder file encoders/seed0.pt is gone, and arm_seed0_budget"), pretraining
    assert main(["status", str(out), str(smoke_file), *edit]) == 0
    assert "  pretrain_seed0: would rerun: its encoder file encoders/seed0.pt is gone" in capsys.readouterr().out

    assert main(["run", str(smoke_file), "--out", str(out), *edit, "--no-report", "--device", "cpu"]) == 0
    assert "pretraining: 1 seed computed, 1 reused" in capsys.readouterr().out   # as status said: seed 0 only


def test_damaged_run_folder_files_are_named_by_status_and_report(smoke_file, tmp_path, capsys):
    """A run folder edited by hand: `sae status` names a config.json that is not a JSON object, counts a stage
    record that is a list as stale (not a crash), and `sae report` renders with a note naming each damaged file."""
    import shutil
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    capsys.readouterr()
    kept = tmp_path / "kept"
    shutil.copytree(out, kept)
    for text, message in (("[1, 2]", "config.json: expected a JSON object ({...}), got a list"),
                          ("{not json", "config.json: not valid JSON (JSONDecodeError"),
                          ("\x80\x81", "config.json: not valid JSON (UnicodeDecodeError")):
        (out / "config.json").write_bytes(text.encode("latin-1"))
        assert main(["status", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    stage = next((kept / "stages").glob("arm_*_random.json"))
    stage.write_text("[]")
    (kept / "manifest.json").write_text("[]")
    assert main(["status", str(kept), str(smoke_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("21 finished, 0 failed, 1 stale, 0 missing"), lines
    assert lines[1] == ("  data: manifest.json records no data fingerprint (missing or damaged); the data were read "
                        "and fingerprinted to judge the stages"), lines
    (kept / "config.json").write_text("[]")
    (kept / "history.csv").write_bytes(b"\x00\xff\x00")
    assert main(["report", str(kept)]) == 0
    md = (kept / "report.md").read_text()
    for note in ("`manifest.json` could not be read (expected a JSON object ({...}), got a list)",
                 "`config.json` could not be read (expected a JSON object",
                 "`history.csv` could not be read ("):
        assert note in md, note


def test_run_summary_counts_computed_and_reused_stages(smoke_file, tmp_path, capsys):
    """The end-of-run summary says what this invocation computed and what it reused, pretraining included."""
    out = tmp_path / "run"
    args = ["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]
    assert main(args) == 0
    assert "this invocation: 20 stages computed, 0 reused; pretraining: 2 seeds computed, 0 reused" in \
        capsys.readouterr().out
    assert main(args) == 0
    assert "this invocation: 0 stages computed, 20 reused; pretraining: 0 seeds computed, 2 reused" in \
        capsys.readouterr().out


def test_every_option_of_every_command_has_help_text():
    """`sae X --help` explains each option (a bare `--device` with no help was a gap)."""
    import argparse

    from stacked_ae.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"sae {name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in commands.items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]
    assert not missing, missing


def test_status_shows_the_progress_an_unfinished_stage_kept(tmp_path, monkeypatch, capsys, epoch_killer):
    """Stopped in the third epoch of the random arm's second learning rate (its state kept every epoch), and
    in pretraining's second layer: `sae status` says how far each stage got, as text and in --json."""
    import json

    from stacked_ae.pipeline import arms
    monkeypatch.setattr(arms, "CHECKPOINT_EVERY_S", 0.0)
    toml = tmp_path / "grid.toml"
    toml.write_text('name = "grid"\nseeds = [0]\narms = ["random", "logreg"]\n[data]\ndataset = "digits"\n'
                    'budgets = ["all"]\n[model]\nsizes = [24, 12]\n[pretrain]\nepochs = 3\nbatch_size = 64\n'
                    '[finetune]\nepochs = 4\nlr = [0.003, 0.03, 0.3]\nbatch_size = 64\n')
    out = tmp_path / "run"
    epoch_killer.at = 4 + 3     # the random arm trains first: lr 0.003 runs its 4 epochs, then epoch 3 of lr 0.03
    assert main(["run", str(toml), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 130
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    import pandas as pd
    import torch
    assert main(["status", str(out), "--json"]) == 0
    stage = next(s for s in json.loads(capsys.readouterr().out)["stages"] if s["arm"] == "random")
    progress = stage["progress"]
    kept, training = progress.pop("rates"), progress["training"]
    assert progress == {"unit": "learning rates", "done": 1, "of": 3, "training": training}
    # the finished rate's and the training one's best epoch and validation error, as the history records them
    history = pd.DataFrame(json.loads(torch.load(out / "partial" / "arm_seed0_budgetall_random" / "lr0.003.pt",
                                                 weights_only=True)["record"])["rows"])
    best = history.loc[history["best"]].iloc[0]
    assert kept == [{"lr": 0.003, "best_epoch": int(best["epoch"]), "score": "val_error",
                     "value": pytest.approx(best["val_error"])}], kept
    assert (training["lr"], training["epoch"], training["epochs"], training["score"]) == (0.03, 2, 4, "val_error")
    assert training["best_epoch"] in (1, 2) and 0 <= training["value"] <= 1, training
    assert (f"  arm_seed0_budgetall_random: not run yet; in progress: 1 of 3 learning rates finished (lr 0.003: "
            f"val error {best['val_error']:.4g} at epoch {int(best['epoch'])}); lr 0.03 kept after epoch 2 of 4, "
            f"best val error {training['value']:.4g} at epoch {training['best_epoch']}") in lines, lines

    toml.write_text(toml.read_text().replace('arms = ["random", "logreg"]', 'arms = ["pretrained"]'))
    epoch_killer.calls.clear()
    epoch_killer.at = 3 + 2      # epoch 2 of pretraining's layer 2
    assert main(["run", str(toml), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 130
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  pretrain_seed0:"))
    assert re.fullmatch(r"  pretrain_seed0: not run yet; in progress: 1 of 2 layers finished; layer 2 kept after "
                        r"epoch 1 of 3, best val sse [0-9.e-]+ at epoch 1", line), line


def test_status_counts_the_rates_tried_beyond_the_grid(tmp_path):
    """With finetune.extend, a stage that finished its grid and one rate beyond it says so (the grid's two and
    the one beyond, of three started), and the one in training beyond the grid is named."""
    import torch

    from stacked_ae.pipeline.arms import arm_fingerprint
    from stacked_ae.pipeline.config import from_dict
    from stacked_ae.pipeline.rundir import RunDir, arm_key
    from stacked_ae.pipeline.status import describe_progress, stage_status
    cfg = from_dict({"name": "x", "seeds": [0], "arms": ["random"], "data": {"budgets": ["all"]},
                     "model": {"sizes": [4]}, "finetune": {"lr": [1e-3, 1e-2], "extend": 2}})
    run, key = RunDir(tmp_path), arm_key(0, "all", "random")
    for lr in (1e-3, 1e-2, 0.1):        # the grid, then the first rate beyond its top (steps of 10)
        run.save_point(key, lr, {"rows": []}, None, arm_fingerprint(cfg, 0, "all", "random", "d", lr))
    torch.save({"stamp": arm_fingerprint(cfg, 0, "all", "random", "d", 1.0), "epoch": 3},
               run.epochs_path(key, 1.0))
    progress = next(s for s in stage_status(cfg, tmp_path, "d") if s["arm"] == "random")["progress"]
    assert progress == {"unit": "learning rates", "done": 3, "of": 4, "beyond_grid": 2,
                        "training": {"lr": 1.0, "epoch": 3, "epochs": cfg.finetune.epochs},
                        "rates": [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 0.1}]}, progress   # kept without rows
    assert describe_progress(progress) == f"3 of 4 learning rates finished (2 beyond the grid); lr 1 kept after " \
                                          f"epoch 3 of {cfg.finetune.epochs}"
    run.save_point(key, 1e-2, {"diverged": "random lr=0.01: training loss became nan"}, None,
                   arm_fingerprint(cfg, 0, "all", "random", "d", 1e-2))
    progress = next(s for s in stage_status(cfg, tmp_path, "d") if s["arm"] == "random")["progress"]
    assert "(2 beyond the grid; lr 0.01: diverged); lr 1 kept after" in describe_progress(progress)


def test_status_reads_the_data_when_the_pipeline_changes_what_they_are(smoke_file, tmp_path, capsys):
    """A [data] edit that changes the examples (data.split_seed) makes every stage one that would rerun, as `sae
    run` would find: status reads and fingerprints the data instead of trusting the run's recorded fingerprint."""
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), str(smoke_file), "--set", "data.split_seed=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: 22 stages: 0 finished, 0 failed, 22 stale, 0 missing", lines
    assert lines[1] == "  data: data.split_seed differs from the run's; read and fingerprinted: other data: every " \
                       "stage would rerun"
    assert main(["status", str(out), str(smoke_file)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{out}: 22 stages: 22 finished, 0 failed, 0 stale, 0 missing"


def test_status_reads_a_user_data_file_on_every_look(tmp_path, capsys):
    """A user's data file edited in place, the [data] settings unchanged: `sae run` reruns every stage, and so
    `sae status` reads the file and counts every stage as one that would rerun, saying why; before the edit it
    reads the same data and says nothing about them."""
    import numpy as np
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "mine.npz", X=X / 16, y=y)
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(SMOKE.replace('dataset = "digits"', 'dataset = "mine.npz"').replace("[0, 1]", "[0]"))
    out = tmp_path / "run"
    assert main(["run", str(pipeline), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), str(pipeline)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{out}: 11 stages: 11 finished, 0 failed, 0 stale, 0 missing"]

    X[0, 10] = 0 if X[0, 10] else 8          # one pixel of one image
    np.savez(tmp_path / "mine.npz", X=X / 16, y=y)
    for args in ([str(out), str(pipeline)], [str(out)]):     # judged by the pipeline file, or by the run's config
        assert main(["status", *args]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[:2] == [f"{out}: 11 stages: 0 finished, 0 failed, 11 stale, 0 missing",
                             f"  data: the contents of {tmp_path / 'mine.npz'} changed since the run used it: "
                             f"every stage would rerun"], lines
    assert main(["run", str(pipeline), "--out", str(out), "--no-report", "--device", "cpu"]) == 0
    assert "this invocation: 10 stages computed, 0 reused; pretraining: 1 seed computed" in capsys.readouterr().out

    (tmp_path / "mine.npz").rename(tmp_path / "moved.npz")   # gone: judged by the recorded fingerprint, said so
    assert main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: 11 stages: 11 finished, 0 failed, 0 stale, 0 missing", lines
    assert lines[1].startswith(f"  data: {tmp_path / 'mine.npz'} could not be read to check its contents ("), lines
    assert lines[1].endswith("the stages are judged by the data fingerprint the run recorded, and `sae run` needs "
                             "the file"), lines


def test_run_summary_says_one_stage_and_one_seed_in_the_singular():
    """`1 stage computed`, `1 seed computed`: the counts agree with their nouns."""
    import pandas as pd

    from stacked_ae.cli import summarize
    from stacked_ae.pipeline.config import from_dict
    results = pd.DataFrame({"seed": [0], "budget": ["all"], "arm": ["logreg"], "status": ["ok"], "test_error": [0.1]})
    results.attrs["stages"] = {"computed": 1, "reused": 0, "pretrain computed": 1, "pretrain reused": 0}
    text = summarize(from_dict({"seeds": [0]}), results, Path("run"), None)
    assert "this invocation: 1 stage computed, 0 reused; pretraining: 1 seed computed, 0 reused" in text, text


def test_a_report_whose_tables_change_under_it_says_it_is_out_of_date(smoke_file, tmp_path, capsys):
    """After `sae run --no-report` changes the tables, report.md and report.html open with a note naming the
    command that renders them again, and `sae status` says so; `sae report` replaces both whole. A run that
    changes no table leaves a current report as it is."""
    out = tmp_path / "run"
    common = ["run", str(smoke_file), "--out", str(out), "--quiet", "--device", "cpu", "--set", "seeds=[0]",
              "--set", "data.budgets=[5]"]
    assert main([*common, "--set", 'arms=["random"]']) == 0
    rendered = (out / "report.md").read_bytes()
    assert main([*common, "--set", 'arms=["random"]', "--no-report"]) == 0     # nothing new: tables unchanged
    assert (out / "report.md").read_bytes() == rendered
    assert main([*common, "--set", 'arms=["random", "logreg"]', "--no-report"]) == 0
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.startswith("> **Out of date.**") and f"sae report {out}" in md and md.endswith(rendered.decode())
    assert '<body>\n<p class="out-of-date"><strong>Out of date.</strong>' in page
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert f"report.md is out of date (the tables changed after it was rendered): sae report {out}" in \
        capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert not (out / "report.md").read_text().startswith("> **Out of date.**")
    assert "out-of-date" not in (out / "report.html").read_text() and "logreg" in (out / "report.md").read_text()


def test_status_warns_when_the_pipeline_file_is_another_runs_and_keeps_its_data_note_on_one_line(
        smoke_file, tmp_path, capsys, monkeypatch):
    """`sae status RUN other.toml`: a warning names both pipelines; when other.toml's data cannot be read (MNIST
    with no data root), the note that says so is one line, however many places the loader looked in."""
    monkeypatch.delenv("STACKED_AE_DATA", raising=False)
    out = tmp_path / "run"
    assert main(["run", str(smoke_file), "--out", str(out), "--quiet", "--no-report", "--device", "cpu",
                 "--set", "seeds=[0]"]) == 0
    other = tmp_path / "other.toml"
    other.write_text(SMOKE.replace('name = "smoke"', 'name = "other"').replace('"digits"', '"mnist"'))
    capsys.readouterr()
    assert main(["status", str(out), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f"  warning: the folder holds a run of pipeline 'smoke' (its config.json), but {other} is "
                        f"pipeline 'other': stages are judged against {other}'s settings"), lines
    assert lines[2].startswith("  data: data.dataset differs from the run's and the data could not be read to "
                               "compare (mnist: the IDX files"), lines
    assert lines[2].endswith("every stage is counted as one that would rerun (--data-root names the data folder)")
    assert main(["status", str(out), str(smoke_file)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(["status", str(out), str(other), "--json"]) == 0
    import json
    assert json.loads(capsys.readouterr().out)["run_pipeline"] == "smoke"


def test_encode_draws_no_progress_bar_into_a_log(tmp_path, capsys):
    """Under pytest stderr is not a terminal: `sae encode` writes its codes and nothing to stderr (no bar)."""
    import numpy as np

    from stacked_ae import StackedEncoder
    model = StackedEncoder.random(5, [3], seed=0).save(tmp_path / "e.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 5)))
    assert main(["encode", "--model", str(model), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "c.npy"), "--batch-size", "7"]) == 0
    assert capsys.readouterr().err == ""
    assert np.load(tmp_path / "c.npy").shape == (50, 3)


def test_every_option_with_a_default_says_it_in_its_help():
    """`sae CMD --help`: an option that takes a value and has a default names it ("default"); so does each
    option whose default comes from elsewhere (the pipeline file, the environment)."""
    import argparse

    from stacked_ae.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for name, command in commands.items():
        for action in command._actions:
            takes_value = action.nargs != 0 and action.option_strings and action.help != argparse.SUPPRESS
            if takes_value and not action.required and action.choices is None and "default" not in action.help \
                    and "repeat" not in action.help:
                missing.append(f"sae {name} {action.option_strings[0]}")
    assert not missing, missing


def test_a_pipeline_file_with_a_byte_order_mark_reads_as_without(smoke_file, tmp_path, capsys):
    """Editors that save UTF-8 with a byte-order mark: the file validates as the same file without it."""
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + smoke_file.read_bytes())
    assert main(["validate", str(bom)]) == 0
    from stacked_ae.pipeline.config import load_config
    assert load_config(bom).to_dict() == load_config(smoke_file).to_dict()


def test_validate_notes_a_count_of_validation_labels_above_a_class_or_a_budget(smoke_file, capsys):
    """`data.val_per_class = 50` on digits (whose validation classes hold fewer): the settings are ok, and the line
    says that those classes give all they have and that budget 5 then selects on more labels than it trains on."""
    assert main(["validate", str(smoke_file), "--set", "data.val_per_class=50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"budgets fit; note: data.val_per_class = 50: the smallest class of the validation split has "
                     r"\d+ examples, so that class gives all it has; at budget 5 model selection sees more validation "
                     r"labels than training labels", out), out
    assert main(["validate", str(smoke_file), "--set", "data.val_per_class=3"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_ray_settings_given_with_set_under_the_local_executor_are_refused(smoke_file, tmp_path, capsys):
    """`--set run.workers=4` is `--workers 4`: under the local executor it is refused, not silently ignored."""
    assert main(["run", str(smoke_file), "--out", str(tmp_path / "run"), "--set", "run.workers=4"]) == 2
    err = capsys.readouterr().err
    assert "--set run.workers=4 needs the Ray executor" in err, err
    assert not (tmp_path / "run").exists()


def test_a_data_error_caused_by_an_override_names_the_override(smoke_file, capsys):
    """A budget that fits the file but not as overridden: the message names the --set, not the file alone."""
    assert main(["validate", str(smoke_file), "--set", "data.budgets=[500]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sae: error: {smoke_file} with --set data.budgets=[500]: data.budgets: 500 labels per "
                          f"class"), err


def test_a_reader_that_stops_early_is_no_error(smoke_file, monkeypatch, capsys):
    """`sae datasets | head -1`: the closed pipe ends the command quietly (status 141, as a shell reports a
    command stopped by SIGPIPE), without an error message."""
    import os
    read, write = os.pipe()
    os.close(read)
    monkeypatch.setattr(sys, "stdout", open(write, "w", buffering=1))
    assert main(["datasets"]) == 141
    assert "error" not in capsys.readouterr().err
