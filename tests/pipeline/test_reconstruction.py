"""Reconstruction pipelines end to end on digits: squared error per arm, and the codes' kNN accuracy
checked against a brute-force oracle, for the networks and for PCA."""
import numpy as np
import pandas as pd
import pytest

from stacked_ae.core.data import load_dataset
from stacked_ae.core.model import StackedEncoder
from stacked_ae.pipeline.arms import knn_accuracy
from stacked_ae.pipeline.config import from_dict
from stacked_ae.pipeline.runner import run_pipeline
from stacked_ae.report.render import render_report

RECON = {
    "name": "tiny-recon",
    "task": "reconstruction",
    "seeds": [0],
    "data": {"dataset": "digits"},
    "model": {"sizes": [32, 8], "activation": ["sigmoid", "linear"]},
    "pretrain": {"epochs": 4, "batch_size": 64, "corruption": "none"},
    "finetune": {"epochs": 6, "lr": [1e-3, 3e-3], "batch_size": 64, "patience": 3},
}


def brute_force_knn(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, k=5) -> float:
    """The oracle: full distance matrix, the k nearest by a stable sort, majority vote (ties: lowest label,
    as scikit-learn's mode)."""
    d = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    votes = np.stack([np.bincount(row, minlength=y_train.max() + 1) for row in y_train[nearest]])
    return float((votes.argmax(1) == y_test).mean())


def test_knn_accuracy_matches_a_brute_force_oracle():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 3))
    y_train, y_test = rng.integers(0, 4, 300), rng.integers(0, 4, 120)
    train = centres[y_train] + rng.normal(0, 1.5, (300, 3))
    test = centres[y_test] + rng.normal(0, 1.5, (120, 3))
    got = knn_accuracy(train, y_train, test, y_test)
    assert got == pytest.approx(brute_force_knn(train, y_train, test, y_test))
    assert 0.5 < got < 1.0       # overlapping clusters: informative, not trivial
    shuffled = knn_accuracy(train, rng.permutation(y_train), test, y_test)
    assert shuffled < got - 0.25  # labels unrelated to the codes: near chance


@pytest.fixture(scope="module")
def recon_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recon") / "tiny-recon"
    results = run_pipeline(from_dict(RECON), out, device="cpu", progress=False)
    return out, results


def test_every_arm_reports_squared_error_and_knn_accuracy(recon_run):
    out, _ = recon_run
    res = pd.read_csv(out / "results.csv")
    assert sorted(res["arm"]) == ["pca", "pretrained", "random"]
    assert (res["status"] == "ok").all()
    assert res["test_sse"].gt(0).all()
    # 8-D codes of 10 digit classes: far above chance (10%), below perfect
    assert res["knn_accuracy"].between(0.5, 1.0).all(), res[["arm", "knn_accuracy"]]


def test_knn_accuracy_of_each_arm_equals_the_oracle_on_its_own_codes(recon_run):
    from sklearn.decomposition import PCA
    out, _ = recon_run
    res = pd.read_csv(out / "results.csv").set_index("arm")
    d = load_dataset("digits")
    X_train, y_train, X_test, y_test = (t.numpy() for t in (d.X_train, d.y_train, d.X_test, d.y_test))
    for arm in ("pretrained", "random"):
        stack = StackedEncoder.load(out / "models" / f"seed0_budgetall_{arm}.pt")
        oracle = brute_force_knn(stack.encode(X_train).numpy(), y_train, stack.encode(X_test).numpy(), y_test)
        assert res.loc[arm, "knn_accuracy"] == pytest.approx(oracle), arm
    pca = PCA(n_components=8, svd_solver="full").fit(X_train)
    oracle = brute_force_knn(pca.transform(X_train), y_train, pca.transform(X_test), y_test)
    assert res.loc["pca", "knn_accuracy"] == pytest.approx(oracle)


def test_the_report_shows_the_knn_table_and_names_the_best_arm(recon_run):
    out, _ = recon_run
    md = render_report(out).read_text()
    res = pd.read_csv(out / "results.csv").set_index("arm")
    assert "## Summary" in md and "5-nearest-neighbour accuracy is highest for" in md
    best = res["knn_accuracy"].idxmax()
    assert f"highest for {best} (" in md
    assert "### Codes: k-nearest-neighbour accuracy" in md
    assert "| all | pca | — | — | — |" in md     # PCA selects nothing: nothing to check in Tuning
    for arm in res.index:
        assert f"| {arm} | {100 * res.loc[arm, 'knn_accuracy']:.2f} | 1 |" in md
