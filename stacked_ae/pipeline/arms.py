"""The arms of a comparison and how each one is trained.

Neural arms (`pretrained`, `random`, `frozen`) share the architecture, the labeled subset, the
fine-tuning budget and the learning-rate grid; they differ only in their starting weights.
The random arm starts from exactly the weights greedy pretraining started from.
scikit-learn arms (`logreg`, `pca-logreg`, `pca`) are the classical baselines.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.conv import map_shapes
from ..core.data import Dataset
from ..core.model import CheckpointError, StackedEncoder
from ..core.pretrain import greedy_pretrain
from ..core.train import (
    TrainingCheckpoint,
    TrainingDiverged,
    evaluate_classifier,
    evaluate_reconstruction,
    fit_autoencoder,
    fit_classifier,
    predict_logits,
)
from .config import ModelConfig, PipelineConfig, PretrainSection, per_layer_keys
from .rundir import RunDir, arm_key, budget_label, fingerprint, npy_bytes, pretrain_key

log = logging.getLogger(__name__)

NEEDS_PRETRAINING = ("pretrained", "frozen")
# A network arm's learning rate in training keeps its state at most this often (seconds): an interrupted stage
# loses at most this much training and one epoch. Saving the mnist-sdae classifier's state (weights, Adam's
# moments, the best weights: 67 MB) takes about 0.5 s on a 2-core CPU, under 0.2% of the 5 minutes it follows
# (benchmarks/bench_checkpoint.py, benchmarks/RESULTS.md).
CHECKPOINT_EVERY_S = 300.0
SKLEARN_ARMS = ("logreg", "pca-logreg", "pca")


@dataclass
class RunContext:
    """What every stage of one run shares: config, data on the device, the run folder."""
    cfg: PipelineConfig
    data: Dataset
    run: RunDir
    device: torch.device
    progress: bool
    stacks: dict           # seed -> pretrained StackedEncoder, kept in memory once trained or loaded
    data_id: str = ""      # content hash of the data split (rundir.dataset_fingerprint)
    counts: Counter = field(default_factory=Counter)   # stages computed and reused, for the end-of-run summary


@dataclass
class GridPoints:
    """The learning rates of one stage that finished before the stage did, kept in the run folder: a stage
    stopped in its third learning rate (Ctrl-C, kill, the end of a batch job's time) resumes there.
    `stamp(lr)` is the fingerprint of one learning rate: the stage's, with the grid replaced by that value,
    so widening the grid of an unfinished stage keeps the values it already trained."""
    run: RunDir
    key: str
    stamp: Callable[[float], str]

    def load(self, lr: float) -> tuple[dict, dict | None] | None:
        return self.run.load_point(self.key, lr, self.stamp(lr))

    carried: dict = field(default_factory=dict)   # lr -> seconds its training took in earlier, stopped runs

    def save(self, lr: float, record: dict, state: dict | None) -> None:
        self.run.save_point(self.key, lr, record, state, self.stamp(lr))
        if (checkpoint := self.epochs(lr)) is not None:
            checkpoint.clear()

    def epochs(self, lr: float) -> TrainingCheckpoint | None:
        """Where the learning rate in training keeps its state between epochs: a stage stopped in the middle
        of a learning rate resumes at the last epoch kept (at most CHECKPOINT_EVERY_S of training lost). None
        in a Ray worker, whose unit of resumption is the stage."""
        if not self.run.keeps_points:
            return None
        return _SaidCheckpoint(self.run.epochs_path(self.key, lr), self.stamp(lr), CHECKPOINT_EVERY_S,
                               what=f"{self.key}: lr={lr:g}",
                               carried=lambda seconds: self.carried.__setitem__(lr, seconds))


class _SaidCheckpoint(TrainingCheckpoint):
    """A training checkpoint whose resumption the run's log says (the core's per-epoch log is quieter)."""

    def __init__(self, *args, what: str, carried: Callable[[float], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.what, self.carried = what, carried

    def load(self) -> dict | None:
        state = super().load()
        if state is not None:
            log.info("%s resumes after epoch %d, kept by an interrupted run", self.what, state["epoch"])
            self.carried(float(state.get("elapsed", 0.0)))
        return state


def train_arm(ctx: RunContext, seed: int, budget, arm: str, subset: torch.Tensor,
              val_subset: torch.Tensor, points: GridPoints | None = None) -> tuple[dict, list[dict]]:
    """Train and test one arm; returns (metrics for results.csv, per-epoch history rows).

    `subset` indexes the labeled training examples, `val_subset` the validation examples that model
    selection may use (classification; reconstruction selects on the whole validation split). `points`
    keeps each finished learning rate of the network arms, and gives back those kept by an interrupted run."""
    if ctx.cfg.task == "reconstruction":
        if arm == "pca":
            with one_blas_thread():
                return pca_reconstruction(ctx), []
        return finetune_autoencoder(ctx, seed, budget, arm, points)
    if arm in SKLEARN_ARMS:
        with one_blas_thread():
            (metrics, predictions), history = logistic_regression(ctx, seed, arm, subset, val_subset), []
    else:
        metrics, predictions, history = finetune_classifier(ctx, seed, budget, arm, subset, val_subset, points)
    ctx.run.write(ctx.run.predictions_path(seed, budget, arm), npy_bytes(predictions))
    return metrics, history


def one_blas_thread():
    """The scikit-learn baselines run with one BLAS / OpenMP thread: how many threads sum a product changes its
    last bits, and an unregularised fit run to max_iter carries them into the selected model, so without
    this limit the same stage gives other numbers in a Ray worker (one thread) than in process, or on
    another machine."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1)


# ---------------------------------------------------------------- starting weights

def pretrain_stage(ctx: RunContext, seed: int) -> StackedEncoder:
    """Greedy pretraining of one seed on all training images (labels unused); computed once, cached."""
    if seed in ctx.stacks:
        return ctx.stacks[seed]
    key, stamp = pretrain_key(seed), pretrain_fingerprint(ctx.cfg, seed, ctx.data_id)
    record = load_pretrain_record(ctx.run, ctx.cfg, seed, ctx.data_id)
    path = ctx.run.encoder_path(seed)
    if record is not None and (record["status"] != "ok" or path.is_file()):
        if record["status"] != "ok":
            raise TrainingDiverged(record["message"])
        ctx.stacks[seed] = load_cached_encoder(ctx, path)
        return ctx.stacks[seed]
    start = time.perf_counter()
    try:
        stack, histories = _greedy(ctx, seed, keep=(key, stamp))
    except TrainingDiverged as err:
        ctx.counts["pretrain computed"] += 1   # computed, and failed: not one this invocation reused
        ctx.run.clear_points(key)
        ctx.run.save_stage(key, {"seed": seed, "status": "failed", "message": f"pretraining, seed {seed}: {err}",
                                 "wall_seconds": time.perf_counter() - start}, stamp)
        raise TrainingDiverged(f"pretraining, seed {seed}: {err}") from None
    ctx.run.write(path, stack.to_bytes())
    ctx.counts["pretrain computed"] += 1
    rows = [{"seed": seed, "layer": k + 1, "epoch": row["epoch"], "train_loss": row["train_loss"],
             "val_loss": row.get("val_loss")} for k, history in enumerate(histories) for row in history]
    ctx.run.save_stage(key, {"seed": seed, "status": "ok", "history": rows,
                             "wall_seconds": round(time.perf_counter() - start, 3)}, stamp)
    ctx.run.clear_points(key)
    ctx.stacks[seed] = stack
    return stack


def _greedy(ctx: RunContext, seed: int, keep: tuple[str, str] | None = None):
    """Greedy pretraining of one seed; with `keep` = (stage key, fingerprint), finished layers and the state
    of the layer in training are kept in partial/{key}/, so a stopped stage resumes where it stopped."""
    kept = {}
    if keep is not None and ctx.run.keeps_points:
        kept = {"checkpoint_dir": ctx.run.points_dir(keep[0]), "checkpoint_stamp": keep[1],
                "checkpoint_every_s": CHECKPOINT_EVERY_S}
    return greedy_pretrain(ctx.data.X_train, list(ctx.cfg.model.sizes), ctx.cfg.pretrain_config(),
                           X_val=ctx.data.X_val, seed=seed, device=ctx.device, progress=ctx.progress,
                           **conv_settings(ctx), **kept)


def restore_encoder(ctx: RunContext, seed: int) -> bool:
    """Write `encoders/seed{S}.pt` again when its pretraining stage finished but the file is gone (checkpoints
    are large, and reference reports do not keep them): pretraining is deterministic for a seed, so it gives
    the weights the arms started from (bit for bit on the same machine and threads). The stage record is kept
    as it is. Returns whether it wrote the file."""
    record = load_pretrain_record(ctx.run, ctx.cfg, seed, ctx.data_id)
    path = ctx.run.encoder_path(seed)
    if record is None or record.get("status") != "ok" or path.is_file():
        return False
    stack, _ = _greedy(ctx, seed)
    ctx.run.write(path, stack.to_bytes())
    return True


# The [pretrain] settings that shape the weights pretraining starts from, besides [model]'s sizes and
# activations: the random arm depends on these. Corruption and the penalties act in pretraining only.
INIT_FIELDS = ("tied",)

# Bumped whenever the code changes what a stage computes from the same settings (seed streams, the
# validation protocol): stages recorded under another protocol are recomputed, never silently reused.
PROTOCOL = 2


def _decoders(cfg: PipelineConfig) -> dict:
    """{"auto_decoders": "mirror"} where "auto" decoders mirror codes other than sigmoid or linear ones (they
    were linear before): those stages are recomputed. Empty elsewhere, so that the fingerprints of the
    stages the change leaves as they were (sigmoid and linear stacks) stay as they were."""
    n_layers = len(cfg.model.conv) + len(cfg.model.sizes)
    return {"auto_decoders": "mirror"} if cfg.pretrain_config().mirrors_unbounded_codes(n_layers) else {}


def _settings(cfg: PipelineConfig, legacy: bool = False) -> dict:
    """`cfg.to_dict()` as the fingerprints read it: a per-layer list whose values are all equal is that value (one
    for every layer), so `pretrain.noise = [0.1, 0.1, 0.1]` and `pretrain.noise = 0.1` are one setting and one
    stage. With `legacy`, the lists as given: how records were stamped before this (stacked-ae 0.2.0). A record
    stamped that way is still found (see `load_pretrain_record`, `load_arm_record`): nothing finished is recomputed."""
    settings = cfg.to_dict()
    if legacy:
        return settings
    for name, keys in (("model", per_layer_keys(ModelConfig)), ("pretrain", per_layer_keys(PretrainSection))):
        section = settings[name]
        for key in keys & section.keys():
            values = section[key]
            if isinstance(values, list) and values and all(type(v) is type(values[0]) and v == values[0]
                                                           for v in values):
                section[key] = values[0]
    return settings


def pretrain_fingerprint(cfg: PipelineConfig, seed: int, data_id: str, legacy: bool = False) -> str:
    """What pretraining depends on: the data (its content), the model, [pretrain] and the seed."""
    settings = _settings(cfg, legacy)
    return fingerprint({"protocol": PROTOCOL, "data": data_id, "model": settings["model"],
                        "pretrain": settings["pretrain"], "seed": seed, **_decoders(cfg)})


def pretrain_stamps(cfg: PipelineConfig, seed: int, data_id: str) -> tuple[str, str]:
    """The fingerprints a finished record of the seed's pretraining may carry: today's, and the one an earlier
    version gave the same settings (`_settings(legacy=True)`). `sae run` and `sae status` both read these."""
    return pretrain_fingerprint(cfg, seed, data_id), pretrain_fingerprint(cfg, seed, data_id, legacy=True)


def load_pretrain_record(run: RunDir, cfg: PipelineConfig, seed: int, data_id: str) -> dict | None:
    """The record of a seed's pretraining finished under today's settings, or None. A record stamped the legacy
    way counts, and is left as it is: its bytes are among the sources of the report's kept figures."""
    return _load_stamped(run, pretrain_key(seed), pretrain_stamps(cfg, seed, data_id))


def _load_stamped(run: RunDir, key: str, stamps: tuple[str, ...]) -> dict | None:
    """The stage's record if it carries one of `stamps`, else None."""
    return next((record for stamp in stamps if (record := run.load_stage(key, stamp)) is not None), None)


def arm_fingerprint(cfg: PipelineConfig, seed: int, budget, arm: str, data_id: str, lr: float | None = None,
                    legacy: bool = False) -> str:
    """What an arm depends on, and nothing more: a [pretrain] edit leaves the baselines and a [finetune]
    edit leaves pretraining alone. The random arm starts from pretraining's initial weights, so it
    depends on the [pretrain] settings that shape them (INIT_FIELDS) but not on how pretraining trains.
    With `lr`: what one learning rate of a network arm's grid depends on (the grid replaced by it).
    With `legacy`: as records were stamped before `_settings` normalised the settings."""
    return fingerprint(arm_depends(cfg, seed, budget, arm, data_id, lr, legacy))


# What the frozen arm's fingerprint sees of [finetune]'s dropout: a linear probe on fixed codes uses none.
PROBE_IGNORES = {"dropout": 0.0, "input_dropout": 0.0}


def arm_depends(cfg: PipelineConfig, seed: int, budget, arm: str, data_id: str, lr: float | None = None,
                legacy: bool = False) -> dict:
    """The settings `arm_fingerprint` hashes."""
    settings = _settings(cfg, legacy)
    depends = {"protocol": PROTOCOL, "data": data_id, "task": cfg.task, "seed": seed, "budget": budget, "arm": arm}
    if cfg.task == "classification":
        depends["val_per_class"] = settings["data"]["val_per_class"]
    else:   # records made before the codes' kNN probe lack it: recomputed, not reused with a gap
        depends["knn_k"] = KNN_K
    if arm in SKLEARN_ARMS:
        if arm != "logreg":
            depends["code_width"] = cfg.model.sizes[-1]
        if arm != "pca":
            depends["C_grid"] = C_GRID
        return depends
    finetune = dict(settings["finetune"])
    probe = finetune.pop("probe_lr", None)    # the frozen arm's own grid, where given, stands in for lr
    if arm == "frozen" and probe:
        finetune["lr"] = probe
    if arm == "frozen" and not legacy:   # the defaults, so that a probe of a run without dropout keeps its stamp
        finetune.update(PROBE_IGNORES)
    if lr is not None:   # one rate's training does not depend on how far the grid may grow
        finetune.pop("extend", None)
        finetune.update(lr=[lr], point=True)
    depends.update(model=settings["model"], finetune=finetune, pretrain=settings["pretrain"])
    if arm not in NEEDS_PRETRAINING:
        depends["pretrain"] = {k: settings["pretrain"][k] for k in INIT_FIELDS}
    if arm in NEEDS_PRETRAINING or cfg.task == "reconstruction":   # the unrolled random network has decoders too
        depends.update(_decoders(cfg))
    return depends


def arm_stamps(cfg: PipelineConfig, seed: int, budget, arm: str, data_id: str) -> tuple[str, str]:
    """The fingerprints a finished record of the arm's stage may carry directly (see `pretrain_stamps`)."""
    return tuple(arm_fingerprint(cfg, seed, budget, arm, data_id, legacy=old) for old in (False, True))


def load_arm_record(run: RunDir, cfg: PipelineConfig, seed: int, budget, arm: str, data_id: str) -> dict | None:
    """The finished record of an arm's stage under today's settings, or None (the stage must run).

    A record made under other settings is today's result too where today's settings would have reproduced it
    exactly (see `_equivalent`): it is reused as it stands. No record is rewritten when it is reused: its bytes
    are among the sources that kept autoencoder figures are checked against (`report.figures`)."""
    key = arm_key(seed, budget, arm)
    record = _load_stamped(run, key, arm_stamps(cfg, seed, budget, arm, data_id))
    if record is not None or arm in SKLEARN_ARMS:
        return record
    record = run.read_stage(key)
    if record is None or not _equivalent(record, cfg, seed, budget, arm, data_id):
        return None
    return record


def _equivalent(record: dict, cfg: PipelineConfig, seed: int, budget, arm: str, data_id: str) -> bool:
    """Whether a network arm's record, made under other settings, is what today's settings would compute:

    - made without `finetune.extend`, or with a lower limit, its selection inside what it tried (or every rate
      failed): extension would not have started, or would have stopped where it stopped;
    - made under a lower `finetune.epochs` cap, with the constant schedule (the others depend on the cap), and
      every rate's training ended by early stopping before that cap (a rate that diverged did so before it too):
      each epoch was what today's would be, and so was the selection. Raising a cap that bound some stages
      recomputes only those;
    - both at once."""
    variants = [(cfg, False)] + [(dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, extend=lower)),
                                  True) for lower in range(cfg.finetune.extend)]
    for (variant, without_extend), legacy in itertools.product(variants, (False, True)):
        # without_extend: made under a lower limit (0: none); legacy: stamped before the settings were normalised
        depends = arm_depends(variant, seed, budget, arm, data_id, legacy=legacy)
        if fingerprint(depends) == record.get("fingerprint"):
            cap = cfg.finetune.epochs
        else:
            cap = _lower_cap(depends, record.get("fingerprint"), cfg)
            if cap is None or not _ended_before(record, cap):
                continue
        if without_extend:
            result = record.get("result") or {}
            if result.get("status") == "ok" and result.get("on_grid_edge") is not False:
                continue
        return True
    return False


def _lower_cap(depends: dict, stamp, cfg: PipelineConfig) -> int | None:
    """The finetune.epochs below today's under which `depends` hashes to `stamp` (None if none does, or the
    schedule is not constant)."""
    if cfg.finetune.schedule != "constant" or not stamp:
        return None
    for cap in range(1, cfg.finetune.epochs):
        if fingerprint({**depends, "finetune": {**depends["finetune"], "epochs": cap}}) == stamp:
            return cap
    return None


def _ended_before(record: dict, cap: int) -> bool:
    """Every learning rate in the record's history stopped by itself, before `cap` epochs."""
    trained: dict = {}
    for row in record.get("history") or []:
        trained[row.get("lr")] = max(trained.get(row.get("lr"), 0), int(row.get("epoch", 0)))
    return bool(trained) and all(n < cap for n in trained.values())


def load_cached_encoder(ctx: RunContext, path) -> StackedEncoder:
    """The encoder a finished pretraining stage saved; refused if damaged or not of this run's architecture
    (arms must differ only in their starting weights)."""
    hint = "delete it to pretrain again, or rerun with --force"
    try:
        stack = StackedEncoder.load(path, map_location=ctx.device)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {hint}") from None
    pcfg = ctx.cfg.pretrain_config()
    n_layers = ctx.cfg.model.n_layers
    conv = ctx.cfg.model.conv
    maps = [math.prod(shape) for shape in map_shapes(conv, ctx.data.image_shape)[1:]] if conv else []
    widths = [ctx.data.n_features, *maps, *ctx.cfg.model.sizes]
    expected = (widths, [pcfg.value("activation", k) for k in range(n_layers)])
    found = ([stack.n_in, *stack.sizes], stack.activations)
    if found != expected or [s.to_dict() for s in stack.conv] != list(ctx.cfg.model.conv):
        raise CheckpointError(f"{path}: the cached encoder is {_architecture(*found)} but this run needs "
                              f"{_architecture(*expected)}; {hint}")
    return stack


def _architecture(widths: list[int], activations: list[str]) -> str:
    return f"{'-'.join(map(str, widths))} ({', '.join(activations)})"


def fresh_stack(ctx: RunContext, seed: int) -> StackedEncoder:
    """The same architecture from random initialisation: the weights pretraining starts from."""
    return StackedEncoder.random(ctx.data.n_features, list(ctx.cfg.model.sizes), seed=seed,
                                 config=ctx.cfg.pretrain_config(), **conv_settings(ctx)).to(ctx.device)


def conv_settings(ctx: RunContext) -> dict:
    """The conv layers of [model] and the images they read (nothing for a dense model)."""
    if not ctx.cfg.model.conv:
        return {}
    return {"conv": list(ctx.cfg.model.conv), "image_shape": ctx.data.image_shape,
            "channels_last": ctx.device.type != "cpu" or CPU_CHANNELS_LAST}


# Conv layers in channels-last memory on the CPU. Measured on this project's 2-core CPU (benchmarks/RESULTS.md,
# conv workload): contiguous maps were faster with 1 and with 2 threads, for torch's own conv ops and for the
# layer's training step alike, so the CPU keeps contiguous memory; GPUs use channels-last.
CPU_CHANNELS_LAST = False


def starting_stack(ctx: RunContext, seed: int, arm: str) -> StackedEncoder:
    """A private copy of the arm's starting weights."""
    if arm in NEEDS_PRETRAINING:
        return copy.deepcopy(pretrain_stage(ctx, seed))
    return fresh_stack(ctx, seed)


# ---------------------------------------------------------------- neural arms

def _grid(ctx: RunContext, arm: str, fit_one, build,
          points: GridPoints | None = None) -> tuple[object, dict, list[dict]]:
    """Fit once per grid value; keep the model with the best validation key (ties: first value).

    `fit_one(lr) -> (model, history, val_metrics, key)`; `build(lr)` makes the untrained model that a kept
    point's weights are loaded into. Grid values that diverge are skipped; if all diverge, the arm fails with
    every message. With `points`, each finished value is kept, and values kept earlier are not trained again
    (training is deterministic for a seed, so the result is that of an uninterrupted stage)."""
    best, errors, history, tried = None, [], [], []
    earlier = 0.0   # seconds spent on this stage by earlier, stopped runs (kept rates, kept training states)

    def fit_at(lr: float) -> bool:
        """Fit (or load) one value; whether it trained without diverging."""
        nonlocal best, earlier
        tried.append(lr)
        kept = points.load(lr) if points is not None else None
        if kept is not None:
            record, state = kept
            earlier += float(record.get("seconds", 0.0))
            log.info("%s: lr=%g kept from an interrupted run, not trained again", points.key, lr)
            if "diverged" in record:
                errors.append(record["diverged"])
                return False
            model = build(lr)
            model.load_state_dict(state)
            model.to(ctx.device)
            rows, val, key = record["rows"], record["val"], tuple(record["key"])
        else:
            start = time.perf_counter()
            try:
                model, rows, val, key = fit_one(lr)
            except TrainingDiverged as err:
                errors.append(str(err))
                if points is not None:
                    points.save(lr, {"diverged": str(err)}, None)
                return False
            before = points.carried.get(lr, 0.0) if points is not None else 0.0
            earlier += before
            if points is not None:
                points.save(lr, {"rows": rows, "val": val, "key": list(key),
                                 "seconds": before + time.perf_counter() - start}, model.state_dict())
        history.append((lr, rows))
        if best is None or key < best[3]:
            best = (model, lr, val, key)
        return True

    grid = ctx.cfg.finetune.grid(arm)
    for lr in grid:
        fit_at(lr)
    for lr in _extension(grid, ctx.cfg.finetune.extend, lambda: best and best[1], tried):
        log.info("%s: the best rate is the %s tried; trying lr=%g beyond it", arm,
                 "lowest" if lr < min(grid) else "highest", lr)
        fit_at(lr)
    if best is None:
        raise TrainingDiverged(f"{arm}: every learning rate diverged: " + "; ".join(errors))
    model, lr, val, _ = best
    rows = [{"lr": grid_lr, **_history_row(row), "selected": grid_lr == lr} for grid_lr, r in history for row in r]
    return model, {"lr": lr, "on_grid_edge": on_grid_edge(lr, tried), **val, "earlier_seconds": earlier}, rows


def _extension(grid, limit: int, best: Callable[[], float | None], tried: list[float]):
    """The values beyond the grid that `finetune.extend` tries: while the best value so far is the lowest (or
    highest) value tried, the next one beyond it, at most `limit` per end. The steps beyond an end repeat the
    grid's last two steps at that end (1e-4 .. 1e-2 in steps of 3 and 3.33 goes on with 3e-2, 1e-1; down with
    3e-5, 1e-5). A value beyond that diverged ends the search on its side (the optimum is not past it)."""
    if limit <= 0 or len(grid) < 2:
        return
    added = {"low": 0, "high": 0}
    while (chosen := best()) is not None:
        side = "low" if chosen == min(tried) else "high" if chosen == max(tried) else None
        if side is None or added[side] >= limit:
            return
        added[side] += 1
        yield _beyond(grid, side, chosen, added[side] - 1)


def _beyond(grid, side: str, value: float, k: int) -> float:
    """The (k+1)-th value past the grid's `side` end, one step beyond `value` (the k-th, or the end itself):
    the steps repeat the grid's last two steps at that end, rounded to 6 significant digits."""
    g = sorted(grid)
    steps = ([g[2] / g[1], g[1] / g[0]] if len(g) > 2 else [g[1] / g[0]]) if side == "low" else \
        ([g[-2] / g[-3], g[-1] / g[-2]] if len(g) > 2 else [g[-1] / g[-2]])
    step = steps[k % len(steps)]
    return float(f"{(value / step if side == 'low' else value * step):.6g}")


def extension_rates(grid, limit: int) -> list[float]:
    """Every value that `_extension` could try beyond the grid (at most `limit` per end), lowest first: the
    names under which an unfinished stage keeps them in partial/ (what `sae status` looks for)."""
    if limit <= 0 or len(grid) < 2:
        return []
    values = []
    for side, value in (("low", min(grid)), ("high", max(grid))):
        for k in range(limit):
            value = _beyond(grid, side, value, k)
            values.append(value)
    return sorted(values)


def on_grid_edge(value: float, grid) -> bool:
    """Whether a selected value is the smallest or largest value of its grid (a one-value grid: always), so
    the optimum may lie outside it. An infinite end (C = inf: no regularisation) is a limit with nothing
    beyond it, not an edge."""
    return not math.isinf(value) and value in (min(grid), max(grid))


def _history_row(row: dict) -> dict:
    return {"epoch": row["epoch"], "train_loss": row["train_loss"], "val_loss": row.get("val_loss"),
            "val_error": row.get("val_error")}


def _fit_summary(rows: list[dict]) -> dict:
    best = [r["epoch"] for r in rows if r.get("best")]
    return {"epochs_trained": len(rows), "best_epoch": best[0] if best else len(rows)}


def fit_label(seed: int, budget, arm: str, lr: float) -> str:
    """The name a network stage's training run goes by in logs, progress bars and errors."""
    return f"seed {seed}, budget {budget_label(budget)}, {arm} lr={lr:g}"


def finetune_classifier(ctx: RunContext, seed: int, budget, arm: str, subset: torch.Tensor, val_subset: torch.Tensor,
                        points: GridPoints | None = None):
    """pretrained / random: fine-tune the whole network (with [finetune] dropout); frozen: train the head
    only, on codes computed once (a linear probe: no dropout). Early stopping and the learning rate are
    chosen on the validation examples of `val_subset` only."""
    d, f = ctx.data, ctx.cfg.finetune
    X, y = d.X_train[subset.to(ctx.device)], d.y_train[subset.to(ctx.device)]
    X_val, y_val = d.X_val[val_subset.to(ctx.device)], d.y_val[val_subset.to(ctx.device)]

    frozen_codes = None
    if arm == "frozen":   # a fixed feature map: encode once, train the head on the codes
        stack = pretrain_stage(ctx, seed)
        frozen_codes = (stack.encode(X).to(ctx.device), stack.encode(X_val).to(ctx.device))

    drop = {} if arm == "frozen" else {"dropout": f.dropout, "input_dropout": f.input_dropout}

    def build(lr):
        return starting_stack(ctx, seed, arm).classifier(d.n_classes, seed=seed, freeze=arm == "frozen", **drop)

    def fit_one(lr):
        model = build(lr)
        train_cfg = ctx.cfg.finetune.train_config(lr)
        checkpoint = points.epochs(lr) if points is not None else None
        if frozen_codes is None:
            rows = fit_classifier(model, X, y, train_cfg, X_val=X_val, y_val=y_val, seed=seed,
                                  stage=fit_label(seed, budget, arm, lr), progress=ctx.progress, checkpoint=checkpoint)
        else:   # model.head is trained in place: the same updates as the full frozen network
            rows = fit_classifier(model.head, frozen_codes[0], y, train_cfg, X_val=frozen_codes[1],
                                  y_val=y_val, seed=seed, stage=fit_label(seed, budget, arm, lr), progress=ctx.progress,
                                  checkpoint=checkpoint)
        val = evaluate_classifier(model, X_val, y_val)
        summary = {"val_error": val["error"], "val_loss": val["loss"], **_fit_summary(rows)}
        return model, rows, summary, (val["error"], val["loss"])

    model, metrics, history = _grid(ctx, arm, fit_one, build, points)
    logits = predict_logits(model, d.X_test)              # the one read of the test split
    test_loss = torch.nn.functional.cross_entropy(logits, d.y_test).item()
    predictions = logits.argmax(1).cpu().numpy().astype(np.int64)
    metrics.update(test_error=float((predictions != d.y_test.cpu().numpy()).mean()), test_loss=test_loss)
    return metrics, predictions, history


def finetune_autoencoder(ctx: RunContext, seed: int, budget, arm: str,
                         points: GridPoints | None = None) -> tuple[dict, list[dict]]:
    """Unroll the stack into a deep autoencoder and fine-tune it on all training images."""
    d = ctx.data

    def fit_one(lr):
        stack = starting_stack(ctx, seed, arm)
        deep = stack.unroll()
        rows = fit_autoencoder(deep, d.X_train, ctx.cfg.finetune.train_config(lr), X_val=d.X_val, seed=seed,
                               stage=fit_label(seed, budget, arm, lr), progress=ctx.progress,
                               checkpoint=points.epochs(lr) if points is not None else None)
        val = evaluate_reconstruction(deep, d.X_val)
        summary = {"val_loss": val["loss"], **_fit_summary(rows)}
        return stack, rows, summary, (val["loss"],)

    stack, metrics, history = _grid(ctx, arm, fit_one, lambda lr: starting_stack(ctx, seed, arm), points)
    test = evaluate_reconstruction(stack.unroll(), d.X_test)   # the one read of the test split
    ctx.run.write(ctx.run.model_path(seed, budget, arm), stack.to_bytes())
    metrics.update(test_loss=test["loss"], test_sse=test["sse"],
                   knn_accuracy=knn_accuracy(_numpy(stack.encode(d.X_train)), _numpy(d.y_train),
                                             _numpy(stack.encode(d.X_test)), _numpy(d.y_test)))
    return metrics, history


# Neighbours of the k-nearest-neighbour probe of a reconstruction pipeline's codes.
KNN_K = 5


def knn_accuracy(train_codes: np.ndarray, y_train: np.ndarray, test_codes: np.ndarray, y_test: np.ndarray,
                 k: int = KNN_K) -> float:
    """How well the codes keep the classes apart without any training on labels: the test accuracy of a
    k-nearest-neighbour vote (Euclidean) among the training codes."""
    from sklearn.neighbors import KNeighborsClassifier
    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_codes))).fit(train_codes, y_train)
    return float((clf.predict(test_codes) == y_test).mean())


# ---------------------------------------------------------------- scikit-learn baselines

def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# Inverse regularisation strengths tried by the logistic-regression baselines, chosen on validation
# like the networks' learning rates. The grid ends in no regularisation at all (C = inf), so its top
# end is a limit, not an edge: nearly separable data pick ever larger C (0.01 .. 100 left 1 of 9
# quickstart selections on its top end, 0.001 .. 1000 left 2 of 9).
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, math.inf)


def logistic_regression(ctx: RunContext, seed: int, arm: str, subset: torch.Tensor, val_subset: torch.Tensor):
    """Logistic regression on raw pixels, or on PCA to the top layer's width (PCA fit on all training
    images, labels unused, as pretraining is); C chosen from C_GRID on the validation examples of
    `val_subset` (lowest error, then lowest loss; ties: the smaller C)."""
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    d = ctx.data
    val_idx = _numpy(val_subset)
    X_train, X_val, X_test = _numpy(d.X_train), _numpy(d.X_val)[val_idx], _numpy(d.X_test)
    if arm == "pca-logreg":
        pca = PCA(n_components=min(ctx.cfg.model.sizes[-1], *X_train.shape), random_state=seed).fit(X_train)
        X_train, X_val, X_test = pca.transform(X_train), pca.transform(X_val), pca.transform(X_test)
    idx = _numpy(subset)
    y_val, y_test = _numpy(d.y_val)[val_idx], _numpy(d.y_test)
    best = None
    for C in C_GRID:
        with warnings.catch_warnings():   # an unregularised fit of separable data runs to max_iter
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(X_train[idx],
                                                                                _numpy(d.y_train)[idx])
        val_proba = _full_proba(clf, X_val, d.n_classes)
        key = (float((val_proba.argmax(1) != y_val).mean()), _nll(val_proba, y_val))
        if best is None or key < best[0]:
            best = (key, C, clf)
    (val_error, val_loss), C, clf = best
    test_proba = _full_proba(clf, X_test, d.n_classes)
    predictions = test_proba.argmax(1).astype(np.int64)
    metrics = {"C": C, "on_grid_edge": on_grid_edge(C, C_GRID), "val_error": val_error, "val_loss": val_loss,
               "test_error": float((predictions != y_test).mean()), "test_loss": _nll(test_proba, y_test)}
    return metrics, predictions


def _full_proba(clf, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities over all n_classes (columns for classes absent in training are 0)."""
    proba = np.zeros((len(X), n_classes))
    proba[:, clf.classes_] = clf.predict_proba(X)
    return proba


def _nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)).mean())


def pca_reconstruction(ctx: RunContext) -> dict:
    """PCA with as many components as the code width (Hinton & Salakhutdinov 2006, Fig. 2), fit on the
    training images. Only `test_sse` and the codes' `knn_accuracy` are reported: the networks' `val_loss` /
    `test_loss` are their training loss (cross-entropy for sigmoid outputs), which a squared error would not be
    comparable to."""
    from sklearn.decomposition import PCA
    d = ctx.data
    X_train, X_test = _numpy(d.X_train), _numpy(d.X_test)
    pca = PCA(n_components=min(ctx.cfg.model.sizes[-1], *X_train.shape), svd_solver="full").fit(X_train)
    test_codes = pca.transform(X_test)
    return {"test_sse": float(((pca.inverse_transform(test_codes) - X_test) ** 2).sum(1).mean()),
            "knn_accuracy": knn_accuracy(pca.transform(X_train), _numpy(d.y_train), test_codes, _numpy(d.y_test))}
