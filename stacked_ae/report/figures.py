"""Which figures a run's report gets: each one its files allow is drawn, each other one is named
with the reason it is missing. `make_figures(run, fig_dir)` -> list of `Drawn`.

Autoencoder figures use the fine-tuned deep autoencoder `models/seed{S}_budgetall_pretrained.pt`
when present (reconstruction pipelines), else the greedily pretrained stack `encoders/seed{S}.pt`.
Checkpoints are large and are not committed with a reference report, so each drawing is recorded in
`figures/autoencoder.json` with the hashes of the files it came from (`samples.npz` and the stage
records of the seed): a later render without the checkpoints keeps those figures while every hash
still matches, and says they are out of date, without showing them, as soon as one differs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_write
from ..core.model import CheckpointError, StackedEncoder
from . import ae_plots, plots
from .rundata import RunData, arm_stage_key, pretrain_stage_key

N_RECONSTRUCTIONS = 10
RECORD = "autoencoder.json"   # in figures/: what the autoencoder figures were drawn from


@dataclass(frozen=True)
class Drawn:
    """One figure: `path` relative to the report folder, or None and `text` says why not."""
    title: str
    path: str | None
    text: str        # the caption, or the reason the figure is missing


def make_figures(run: RunData, fig_dir: Path) -> list[Drawn]:
    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn = [_results(run, fig_dir), _finetune(run, fig_dir), _pretrain(run, fig_dir)]
    drawn += _autoencoder(run, fig_dir)
    if run.task == "classification":
        drawn.append(_confusion(run, fig_dir))
    return drawn


def _rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _results(run: RunData, fig_dir: Path) -> Drawn:
    classification = run.metric == "test_error"
    title = "Label efficiency" if classification else "Test reconstruction error"
    if run.ok().empty:
        return Drawn(title, None, "no finished results to plot.")
    path = fig_dir / ("label_efficiency.png" if classification else "test_sse.png")
    heading = "Label efficiency: test error vs labels per class" if classification else \
        "Test reconstruction error (squared error summed over pixels)"
    return Drawn(title, _rel(path), plots.plot_results([run], [heading], path))


def _finetune(run: RunData, fig_dir: Path) -> Drawn:
    title = "Fine-tuning curves"
    if run.history is None:
        return Drawn(title, None, "`history.csv` is missing.")
    path = fig_dir / "finetune_curves.png"
    caption = plots.plot_finetune_curves(run, path)
    if caption is None:
        return Drawn(title, None, f"`history.csv` has no selected epochs at budget {run.largest_budget}.")
    return Drawn(title, _rel(path), caption)


def _pretrain(run: RunData, fig_dir: Path) -> Drawn:
    title = "Pretraining curves"
    if run.pretrain is None:
        return Drawn(title, None, "`pretrain.csv` is missing.")
    path = fig_dir / "pretrain_loss.png"
    caption = plots.plot_pretrain_curves(run, path)
    return Drawn(title, _rel(path), caption) if caption else Drawn(title, None, "`pretrain.csv` has no rows.")


# ---------------------------------------------------------------- autoencoder figures

def _model_files(run: RunData) -> tuple[int, Path, Path | None] | None:
    """(seed, model for codes and decoding, pretrained stack or None) of the first seed that has one. Only files
    that the tables vouch for count: an encoder whose pretraining is in pretrain.csv, a fine-tuned network whose
    row (pretrained, all labels) is in results.csv and ok; a file left by a run under other settings is not drawn."""
    for seed in run.seeds:
        stack = run.path / "encoders" / f"seed{seed}.pt"
        tuned = run.path / "models" / f"seed{seed}_budgetall_pretrained.pt"
        stack = stack if stack.is_file() and _pretrained(run, seed) else None
        tuned = tuned if tuned.is_file() and _tuned(run, seed) else None
        main = tuned or stack
        if main is not None:
            return seed, main, stack
    return None


def _pretrained(run: RunData, seed: int) -> bool:
    return run.pretrain is not None and bool((run.pretrain["seed"] == seed).any())


def _tuned(run: RunData, seed: int) -> bool:
    r = run.results
    row = (r["seed"] == seed) & (r["budget"] == "all") & (r["arm"] == "pretrained") & (r["status"] == "ok")
    return bool(row.any())


def _classes(run: RunData, samples: dict) -> list[str]:
    names = [str(c) for c in samples.get("classes", [])]
    if not names:
        names = [str(c) for c in run.dataset.get("classes") or []]
    n = int(max(samples["y"].max(initial=-1), samples.get("y_test", np.zeros(1, int)).max(initial=-1))) + 1
    return names if len(names) >= n else names + [str(c) for c in range(len(names), n)]


def _image_shape(run: RunData, samples: dict, n_features: int) -> tuple[tuple[int, int] | None, str]:
    shape = tuple(int(s) for s in samples.get("image_shape", [])) or run.image_shape
    if not shape:
        return None, "`image_shape` is empty (the data are not images)"
    if len(shape) == 3 and 1 in (shape[0], shape[-1]):
        shape = tuple(s for i, s in enumerate(shape) if not (s == 1 and i in (0, 2)))   # one grey channel
    if len(shape) != 2 or shape[0] * shape[1] != n_features:
        return None, f"image_shape {shape} is not a grey-scale image of {n_features} pixels"
    return (shape[0], shape[1]), ""


def _autoencoder(run: RunData, fig_dir: Path) -> list[Drawn]:
    title = "Autoencoder figures"
    samples = run.samples()
    if samples is None:
        return [Drawn(title, None, "`samples.npz` is missing: no codes, reconstructions or filters.")]
    files = _model_files(run)
    if files is None:
        return _kept(run, fig_dir) or [
            Drawn(title, None, "no `encoders/seed{S}.pt` (or `models/seed{S}_budgetall_pretrained.pt`) file.")]
    seed, main, stack_path = files
    drawn = _draw_autoencoder(run, fig_dir, seed, main, stack_path, samples)
    if any(d.path for d in drawn):
        _record(run, fig_dir, seed, drawn)
    return drawn


# The files an autoencoder figure of seed S is drawn from, besides the checkpoints those stages wrote.
def _sources(run_dir: Path, seed: int) -> dict[str, str]:
    """{file relative to the run folder: sha256} of samples.npz and the seed's stage records that exist."""
    keys = [pretrain_stage_key(seed), *(arm_stage_key(seed, "all", arm) for arm in ("pretrained", "random"))]
    names = ["samples.npz", *(f"stages/{key}.json" for key in keys)]
    return {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()[:16]
            for name in names if (run_dir / name).is_file()}


def record_is_current(run_dir: Path) -> bool:
    """Whether `figures/autoencoder.json` holds figures drawn from the files the run folder holds now."""
    try:
        record = json.loads((Path(run_dir) / "figures" / RECORD).read_text())
        return record["sources"] == _sources(Path(run_dir), int(record["seed"])) and all(
            (Path(run_dir) / f["path"]).is_file() for f in record["figures"] if f["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _record(run: RunData, fig_dir: Path, seed: int, drawn: list[Drawn]) -> None:
    record = {"seed": seed, "sources": _sources(run.path, seed), "figures": [asdict(d) for d in drawn]}
    atomic_write(fig_dir / RECORD, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def _kept(run: RunData, fig_dir: Path) -> list[Drawn] | None:
    """The figures recorded when the checkpoints were present, if they are still current; else a reason."""
    path = fig_dir / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        seed, sources, figures = int(record["seed"]), dict(record["sources"]), list(record["figures"])
        drawn = [Drawn(str(f["title"]), None if f["path"] is None else str(f["path"]), str(f["text"]))
                 for f in figures]
    except (ValueError, KeyError, TypeError) as err:
        return [Drawn("Autoencoder figures", None, f"`figures/{RECORD}` could not be read ({err!r}) and no "
                                                   f"checkpoint is here to draw them again.")]
    now = _sources(run.path, seed)
    changed = sorted(name for name in set(sources) | set(now) if sources.get(name) != now.get(name))
    missing = [d.path for d in drawn if d.path and not (fig_dir.parent / d.path).is_file()]
    unlisted = _unlisted(run, seed, sources)
    if changed or missing or unlisted:
        why = (f"{', '.join(f'`{c}`' for c in changed)} changed since they were drawn" if changed
               else f"{', '.join(f'`{m}`' for m in missing)} missing" if missing
               else f"the tables no longer list the stage(s) they were drawn from, {', '.join(unlisted)}: a run "
                    f"under other settings has not finished them yet")
        return [Drawn("Autoencoder figures", None,
                      f"the figures drawn earlier are out of date ({why}), and no `encoders/seed{{S}}.pt` or "
                      f"`models/seed{{S}}_budgetall_pretrained.pt` checkpoint of today's stages is here to draw them "
                      f"again.")]
    return [d if d.path is None else
            Drawn(d.title, d.path, f"{d.text} (Drawn when the run's checkpoints were present; the files they "
                                   f"came from are unchanged.)") for d in drawn]


def _unlisted(run: RunData, seed: int, sources: dict) -> list[str]:
    """The seed's pretraining, behind every kept figure, where today's tables do not list it as finished: its
    record on disk is unchanged while a rerun under new settings has not yet replaced it, so the hashes alone
    would call the figures current. (The all-labels network's record is among the sources whenever it exists,
    also when the figures came from the encoder alone, so its absence from the tables proves nothing here.)"""
    key = pretrain_stage_key(seed)
    return [f"`{key}`"] if f"stages/{key}.json" in sources and not _pretrained(run, seed) else []


def _draw_autoencoder(run: RunData, fig_dir: Path, seed: int, main: Path, stack_path: Path | None,
                      samples: dict) -> list[Drawn]:
    title = "Autoencoder figures"
    try:
        model = StackedEncoder.load(main)
        stack = StackedEncoder.load(stack_path) if stack_path else None
    except CheckpointError as err:
        return [Drawn(title, None, f"the checkpoint could not be read: {err}")]
    X, y = samples["X"].astype(np.float32), samples["y"].astype(np.int64)
    classes, source = _classes(run, samples), f"seed {seed}, `{main.parent.name}/{main.name}`"
    codes = model.encode(X).numpy()
    drawn = [Drawn("Codes", _rel(fig_dir / "codes.png"),
                   ae_plots.plot_codes(codes, y, classes, fig_dir / "codes.png", source))]
    shape, why = _image_shape(run, samples, X.shape[1])
    if shape is None:
        return drawn + [Drawn("Image figures", None, f"{why}: decoded codes, reconstructions and filters "
                                                     f"are not drawn.")]
    ae = model.unroll()
    drawn.append(_decoded(ae, codes, y, classes, shape, fig_dir, source))
    drawn.append(_reconstructions(run, seed, X, y, model, stack, shape, fig_dir))
    first = (stack or model).layers[0]
    filter_source = f"seed {seed}, `{(stack_path or main).parent.name}/{(stack_path or main).name}`"
    if getattr(first, "kind", "dense") == "conv":   # kernels of the first input channel, each k x k
        kernels = first.encoder.conv.weight.detach()[:, 0]
        drawn.append(Drawn("First-layer kernels", _rel(fig_dir / "filters.png"),
                           ae_plots.plot_filters(kernels.flatten(1).numpy(), tuple(kernels.shape[1:]),
                                                 fig_dir / "filters.png", filter_source, kernels=True)))
        return drawn
    drawn.append(Drawn("First-layer filters", _rel(fig_dir / "filters.png"),
                       ae_plots.plot_filters(first.encoder.linear.weight.detach().numpy(), shape,
                                             fig_dir / "filters.png", filter_source)))
    return drawn


def _decoded(ae, codes, y, classes, shape, fig_dir: Path, source: str) -> Drawn:
    if codes.shape[1] == 2:
        path = fig_dir / "latent_grid.png"
        return Drawn("Decoded code plane", _rel(path), ae_plots.plot_latent_grid(ae, codes, shape, path, source))
    path = fig_dir / "interpolations.png"
    return Drawn("Decoded interpolations", _rel(path),
                 ae_plots.plot_interpolations(ae, codes, y, classes, shape, path, source))


def pick_examples(y: np.ndarray, n: int = N_RECONSTRUCTIONS) -> np.ndarray:
    """The first example of each class (in class order), topped up with the next ones, n at most."""
    firsts = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)][:n]
    rest = [i for i in range(len(y)) if i not in set(firsts)]
    return np.array(firsts + rest[: n - len(firsts)], dtype=np.int64)


def _reconstructions(run: RunData, seed: int, X, y, model, stack, shape, fig_dir: Path) -> Drawn:
    pick = pick_examples(y)
    rows = {}
    for arm in ("pretrained", "random"):
        path = run.path / "models" / f"seed{seed}_budgetall_{arm}.pt"
        if path.is_file():
            tuned = model if arm == "pretrained" else StackedEncoder.load(path)
            rows[f"{arm}, fine-tuned"] = ae_plots.reconstruct(tuned.unroll(), X[pick])
    if stack is not None:
        rows["greedy stack, not fine-tuned"] = ae_plots.reconstruct(stack.unroll(), X[pick])
    path = fig_dir / "reconstructions.png"
    return Drawn("Reconstructions", _rel(path), ae_plots.plot_reconstructions(X[pick], rows, shape, path))


# ---------------------------------------------------------------- confusion matrix

def _confusion(run: RunData, fig_dir: Path) -> Drawn:
    title = "Confusion matrix"
    samples = run.samples()
    if samples is None or "y_test" not in samples:
        return Drawn(title, None, "`samples.npz` (with `y_test`) is missing.")
    best = plots.best_arm_with_predictions(run)
    if best is None:
        return Drawn(title, None, f"no `predictions/*.npy` files at budget {run.largest_budget}.")
    path = fig_dir / "confusion.png"
    caption = plots.plot_confusion(run, samples["y_test"], _classes(run, samples), *best, path)
    return Drawn(title, _rel(path), caption)
