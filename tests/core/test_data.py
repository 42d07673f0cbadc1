"""Datasets: digits and MNIST shapes and counts, the IDX folder layouts, user files, clear load errors."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest
import torch

from stacked_ae import DataFormatError, DataNotFoundError, load_dataset
from stacked_ae.core.data import DATA_ENV, IDX_FILES, _split_indices, labeled_subset

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


def _write_idx(path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file: magic 0x0000 08 ndim, one big-endian 4-byte size per dimension, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_tiny_idx(folder, shape=(3, 4), test_shape=None, train_labels=(0, 1, 2, 3, 4, 5)):
    """Six training and two test images of `shape` (test: `test_shape`), pixel values 0..255, in `folder`."""
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (len(train_labels), *shape)),
              "test": rng.integers(0, 256, (2, *(test_shape or shape)))}
    for split in ("train", "test"):
        _write_idx(folder / IDX_FILES[f"{split}_images"], images[split])
    _write_idx(folder / IDX_FILES["train_labels"], np.array(train_labels))
    _write_idx(folder / IDX_FILES["test_labels"], np.array([7, 9]))
    return images


def test_idx_image_shape_comes_from_the_header(tmp_path, monkeypatch):
    """3x4 images in tiny IDX files load as 12 features with image_shape (3, 4), pixels scaled by 1/255."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    images = _write_tiny_idx(tmp_path)
    ds = load_dataset("mnist", root=tmp_path, val_size=2)
    assert ds.image_shape == (3, 4) and ds.n_features == 12, (ds.image_shape, ds.n_features)
    assert ds.sizes() == {"train": 4, "val": 2, "test": 2}, ds.sizes()
    expected = torch.from_numpy(images["test"].reshape(2, 12) / 255.0).float()
    torch.testing.assert_close(ds.X_test, expected, rtol=0, atol=1e-7)
    assert ds.y_test.tolist() == [7, 9]


def test_idx_label_outside_the_classes_raises(tmp_path, monkeypatch):
    """A training label 10 (MNIST has classes 0-9) raises DataFormatError naming the file, the label and where."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    _write_tiny_idx(tmp_path, train_labels=(0, 1, 2, 10, 4, 5))
    with pytest.raises(DataFormatError, match=rf"{IDX_FILES['train_labels']}: label 10 at index 3 is outside the "
                                              r"10 classes of mnist \(0-9\)"):
        load_dataset("mnist", root=tmp_path, val_size=2)


def test_idx_train_and_test_image_shapes_must_agree(tmp_path, monkeypatch):
    """3x4 training images with 4x3 test images raise DataFormatError giving both shapes."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    _write_tiny_idx(tmp_path, test_shape=(4, 3))
    with pytest.raises(DataFormatError, match=r"training images are 3x4 but test images 4x3"):
        load_dataset("mnist", root=tmp_path, val_size=2)


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
    rows = dict(zip(("train", "val", "test"), _split_indices(40, 10, 10, 0), strict=True))
    lo, hi = features[rows["train"]].min(), features[rows["train"]].max()
    for split, index in rows.items():
        expected_X = torch.from_numpy(np.clip((features[index] - lo) / (hi - lo), 0, 1))
        torch.testing.assert_close(getattr(ds, f"X_{split}"), expected_X, rtol=0, atol=1e-6)
        expected_y = torch.from_numpy((labels[index] == "dog").astype(np.int64))
        assert torch.equal(getattr(ds, f"y_{split}"), expected_y), f"{split}: labels differ"


def test_user_table_is_scaled_by_its_training_rows_alone(tmp_path):
    """Test rows moved far outside the data's range leave the training and validation features unchanged; the
    training rows span exactly [0, 1] and held-out values beyond their range are clipped to [0, 1]."""
    features, labels = _user_table()
    _, _, test_rows = _split_indices(40, 10, 10, 0)
    shifted = features.copy()
    shifted[test_rows[:5]] += 1000.0
    shifted[test_rows[5:]] -= 1000.0
    _write_user_file(tmp_path / "plain.npz", features, labels)
    _write_user_file(tmp_path / "shifted.npz", shifted, labels)
    plain, moved = (load_dataset(str(tmp_path / f"{n}.npz"), test_size=10, val_size=10) for n in ("plain", "shifted"))
    assert torch.equal(plain.X_train, moved.X_train) and torch.equal(plain.X_val, moved.X_val)
    assert (plain.X_train.min().item(), plain.X_train.max().item()) == (0.0, 1.0)
    assert moved.X_test[:5].eq(1).all() and moved.X_test[5:].eq(0).all(), moved.X_test


def test_scaled_training_rows_never_leave_the_unit_interval(tmp_path):
    """Min-max scaling in float32 can round the training maximum a step above 1 (this table: 1.0000001 before the
    fix); the training rows are clipped like the held-out ones, so a sigmoid first layer takes them."""
    rng = np.random.default_rng(2)
    for trial in range(40):
        features = rng.normal(size=(40, 3)) * rng.uniform(0.1, 100)
        _write_user_file(tmp_path / "t.npz", features, np.arange(40) % 2)
        ds = load_dataset(str(tmp_path / "t.npz"), test_size=10, val_size=10)
        assert ds.X_train.min().item() >= 0.0 and ds.X_train.max().item() <= 1.0, (trial, ds.X_train.max().item())


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


def test_single_class_file_names_the_file_and_its_class(tmp_path):
    """A file whose labels are all 0 fails at load, naming the file and its one class."""
    features, _ = _user_table()
    _write_user_file(tmp_path / "mine.npz", features, np.zeros(len(features), dtype=np.int64))
    with pytest.raises(DataFormatError, match=r"mine\.npz: 1 class \(label 0\); classification needs at least 2"):
        load_dataset(str(tmp_path / "mine.npz"))


def test_missing_user_file_raises_data_not_found(tmp_path):
    """A user file path that does not exist raises DataNotFoundError naming it."""
    with pytest.raises(DataNotFoundError, match=r"absent\.csv: no such file"):
        load_dataset(str(tmp_path / "absent.csv"))
