"""Read a run directory (docs/run-directory.md) into a `RunData` for the report and its figures.

`run = load_run("runs/digits")` gives the config, manifest and tables; absent optional files
become None and a note in `run.notes`. Only `results.csv` is required.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.files import NPZ_ERRORS, read_json_object, read_npz

METRICS = {"classification": "test_error", "reconstruction": "test_sse"}
RESULT_COLUMNS = ("task", "seed", "budget", "arm", "status", "message", "test_error", "test_sse", "subset_hash")
HISTORY_COLUMNS = ("seed", "budget", "arm", "epoch", "val_loss", "val_error", "selected")
PRETRAIN_COLUMNS = ("seed", "layer", "epoch", "train_loss", "val_loss")
RESULT_TEXT_COLUMNS = {"task": str, "budget": str, "arm": str, "status": str, "message": str, "subset_hash": str}


def budget_key(budget: str) -> tuple[int, int]:
    """Numeric budgets ascending, then `all` (the run-directory row order)."""
    return (1, 0) if str(budget) == "all" else (0, int(budget))


def sorted_budgets(budgets) -> list[str]:
    return sorted({str(b) for b in budgets}, key=budget_key)


def find_key(tree: Any, key: str) -> Any:
    """The value of `key` at the top of a nested config, else in its sections (sorted, depth first)."""
    if not isinstance(tree, dict):
        return None
    if key in tree:
        return tree[key]
    for name in sorted(tree):
        found = find_key(tree[name], key)
        if found is not None:
            return found
    return None


UNRECORDED = "not recorded"        # a stage whose record names no device
PRETRAINED_ARMS = ("pretrained", "frozen")   # the arms built on greedy pretraining


def arm_stage_key(seed: int, budget: str, arm: str) -> str:
    """The key of an arm stage's record, stages/{key}.json, with the budget as results.csv writes it ("10",
    "all"): the name `pipeline.rundir.arm_key` gives it, which the report, reading the folder only, spells here."""
    return f"arm_seed{seed}_budget{budget}_{arm}"


def pretrain_stage_key(seed: int) -> str:
    """The key of a seed's pretraining record, stages/{key}.json."""
    return f"pretrain_seed{seed}"


@dataclass
class RunData:
    """Everything the report reads from one run directory."""
    path: Path
    config: dict
    manifest: dict
    results: pd.DataFrame                  # results.csv, budget as text
    history: pd.DataFrame | None = None    # history.csv
    pretrain: pd.DataFrame | None = None   # pretrain.csv
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @cached_property
    def stage_records(self) -> dict[str, dict]:
        """{stage key: record} of every readable record in stages/, current or not, read once per report."""
        records = {}
        for path in sorted((self.path / "stages").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                records[path.stem] = record
        return records

    @cached_property
    def stage_devices(self) -> dict[str, Counter]:
        """{arm, or "pretraining": Counter of the devices its stage records name}, for the stages in the tables
        (results.csv's rows and each seed's pretraining); a record that names no device (made before records
        did, or missing) counts under "not recorded". The setup row and the Compute table both read this."""
        keys = {arm: [arm_stage_key(int(r.seed), r.budget, arm) for r in rows.itertuples()]
                for arm, rows in self.results.groupby("arm")}
        if any(arm in PRETRAINED_ARMS for arm in keys):
            keys["pretraining"] = [pretrain_stage_key(seed) for seed in self.seeds]
        return {name: Counter(self.stage_records.get(key, {}).get("device") or UNRECORDED for key in stage_keys)
                for name, stage_keys in keys.items()}

    @property
    def task(self) -> str:
        tasks = self.results["task"].dropna().unique().tolist()
        if tasks:
            return str(tasks[0])
        return str(find_key(self.config, "task") or "classification")

    @property
    def metric(self) -> str:
        return METRICS.get(self.task, "test_error")

    @property
    def dataset(self) -> dict:
        return self.manifest.get("dataset") or {}

    @property
    def arms(self) -> list[str]:
        """The config's arms in its order, then any other arm that appears in results.csv."""
        listed = find_key(self.config, "arms")
        arms = [str(a) for a in listed] if isinstance(listed, list) else []
        for arm in self.results["arm"].dropna().tolist():
            if arm not in arms:
                arms.append(arm)
        return arms

    @property
    def budgets(self) -> list[str]:
        """The config's label budgets and any other budget in results.csv, numbers ascending, `all` last."""
        listed = find_key(self.config, "budgets")
        listed = [str(b) for b in listed] if isinstance(listed, list) else []
        return sorted_budgets([*listed, *self.results["budget"].dropna()])

    @property
    def largest_budget(self) -> str | None:
        return self.budgets[-1] if self.budgets else None

    @property
    def seeds(self) -> list[int]:
        listed = find_key(self.config, "seeds")
        seeds = {int(s) for s in listed} if isinstance(listed, list) else set()
        return sorted(seeds | {int(s) for s in self.results["seed"].dropna()})

    @property
    def sizes(self) -> list[int] | None:
        sizes = find_key(self.config, "sizes")
        return [int(s) for s in sizes] if isinstance(sizes, list) else None

    @property
    def layer_widths(self) -> list[str] | None:
        """The input and each layer's output, bottom to top: conv maps as C@HxW, dense widths as numbers;
        None without `sizes` in config.json."""
        if self.sizes is None:
            return None
        n_in = self.dataset.get("n_features")
        model = self.config.get("model") if isinstance(self.config.get("model"), dict) else {}
        widths = [str(n_in) if n_in else "?"]
        conv = model.get("conv") or []
        if conv:
            from ..core.conv import map_shapes
            try:
                widths += [f"{c}@{h}x{w}" for c, h, w in map_shapes(conv, self.image_shape)[1:]]
            except (ValueError, TypeError):
                widths += ["conv"] * len(conv)
        return widths + [str(n) for n in self.sizes]

    @property
    def n_classes(self) -> int | None:
        classes = self.dataset.get("classes")
        if isinstance(classes, list):
            return len(classes)
        return int(classes) if isinstance(classes, int) else None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in (self.dataset.get("image_shape") or ()))

    @property
    def reference(self) -> dict:
        ref = self.config.get("reference")
        return ref if isinstance(ref, dict) else {}

    def published(self, metric: str) -> dict[tuple[str, str], float]:
        """Published values of `metric` by (budget, arm): `{arm: value}` means the largest budget,
        `{arm: {budget: value}}` names the budget."""
        table = self.reference.get(metric)
        out: dict[tuple[str, str], float] = {}
        if not isinstance(table, dict):
            return out
        for arm in sorted(table):
            value = table[arm]
            per_budget = value if isinstance(value, dict) else {self.largest_budget or "all": value}
            for budget, number in per_budget.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    out[(str(budget), str(arm))] = float(number)
        return out

    def ok(self) -> pd.DataFrame:
        """Rows that finished, with a value of the headline metric."""
        rows = self.results[(self.results["status"] == "ok") & self.results[self.metric].notna()]
        return rows

    def failed(self) -> pd.DataFrame:
        return self.results[self.results["status"] != "ok"]

    def samples(self) -> dict | None:
        """samples.npz as a dict of arrays, or None when absent; a damaged file is a ValueError naming it."""
        path = self.path / "samples.npz"
        if not path.is_file():
            return None
        try:
            return read_npz(path)
        except NPZ_ERRORS as err:
            raise ValueError(f"{path}: not a readable samples file ({type(err).__name__}: {err}); the same "
                             f"`sae run` command redraws it from the data, reusing every finished stage") from None


def _read_json(path: Path, notes: list[str]) -> dict:
    if not path.is_file():
        notes.append(f"`{path.name}` is missing: its fields are shown as unknown.")
        return {}
    try:
        return read_json_object(path)
    except (OSError, ValueError) as err:
        notes.append(f"`{path.name}` could not be read ({_after_path(err, path)}): its fields are shown as unknown.")
        return {}


def _after_path(err: BaseException, path: Path) -> str:
    """An error's message without the path it starts with (a note names the file itself)."""
    text = str(err)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else f"{type(err).__name__}: {text}"


def _read_csv(path: Path, notes: list[str], what: str, columns: tuple[str, ...], **kwargs) -> pd.DataFrame | None:
    if not path.is_file():
        notes.append(f"`{path.name}` is missing: no {what}.")
        return None
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as err:   # empty, binary, not CSV (pandas parse errors are ValueErrors)
        notes.append(f"`{path.name}` could not be read ({_after_path(err, path)}): no {what}.")
        return None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        notes.append(f"`{path.name}` lacks the column(s) {', '.join(missing)}: no {what}.")
        return None
    if "budget" in frame.columns:
        frame["budget"] = frame["budget"].astype(str)
    return frame


def _selected_flags(column: pd.Series) -> pd.Series:
    """history.csv `selected` as booleans, whether written as True/False, true/false or 1/0."""
    return column.astype(str).str.strip().str.lower().isin(("true", "1", "1.0", "yes"))


def load_run(run_dir: str | Path) -> RunData:
    """Read one run directory; raises FileNotFoundError when it has no results.csv."""
    path = Path(run_dir)
    results_path = path / "results.csv"
    if not results_path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory (no results.csv); run `sae run PIPELINE` first")
    notes: list[str] = []
    try:
        results = pd.read_csv(results_path, dtype=RESULT_TEXT_COLUMNS)
    except ValueError as err:   # empty, binary or not CSV at all (pandas parse errors are ValueErrors)
        raise ValueError(f"{results_path}: not a readable results table ({type(err).__name__}: {err})") from None
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"{results_path}: missing column(s) {', '.join(missing)}; expected the columns of "
                         f"docs/run-directory.md: {', '.join(RESULT_COLUMNS)}")
    for column in ("test_error", "test_sse", "test_loss", "val_error", "lr", "knn_accuracy"):
        if column in results.columns:
            results[column] = pd.to_numeric(results[column], errors="coerce")
    results["status"] = results["status"].fillna("failed")
    results["message"] = results["message"].fillna("")
    history = _read_csv(path / "history.csv", notes, "fine-tuning curves", HISTORY_COLUMNS, dtype={"arm": str})
    if history is not None:
        history["selected"] = _selected_flags(history["selected"])
    pretrain = _read_csv(path / "pretrain.csv", notes, "pretraining curves", PRETRAIN_COLUMNS)
    return RunData(path=path, config=_read_json(path / "config.json", notes),
                   manifest=_read_json(path / "manifest.json", notes), results=results,
                   history=history, pretrain=pretrain, notes=notes)
