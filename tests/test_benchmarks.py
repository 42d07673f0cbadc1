"""The throughput benchmark's smoke mode runs and prints its table; no timing is asserted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_throughput.py"
ROWS = ("matmul (model shapes, all)", "dae 784-1000 train", "greedy 784-1000-1000-1000",
        "finetune 784-1000-1000-1000-10", "encode 784-1000-1000-1000")


def test_quick_benchmark_prints_every_row(tmp_path):
    """`bench_throughput.py --quick` exits 0 and its table has a row per workload, library and baseline."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    for row in ROWS:
        impls = ("-",) if row.startswith("matmul") else ("library", "baseline")
        for impl in impls:
            assert any(line.startswith(row) and line.split()[len(row.split())] == impl for line in lines), \
                f"no {impl!r} row for {row!r} in:\n{proc.stdout}"
    assert "greedy pretraining:" in proc.stdout, proc.stdout
    assert out.is_file() and '"matmul_gflops"' in out.read_text()


def test_quick_benchmark_in_bf16_against_an_fp32_baseline(tmp_path):
    """--precision bf16 --baseline-precision fp32 runs on CPU and records both settings."""
    import json
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1", "--precision", "bf16",
                           "--baseline-precision", "fp32", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "precision bf16 (baseline fp32)" in proc.stdout
    settings = json.loads(out.read_text())["settings"]
    assert (settings["precision"], settings["baseline_precision"]) == ("bf16", "fp32")


def test_executor_simulator_schedules_the_stage_graph(tmp_path):
    """The list schedule respects pretrain -> pretrained: 1 worker sums the stages, 2 workers finish when the
    pretrained arm can (10 s of pretraining + 5 s), which is also the critical path."""
    import json
    sys.path.insert(0, str(BENCH.parent))
    from simulate_executor import critical_path, makespan, read_stages
    stages = tmp_path / "run" / "stages"
    stages.mkdir(parents=True)
    (stages / "pretrain_seed0.json").write_text(json.dumps({"wall_seconds": 10.0}))
    for arm, seconds in (("pretrained", 5.0), ("random", 8.0), ("logreg", 1.0)):
        (stages / f"arm_seed0_budgetall_{arm}.json").write_text(
            json.dumps({"result": {"seed": 0, "arm": arm, "wall_seconds": seconds}}))
    seconds, depends = read_stages(tmp_path / "run")
    assert depends == {"arm_seed0_budgetall_pretrained": "pretrain_seed0"}
    assert makespan(seconds, depends, 1) == 24.0
    assert makespan(seconds, depends, 2) == 15.0 == critical_path(seconds, depends)
    assert makespan(seconds, depends, 8) == 15.0


def test_the_calibrated_executor_model_adds_start_up_and_scales_every_stage():
    """predict = Ray's start-up + the list schedule of the stage times, each times the measured slowdown."""
    sys.path.insert(0, str(BENCH.parent))
    from bench_executor import predict
    seconds = {"pretrain_seed0": 10.0, "arm_seed0_budgetall_pretrained": 5.0, "arm_seed0_budgetall_random": 8.0}
    depends = {"arm_seed0_budgetall_pretrained": "pretrain_seed0"}
    assert predict(seconds, depends, 2, 1.0, 0.0) == 15.0
    assert predict(seconds, depends, 2, 1.5, 3.0) == 3.0 + 1.5 * 15.0
    assert predict(seconds, depends, 1, 1.0, 2.0) == 2.0 + 23.0


def test_precision_benchmark_times_both_networks_in_both_precisions(tmp_path):
    """`bench_precision.py --rounds 1 --steps 1` exits 0 and records both rates and their ratio per network."""
    import json
    out = tmp_path / "precision.json"
    proc = subprocess.run([sys.executable, str(BENCH.parent / "bench_precision.py"), "--rounds", "1", "--steps", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = json.loads(out.read_text())
    assert [row["network"].split()[0] for row in rows] == ["mnist-conv-2d", "mnist-deep-ae"]
    for row in rows:
        assert row["fp32_images_s"] > 0 and row["bf16_images_s"] > 0
        assert abs(row["bf16_speedup"] - row["bf16_images_s"] / row["fp32_images_s"]) < 1e-6 * row["bf16_speedup"]


def test_checkpoint_benchmark_runs_and_reports_its_ratios(tmp_path):
    """`bench_checkpoint.py --quick` exits 0 and records a save's size, time and both ratios."""
    import json
    out = tmp_path / "checkpoint.json"
    script = BENCH.with_name("bench_checkpoint.py")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert result["saves"] == 1 and result["state_mb"] > 0 and result["save_s_median"] > 0
    assert result["save_over_interval"] == result["save_s_median"] / result["every_s"]
    assert "save / one epoch" in proc.stdout


def test_evaluation_batch_benchmark_prints_both_batch_sizes(tmp_path):
    """`bench_eval.py` on a few images: a row per network and pass, the conv networks at their sized batch
    (below EVAL_BATCH) and the dense control at EVAL_BATCH."""
    import json
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, str(BENCH.parent / "bench_eval.py"), "--rounds", "1", "--images", "64",
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = json.loads(out.read_text())
    assert [(r["network"].split()[0], r["pass"]) for r in rows] == [
        (net, p) for net in ("mnist-conv-2d", "fashion-mnist-conv", "mnist-sdae") for p in ("validate", "encode")]
    assert [r["sized_batch"] for r in rows] == [83, 83, 167, 167, 8192, 8192]
    assert all(r["fixed_images_s"] > 0 and r["sized_images_s"] > 0 for r in rows)
