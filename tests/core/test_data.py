"""Datasets: digits and MNIST shapes and counts, the IDX folder layouts, user files, clear load errors."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest
import torch

from stacked_ae import DataFormatError, DataNotFoundError, load_dataset
from stacked_ae.core.data import DATA_ENV, IDX_FILES, labeled_subset

# ---------------------------------------------------------------- digits


def test_digits_tensors_have_documented_types_and_range(digits):
    """Every digits split is float32 features in [0, 1] and int64 labels in [0, 10)."""
    for split in ("train", "val", "test"):
        X, y = getattr(digits, f"X_{split}"), getattr(digits, f"y_{split}")
        assert X.dtype == torch.float32 and y.dtype == torch.int64, f"{split}: dtypes {X.dtype}, {y.dtype}"
        assert X.shape == (len(y), 64), f"{split}: X {tuple(X.shape)} for {len(y)} labels"
        assert 0.0 <= X.min() and X.max() <= 1.0, f"{split}: X range [{X.min():.3f}, {X.max():.3f}]"
        assert 0 <= y.min() and y.max() <= 9, f"{split}: labels range [{y.min()}, {y.max()}]"


def test_digits_metadata_is_8x8_images_of_10_classes(digits):
    """Digits reports image_shape (8, 8), 64 features and the 10 classes '0'..'9'."""
    assert digits.image_shape == (8, 8), digits.image_shape
    assert digits.n_features == 64, digits.n_features
    assert digits.classes == tuple(str(c) for c in range(10)), digits.classes


def test_digits_default_split_sizes(digits):
    """The 1,797 digits split into 449 test (25%), 180 validation (10%) and 1,168 training images."""
    assert digits.sizes() == {"train": 1168, "val": 180, "test": 449}, digits.sizes()


def test_digits_split_is_fixed_by_seed(digits):
    """The same seed gives the same split; another seed gives a different one."""
    again, other = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(again.X_test, digits.X_test)
    differing = (other.X_test != digits.X_test).any(1).sum().item()
    assert differing > 100, f"seed 1 changed only {differing} of {len(digits.X_test)} test rows"


def test_unknown_dataset_name_lists_known_ones():
    """An unknown dataset name raises ValueError naming the known datasets."""
    with pytest.raises(ValueError, match=r"unknown dataset 'digitz'; known: digits, mnist, fashion-mnist"):
        load_dataset("digitz")


def test_labeled_subset_draws_exactly_k_per_class_by_seed(digits):
    """labeled_subset picks 5 distinct indices of each class; the same seed picks the same ones, another differs."""
    picks = labeled_subset(digits.y_train, 5, seed=0)
    counts = torch.bincount(digits.y_train[picks], minlength=10).tolist()
    assert counts == [5] * 10 and len(picks.unique()) == 50, counts
    assert torch.equal(picks, labeled_subset(digits.y_train, 5, seed=0)), "same seed, different subset"
    assert not torch.equal(picks, labeled_subset(digits.y_train, 5, seed=1)), "seeds 0 and 1 gave the same subset"


def test_labeled_subset_larger_than_smallest_class_raises(digits):
    """A per-class budget above the smallest class size raises ValueError naming both numbers."""
    smallest = int(torch.bincount(digits.y_train).min())
    with pytest.raises(ValueError, match=rf"label budget {smallest + 1} per class exceeds .* \({smallest} examples\)"):
        labeled_subset(digits.y_train, smallest + 1, seed=0)


# ---------------------------------------------------------------- MNIST


def test_mnist_has_60000_training_and_10000_test_images(mnist):
    """MNIST gives 60,000 train+val and 10,000 test images of 784 features (28x28)."""
    sizes = mnist.sizes()
    assert sizes["train"] + sizes["val"] == 60_000, sizes
    assert sizes["test"] == 10_000, sizes
    assert mnist.n_features == 784 and mnist.image_shape == (28, 28), (mnist.n_features, mnist.image_shape)


def test_mnist_training_labels_hold_5923_zeros(mnist):
    """The standard MNIST training labels (train and val together) contain 5,923 zeros."""
    zeros = int((mnist.y_train == 0).sum() + (mnist.y_val == 0).sum())
    assert zeros == 5923, f"{zeros} zeros in the training labels"


def test_mnist_pixels_are_float32_in_unit_interval(mnist):
    """MNIST pixels are float32 in [0, 1] with the standard mean 0.1307 over the training images."""
    X = torch.cat([mnist.X_train, mnist.X_val])
    assert X.dtype == torch.float32, X.dtype
    assert X.min() == 0.0 and X.max() == 1.0, (X.min().item(), X.max().item())
    assert abs(X.mean().item() - 0.1307) < 5e-4, f"pixel mean {X.mean().item():.4f}"


def test_mnist_load_raises_no_warnings(mnist_load):
    """Loading MNIST emits no warnings (e.g. torch's non-writable NumPy array warning)."""
    assert mnist_load.warnings == [], mnist_load.warnings


def _idx_bytes(path) -> bytes:
    """The uncompressed bytes of an IDX file, raw or gzipped."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def _link_all(mnist_files, folder, skip=()):
    """Symlink the source IDX files (under their own names) into folder, except the roles in skip."""
    folder.mkdir(parents=True, exist_ok=True)
    for role, path in mnist_files.items():
        if role not in skip:
            os.symlink(path, folder / path.name)


def _assert_same_data(a, b):
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and torch.equal(x, y), f"{name} differs: {tuple(x.shape)} vs {tuple(y.shape)}"


def test_mnist_loads_from_torchvision_raw_layout(tmp_path, mnist_files, mnist, monkeypatch):
    """A root laid out as torchvision's ROOT/MNIST/raw/ loads the same data as the plain folder."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    _link_all(mnist_files, tmp_path / "MNIST" / "raw")
    _assert_same_data(load_dataset("mnist", root=tmp_path), mnist)


def test_mnist_loads_from_uncompressed_idx_files(tmp_path, mnist_files, mnist, monkeypatch):
    """Uncompressed IDX files (labels and test images here, training images still .gz) load the same data."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    raw = ("train_labels", "test_labels", "test_images")
    _link_all(mnist_files, tmp_path, skip=raw)
    for role in raw:
        (tmp_path / IDX_FILES[role]).write_bytes(_idx_bytes(mnist_files[role]))
    _assert_same_data(load_dataset("mnist", root=tmp_path), mnist)


def test_mnist_loads_from_data_env_variable(mnist_files, mnist, monkeypatch):
    """Without root=, load_dataset finds MNIST through $STACKED_AE_DATA and loads the same data."""
    monkeypatch.setenv(DATA_ENV, str(mnist_files["test_labels"].parent))
    _assert_same_data(load_dataset("mnist"), mnist)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_truncated_idx_file_raises_data_format_error(tmp_path, mnist_files, compressed, monkeypatch):
    """A truncated IDX label file, raw or gzipped, raises DataFormatError naming the file."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    _link_all(mnist_files, tmp_path, skip=("test_labels",))
    data = _idx_bytes(mnist_files["test_labels"])
    name = IDX_FILES["test_labels"]
    if compressed:
        packed = gzip.compress(data)
        (tmp_path / f"{name}.gz").write_bytes(packed[: len(packed) // 2])
    else:
        (tmp_path / name).write_bytes(data[:5000])
    with pytest.raises(DataFormatError, match=rf"{name}.*truncated"):
        load_dataset("mnist", root=tmp_path)


def test_label_count_disagreeing_with_images_raises(tmp_path, mnist_files, monkeypatch):
    """A well-formed test label file with 5,000 labels for 10,000 images raises DataFormatError."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    _link_all(mnist_files, tmp_path, skip=("test_labels",))
    labels = _idx_bytes(mnist_files["test_labels"])[8:5008]
    header = bytes([0, 0, 8, 1]) + (5000).to_bytes(4, "big")
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(header + labels)
    with pytest.raises(DataFormatError, match=r"test images \(10000, 28, 28\) and labels \(5000,\) do not match"):
        load_dataset("mnist", root=tmp_path)


def test_missing_data_root_lists_the_places_looked(tmp_path, monkeypatch):
    """A data root without the IDX files raises DataNotFoundError listing every folder it searched."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    root = tmp_path / "no-such-root"
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", root=root)
    message = str(err.value)
    for place in (root, root / "MNIST" / "raw", root / "MNIST", root / "mnist" / "raw", root / "mnist"):
        assert f"\n  {place}\n" in message + "\n", f"{place} missing from:\n{message}"


def test_missing_data_env_root_is_listed(tmp_path, monkeypatch):
    """Without root=, the $STACKED_AE_DATA folder is searched and named in the DataNotFoundError."""
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env-root"))
    with pytest.raises(DataNotFoundError, match=r"Looked in:\n  .*env-root\n"):
        load_dataset("mnist")


# ---------------------------------------------------------------- user files


def _user_table(n: int = 40):
    rng = np.random.default_rng(0)
    features = rng.permutation(n * 3).reshape(n, 3).astype(np.float32)   # distinct values 0 .. 3n-1
    labels = np.where(rng.random(n) < 0.5, "cat", "dog")
    return features, labels


def _write_user_file(path, features, labels, label_column="label"):
    if path.suffix == ".npz":
        np.savez(path, X=features, y=labels)
        return
    frame = pd.DataFrame(features, columns=["f0", "f1", "f2"])
    frame[label_column] = labels
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".parquet"])
def test_user_file_loads_features_and_label_column(tmp_path, suffix):
    """A user file loads all rows with min-max scaled features and labels mapped to sorted classes."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="parquet files need pyarrow")
    features, labels = _user_table()
    path = tmp_path / f"table{suffix}"
    _write_user_file(path, features, labels)
    ds = load_dataset(str(path), test_size=0.25, val_size=0.25)
    assert ds.classes == ("cat", "dog") and ds.n_features == 3, (ds.classes, ds.n_features)
    assert ds.sizes() == {"train": 20, "val": 10, "test": 10}, ds.sizes()
    X = torch.cat([ds.X_train, ds.X_val, ds.X_test])
    y = torch.cat([ds.y_train, ds.y_val, ds.y_test])
    order = X[:, 0].argsort()
    expected_order = features[:, 0].argsort()
    expected_X = torch.from_numpy(features / features.max())[expected_order]
    torch.testing.assert_close(X[order], expected_X, rtol=0, atol=1e-6)
    expected_y = torch.from_numpy((labels == "dog").astype(np.int64))[expected_order]
    assert torch.equal(y[order], expected_y), f"{int((y[order] != expected_y).sum())} labels differ"


def test_user_file_with_named_label_column(tmp_path):
    """label_column= picks the label column by name, and it is not kept as a feature."""
    features, labels = _user_table()
    path = tmp_path / "table.csv"
    _write_user_file(path, features, labels, label_column="species")
    ds = load_dataset(str(path), label_column="species")
    assert ds.n_features == 3 and ds.classes == ("cat", "dog"), (ds.n_features, ds.classes)


@pytest.mark.parametrize("kind", ["text", "integer"])
def test_csv_without_label_column_errors_clearly(tmp_path, kind):
    """A CSV lacking the label column (its labels, text or integers, under another name) names the missing column."""
    features, labels = _user_table()
    if kind == "integer":
        labels = (labels == "dog").astype(np.int64)
    path = tmp_path / "table.csv"
    _write_user_file(path, features, labels, label_column="species")
    with pytest.raises(DataFormatError, match=r"table\.csv: .*no label column 'label'.*label_column="):
        load_dataset(str(path))


def test_missing_user_file_raises_data_not_found(tmp_path):
    """A user file path that does not exist raises DataNotFoundError naming it."""
    with pytest.raises(DataNotFoundError, match=r"absent\.csv: no such file"):
        load_dataset(str(tmp_path / "absent.csv"))
