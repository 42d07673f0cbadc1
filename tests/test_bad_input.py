"""Bad input, case by case: each is refused with an error whose message names the culprit and what was expected.

One row per case: pipeline files, IDX data roots, user tables, arrays and labels, checkpoints. The `sae` rows check
that the same mistakes end in one short line and exit status 2, with no traceback unless `--debug`. Cases that
other files already cover are not repeated here (test_config, test_data, test_train, test_model, test_encode).
"""
from __future__ import annotations

import ast
import gzip
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import stacked_ae
from stacked_ae import CheckpointError, DataFormatError, DataNotFoundError, StackedEncoder, load_dataset
from stacked_ae.cli import main
from stacked_ae.core.data import DATA_ENV, IDX_FILES, check_labels, read_table
from stacked_ae.pipeline.config import ConfigError, from_dict, load_config
from stacked_ae.pipeline.runner import run_pipeline

PACKAGE = Path(stacked_ae.__file__).resolve().parent


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """A data root from the environment must not rescue (or change) any case below."""
    monkeypatch.delenv(DATA_ENV, raising=False)


# ---------------------------------------------------------------- pipeline files

TWO_LAYERS = "[model]\nsizes = [16, 8]\n"

CONFIG_CASES = [
    # malformed TOML: the file and the position
    ("duplicate-key", 'name = "a"\nname = "b"\n', r"p\.toml: not valid TOML: Cannot overwrite a value \(at line 2"),
    ("unclosed-table", "[pretrain\nepochs = 2\n", r"p\.toml: not valid TOML: Expected '\]' .*\(at line 1"),
    ("two-values-on-a-line", "[pretrain]\nepochs = 1 2\n", r"p\.toml: not valid TOML: .*\(at line 2"),
    ("not-utf8", b"name = \"caf\xe9\"\n", r"p\.toml: cannot read pipeline file \('utf-8' codec can't decode"),
    # unknown keys, at each level
    ("unknown-section", "[training]\nepochs = 2\n",
     r"unknown key 'training'; known keys: name, seeds, task, arms, data, model, pretrain, finetune, run, reference"),
    ("run-executor-unknown", '[run]\nexecutor = "dask"\n', r"run.executor must be one of local, ray; got 'dask'"),
    ("run-workers-negative", "[run]\nworkers = -1\n", r"run.workers must be >= 0"),
    ("val-per-class-zero", "[data]\nval_per_class = 0\n", r"data.val_per_class must be \"budget\""),
    ("unknown-key-in-model", "[model]\nwidths = [8]\n",
     r"unknown key 'model.widths'; known keys in \[model\]: sizes, activation, output_activation"),
    ("unknown-subtable", "[pretrain.layer1]\nepochs = 2\n",
     r"unknown key 'pretrain.layer1'; known keys in \[pretrain\]: epochs, lr"),
    ("section-not-a-table", 'model = "big"\n', r"model must be a table \(\[model\]\), got 'big'"),
    # wrong types
    ("name-a-number", "name = 3\n", r"name must be a string, got 3"),
    ("val-size-a-string", '[data]\nval_size = "10%"\n', r"data.val_size must be an integer or a number, got '10%'"),
    ("download-a-string", '[data]\ndownload = "yes"\n', r"data.download must be true or false, got 'yes'"),
    ("patience-a-word", '[finetune]\npatience = "never"\n',
     r"finetune.patience must be an integer or \"none\", got 'never'"),
    ("activation-a-number", "[model]\nactivation = 1\n", r"model.activation must be a string or a list of strings"),
    ("epochs-a-fraction", "[finetune]\nepochs = 2.5\n", r"finetune.epochs must be an integer, got 2.5"),
    ("lr-not-finite", "[finetune]\nlr = nan\n", r"finetune.lr must be a list of numbers, got nan"),
    # zero or negative sizes, epochs, learning rates, batch sizes
    ("sizes-negative", "[model]\nsizes = [16, -8]\n", r"model.sizes must be a non-empty list of positive widths"),
    ("sizes-empty", "[model]\nsizes = []\n", r"model.sizes must be a non-empty list of positive widths, got \[\]"),
    ("pretrain-epochs-zero", "[pretrain]\nepochs = 0\n", r"pretrain.epochs must be a positive integer, got 0"),
    ("pretrain-epochs-per-layer-negative", TWO_LAYERS + "[pretrain]\nepochs = [2, -1]\n",
     r"pretrain.epochs must be a positive integer, got -1"),
    ("finetune-epochs-negative", "[finetune]\nepochs = -1\n", r"finetune.epochs must be a positive integer, got -1"),
    ("pretrain-lr-zero", "[pretrain]\nlr = 0\n", r"pretrain.lr must be a positive number, got 0"),
    ("finetune-lr-negative", "[finetune]\nlr = [0.01, -0.1]\n", r"finetune.lr must be a positive number, got -0.1"),
    ("finetune-lr-duplicates", "[finetune]\nlr = [0.1, 0.1]\n", r"finetune\.lr has duplicates: \[0\.1, 0\.1\]"),
    ("finetune-probe-lr-duplicates", "[finetune]\nprobe_lr = [0.1, 0.3, 0.1]\n",
     r"finetune\.probe_lr has duplicates: \[0\.1, 0\.3, 0\.1\]"),
    ("finetune-lr-empty", "[finetune]\nlr = []\n", r"finetune.lr must list at least one learning rate"),
    ("finetune-probe-lr-negative", "[finetune]\nprobe_lr = [0.1, -1]\n",
     r"finetune.probe_lr must be a positive number, got -1.0"),
    ("finetune-extend-negative", "[finetune]\nextend = -1\n", r"finetune.extend must be an integer >= 0 \(0: the grid"),
    ("pretrain-batch-negative", "[pretrain]\nbatch_size = -32\n",
     r"pretrain.batch_size must be a positive integer, got -32"),
    ("patience-zero", "[finetune]\npatience = 0\n", r"finetune.patience must be a positive integer, got 0"),
    ("seed-negative", "seeds = [0, -1]\n", r"seeds must be a non-empty list of distinct integers in \[0, 4294967295\], "
                                         r"got \[0, -1\]"),
    ("seed-beyond-32-bits", "seeds = [4294967296]\n", r"seeds must be a non-empty list of distinct integers in "
                                                      r"\[0, 4294967295\], got \[4294967296\]"),
    ("split-seed-negative", "[data]\nsplit_seed = -1\n", r"data.split_seed must be an integer in \[0, 4294967295\], "
                                                         r"got -1"),
    ("val-size-zero", "[data]\nval_size = 0\n", r"data.val_size must be a fraction in \(0, 1\) or a count >= 1 "
                                                 r"\(model selection and early stopping read it\), got 0"),
    ("test-size-zero", "[data]\ntest_size = 0.0\n", r"data.test_size must be a fraction in \(0, 1\) or a count >= 1 "
                                                     r"\(the test error is measured on it\), got 0.0"),
    ("budget-negative", "[data]\nbudgets = [-5]\n", r"data.budgets entries must be positive integers .* got -5"),
    ("weight-decay-negative", "[pretrain]\nweight_decay = -1.0\n", r"pretrain.weight_decay must be >= 0, got -1.0"),
    ("val-size-above-one", "[data]\nval_size = 1.5\n", r"data.val_size must be a fraction in \(0, 1\) or a count"),
    # a noise level outside [0, 1)
    ("noise-negative", "[pretrain]\nnoise = -0.1\n", r"pretrain.noise must be in \[0, 1\), got -0.1"),
    ("noise-per-layer-above-one", TWO_LAYERS + "[pretrain]\nnoise = [0.1, 1.5]\n",
     r"pretrain.noise must be in \[0, 1\), got 1.5"),
    # per-layer lists of the wrong length
    ("activation-list-too-short", "[model]\nsizes = [16, 8, 4]\nactivation = [\"tanh\"]\n",
     r"model.activation has 1 entries but model.sizes has 3 layers; give one value or exactly 3"),
    ("lr-list-too-long", TWO_LAYERS + "[pretrain]\nlr = [0.1, 0.1, 0.1]\n",
     r"pretrain.lr has 3 entries but the model has 2 layers; give a scalar or exactly 2 values"),
    ("per-layer-lists-disagree", TWO_LAYERS + "[pretrain]\nlr = [0.1, 0.1, 0.1]\nnoise = [0.1, 0.2]\n",
     r"pretrain per-layer lists disagree in length: \{'lr': 3, 'noise': 2\}; give each a scalar or exactly one"),
    # unknown names: the message lists the known ones
    ("unknown-optimizer", '[finetune]\noptimizer = "rmsprop"\n', r"finetune.optimizer must be one of adam, sgd; got"),
    ("unknown-activation-in-list", TWO_LAYERS + 'activation = ["tanh", "swish"]\n',
     r"model.activation must be one of sigmoid, tanh, relu, linear, leaky_relu, elu, softplus; got 'swish'"),
    ("unknown-corruption-in-list", TWO_LAYERS + '[pretrain]\ncorruption = ["mask", "dropout"]\n',
     r"pretrain.corruption must be one of none, mask, gaussian, salt_pepper; got 'dropout'"),
    ("unknown-dataset-suffix", '[data]\ndataset = "data.txt"\n',
     r"data.dataset must be one of digits, mnist, fashion-mnist or a file ending in \.npz, \.csv, \.parquet"),
    ("dataset-a-npy-file", '[data]\ndataset = "x.npy"\n',
     r"data.dataset: '.*x\.npy' is a \.npy file, one array of features with no labels; a pipeline needs labels: "
     r"a \.npz with arrays X and y"),
    ("unknown-schedule", '[pretrain]\nschedule = "step"\n',
     r"pretrain.schedule must be one of constant, cosine, linear; got 'step'"),
    ("unknown-task", 'task = "regression"\n', r"task must be one of classification, reconstruction; got 'regression'"),
    ("arm-of-another-task", 'task = "reconstruction"\narms = ["frozen"]\n',
     r"arms: 'frozen' is not an arm of a reconstruction pipeline; known: pretrained, random, pca"),
]


@pytest.mark.parametrize("text, message", [pytest.param(t, m, id=i) for i, t, m in CONFIG_CASES])
def test_bad_pipeline_file_raises_config_error(tmp_path, text, message):
    """Each bad pipeline file raises ConfigError naming the file, the dotted key and what is allowed."""
    path = tmp_path / "p.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value), f"the message does not name the file: {err.value}"


# ---------------------------------------------------------------- MNIST-style IDX data roots

IDX_ARRAYS = {   # a tiny, well-formed stand-in for MNIST: 3 classes of 4x4 images
    "train_images": np.arange(30 * 16).reshape(30, 4, 4) % 256,
    "train_labels": np.arange(30) % 3,
    "test_images": np.arange(9 * 16).reshape(9, 4, 4) % 256,
    "test_labels": np.arange(9) % 3,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array: magic, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_root(tmp_path: Path) -> Path:
    """A folder holding the four IDX files, gzipped, under their standard names."""
    root = tmp_path / "idx"
    root.mkdir()
    for role, array in IDX_ARRAYS.items():
        (root / f"{IDX_FILES[role]}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return root


def _replace(role: str, data: bytes, gz: bool = True):
    """A damage: the file of `role` replaced by `data` (gzipped or raw)."""
    def damage(root: Path) -> None:
        (root / f"{IDX_FILES[role]}.gz").unlink()
        (root / (f"{IDX_FILES[role]}.gz" if gz else IDX_FILES[role])).write_bytes(data)
    return damage


def _flip_byte(role: str, at: int | None = None):
    """A damage: one byte of the gzip file inverted (default: mid-stream), as in a corrupt download."""
    def damage(root: Path) -> None:
        path = root / f"{IDX_FILES[role]}.gz"
        data = bytearray(path.read_bytes())
        data[len(data) // 2 if at is None else at] ^= 0xFF
        path.write_bytes(bytes(data))
    return damage


def _delete(role: str):
    return lambda root: (root / f"{IDX_FILES[role]}.gz").unlink()


IMAGES = idx_bytes(IDX_ARRAYS["train_images"])
IDX_CASES = [
    ("root-missing", lambda root: shutil.rmtree(root), DataNotFoundError,
     r"(?s)mnist: the IDX files .* were not found\. Looked in:\n  \S*idx\n.*--data-root DIR"),
    ("one-file-missing", _delete("test_labels"), DataNotFoundError,
     r"t10k-labels-idx1-ubyte \(raw or \.gz\) were not found"),
    ("truncated-raw", _replace("train_images", IMAGES[:200], gz=False), DataFormatError,
     r"train-images-idx3-ubyte: IDX header promises shape \(30, 4, 4\) \(496 bytes\) but the file has 200 bytes; "
     r"the file is truncated"),
    ("truncated-gz", _replace("train_images", gzip.compress(IMAGES)[:60]), DataFormatError,
     r"train-images-idx3-ubyte\.gz: cannot read IDX file .*corrupt or truncated, replace it with a fresh copy"),
    ("corrupt-gz-checksum", _flip_byte("train_images"), DataFormatError,
     r"train-images-idx3-ubyte\.gz: cannot read IDX file \(CRC check failed .*corrupt or truncated"),
    ("corrupt-gz-deflate-stream", _flip_byte("train_images", at=10), DataFormatError,   # was a bare zlib.error
     r"train-images-idx3-ubyte\.gz: cannot read IDX file \(Error -3 while decompressing data: .*corrupt or truncated"),
    ("not-idx", _replace("test_labels", gzip.compress(b"<html>404 Not Found</html>")), DataFormatError,
     r"t10k-labels-idx1-ubyte\.gz: not an unsigned-byte IDX file \(bad magic number 3c68746d\)"),
    ("header-truncated", _replace("test_labels", gzip.compress(bytes([0, 0, 8, 3, 0, 0]))), DataFormatError,
     r"t10k-labels-idx1-ubyte\.gz: truncated IDX header"),
    ("header-lies", _replace("test_labels", gzip.compress(bytes([0, 0, 8, 2]) + b"\xff" * 8 + b"\x01")),
     DataFormatError, r"promises shape \(4294967295, 4294967295\) \(18446744065119617037 bytes\) but the file has 13"),
    ("header-impossible", _replace("test_labels", gzip.compress(bytes([0, 0, 8, 3]) + bytes(4) + b"\xff" * 8)),
     DataFormatError, r"t10k-labels-idx1-ubyte\.gz: IDX header shape \(0, 4294967295, 4294967295\) is impossible"),
    ("labels-do-not-match-images", _replace("test_labels", gzip.compress(idx_bytes(np.zeros(5)))), DataFormatError,
     r"mnist: test images \(9, 4, 4\) and labels \(5,\) do not match \(expected \(n, rows, cols\) images and n labels"),
]


def test_the_stand_in_idx_root_loads(tmp_path):
    """The undamaged stand-in loads, so each case below fails for its damage alone."""
    ds = load_dataset("mnist", root=idx_root(tmp_path), val_size=3)
    assert ds.sizes() == {"train": 27, "val": 3, "test": 9} and ds.n_features == 16, ds.sizes()


@pytest.mark.parametrize("damage, error, message", [pytest.param(d, e, m, id=i) for i, d, e, m in IDX_CASES])
def test_bad_idx_root_raises_a_data_error(tmp_path, damage, error, message):
    """A missing, truncated, corrupt or inconsistent IDX root raises a data error naming the file and the problem."""
    root = idx_root(tmp_path)
    damage(root)
    with pytest.raises(error, match=message):
        load_dataset("mnist", root=root, val_size=3)


# ---------------------------------------------------------------- user tables (.csv, .npz, .npy)

def _text(content: str):
    return lambda path: path.write_text(content)


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


X4 = np.random.default_rng(0).random((8, 3))
Y4 = np.arange(8) % 2
INF = np.where(np.eye(8, 3) > 0, np.inf, X4)

TABLE_CASES = [
    ("csv-non-numeric-feature", "t.csv", _text("a,b,label\n1,x,0\n2,3,1\n"),
     r"t\.csv: feature columns must be numeric; non-numeric: \['b'\]"),
    ("csv-nan-feature", "t.csv", _text("a,b,label\n1,,0\n2,3,1\n4,5,0\n6,7,1\n"),
     r"t\.csv: features contain 1 NaN or infinite values"),
    ("csv-nan-label", "t.csv", _text("a,b,label\n1,2,\n2,3,1\n4,5,0\n6,7,1\n"),
     r"t\.csv: the label column contains NaN or infinite values"),
    ("csv-missing-text-label", "t.csv", _text("a,b,label\n1,2,cat\n2,3,dog\n4,5,\n6,7,cat\n"),
     r"t\.csv: the label column has 1 missing value \(the first in row 3 of 4\); every row needs a label"),
    ("csv-header-only", "t.csv", _text("a,b,label\n"),
     r"t\.csv: the table is empty \(columns \['a', 'b', 'label'\], 0 rows\); expected at least one row"),
    ("csv-empty-file", "t.csv", _text(""), r"t\.csv: cannot parse \(EmptyDataError: No columns to parse"),
    ("csv-labels-only", "t.csv", _text("label\n0\n1\n0\n1\n"),
     r"t\.csv: expected a 2-D feature table with at least one row and one feature column, got shape \(4, 0\)"),
    ("npz-zero-rows", "t.npz", _npz(X=np.zeros((0, 3)), y=np.zeros(0)),
     r"t\.npz: expected a 2-D feature table with at least one row and one feature column, got shape \(0, 3\)"),
    ("npz-inf", "t.npz", _npz(X=INF, y=Y4), r"t\.npz: features contain 3 NaN or infinite values"),
    ("npz-nan-in-two-rows", "t.npz", _npz(X=np.r_[np.full((1, 3), np.nan), np.zeros((1, 3))], y=np.r_[0, 1]),
     r"t\.npz: features contain 3 NaN or infinite values"),   # found before the split: 2 rows split into nothing
    ("npz-beyond-float32", "t.npz", _npz(X=X4 * 1e300, y=Y4), r"t\.npz: \d+ feature values exceed the float32 range"),
    ("npz-without-y", "t.npz", _npz(X=X4), r"t\.npz: no label column 'label' \(or array 'y' in a \.npz\)"),
    ("npz-without-X", "t.npz", _npz(features=X4, y=Y4), r"t\.npz: expected arrays 'X' \(and 'y'\), found"),
    ("npz-fewer-labels-than-rows", "t.npz", _npz(X=X4, y=Y4[:5]),
     r"t\.npz: expected one label per row \(8\), got labels of shape \(5,\)"),
    ("npz-labels-2d", "t.npz", _npz(X=X4, y=np.zeros((8, 2))),
     r"t\.npz: expected one label per row \(8\), got labels of shape \(8, 2\)"),
    ("npz-text-features", "t.npz", _npz(X=np.full((8, 3), "a"), y=Y4),
     r"t\.npz: features must be real numbers, got dtype <U1"),
    ("npz-complex-features", "t.npz", _npz(X=X4 + 1j, y=Y4),
     r"t\.npz: features must be real numbers, got dtype complex"),
    ("npz-1d-features", "t.npz", _npz(X=X4[:, 0], y=Y4), r"t\.npz: expected a 2-D feature table .* got shape \(8,\)"),
    ("npz-pickled-objects", "t.npz", _npz(X=np.array([{"a": 1}] * 8, dtype=object), y=Y4),
     r"t\.npz: not a readable \.npz file \(ValueError: Object arrays cannot be loaded when allow_pickle=False"),
    ("npz-not-a-zip", "t.npz", _text("X,y\n1,2\n"),
     r"t\.npz: not a \.npz file \(it does not start with the \.npz signature\)"),
    ("npy-holds-no-labels", "t.npy", lambda path: np.save(path, X4),
     r"t\.npy: a \.npy file holds one array of features and no labels; give a \.npz with arrays X and y"),
    ("unsupported-suffix", "t.txt", _text("1,2,0\n"),
     r"unknown dataset '.*t\.txt'; known: digits, mnist, fashion-mnist, or a file ending in \.npz"),
]


@pytest.mark.parametrize("name, write, message", [pytest.param(n, w, m, id=i) for i, n, w, m in TABLE_CASES])
def test_bad_user_table_raises_value_error_naming_the_file(tmp_path, name, write, message):
    """Each bad user table raises a ValueError (DataFormatError where the file is at fault) naming the file."""
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=message) as err:
        load_dataset(str(path))
    if name != "t.txt":
        assert isinstance(err.value, DataFormatError), type(err.value)


def test_label_budget_larger_than_a_users_smallest_class_fails_before_any_stage(tmp_path):
    """A budget of 5 labels per class on a table whose rarest class has 3 training rows is a ConfigError, up front."""
    path = tmp_path / "rare.npz"
    np.savez(path, X=np.random.default_rng(0).random((60, 4)), y=np.r_[np.zeros(57), np.ones(3)])
    cfg = from_dict({"name": "rare", "data": {"dataset": str(path), "budgets": [5], "val_size": 2, "test_size": 2},
                     "model": {"sizes": [4]}})
    with pytest.raises(ConfigError, match=r"data.budgets: 5 labels per class, but the smallest class of the "
                                          r"training split has [0-3] examples"):
        run_pipeline(cfg, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run" / "stages").exists()


# ---------------------------------------------------------------- arrays and labels at the library boundary

LABEL_CASES = [   # numpy labels through fit_classifier are in test_train; these are tensors, NaN and y_train
    ("float-tensor", torch.tensor([0.0, 1.5, 2.0]), {}, r"y must hold integer class labels, got non-integer floats "
                                                        r"such as \[1.5\]"),
    ("nan", np.array([0.0, np.nan]), {}, r"y must hold integer class labels, got non-integer floats such as \[nan\]"),
    ("inf", np.array([0.0, 1.0, np.inf]), {}, r"y must hold integer class labels, got non-integer floats "
                                               r"such as \[inf\]"),
    ("negative-tensor", torch.tensor([0, -2, 1]), {}, r"y has negative labels \(min -2\); labels must be in "
                                                      r"\[0, n_classes\)"),
    ("beyond-the-head", torch.tensor([0, 10]), {"n_classes": 10, "name": "y_train"},
     r"y_train has label 10 but the model has 10 classes \(labels must be in \[0, 10\)\)"),
]


@pytest.mark.parametrize("y, kwargs, message", [pytest.param(y, k, m, id=i) for i, y, k, m in LABEL_CASES])
def test_bad_labels_raise_value_error(y, kwargs, message):
    """Fractional, NaN, negative or too-large class labels raise ValueError naming the labels and the valid range."""
    with pytest.raises(ValueError, match=message):
        check_labels(y, **kwargs)


def test_encoding_an_array_with_inf_names_it():
    """StackedEncoder.encode refuses an array holding inf, counting the bad values."""
    X = np.random.default_rng(0).random((4, 5))
    X[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite values"):
        StackedEncoder.random(5, [3], seed=0).encode(X)


def _checkpoint_with(tmp_path: Path, **meta) -> Path:
    """A saved encoder whose metadata has `meta` written over it."""
    path = _encoder(tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["metadata"] = json.dumps({**json.loads(blob["metadata"]), **meta})
    torch.save(blob, path)
    return path


X5 = np.random.default_rng(0).random((6, 5))

API_CASES = [   # (id, a call that must raise, the exception, the message): the library's own arguments
    ("noise-without-corruption", lambda t: stacked_ae.AutoencoderLayer(8, 4, noise=0.5), ValueError,
     r"noise=0\.5 has no effect with corruption='none'; name the corruption it sets the level of \('mask', "),
    ("conv-noise-without-corruption",
     lambda t: stacked_ae.ConvAutoencoderLayer((1, 8, 8), stacked_ae.ConvSpec(4), noise=0.5), ValueError,
     r"noise=0\.5 has no effect with corruption='none'"),
    ("config-noise-without-corruption", lambda t: stacked_ae.PretrainConfig(corruption="none", noise=0.2),
     ValueError, r'pretrain\.noise = 0\.2 has no effect with pretrain\.corruption = "none"'),
    ("sparsity-nan", lambda t: stacked_ae.AutoencoderLayer(8, 4, sparsity=float("nan")), ValueError,
     r"sparsity must be a finite number >= 0 \(the penalty's weight\), got nan"),
    ("contractive-inf", lambda t: stacked_ae.AutoencoderLayer(8, 4, contractive=float("inf")), ValueError,
     r"contractive must be a finite number >= 0 \(the penalty's weight\), got inf"),
    ("config-contractive-nan", lambda t: stacked_ae.PretrainConfig(contractive=float("nan")), ValueError,
     r"pretrain\.contractive must be a finite number >= 0, got nan"),
    ("encode-depth-beyond-the-stack", lambda t: StackedEncoder.random(5, [4, 3]).encode(X5, depth=3),
     ValueError, r"depth must be a number of layers in 0\.\.2 \(or None: all\), got 3"),
    ("encode-depth-negative", lambda t: StackedEncoder.random(5, [4, 3]).encode(X5, depth=-1), ValueError,
     r"depth must be a number of layers in 0\.\.2"),
    ("encode-batch-size-zero", lambda t: StackedEncoder.random(5, [4]).encode(X5, batch_size=0), ValueError,
     r"batch_size must be a positive integer, got 0"),
    ("val-size-fraction-of-one", lambda t: load_dataset("digits", val_size=1.0), ValueError,
     r"val_size=1\.0: a fraction must be below 1 and a count an integer \(write 1 for a count\)"),
    ("test-size-fractional-count", lambda t: load_dataset("digits", test_size=2.7), ValueError,
     r"test_size=2\.7: a fraction must be below 1 and a count an integer \(write 3 for a count\)"),
    ("checkpoint-format-version-a-string", lambda t: StackedEncoder.load(_checkpoint_with(t, format_version="2")),
     CheckpointError, r"encoder\.pt: checkpoint metadata's format_version must be an integer, got '2'"),
]


@pytest.mark.parametrize("call, error, message", [pytest.param(c, e, m, id=i) for i, c, e, m in API_CASES])
def test_bad_library_arguments_raise_naming_the_argument(tmp_path, call, error, message):
    """Arguments that would be ignored, switch a penalty off or be read as something else are refused."""
    with pytest.raises(error, match=message):
        call(tmp_path)


# ---------------------------------------------------------------- untrusted files

class _MakesMarker:
    """Unpickling this object creates the folder `marker`: code execution, if a loader allowed it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_a_truncated_npy_file_of_features_is_named(tmp_path):
    """`read_table` (the reader of `sae encode`) names a truncated .npy file."""
    path = tmp_path / "t.npy"
    path.write_bytes(_npy_bytes(X4)[:90])
    with pytest.raises(DataFormatError, match=r"t\.npy: not a readable \.npy file \(ValueError"):
        read_table(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_data_file_is_refused_without_running_code(tmp_path, suffix):
    """A .npy/.npz whose object array would run code when unpickled is refused, and the code never runs."""
    marker, path = tmp_path / "marker", tmp_path / f"evil{suffix}"
    evil = np.array([_MakesMarker(marker)], dtype=object)
    if suffix == ".npy":
        np.save(path, evil, allow_pickle=True)
    else:
        np.savez(path, X=evil, y=np.zeros(1))
    with pytest.raises(DataFormatError, match=rf"evil\{suffix}: not a readable \{suffix} file"):
        read_table(path)
    assert not marker.exists(), "reading the data file ran the pickled code"
    # Control: an unrestricted load does run it, so the payload is live.
    loaded = np.load(path, allow_pickle=True)
    if suffix == ".npz":
        _ = loaded["X"]   # .npz members unpickle when read
    assert marker.exists(), "the crafted payload is inert, so the check above proves nothing"


def _calls(tree: ast.AST):
    """(owner, name, keywords) of every call: ("", "eval") for a bare eval(...), ("torch", "load") for torch.load(...);
    a method call on an expression (model.eval(), x.to(d).eval()) has owner "." and is never a builtin."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, owner, name = node.func, ".", ""
            if isinstance(func, ast.Name):
                owner, name = "", func.id
            elif isinstance(func, ast.Attribute):
                owner, name = (func.value.id if isinstance(func.value, ast.Name) else "."), func.attr
            yield owner, name, {k.arg: k.value for k in node.keywords}


def test_package_never_executes_or_unpickles_input():
    """No eval/exec/compile, no pickle or pickle-based loaders; torch.load and np.load always refuse pickled code."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if "weights_only=False" in source or "allow_pickle=True" in source:
            problems.append(f"{path.name}: unsafe loader flag")
        for owner, name, kwargs in _calls(ast.parse(source)):
            where = f"{path.name}: {owner + '.' if owner not in ('', '.') else ''}{name}()"
            if not owner and name in ("eval", "exec", "compile", "__import__"):
                problems.append(where)
            if owner in ("pickle", "marshal", "shelve", "dill", "joblib") or name in ("read_pickle", "unsafe_load"):
                problems.append(where)
            if (owner, name) == ("torch", "load") and not _is_true(kwargs.get("weights_only")):
                problems.append(f"{where} without weights_only=True")
            if (owner, name) == ("np", "load") and not _is_false(kwargs.get("allow_pickle")):
                problems.append(f"{where} without allow_pickle=False")
    assert not problems, problems
    model_source = (PACKAGE / "core" / "model.py").read_text()
    assert re.search(r"torch\.load\(.*weights_only=True", model_source), "the guard is stale"


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


# ---------------------------------------------------------------- the same mistakes through `sae`

TINY = """name = "tiny"
seeds = [0]
arms = ["pretrained"]
[data]
dataset = "{dataset}"
budgets = ["all"]
[model]
sizes = [8]
[pretrain]
epochs = 1
[finetune]
epochs = 1
patience = "none"
"""


def _file(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _run(tmp_path: Path, dataset: str, *extra: str) -> list[str]:
    pipeline = _file(tmp_path, "p.toml", TINY.format(dataset=dataset))
    return ["run", pipeline, "--out", str(tmp_path / "out"), "--quiet", "--no-report", "--device", "cpu", *extra]


def _encoder(tmp_path: Path) -> Path:
    return StackedEncoder.random(5, [3], seed=0).save(tmp_path / "encoder.pt")


def _encode(tmp_path: Path, model: Path | str, n_features: int = 5) -> list[str]:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, n_features)))
    return ["encode", "--model", str(model), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "c.npy")]


def _truncated(tmp_path: Path) -> str:
    data = _encoder(tmp_path).read_bytes()
    return _file(tmp_path, "cut.pt", data[: len(data) // 2])


def _evil(tmp_path: Path) -> str:
    path = tmp_path / "evil.pt"
    torch.save({"metadata": "{}", "state_dict": _MakesMarker(tmp_path / "marker")}, path)
    return str(path)


def _csv(tmp_path: Path, text: str) -> str:
    return _file(tmp_path, "t.csv", text)


CLI_CASES = [   # (id, argv built in tmp_path, the exception --debug re-raises, message)
    ("validate-malformed-toml", lambda t: ["validate", _file(t, "p.toml", "[pretrain\n")], ConfigError,
     r"p\.toml: not valid TOML: Expected '\]'"),
    ("validate-unknown-key", lambda t: ["validate", _file(t, "p.toml", "[model]\nwidth = 3\n")], ConfigError,
     r"unknown key 'model.width'; known keys in \[model\]: sizes"),
    ("validate-wrong-type", lambda t: ["validate", _file(t, "p.toml", "[finetune]\nepochs = \"many\"\n")],
     ConfigError, r"finetune.epochs must be an integer, got 'many'"),
    ("validate-negative-lr", lambda t: ["validate", _file(t, "p.toml", "[pretrain]\nlr = -1\n")], ConfigError,
     r"pretrain.lr must be a positive number, got -1"),
    ("validate-noise-override", lambda t: ["validate", _file(t, "p.toml", ""), "--set", "pretrain.noise=1.5"],
     ConfigError, r"pretrain.noise must be in \[0, 1\), got 1.5"),
    ("validate-wrong-list-length",
     lambda t: ["validate", _file(t, "p.toml", TWO_LAYERS + "[pretrain]\nnoise = [0.1]\n")], ConfigError,
     r"pretrain.noise has 1 entries but the model has 2 layers"),
    ("validate-unknown-activation", lambda t: ["validate", _file(t, "p.toml", "[model]\nactivation = \"gelu\"\n")],
     ConfigError, r"model.activation must be one of sigmoid, tanh, relu, linear, leaky_relu, elu, softplus"),
    ("validate-val-size-rounds-to-zero", lambda t: ["validate", _file(t, "p.toml", "[data]\nval_size = 0.0001\n")],
     ConfigError, r"p\.toml: data\.val_size=0\.0001 is 0 of 1797 examples once rounded"),
    ("validate-test-size-rounds-to-zero", lambda t: ["validate", _file(t, "p.toml", "[data]\ntest_size = 0.0002\n")],
     ConfigError, r"p\.toml: data\.test_size=0\.0002 is 0 of 1797 examples once rounded"),
    ("validate-budget-beyond-the-data", lambda t: ["validate", _file(t, "p.toml", "[data]\nbudgets = [500]\n")],
     ConfigError, r"p\.toml: data\.budgets: 500 labels per class, but the smallest class"),
    ("validate-missing-user-file", lambda t: ["validate", _file(t, "p.toml", TINY.format(dataset=t / "absent.csv"))],
     DataNotFoundError, r"p\.toml: data\.dataset: .*absent\.csv: no such file$"),
    ("validate-missing-data-root", lambda t: ["validate", _file(t, "p.toml", ""), "--data-root", str(t / "nope")],
     FileNotFoundError, r"--data-root .*nope: no such folder$"),
    ("validate-a-folder", lambda t: ["validate", str(t)], IsADirectoryError,
     r"is a folder; expected a pipeline file \(TOML\), e\.g\. .*quickstart\.toml$"),
    ("run-workers-without-ray", lambda t: _run(t, "digits", "--workers", "2"), ValueError,
     r"--workers needs the Ray executor \(--executor ray, or run\.executor = \"ray\" in the pipeline file\); this "
     r"run's executor is local$"),
    ("run-gpus-and-address-without-ray", lambda t: _run(t, "digits", "--gpus-per-stage", "1", "--address", "auto"),
     ValueError, r"--gpus-per-stage and --address need the Ray executor"),
    ("run-precision-contradicts-set", lambda t: _run(t, "digits", "--precision", "bf16", "--set",
                                                     "finetune.precision=fp32"), ValueError,
     r"--precision bf16 contradicts --set finetune\.precision=fp32; give one of them$"),
    ("run-val-size-rounds-to-zero", lambda t: _run(t, "digits", "--set", "data.val_size=0.0001"), ConfigError,
     r"data\.val_size=0\.0001 is 0 of 1797 examples once rounded"),
    ("run-negative-workers", lambda t: _run(t, "digits", "--workers", "-1"), ValueError,
     r"--workers must be a count >= 0 \(0: one per core\), got -1$"),
    ("run-nan-gpus-per-stage", lambda t: _run(t, "digits", "--gpus-per-stage", "nan"), ValueError,
     r"--gpus-per-stage must be a finite number >= 0 .*, got nan$"),
    ("run-ray-cuda-without-gpus", lambda t: _run(t, "digits", "--executor", "ray", "--device", "cuda"), ValueError,
     r"--device cuda with --executor ray needs --gpus-per-stage \(run\.gpus_per_stage\) > 0"),
    ("run-ray-cpu-with-gpus", lambda t: _run(t, "digits", "--executor", "ray", "--gpus-per-stage", "0.5"),
     ValueError, r"--device cpu contradicts --gpus-per-stage \(run\.gpus_per_stage\) = 0\.5"),
    ("run-ray-mps", lambda t: _run(t, "digits", "--executor", "ray", "--device", "mps"), ValueError,
     r"--device mps: stages on Ray train on cpu or, with --gpus-per-stage, on cuda"),
    ("run-truncated-idx", lambda t: _run(t, "mnist", "--data-root", str(_damaged_root(t))), DataFormatError,
     r"train-images-idx3-ubyte\.gz: cannot read IDX file .*truncated"),
    ("run-csv-without-label-column", lambda t: _run(t, _csv(t, "a,b\n1,2\n3,4\n")), DataFormatError,
     r"t\.csv: no label column 'label'"),
    ("run-csv-non-numeric", lambda t: _run(t, _csv(t, "a,b,label\n1,x,0\n")), DataFormatError,
     r"t\.csv: feature columns must be numeric; non-numeric: \['b'\]"),
    ("run-csv-with-nan", lambda t: _run(t, _csv(t, "a,b,label\n1,,0\n2,3,1\n")), DataFormatError,
     r"t\.csv: features contain 1 NaN or infinite values"),
    ("run-csv-header-only", lambda t: _run(t, _csv(t, "a,b,label\n")), DataFormatError, r"t\.csv: the table is empty"),
    ("run-missing-csv", lambda t: _run(t, str(t / "absent.csv")), DataNotFoundError, r"absent\.csv: no such file"),
    ("encode-truncated-checkpoint", lambda t: _encode(t, _truncated(t)), CheckpointError,
     r"cut\.pt: not a readable stacked-ae checkpoint"),
    ("encode-text-as-checkpoint", lambda t: _encode(t, _file(t, "notes.pt", "not a checkpoint\n")), CheckpointError,
     r"notes\.pt: not a readable stacked-ae checkpoint"),
    ("encode-foreign-checkpoint", lambda t: _encode(t, _foreign(t)), CheckpointError,
     r"other\.pt: not a stacked-ae checkpoint \(expected keys metadata, state_dict\)"),
    ("encode-crafted-pickle", lambda t: _encode(t, _evil(t)), CheckpointError,
     r"evil\.pt: not a readable stacked-ae checkpoint: .*refused without running any code"),
    ("encode-other-architecture", lambda t: _encode(t, _encoder(t), n_features=7), ValueError,
     r"x\.npy: has 7 feature columns but the encoder expects 5"),
    ("encode-missing-checkpoint", lambda t: _encode(t, t / "absent.pt"), FileNotFoundError,
     r"absent\.pt: no such checkpoint file"),
    ("encode-missing-label-column", lambda t: ["encode", "--model", str(_encoder(t)), "--input",
                                               _csv(t, "a,b,c,d,e,y\n1,2,3,4,5,0\n"), "--output", str(t / "c.npy"),
                                               "--label-column", "lab"], DataFormatError,
     r"t\.csv: no column 'lab' \(the label column asked for\); the table's columns are 'a', 'b', 'c', 'd', 'e', "
     r"'y'$"),
    ("encode-label-column-of-npy", lambda t: [*_encode(t, _encoder(t)), "--label-column", "y"], ValueError,
     r"--label-column y: names a column of \.csv or \.parquet input; .*x\.npy is a \.npy file, which has no "
     r"columns$"),
    ("encode-labels-read-as-features", lambda t: ["encode", "--model", str(_encoder(t)), "--input",
                                                  _csv(t, "a,b,c,d,e,y\n1,2,3,4,5,0\n"), "--output",
                                                  str(t / "c.npy")], ValueError,
     r"t\.csv: has 6 feature columns but the encoder expects 5; if one column holds labels, name it "
     r"\(label_column=\.\.\., sae encode --label-column NAME\)$"),
    ("encode-zero-batch-size", lambda t: [*_encode(t, _encoder(t)), "--batch-size", "0"], ValueError,
     r"error: --batch-size must be a positive integer, got 0$"),
    ("encode-input-is-a-folder", lambda t: ["encode", "--model", str(_encoder(t)), "--input", str(t), "--output",
                                            str(t / "c.npy")], IsADirectoryError,
     r"is a folder; expected a data file \(\.npz, \.npy, \.csv, \.parquet\)$"),
    ("status-no-such-folder", lambda t: ["status", str(t / "absent")], FileNotFoundError, r"absent: no such folder$"),
    ("status-with-pipeline-no-such-folder",
     lambda t: ["status", str(t / "absent"), _file(t, "p.toml", TINY.format(dataset="digits"))], FileNotFoundError,
     r"absent: no such folder$"),
    ("report-no-such-folder", lambda t: ["report", str(t / "absent")], FileNotFoundError, r"absent: no such folder$"),
    ("report-a-file", lambda t: ["report", _file(t, "results.csv", "x\n")], NotADirectoryError,
     r"results\.csv: is a file, not a run folder"),
    ("report-not-a-run-folder", lambda t: ["report", str(t)], FileNotFoundError,
     r"not a run folder \(no results\.csv\); run `sae run` first"),
    ("report-unreadable-results", lambda t: ["report", _results_folder(t, b"\xff\xfe\x00")], ValueError,
     r"results\.csv: not a readable results table"),
]


def _damaged_root(tmp_path: Path) -> Path:
    root = idx_root(tmp_path)
    _replace("train_images", gzip.compress(IMAGES)[:60])(root)
    return root


def _foreign(tmp_path: Path) -> Path:
    torch.save({"weight": torch.zeros(3, 2), "epoch": 4}, tmp_path / "other.pt")
    return tmp_path / "other.pt"


def _results_folder(tmp_path: Path, content: bytes) -> str:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_bytes(content)
    return str(tmp_path / "run")


@pytest.mark.parametrize("argv, error, message", [pytest.param(a, e, m, id=i) for i, a, e, m in CLI_CASES])
def test_cli_reports_bad_input_in_one_short_line_with_exit_2(tmp_path, capsys, argv, error, message):
    """`sae` prints `sae: error: <message>` with no traceback and exits 2; the message names the culprit."""
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("sae: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "marker").exists(), "the crafted checkpoint ran its code"


@pytest.mark.parametrize("argv, error, message", [pytest.param(a, e, m, id=i) for i, a, e, m in CLI_CASES
                                                  if i in ("validate-unknown-key", "run-csv-with-nan",
                                                           "encode-crafted-pickle", "report-not-a-run-folder")])
def test_cli_debug_raises_the_original_error(tmp_path, argv, error, message):
    """With --debug the original exception propagates (Python prints its traceback) instead of the short line,
    whether --debug comes before the command or after it."""
    with pytest.raises(error, match=message):
        main(["--debug", *argv(tmp_path)])
    with pytest.raises(error, match=message):
        main([*argv(tmp_path), "--debug"])


# ---------------------------------------------------------------- a cached encoder that does not fit the run

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-seed run of the pretrained arm on digits (its stage files and encoders/seed0.pt)."""
    out = tmp_path_factory.mktemp("cached") / "run"
    pipeline = out.parent / "p.toml"
    pipeline.write_text(TINY.format(dataset="digits"))
    assert main(["run", str(pipeline), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 0
    return out


@pytest.mark.parametrize("replace, message", [
    pytest.param(lambda p: StackedEncoder.random(64, [12], seed=0).save(p),
                 r"seed0\.pt: the cached encoder is 64-12 \(sigmoid\) but this run needs 64-8 \(sigmoid\); "
                 r"delete it to pretrain again, or rerun with --force", id="other-architecture"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:500]),
                 r"seed0\.pt: not a readable stacked-ae checkpoint.*; delete it to pretrain again", id="truncated"),
], )
def test_resuming_with_a_bad_cached_encoder_is_refused(finished_run, tmp_path, capsys, replace, message):
    """A run folder whose cached encoder is damaged or of another architecture stops with exit 2 naming the file."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "stages" / "arm_seed0_budgetall_pretrained.json").unlink()   # the arm must load the encoder again
    replace(out / "encoders" / "seed0.pt")
    pipeline = finished_run.parent / "p.toml"
    assert main(["run", str(pipeline), "--out", str(out), "--quiet", "--no-report", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert json.loads((out / "stages" / "pretrain_seed0.json").read_text())["status"] == "ok"   # nothing lost



def test_csv_values_beyond_float32_are_a_clear_error(tmp_path):
    """A CSV feature too large for float32 is refused by name instead of turning into inf."""
    from stacked_ae.core.data import DataFormatError, read_table
    path = tmp_path / "big.csv"
    path.write_text("a,b,label\n1e39,0.5,0\n0.1,0.2,1\n")
    with pytest.raises(DataFormatError, match=r"big\.csv: 1 feature values exceed the float32 range"):
        read_table(path)
