"""What keeping a training state costs: the mnist-sdae classifier (784-1000-1000-1000-10, Adam, dropout)
trained on random images (validated on 1,000 more, so the state holds the best weights too) with a
TrainingCheckpoint that saves after every epoch but the last, each save and each epoch's training timed
in the same run.

    python benchmarks/bench_checkpoint.py                  # 5 epochs of 5,000 images, 1 thread (about 30 s)
    python benchmarks/bench_checkpoint.py --epochs 9 --json out.json
    python benchmarks/bench_checkpoint.py --quick          # a 64-unit network: checks that the script runs

Prints the state's size on disk, the median seconds of a save (written and fsynced, as a run writes it),
and two ratios: a save against the pipeline's 5 minutes between saves (CHECKPOINT_EVERY_S), and against
one all-labels epoch (50,000 images) of the same network measured beside it. Recorded results:
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from stacked_ae.core.model import StackedEncoder  # noqa: E402
from stacked_ae.core.train import TrainConfig, TrainingCheckpoint, fit_classifier  # noqa: E402
from stacked_ae.pipeline.arms import CHECKPOINT_EVERY_S  # noqa: E402

EPOCH_IMAGES = 50_000     # an all-labels epoch of MNIST's training split


class TimedCheckpoint(TrainingCheckpoint):
    """A checkpoint that times each save."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds: list[float] = []

    def save(self, state: dict) -> None:
        start = time.perf_counter()
        super().save(state)
        self.seconds.append(time.perf_counter() - start)


def measure(sizes: list[int], n: int, epochs: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    X, X_val = torch.rand(n, 784, generator=generator), torch.rand(1000, 784, generator=generator)
    y, y_val = torch.randint(0, 10, (n,), generator=generator), torch.randint(0, 10, (1000,), generator=generator)
    model = StackedEncoder.random(784, sizes, seed=seed, activation="sigmoid").classifier(
        10, dropout=0.3, input_dropout=0.2)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=128, schedule="cosine")   # as mnist-sdae fine-tunes
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = TimedCheckpoint(Path(folder) / "state.pt", stamp="bench", every_s=0.0)
        start = time.perf_counter()
        fit_classifier(model, X, y, cfg, X_val=X_val, y_val=y_val, seed=seed, checkpoint=checkpoint)
        total = time.perf_counter() - start
        size = checkpoint.path.stat().st_size if checkpoint.path.is_file() else 0
    saves = checkpoint.seconds
    train_per_epoch = (total - sum(saves)) / epochs          # an epoch (and its validation) without its save
    epoch_s = train_per_epoch * EPOCH_IMAGES / n
    save_s = statistics.median(saves)
    return {"network": "784-" + "-".join(map(str, sizes)) + "-10", "state_mb": size / 1e6, "saves": len(saves),
            "save_s_median": save_s, "save_s_all": saves, "train_images_per_s": n / train_per_epoch,
            "epoch_50k_s": epoch_s, "save_over_interval": save_s / CHECKPOINT_EVERY_S,
            "save_over_epoch": save_s / epoch_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs, each followed by a timed save")
    parser.add_argument("--n", type=int, default=5000, help="training images per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 64-unit network and 2 epochs: a smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes, epochs, n = ([64], 2, 512) if args.quick else ([1000, 1000, 1000], args.epochs, args.n)
    result = measure(sizes, n, epochs)
    result.update(threads=args.threads, torch=torch.__version__, every_s=CHECKPOINT_EVERY_S)
    print(f"network {result['network']}, {args.threads} thread(s), {result['saves']} saves after {epochs} "
          f"epochs of {n} images")
    print(f"state on disk        {result['state_mb']:.1f} MB")
    print(f"save (median)        {result['save_s_median']:.3f} s   "
          f"(all: {', '.join(f'{s:.3f}' for s in result['save_s_all'])})")
    print(f"training             {result['train_images_per_s']:.0f} images/s: "
          f"a {EPOCH_IMAGES:,}-image epoch {result['epoch_50k_s']:.1f} s")
    print(f"save / {CHECKPOINT_EVERY_S:.0f} s between saves: {100 * result['save_over_interval']:.2f}%")
    print(f"save / one epoch     {100 * result['save_over_epoch']:.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
