"""The run directory: atomic stage files, the stage cache, and the tidy result tables.

Every file a stage writes goes through `atomic_write` (temp file, fsync, rename), so a killed
run never leaves a half-written file; a stage counts as done once its JSON record exists.
The layout is documented in docs/run-directory.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.files import atomic_write, cpu_state, load_stamped, save_torch

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["task", "seed", "budget", "arm", "status", "message", "n_labeled", "n_val_labeled",
                  "subset_hash", "lr", "C", "on_grid_edge", "epochs_trained", "best_epoch", "val_error", "val_loss",
                  "test_error", "test_loss", "test_sse", "knn_accuracy", "wall_seconds"]
HISTORY_COLUMNS = ["seed", "budget", "arm", "lr", "epoch", "train_loss", "val_loss", "val_error", "selected"]
PRETRAIN_COLUMNS = ["seed", "layer", "epoch", "train_loss", "val_loss"]


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def write_json(path: Path, obj) -> None:
    atomic_write(path, json_bytes(obj))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_csv(path: Path, frame: pd.DataFrame) -> bool:
    """Write `frame` to `path` atomically; True when the file's bytes changed (or it is new)."""
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data)
    return True


def subset_hash(indices) -> str:
    """First 12 hex digits of the SHA-256 of the labeled subset's indices (int64, sorted)."""
    arr = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:12]


def dataset_fingerprint(data) -> str:
    """A short hash of a Dataset's contents (every split, features and labels): the identity of the data,
    whatever file or path it came from."""
    digest = hashlib.sha256()
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        array = getattr(data, name).detach().cpu().contiguous().numpy()
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def fingerprint(settings: dict) -> str:
    """A short hash of the settings a stage depends on (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def budget_label(budget) -> str:
    return "all" if budget == "all" else str(int(budget))


def arm_key(seed: int, budget, arm: str) -> str:
    """The stage key of an arm at one seed and label budget (its record is stages/{key}.json)."""
    return f"arm_seed{seed}_budget{budget_label(budget)}_{arm}"


def pretrain_key(seed: int) -> str:
    """The stage key of a seed's greedy pretraining (its record is stages/{key}.json)."""
    return f"pretrain_seed{seed}"


class RunDir:
    """Paths and the stage cache of one run directory."""

    keeps_points = True     # finished learning rates and training states of unfinished stages (partial/)

    def __init__(self, root: Path, provenance: dict | None = None):
        self.root = Path(root)
        self.provenance = provenance or {}   # stacked_ae_version and git_commit, kept in every stage record

    def stage_path(self, key: str) -> Path:
        return self.root / "stages" / f"{key}.json"

    def encoder_path(self, seed: int) -> Path:
        return self.root / "encoders" / f"seed{seed}.pt"

    def model_path(self, seed: int, budget, arm: str) -> Path:
        return self.root / "models" / f"seed{seed}_budget{budget_label(budget)}_{arm}.pt"

    def predictions_path(self, seed: int, budget, arm: str) -> Path:
        return self.root / "predictions" / f"seed{seed}_budget{budget_label(budget)}_{arm}.npy"

    def read_json(self, name: str) -> dict:
        """A JSON object of the folder (manifest.json, config.json); {} if missing, unreadable or not an object."""
        try:
            value = json.loads((self.root / name).read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def load_stage(self, key: str, fingerprint: str) -> dict | None:
        """The record of a finished stage, or None if it has not finished or was computed under
        settings that differ from `fingerprint` (then the stage is redone)."""
        record = self.read_stage(key)
        return record if record is not None and record.get("fingerprint") == fingerprint else None

    def read_stage(self, key: str) -> dict | None:
        """The stage's record under whatever settings made it, or None (none, or unreadable: not ours, or
        damaged by hand)."""
        path = self.stage_path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def write(self, path: Path, data: bytes) -> None:
        """Every file a stage produces goes through here (a Ray worker keeps them for the driver instead)."""
        atomic_write(path, data)

    def save_stage(self, key: str, record: dict, fingerprint: str) -> None:
        self.write(self.stage_path(key), json_bytes({**record, **self.provenance, "fingerprint": fingerprint}))

    # ------------------------------------------------------------ grid points of a stage in progress

    def point_path(self, key: str, lr: float) -> Path:
        return self.root / "partial" / key / f"lr{lr:.6g}.pt"

    def points_dir(self, key: str) -> Path:
        """What an unfinished stage keeps (finished learning rates or layers, training states)."""
        return self.root / "partial" / key

    def epochs_path(self, key: str, lr: float) -> Path:
        """The training state of a learning rate still in training (TrainingCheckpoint)."""
        return self.root / "partial" / key / f"lr{lr:.6g}.epochs.pt"

    def save_point(self, key: str, lr: float, record: dict, state: dict | None, fingerprint: str) -> None:
        """Keep one finished learning rate of stage `key` (its JSON-able `record` and the model's `state`), so
        that a stage stopped before its last learning rate resumes after the finished ones."""
        save_torch(self.point_path(key, lr), {"record": json.dumps(record), "fingerprint": fingerprint,
                                              "state": None if state is None else cpu_state(state)})

    def load_point(self, key: str, lr: float, fingerprint: str) -> tuple[dict, dict | None] | None:
        """(record, state) of a finished learning rate kept by `save_point` under the same `fingerprint`,
        or None (never kept, kept under other settings, or unreadable: the learning rate is trained again)."""
        saved = load_stamped(self.point_path(key, lr), fingerprint, "fingerprint", warn=False)
        if saved is None:
            return None
        try:
            return json.loads(saved["record"]), saved["state"]
        except Exception:   # damaged (an edit by hand): train it again rather than fail the run
            return None

    def clear_points(self, key: str) -> None:
        """Drop what an unfinished stage kept (learning rates, layers, training states) once its record is written."""
        folder = self.root / "partial" / key
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
            folder.rmdir()
            with contextlib.suppress(OSError):   # not empty: other stages (Ray workers) are keeping progress there
                (self.root / "partial").rmdir()

    def stage_records(self, prefix: str) -> list[dict]:
        folder = self.root / "stages"
        if not folder.is_dir():
            return []
        records = []
        for path in sorted(folder.glob(f"{prefix}*.json")):
            try:
                records.append(json.loads(path.read_text()))
            except ValueError:
                continue
        return records


def _order(frame: pd.DataFrame, arms: list[str], budgets: list) -> pd.DataFrame:
    """Rows by seed, then budget (numbers ascending, all last), then arm in config order."""
    budget_rank = {budget_label(b): i for i, b in enumerate(sorted(budgets, key=_budget_sort_key))}
    arm_rank = {a: i for i, a in enumerate(arms)}
    keys = frame.assign(_b=frame["budget"].map(budget_rank), _a=frame["arm"].map(arm_rank))
    sort_cols = ["seed", "_b", "_a"] + (["lr", "epoch"] if "epoch" in frame.columns else [])
    return keys.sort_values(sort_cols, kind="stable").drop(columns=["_b", "_a"]).reset_index(drop=True)


def _budget_sort_key(budget) -> float:
    return float("inf") if budget == "all" else float(budget)


def write_tables(run: RunDir, arm_records: list[dict], pretrain_records: list[dict], budgets: list,
                 arms: list[str]) -> pd.DataFrame:
    """Write results.csv, history.csv and pretrain.csv from the given stage records: those of today's settings
    (`executors.current_records`), so that the tables never mix in a stage made under other settings."""
    rows, history, pretrain = [], [], []
    for record in arm_records:
        rows.append(record["result"])
        history += record.get("history", [])
    for record in pretrain_records:
        pretrain += record.get("history", [])
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    # empty for scikit-learn arms (epochs), pca (grid), and rows written before the column existed (n_val_labeled)
    results = results.astype({"epochs_trained": "Int64", "best_epoch": "Int64", "n_val_labeled": "Int64",
                              "on_grid_edge": "boolean"})
    if len(results):
        results = _order(results, arms, budgets)
    changed = write_csv(run.root / "results.csv", results)
    history_frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    if len(history_frame):
        history_frame = _order(history_frame, arms, budgets)
    changed |= write_csv(run.root / "history.csv", history_frame)
    pretrain_frame = pd.DataFrame(pretrain, columns=PRETRAIN_COLUMNS)
    changed |= write_csv(run.root / "pretrain.csv",
                         pretrain_frame.sort_values(["seed", "layer", "epoch"], kind="stable"))
    if changed:
        mark_report_out_of_date(run.root)
    return results


# Once the tables change under a rendered report (a run resumed with --no-report, stopped, or failed), the report
# opens with a note that it is out of date, until it is rendered again, which replaces it whole.
OUT_OF_DATE = "**Out of date.**"


def out_of_date_note(root: Path) -> str:
    return (f"The run in this folder has changed its tables (results.csv, history.csv, pretrain.csv) since this "
            f"report was rendered: `sae report {root}` renders it again from the stages finished so far, and "
            f"`sae run` does when it ends.")


def report_is_out_of_date(root: Path) -> bool:
    try:
        with open(Path(root) / "report.md", encoding="utf-8") as f:
            return f.readline().startswith(f"> {OUT_OF_DATE}")
    except (OSError, UnicodeDecodeError):
        return False


def mark_report_out_of_date(root: Path) -> None:
    """Put a note at the top of `root`'s report.md and report.html, where they exist and have none yet."""
    root = Path(root)
    note = out_of_date_note(root)
    try:
        md = (root / "report.md").read_text(encoding="utf-8")
        if md.startswith(f"> {OUT_OF_DATE}"):
            return
        atomic_write(root / "report.md", f"> {OUT_OF_DATE} {note}\n\n{md}".encode())
        page = (root / "report.html").read_text(encoding="utf-8") if (root / "report.html").is_file() else ""
        if "<body>\n" in page:
            text = html.escape(note).replace("`", "")
            page = page.replace("<body>\n", f'<body>\n<p class="out-of-date"><strong>Out of date.</strong> '
                                             f'{text}</p>\n', 1)
            atomic_write(root / "report.html", page.encode("utf-8"))
    except FileNotFoundError:                         # no report yet: nothing to mark
        return
    except (OSError, UnicodeDecodeError) as err:     # a report that cannot be read is not this run's to fix
        log.warning("could not mark %s/report.md as out of date: %s", root, err)


# ---------------------------------------------------------------- one run at a time

HOLDER_FILE = ".sae-run.pid"     # who holds the folder (informative; the lock itself is the kernel's)


class RunFolderBusy(ValueError):
    """Another run is writing this run folder."""


@contextlib.contextmanager
def hold(root: Path, command: str = ""):
    """Hold the run folder `root` while a run writes it: a second run of the same folder meanwhile is refused
    (RunFolderBusy, naming the process that holds it) rather than training the same stages twice. The lock is
    an flock on the folder, which the kernel drops when the holding process ends, so a killed run leaves no
    stale lock. Where flock is missing (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            _flock_soon(fcntl, fd)
        except BlockingIOError:
            raise RunFolderBusy(f"{root}: another run is writing this folder ({holder(root) or 'a process'}); "
                                f"wait for it to end, or stop it (its finished work is kept), then run again") from None
        except OSError as err:   # a filesystem without locks (some network mounts): run, unguarded
            log.warning("%s: cannot lock the run folder (%s); a second run of it would not be refused", root, err)
            yield
            return
        info = root / HOLDER_FILE
        atomic_write(info, json_bytes({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        try:
            yield
        finally:
            info.unlink(missing_ok=True)
    finally:
        os.close(fd)     # drops the lock


def _flock_soon(fcntl, fd: int, tries: int = 10, wait_s: float = 0.05) -> None:
    """An exclusive flock on `fd`, tried a few times over half a second: `busy` (sae status) holds a shared lock
    for an instant, which must not make a run that starts just then think the folder is in use."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(wait_s)


def busy(root: Path) -> bool:
    """Whether a run holds the folder now (see `hold`)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(root, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def holder(root: Path) -> str:
    """'pid P on HOST since T: COMMAND' of the run that holds the folder, from its holder file ('' if none)."""
    try:
        info = json.loads((Path(root) / HOLDER_FILE).read_text())
        text = f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return text + (f": {info['command']}" if info.get("command") else "")
