"""Accuracy and fit time of the scikit-learn estimators at their defaults on digits, beside scikit-learn's own.

    python benchmarks/bench_estimators.py                    # 5 random_states, 2 torch threads (a few minutes)
    python benchmarks/bench_estimators.py --repeats 2 --threads 1 --json out.json

Digits scaled to [0, 1] (X / 16), split 70/30 stratified with random_state=0; each model is fit once per
random_state and the table gives medians (and ranges) over them. Recorded results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from stacked_ae.estimators import StackedAutoencoderClassifier, StackedAutoencoderTransformer  # noqa: E402

MODELS = {
    "LogisticRegression(max_iter=1000), raw pixels": lambda r: LogisticRegression(max_iter=1000),
    "MLPClassifier()": lambda r: MLPClassifier(random_state=r),
    "StackedAutoencoderClassifier()": lambda r: StackedAutoencoderClassifier(random_state=r),
    "StackedAutoencoderTransformer() + LogisticRegression(max_iter=1000)": lambda r: Pipeline(
        [("sae", StackedAutoencoderTransformer(random_state=r)), ("clf", LogisticRegression(max_iter=1000))]),
}


def digits_split():
    """(X_train, X_test, y_train, y_test): digits / 16, 70/30, stratified, random_state=0."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.3, stratify=y, random_state=0)


def measure(make, random_states, data) -> dict:
    """Test accuracy and fit seconds of one model, per random_state."""
    X_train, X_test, y_train, y_test = data
    accuracy, seconds = [], []
    for r in random_states:
        model = make(r)
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds.append(time.perf_counter() - start)
        accuracy.append(float(model.score(X_test, y_test)))
    return {"accuracy": accuracy, "fit_seconds": seconds}


def print_table(results: dict) -> None:
    print("\n| model | accuracy, median (min-max) | fit s, median (max) |\n|---|---:|---:|")
    for name, r in results.items():
        acc, sec = r["accuracy"], r["fit_seconds"]
        print(f"| {name} | {statistics.median(acc):.4f} ({min(acc):.4f}-{max(acc):.4f}) | "
              f"{statistics.median(sec):.2f} ({max(sec):.2f}) |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="random_states 0..repeats-1 (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)   # MLPClassifier() stops at max_iter=200
    data, random_states = digits_split(), list(range(args.repeats))
    results = {}
    for name, make in MODELS.items():
        results[name] = measure(make, random_states, data)
        print(f"{name}: accuracy {[round(a, 4) for a in results[name]['accuracy']]}, fit s "
              f"{[round(s, 2) for s in results[name]['fit_seconds']]}", flush=True)
    print_table(results)
    print(f"\ntorch {torch.__version__}, {args.threads} threads, 1-minute load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "random_states": random_states,
                                         "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
