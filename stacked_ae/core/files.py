"""Atomic file writes: readers see the old file or the whole new one, never a part, and a failed or
interrupted write leaves no temp file behind. Every file the package writes goes through here.

`save_torch` / `load_stamped` keep the state of unfinished work (training checkpoints, finished layers and
learning rates of a stage) under a stamp that names the settings it belongs to.
"""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


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


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in `path`; a ValueError naming the file when it is not UTF-8 JSON or not an object."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except ValueError as err:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object ({{...}}), got a {type(value).__name__}")
    return value


NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)   # a damaged .npz


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a .npz, read now (no pickles), so that damage past its first member shows: one of
    NPZ_ERRORS when the file is missing, truncated or not a zip."""
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def cpu_state(state: dict) -> dict:
    """A state dict's tensors detached and on the CPU (other entries as they are), ready to save."""
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def save_torch(path: str | os.PathLike, obj: dict) -> Path:
    """`torch.save` to `path`, atomically (see atomic_write)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def load_stamped(path: str | os.PathLike, stamp: str, key: str = "stamp", *, mmap: bool = False,
                 warn: bool = True) -> dict | None:
    """The dict `save_torch` wrote to `path` if its entry `key` is `stamp`, tensors on the CPU and never
    unpickling code (weights_only); None when the file is missing, of another stamp, or unreadable (damaged
    by a disk error or an edit by hand: the work is done again rather than the run failing; `warn` says so in
    the log). With `mmap`, tensors are mapped, not read, for a look at the small entries."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        if warn:
            log.warning("%s: unreadable kept state (%s); that work is done again", path, err)
        return None
    return saved if isinstance(saved, dict) and saved.get(key) == stamp else None
