"""The `sae` command: smoke run with report, validate, datasets, and short errors with exit status 2."""
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
