"""Atomic file writes: readers see the old file or the whole new one, never a part, and a failed or
interrupted write leaves no temp file behind. Every file the package writes goes through here.
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:   # interrupted (Ctrl-C) or failed: leave no temp file behind
        tmp.unlink(missing_ok=True)
    return path
