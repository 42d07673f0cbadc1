"""Greedy layer-wise pretraining (Hinton & Salakhutdinov, 2006; Bengio et al., 2007).

`greedy_pretrain(X, sizes=[64, 32], cfg=PretrainConfig(noise=0.2), seed=0)` trains one
shallow autoencoder per layer, each on the codes of the layers below it (computed once, in
eval mode, without corruption), and returns the `StackedEncoder` and one history per layer.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .data import check_X
from .layers import AutoencoderLayer
from .model import StackedEncoder
from .pretrain_config import PretrainConfig
from .train import evaluate_reconstruction, fit_autoencoder, resolve_device

log = logging.getLogger(__name__)

__all__ = ["PretrainConfig", "greedy_pretrain"]   # PretrainConfig lives in pretrain_config.py


def greedy_pretrain(X, sizes: Sequence[int], cfg: PretrainConfig = PretrainConfig(), *, X_val=None,
                    seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                    conv: Sequence = (), image_shape=None,
                    channels_last: bool = False) -> tuple[StackedEncoder, list[list[dict]]]:
    """Train one autoencoder per layer; layer k learns to reconstruct the codes of layer k-1.

    `conv` lists conv layers (ConvSpecs or dicts such as {"channels": 32, "stride": 2}) that come
    before the dense layers of `sizes`; they need the rows' `image_shape`, (H, W) or (C, H, W).
    Returns the stacked encoder (its layers are the trained modules, decoders included) and
    one history per layer: per epoch, train loss and, with X_val, validation loss.
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
        history = fit_autoencoder(layer, codes, train_cfg, X_val=val_codes, seed=seed, stream=(k,),
                                  stage=stage, progress=progress)
        _record_final(history, layer, codes)
        log.info("%s: final train loss %.4f", stage, history[-1]["train_loss"])
        layers.append(layer)
        histories.append(history)
        codes = _encode(layer, codes)          # frozen codes feed the next layer, computed once
        if val_codes is not None:
            val_codes = _encode(layer, val_codes)
    return StackedEncoder(layers), histories


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
def _encode(layer: AutoencoderLayer, X: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    layer.eval()
    return torch.cat([layer.encode(X[s:s + batch_size]) for s in range(0, len(X), batch_size)])
