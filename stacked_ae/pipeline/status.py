"""Which stages of a run folder are finished, missing, failed, or would rerun because the settings,
the data or the code changed since they ran (`sae status RUN_DIR [PIPELINE]`).

Reads only the run folder (and the pipeline file, if given): nothing is loaded or trained.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .arms import NEEDS_PRETRAINING, arm_fingerprint, pretrain_fingerprint
from .config import PipelineConfig, from_dict
from .rundir import RunDir, budget_label

STATES = ("finished", "failed", "stale", "missing")


def read_run_config(run_dir: Path) -> PipelineConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json); run `sae run` first")
    return from_dict(json.loads(path.read_text()))


def stage_status(cfg: PipelineConfig, run_dir: Path) -> list[dict]:
    """One entry per stage of `cfg`: key, seed, budget, arm (None for pretraining) and state, one of STATES.

    `stale`: a record exists but was made under other settings, data or code, so a run would redo it. The
    data are identified by the fingerprint the run's manifest recorded (a run on other data redoes all)."""
    run = RunDir(Path(run_dir))
    try:
        manifest = json.loads((run.root / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    data_id = (manifest.get("dataset") or {}).get("fingerprint", "")
    stages = []
    for seed in cfg.seeds:
        if any(arm in NEEDS_PRETRAINING for arm in cfg.arms):
            stages.append(_state(run, f"pretrain_seed{seed}", pretrain_fingerprint(cfg, seed, data_id),
                                 seed=seed, budget=None, arm=None))
        for budget in cfg.data.budgets:
            for arm in cfg.arms:
                key = f"arm_seed{seed}_budget{budget_label(budget)}_{arm}"
                stages.append(_state(run, key, arm_fingerprint(cfg, seed, budget, arm, data_id),
                                     seed=seed, budget=budget_label(budget), arm=arm))
    return stages


def _state(run: RunDir, key: str, stamp: str, **where) -> dict:
    path = run.stage_path(key)
    if not path.is_file():
        return {"key": key, **where, "state": "missing"}
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return {"key": key, **where, "state": "stale"}
    if record.get("fingerprint") != stamp:
        return {"key": key, **where, "state": "stale"}
    failed = record.get("status") == "failed" or (record.get("result") or {}).get("status") == "failed"
    return {"key": key, **where, "state": "failed" if failed else "finished"}


def count_states(stages: list[dict]) -> dict[str, int]:
    counts = Counter(stage["state"] for stage in stages)
    return {state: counts.get(state, 0) for state in STATES}
