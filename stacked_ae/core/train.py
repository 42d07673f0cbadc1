"""Training loops: batching, one epoch, fit with early stopping, evaluation.

`fit_autoencoder(model, X, cfg, X_val=..., seed=0)` and `fit_classifier(model, X, y, cfg,
X_val=..., y_val=..., seed=0)` each return a `history`: one dict per epoch. Data stays one
tensor on the device; a batch is an index slice of a per-epoch permutation.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import finite_real, is_int, is_real, positive_int
from .data import check_labels, check_X
from .files import cpu_state, load_stamped, save_torch
from .layers import activate, eval_batch_size, full_precision, loss_from_logits
from .seeds import derive_seed
from .seeds import stream as random_stream

log = logging.getLogger(__name__)
HEARTBEAT = "heartbeat"   # an epoch line's record attribute: (training run, its seconds so far), for logs to thin

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16")
FUSED_DEVICES = ("cpu", "cuda")     # where torch has fused Adam and SGD kernels


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the message names the stage, the epoch and the lr."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    momentum: float = 0.9          # SGD only
    weight_decay: float = 0.0      # L2 on all parameters, through the optimizer
    schedule: str = "constant"     # learning-rate schedule over epochs
    patience: int | None = None    # early stopping: epochs without validation improvement; None = off
    epoch_size: int = 0            # an epoch shows at least this many examples: a small training set is
                                   # cycled in fresh permutations, so every label budget gets comparable
                                   # updates per epoch; 0 = one pass
    precision: str = "fp32"        # bf16: training steps under bfloat16 autocast (weights, optimizer and
                                   # losses stay fp32); pays on GPUs and on CPUs with AMX

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if not (is_real(self.lr) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("momentum", "weight_decay"):
            finite_real(name, getattr(self, name))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience is not None:
            object.__setattr__(self, "patience", positive_int("patience", self.patience))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not is_int(self.epoch_size) or self.epoch_size < 0:
            raise ValueError(f"epoch_size must be an integer >= 0, got {self.epoch_size!r}")
        object.__setattr__(self, "epoch_size", int(self.epoch_size))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; a named device must exist."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but torch sees no MPS device")
    return device


def device_label(device: torch.device) -> str:
    """`cpu`, or a GPU with its name (`cuda:0 (NVIDIA H200)`): what run manifests and stage records say ran them."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD; on CPU and CUDA with torch's fused kernel, one pass over all parameters per step.

    Fused Adam is as deterministic as the per-tensor loop, and much faster on CPU (a third of a
    784-1000 step was the loop's elementwise passes); it rounds differently in the last bit.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               fused=fused or None)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch learning-rate multiplier: constant, cosine to 0, or linear to 0."""
    if cfg.schedule == "cosine":
        factor = lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))  # noqa: E731
    elif cfg.schedule == "linear":
        factor = lambda epoch: 1 - epoch / cfg.epochs  # noqa: E731
    else:
        factor = lambda epoch: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(device: torch.device, precision: str = "fp32"):
    """The context a training step runs in: bfloat16 autocast for `bf16`, nothing for `fp32`.

    Under autocast the matrix products run in bfloat16 (fp32 accumulation); parameters, their
    gradients, the optimizer state and the losses stay fp32.
    """
    if precision == "bf16" and device.type == "cpu" and cpu_bf16_native() is False:
        _warn_emulated_bf16()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@functools.cache
def cpu_bf16_native() -> bool | None:
    """Whether this CPU computes bfloat16 products natively (AVX512-BF16 or AMX), as torch's oneDNN sees it;
    None when torch cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once per process: bf16 on a CPU without bfloat16 units is emulated, and slow."""
    warnings.warn("precision 'bf16' on a CPU without bfloat16 units (no AVX512-BF16 or AMX): autocast emulates "
                  "it, several times slower than fp32 (about 9x on mnist-conv-2d's network on an AVX2 CPU: "
                  "benchmarks/bench_precision.py); use precision 'fp32' (--precision fp32) here",
                  RuntimeWarning, stacklevel=3)


def iterate_batches(n: int, batch_size: int, generator: torch.Generator, device,
                    epoch_size: int = 0) -> Iterator[torch.Tensor]:
    """Index slices of random permutations of range(n): one, or as many whole ones as it takes
    to reach `epoch_size` examples."""
    passes = max(1, -(-epoch_size // n))
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)]).to(device)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def train_epoch(model: nn.Module, X: torch.Tensor, y: torch.Tensor | None, loss_fn: Callable,
                optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator,
                epoch_size: int = 0, precision: str = "fp32") -> torch.Tensor:
    """One epoch over (X, y) in shuffled batches; returns the mean loss (0-d tensor, still on device).

    `loss_fn(model, xb, yb) -> (objective, reported_loss)`; no host sync inside the loop.
    """
    model.train()
    cast = autocast(X.device, precision)
    total, seen = torch.zeros((), device=X.device), 0
    for idx in iterate_batches(len(X), batch_size, generator, X.device, epoch_size):
        xb = X[idx]
        yb = None if y is None else y[idx]
        with cast:
            objective, reported = loss_fn(model, xb, yb)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += reported.detach() * len(idx)
        seen += len(idx)
    return total / seen


def _autoencoder_loss(generator):
    def loss_fn(model, xb, _yb):
        return model.loss(xb, generator)
    return loss_fn


def _classifier_loss(model, xb, yb):
    loss = F.cross_entropy(full_precision(model(xb)), yb)   # fp32 loss under bf16 autocast too
    return loss, loss


@torch.inference_mode()
def evaluate_reconstruction(model: nn.Module, X: torch.Tensor, batch_size: int | None = None) -> dict:
    """Mean reconstruction loss (the training loss, per element, clean input) and squared error
    summed over features, averaged over examples; one forward pass per batch (`batch_size` examples;
    default: eval_batch_size). X: a tensor on the model's device, or any array (checked and moved there)."""
    X, _ = _on_model_device(model, X)
    model.eval()
    batch_size = eval_batch_size(model, X.device) if batch_size is None else batch_size
    loss, sse = torch.zeros((), device=X.device), torch.zeros((), device=X.device)
    for start in range(0, len(X), batch_size):
        xb = X[start:start + batch_size]
        logits, decoder = model.recon_logits(xb)
        loss += loss_from_logits(decoder.activation, logits, xb) * len(xb)
        sse += (activate(logits, decoder.activation) - xb).pow(2).sum()
    return {"loss": (loss / len(X)).item(), "sse": (sse / len(X)).item()}


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict:
    """Mean cross-entropy, error rate and accuracy (batches of `batch_size`; default: eval_batch_size). X and y:
    tensors on the model's device, or any arrays (checked and moved there)."""
    X, y = _on_model_device(model, X, y)
    model.eval()
    batch_size = eval_batch_size(model, X.device) if batch_size is None else batch_size
    loss, wrong = torch.zeros((), device=X.device), torch.zeros((), device=X.device)
    for start in range(0, len(X), batch_size):
        logits = model(X[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss += F.cross_entropy(logits, yb, reduction="sum")
        wrong += (logits.argmax(1) != yb).sum()
    error = (wrong / len(X)).item()
    return {"loss": (loss / len(X)).item(), "error": error, "accuracy": 1.0 - error}


def _on_model_device(model: nn.Module, X, y=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tensors pass as they are (the training loops' own, already checked and placed); arrays given by a caller
    are checked as fit_* checks them and moved to the model's device."""
    device = next(model.parameters()).device
    if not isinstance(X, torch.Tensor):
        X = check_X(X, "X", n_features=_n_in(model)).to(device)
    if y is not None and not isinstance(y, torch.Tensor):
        y = check_labels(y, getattr(model, "n_classes", None), "y", n=len(X)).to(device)
    return X, y


@torch.inference_mode()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    X, _ = _on_model_device(model, X)
    model.eval()
    batch_size = eval_batch_size(model, X.device) if batch_size is None else batch_size
    return torch.cat([model(X[s:s + batch_size]) for s in range(0, len(X), batch_size)]) if len(X) else \
        torch.empty(0)


class TrainingCheckpoint:
    """One file that keeps `fit`'s state between epochs, so that a stopped training run (Ctrl-C, a killed
    job, the end of a batch job's time) resumes after the last epoch kept and ends exactly as an
    uninterrupted run would: weights, optimizer and schedule state, the early-stopping record (best
    weights, best epoch, epochs without improvement), the history and every random stream are saved.

    `stamp` names what the file belongs to (the caller's fingerprint of settings and data): a file with
    another stamp is ignored and overwritten. `every_s` spaces the saves (0: after every epoch; `clock`
    reads seconds), so that short epochs do not pay for writing large states. A file of the same stamp
    written under other training settings, seed or data size is refused with a ValueError naming it."""

    def __init__(self, path: str | os.PathLike, stamp: str = "", every_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not every_s >= 0:
            raise ValueError(f"every_s must be a number >= 0, got {every_s!r}")
        self.path, self.stamp, self.every_s = Path(path), str(stamp), float(every_s)
        self.clock = clock
        self._last = clock()

    def load(self) -> dict | None:
        """The state kept under this stamp, or None (none kept, another stamp, or unreadable)."""
        return load_stamped(self.path, self.stamp)

    def due(self) -> bool:
        return self.clock() - self._last >= self.every_s

    def save(self, state: dict) -> None:
        save_torch(self.path, {**state, "stamp": self.stamp})
        self._last = self.clock()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _resume(state: dict, checkpoint: TrainingCheckpoint, *, cfg: TrainConfig, seed: int, stream, n: int,
            model: nn.Module, optimizer, schedule, generators: list) -> None:
    """Load a kept state into a fresh model, optimizer, schedule and random streams."""
    expected = {"config": repr(cfg), "seed": seed, "stream": list(stream), "n": n}
    for key, value in expected.items():
        if state.get(key) != value:
            raise ValueError(f"{checkpoint.path}: training checkpoint written for {key} = {state.get(key)!r}, "
                             f"but this run has {value!r}; remove the file or pass another checkpoint")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    for gen, saved in zip(generators, state["generators"], strict=True):
        gen.set_state(saved)
    if hasattr(model, "set_rng_state"):
        model.set_rng_state(state["model_rng"])


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor | None, cfg: TrainConfig, *,
        loss_fn: Callable, validate: Callable[[], dict] | None, score_key: Callable[[dict], tuple],
        seed: int, stage: str, progress: bool, stream: tuple[int, ...] = (),
        generators: tuple = (), checkpoint: TrainingCheckpoint | None = None) -> list[dict]:
    """The shared epoch loop: train, validate, keep the best weights, stop early, restore.

    Batches follow the `batch_order` stream of (seed, *stream); a model with `trainable_parameters()`
    (a frozen Classifier) names what the optimizer updates. `generators` are the other random streams
    that `loss_fn` draws from; `checkpoint` keeps them with everything else (see TrainingCheckpoint)."""
    from tqdm.auto import tqdm

    if cfg.patience is not None and validate is None:
        raise ValueError(f"{stage}: patience={cfg.patience} (early stopping) needs validation data; "
                         f"pass X_val (and y_val), or set patience=None")
    generator = torch.Generator().manual_seed(derive_seed(seed, "batch_order", *stream))
    trainable = model.trainable_parameters() if hasattr(model, "trainable_parameters") else model.parameters()
    params = [p for p in trainable if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    schedule = make_schedule(optimizer, cfg)
    history, best, best_epoch, best_state, stale = [], None, None, None, 0
    streams = [g for g in (generator, *generators) if g is not None]
    first, spent, started = 1, 0.0, time.perf_counter()
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        _resume(state, checkpoint, cfg=cfg, seed=seed, stream=stream, n=len(X), model=model,
                optimizer=optimizer, schedule=schedule, generators=streams)
        history, best_epoch, stale = state["history"], state["best_epoch"], state["stale"]
        best = None if state["best"] is None else tuple(state["best"])
        best_state = state["best_state"]
        first, spent = state["epoch"] + 1, float(state.get("elapsed", 0.0))
        log.info("%s: resumed after epoch %d from %s", stage, state["epoch"], checkpoint.path)
    # a manual bar: iterating tqdm over the epochs only refreshes its count now and then, so a postfix
    # written every epoch would show a count that stands still
    bar = tqdm(total=cfg.epochs, initial=first - 1, desc=stage, leave=False, disable=not progress, unit="epoch")
    for epoch in range(first, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(model, X, y, loss_fn, optimizer, cfg.batch_size, generator,
                                 cfg.epoch_size, cfg.precision).item()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"{stage}: training loss became {train_loss} at epoch {epoch} "
                                   f"(lr={lr:g}); try a smaller learning rate")
        schedule.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
        if validate is not None:
            row.update({f"val_{k}": v for k, v in validate().items()})
            if not math.isfinite(row["val_loss"]):
                raise TrainingDiverged(f"{stage}: validation loss became {row['val_loss']} at epoch "
                                       f"{epoch} (lr={lr:g}); try a smaller learning rate")
            if best is None or score_key(row) < best:
                best, best_epoch, best_state, stale = score_key(row), epoch, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.endswith("loss") or k.endswith("error")},
                        refresh=False)
        bar.update(1)
        if log.isEnabledFor(logging.INFO):   # the line is built only where a log shows it
            seconds = time.perf_counter() - started
            log.info("%s: epoch %d/%d, %s%s, %.3g s/epoch", stage, epoch, cfg.epochs,
                     ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in row.items()
                               if k not in ("epoch", "val_accuracy")),   # accuracy: 1 - error
                     "" if best_epoch is None else f", best epoch {best_epoch}", seconds / (epoch - first + 1),
                     extra={HEARTBEAT: (stage, seconds)})
        if cfg.patience is not None and stale >= cfg.patience:
            break
        if checkpoint is not None and epoch < cfg.epochs and checkpoint.due():
            checkpoint.save({
                "epoch": epoch, "config": repr(cfg), "seed": seed, "stream": list(stream), "n": len(X),
                "elapsed": spent + time.perf_counter() - started,   # seconds of training, all runs together
                "model": cpu_state(model.state_dict()), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "generators": [g.get_state() for g in streams],
                "model_rng": model.rng_state() if hasattr(model, "rng_state") else None,
                "history": history, "best": None if best is None else list(best), "best_epoch": best_epoch,
                "best_state": None if best_state is None else cpu_state(best_state), "stale": stale})
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        for row in history:
            row["best"] = row["epoch"] == best_epoch
    model.eval()
    return history


def _seed_of(seed: int | None) -> int:
    return 0 if seed is None else int(seed)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def fit_autoencoder(model: nn.Module, X, cfg: TrainConfig = TrainConfig(), *, X_val=None, seed: int = 0,
                    stage: str = "autoencoder", progress: bool = False, stream: tuple[int, ...] = (),
                    checkpoint: TrainingCheckpoint | None = None) -> list[dict]:
    """Train `model` (an AutoencoderLayer or an unrolled DeepAutoencoder) to reconstruct X.

    With X_val, each epoch records `val_loss`, the best epoch's weights are restored at the
    end, and `cfg.patience` stops training early. Returns the per-epoch history. Batch order and
    corruption come from the `batch_order` and `corruption` streams of (seed, *stream);
    greedy_pretrain passes the layer index as `stream`. A sigmoid (cross-entropy) decoder
    refuses X or X_val outside [0, 1] with a ValueError naming `stage`. With a `checkpoint`
    (TrainingCheckpoint), a stopped run resumes after the last epoch kept.
    """
    device = _device_of(model)
    X = check_X(X, "X", n_features=_n_in(model)).to(device)
    X_val = None if X_val is None else check_X(X_val, "X_val", n_features=_n_in(model)).to(device)
    _check_targets(model, X, "X", stage)
    if X_val is not None:
        _check_targets(model, X_val, "X_val", stage)
    validate = None if X_val is None else (lambda: evaluate_reconstruction(model, X_val))
    gen = random_stream(derive_seed(_seed_of(seed), "corruption", *stream), device)
    return fit(model, X, None, cfg, loss_fn=_autoencoder_loss(gen), validate=validate,
               score_key=lambda row: (row["val_loss"],), seed=_seed_of(seed), stage=stage, progress=progress,
               stream=stream, generators=(gen,), checkpoint=checkpoint)


def _check_targets(model: nn.Module, X: torch.Tensor, name: str, stage: str) -> None:
    """Cross-entropy on a sigmoid output needs targets in [0, 1]: outside it the loss falls without bound."""
    if getattr(model, "output_activation", None) != "sigmoid":
        return
    lo, hi = X.aminmax()
    if lo < 0 or hi > 1:
        raise ValueError(f"{stage}: the decoder's sigmoid output (cross-entropy loss) needs targets in [0, 1], "
                         f"but {name} lies in [{lo.item():.4g}, {hi.item():.4g}]; scale the data to [0, 1] or "
                         f"use output_activation='linear' (squared error)")


def fit_classifier(model: nn.Module, X, y, cfg: TrainConfig = TrainConfig(), *, X_val=None, y_val=None,
                   seed: int = 0, stage: str = "classifier", progress: bool = False,
                   checkpoint: TrainingCheckpoint | None = None) -> list[dict]:
    """Train `model` (logits out) with cross-entropy on (X, y).

    With validation data, each epoch records `val_loss` and `val_error`; the epoch with the
    lowest validation error (ties: lower loss) is restored at the end. Returns the history. With a
    `checkpoint` (TrainingCheckpoint), a stopped run resumes after the last epoch kept.
    """
    device = _device_of(model)
    n_classes = _n_classes(model)
    X = check_X(X, "X", n_features=_n_in(model)).to(device)
    y = check_labels(y, n_classes, "y", n=len(X)).to(device)
    validate = None
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    if X_val is not None:
        X_val = check_X(X_val, "X_val", n_features=_n_in(model)).to(device)
        y_val = check_labels(y_val, n_classes, "y_val", n=len(X_val)).to(device)
        validate = lambda: evaluate_classifier(model, X_val, y_val)  # noqa: E731
    return fit(model, X, y, cfg, loss_fn=_classifier_loss, validate=validate,
               score_key=lambda row: (row["val_error"], row["val_loss"]), seed=_seed_of(seed),
               stage=stage, progress=progress, checkpoint=checkpoint)


def _n_in(model: nn.Module) -> int | None:
    return getattr(model, "n_in", None)


def _n_classes(model: nn.Module) -> int | None:
    return getattr(model, "n_classes", None)
