"""Which stages of a run folder are finished, missing, failed, or would rerun because the settings,
the data or the code changed since they ran (`sae status RUN_DIR [PIPELINE]`).

Reads only the run folder (and the pipeline file, if given): nothing is trained. An unfinished stage's
progress kept in partial/ (learning rates or layers finished, the epoch of the one in training) is read
without loading its weights.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..core.data import KNOWN_DATASETS
from ..core.files import load_stamped, read_json_object
from .arms import (
    NEEDS_PRETRAINING,
    SKLEARN_ARMS,
    arm_fingerprint,
    arm_stamps,
    extension_rates,
    load_arm_record,
    pretrain_stamps,
)
from .config import PipelineConfig, from_dict
from .rundir import RunDir, arm_key, budget_label, pretrain_key

STATES = ("finished", "failed", "stale", "missing")


def read_run_config(run_dir: Path) -> PipelineConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json); run `sae run` first")
    return from_dict(read_json_object(path))


# The [data] settings that decide which examples a run reads (budgets and val_per_class only pick among them,
# and enter the stages' own fingerprints); `root` and `download` say where the same files are.
DATA_KEYS = ("dataset", "val_size", "test_size", "split_seed", "label_column")


def data_id_for(cfg: PipelineConfig, run_dir: Path, data_root=None) -> tuple[str, str | None]:
    """(the data fingerprint to judge the stages by, a note or None). The run's recorded fingerprint while the
    pipeline's [data] settings that shape the data match the run's; else the data are read (from `data_root`)
    and fingerprinted, as `sae run` would, and where they cannot be read every recorded stage counts as one
    that would rerun, and the note says why."""
    run = RunDir(Path(run_dir))
    recorded = _recorded_data_id(run)
    before = run.read_json("config.json").get("data") or {}
    now = cfg.to_dict()["data"]
    changed = [f"data.{k}" for k in DATA_KEYS if k in before and before[k] != now[k]]
    user_file = cfg.data.dataset not in KNOWN_DATASETS   # its contents can change under the same name
    if not changed and recorded and not user_file:
        return recorded, None
    from .rundir import dataset_fingerprint
    what = (f"{', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} from the run's" if changed else
            "manifest.json records no data fingerprint (missing or damaged)" if not recorded else
            f"{cfg.data.dataset} is read on every look (a file's contents may change)")
    try:
        data_id = dataset_fingerprint(cfg.data.load(data_root))
    except (OSError, ValueError) as err:
        reason = " ".join(str(err).split())   # one line: DataNotFoundError's message lists places line by line
        if not changed and recorded:   # a user file moved or gone: `sae run` would stop, not rerun anything
            return recorded, (f"{cfg.data.dataset} could not be read to check its contents ({reason}); the stages "
                              f"are judged by the data fingerprint the run recorded, and `sae run` needs the file")
        return "unread", (f"{what} and the data could not be read to compare ({reason}); every stage is counted as "
                          f"one that would rerun (--data-root names the data folder)")
    if not changed and recorded:   # a user file under unchanged settings: a note only when its contents changed
        return data_id, None if data_id == recorded else (
            f"the contents of {cfg.data.dataset} changed since the run used it: every stage would rerun")
    if not recorded:   # the stage records still name the data they were made from, as `sae run` will see
        return data_id, f"{what}; the data were read and fingerprinted to judge the stages"
    same = "the same data" if data_id == recorded else "other data: every stage would rerun"
    return data_id, f"{what}; read and fingerprinted: {same}"


def _recorded_data_id(run: RunDir) -> str:
    """The data fingerprint the run's manifest recorded ('' if none)."""
    dataset = run.read_json("manifest.json").get("dataset")
    return str(dataset.get("fingerprint") or "") if isinstance(dataset, dict) else ""


def stage_status(cfg: PipelineConfig, run_dir: Path, data_id: str | None = None) -> list[dict]:
    """One entry per stage of `cfg`: key, seed, budget, arm (None for pretraining) and state, one of STATES.

    `stale`: a record exists but was made under other settings, data or code, so a run would redo it. The
    data are identified by `data_id` (default: the fingerprint the run's manifest recorded; see `data_id_for`
    when the pipeline's [data] settings differ from the run's).
    A stage not finished but with progress kept under today's settings has `progress`: {"unit": "learning
    rates" or "layers", "done": n, "of": N, "training": None or {"lr" or "layer": ..., "epoch": e,
    "epochs": E}}. A stage counted stale for another reason than its record says why in `reason`."""
    run = RunDir(Path(run_dir))
    if data_id is None:
        data_id = _recorded_data_id(run)
    stages = []
    for seed in cfg.seeds:
        pretraining = None
        if any(arm in NEEDS_PRETRAINING for arm in cfg.arms):
            key, stamps = pretrain_key(seed), pretrain_stamps(cfg, seed, data_id)
            stages.append(pretraining := _state(run, key, stamps, seed=seed, budget=None, arm=None))
            if stages[-1]["state"] in ("missing", "stale"):   # progress is kept under today's stamp only
                _add(stages[-1], _layers_kept(run, key, stamps[0], cfg))
        first_arm = len(stages)
        for budget in cfg.data.budgets:
            for arm in cfg.arms:
                key = arm_key(seed, budget, arm)
                stages.append(_state(run, key, arm_stamps(cfg, seed, budget, arm, data_id),
                                     seed=seed, budget=budget_label(budget), arm=arm))
                if stages[-1]["state"] == "stale":   # a record today's settings would reproduce (a higher extend
                    #                                        or epoch cap that it did not reach) counts as finished
                    record = load_arm_record(run, cfg, seed, budget, arm, data_id)
                    if record is not None:
                        stages[-1]["state"] = "failed" if _failed(record) else "finished"
                if stages[-1]["state"] in ("missing", "stale") and arm not in SKLEARN_ARMS:
                    _add(stages[-1], _rates_kept(run, key, cfg.finetune.grid(arm), cfg.finetune.epochs,
                                                 extension_rates(cfg.finetune.grid(arm), cfg.finetune.extend),
                                                 lambda lr, s=seed, b=budget, a=arm:
                                                 arm_fingerprint(cfg, s, b, a, data_id, lr)))
        if pretraining is not None:
            _encoder_gone(run, seed, pretraining, stages[first_arm:])
    return stages


def _encoder_gone(run: RunDir, seed: int, pretraining: dict, arms: list[dict]) -> None:
    """A finished pretraining whose encoder file is gone (reference runs ship without checkpoints) is trained
    again by `sae run` as soon as an arm that starts from it has to train: count it as one that would rerun then,
    with the reason, as `arms.pretrain_stage` decides."""
    if pretraining["state"] != "finished" or run.encoder_path(seed).is_file():
        return
    waiting = [a["key"] for a in arms if a["arm"] in NEEDS_PRETRAINING and a["state"] in ("missing", "stale")]
    if waiting:
        more = f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""
        pretraining["state"] = "stale"
        pretraining["reason"] = (f"would rerun: its encoder file {run.encoder_path(seed).relative_to(run.root)} is "
                                 f"gone, and {waiting[0]}{more} start(s) from it")


def _add(stage: dict, progress: dict | None) -> None:
    if progress is not None:
        stage["progress"] = progress


def _peek(path: Path, stamp: str, key: str) -> dict | None:
    """A kept file's small entries if it was kept under `stamp`; its tensors are mapped, not read."""
    return load_stamped(path, stamp, key, mmap=True, warn=False)


def _rates_kept(run: RunDir, key: str, grid, epochs: int, beyond, stamp) -> dict | None:
    """Progress of a network arm's stage: its grid's rates finished, and those tried beyond the grid (`beyond`:
    the values `finetune.extend` may try), which count only once they have been started; for each finished
    rate and the one in training, the best validation score so far and its epoch."""
    rates = [*grid, *beyond]
    kept = {lr: point for lr in rates if (point := _peek(run.point_path(key, lr), stamp(lr), "fingerprint"))}
    training = None
    for lr in rates:
        state = _peek(run.epochs_path(key, lr), stamp(lr), "stamp")
        if state is not None and lr not in kept:
            training = {"lr": lr, "epoch": int(state["epoch"]), "epochs": epochs, **_best_so_far(state)}
    if not kept and training is None:
        return None
    started = [lr for lr in beyond if lr in kept or (training and training["lr"] == lr)]
    return {"unit": "learning rates", "done": len(kept), "of": len(grid) + len(started), "training": training,
            **({"beyond_grid": len(started)} if started else {}),
            "rates": [{"lr": lr, **_kept_score(point)} for lr, point in kept.items()]}


SCORES = ("val_error", "val_sse", "val_loss")   # the score status shows: the first a history row has


def _score(row: dict | None) -> dict:
    """{"best_epoch", "score", "value"} of a history row (the best epoch's), or {} without one."""
    for name in SCORES if row else ():
        if isinstance(row.get(name), (int, float)):
            return {"best_epoch": int(row["epoch"]), "score": name, "value": float(row[name])}
    return {}


def _best_so_far(state: dict) -> dict:
    """The best epoch and score of a training state kept mid-run (none before validation has run)."""
    best = state.get("best_epoch")
    return _score(next((row for row in state.get("history") or [] if row.get("epoch") == best), None))


def _kept_score(point: dict) -> dict:
    """A finished rate's best epoch and score, from the record kept beside its weights."""
    try:
        record = json.loads(point["record"])
    except (KeyError, TypeError, ValueError):
        return {}
    if "diverged" in record:
        return {"diverged": True}
    return _score(next((row for row in record.get("rows") or [] if row.get("best")), None))


def _layers_kept(run: RunDir, key: str, stamp: str, cfg: PipelineConfig) -> dict | None:
    folder, n = run.points_dir(key), cfg.model.n_layers
    done = [k for k in range(1, n + 1) if _peek(folder / f"layer{k}.pt", stamp, "stamp")]
    training = None
    for k in range(1, n + 1):
        state = _peek(folder / f"layer{k}.epochs.pt", stamp, "stamp")
        if state is not None and k not in done:
            epochs = cfg.pretrain_config().train_config(k - 1).epochs
            training = {"layer": k, "epoch": int(state["epoch"]), "epochs": epochs, **_best_so_far(state)}
    if not done and training is None:
        return None
    return {"unit": "layers", "done": len(done), "of": n, "training": training}


def describe_progress(progress: dict) -> str:
    """'2 of 3 learning rates finished (lr 0.001: val error 0.0904 at epoch 43; lr 0.003: val error 0.0882 at
    epoch 50); lr 0.01 kept after epoch 14 of 50, best val error 0.0951 at epoch 14'."""
    text = f"{progress['done']} of {progress['of']} {progress['unit']} finished"
    rates = [f"lr {r['lr']:g}: {'diverged' if r.get('diverged') else _describe_score(r)}"
             for r in progress.get("rates", []) if r.get("diverged") or "score" in r]
    notes = ([f"{progress['beyond_grid']} beyond the grid"] if progress.get("beyond_grid") else []) + rates
    if notes:
        text += f" ({'; '.join(notes)})"
    training = progress["training"]
    if training is not None:
        what = f"lr {training['lr']:g}" if "lr" in training else f"layer {training['layer']}"
        text += f"; {what} kept after epoch {training['epoch']} of {training['epochs']}"
        if "score" in training:
            text += f", best {_describe_score(training)}"
    return text


def _describe_score(score: dict) -> str:
    return f"{score['score'].replace('_', ' ')} {score['value']:.4g} at epoch {score['best_epoch']}"


def _state(run: RunDir, key: str, stamps: tuple[str, ...], **where) -> dict:
    """The stage's state; its record is today's if stamped with one of `stamps` (today's, the legacy form)."""
    path = run.stage_path(key)
    if not path.is_file():
        return {"key": key, **where, "state": "missing"}
    record = run.read_stage(key)   # None: damaged or not a record (a list, a number): the stage is redone
    if record is None or record.get("fingerprint") not in stamps:
        return {"key": key, **where, "state": "stale"}
    return {"key": key, **where, "state": "failed" if _failed(record) else "finished"}


def _failed(record: dict) -> bool:
    return record.get("status") == "failed" or (record.get("result") or {}).get("status") == "failed"


def count_states(stages: list[dict]) -> dict[str, int]:
    counts = Counter(stage["state"] for stage in stages)
    return {state: counts.get(state, 0) for state in STATES}
