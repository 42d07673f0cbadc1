"""Datasets as in-memory float32 tensors in [0, 1] with a fixed, seeded train/val/test split.

`load_dataset("digits")`, `load_dataset("mnist", root="data/mnist")` or
`load_dataset("my.csv", label_column="label")` return a `Dataset`. MNIST-style data come
from IDX files (raw or gzipped) in a plain folder or in torchvision's `ROOT/MNIST/raw/`.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import is_int, is_real

KNOWN_DATASETS = ("digits", "mnist", "fashion-mnist")
IMAGE_SHAPES = {"digits": (8, 8), "mnist": (28, 28), "fashion-mnist": (28, 28)}   # what each holds, known unread
USER_SUFFIXES = (".npz", ".npy", ".csv", ".parquet")   # files of features (`read_table`, `sae encode`)
LABELED_SUFFIXES = (".npz", ".csv", ".parquet")        # ... that can also hold labels (a .npy is one array)
DATA_ENV = "STACKED_AE_DATA"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# torchvision's folder names for each dataset, and the usual plain-folder names.
FOLDERS = {"mnist": ("MNIST", "mnist"), "fashion-mnist": ("FashionMNIST", "fashion-mnist", "fashion_mnist")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing; the message lists every place looked and how to provide them."""


class DataFormatError(ValueError):
    """A data file exists but is truncated, corrupt or of the wrong shape."""


class SplitSizeError(ValueError):
    """`val_size` or `test_size` does not fit the data (the message names the argument)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    X_train: torch.Tensor   # (n_train, n_features) float32 in [0, 1]
    y_train: torch.Tensor   # (n_train,) int64 in [0, n_classes)
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, ...] | None   # e.g. (28, 28); None for non-image data
    classes: tuple[str, ...]
    name: str = ""

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> dict:
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


# ---------------------------------------------------------------- validation at the boundary

def check_X(X, name: str = "X", n_features: int | None = None) -> torch.Tensor:
    """A finite, non-empty 2-D float32 tensor, or ValueError naming `name` and the problem."""
    if isinstance(X, torch.Tensor):
        t = X.detach()
    else:
        try:
            # torch cannot share read-only or negatively strided memory; np.require copies only those.
            t = torch.from_numpy(np.require(np.asarray(X, dtype=np.float32), requirements=["C", "W"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array, got {type(X).__name__}: {err}") from None
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must hold numbers, got dtype {t.dtype}")
    t = t.float()
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(f"{name} has {t.shape[1]} features, expected {n_features}")
    return t


def check_labels(y, n_classes: int | None = None, name: str = "y", n: int | None = None) -> torch.Tensor:
    """Integer class labels in [0, n_classes) as int64, or ValueError naming the problem."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))]
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats "
                             f"such as {bad[:3].tolist()}")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} has negative labels (min {arr.min()}); labels must be in [0, n_classes)")
    if n_classes is not None and arr.max() >= n_classes:
        raise ValueError(f"{name} has label {arr.max()} but the model has {n_classes} classes "
                         f"(labels must be in [0, {n_classes}))")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} labels for {n} samples")
    return torch.from_numpy(arr)


# ---------------------------------------------------------------- IDX files (MNIST format)

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a uint8 array, checking magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:   # zlib.error: a damaged deflate stream
        raise DataFormatError(f"{path}: cannot read IDX file ({err}); the file is corrupt or truncated, "
                              f"replace it with a fresh copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataFormatError(f"{path}: not an unsigned-byte IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(shape)   # Python ints: np.prod overflows int64 on lying headers
    if len(data) != expected:
        raise DataFormatError(f"{path}: IDX header promises shape {shape} ({expected} bytes) "
                              f"but the file has {len(data)} bytes; the file is truncated or corrupt")
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except ValueError as err:   # e.g. shape (0, 2**32 - 1, 2**32 - 1): no bytes, yet too big for numpy
        raise DataFormatError(f"{path}: IDX header shape {shape} is impossible ({err})") from None


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    dirs = [root]
    for folder in FOLDERS[name]:
        dirs += [root / folder / "raw", root / folder]
    return dirs


def find_idx_files(name: str, root: str | os.PathLike | None) -> dict[str, Path]:
    """Locate the four IDX files of `name`, raw or gzipped, or raise DataNotFoundError."""
    roots = [Path(root)] if root is not None else []
    if root is None and os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]))
    looked = []
    for r in roots:
        for d in _candidate_dirs(name, r.expanduser()):
            found = {}
            for key, stem in IDX_FILES.items():
                for candidate in (d / stem, d / f"{stem}.gz"):
                    if candidate.is_file():
                        found[key] = candidate
                        break
            if len(found) == len(IDX_FILES):
                return found
            looked.append(d)
    where = "\n  ".join(str(p) for p in looked) or f"(nowhere: no data root given and ${DATA_ENV} is unset)"
    raise DataNotFoundError(
        f"{name}: the IDX files {', '.join(IDX_FILES.values())} (raw or .gz) were not found. Looked in:\n  "
        f"{where}\nProvide them with a data root (root=..., --data-root DIR or ${DATA_ENV}) pointing at a "
        f"folder that holds them, or at torchvision's layout ROOT/{FOLDERS[name][0]}/raw/; "
        f"or download them where the internet is reachable (download=True; in a pipeline: "
        f"--set data.download=true).")


def _download(name: str, root: Path) -> None:
    import torchvision
    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_idx_dataset(name: str, root=None, download: bool = False, n_classes: int = 10) -> tuple:
    """(X_train, y_train, X_test, y_test, image_shape): uint8 arrays, images flattened to rows*cols
    columns, and (rows, cols) as the image files' headers give it (the same in both splits).
    Labels must lie in [0, n_classes)."""
    if download:
        if root is None and not os.environ.get(DATA_ENV):
            raise ValueError(f"downloading needs a data root to download into (root=..., --data-root DIR or "
                             f"${DATA_ENV})")
        _download(name, Path(root if root is not None else os.environ[DATA_ENV]))
    paths = find_idx_files(name, root)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataFormatError(f"{name}: {split} images {images.shape} and labels {labels.shape} do not "
                                  f"match (expected (n, rows, cols) images and n labels)")
        if len(labels) and labels.max() >= n_classes:
            at = int(np.argmax(labels >= n_classes))
            raise DataFormatError(f"{paths[f'{split}_labels']}: label {labels[at]} at index {at} is outside the "
                                  f"{n_classes} classes of {name} (0-{n_classes - 1}); the file is corrupt")
    image_shape = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != image_shape:
        raise DataFormatError(f"{name}: training images are {image_shape[0]}x{image_shape[1]} but test images "
                              f"{arrays['test_images'].shape[1]}x{arrays['test_images'].shape[2]}")
    return (arrays["train_images"].reshape(len(arrays["train_images"]), -1), arrays["train_labels"],
            arrays["test_images"].reshape(len(arrays["test_images"]), -1), arrays["test_labels"],
            tuple(int(d) for d in image_shape))


# ---------------------------------------------------------------- user files

def read_table(path: str | os.PathLike, label_column: str = "label") -> tuple[np.ndarray, np.ndarray | None]:
    """Features and labels (None if absent) from .npz (X, y), .npy (features only), .csv or .parquet."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        return _read_numpy(path, suffix)
    if suffix in (".csv", ".parquet"):
        return _read_frame(path, label_column)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(USER_SUFFIXES)}")


# What np.savez (a zip archive, possibly empty) and np.save write first; anything else np.load would try to unpickle.
NUMPY_SIGNATURES = {".npz": (b"PK\x03\x04", b"PK\x05\x06"), ".npy": (b"\x93NUMPY",)}


def _read_numpy(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray | None]:
    """.npz: arrays X and y (or None); .npy: (array, None). Never unpickles; every failure is a DataFormatError."""
    try:
        with open(path, "rb") as fh:   # our handle: np.load leaks its own when a .npz is not a zip archive
            if not fh.read(6).startswith(NUMPY_SIGNATURES[suffix]):
                raise DataFormatError(f"{path}: not a {suffix} file (it does not start with the {suffix} signature)")
            fh.seek(0)
            if suffix == ".npy":
                return np.load(fh, allow_pickle=False), None
            with np.load(fh, allow_pickle=False) as f:
                if "X" not in f.files:
                    raise DataFormatError(f"{path}: expected arrays 'X' (and 'y'), found {sorted(f.files)}")
                X, y = f["X"], (f["y"] if "y" in f.files else None)
    except DataFormatError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
        raise DataFormatError(f"{path}: not a readable {suffix} file ({type(err).__name__}: {err})") from None
    for key, array in (("X", X), ("y", y)):   # a member that is not .npy data loads as raw bytes
        if array is not None and not isinstance(array, np.ndarray):
            raise DataFormatError(f"{path}: member {key!r} is not a NumPy array (.npy) but raw bytes")
    return X, y


def _read_frame(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as err:
        raise DataFormatError(f"{path}: cannot parse ({type(err).__name__}: {err})") from None
    if frame.empty:
        raise DataFormatError(f"{path}: the table is empty (columns {list(frame.columns)[:5]}, {len(frame)} rows); "
                              f"expected at least one row of numeric features")
    y = None
    if label_column in frame.columns:
        y = frame[label_column].to_numpy()
        frame = frame.drop(columns=[label_column])
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        hint = "" if y is not None else (f" (and no label column {label_column!r}; name it with label_column=..., "
                                         f"or --set data.label_column=... in a pipeline)")
        raise DataFormatError(f"{path}: feature columns must be numeric; non-numeric: {non_numeric[:5]}{hint}")
    X = frame.to_numpy(dtype=np.float64)
    too_large = np.isfinite(X) & (np.abs(X) > np.finfo(np.float32).max)
    if too_large.any():
        raise DataFormatError(f"{path}: {int(too_large.sum())} feature values exceed the float32 range "
                              f"(|x| > {np.finfo(np.float32).max:.3g}); rescale the data")
    return X.astype(np.float32), y


def images_as_rows(X: np.ndarray, source: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Images (n, H, W) or (n, C, H, W) as rows of pixels, with their shape; a table as it is (no shape)."""
    if X.ndim not in (3, 4):
        return X, None
    if min(X.shape[1:], default=0) < 1 or X.shape[0] == 0:
        raise DataFormatError(f"{source}: images of shape {X.shape} hold no pixels; expected (n, height, width) "
                              f"or (n, channels, height, width)")
    return X.reshape(len(X), -1), tuple(int(d) for d in X.shape[1:])


def _check_table(X: np.ndarray, y: np.ndarray, source: str) -> None:
    """A non-empty 2-D table of real numbers and one label per row, or DataFormatError naming `source`."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataFormatError(f"{source}: expected a 2-D feature table with at least one row and one feature "
                              f"column, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DataFormatError(f"{source}: features must be real numbers, got dtype {X.dtype}")
    bad = int((~np.isfinite(X)).sum()) if X.dtype.kind == "f" else 0
    if bad:
        raise DataFormatError(f"{source}: features contain {bad} NaN or infinite values")
    too_large = int((np.abs(X) > np.finfo(np.float32).max).sum()) if X.dtype.kind == "f" else 0
    if too_large:
        raise DataFormatError(f"{source}: {too_large} feature values exceed the float32 range "
                              f"(|x| > {np.finfo(np.float32).max:.3g}); rescale the data")
    if y.ndim != 1 or len(y) != len(X):
        raise DataFormatError(f"{source}: expected one label per row ({len(X)}), got labels of shape {y.shape}")


def _encode_labels(y: np.ndarray, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map arbitrary labels to 0..k-1 (sorted), keeping their names as `classes`."""
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataFormatError(f"{source}: the label column contains NaN or infinite values")
    missing = (np.flatnonzero([v is None or (isinstance(v, float) and math.isnan(v)) for v in y])
               if y.dtype.kind == "O" else ())
    if len(missing):
        raise DataFormatError(f"{source}: the label column has {len(missing)} missing "
                              f"value{'s' if len(missing) > 1 else ''} (the first in row {missing[0] + 1} of "
                              f"{len(y)}); every row needs a label")
    if y.dtype.kind == "O" and len({type(v) for v in y}) > 1:
        raise DataFormatError(f"{source}: the label column mixes value types "
                              f"({', '.join(sorted({type(v).__name__ for v in y}))}); give every label one type")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataFormatError(f"{source}: 1 class (label {classes[0]}); classification needs at least 2")
    return codes.astype(np.int64), tuple(str(c) for c in classes)


# ---------------------------------------------------------------- splitting and scaling

def _split_indices(n: int, n_val: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(n)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def _count(size: float | int, n: int, key: str) -> int:
    """A split size given as a fraction of n or as a count."""
    if not is_real(size) or not size >= 0:    # `not >=`: NaN too
        raise SplitSizeError(f"{key} must be a fraction in [0, 1) or a count, got {size!r}")
    if not is_int(size) and size >= 1:   # 1.0 would read as one example, 2.7 as two
        raise SplitSizeError(f"{key}={size!r}: a fraction must be below 1 and a count an integer (write "
                             f"{int(size) if float(size).is_integer() else round(size)} for a count)")
    count = int(round(size * n)) if not is_int(size) and size < 1 else int(size)
    if count >= n:
        raise SplitSizeError(f"{key}={size!r} leaves no training data out of {n} examples")
    if count == 0 and size > 0:
        raise SplitSizeError(f"{key}={size!r} is 0 of {n} examples once rounded; give a larger fraction "
                             f"or a count >= 1")
    return count


def _scale(X: np.ndarray, source: str) -> np.ndarray:
    """uint8 pixels -> /255 (a fixed scale: no row shapes it)."""
    if X.dtype != np.uint8:
        raise DataFormatError(f"{source}: expected uint8 pixels, got dtype {X.dtype}")
    return X.astype(np.float32) / 255.0


def _scale_by_training_rows(X_train: np.ndarray, held_out: tuple[np.ndarray, ...],
                            source: str) -> tuple[np.ndarray, ...]:
    """(X_train, *held_out) in [0, 1], scaled by what the training rows alone show.

    uint8 -> /255. Other data: unchanged if the training rows lie in [0, 1], else min-max scaled
    per dataset (not per feature) with the training rows' minimum and maximum. Held-out rows get
    the same map and are then clipped to [0, 1]: a value beyond the training range becomes 0 or 1
    (a sigmoid / cross-entropy first layer needs targets in [0, 1]). The training rows are clipped
    too: float32 rounding can leave their maximum a step above 1.
    """
    if X_train.dtype == np.uint8:
        return tuple(a.astype(np.float32) / 255.0 for a in (X_train, *held_out))
    arrays = [a.astype(np.float32) for a in (X_train, *held_out)]   # finite: see _check_table
    lo, hi = float(arrays[0].min()), float(arrays[0].max())
    if not (0.0 <= lo and hi <= 1.0):
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        arrays = [(a - lo) * scale for a in arrays]
    return tuple(np.clip(a, 0.0, 1.0) for a in arrays)


def _to_dataset(parts, image_shape, classes, name) -> Dataset:
    Xtr, ytr, Xva, yva, Xte, yte = parts
    # np.require copies only read-only (e.g. np.frombuffer IDX) or non-contiguous arrays.
    t = lambda a: torch.from_numpy(np.require(a, requirements=["C", "W"]))  # noqa: E731
    return Dataset(t(Xtr), t(ytr).long(), t(Xva), t(yva).long(), t(Xte), t(yte).long(),
                   image_shape, tuple(classes), name)


def load_dataset(name: str = "digits", root: str | os.PathLike | None = None, *, val_size: float | int = 0.1,
                 test_size: float | int = 0.25, seed: int = 0, download: bool = False,
                 label_column: str = "label") -> Dataset:
    """Load a dataset by name (digits, mnist, fashion-mnist) or from a user file.

    MNIST and Fashion-MNIST keep their standard 10,000-image test set; `val_size` (fraction or
    count) is drawn from the training images by `seed`. Other sources are split into
    train/val/test by `test_size` and `val_size`, with the same seed. A user table is scaled to
    [0, 1] from its training rows only (see `_scale_by_training_rows`): validation and test
    values outside the training range are clipped to [0, 1]. It needs at least two classes.
    """
    if name == "digits":
        from sklearn.datasets import load_digits
        bunch = load_digits()
        X, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
        return _split_all(X, y, (8, 8), tuple(str(c) for c in range(10)), name, val_size, test_size, seed)
    if name in ("mnist", "fashion-mnist"):
        classes = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(c) for c in range(10))
        Xtr, ytr, Xte, yte, image_shape = load_idx_dataset(name, root, download, n_classes=len(classes))
        n_val = _count(val_size, len(Xtr), "val_size")
        order = np.random.default_rng(seed).permutation(len(Xtr))
        tr, va = order[n_val:], order[:n_val]
        Xtr, Xte = _scale(Xtr, name), _scale(Xte, name)
        return _to_dataset((Xtr[tr], ytr[tr], Xtr[va], ytr[va], Xte, yte), image_shape, classes, name)
    if Path(name).suffix.lower() == ".npy":
        raise DataFormatError(f"{name}: a .npy file holds one array of features and no labels; give a .npz with "
                              f"arrays X and y, or a .csv/.parquet with a label column")
    if Path(name).suffix.lower() in LABELED_SUFFIXES:
        X, y = read_table(name, label_column)
        if y is None:
            raise DataFormatError(f"{name}: no label column {label_column!r} (or array 'y' in a .npz); "
                                  f"name the label column with label_column=... (in a pipeline: "
                                  f"--set data.label_column=...)")
        X, image_shape = images_as_rows(np.asarray(X), name)
        _check_table(X, np.asarray(y), name)
        y, classes = _encode_labels(np.asarray(y), name)
        return _split_all(X, y, image_shape, classes, Path(name).stem, val_size, test_size, seed,
                          scale_source=name)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}, "
                     f"or a file ending in {', '.join(LABELED_SUFFIXES)}")


def _split_all(X, y, image_shape, classes, name, val_size, test_size, seed, scale_source=None) -> Dataset:
    """Split by seed; with `scale_source` (a user file), scale by the training rows afterwards."""
    n_test = _count(test_size, len(X), "test_size")
    n_val = _count(val_size, len(X), "val_size")
    if n_val + n_test >= len(X):
        raise SplitSizeError(f"val_size={val_size!r} and test_size={test_size!r} leave no training data "
                             f"out of {len(X)} examples")
    tr, va, te = _split_indices(len(X), n_val, n_test, seed)
    X_tr, X_va, X_te = X[tr], X[va], X[te]
    if scale_source is not None:
        X_tr, X_va, X_te = _scale_by_training_rows(X_tr, (X_va, X_te), scale_source)
    return _to_dataset((X_tr, y[tr], X_va, y[va], X_te, y[te]), image_shape, classes, name)


def labeled_subset(y: torch.Tensor, per_class: int | str, seed: int, *, at_most: bool = False) -> torch.Tensor:
    """Indices of `per_class` examples of each class drawn by `seed` ("all": every index).

    A class with fewer examples is an error, or, with `at_most=True`, contributes all it has."""
    if per_class == "all":
        return torch.arange(len(y))
    counts = torch.bincount(y)
    smallest = int(counts[counts > 0].min())
    if per_class > smallest and not at_most:
        raise ValueError(f"label budget {per_class} per class exceeds the smallest class in the training "
                         f"split ({smallest} examples)")
    rng = np.random.default_rng(seed)
    y_np = y.cpu().numpy()
    picks = [rng.choice(members, min(per_class, len(members)), replace=False)
             for members in (np.flatnonzero(y_np == c) for c in np.unique(y_np))]
    return torch.from_numpy(np.sort(np.concatenate(picks)))
