"""Shared test fixtures: digits in [0, 1], a seeded synthetic low-rank dataset, the MNIST folder.

Tests stay fast and CPU-only: tiny layers, a few epochs, data built once per session.
MNIST tests skip with a reason when neither $STACKED_AE_DATA nor ../shared/data/mnist holds the files.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from hypothesis import settings

import stacked_ae
from stacked_ae.core.data import DATA_ENV, DataNotFoundError, find_idx_files

# Property tests (test_properties.py) draw the same 150 examples per test on every run: the suite gives the same
# verdict on every machine, and an input it has not drawn before cannot turn an unrelated change red.
# "explore" searches afresh with 20x the examples; run it before a release and after touching the config or
# data readers:  pytest tests/test_properties.py --hypothesis-profile=explore
settings.register_profile("repeatable", max_examples=150, derandomize=True)
settings.register_profile("explore", max_examples=3000, derandomize=False)
settings.load_profile("repeatable")

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class MnistLoad(NamedTuple):
    dataset: stacked_ae.Dataset
    warnings: list[str]   # messages of every warning raised while loading


class LowRank(NamedTuple):
    X: torch.Tensor      # (n, n_features) float32, strictly inside (0, 1)
    y: torch.Tensor      # (n,) int64 in [0, n_classes)
    rank: int
    n_classes: int


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """Tiny matrices run faster on one thread than on threads fighting over a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> stacked_ae.Dataset:
    """scikit-learn's 8x8 digits scaled to [0, 1], with the default seeded split (read-only)."""
    return stacked_ae.load_dataset("digits")


@pytest.fixture(scope="session")
def low_rank() -> LowRank:
    """300 examples of 20 features: sigmoid of a rank-3 product, labels = argmax of the latent factors."""
    g = torch.Generator().manual_seed(1234)
    n, n_features, rank = 300, 20, 3
    Z = torch.randn(n, rank, generator=g)
    A = torch.randn(rank, n_features, generator=g)
    X = torch.sigmoid(Z @ A)                      # (n, 3) @ (3, 20) -> (n, 20), inside (0, 1)
    return LowRank(X, Z.argmax(1), rank, rank)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The MNIST data root ($STACKED_AE_DATA, else ../shared/data/mnist); skips when the IDX files are absent."""
    root = Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else SHARED_MNIST
    try:
        find_idx_files("mnist", root)
    except DataNotFoundError:
        pytest.skip(f"MNIST IDX files not found under {root} (set ${DATA_ENV} to a folder holding them)")
    return root


@pytest.fixture(scope="session")
def mnist_files(mnist_root) -> dict[str, Path]:
    """The four MNIST IDX files by role: train_images, train_labels, test_images, test_labels."""
    return find_idx_files("mnist", mnist_root)


@pytest.fixture(scope="session")
def mnist_load(mnist_root) -> MnistLoad:
    """MNIST loaded once per session from the data root, with the warnings the load raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = stacked_ae.load_dataset("mnist", root=mnist_root)
    return MnistLoad(dataset, [f"{w.category.__name__}: {w.message}" for w in caught])


@pytest.fixture(scope="session")
def mnist(mnist_load) -> stacked_ae.Dataset:
    """MNIST with the default seeded validation split (read-only)."""
    return mnist_load.dataset


class EpochKiller:
    """Wraps the training loop's `train_epoch`: each call appends `label()` to `calls` (clear it to count afresh),
    and the call that makes `len(calls) == at` raises `error` instead of training, as a process killed in the
    middle of that epoch would stop (`at = 0`: never)."""

    def __init__(self, monkeypatch):
        from stacked_ae.core import train
        self.calls, self.at, self.error, self.label = [], 0, KeyboardInterrupt, lambda: 1
        real = train.train_epoch

        def train_epoch(*args, **kwargs):
            self.calls.append(self.label())
            if len(self.calls) == self.at:
                raise self.error
            return real(*args, **kwargs)

        monkeypatch.setattr(train, "train_epoch", train_epoch)


@pytest.fixture
def epoch_killer(monkeypatch) -> EpochKiller:
    return EpochKiller(monkeypatch)
