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
    # --debug also after the command (sae run FILE --debug); SUPPRESS keeps a subcommand's default from
    # overwriting a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    run = sub.add_parser("run", parents=[common], help="run (or resume) a pipeline file")
    run.add_argument("file", help="pipeline file (TOML)")
    _add_overrides(run)
    run.add_argument("--data-root", help="folder with the dataset files (default: data.root, else $STACKED_AE_DATA)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                     help="where to train (default auto: cuda, then mps, then cpu)")
    run.add_argument("--precision", choices=["fp32", "bf16"],
                     help="shorthand for --set pretrain.precision=P --set finetune.precision=P (bf16: autocast "
                          "training steps; pays on GPUs and on CPUs with AMX)")
    run.add_argument("--out", help="run folder (default runs/<name>)")
    run.add_argument("--force", action="store_true", help="discard finished stages and start over")
    run.add_argument("--quiet", action="store_true", help="no progress output (bars on a terminal, log lines "
                     "otherwise)")
    run.add_argument("--threads", default="auto", help="CPU threads: a number, or auto (the default: 1 for networks "
                     "no wider than 256 units whose conv layers are small, under 2^18 multiply-adds an image; else "
                     "one per core)")
    run.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="local: every stage in this process (the default); ray: stages as Ray tasks "
                          "(same as --set run.executor=...)")
    run.add_argument("--workers", type=int, help="ray: worker processes to start on this machine, each with its "
                     "share of the cores as torch threads (default: one per core)")
    run.add_argument("--address", help="ray: join this cluster (auto, or host:port; default run.address, else "
                     "$RAY_ADDRESS) instead of starting one here")
    run.add_argument("--gpus-per-stage", type=float, help="ray: GPUs per stage; a fraction lets stages share one "
                     "(default run.gpus_per_stage, 0: stages train on CPU)")

    validate = sub.add_parser("validate", parents=[common], help="check pipeline files (settings, data, label "
                              "budgets) without running them")
    validate.add_argument("files", nargs="+", metavar="file", help="pipeline files (TOML)")
    _add_overrides(validate)
    validate.add_argument("--data-root", help="folder with the dataset files (default: data.root, else "
                          "$STACKED_AE_DATA)")

    report = sub.add_parser("report", parents=[common], help="render report.md/report.html from run folders")
    report.add_argument("run_dirs", nargs="+", metavar="run_dir", help="run folders (several: side by side)")
    report.add_argument("--out", help="folder for a side-by-side report of several runs (default: "
                        "comparison/ beside the first run)")

    status = sub.add_parser("status", parents=[common], help="which stages of a run folder are finished, missing, "
                            "failed or would rerun")
    status.add_argument("run_dir", help="run folder")
    status.add_argument("file", nargs="?", help="pipeline file to compare with (default: the run's config.json)")
    _add_overrides(status)
    status.add_argument("--data-root", help="folder with the dataset files (default $STACKED_AE_DATA): read only when "
                        "the pipeline's [data] settings differ from the run's, to tell whether the data changed")
    status.add_argument("--json", action="store_true", help="print the stages as JSON, for scripts")

    datasets = sub.add_parser("datasets", parents=[common], help="list the known datasets and where each is looked for")
    datasets.add_argument("--data-root", help="folder with the dataset files (default $STACKED_AE_DATA)")

    encode = sub.add_parser("encode", parents=[common], help="encode a data file with a saved encoder")
    encode.add_argument("--model", required=True, help="encoder file (StackedEncoder.save, runs/*/encoders/*.pt)")
    encode.add_argument("--input", required=True, help=".npy, .npz, .csv or .parquet: a table of rows, or images "
                        "(n, height, width) or (n, channels, height, width) in .npy/.npz")
    encode.add_argument("--output", required=True, help=".npy or .parquet")
    encode.add_argument("--batch-size", type=int, default=None,
                        help="rows encoded at a time (default: 8192, fewer for conv models with large maps)")
    encode.add_argument("--label-column", help="the label column of .csv/.parquet input, kept beside the codes "
                        "in .parquet output and not encoded (default: a column named label, where there is one)")
    encode.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a "
                        "terminal)")
    return parser


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. --set pretrain.epochs=5 (repeat for several)")


def cmd_run(args) -> int:
    from .pipeline.config import load_config
    from .pipeline.runner import run_pipeline
    from .report.figures import record_is_current
    overrides = list(args.overrides)
    if args.precision:
        _check_precision(args)
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
    if cfg.run.executor == "ray" and not cfg.run.address and os.environ.get("RAY_ADDRESS"):
        cfg = load_config(args.file, overrides + [f'run.address="{os.environ["RAY_ADDRESS"]}"'])
    _check_ray_flags(args, cfg)
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


PRECISION_KEYS = ("pretrain.precision", "finetune.precision")


def _check_precision(args) -> None:
    """--precision P is --set pretrain.precision=P --set finetune.precision=P: refused beside a --set of either
    key that says otherwise (which one would win is not obvious)."""
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key.strip() in PRECISION_KEYS and value.strip().strip("'\"") != args.precision:
            raise ValueError(f"--precision {args.precision} contradicts --set {override}; give one of them")


RAY_KEYS = ("run.workers", "run.address", "run.gpus_per_stage", "run.shared_folder")   # read by Ray alone


def _check_ray_flags(args, cfg) -> None:
    """Flags that only Ray reads are refused under the local executor rather than silently ignored."""
    if cfg.run.executor == "ray":
        return
    given = [flag for flag, value in (("--workers", args.workers), ("--gpus-per-stage", args.gpus_per_stage),
                                      ("--address", args.address)) if value is not None]
    given += [f"--set {o}" for o in args.overrides if o.partition("=")[0].strip() in RAY_KEYS]
    if given:
        raise ValueError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} the Ray executor "
                         f"(--executor ray, or run.executor = \"ray\" in the pipeline file); this run's executor "
                         f"is {cfg.run.executor}")


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


def _source(file, overrides) -> str:
    """The pipeline file, and the --set overrides that changed it, which a data check may be about."""
    return f"{file} with {' '.join(f'--set {o}' for o in overrides)}" if overrides else str(file)


def cmd_validate(args) -> int:
    """Check each file: its settings, then its data and label budgets where the data can be found."""
    from .core.data import KNOWN_DATASETS, DataNotFoundError
    from .pipeline.config import load_config
    from .pipeline.runner import check_data, validation_note
    if args.data_root is not None and not Path(args.data_root).is_dir():   # asked to look there: it must exist
        raise FileNotFoundError(f"--data-root {args.data_root}: no such folder")
    failures = 0
    for file in args.files:
        try:
            if Path(file).is_dir():
                raise IsADirectoryError(f"{file}: is a folder; expected a pipeline file (TOML), e.g. "
                                        f"{Path(file) / 'quickstart.toml'}")
            cfg = load_config(file, args.overrides)
            try:
                data = check_data(cfg, args.data_root)
                found = f"data found: {len(data.X_train):,} training images, budgets fit"
                if note := validation_note(cfg, data):
                    found += f"; note: {note}"
            except DataNotFoundError as err:
                if cfg.data.dataset not in KNOWN_DATASETS:   # a file the pipeline names: the run would stop
                    raise DataNotFoundError(f"{file}: data.dataset: {err}") from err
                found = "data not checked: " + " ".join(str(err).split())
            except ValueError as err:   # the data's own errors name the data, not the pipeline file
                if args.debug:
                    raise
                raise ValueError(f"{_source(file, args.overrides)}: {_message(err)}") from err
        except (ValueError, OSError) as err:
            if args.debug:
                raise
            failures += 1
            print(f"sae: error: {_message(err)}", file=sys.stderr)
            continue
        print(f"{file}: ok ({cfg.task}, {_plural(len(cfg.seeds), 'seed')}, budgets {list(cfg.data.budgets)}, "
              f"arms {list(cfg.arms)}, {_layers(cfg)}; {found})")
    return EXIT_USAGE if failures else 0


def _folder(path: str) -> Path:
    """`path` as a run folder that exists: FileNotFoundError or NotADirectoryError naming it otherwise."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a run folder (the folder `sae run --out` wrote)")
    return folder


def cmd_report(args) -> int:
    from .report.render import render_report
    dirs = [_folder(d) for d in args.run_dirs]
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
    if not args.file and args.overrides:
        raise ValueError("--set needs a pipeline file to apply to: sae status RUN_DIR PIPELINE --set KEY=VALUE")
    run_dir = _folder(args.run_dir)
    cfg = load_config(args.file, args.overrides) if args.file else read_run_config(run_dir)
    other_name = _run_name(run_dir) if args.file else None
    from .pipeline.rundir import busy, holder, report_is_out_of_date
    from .pipeline.status import data_id_for
    data_id, data_note = data_id_for(cfg, run_dir, args.data_root)
    stages = stage_status(cfg, run_dir, data_id)
    counts = count_states(stages)
    running = busy(run_dir)
    stale_report = report_is_out_of_date(run_dir)
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "pipeline": cfg.name, "run_pipeline": other_name or cfg.name,
                          "running": running,
                          "holder": holder(run_dir) if running else None,
                          "data": data_note, "report_out_of_date": stale_report, "counts": counts,
                          "stages": stages}, indent=2))
        return 0
    print(f"{args.run_dir}: {len(stages)} stages: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if other_name not in (None, cfg.name):
        print(f"  warning: the folder holds a run of pipeline {other_name!r} (its config.json), but {args.file} "
              f"is pipeline {cfg.name!r}: stages are judged against {args.file}'s settings")
    if data_note:
        print(f"  data: {data_note}")
    if running:
        print(f"  running now: {holder(run_dir) or 'a process holds the folder'}")
    if stale_report:
        print(f"  report.md is out of date (the tables changed after it was rendered): sae report {args.run_dir}")
    words = {"stale": "would rerun (settings, data or code changed)", "missing": "not run yet", "failed": "failed"}
    for stage in stages:
        if stage["state"] != "finished":
            progress = f"; in progress: {describe_progress(stage['progress'])}" if "progress" in stage else ""
            print(f"  {stage['key']}: {stage.get('reason') or words[stage['state']]}{progress}")
    return 0


def _run_name(run_dir: Path) -> str | None:
    """The pipeline name a run folder's config.json records (None where it has none, or none readable)."""
    from .core.files import read_json_object
    try:
        name = read_json_object(run_dir / "config.json").get("name")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) else None


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
    if args.batch_size is not None and args.batch_size < 1:   # checked here: encode_file's message names batch_size
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    suffix = Path(args.input).suffix.lower()
    if args.label_column is not None and suffix not in (".csv", ".parquet") and not Path(args.input).is_dir():
        raise ValueError(f"--label-column {args.label_column}: names a column of .csv or .parquet input; "
                         f"{args.input} is a {suffix or 'suffix-less'} file, which has no columns")
    path = encode_file(args.model, args.input, args.output, batch_size=args.batch_size,
                       label_column=args.label_column, progress=not args.quiet and sys.stderr.isatty())
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
    except BrokenPipeError:   # `sae status ... | head`: the reader has all it wanted; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # Python's flush at exit would fail again
        return 128 + int(signal.SIGPIPE)
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
