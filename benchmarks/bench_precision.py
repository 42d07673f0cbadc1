"""bf16 autocast against fp32 on this machine: one training step of the unrolled networks of two shipped
pipelines, timed in alternating rounds, so that both precisions see the same load.

    python benchmarks/bench_precision.py                 # 5 rounds, 1 thread (about a minute on a CPU)
    python benchmarks/bench_precision.py --rounds 9 --threads 2 --json out.json

Workloads (batch 128, Adam, squared error on the sigmoid output, as fine-tuning does): the book's conv
autoencoder of mnist-conv-2d (conv 32/64/64/64, a 2-D code, mirrored decoders) and the dense 784-1000-500-250-30
autoencoder of mnist-deep-ae. Prints images/s per precision (medians over rounds) and bf16's speed-up (median
of per-round ratios), with whether torch sees bfloat16 units on this CPU. Recorded results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from stacked_ae.core.conv import ConvSpec  # noqa: E402
from stacked_ae.core.model import StackedEncoder  # noqa: E402
from stacked_ae.core.train import autocast, cpu_bf16_native  # noqa: E402

BATCH = 128
BOOK = [ConvSpec(channels=32, kernel=3, stride=1), ConvSpec(channels=64, kernel=3, stride=2),
        ConvSpec(channels=64, kernel=3, stride=2), ConvSpec(channels=64, kernel=3, stride=1)]


def networks() -> dict:
    conv = StackedEncoder.random(784, [2], seed=0, conv=BOOK, image_shape=(28, 28), channels_last=True,
                                 activation=["leaky_relu"] * 4 + ["linear"])
    dense = StackedEncoder.random(784, [1000, 500, 250, 30], seed=0, activation=["sigmoid"] * 3 + ["linear"])
    return {"mnist-conv-2d (conv 32/64/64/64, 2-D code)": conv.unroll(),
            "mnist-deep-ae (784-1000-500-250-30)": dense.unroll()}


def seconds_per_step(model, x, precision: str, steps: int, device) -> float:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for _ in range(steps + 1):           # the first step warms up and is not counted
        start = time.perf_counter()
        with autocast(device, precision):
            out = model(x)
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and precision")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    x = torch.rand(BATCH, 784, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 units: {cpu_bf16_native()}")
    rows = []
    for name, model in networks().items():
        per = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            for precision in per:
                per[precision].append(seconds_per_step(model, x, precision, args.steps, device))
        ratios = [f / b for f, b in zip(per["fp32"], per["bf16"], strict=True)]
        row = {"network": name, "fp32_images_s": BATCH / statistics.median(per["fp32"]),
               "bf16_images_s": BATCH / statistics.median(per["bf16"]), "bf16_speedup": statistics.median(ratios),
               "speedup_range": [min(ratios), max(ratios)], "rounds": args.rounds, "threads": args.threads,
               "bf16_units": cpu_bf16_native()}
        rows.append(row)
        print(f"{name}: fp32 {row['fp32_images_s']:,.0f} images/s, bf16 {row['bf16_images_s']:,.0f} images/s, "
              f"bf16 / fp32 speed {row['bf16_speedup']:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)     # the emulated-bf16 warning: this script measures it
    main()
