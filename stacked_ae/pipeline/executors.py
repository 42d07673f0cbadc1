"""Executors walk the stage graph of a pipeline: `run_local` in this process (the default), `run_ray` as
Ray tasks on worker processes of this machine or on a cluster.

The graph: pretrain(seed) feeds the arms that start from its encoder (`pretrained`, `frozen`); every
other arm depends on nothing. On Ray, the driver puts the dataset into the object store once, a
pretraining task returns its encoder's bytes, and the arms that need it receive them through Ray's
task dependencies. Every task returns the files its stage produced; only the driver writes the run
folder, atomically, as the local executor does. Workers that can reach the run folder (started here, or
`run.shared_folder = true` on a cluster with a shared filesystem) keep a stage's progress in its partial/
as the local executor does, so a stopped stage resumes inside itself. A stage is seeded from its own
settings only, so the executor never changes a number.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import torch

from ..core.files import atomic_write
from ..core.model import StackedEncoder
from ..core.train import TrainingDiverged, device_label
from .arms import NEEDS_PRETRAINING, RunContext, load_arm_record, load_pretrain_record, pretrain_stage
from .config import from_dict
from .rundir import RunDir, arm_key, budget_label, pretrain_key
from .stages import run_stage

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 120.0   # Ray, into a log: how often the driver says how far the unfinished stages got
INSTALL_RAY = 'pip install "stacked-ae[ray]"   (from a checkout: pip install -e ".[ray]")'


class ExecutorError(ValueError):
    """The executor cannot run: Ray is missing, or the cluster cannot be reached."""


def arm_stages(cfg) -> list[tuple[int, object, str]]:
    """(seed, budget, arm) of every arm stage, in the order of results.csv."""
    return [(seed, budget, arm) for seed in cfg.seeds for budget in cfg.data.budgets for arm in cfg.arms]


def pretrained_seeds(cfg) -> list[int]:
    """Seeds whose pretraining some arm starts from (the graph's pretrain nodes)."""
    return list(cfg.seeds) if any(arm in NEEDS_PRETRAINING for arm in cfg.arms) else []


def unrecorded_pretrainings(run: RunDir, cfg, data_id: str) -> list[int]:
    """Seeds of the graph whose pretraining has no record of today's settings (never run, made under other
    settings, or damaged): each is a stage to run even where every arm built on it is finished (its record
    feeds pretrain.csv and the report). A finished one whose encoder file alone is gone is not among them: it
    runs again only when an arm that starts from it has to train."""
    return [seed for seed in pretrained_seeds(cfg) if load_pretrain_record(run, cfg, seed, data_id) is None]


def current_records(run: RunDir, cfg, data_id: str) -> tuple[list[dict], list[dict]]:
    """(arm records, pretraining records) of the stages of `cfg` finished under today's settings, in results.csv
    order: what the tables and the run's compute times are made of. Records of stages outside the graph (seeds,
    budgets or arms no longer configured) or made under other settings are left out, not deleted."""
    arms = [load_arm_record(run, cfg, seed, budget, arm, data_id)
            for seed, budget, arm in arm_stages(cfg)]
    pretrain = [load_pretrain_record(run, cfg, seed, data_id) for seed in pretrained_seeds(cfg)]
    return [r for r in arms if r is not None], [r for r in pretrain if r is not None]


# ---------------------------------------------------------------- local

def run_local(ctx: RunContext, progress: bool) -> dict[str, str]:
    """Every stage in this process, in results.csv order; pretraining runs when an arm first needs it."""
    from tqdm.auto import tqdm
    stages = arm_stages(ctx.cfg)
    bar = tqdm(stages, desc=ctx.cfg.name, unit="stage", disable=not progress)
    for seed, budget, arm in bar:
        bar.set_postfix_str(f"seed {seed}, budget {budget_label(budget)}, {arm}")
        run_stage(ctx, seed, budget, arm)
    bar.close()
    for seed in unrecorded_pretrainings(ctx.run, ctx.cfg, ctx.data_id):   # no unfinished arm needed it
        try:
            pretrain_stage(ctx, seed)
        except TrainingDiverged as err:   # its failed record is written; the arms built on it are finished
            log.warning("%s", err)
    return {}


# ---------------------------------------------------------------- Ray

class MemoryRunDir(RunDir):
    """A worker's view of the run folder: what a stage writes is kept in memory for the driver, and the
    stage records it is handed (a finished pretraining) are read from memory too.

    With `shared`, the run folder itself, which the worker can reach (the same filesystem), an unfinished
    stage's progress (finished learning rates and layers, the training state of the one in training) is
    kept in its partial/ as the local executor keeps it, so a stopped stage resumes inside itself. Without
    it (a worker on another machine) the stage is the unit a stopped run resumes from."""

    def __init__(self, root: Path, provenance: dict, files: dict[str, bytes] | None = None,
                 shared: Path | None = None):
        super().__init__(root, provenance)
        self.files = dict(files or {})
        self.shared = RunDir(shared, provenance) if shared is not None else None
        self.keeps_points = self.shared is not None

    def write(self, path: Path, data: bytes) -> None:
        self.files[Path(path).relative_to(self.root).as_posix()] = data

    def read_stage(self, key: str) -> dict | None:
        blob = self.files.get(self.stage_path(key).relative_to(self.root).as_posix())
        record = json.loads(blob) if blob is not None else None
        return record if isinstance(record, dict) else None

    def point_path(self, key: str, lr: float) -> Path:
        return self._partial().point_path(key, lr)

    def points_dir(self, key: str) -> Path:
        return self._partial().points_dir(key)

    def epochs_path(self, key: str, lr: float) -> Path:
        return self._partial().epochs_path(key, lr)

    def save_point(self, key, lr, record, state, fingerprint) -> None:
        if self.shared is not None:
            self.shared.save_point(key, lr, record, state, fingerprint)

    def load_point(self, key, lr, fingerprint):
        return self.shared.load_point(key, lr, fingerprint) if self.shared is not None else None

    def clear_points(self, key) -> None:
        pass    # the driver clears them once it has written the stage's record: a stage is never left with neither

    def _partial(self) -> RunDir:
        if self.shared is None:
            raise RuntimeError("a Ray worker without the run folder keeps no partial progress")
        return self.shared


def stage_task(cfg_dict: dict, data, stage: tuple, pretrained: dict | None, threads: int, device: str,
               provenance: dict, data_id: str, shared: str | None = None) -> dict:
    """Run one stage in a worker; returns {"files": {relative path: bytes}, "node", "seconds"}. `shared`: the run
    folder's path, where the worker can reach it, to keep the stage's progress in (see MemoryRunDir)."""
    torch.set_num_threads(threads)
    cfg, (kind, seed, budget, arm) = from_dict(cfg_dict), stage
    device = torch.device(device)
    data = _to(data, device)
    run = MemoryRunDir(Path("/run"), {**provenance, "device": device_label(device), "torch_threads": threads},
                       (pretrained or {}).get("files"), shared=Path(shared) if shared else None)
    ctx = RunContext(cfg, data, run, device, False, {}, data_id)
    if pretrained and pretrained.get("encoder") is not None:
        ctx.stacks[seed] = StackedEncoder.from_bytes(pretrained["encoder"], map_location=device)
    start = time.perf_counter()
    if kind == "pretrain":
        try:
            pretrain_stage(ctx, seed)
        except TrainingDiverged:
            pass   # its failed record is among the files; the arms built on it fail in turn
        encoder = run.files.get(run.encoder_path(seed).relative_to(run.root).as_posix())
        return {"files": run.files, "encoder": encoder, "node": _node(), "seconds": time.perf_counter() - start}
    given = set((pretrained or {}).get("files", {}))
    run_stage(ctx, seed, budget, arm)
    files = {path: blob for path, blob in run.files.items() if path not in given}
    return {"files": files, "node": _node(), "seconds": time.perf_counter() - start}


def _to(data, device: torch.device):
    import dataclasses
    return dataclasses.replace(data, **{f.name: getattr(data, f.name).to(device) for f in dataclasses.fields(data)
                                        if isinstance(getattr(data, f.name), torch.Tensor)})


def _node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray, which is not installed: {INSTALL_RAY}") from None
    return ray


def start_ray(ray, workers: int, address: str) -> bool:
    """Join `address`, or start Ray here with `workers` CPUs; True when this call started it."""
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    with _keep_sigterm_handler():
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:   # "local": a new instance here, not one that `ray start` (or a crashed run) left behind
                ray.init(address="local", num_cpus=workers, **kwargs)
        except ConnectionError as err:
            raise ExecutorError(f"--address {address}: no Ray cluster answered ({err})") from None
    return True


@contextlib.contextmanager
def _keep_sigterm_handler():
    """ray.init installs a SIGTERM handler in the driver that exits at once (status 1). Put back a Python handler
    that was there before (`sae run` installs one), so that SIGTERM stops a Ray run like Ctrl-C: Ray shut down,
    status 143, the resume hint. The default disposition is left to Ray's handler, which shuts Ray down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


def worker_threads(workers: int, address: str) -> int:
    """Each local worker's share of this machine's cores as torch threads (1 when workers = cores)."""
    return 1 if address else max(1, (os.cpu_count() or 1) // max(workers, 1))


def run_ray(ctx: RunContext, settings, progress: bool, threads: int | str | None = None) -> dict[str, str]:
    """Every stage as a Ray task; the driver writes each stage's files as it finishes. Returns the
    placement of every computed stage (stage key -> node:pid). Each task trains with `threads` torch threads
    when that is a number (`--threads N`), else with its worker's share of the cores (`worker_threads`)."""
    ray = _import_ray()
    workers = settings.workers or (os.cpu_count() or 1)
    if not isinstance(threads, int):
        threads = worker_threads(workers, settings.address)
    started = start_ray(ray, workers, settings.address)
    try:
        _check_gpus(ray, settings)
        return _submit_and_collect(ray, ctx, settings, threads, progress)
    finally:
        if started:
            ray.shutdown()


def _check_gpus(ray, settings) -> None:
    """Stages that reserve a GPU would wait for ever, in silence, on a cluster without one: refuse them."""
    if settings.gpus_per_stage <= 0:
        return
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus < settings.gpus_per_stage:
        where = f"the cluster at {settings.address}" if settings.address else "Ray on this machine"
        raise ExecutorError(f"run.gpus_per_stage = {settings.gpus_per_stage:g} (--gpus-per-stage): each stage "
                            f"reserves that much of a GPU, but {where} has {gpus:g} GPU(s); run without it to "
                            f"train on CPU workers, or on a machine or cluster with a GPU")


def _submit_and_collect(ray, ctx: RunContext, settings, threads: int, progress: bool) -> dict[str, str]:
    cfg, run = ctx.cfg, ctx.run
    task = ray.remote(stage_task).options(num_cpus=1, num_gpus=settings.gpus_per_stage, max_retries=3)
    device = "cuda" if settings.gpus_per_stage > 0 else "cpu"
    common = (cfg.to_dict(), ray.put(_to(ctx.data, torch.device("cpu"))))
    shared = str(run.root.resolve()) if settings.shares_run_folder() else None
    extra = (threads, device, run.provenance, ctx.data_id, shared)
    pending, encoders, waits_on = {}, {}, {}
    todo = [stage for stage in arm_stages(cfg) if load_arm_record(run, cfg, *stage, ctx.data_id) is None]
    ctx.counts["reused"] += len(arm_stages(cfg)) - len(todo)
    # as run_local does: a seed's pretraining runs when its record is not today's, or when an arm that starts from
    # it has to train (a finished one whose encoder file is gone, as in the reference runs, trains again then only)
    needed = {seed for seed, _, arm in todo if arm in NEEDS_PRETRAINING} | set(unrecorded_pretrainings(run, cfg,
                                                                                                    ctx.data_id))
    for seed in (s for s in pretrained_seeds(cfg) if s in needed):
        encoders[seed] = _cached_pretraining(run, cfg, seed, ctx.data_id)
        if encoders[seed] is None:
            ref = task.remote(*common, ("pretrain", seed, None, None), None, *extra)
            encoders[seed], pending[ref] = ref, pretrain_key(seed)
            ctx.counts["pretrain computed"] += 1
    for seed, budget, arm in todo:
        key = arm_key(seed, budget, arm)
        dependency = encoders.get(seed) if arm in NEEDS_PRETRAINING else None
        ref = task.remote(*common, ("arm", seed, budget, arm), dependency, *extra)
        pending[ref] = key
        if dependency is not None and not isinstance(dependency, dict):   # a pretraining task still to finish
            waits_on[ref] = dependency
        ctx.counts["computed"] += 1
    slots = max(1, int(ray.cluster_resources().get("GPU" if settings.gpus_per_stage else "CPU", 1)
                       / (settings.gpus_per_stage or 1)))
    describe = None if progress else kept_progress(cfg, run.root, ctx.data_id)   # a log: say how stages go
    return _collect(ray, run, pending, cfg.name, progress, waits_on, slots, describe)


def kept_progress(cfg, run_root: Path, data_id: str):
    """A function giving {stage key: how far it got} for the unfinished stages whose progress partial/ keeps
    (what `sae status` says of them): the driver reads it while Ray workers train."""
    def describe() -> dict[str, str]:
        from .status import describe_progress, stage_status
        return {stage["key"]: describe_progress(stage["progress"])
                for stage in stage_status(cfg, run_root, data_id) if "progress" in stage}
    return describe


def _cached_pretraining(run: RunDir, cfg, seed: int, data_id: str) -> dict | None:
    """A finished pretraining as a task would return it (its record and encoder), or None to compute it."""
    key = pretrain_key(seed)
    record = load_pretrain_record(run, cfg, seed, data_id)
    path = run.encoder_path(seed)
    if record is None or (record.get("status") == "ok" and not path.is_file()):
        return None
    stage_file = run.stage_path(key).relative_to(run.root).as_posix()
    encoder = path.read_bytes() if record.get("status") == "ok" else None
    return {"files": {stage_file: run.stage_path(key).read_bytes()}, "encoder": encoder}


def stage_counts(pending, waits_on: dict, slots: int) -> tuple[int, int]:
    """(running, queued) of the unfinished stages: those whose pretraining has finished (or that need none)
    fill the cluster's `slots` first; the rest, and the ready ones beyond the slots, wait."""
    ready = sum(1 for ref in pending if waits_on.get(ref) not in pending)
    running = min(ready, slots)
    return running, len(pending) - running


def _collect(ray, run: RunDir, pending: dict, name: str, progress: bool, waits_on: dict | None = None,
             slots: int = 1, describe=None) -> dict[str, str]:
    """Write each stage's files as its task finishes, then drop what the stage kept in partial/ (by its workers,
    or by an earlier run of the folder that stopped inside it). With `describe` (see kept_progress), log the
    progress of the unfinished stages every PROGRESS_EVERY_S without one finishing."""
    from tqdm.auto import tqdm
    placement, waits_on = {}, waits_on or {}
    bar = tqdm(total=len(pending), desc=name, unit="stage", disable=not progress)
    bar.set_postfix_str("{} running, {} queued".format(*stage_counts(pending, waits_on, slots)))
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S if describe else None)
            if not ready:
                kept = describe()
                for key in sorted(set(pending.values()) & set(kept)):
                    log.info("%s: in progress: %s", key, kept[key])
                continue
            (ref,) = ready
            key, out = pending.pop(ref), ray.get(ref)
            for relative, blob in out["files"].items():
                atomic_write(run.root / relative, blob)
            run.clear_points(key)
            placement[key] = out["node"]
            log.info("%s: done on %s in %.1f s", key, out["node"], out["seconds"])
            bar.update()
            bar.set_postfix_str("{} running, {} queued".format(*stage_counts(pending, waits_on, slots)))
    finally:
        bar.close()
    return placement
