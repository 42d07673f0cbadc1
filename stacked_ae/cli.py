"""The `sae` command (also `python -m stacked_ae`).

    sae run pipelines/quickstart.toml [--set pretrain.epochs=5] [--out DIR] [--force]
    sae report runs/quickstart          sae validate FILE...       sae datasets
    sae status runs/quickstart [pipelines/quickstart.toml] [--json]
    sae encode --model runs/x/encoders/seed0.pt --input X.npy --output codes.npy

Bad input ends with a one-line error and exit status 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

from .core.version import __version__

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae", description="Greedy layer-wise autoencoder pretraining, "
                                     "compared with random initialisation.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--version", action="version", version=f"sae (stacked-ae) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a pipeline file")
    run.add_argument("file", help="pipeline file (TOML)")
    _add_overrides(run)
    run.add_argument("--data-root", help="folder with the dataset files (else data.root or $STACKED_AE_DATA)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                     help="where to train (default auto: cuda, then mps, then cpu)")
    run.add_argument("--precision", choices=["fp32", "bf16"],
                     help="shorthand for --set pretrain.precision=P --set finetune.precision=P (bf16: autocast "
                          "training steps; pays on GPUs and on CPUs with AMX)")
    run.add_argument("--out", help="run folder (default runs/<name>)")
    run.add_argument("--force", action="store_true", help="discard finished stages and start over")
    run.add_argument("--quiet", action="store_true", help="no progress output (bars on a terminal, log lines "
                     "otherwise)")
    run.add_argument("--threads", default="auto", help="CPU threads: a number, or auto (1 for networks no "
                     "wider than 256 units whose conv layers are small, under 2^18 multiply-adds an image; else one "
                     "per core)")
    run.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="local: every stage in this process (the default); ray: stages as Ray tasks "
                          "(same as --set run.executor=...)")
    run.add_argument("--workers", type=int, help="ray: worker processes to start on this machine, each with its "
                     "share of the cores as torch threads (default: one per core)")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                     help="ray: join this cluster (auto, or host:port; default $RAY_ADDRESS) instead of starting "
                          "one here")
    run.add_argument("--gpus-per-stage", type=float, help="ray: GPUs per stage; a fraction lets stages share one")

    validate = sub.add_parser("validate", help="check pipeline files (settings, data, label budgets) without "
                              "running them")
    validate.add_argument("files", nargs="+", metavar="file", help="pipeline files (TOML)")
    _add_overrides(validate)
    validate.add_argument("--data-root", help="folder with the dataset files (else data.root or $STACKED_AE_DATA)")

    report = sub.add_parser("report", help="render report.md/report.html from run folders")
    report.add_argument("run_dirs", nargs="+", metavar="run_dir", help="run folders (several: side by side)")
    report.add_argument("--out", help="folder for a side-by-side report of several runs (default: "
                        "comparison/ beside the first run)")

    status = sub.add_parser("status", help="which stages of a run folder are finished, missing, failed or would "
                            "rerun")
    status.add_argument("run_dir", help="run folder")
    status.add_argument("file", nargs="?", help="pipeline file to compare with (default: the run's config.json)")
    _add_overrides(status)
    status.add_argument("--data-root", help="folder with the dataset files (else $STACKED_AE_DATA): read only when "
                        "the pipeline's [data] settings differ from the run's, to tell whether the data changed")
    status.add_argument("--json", action="store_true", help="print the stages as JSON, for scripts")

    datasets = sub.add_parser("datasets", help="list the known datasets and where each is looked for")
    datasets.add_argument("--data-root", help="folder with the dataset files (else $STACKED_AE_DATA)")

    encode = sub.add_parser("encode", help="encode a data file with a saved encoder")
    encode.add_argument("--model", required=True, help="encoder file (StackedEncoder.save, runs/*/encoders/*.pt)")
    encode.add_argument("--input", required=True, help=".npy, .npz, .csv or .parquet: a table of rows, or images "
                        "(n, height, width) or (n, channels, height, width) in .npy/.npz")
    encode.add_argument("--output", required=True, help=".npy or .parquet")
    encode.add_argument("--batch-size", type=int, default=None,
                        help="rows encoded at a time (default: 8192, fewer for conv models with large maps)")
    encode.add_argument("--label-column", default="label", help="column to drop from .csv/.parquet input")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. --set pretrain.epochs=5")


def cmd_run(args) -> int:
    from .pipeline.config import load_config
    from .pipeline.runner import run_pipeline
    from .report.figures import record_is_current
    overrides = list(args.overrides)
    if args.precision:
        overrides += [f"pretrain.precision={args.precision}", f"finetune.precision={args.precision}"]
    if args.workers is not None and args.workers < 0:   # checked here: the config's message would name --set
        raise ValueError(f"--workers must be a count >= 0 (0: one per core), got {args.workers}")
    if args.gpus_per_stage is not None and not 0.0 <= args.gpus_per_stage < math.inf:
        raise ValueError(f"--gpus-per-stage must be a finite number >= 0 (a fraction lets stages share a GPU), "
                         f"got {args.gpus_per_stage}")
    for key, value in (("executor", args.executor), ("workers", args.workers), ("gpus_per_stage", args.gpus_per_stage)):
        if value is not None:
            overrides.append(f"run.{key}={value}")
    if args.address:
        overrides.append(f'run.address="{args.address}"')
    cfg = load_config(args.file, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    bars = not args.quiet and sys.stderr.isatty()    # a log file gets plain lines, not redrawn bars
    received: list[int] = []
    try:
        with _log_stages(not args.quiet and not bars), _terminate_like_ctrl_c(received):
            results = run_pipeline(cfg, out, data_root=args.data_root, device=args.device, force=args.force,
                                   progress=bars, threads=_threads(args.threads),
                                   figures_current=None if args.no_report else record_is_current)
    except KeyboardInterrupt:
        again = "the same command without --force" if args.force else "the same command"   # --force would discard them
        how = "terminated" if received else "interrupted"
        print(f"\n{how}: finished stages are kept in {out}; run {again} again to resume", file=sys.stderr)
        return 128 + int(signal.SIGTERM) if received else 130
    report_path = None
    if not args.no_report:
        report_path = _render(out)
    print(summarize(cfg, results, out, report_path))
    return 0


@contextlib.contextmanager
def _terminate_like_ctrl_c(received: list):
    """Let SIGTERM stop a run the way Ctrl-C does: the stage in progress is abandoned, finished stages are
    kept, Ray is shut down, and the exit status is 143. (A shell starts background jobs with SIGINT ignored,
    so `kill -TERM` is how one stops `nohup sae run ... &`.) The signal is noted in `received`: the
    KeyboardInterrupt raised here can reach the caller as a new one (Ray's blocking calls re-raise it)."""
    if threading.current_thread() is not threading.main_thread():
        yield           # signal handlers belong to the main thread; elsewhere SIGTERM keeps its default
        return

    def stop(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


HEARTBEAT_SECONDS = 120.0   # in a log, a training run's epoch lines come at most this often


@contextlib.contextmanager
def _log_stages(on: bool):
    """Plain lines on stderr for logs and pipes, where progress bars are noise: one per finished stage, and,
    for a stage still training, an epoch line at most every HEARTBEAT_SECONDS (stages run in this process).
    The loggers are as they were afterwards (main() may be called in a process that goes on)."""
    if not on:
        yield
        return
    from .core.train import HEARTBEAT
    saved = []
    for name, thin in (("stacked_ae.pipeline", None), ("stacked_ae.core", Heartbeat(HEARTBEAT_SECONDS, HEARTBEAT))):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        if thin is not None:
            handler.addFilter(thin)   # on the handler: a logger's own filters skip its children's records
        logger = logging.getLogger(name)
        saved.append((logger, handler, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False   # its own plain lines; warnings would otherwise print twice
    try:
        yield
    finally:
        for logger, handler, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


class Heartbeat(logging.Filter):
    """Lets through warnings, and a training run's epoch lines (records whose `attribute` holds the run and its
    seconds of training so far) once `seconds` more have passed in that run since the last one let through;
    the core's other progress lines stay out of the log."""

    def __init__(self, seconds: float, attribute: str):
        super().__init__()
        self.seconds, self.attribute, self.shown = seconds, attribute, {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        beat = getattr(record, self.attribute, None)
        if beat is None:
            return False
        run, seconds = beat
        if seconds - self.shown.get(run, 0.0) < self.seconds:
            return False
        self.shown[run] = seconds
        return True


def _threads(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--threads must be a positive integer or auto, got {value!r}")
    return int(value)


def _render(run_dir: Path):
    from .report.render import render_report
    return render_report(run_dir)


def summarize(cfg, results, out: Path, report_path) -> str:
    """One screen: mean test metric per budget and arm, failures, where the report is."""
    metric = "test_sse" if cfg.task == "reconstruction" else "test_error"
    ok = results[results["status"] == "ok"]
    lines = [f"{cfg.name}: {len(results)} stages ({len(ok)} ok) over {_plural(len(cfg.seeds), 'seed')} "
             f"{list(cfg.seeds)}"]
    counts = results.attrs.get("stages")
    if counts:
        lines.append(f"this invocation: {_plural(counts.get('computed', 0), 'stage')} computed, "
                     f"{counts.get('reused', 0)} reused; pretraining: "
                     f"{_plural(counts.get('pretrain computed', 0), 'seed')} computed, "
                     f"{counts.get('pretrain reused', 0)} reused")
    if len(ok):
        table = ok.assign(value=ok[metric].astype(float) * (100 if metric == "test_error" else 1))
        pivot = table.pivot_table(index="budget", columns="arm", values="value", aggfunc="mean", sort=False)
        pivot = pivot[[a for a in cfg.arms if a in pivot.columns]]
        label = "test error (%), mean over seeds" if metric == "test_error" else "test squared error per image"
        lines += [f"{label}:", pivot.to_string(float_format=lambda v: f"{v:.2f}")]
    for _, row in results[results["status"] != "ok"].iterrows():
        lines.append(f"FAILED seed {row['seed']}, budget {row['budget']}, {row['arm']}: {row['message']}")
    lines.append(f"run folder: {out}")
    if report_path:
        lines.append(f"report: {report_path}")
    return "\n".join(lines)


def _layers(cfg) -> str:
    """The model in a few words: conv layers (maps[/stride][+pool]) then the dense sizes."""
    conv = ", ".join(str(c["channels"]) + (f"/{c['stride']}" if c["stride"] != 1 else "")
                     + ("+pool" if c["pool"] else "") for c in cfg.model.conv)
    return (f"conv [{conv}] then " if conv else "") + f"sizes {list(cfg.model.sizes)}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def cmd_validate(args) -> int:
    """Check each file: its settings, then its data and label budgets where the data can be found."""
    from .core.data import DataNotFoundError
    from .pipeline.config import load_config
    from .pipeline.runner import check_data
    failures = 0
    for file in args.files:
        try:
            cfg = load_config(file, args.overrides)
            try:
                data = check_data(cfg, args.data_root)
                found = f"data found: {len(data.X_train):,} training images, budgets fit"
            except DataNotFoundError as err:
                found = "data not checked: " + " ".join(str(err).split())
            except ValueError as err:   # the data's own errors name the data, not the pipeline file
                if args.debug:
                    raise
                raise ValueError(f"{file}: {_message(err)}") from err
        except (ValueError, OSError) as err:
            if args.debug:
                raise
            failures += 1
            print(f"sae: error: {_message(err)}", file=sys.stderr)
            continue
        print(f"{file}: ok ({cfg.task}, {_plural(len(cfg.seeds), 'seed')}, budgets {list(cfg.data.budgets)}, "
              f"arms {list(cfg.arms)}, {_layers(cfg)}; {found})")
    return EXIT_USAGE if failures else 0


def cmd_report(args) -> int:
    from .report.render import render_report
    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not (d / "results.csv").is_file():
            raise FileNotFoundError(f"{d}: not a run folder (no results.csv); run `sae run` first")
    path = render_report(dirs if len(dirs) > 1 else dirs[0], Path(args.out) if args.out else None)
    print(f"report: {path}")
    return 0


def cmd_status(args) -> int:
    import json

    from .pipeline.config import load_config
    from .pipeline.status import count_states, describe_progress, read_run_config, stage_status
    cfg = load_config(args.file, args.overrides) if args.file else read_run_config(Path(args.run_dir))
    if not args.file and args.overrides:
        raise ValueError("--set needs a pipeline file to apply to: sae status RUN_DIR PIPELINE --set KEY=VALUE")
    from .pipeline.rundir import busy, holder, report_is_out_of_date
    from .pipeline.status import data_id_for
    data_id, data_note = data_id_for(cfg, Path(args.run_dir), args.data_root)
    stages = stage_status(cfg, Path(args.run_dir), data_id)
    counts = count_states(stages)
    running = busy(Path(args.run_dir))
    stale_report = report_is_out_of_date(Path(args.run_dir))
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "running": running,
                          "holder": holder(Path(args.run_dir)) if running else None,
                          "data": data_note, "report_out_of_date": stale_report, "counts": counts,
                          "stages": stages}, indent=2))
        return 0
    print(f"{args.run_dir}: {len(stages)} stages: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if data_note:
        print(f"  data: {data_note}")
    if running:
        print(f"  running now: {holder(Path(args.run_dir)) or 'a process holds the folder'}")
    if stale_report:
        print(f"  report.md is out of date (the tables changed after it was rendered): sae report {args.run_dir}")
    words = {"stale": "would rerun (settings, data or code changed)", "missing": "not run yet", "failed": "failed"}
    for stage in stages:
        if stage["state"] != "finished":
            progress = f"; in progress: {describe_progress(stage['progress'])}" if "progress" in stage else ""
            print(f"  {stage['key']}: {words[stage['state']]}{progress}")
    return 0


def cmd_datasets(args) -> int:
    from .core.data import DATA_ENV, FOLDERS, KNOWN_DATASETS, LABELED_SUFFIXES, find_idx_files
    root = args.data_root or os.environ.get(DATA_ENV)
    for name in KNOWN_DATASETS:
        if name == "digits":
            print("digits         scikit-learn's bundled 8x8 digits (1,797 images); always available")
            continue
        try:
            where = f"found: {Path(find_idx_files(name, root)['train_images']).parent}"
        except FileNotFoundError:
            where = "not found"
        looked = f"{root}/, {root}/{FOLDERS[name][0]}/raw/, {root}/{FOLDERS[name][1]}/" if root else \
            f"(no --data-root and ${DATA_ENV} unset)"
        print(f"{name:<14} IDX files, raw or .gz; looked in {looked}: {where}")
    print(f"user files     {', '.join(LABELED_SUFFIXES)} with a label column (data.label_column), by path")
    return 0


def cmd_encode(args) -> int:
    from .encode import encode_file
    path = encode_file(args.model, args.input, args.output, batch_size=args.batch_size,
                       label_column=args.label_column, progress=not args.quiet)
    print(f"codes: {path}")
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report, "status": cmd_status,
            "datasets": cmd_datasets,
            "encode": cmd_encode}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"sae: error: {_message(err)}", file=sys.stderr)
        return EXIT_USAGE


def _message(err: BaseException) -> str:
    return str(err) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
