"""What the Ray executor costs on this machine: the same pipeline back to back with the local executor,
with Ray on one worker (that worker gets every core), and with Ray on two workers; wall times of the
whole `sae run` command, and two predictions for each from the local run's stage times: the plain list
schedule, and the calibrated model that adds Ray's measured start-up and scales every stage by the
measured slowdown of one stage run as one of the concurrent workers (each with its share of the cores)
against alone with every core. Both calibrations are measured before the Ray run, never fitted to it.

    python benchmarks/bench_executor.py                         # quickstart on digits
    python benchmarks/bench_executor.py --mnist ../shared/data  # a cut-down mnist-sdae (a few minutes a run)

One run of each is not enough on a shared machine: a neighbour's load moved one local quickstart run from
219 s to 266 s. The runs therefore come in rounds, the order rotating, and every Ray run is predicted from
the local run of its own round.
"""
from __future__ import annotations

import argparse
import os
import statistics
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


STARTUP = """
import sys, time
import ray
start = time.perf_counter()
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False, configure_logging=False)
@ray.remote(num_cpus=1)
def ready():
    import stacked_ae.pipeline.executors  # noqa: F401  (what a stage task imports first)
    return 1
ray.get([ready.remote() for _ in range(int(sys.argv[1]))])
print(time.perf_counter() - start)
ray.shutdown()
"""


def ray_startup(workers: int) -> float:
    """Seconds from ray.init to `workers` worker processes that have imported the package."""
    out = subprocess.run([sys.executable, "-c", STARTUP, str(workers)], check=True, cwd=ROOT, capture_output=True,
                         text=True).stdout
    return float(out.strip().splitlines()[-1])


def one_stage(pipeline: str, extra: list[str], budget: str) -> list[str]:
    """A run of one real stage of the pipeline: seed 0, the random arm, at `budget`."""
    return [*extra, "--set", "seeds=[0]", "--set", 'arms=["random"]', "--set", f"data.budgets=[{budget}]"]


def concurrency_slowdown(pipeline: str, extra: list[str], workers: int, repeats: int = 3) -> float:
    """How much slower one stage runs as one of `workers` concurrent processes with cores // workers threads
    each than alone with every core (medians over repeats): the factor by which a worker's stages exceed
    the stage times a local run records."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    alone, shared = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            alone.append(timed_run(pipeline, Path(tmp) / f"alone{r}", extra))
            procs, start = [], time.perf_counter()
            for w in range(workers):
                cmd = [sys.executable, "-m", "stacked_ae", "run", pipeline, "--out", str(Path(tmp) / f"w{r}_{w}"),
                       "--force", "--quiet", "--no-report", "--threads", str(threads), *extra]
                procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for proc in procs:
                proc.wait()
            shared.append(time.perf_counter() - start)
    return statistics.median(shared) / statistics.median(alone)


def predict(seconds: dict, depends: dict, workers: int, slowdown: float, startup: float) -> float:
    """The executor's wall time: Ray's start-up, then the list schedule of the stages, each `slowdown` times
    its recorded time."""
    return startup + makespan({k: v * slowdown for k, v in seconds.items()}, depends, workers)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="DATA_ROOT", help="run the cut-down mnist-sdae from this data root")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of local, ray --workers 1 and ray --workers 2, in a rotating order; each Ray "
                             "run is predicted from the same round's local run, and the table shows medians")
    args = parser.parse_args(argv)
    if args.mnist:
        pipeline, extra, budget = "pipelines/mnist-sdae.toml", ["--data-root", args.mnist, *MNIST_CUT], '"all"'
    else:
        pipeline, extra, budget = "pipelines/quickstart.toml", [], '"all"'
    # calibrated on this machine before the runs, from one stage and an empty Ray start: never fitted to them
    slowdown = {1: 1.0, 2: concurrency_slowdown(pipeline, one_stage(pipeline, extra, budget), 2)}
    startup = {w: ray_startup(w) for w in (1, 2)}
    names = ["local", "ray1", "ray2"]
    walls = {n: [] for n in names}
    plain = {n: [] for n in names}
    model = {n: [] for n in names}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = names[r % 3:] + names[:r % 3]
            round_walls = {}
            for name in order:
                loads.append(load_average())
                ray = [] if name == "local" else ["--executor", "ray", "--workers", name[-1]]
                round_walls[name] = timed_run(pipeline, Path(tmp) / f"{name}{r}", [*extra, *ray])
            seconds, depends = read_stages(Path(tmp) / f"local{r}")
            for name in names:
                workers = 1 if name == "local" else int(name[-1])
                walls[name].append(round_walls[name])
                plain[name].append(makespan(seconds, depends, workers))
                model[name].append(plain[name][-1] if name == "local"
                                   else predict(seconds, depends, workers, slowdown[workers], startup[workers]))
            print(f"round {r + 1}: " + ", ".join(f"{n} {round_walls[n]:.1f} s" for n in order), file=sys.stderr)
    med = statistics.median
    base = med(walls["local"])
    print(f"{pipeline}{' (cut down)' if args.mnist else ''}, {os.cpu_count()} cores, {args.repeats} rounds, "
          f"1-minute load average before each run {min(loads):.1f}-{max(loads):.1f}; medians over the rounds")
    print("| executor | wall time (s) | vs local | schedule of the local stage times (s) | calibrated model (s) "
          "| model error (median of the rounds) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        label = ("local" if name == "local" else
                 f"ray --workers {name[-1]} (start-up {startup[int(name[-1])]:.1f} s, "
                 f"stage slowdown {slowdown[int(name[-1])]:.2f}x)")
        errors = [m / w - 1 for m, w in zip(model[name], walls[name], strict=True)]
        print(f"| {label} | {med(walls[name]):.1f} | {med(walls[name]) / base:.2f}x | {med(plain[name]):.1f} "
              f"| {med(model[name]):.1f} | {med(errors):+.0%} (rounds: {', '.join(f'{e:+.0%}' for e in errors)}) |")


if __name__ == "__main__":
    main()
