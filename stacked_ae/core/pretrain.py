"""Greedy layer-wise pretraining (Hinton & Salakhutdinov, 2006; Bengio et al., 2007).

`greedy_pretrain(X, sizes=[64, 32], cfg=PretrainConfig(noise=0.2), seed=0)` trains one
shallow autoencoder per layer, each on the codes of the layers below it (computed once, in
eval mode, without corruption), and returns the `StackedEncoder` and one history per layer.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .data import check_X
from .files import cpu_state, load_stamped, save_torch
from .layers import AutoencoderLayer, eval_batch_size
from .model import StackedEncoder
from .pretrain_config import PretrainConfig
from .train import TrainingCheckpoint, evaluate_reconstruction, fit_autoencoder, resolve_device

log = logging.getLogger(__name__)

__all__ = ["PretrainConfig", "greedy_pretrain"]   # PretrainConfig lives in pretrain_config.py


def greedy_pretrain(X, sizes: Sequence[int], cfg: PretrainConfig = PretrainConfig(), *, X_val=None,
                    seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                    conv: Sequence = (), image_shape=None, channels_last: bool = False,
                    checkpoint_dir: str | os.PathLike | None = None, checkpoint_stamp: str = "",
                    checkpoint_every_s: float = 300.0) -> tuple[StackedEncoder, list[list[dict]]]:
    """Train one autoencoder per layer; layer k learns to reconstruct the codes of layer k-1.

    `conv` lists conv layers (ConvSpecs or dicts such as {"channels": 32, "stride": 2}) that come
    before the dense layers of `sizes`; they need the rows' `image_shape`, (H, W) or (C, H, W).
    Returns the stacked encoder (its layers are the trained modules, decoders included) and
    one history per layer: per epoch, train loss and, with X_val, validation loss.

    With `checkpoint_dir`, a stopped run resumes where it stopped, with the result of an uninterrupted one:
    each finished layer is kept there (`layer{k}.pt`: weights and history) and not trained again, and the
    layer in training keeps its state at most every `checkpoint_every_s` seconds (`layer{k}.epochs.pt`,
    see TrainingCheckpoint). Files of another `checkpoint_stamp` (the caller's fingerprint of settings and
    data) are ignored and overwritten.
    """
    device = resolve_device(device)
    codes = check_X(X, "X").to(device)
    val_codes = None if X_val is None else check_X(X_val, "X_val", n_features=codes.shape[1]).to(device)
    fresh = cfg.make_layers(codes.shape[1], sizes, seed, conv=conv, image_shape=image_shape,
                            inputs_in_unit_interval=_in_unit_interval(codes, val_codes), channels_last=channels_last)
    layers, histories = [], []
    for k, layer in enumerate(fresh):
        layer = layer.to(device)
        train_cfg = cfg.train_config(k)
        stage = f"pretrain layer {k + 1}/{len(fresh)} ({_describe(layer)})"
        folder = None if checkpoint_dir is None else Path(checkpoint_dir)
        history = None if folder is None else _load_layer(folder / f"layer{k + 1}.pt", checkpoint_stamp, layer)
        if history is not None:
            log.info("%s: kept from an interrupted run, not trained again", stage)
        else:
            epochs = None if folder is None else TrainingCheckpoint(folder / f"layer{k + 1}.epochs.pt",
                                                                      checkpoint_stamp, checkpoint_every_s)
            history = fit_autoencoder(layer, codes, train_cfg, X_val=val_codes, seed=seed, stream=(k,),
                                      stage=stage, progress=progress, checkpoint=epochs)
            _record_final(history, layer, codes)
            if folder is not None:
                _save_layer(folder / f"layer{k + 1}.pt", checkpoint_stamp, layer, history)
                epochs.clear()
        log.info("%s: final train loss %.4f", stage, history[-1]["train_loss"])
        layers.append(layer)
        histories.append(history)
        codes = _encode(layer, codes)          # frozen codes feed the next layer, computed once
        if val_codes is not None:
            val_codes = _encode(layer, val_codes)
    return StackedEncoder(layers), histories


def _save_layer(path: Path, stamp: str, layer, history: list[dict]) -> None:
    save_torch(path, {"stamp": stamp, "history": history, "state": cpu_state(layer.state_dict())})


def _load_layer(path: Path, stamp: str, layer) -> list[dict] | None:
    """Load a finished layer kept by `_save_layer` under `stamp` into `layer`; its history, or None."""
    saved = load_stamped(path, stamp)
    if saved is None:
        return None
    try:
        layer.load_state_dict(saved["state"])
        return saved["history"]
    except Exception as err:   # another architecture under the same stamp: train the layer again
        log.warning("%s: unusable kept layer (%s); it is trained again", path, err)
        return None


def _describe(layer) -> str:
    if getattr(layer, "kind", "dense") == "conv":
        return f"conv {'x'.join(map(str, layer.in_shape))}->{'x'.join(map(str, layer.out_shape))}"
    return f"{layer.n_in}->{layer.n_out}"


def _in_unit_interval(*arrays: torch.Tensor | None) -> bool:
    return all(bool(a.min() >= 0 and a.max() <= 1) for a in arrays if a is not None)


def _record_final(history: list[dict], layer: AutoencoderLayer, codes: torch.Tensor) -> None:
    """Add the clean (uncorrupted) reconstruction loss of the final weights to the last row."""
    history[-1]["clean_loss"] = evaluate_reconstruction(layer, codes)["loss"]


@torch.no_grad()
def _encode(layer: AutoencoderLayer, X: torch.Tensor) -> torch.Tensor:
    layer.eval()
    batch_size = eval_batch_size(layer, X.device)
    return torch.cat([layer.encode(X[s:s + batch_size]) for s in range(0, len(X), batch_size)])
