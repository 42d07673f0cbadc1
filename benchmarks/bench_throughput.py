"""Training throughput of stacked-ae against the machine's own matmul rate and a tutorial-style baseline.

    python benchmarks/bench_throughput.py                       # CPU, a few minutes on 2 idle cores
    python benchmarks/bench_throughput.py --threads 1           # the setting for a shared machine
    python benchmarks/bench_throughput.py --quick               # seconds-long smoke version
    python benchmarks/bench_throughput.py --device cuda --repeats 5 --json out.json
    python benchmarks/bench_throughput.py --threads 1 --precision bf16 --baseline-precision fp32   # AMX CPUs

Each repeat is one round over all workloads; in a round every workload times the matmuls, then the
library and the baseline back to back, so a busy machine slows both sides of each ratio alike.
FLOPs are those of the matmuls only (see `train_flops`). Recorded results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from stacked_ae import (  # noqa: E402
    AutoencoderLayer,
    DataNotFoundError,
    PretrainConfig,
    StackedEncoder,
    TrainConfig,
    fit_autoencoder,
    fit_classifier,
    greedy_pretrain,
    load_dataset,
)
from stacked_ae.core.train import autocast, resolve_device  # noqa: E402
from stacked_ae.pipeline.arms import CPU_CHANNELS_LAST  # noqa: E402

N_IN, SIZES, N_CLASSES, NOISE = 784, [1000, 1000, 1000], 10, 0.25
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------- FLOP accounting

def layer_pairs(widths: list[int]) -> list[tuple[int, int]]:
    """(n_in, n_out) of each linear layer in a chain of widths."""
    return list(zip(widths[:-1], widths[1:], strict=True))


def train_flops(widths: list[int]) -> int:
    """Matmul FLOPs per sample of one training step through a chain of linear layers.

    Per layer (i -> o): forward 2*i*o, weight gradient 2*i*o, input gradient 2*i*o, except for the
    first layer, whose input (the data) needs no gradient. Biases, activations, loss and optimizer
    are not counted: they are the elementwise work a step should spend little time on.
    """
    return sum((4 if k == 0 else 6) * i * o for k, (i, o) in enumerate(layer_pairs(widths)))


def encode_flops(widths: list[int]) -> int:
    """Forward matmul FLOPs per sample: 2*i*o per layer."""
    return sum(2 * i * o for i, o in layer_pairs(widths))


def matmul_shapes(batch: int) -> list[tuple[str, int, int, int]]:
    """(name, m, k, n) of every GEMM in a training step of the 784-1000 and 1000-1000 layers at `batch`."""
    shapes = []
    for i, o in ((N_IN, 1000), (1000, 1000)):
        shapes += [(f"fwd {batch}x{i}@{i}x{o}", batch, i, o), (f"fwd {batch}x{o}@{o}x{i}", batch, o, i),
                   (f"dgrad {batch}x{i}@{i}x{o}", batch, i, o), (f"wgrad {o}x{batch}@{batch}x{i}", o, batch, i),
                   (f"wgrad {i}x{batch}@{batch}x{o}", i, batch, o)]
    return list(dict.fromkeys(shapes))   # the 1000x1000 layer repeats shapes; keep each once


# ---------------------------------------------------------------- the tutorial-style baseline

class TutorialDAE(nn.Module):
    """The usual tutorial denoising autoencoder: same shapes and loss as AutoencoderLayer."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, n_out), nn.Sigmoid())
        self.decoder = nn.Linear(n_out, n_in)     # logits; BCEWithLogitsLoss applies the sigmoid

    def forward(self, x):
        return self.decoder(self.encoder(x))


def tutorial_mlp(widths: list[int], logits: bool = True) -> nn.Sequential:
    """Linear + sigmoid per layer; with `logits` the last layer has no sigmoid."""
    layers = []
    for i, o in layer_pairs(widths):
        layers += [nn.Linear(i, o), nn.Sigmoid()]
    return nn.Sequential(*(layers[:-1] if logits else layers))


def baseline_fit_dae(model, X, lower, epochs, batch_size, device):
    """One denoising layer as tutorials train it: DataLoader, .item() per batch, and the frozen
    `lower` encoders re-encoding every batch."""
    loader = DataLoader(TensorDataset(X), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        running_loss = 0.0
        for (xb,) in loader:
            xb = xb.to(device)
            with torch.no_grad():
                for encoder in lower:
                    xb = encoder(xb)
            noisy = xb * (torch.rand_like(xb) > NOISE).float()
            loss = criterion(model(noisy), xb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()


def baseline_greedy(X, sizes, epochs, batch_size, device):
    """Greedy pretraining as tutorials write it: each layer trains on raw batches pushed through the layers below."""
    trained, n_in = [], X.shape[1]
    for n_out in sizes:
        model = TutorialDAE(n_in, n_out).to(device)
        baseline_fit_dae(model, X, trained, epochs, batch_size, device)
        trained.append(model.encoder)
        n_in = n_out
    return trained


def baseline_finetune(model, X, y, epochs, batch_size, device):
    loader = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        running_loss = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = criterion(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()


def baseline_encode(model, X, batch_size, device):
    model.eval()
    codes = []
    with torch.no_grad():
        for (xb,) in DataLoader(TensorDataset(X), batch_size=batch_size):
            codes.append(model(xb.to(device)).cpu())
    return torch.cat(codes)


# ---------------------------------------------------------------- workloads

def make_workloads(X, y, args, device):
    """name -> (samples per call, FLOPs per sample, {impl: (setup, run)}); setup is untimed."""
    E, B, n = args.epochs, args.batch_size, len(X)
    Xd, yd = X.to(device), y.to(device)              # the library keeps data on the device
    P = args.precision                               # the library's own setting: autocast per training step
    pre = PretrainConfig(epochs=E, batch_size=B, corruption="mask", noise=NOISE, precision=P)
    train = TrainConfig(epochs=E, batch_size=B, precision=P)

    def under(precision, run):      # `run` inside autocast when `precision` is bf16 (nothing for fp32)
        def wrapped(m, r):
            with autocast(device, precision):
                return run(m, r)
        return wrapped

    def tutorial(run):              # the tutorial loop, in the baseline's precision
        return under(args.baseline_precision, run)

    dae, stack, clf = [N_IN, SIZES[0], N_IN], [N_IN, *SIZES], [N_IN, *SIZES, N_CLASSES]
    greedy = sum(train_flops([i, o, i]) for i, o in layer_pairs(stack)) // len(SIZES)
    return {
        f"dae {N_IN}-{SIZES[0]} train": (n * E, train_flops(dae), {
            "library": (lambda r: AutoencoderLayer(N_IN, SIZES[0], corruption="mask", noise=NOISE, seed=r).to(device),
                        lambda m, r: fit_autoencoder(m, Xd, train, seed=r)),
            "baseline": (lambda r: TutorialDAE(N_IN, SIZES[0]).to(device),
                         tutorial(lambda m, r: baseline_fit_dae(m, X, [], E, B, device)))}),
        f"greedy {'-'.join(map(str, stack))}": (n * E * len(SIZES), greedy, {
            "library": (lambda r: None, lambda m, r: greedy_pretrain(Xd, SIZES, pre, seed=r, device=device,
                                                                     progress=False)),
            "baseline": (lambda r: None, tutorial(lambda m, r: baseline_greedy(X, SIZES, E, B, device)))}),
        f"finetune {'-'.join(map(str, clf))}": (n * E, train_flops(clf), {
            "library": (lambda r: StackedEncoder.random(N_IN, SIZES, seed=r).to(device).classifier(N_CLASSES, seed=r),
                        lambda m, r: fit_classifier(m, Xd, yd, train, seed=r)),
            "baseline": (lambda r: tutorial_mlp(clf).to(device),
                         tutorial(lambda m, r: baseline_finetune(m, X, y, E, B, device)))}),
        f"encode {'-'.join(map(str, stack))}": (n, encode_flops(stack), {
            "library": (lambda r: StackedEncoder.random(N_IN, SIZES, seed=r).to(device),
                        under(P, lambda m, r: m.encode(Xd))),
            "baseline": (lambda r: tutorial_mlp(stack, logits=False).to(device),
                         tutorial(lambda m, r: baseline_encode(m, X, B, device)))}),
    }


# How autograd lays out each GEMM of a linear layer: operand shapes for (m, k, n), and the call.
GEMMS = {
    "fwd": (lambda m, k, n: ((m, k), (n, k)), lambda a, b: F.linear(a, b)),     # x @ W.T
    "dgrad": (lambda m, k, n: ((m, k), (k, n)), lambda a, b: a @ b),            # grad @ W
    "wgrad": (lambda m, k, n: ((k, m), (k, n)), lambda a, b: a.t() @ b),        # grad.T @ x
}


def time_matmuls(shapes, iters, device, dtype):
    """Seconds per GEMM for each (name, m, k, n), in the layout autograd uses for its kind."""
    seconds = {}
    for name, m, k, n in shapes:
        operand_shapes, gemm = GEMMS[name.split()[0]]
        a, b = (torch.randn(shape, device=device, dtype=dtype) for shape in operand_shapes(m, k, n))
        gemm(a, b)
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            gemm(a, b)
        sync(device)
        seconds[name] = (time.perf_counter() - start) / iters
    return seconds


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_rounds(workloads, shapes, args, device):
    """Per round and workload: the matmuls, then library and baseline back to back (order alternating).

    Returns per-shape GEMM seconds, per-(workload, impl) seconds, and per-workload matmul GFLOP/s
    measured just before it, all lists over the timed rounds (warm-up rounds dropped).
    """
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    total_flops = sum(2 * m * k * n for _, m, k, n in shapes)
    matmul = {name: [] for name, *_ in shapes}
    times = {(w, impl): [] for w, (_, _, impls) in workloads.items() for impl in impls}
    reference = {w: [] for w in workloads}
    for r in range(args.warmup + args.repeats):
        for w, (_, _, impls) in workloads.items():
            gemm_seconds = time_matmuls(shapes, args.matmul_iters, device, dtype)
            for name, sec in gemm_seconds.items():
                matmul[name].append(sec)
            reference[w].append(total_flops / sum(gemm_seconds.values()) / 1e9)
            for impl in (list(impls) if r % 2 == 0 else list(reversed(impls))):
                setup, run = impls[impl]
                model = setup(r)
                sync(device)
                start = time.perf_counter()
                run(model, r)
                sync(device)
                times[(w, impl)].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{args.warmup + args.repeats}{' (warm-up)' if r < args.warmup else ''} done",
              file=sys.stderr, flush=True)
    skip = args.warmup * len(workloads)          # matmul lists grow once per workload per round
    return ({k: v[skip:] for k, v in matmul.items()}, {k: v[args.warmup:] for k, v in times.items()},
            {k: v[args.warmup:] for k, v in reference.items()})


# ---------------------------------------------------------------- the conv layer workload

CONV_IN, CONV_OUT, CONV_STRIDE = (32, 28, 28), 64, 2   # the second layer of Foster's MNIST autoencoder


def conv_layer(channels_last: bool, seed: int, device):
    from stacked_ae.core.conv import ConvAutoencoderLayer, ConvSpec
    return ConvAutoencoderLayer(CONV_IN, ConvSpec(CONV_OUT, kernel=3, stride=CONV_STRIDE), activation="leaky_relu",
                                output_activation="linear", corruption="mask", noise=NOISE, seed=seed,
                                channels_last=channels_last).to(device)


def time_conv_ops(batch: int, channels_last: bool, iters: int, device) -> float:
    """Seconds per batch of torch's own conv work in one training step of the layer, in one memory format:
    the encoder's Conv2d forward and weight gradient, the decoder's ConvTranspose2d forward, input and
    weight gradients (the layer's input needs no gradient). No activation, loss or optimizer."""
    c, h, w = CONV_IN
    enc = nn.Conv2d(c, CONV_OUT, 3, stride=CONV_STRIDE, padding=1).to(device)
    dec = nn.ConvTranspose2d(CONV_OUT, c, 3, stride=CONV_STRIDE, padding=1, output_padding=1).to(device)
    x = torch.rand(batch, c, h, w, device=device)
    if channels_last:
        enc, dec = enc.to(memory_format=torch.channels_last), dec.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        z = dec(enc(x))
        z.backward(torch.ones_like(z))
    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters


def run_conv(args, device) -> list[dict]:
    """Per round and memory format: torch's conv ops, then the library's training epoch of the layer, back to
    back. Rows: images/s of each (medians) and the library's rate over the conv ops' (median of per-round
    ratios), against the same format's ops and against the faster format's."""
    c, h, w = CONV_IN
    n, B = max(args.n_train // 4, args.batch_size), args.batch_size
    X = torch.rand(n, c * h * w, generator=torch.Generator().manual_seed(0)).to(device)
    cfg = TrainConfig(epochs=1, batch_size=B, precision=args.precision)
    lib, ops = {False: [], True: []}, {False: [], True: []}
    for r in range(args.warmup + args.repeats):
        for cl in (False, True):
            ops_sec = time_conv_ops(B, cl, max(args.matmul_iters // 4, 1), device)
            layer = conv_layer(cl, r, device)
            sync(device)
            start = time.perf_counter()
            fit_autoencoder(layer, X, cfg, seed=r)
            sync(device)
            if r >= args.warmup:
                lib[cl].append(n / (time.perf_counter() - start))
                ops[cl].append(B / ops_sec)
    rows = []
    for cl in (False, True):
        best = [max(a, b) for a, b in zip(ops[False], ops[True], strict=True)]
        rows.append({"workload": f"conv {'x'.join(map(str, CONV_IN))}->{CONV_OUT} s{CONV_STRIDE} train",
                     "format": "channels_last" if cl else "contiguous",
                     "library_images_per_s": statistics.median(lib[cl]),
                     "conv_ops_images_per_s": statistics.median(ops[cl]),
                     "of_same_format_ops": statistics.median(a / b for a, b in zip(lib[cl], ops[cl], strict=True)),
                     "of_best_format_ops": statistics.median(a / b for a, b in zip(lib[cl], best, strict=True))})
    return rows


def print_conv(rows, device):
    print(f"{'workload':<40} {'format':<14} {'library img/s':>13} {'conv ops img/s':>14} {'of same':>8} "
          f"{'of best':>8}")
    for r in rows:
        print(f"{r['workload']:<40} {r['format']:<14} {r['library_images_per_s']:>13.0f} "
              f"{r['conv_ops_images_per_s']:>14.0f} {r['of_same_format_ops']:>8.0%} {r['of_best_format_ops']:>8.0%}")
    print("library: fit_autoencoder, one epoch (corruption, activation, loss, Adam included); conv ops: torch's "
          "Conv2d + ConvTranspose2d forward and backward at the same shapes; of best: against the faster format")
    chosen = "channels_last" if device.type != "cpu" or CPU_CHANNELS_LAST else "contiguous"
    row = next(r for r in rows if r["format"] == chosen)
    verdict = "met" if row["of_best_format_ops"] >= 0.5 else "MISSED"
    print(f"target  conv layer training step ({chosen}, the pipelines' choice on {device.type}): "
          f"{row['of_best_format_ops']:.0%} of torch's conv forward+backward rate (>= 50%): {verdict}")


# ---------------------------------------------------------------- results

def summarise(workloads, shapes, matmul, times, reference):
    """Medians over rounds. Ratios are medians of per-round ratios: library against the baseline run
    next to it, and each workload against the matmul rate measured just before it; a burst of load
    from other processes then moves both sides of a ratio together."""
    flops = {name: 2 * m * k * n for name, m, k, n in shapes}
    med = {name: statistics.median(v) for name, v in matmul.items()}
    peak = sum(flops.values()) / sum(med.values()) / 1e9
    rows = [{"workload": "matmul (model shapes, all)", "impl": "-", "gflops": peak}]
    rows += [{"workload": f"matmul {name}", "impl": "-", "gflops": flops[name] / med[name] / 1e9} for name in med]
    for w, (samples, per_sample, impls) in workloads.items():
        for impl in impls:
            secs = times[(w, impl)]
            per_round = [samples * per_sample / sec / 1e9 / ref for sec, ref in zip(secs, reference[w], strict=True)]
            rows.append({"workload": w, "impl": impl, "seconds": statistics.median(secs),
                         "samples_per_s": samples / statistics.median(secs),
                         "gflops": samples * per_sample / statistics.median(secs) / 1e9,
                         "fraction_of_matmul": statistics.median(per_round), "flops_per_sample": per_sample,
                         "spread": max(secs) / min(secs), "seconds_all": secs, "matmul_gflops_all": reference[w]})
        rows[-2]["speedup_vs_baseline"] = statistics.median(
            b / a for a, b in zip(times[(w, "library")], times[(w, "baseline")], strict=True))
    return peak, rows


def print_table(rows):
    print(f"{'workload':<40} {'impl':<9} {'samples/s':>10} {'GFLOP/s':>8} {'of matmul':>9} {'lib/base':>8} "
          f"{'max/min':>7}")
    for row in rows:
        sps = f"{row['samples_per_s']:>10.0f}" if "samples_per_s" in row else f"{'-':>10}"
        frac = "100%" if row["workload"].endswith("all)") else "-"
        frac = f"{row['fraction_of_matmul']:>9.0%}" if "fraction_of_matmul" in row else f"{frac:>9}"
        ratio = f"{row['speedup_vs_baseline']:>7.2f}x" if "speedup_vs_baseline" in row else f"{'':>8}"
        spread = f"{row['spread']:>7.2f}" if "spread" in row else f"{'':>7}"
        print(f"{row['workload']:<40} {row['impl']:<9} {sps} {row['gflops']:>8.1f} {frac} {ratio} {spread}")
    print("samples/s, GFLOP/s: medians over rounds; of matmul, lib/base: medians of per-round ratios; "
          "max/min: spread of the repeats")


def print_targets(rows, device):
    by = {(r["workload"], r["impl"]): r for r in rows}
    steps = [r for r in rows if r["impl"] == "library" and ("train" in r["workload"] or "finetune" in r["workload"])]
    for r in steps:
        if device.type == "cpu":
            verdict = "met" if r["fraction_of_matmul"] >= 0.6 else "MISSED"
            print(f"target  {r['workload']}: {r['fraction_of_matmul']:.0%} of matmul rate (>= 60%): {verdict}")
    greedy = next(r for (w, impl), r in by.items() if w.startswith("greedy") and impl == "library")
    verdict = "met" if greedy["speedup_vs_baseline"] >= 3 else "MISSED"
    print(f"target  greedy pretraining: {greedy['speedup_vs_baseline']:.2f}x the baseline (>= 3x): {verdict}")


def machine(device) -> dict:
    """What the figures were measured on: lscpu's model name and number, SIMD, cores, threads, torch, load."""
    info = {"cpu": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "load_average_1min": round(os.getloadavg()[0], 2)}
    try:
        first_cpu = open("/proc/cpuinfo").read().split("\n\n")[0].splitlines()
        fields = (line.split(":", 1) for line in first_cpu if ":" in line)
        cpuinfo = {key.strip(): value.strip() for key, value in fields}
        flags = cpuinfo.get("flags", "").split()
        info.update(cpu=cpuinfo["model name"], cpu_model=cpuinfo["model"],
                    simd=[f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags])
    except (OSError, KeyError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_data(args):
    """An MNIST training subset, or random data of MNIST shape when asked for or when the files are absent."""
    g = torch.Generator().manual_seed(0)
    if args.data == "mnist":
        try:
            data = load_dataset("mnist", root=args.data_root)
            return data.X_train[:args.n_train].clone(), data.y_train[:args.n_train].clone(), "mnist"
        except DataNotFoundError as err:
            print(f"MNIST not found ({str(err).splitlines()[0]}); using random data of MNIST shape", file=sys.stderr)
    X = torch.rand(args.n_train, N_IN, generator=g)
    return X, torch.randint(0, N_CLASSES, (args.n_train,), generator=g), "random"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run: tiny data, one repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; figures are medians over them")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    p.add_argument("--n-train", type=int, default=4096, help="training examples per workload")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training workload (per layer in greedy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--matmul-iters", type=int, default=20, help="GEMMs timed per shape per round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the library's training precision and the matmul reference's dtype (bf16: autocast; pays "
                        "on GPUs and on CPUs with AMX)")
    p.add_argument("--baseline-precision", choices=("fp32", "bf16"), default=None,
                   help="the tutorial loop's precision (default: --precision); fp32 with --precision bf16 compares "
                        "against the usual fp32 loop")
    p.add_argument("--data", choices=("mnist", "random"), default=None, help="default: mnist (random with --quick)")
    p.add_argument("--data-root", default=os.environ.get("STACKED_AE_DATA", str(DEFAULT_ROOT)))
    p.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    p.add_argument("--conv-only", action="store_true", help="only the conv layer workload")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.n_train, args.epochs, args.matmul_iters = 1, 0, 256, 1, 1
    args.data = args.data or ("random" if args.quick else "mnist")
    args.baseline_precision = args.baseline_precision or args.precision
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        sys.exit(f"bench_throughput: {err}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)                             # the baseline's DataLoader shuffles with the global RNG
    X, y, source = load_data(args)
    info = machine(device)
    print(f"machine: {info}")
    print(f"data: {source}, n={len(X)}, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"{args.repeats} repeat(s) (+{args.warmup} warm-up), precision {args.precision} "
          f"(baseline {args.baseline_precision})", flush=True)
    peak, rows = None, []
    if not args.conv_only:
        shapes = matmul_shapes(args.batch_size)
        workloads = make_workloads(X, y, args, device)
        matmul, times, reference = run_rounds(workloads, shapes, args, device)
        peak, rows = summarise(workloads, shapes, matmul, times, reference)
        print_table(rows)
    conv_rows = run_conv(args, device)
    print_conv(conv_rows, device)
    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min): {info['load_average_1min']} at start, {info['load_average_1min_end']} at end "
          f"on {info['cpu_count']} CPUs")
    if rows:
        print_targets(rows, device)
    if args.quick:
        print("(--quick: a smoke run on a few batches without warm-up; its figures are not measurements)")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        Path(args.json).write_text(json.dumps({"machine": info, "settings": settings, "data": source,
                                               "matmul_gflops": peak, "rows": rows, "conv_rows": conv_rows},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
