"""One stage of a pipeline: an arm at one seed and label budget, with its labeled training subset and
its validation subset of realistic size, cached in the run folder by fingerprint.

`run_stage(ctx, seed, budget, arm)` is what every executor runs, in process or in a Ray worker.
"""
from __future__ import annotations

import logging
import time

import torch

from ..core.data import labeled_subset
from ..core.seeds import derive_seed
from ..core.train import TrainingDiverged
from .arms import (
    NEEDS_PRETRAINING,
    GridPoints,
    RunContext,
    arm_fingerprint,
    load_arm_record,
    pretrain_stage,
    train_arm,
)
from .config import PipelineConfig
from .rundir import arm_key, budget_label, subset_hash

log = logging.getLogger(__name__)


def run_stage(ctx: RunContext, seed: int, budget, arm: str) -> dict:
    """One arm at one seed and budget; returns its results row (from cache when finished)."""
    key = arm_key(seed, budget, arm)
    stamp = arm_fingerprint(ctx.cfg, seed, budget, arm, ctx.data_id)
    record = load_arm_record(ctx.run, ctx.cfg, seed, budget, arm, ctx.data_id)
    if record is not None:
        ctx.counts["reused"] += 1
        return record["result"]
    ctx.counts["computed"] += 1
    subset = labeled_subset(ctx.data.y_train.cpu(), budget, seed=derive_seed(seed, "labeled_subset", _key(budget)))
    val_subset = validation_subset(ctx.data.y_val.cpu(), ctx.cfg, seed, budget)
    row = {"task": ctx.cfg.task, "seed": seed, "budget": budget_label(budget), "arm": arm, "status": "ok",
           "message": "", "n_labeled": len(subset), "n_val_labeled": len(val_subset),
           "subset_hash": subset_hash(subset.numpy())}
    history = []
    start = time.perf_counter()
    try:
        if arm in NEEDS_PRETRAINING:
            pretrain_stage(ctx, seed)          # a stage of its own, timed apart from the arm
            start = time.perf_counter()
        points = GridPoints(ctx.run, key, lambda lr: arm_fingerprint(ctx.cfg, seed, budget, arm, ctx.data_id, lr))
        metrics, history = train_arm(ctx, seed, budget, arm, subset, val_subset, points)
        row.update(metrics)
    except TrainingDiverged as err:
        row.update(status="failed", message=str(err))
        log.warning("seed %s, budget %s, arm %s failed: %s", seed, budget_label(budget), arm, err)
    # an interrupted stage counts the training its earlier runs did too (kept rates and training states)
    row["wall_seconds"] = round(time.perf_counter() - start + row.pop("earlier_seconds", 0.0), 3)
    for row_h in history:
        row_h.update(seed=seed, budget=budget_label(budget), arm=arm)
    ctx.run.save_stage(key, {"result": row, "history": history}, stamp)
    ctx.run.clear_points(key)       # the stage record holds everything its kept learning rates did
    log.info("seed %s, budget %s, %s: %s in %.1f s", seed, budget_label(budget), arm, row["status"],
             row["wall_seconds"])
    return row


def _key(budget) -> int:
    return 0 if budget == "all" else int(budget)


def validation_subset(y_val: torch.Tensor, cfg: PipelineConfig, seed: int, budget) -> torch.Tensor:
    """Indices of the validation examples that model selection may use at this budget: as many per class
    as a user with this budget could have (`data.val_per_class`), drawn by seed and budget, the same for
    every arm. Reconstruction selects on the whole validation split (it needs no labels)."""
    per_class = cfg.data.val_per_class
    if cfg.task == "reconstruction" or per_class == "all" or (per_class == "budget" and budget == "all"):
        return torch.arange(len(y_val))
    k = budget if per_class == "budget" else per_class
    return labeled_subset(y_val, k, seed=derive_seed(seed, "val_subset", _key(budget)), at_most=True)
