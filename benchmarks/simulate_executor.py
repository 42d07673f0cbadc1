"""Predict what more workers would buy a finished run: the makespan of its stage graph on 1, 2, 4, ...
workers, from the per-stage wall times its run folder recorded.

    python benchmarks/simulate_executor.py reports/mnist-sdae --workers 1,2,4,8,16,32

The graph is the executor's: pretrain(seed) feeds the `pretrained` and `frozen` arms of that seed;
every other stage is free. The schedule is a list schedule (Graham 1969): whenever a worker is free it
takes the longest ready stage. The critical path (a seed's pretraining plus its longest dependent arm,
or the longest single stage) bounds every schedule from below. Stage times are taken as measured with
the run's own threads; workers that each get fewer cores would run each stage slower than this assumes.
"""
from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

NEEDS_PRETRAINING = ("pretrained", "frozen")


def read_stages(run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """(stage key -> wall seconds, arm stage key -> the pretraining stage it depends on)."""
    seconds, depends = {}, {}
    for path in sorted((run_dir / "stages").glob("*.json")):
        record = json.loads(path.read_text())
        if path.stem.startswith("pretrain_"):
            seconds[path.stem] = float(record.get("wall_seconds") or 0.0)
            continue
        result = record["result"]
        seconds[path.stem] = float(result.get("wall_seconds") or 0.0)
        if result["arm"] in NEEDS_PRETRAINING:
            depends[path.stem] = f"pretrain_seed{result['seed']}"
    if not seconds:
        raise SystemExit(f"{run_dir}: no stage records under stages/")
    return seconds, {k: v for k, v in depends.items() if v in seconds}


def makespan(seconds: dict[str, float], depends: dict[str, str], workers: int) -> float:
    """Finish time of a list schedule on `workers` identical workers, longest ready stage first."""
    waiting = {}
    for stage, parent in depends.items():
        waiting.setdefault(parent, []).append(stage)
    ready = [(-t, k) for k, t in seconds.items() if k not in depends]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, workers
    while ready or running:
        while free and ready:
            duration, stage = heapq.heappop(ready)
            heapq.heappush(running, (now - duration, stage))
            free -= 1
        now, stage = heapq.heappop(running)
        free += 1
        for child in waiting.get(stage, []):
            heapq.heappush(ready, (-seconds[child], child))
    return now


def critical_path(seconds: dict[str, float], depends: dict[str, str]) -> float:
    longest = max(seconds.values())
    chains = [seconds[parent] + seconds[child] for child, parent in depends.items()]
    return max([longest, *chains])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workers", default="1,2,4,8,16,32", help="comma-separated worker counts")
    args = parser.parse_args(argv)
    seconds, depends = read_stages(args.run_dir)
    counts = [int(w) for w in args.workers.split(",")]
    serial = makespan(seconds, depends, 1)
    print(f"{args.run_dir}: {len(seconds)} stages, {serial / 60:.1f} min of stage time; critical path "
          f"{critical_path(seconds, depends) / 60:.1f} min")
    print("| workers | predicted wall time (min) | speed-up | efficiency |")
    print("| ---: | ---: | ---: | ---: |")
    for w in counts:
        span = makespan(seconds, depends, w)
        print(f"| {w} | {span / 60:.1f} | {serial / span:.2f} | {serial / span / w:.0%} |")


if __name__ == "__main__":
    main()
