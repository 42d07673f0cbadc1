"""Property-based tests: the config loader and the data readers, fed random input, raise only their documented errors.

Configs raise ConfigError; data files raise DataFormatError, DataNotFoundError or ValueError. Anything else
(KeyError, IndexError, zlib.error, ...) would reach the user as a traceback, which the CLI promises never to show.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import tomllib
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacked_ae.core.data import DataFormatError, DataNotFoundError, load_dataset, read_idx, read_table
from stacked_ae.pipeline.config import (
    SECTIONS,
    ConfigError,
    PipelineConfig,
    apply_override,
    dumps_toml,
    from_dict,
    load_config,
    parse_toml,
)

# Example counts and randomness come from the profiles in conftest.py.
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DATA_ERRORS = (DataFormatError, DataNotFoundError, ValueError)

# ---------------------------------------------------------------- configs

# Words that mean something somewhere in a pipeline file, so that random tables reach deep validation.
WORDS = ["digits", "mnist", "fashion-mnist", "x.csv", "y.npz", "all", "none", "sigmoid", "tanh", "relu", "linear",
         "auto", "adam", "sgd", "mask", "gaussian", "salt_pepper", "cosine", "constant", "classification",
         "reconstruction", "pretrained", "random", "frozen", "logreg", "pca", "label", "", "a/b", ".hidden"]
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 70),
    st.integers(-2**70, 2**70),
    st.floats(-2.0, 2.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=8),
    st.dates(),
    st.datetimes(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _table(keys: list[str]) -> st.SearchStrategy[dict]:
    """A table whose keys are mostly the known ones, sometimes a stranger."""
    key = st.sampled_from(keys) | st.text(max_size=8)
    return st.dictionaries(key, VALUES, max_size=len(keys) + 1)


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


RAW_CONFIGS = st.fixed_dictionaries({}, optional={
    **{name: VALUES for name in ("name", "seeds", "task", "arms")},
    **{name: _table(_fields(cls)) | VALUES for name, cls in SECTIONS.items()},
    "reference": st.dictionaries(st.text(max_size=6), VALUES, max_size=3) | VALUES,
}) | st.dictionaries(st.text(max_size=8), VALUES, max_size=3)

VALID = {"name": "fuzz", "seeds": [0, 1], "arms": ["pretrained", "random"],
         "data": {"dataset": "digits", "budgets": [5, "all"], "val_size": 0.1},
         "model": {"sizes": [16, 8], "activation": "sigmoid"},
         "pretrain": {"epochs": 2, "noise": [0.1, 0.2], "lr": 0.01, "tied": False},
         "finetune": {"epochs": 3, "lr": [0.01, 0.03], "patience": "none"},
         "reference": {"test_error": {"pretrained": 0.05}, "source": "fuzz"}}


@st.composite
def near_valid_configs(draw) -> dict:
    """A valid table with one to three settings replaced by random values, or removed."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([None, *SECTIONS]))
        table = raw if section is None else raw.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        known = _fields(PipelineConfig) if section is None else _fields(SECTIONS[section])
        key = draw(st.sampled_from(known)) if draw(st.integers(0, 5)) else draw(st.text(max_size=6))
        if draw(st.integers(0, 4)) == 0:
            table.pop(key, None)
        else:
            table[key] = draw(VALUES)
    return raw


PIPELINE_TEXT = """name = "fuzz"
seeds = [0, 1]
[data]
dataset = "digits"
budgets = [5, "all"]
[model]
sizes = [16, 8]
[pretrain]
epochs = 2
noise = [0.1, 0.2]
[finetune]
lr = [0.01]
"""


@st.composite
def mutated_pipelines(draw) -> str:
    """A valid pipeline file with a few characters replaced, inserted or deleted."""
    text = list(PIPELINE_TEXT)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        ch = draw(st.sampled_from(list("[]{}=\"',.#\n 0123456789-+eInfa")) | st.characters())
        if op == "replace":
            text[i] = ch
        elif op == "insert":
            text.insert(i, ch)
        elif len(text) > 1:
            del text[i]
    return "".join(text)


@FUZZ
@given(st.text(max_size=300) | mutated_pipelines())
def test_parse_toml_raises_only_config_error(text):
    """Any text either parses into a table or raises ConfigError naming the source."""
    try:
        assert isinstance(parse_toml(text, "fuzz.toml"), dict)
    except ConfigError as err:
        assert "fuzz.toml" in str(err)


@FUZZ
@given(near_valid_configs() | RAW_CONFIGS)
def test_from_dict_raises_only_config_error_and_accepted_configs_round_trip(raw):
    """Random TOML-like tables give a PipelineConfig or ConfigError; what is accepted survives a TOML round trip."""
    try:
        cfg = from_dict(raw)
    except ConfigError:
        return
    assert isinstance(cfg, PipelineConfig)
    assert from_dict(tomllib.loads(dumps_toml(cfg))) == cfg


OVERRIDE_KEYS = ["pretrain.epochs", "pretrain.noise", "model.sizes", "data.budgets", "seeds", "finetune.lr", "x.y",
                 "data", "reference.a.b", ""]
OVERRIDES = st.text(max_size=30) | st.builds("{}={}".format, st.sampled_from(OVERRIDE_KEYS), st.text(max_size=12))


@FUZZ
@given(mutated_pipelines(), st.lists(OVERRIDES, max_size=3))
def test_load_config_raises_only_config_error(tmp_path_factory, text, overrides):
    """A damaged pipeline file with random --set overrides loads or raises ConfigError."""
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))   # lone surrogates make the file invalid UTF-8
    try:
        assert isinstance(load_config(path, overrides), PipelineConfig)
    except ConfigError:
        pass


@FUZZ
@given(RAW_CONFIGS, OVERRIDES)
def test_apply_override_raises_only_config_error(raw, override):
    """An override string of any shape, applied to any table, is set or refused with ConfigError."""
    try:
        apply_override(raw, override)
    except ConfigError:
        pass


# ---------------------------------------------------------------- IDX files

def _idx_header(ndim: int, shape: list[int]) -> bytes:
    return bytes([0, 0, 0x08, ndim]) + b"".join(n.to_bytes(4, "big") for n in shape)


@st.composite
def idx_like_bytes(draw) -> bytes:
    """Random bytes, or a plausible IDX header (sometimes lying about its size) followed by random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    ndim = draw(st.integers(0, 5))
    shape = draw(st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
    body_size = int(np.prod(shape, dtype=object)) if shape else 0
    body_size = body_size if body_size < 300 else draw(st.integers(0, 300))
    body_size += draw(st.sampled_from([0, 0, 1, -1]))
    return _idx_header(ndim, shape) + draw(st.binary(min_size=max(body_size, 0), max_size=max(body_size, 0)))


def _gzip_variants(data: bytes, how: str, cut: int) -> bytes:
    if how == "raw":
        return data
    packed = gzip.compress(data)
    if how == "gzip":
        return packed
    if how == "truncated":
        return packed[: cut % max(len(packed), 1)]
    # "damaged": flip one byte of the deflate stream (after the 10-byte header)
    i = 10 + cut % max(len(packed) - 10, 1)
    return packed[:i] + bytes([packed[i] ^ 0xFF]) + packed[i + 1:] if i < len(packed) else packed


@FUZZ
@given(idx_like_bytes(), st.sampled_from(["raw", "gzip", "truncated", "damaged"]), st.integers(0, 10_000))
def test_read_idx_raises_only_data_errors(tmp_path_factory, data, how, cut):
    """Random, lying, truncated or damaged IDX files (raw or .gz) load as uint8 arrays or raise DataFormatError."""
    suffix = "" if how == "raw" else ".gz"
    path = tmp_path_factory.getbasetemp() / f"fuzz-idx{suffix}"
    path.write_bytes(_gzip_variants(data, how, cut))
    try:
        array = read_idx(path)
    except DataFormatError:
        return
    assert array.dtype == np.uint8 and array.ndim == data[3]


# ---------------------------------------------------------------- CSV, NPZ, NPY files

CELLS = st.one_of(st.integers(-5, 300).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["", "nan", "NaN", "inf", "-inf", "cat", "dog", '"1,2"', '"', "label", "True",
                                   "1e999", " ", "\t", "0x10"]),
                  st.text(max_size=4))


@st.composite
def csv_text(draw) -> str:
    """Header and rows of random cells; rows of uneven length happen."""
    n_cols = draw(st.integers(0, 4))
    header = draw(st.lists(st.sampled_from(["label", "a", "b", "c", "a", ""]) | st.text(max_size=3),
                           min_size=n_cols, max_size=n_cols))
    rows = draw(st.lists(st.lists(CELLS, min_size=max(n_cols - 1, 0), max_size=n_cols + 1), max_size=8))
    return "\n".join(",".join(r) for r in [header, *rows]) + draw(st.sampled_from(["", "\n"]))


ARRAYS = st.one_of(
    st.builds(lambda n, m, seed: np.random.default_rng(seed).random((n, m)), st.integers(0, 6), st.integers(0, 4),
              st.integers(0, 9)),
    st.lists(st.integers(-3, 5), max_size=8).map(np.array),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8).map(np.array),
    st.lists(st.text(max_size=3), max_size=6).map(np.array),
    st.just(np.zeros((2, 3, 2))), st.just(np.ones((4, 2), np.complex64)), st.just(np.array(3.0)),
    st.just(np.array([b"ab", b"c"])), st.just(np.ones((3, 2), bool)),
)


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@st.composite
def user_files(draw) -> tuple[str, bytes]:
    """(suffix, content): random bytes, random CSV text, or .npz/.npy archives of odd arrays."""
    kind = draw(st.sampled_from(["bytes", "csv", "npz", "npy", "zip"]))
    if kind == "bytes":
        return draw(st.sampled_from([".csv", ".npz", ".npy", ".parquet"])), draw(st.binary(max_size=200))
    if kind == "csv":
        return ".csv", draw(csv_text()).encode("utf-8", "surrogatepass")
    if kind == "npy":
        data = _npy_bytes(draw(ARRAYS))
        return ".npy", data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    if kind == "zip":   # a zip archive holding non-.npy members
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for name in draw(st.lists(st.sampled_from(["X.npy", "y.npy", "X", "readme.txt"]), unique=True, max_size=3)):
                z.writestr(name, draw(st.binary(max_size=40)))
        return ".npz", buffer.getvalue()
    names = draw(st.lists(st.sampled_from(["X", "y", "Z"]), unique=True, max_size=3))
    data = _npz_bytes({name: draw(ARRAYS) for name in names})
    return ".npz", data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@FUZZ
@given(user_files())
def test_read_table_raises_only_data_errors(tmp_path_factory, file):
    """Random user files read as (features, labels) or raise DataFormatError, DataNotFoundError or ValueError."""
    suffix, content = file
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        X, y = read_table(path)
    except DATA_ERRORS:
        return
    assert isinstance(X, np.ndarray) and (y is None or isinstance(y, np.ndarray))


@FUZZ
@given(user_files().filter(lambda f: f[0] != ".parquet"))
def test_load_dataset_from_user_files_raises_only_data_errors(tmp_path_factory, file):
    """A random user file becomes a Dataset of finite features in [0, 1] and in-range labels, or a data error."""
    suffix, content = file
    path = tmp_path_factory.getbasetemp() / f"fuzz-load{suffix}"
    path.write_bytes(content)
    try:
        ds = load_dataset(str(path), val_size=0.2, test_size=0.2)
    except DATA_ERRORS:
        return
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val), (ds.X_test, ds.y_test)):
        assert X.ndim == 2 and X.shape[1] == ds.n_features and len(X) == len(y)
        assert bool(((X >= 0) & (X <= 1)).all()), "features outside [0, 1]"
        assert len(y) == 0 or (0 <= int(y.min()) and int(y.max()) < ds.n_classes)
