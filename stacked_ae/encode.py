"""Codes from a trained `StackedEncoder`: of arrays (any layer, or all layers) and of data files.

`encode_file("encoder.pt", "data.csv", "codes.parquet")` reads a .npy/.npz/.csv/.parquet
table, encodes it in batches and writes .npy or .parquet (columns code_0, code_1, ...);
`encode_layers` and `decode_codes` are the array-level pieces the scikit-learn wrappers use.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .core.checks import is_int, positive_int
from .core.conv import image_shape3
from .core.data import USER_SUFFIXES, DataFormatError, check_X, images_as_rows, read_table
from .core.files import atomic_write
from .core.layers import eval_batch_size
from .core.model import DeepAutoencoder, StackedEncoder

OUTPUT_SUFFIXES = (".npy", ".parquet")


def check_output(output, n_layers: int) -> None:
    """`output` is "top", "all" or a layer number 1..n_layers; ValueError otherwise."""
    if output in ("top", "all"):
        return
    if not is_int(output) or not 1 <= output <= n_layers:
        raise ValueError(f"output must be 'top', 'all' or a layer number in 1..{n_layers}, got {output!r}")


def encode_layers(encoder: StackedEncoder, X, output="top", batch_size: int | None = None) -> torch.Tensor:
    """Codes of the top layer, of layer `output` (1-based), or of every layer side by side (CPU tensor), in
    batches of `batch_size` rows (default: eval_batch_size)."""
    n_layers = len(encoder.layers)
    check_output(output, n_layers)
    if output == "all":   # (n, n_in) -> (n, sum(sizes)), layer 1 first
        return torch.cat([encoder.encode(X, batch_size, depth=k) for k in range(1, n_layers + 1)], dim=1)
    return encoder.encode(X, batch_size, depth=None if output == "top" else int(output))


@torch.inference_mode()
def decode_codes(encoder: StackedEncoder, codes, batch_size: int | None = None) -> torch.Tensor:
    """Top-layer codes back through the decoders K..1: (n, sizes[-1]) -> (n, n_in), on CPU, in batches of
    `batch_size` codes (default: eval_batch_size)."""
    codes = check_X(codes, "codes", n_features=encoder.sizes[-1])
    model = DeepAutoencoder(encoder)
    device = next(encoder.parameters()).device
    batch_size = eval_batch_size(encoder, device) if batch_size is None else batch_size
    was_training = encoder.training
    model.eval()
    try:
        return torch.cat([model.decode(codes[s:s + batch_size].to(device)).cpu()
                          for s in range(0, len(codes), batch_size)])
    finally:
        encoder.train(was_training)


DEFAULT_LABEL_COLUMN = "label"


def encode_file(model: str | os.PathLike | StackedEncoder, input: str | os.PathLike, output: str | os.PathLike,
                *, batch_size: int | None = None, label_column: str | None = None, progress: bool = True) -> Path:
    """Encode the table in `input` with the encoder in `model` (a saved file or a StackedEncoder).

    Writes the top-layer codes to `output` (.npy: the code matrix; .parquet: columns code_0..,
    plus the label column when the input has labels), atomically. Features must be scaled the
    way the encoder's training data was. `label_column` names the labels of a .csv/.parquet
    input, which are not encoded: None (the default) drops a column named "label" where there is
    one; a name must be a column of the table. `batch_size` rows are encoded at a time (default:
    eval_batch_size). Returns the output path.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{output}: unsupported output type {output.suffix!r}; expected "
                         f"{' or '.join(OUTPUT_SUFFIXES)}")
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    if Path(input).is_dir():
        raise IsADirectoryError(f"{input}: is a folder; expected a data file ({', '.join(USER_SUFFIXES)})")
    if label_column is not None and Path(input).suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"{input}: label_column={label_column!r} names a column of a .csv or .parquet table; a "
                         f"{Path(input).suffix} file has no columns")
    encoder = model if isinstance(model, StackedEncoder) else StackedEncoder.load(model)
    batch_size = eval_batch_size(encoder) if batch_size is None else batch_size
    X, y = _read_features(input, label_column, encoder)
    bar = tqdm(range(0, len(X), batch_size), desc=f"encode {Path(input).name}", unit="batch",
               disable=not progress, leave=False)
    codes = torch.cat([encoder.encode(X[s:s + batch_size], batch_size) for s in bar]).numpy()
    _write_codes(output, codes, y, label_column)
    return output


def _read_features(path, label_column: str, encoder: StackedEncoder) -> tuple[torch.Tensor, np.ndarray | None]:
    """The feature table of `path` as a checked float32 tensor, and its labels (or None)."""
    X, y = read_table(path, DEFAULT_LABEL_COLUMN if label_column is None else label_column)
    if label_column is not None and y is None:
        raise DataFormatError(f"{path}: no column {label_column!r} (the label column asked for); the table's "
                              f"columns are {_columns(path)}")
    X, image_shape = images_as_rows(np.asarray(X), str(path))     # images (n, H, W) or (n, C, H, W), as load_dataset
    if X.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D feature table (n_samples, n_features) or images (n, height, "
                         f"width) or (n, channels, height, width), got shape {X.shape}")
    expected = encoder.image_shape
    if image_shape is not None and expected is not None and image_shape3(image_shape) != expected:
        raise ValueError(f"{path}: holds images of shape {image_shape} but the encoder reads images of shape "
                         f"{expected} (channels, height, width)")
    if X.shape[1] != encoder.n_in:
        hint = (f" (label column {DEFAULT_LABEL_COLUMN if label_column is None else label_column!r} is excluded)"
                if y is not None else
                "; if one column holds labels, name it (label_column=..., sae encode --label-column NAME)"
                if X.shape[1] == encoder.n_in + 1 and Path(path).suffix.lower() in (".csv", ".parquet") else "")
        raise ValueError(f"{path}: has {X.shape[1]} feature columns but the encoder expects {encoder.n_in}{hint}")
    X = check_X(X, str(path))
    if encoder.layers[0].decoder.activation == "sigmoid" and (X.min() < 0 or X.max() > 1):
        warnings.warn(f"{path}: features range over [{X.min():.3g}, {X.max():.3g}] but the encoder was "
                      f"trained on data in [0, 1]; scale the data the way its training data was",
                      stacklevel=3)
    return X, y


def _columns(path) -> str:
    """The first column names of a .csv/.parquet table, for an error message."""
    import pandas as pd
    columns = list(pd.read_csv(path, nrows=0).columns if str(path).lower().endswith(".csv")
                   else pd.read_parquet(path).columns)
    return ", ".join(map(repr, columns[:8])) + (f", ... ({len(columns)} in all)" if len(columns) > 8 else "")


def _write_codes(output: Path, codes: np.ndarray, y: np.ndarray | None, label_column: str | None) -> None:
    """Write atomically (core.files.atomic_write): a reader never sees half a file."""
    buffer = io.BytesIO()
    if output.suffix.lower() == ".npy":
        np.save(buffer, codes)
    else:
        import pandas as pd
        frame = pd.DataFrame(codes, columns=[f"code_{j}" for j in range(codes.shape[1])])
        if y is not None:
            frame[DEFAULT_LABEL_COLUMN if label_column is None else label_column] = y
        frame.to_parquet(buffer, index=False)
    atomic_write(output, buffer.getvalue())
