"""What the Ray executor costs on this machine: the same pipeline back to back with the local executor,
with Ray on one worker (that worker gets every core), and with Ray on two workers; wall times of the
whole `sae run` command, and the simulator's prediction for each from the local run's stage times.

    python benchmarks/bench_executor.py                         # quickstart on digits
    python benchmarks/bench_executor.py --mnist ../shared/data  # a cut-down mnist-sdae (a few minutes a run)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_executor import makespan, read_stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_CUT = ["--set", "seeds=[0, 1]", "--set", 'data.budgets=[100, "all"]', "--set", 'arms=["pretrained", "random"]',
             "--set", "pretrain.epochs=2", "--set", "finetune.epochs=3", "--set", "finetune.lr=[1e-3]",
             "--set", "finetune.epoch_size=0"]


def timed_run(pipeline: str, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "stacked_ae", "run", pipeline, "--out", str(out), "--force", "--quiet",
           "--no-report", "--threads", str(os.cpu_count() or 1), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="DATA_ROOT", help="run the cut-down mnist-sdae from this data root")
    args = parser.parse_args(argv)
    if args.mnist:
        pipeline, extra = "pipelines/mnist-sdae.toml", ["--data-root", args.mnist, *MNIST_CUT]
    else:
        pipeline, extra = "pipelines/quickstart.toml", []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "local"
        base = timed_run(pipeline, local, extra)
        seconds, depends = read_stages(local)
        rows.append(("local", base, makespan(seconds, depends, 1)))
        for workers in (1, 2):
            wall = timed_run(pipeline, Path(tmp) / f"ray{workers}", [*extra, "--executor", "ray",
                                                                     "--workers", str(workers)])
            rows.append((f"ray --workers {workers}", wall, makespan(seconds, depends, workers)))
    print(f"{pipeline}{' (cut down)' if args.mnist else ''}, {os.cpu_count()} cores")
    print("| executor | wall time (s) | vs local | simulated from the local run's stages (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name, wall, predicted in rows:
        print(f"| {name} | {wall:.1f} | {wall / base:.2f}x | {predicted:.1f} |")


if __name__ == "__main__":
    main()
