"""Render the report of a run directory: report.md (reads on GitHub), report.html (self-contained,
figures embedded) and figures/*.png, from the run directory's files alone (docs/run-directory.md).

    render_report(Path("runs/digits"))                  # -> runs/digits/report.md
    render_report([Path("runs/a"), Path("runs/b")])     # -> runs/comparison/report.md, side by side

Deterministic: the same files give a byte-identical report.md (no render timestamps, fixed formats).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.files import atomic_write
from . import sections, summary
from .compare import comparison_blocks
from .figures import make_figures
from .markup import Block, Bullets, Code, Figure, Heading, Para, slug, to_html, to_markdown
from .rundata import RunData, load_run


def render_report(run_dirs: list[Path] | Path, out_dir: Path | None = None) -> Path:
    """Write report.md, report.html and figures/ for one run (into the run directory, or `out_dir`),
    or a side-by-side comparison of several (into `out_dir`, default the first run's parent /
    "comparison"). Returns the path of report.md."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("render_report needs at least one run directory")
    runs = [load_run(d) for d in dirs]
    if len(runs) == 1:
        out = Path(out_dir) if out_dir is not None else runs[0].path
        return write_report(run_blocks(runs[0], out / "figures"), out, runs[0].name)
    out = Path(out_dir) if out_dir is not None else dirs[0].parent / "comparison"
    return write_report(comparison_blocks(runs, out / "figures"), out, f"Comparison of {len(runs)} runs")


def write_report(blocks: list[Block], out: Path, title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    atomic_write(md, to_markdown(blocks).encode("utf-8"))   # a reader never sees half a report
    atomic_write(out / "report.html", to_html(blocks, out, title).encode("utf-8"))
    return md


def run_blocks(run: RunData, fig_dir: Path) -> list[Block]:
    """The whole single-run report, top to bottom."""
    body = [
        *summary.summary_blocks(run),
        *sections.results_blocks(run, summary.wide_table(run)),
        *summary.tuning_blocks(run),
        *summary.compute_blocks(run),
        *sections.reference_blocks(run),
        *sections.missing_blocks(run),
        *figure_blocks(run, fig_dir),
        *sections.per_seed_blocks(run),
        Heading(2, "Setup"), sections.setup_table([run]),
        *sections.version_blocks(run),
        Heading(2, "Resolved config"),
        Para("The pipeline config as the run resolved it (`config.json`)."),
        Code(compact_json(run.config)),
    ]
    return [Heading(1, f"{run.name}: greedy pretraining vs random initialisation"), Para(sections.intro(run)),
            contents(body), *body]


def contents(blocks: list[Block]) -> Bullets:
    """Links to the level-2 headings (GitHub's anchors; report.html gives its headings the same ids)."""
    return Bullets(tuple(f"[{b.text}](#{slug(b.text)})" for b in blocks if isinstance(b, Heading) and b.level == 2))


def compact_json(value, indent: str = "") -> str:
    """JSON with sorted keys, one key per line, and lists of scalars kept on one line."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {compact_json(value[k], inner)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value)


def figure_blocks(run: RunData, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Figures")]
    for drawn in make_figures(run, fig_dir):
        blocks.append(Heading(3, drawn.title))
        if drawn.path is None:
            blocks.append(Para(f"**Not drawn:** {drawn.text}"))
        else:
            blocks.append(Figure(drawn.path, drawn.text, drawn.title))
    return blocks
