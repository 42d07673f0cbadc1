"""Run a pipeline: seeds x label budgets x arms, each stage cached in the run directory.

`run_pipeline(load_config("pipelines/quickstart.toml"), "runs/quickstart")` pretrains once per
seed, fine-tunes every arm on the same labeled subset with the same budget and grid (each arm
picks its own learning rate on validation), reads the test split once per kept model, and
writes the tables described in docs/run-directory.md. A rerun skips finished stages.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import platform
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.conv import map_shapes
from ..core.data import IMAGE_SHAPES, Dataset
from ..core.files import NPZ_ERRORS, atomic_write, read_npz
from ..core.pretrain_config import conv_specs
from ..core.train import device_label, resolve_device
from ..core.version import __version__
from .arms import PROTOCOL, SKLEARN_ARMS, RunContext, restore_encoder
from .config import ConfigError, PipelineConfig, from_dict
from .executors import current_records, pretrained_seeds, run_local, run_ray
from .rundir import RunDir, dataset_fingerprint, hold, write_json, write_tables

log = logging.getLogger(__name__)

RUN_FILES = ("stages", "partial", "encoders", "models", "predictions", "figures", "results.csv", "history.csv",
             "pretrain.csv", "samples.npz", "manifest.json", "config.json", "report.md", "report.html")


class RunDirError(ValueError):
    """The output path exists and is not a folder."""


def run_pipeline(cfg: PipelineConfig, out_dir=None, *, data_root=None, device="auto", force: bool = False,
                 progress: bool = True, threads: int | str | None = None,
                 figures_current: Callable[[Path], bool] | None = None) -> pd.DataFrame:
    """Run (or resume) every stage of `cfg` into `out_dir`; returns the results table.

    `threads` sets torch's CPU threads for the run: an int, "auto" (see `auto_threads`), or
    None to leave torch's setting alone. `figures_current(run_dir)` says whether the folder's autoencoder
    figures are drawn from its current files; when it is given and says no, and no seed's checkpoint is
    left to draw them from, the first seed's pretraining is run again to write its encoder (see
    `restore_encoder`). While it runs, it holds the folder: another run of the same folder is refused with
    RunFolderBusy, naming the process (see `rundir.hold`)."""
    device = ray_driver_device(device, cfg.run.gpus_per_stage) if cfg.run.executor == "ray" else resolve_device(device)
    run = RunDir(Path(out_dir) if out_dir is not None else Path("runs") / cfg.name,
                 provenance={"stacked_ae_version": __version__, "git_commit": _git_commit(), "protocol": PROTOCOL,
                             "device": device_label(device)})
    check_run_dir(run)
    data = check_data(cfg, data_root)     # bad data fails here, before anything is written
    if note := validation_note(cfg, data):
        log.warning("%s", note)
    with hold(run.root, _command()):      # one run writes a folder at a time: a second one is refused
        return _run_held(run, cfg, data, device, force, progress, threads, figures_current)


def _run_held(run: RunDir, cfg: PipelineConfig, data, device, force: bool, progress: bool, threads,
              figures_current) -> pd.DataFrame:
    prepare_run_dir(run, cfg, force)
    data_id = dataset_fingerprint(data)
    previous_threads = torch.get_num_threads()
    if device.type == "cpu" and threads is not None:
        torch.set_num_threads(threads if threads != "auto" else auto_threads(cfg))
    run.provenance["torch_threads"] = torch.get_num_threads()   # in each stage record (Ray's tasks say their own)
    started = finished = False
    try:
        _write_start(run, cfg, data, device, data_id)    # records the threads this run trains with
        started = True
        if (run.root / "results.csv").is_file():   # config.json is today's: so are the tables, if this run is killed
            write_tables(run, *current_records(run, cfg, data_id), cfg.data.budgets, cfg.arms)
        ctx = RunContext(cfg, _to_device(data, device), run, device, progress, {}, data_id)
        if cfg.run.executor == "ray":
            placement = run_ray(ctx, cfg.run, progress, threads)
        else:
            placement = run_local(ctx, progress)
        if figures_current is not None and not figures_current(run.root):
            _restore_figure_encoder(ctx)
        finished = True
    finally:   # the caller's thread setting is theirs: restore it, also after an error or Ctrl-C
        torch.set_num_threads(previous_threads)
        if started and not finished:
            _write_tables_of_a_stopped_run(run, cfg, data_id)
    records = current_records(run, cfg, data_id)
    results = write_tables(run, *records, cfg.data.budgets, cfg.arms)
    ctx.counts["pretrain reused"] = len(pretrained_seeds(cfg)) - ctx.counts["pretrain computed"]
    # computed / reused stages of this invocation, pretraining counted apart
    results.attrs["stages"] = {k: ctx.counts[k] for k in ("computed", "reused", "pretrain computed", "pretrain reused")}
    _write_finish(run, dataclasses.asdict(cfg.run), placement, *records)
    return results



def _write_tables_of_a_stopped_run(run: RunDir, cfg: PipelineConfig, data_id: str) -> None:
    """A run stopped by Ctrl-C, SIGTERM or an error keeps its finished stages; the tables list them too, so that
    `sae report` on the folder shows what is finished (and names what is not) rather than an earlier invocation's
    tables or none. Best effort: a failure here is logged and never hides why the run stopped."""
    try:
        write_tables(run, *current_records(run, cfg, data_id), cfg.data.budgets, cfg.arms)
    except Exception as error:   # the run's own exception is the one to raise
        log.warning("could not write the tables of the stopped run in %s: %s", run.root, error)


def ray_driver_device(device, gpus_per_stage: float) -> torch.device:
    """On Ray a stage trains on a GPU exactly when it reserves one (`run.gpus_per_stage` > 0): a device asked for
    that says otherwise is refused rather than silently overruled. Returns the driver's own device (the stages'
    kind where this machine has it, else cpu), which Ray's stages do not use."""
    asked = None if device is None or device == "auto" else str(device)
    kind = asked.split(":")[0] if asked else None
    if kind not in (None, "cpu", "cuda"):
        raise ValueError(f"--device {asked}: stages on Ray train on cpu or, with --gpus-per-stage, on cuda")
    if kind == "cuda" and not gpus_per_stage > 0:
        raise ValueError(f"--device {asked} with --executor ray needs --gpus-per-stage (run.gpus_per_stage) > 0: a "
                         f"Ray stage sees a GPU only when it reserves one; for example --gpus-per-stage 1")
    if kind == "cpu" and gpus_per_stage > 0:
        raise ValueError(f"--device cpu contradicts --gpus-per-stage (run.gpus_per_stage) = {gpus_per_stage:g}: "
                         f"on Ray, stages that reserve a GPU train on it")
    if gpus_per_stage > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _restore_figure_encoder(ctx: RunContext) -> None:
    """An encoder for the report's autoencoder figures, when no seed has a checkpoint left."""
    cfg, run = ctx.cfg, ctx.run
    seeds = pretrained_seeds(cfg)
    if not seeds or any(run.encoder_path(s).is_file() or run.model_path(s, "all", "pretrained").is_file()
                        for s in cfg.seeds):
        return
    if restore_encoder(ctx, seeds[0]):
        log.info("wrote %s again for the report's figures (no checkpoint was left; its stage record is kept)",
                 run.encoder_path(seeds[0]))


# ---------------------------------------------------------------- preparation

# Multiply-adds per example of a network's largest layer below which one thread is faster: splitting
# each small op costs more than it saves (a 256-wide dense layer is about 65k).
SMALL_LAYER_MACS = 1 << 18


def auto_threads(cfg: PipelineConfig) -> int:
    """One thread for small networks (every layer under SMALL_LAYER_MACS multiply-adds per example; conv
    layers on a dataset of unknown image shape count as large); otherwise torch's default (one per core)."""
    if max(cfg.model.sizes) > 256:
        return torch.get_num_threads()
    if cfg.model.conv:
        shape = IMAGE_SHAPES.get(cfg.data.dataset)
        if shape is None or max(conv_macs(cfg.model.conv, shape)) > SMALL_LAYER_MACS:
            return torch.get_num_threads()
    return 1


def conv_macs(conv, image_shape) -> list[int]:
    """Multiply-adds per example of each conv layer on images of `image_shape`."""
    specs = conv_specs(conv)
    macs = []
    for spec, shape in zip(specs, map_shapes(specs, image_shape), strict=False):
        c, h, w = spec.conv_shape(shape)
        macs.append(c * shape[0] * spec.kernel ** 2 * h * w)
    return macs


def check_run_dir(run: RunDir) -> None:
    """The output is a new folder, an empty one, or a run folder (it has config.json or manifest.json): a run,
    and --force above all, never writes over or clears a folder of other files."""
    if run.root.exists() and not run.root.is_dir():
        raise RunDirError(f"{run.root}: exists and is not a folder")
    if not run.root.is_dir() or any((run.root / name).is_file() for name in ("config.json", "manifest.json")):
        return
    others = sorted(p.name for p in run.root.iterdir() if not p.name.startswith("."))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise RunDirError(f"{run.root}: is not a run folder (no config.json or manifest.json) and holds other files "
                          f"({shown}); give --out a new or empty folder")


def prepare_run_dir(run: RunDir, cfg: PipelineConfig, force: bool) -> None:
    """Create the folder or resume in it; --force starts over.

    A finished stage is reused only while the settings it depends on are unchanged (each
    stage record carries their fingerprint): after an edit, only the affected stages rerun."""
    config_path = run.root / "config.json"
    check_run_dir(run)
    if config_path.is_file() and not force:
        previous = run.read_json("config.json")
        # [run] (how the stages run) never changes a stage: not worth a warning
        changed = sorted(k for k in _changed_keys(_read_as_today(previous), cfg.to_dict()) if not k.startswith("run."))
        if changed:
            log.warning("%s: the config changed since the last run (%s); stages that depend on it are "
                        "recomputed, the others are reused", run.root, ", ".join(changed))
    if force:
        for name in RUN_FILES:
            path = run.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    run.root.mkdir(parents=True, exist_ok=True)
    write_json(config_path, cfg.to_dict())


def _read_as_today(previous) -> dict:
    """An earlier run's config.json read by today's code: settings added since then at their defaults."""
    if not isinstance(previous, dict):
        return {}
    try:
        return from_dict(previous).to_dict()
    except ConfigError:
        return previous


def _changed_keys(old: dict, new: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k in set(old) | set(new):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.add(prefix + k)
    return keys


def check_data(cfg: PipelineConfig, data_root=None) -> Dataset:
    """Load the pipeline's data and check its label budgets against it (what `sae validate` can check)."""
    data = cfg.data.load(data_root)
    check_budgets(cfg, data)
    cfg.model.check_image_shape(data.image_shape, data.n_features, f"dataset {cfg.data.dataset!r}")
    return data


def check_budgets(cfg: PipelineConfig, data: Dataset) -> None:
    """Every label budget fits the smallest class of the training split (checked before training)."""
    counts = torch.bincount(data.y_train, minlength=data.n_classes)
    smallest = int(counts.min())
    for budget in cfg.data.budgets:
        if budget != "all" and budget > smallest:
            raise ConfigError(f"data.budgets: {budget} labels per class, but the smallest class of the training "
                              f"split has {smallest} examples")


def validation_note(cfg: PipelineConfig, data: Dataset) -> str:
    """What a user should know before training when an integer `data.val_per_class` exceeds a class of the
    validation split (that class gives all it has), or exceeds a label budget (selection then sees more
    validation labels than training labels, which the report calls optimistic); "" otherwise."""
    k = cfg.data.val_per_class
    if cfg.task != "classification" or not isinstance(k, int) or isinstance(k, bool):
        return ""
    notes = []
    smallest = int(torch.bincount(data.y_val, minlength=data.n_classes).min())
    if k > smallest:
        notes.append(f"the smallest class of the validation split has {smallest} examples, so that class gives "
                     f"all it has")
    above = [str(b) for b in cfg.data.budgets if b != "all" and k > b]
    if above:
        notes.append(f"at budget{'s' if len(above) > 1 else ''} {', '.join(above)} model selection sees more "
                     f"validation labels than training labels (the report calls those results optimistic)")
    return f"data.val_per_class = {k}: " + "; ".join(notes) if notes else ""


def _to_device(data: Dataset, device: torch.device) -> Dataset:
    tensors = {f.name: getattr(data, f.name).to(device) for f in dataclasses.fields(data)
               if isinstance(getattr(data, f.name), torch.Tensor)}
    return dataclasses.replace(data, **tensors)


UNRECORDED = "not recorded"   # stage_devices' key for records made before stage records named their device

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # stacked_ae/


def _git(*args: str, cwd: Path = PACKAGE_DIR) -> str | None:
    """Output of a git command run in `cwd` (default: the package's checkout), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


def _git_dirty(package_dir: Path = PACKAGE_DIR) -> bool | None:
    """Whether the package's tracked source differs from the commit: the code that ran is then not the commit's.

    Only the package's own folder counts. Run folders kept in the repository (reports/) and edited pipeline
    files do not: a run writes the former itself, and config.json records the latter in full."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", cwd=package_dir)
    return None if status is None else bool(status)


def _command() -> str:
    """This process's command line, with the launcher named as a user would type it."""
    launcher = Path(sys.argv[0]).name
    launcher = "python -m stacked_ae" if launcher == "__main__.py" else launcher
    return " ".join([launcher, *sys.argv[1:]])


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _write_start(run: RunDir, cfg: PipelineConfig, data: Dataset, device: torch.device, data_id: str) -> None:
    previous = run.read_json("manifest.json")
    command, commit, dirty = _command(), _git_commit(), _git_dirty()
    manifest = {"stacked_ae_version": __version__, "torch_version": torch.__version__,
                "python_version": platform.python_version(), "platform": platform.platform(),
                "git_commit": commit, "git_dirty": dirty, "device": device_label(device),
                "torch_threads": torch.get_num_threads(), "started": previous.get("started", _now()), "finished": None,
                "command": command,
                # every invocation that worked on this folder; a resumed run's stages come from several
                "invocations": [*previous.get("invocations", []),
                                {"command": command, "started": _now(), "git_commit": commit,
                                 "git_dirty": dirty, "torch_threads": torch.get_num_threads()}],
                "dataset": {"name": data.name, "n_train": len(data.X_train), "n_val": len(data.X_val),
                            "n_test": len(data.X_test), "n_features": data.n_features,
                            "image_shape": list(data.image_shape or []), "classes": list(data.classes),
                            "fingerprint": data_id}}
    write_json(run.root / "manifest.json", manifest)
    if _samples_fingerprint(run) != data_id:   # missing, or drawn from other data: the figures would be stale
        _write_samples(run, data, data_id)


def _samples_fingerprint(run: RunDir) -> str | None:
    """The data fingerprint samples.npz was drawn from (None when missing, damaged or older: then it is redrawn).

    Every member is read, so that a file damaged past its first member is found too."""
    try:
        arrays = read_npz(run.root / "samples.npz")
    except NPZ_ERRORS:
        return None
    return str(arrays["data_fingerprint"]) if "data_fingerprint" in arrays else None


def _write_samples(run: RunDir, data: Dataset, data_id: str, n: int = 2000) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=data.X_test[:n].numpy(), y=data.y_test[:n].numpy(), y_test=data.y_test.numpy(),
                        image_shape=np.array(data.image_shape or [], dtype=np.int64), classes=np.array(data.classes),
                        data_fingerprint=np.array(data_id))
    atomic_write(run.root / "samples.npz", buffer.getvalue())


def _write_finish(run: RunDir, executor: dict, placement: dict[str, str], arm_records: list[dict],
                  pretrain_records: list[dict]) -> None:
    """Finish the manifest: the executor, where stages ran, and the wall time and devices of the stages of this
    pipeline's graph (not of records left from other settings)."""
    manifest = run.read_json("manifest.json")
    manifest["executor"] = executor
    manifest["placement"] = {**manifest.get("placement", {}), **placement}   # stage key -> node:pid (Ray)
    seconds = {"pretrain": 0.0, "finetune": 0.0, "baselines": 0.0}
    for record in pretrain_records:
        seconds["pretrain"] += record.get("wall_seconds", 0.0)
    for record in arm_records:
        kind = "baselines" if record["result"]["arm"] in SKLEARN_ARMS else "finetune"
        seconds[kind] += record["result"].get("wall_seconds") or 0.0
    # a resumed run's stages may come from several devices (a GPU machine, then a CPU one): count each
    devices = Counter(record.get("device", UNRECORDED) for record in [*pretrain_records, *arm_records])
    manifest.update(finished=_now(), stage_seconds={k: round(v, 1) for k, v in seconds.items()},
                    stage_devices=dict(sorted(devices.items())))
    write_json(run.root / "manifest.json", manifest)
