"""A report as a list of blocks, written out as GitHub Markdown or as one self-contained HTML file.

Blocks: Heading, Para, Bullets, Table, Figure, Code. Inline markup is limited to `code` and
**bold** so both writers agree; HTML embeds every figure as a base64 data URI (opens offline).
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""   # one letter per column, l or r; default: first left, rest right


@dataclass(frozen=True)
class Figure:
    path: str         # relative to the report's folder, e.g. figures/label_efficiency.png
    caption: str
    alt: str = ""     # short alternative text; default: the caption


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Para | Bullets | Table | Figure | Code


def _aligns(table: Table) -> str:
    return table.align or "l" + "r" * (len(table.header) - 1)


# ---------------------------------------------------------------- Markdown

def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_table(table: Table) -> str:
    rule = ["---:" if a == "r" else "---" for a in _aligns(table)]
    lines = [table.header, rule, *table.rows]
    return "\n".join("| " + " | ".join(_md_cell(c) for c in line) + " |" for line in lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + block.text
    if isinstance(block, Para):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return f"![{_md_cell(block.alt or block.caption)}]({block.path})\n\n*{block.caption}*"
    if isinstance(block, Code):
        return "```\n" + block.text.rstrip("\n") + "\n```"
    raise TypeError(f"unknown report block {block!r}")


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1080px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td.r { white-space: nowrap; }
.table-wrap { overflow-x: auto; }
code { background: #eff1f3; padding: 0 4px; border-radius: 4px; font-size: 90%; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 13px; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 14px; margin-top: .3em; }
"""


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _inline(text: str) -> str:
    """Escape, then turn `code`, **bold** and [links](#anchor) into tags."""
    out = html.escape(str(text), quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\[([^\]]+)\]\((#[\w\-]+)\)", r'<a href="\2">\1</a>', out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _html_table(table: Table) -> str:
    aligns = _aligns(table)
    head = "".join(f'<th class="{a}">{_inline(c)}</th>' for a, c in zip(aligns, table.header, strict=True))
    body = "\n".join("<tr>" + "".join(f'<td class="{a}">{_inline(c)}</td>' for a, c in zip(aligns, row, strict=True))
                     + "</tr>" for row in table.rows)
    return (f'<div class="table-wrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
            f"</table></div>")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(block: Block, base: Path) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{slug(block.text)}">{_inline(block.text)}</h{block.level}>'
    if isinstance(block, Para):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in block.items) + "\n</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return (f'<figure><img src="{_data_uri(base / block.path)}" alt="{html.escape(block.alt or block.caption)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    raise TypeError(f"unknown report block {block!r}")


def to_html(blocks: list[Block], base: Path, title: str) -> str:
    """One HTML document; figures are read from `base` and embedded."""
    body = "\n".join(_html_block(b, base) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
