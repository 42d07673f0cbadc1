"""Evaluation batches sized to a conv model's maps against the fixed 8,192-image batch, on this machine.

    python benchmarks/bench_eval.py                       # 5 rounds, 1 thread, 10,000 images (about 3 minutes)
    python benchmarks/bench_eval.py --rounds 3 --images 2000 --json out.json

Workloads: the validation pass that fine-tuning runs after every epoch (`evaluate_reconstruction` of the unrolled
network) and encoding (`StackedEncoder.encode`), for the conv networks of mnist-conv-2d (the book's conv
32/64/64/64 with a 2-D code) and fashion-mnist-conv (conv 16/32 with pooling, dense 256), and for mnist-sdae's
dense 784-1000-1000-1000 as a control (its batch does not change). Each round times both batch sizes one after
the other, so that both see the same load. Prints images/s (medians over rounds) and the speed-up (median of
per-round ratios). Recorded results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from stacked_ae.core.conv import ConvSpec  # noqa: E402
from stacked_ae.core.layers import EVAL_BATCH, eval_batch_size  # noqa: E402
from stacked_ae.core.model import StackedEncoder  # noqa: E402
from stacked_ae.core.train import evaluate_reconstruction  # noqa: E402

BOOK = [ConvSpec(32, 3, 1), ConvSpec(64, 3, 2), ConvSpec(64, 3, 2), ConvSpec(64, 3, 1)]
FASHION = [ConvSpec(16, 3, 1, pool=True), ConvSpec(32, 3, 1, pool=True)]


def networks() -> dict:
    return {
        "mnist-conv-2d (conv 32/64/64/64, 2-D code)": StackedEncoder.random(
            784, [2], seed=0, conv=BOOK, image_shape=(28, 28), activation=["leaky_relu"] * 4 + ["linear"]),
        "fashion-mnist-conv (conv 16/32 pooled, 256)": StackedEncoder.random(
            784, [256], seed=0, conv=FASHION, image_shape=(28, 28), activation=["leaky_relu"] * 2 + ["sigmoid"]),
        "mnist-sdae (784-1000-1000-1000, control)": StackedEncoder.random(784, [1000, 1000, 1000], seed=0),
    }


def seconds(run, X, batch_size: int) -> float:
    start = time.perf_counter()
    run(X, batch_size=batch_size)
    return time.perf_counter() - start


def passes(stack: StackedEncoder) -> dict:
    """The two timed passes over X with a batch size: validation of the unrolled network, and encoding."""
    deep = stack.unroll()
    return {"validate": lambda X, batch_size: evaluate_reconstruction(deep, X, batch_size=batch_size),
            "encode": stack.encode}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=10000, help="images per pass (default: a validation split)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X = torch.rand(args.images, 784, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} images, {args.rounds} rounds")
    print(f"{'network':46s} {'pass':10s} {'fixed':>6s} {'sized':>6s} {'fixed img/s':>12s} {'sized img/s':>12s} "
          f"{'speed-up':>9s}")
    rows = []
    for name, stack in networks().items():
        sized = eval_batch_size(stack)
        for pass_name, run in passes(stack).items():
            run(X, batch_size=sized)                    # warm-up, not counted
            fixed_s, sized_s = [], []
            for _ in range(args.rounds):
                fixed_s.append(seconds(run, X, EVAL_BATCH))
                sized_s.append(seconds(run, X, sized))
            ratios = [f / s for f, s in zip(fixed_s, sized_s, strict=True)]
            row = {"network": name, "pass": pass_name, "fixed_batch": EVAL_BATCH, "sized_batch": sized,
                   "fixed_images_s": args.images / statistics.median(fixed_s),
                   "sized_images_s": args.images / statistics.median(sized_s),
                   "speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
                   "rounds": args.rounds, "threads": args.threads, "images": args.images}
            rows.append(row)
            print(f"{name:46s} {pass_name:10s} {EVAL_BATCH:6d} {sized:6d} {row['fixed_images_s']:12,.0f} "
                  f"{row['sized_images_s']:12,.0f} {row['speedup']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
