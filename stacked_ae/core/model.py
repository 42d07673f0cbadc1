"""Stacked encoders and the networks built from them.

`StackedEncoder(layers)` holds pretrained `AutoencoderLayer`s (or fresh ones, through
`StackedEncoder.random`); `classifier(n_classes)` adds a linear head and `unroll()` gives
the deep autoencoder. The modules handed on are the trained ones, not copies.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .checks import is_int, is_real, positive_int
from .conv import ConvAutoencoderLayer, ConvSpec
from .data import check_X
from .files import atomic_write
from .layers import AutoencoderLayer, eval_batch_size, init_linear, loss_from_logits
from .pretrain_config import PretrainConfig
from .seeds import derive_seed, generator_device, rand, stream
from .version import __version__

FORMAT = "stacked-ae/encoder"
FORMAT_VERSION = 2   # 2: conv layers (a layer's settings carry kind = "conv")


class CheckpointError(ValueError):
    """A checkpoint file is truncated, foreign or does not fit the expected architecture."""


class StackedEncoder(nn.Module):
    """Encoders of pretrained autoencoder layers applied in order: (n, n_in) -> (n, sizes[-1])."""

    def __init__(self, layers: Sequence[AutoencoderLayer]):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("StackedEncoder needs at least one layer")
        for k, (below, above) in enumerate(zip(layers, layers[1:], strict=False), start=2):
            if below.n_out != above.n_in:
                raise ValueError(f"layer {k} expects {above.n_in} inputs but layer {k - 1} gives {below.n_out}")
            if _kind(above) == "conv" and (_kind(below) != "conv" or below.out_shape != above.in_shape):
                raise ValueError(f"layer {k} is a conv layer on {above.in_shape} maps but layer {k - 1} gives "
                                 f"{getattr(below, 'out_shape', 'flat codes')}; conv layers come first, each on "
                                 f"the maps of the one below")
        self.layers = nn.ModuleList(layers)

    @classmethod
    def random(cls, n_in: int, sizes: Sequence[int], *, seed: int = 0, config: PretrainConfig | None = None,
               conv: Sequence = (), image_shape=None, channels_last: bool = False, **settings) -> StackedEncoder:
        """Fresh layers through the same constructor as greedy_pretrain: the weights it would start from.

        Layer settings come as a PretrainConfig (`config`) or as its fields (`settings`, per-layer lists ok);
        `conv` and `image_shape` as for greedy_pretrain."""
        if config is not None and settings:
            raise TypeError(f"give config or settings, not both (got settings {sorted(settings)})")
        cfg = config if config is not None else PretrainConfig(**settings)
        return cls(cfg.make_layers(n_in, sizes, seed, conv=conv, image_shape=image_shape,
                                   channels_last=channels_last))

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def sizes(self) -> list[int]:
        return [layer.n_out for layer in self.layers]

    @property
    def activations(self) -> list[str]:
        return [layer.encoder.activation for layer in self.layers]

    @property
    def conv(self) -> list[ConvSpec]:
        """The specs of the conv layers (empty for a dense stack)."""
        return [layer.spec for layer in self.layers if _kind(layer) == "conv"]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the input rows of a stack that starts with a conv layer; None for a dense one."""
        first = self.layers[0]
        return first.in_shape if _kind(first) == "conv" else None

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        for layer in self.layers[:depth]:
            x = layer.encoder(x)
        return x

    @torch.no_grad()
    def encode(self, X, batch_size: int | None = None, depth: int | None = None) -> torch.Tensor:
        """Codes of X (array or tensor) after `depth` layers (default: all; 0: X as checked), in eval mode, in
        batches of `batch_size` examples (default: eval_batch_size)."""
        if depth is not None and not (is_int(depth) and 0 <= depth <= len(self.layers)):   # 0: the input itself
            raise ValueError(f"depth must be a number of layers in 0..{len(self.layers)} (or None: all), got "
                             f"{depth!r}")
        device = next(self.parameters()).device
        batch_size = eval_batch_size(self, device) if batch_size is None else positive_int("batch_size", batch_size)
        X = check_X(X, "X", n_features=self.n_in)
        dtype = next(self.parameters()).dtype   # a stack made .double() or .bfloat16() reads its own dtype
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(X[s:s + batch_size].to(device, dtype), depth).cpu()
                              for s in range(0, len(X), batch_size)])
        finally:
            self.train(was_training)

    def classifier(self, n_classes: int, *, seed: int = 0, freeze: bool = False, dropout: float = 0.0,
                   input_dropout: float = 0.0) -> Classifier:
        """Encoder + linear head (logits out); the encoder modules are this stack's own. `dropout` and
        `input_dropout` apply in training only (see Classifier)."""
        return Classifier(self, n_classes, seed=seed, freeze=freeze, dropout=dropout, input_dropout=input_dropout)

    def unroll(self) -> DeepAutoencoder:
        """The deep autoencoder: encoders 1..K, then decoders K..1, each the pretrained module."""
        return DeepAutoencoder(self)

    # ------------------------------------------------------------ save / load

    def metadata(self) -> dict:
        # dense stacks keep format 1, so that older readers still load them; conv layers need format 2
        version = FORMAT_VERSION if self.conv else 1
        return {"format": FORMAT, "format_version": version, "n_in": self.n_in, "sizes": self.sizes,
                "activations": self.activations, "layers": [layer.settings() for layer in self.layers],
                "stacked_ae_version": __version__, "torch_version": torch.__version__}

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights and JSON metadata to one file, atomically (temp file + rename)."""
        return atomic_write(path, self.to_bytes())

    def to_bytes(self) -> bytes:
        """The contents of the file `save` writes (weights on CPU and JSON metadata)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        buffer = io.BytesIO()
        torch.save({"metadata": json.dumps(self.metadata(), sort_keys=True), "state_dict": state}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, map_location: str | torch.device = "cpu",
                   source: str = "<bytes>") -> StackedEncoder:
        """The encoder `to_bytes` wrote (checked like a file read by `load`; `source` names it in errors)."""
        return cls._read(io.BytesIO(blob), source, map_location)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> StackedEncoder:
        """Read a file written by `save`; never unpickles code (weights_only=True)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        return cls._read(path, path, map_location)

    @classmethod
    def _read(cls, source, path, map_location) -> StackedEncoder:
        try:
            blob = torch.load(source, map_location=map_location, weights_only=True)
        except Exception as err:   # weights_only refuses pickled code without running it
            raise CheckpointError(f"{path}: not a readable stacked-ae checkpoint: truncated, corrupt, not written "
                                  f"by StackedEncoder.save, or holding objects other than tensors and plain "
                                  f"data (refused without running any code) [{type(err).__name__}]") from None
        if not isinstance(blob, dict) or set(blob) != {"metadata", "state_dict"}:
            raise CheckpointError(f"{path}: not a stacked-ae checkpoint (expected keys metadata, state_dict)")
        try:
            meta = json.loads(blob["metadata"])
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise CheckpointError(f"{path}: not a stacked-ae encoder checkpoint (format {found!r})")
        if not is_int(meta.get("format_version", 0)):
            raise CheckpointError(f"{path}: checkpoint metadata's format_version must be an integer, got "
                                  f"{meta['format_version']!r}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {meta['format_version']} is newer than "
                                  f"this stacked-ae understands ({FORMAT_VERSION}); upgrade stacked-ae")
        try:
            encoder = cls([layer_from_settings(settings) for settings in meta["layers"]])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: checkpoint layer settings are invalid: {err}") from None
        try:
            encoder.load_state_dict(blob["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: weights do not match the architecture in its metadata "
                                  f"({meta['n_in']}-{'-'.join(map(str, meta['sizes']))}): "
                                  f"{str(err).splitlines()[0]}") from None
        # torch.load placed the tensors; a device (or its name) also places the modules, other forms
        # (a dict of devices, a function) are torch.load's alone
        placed = encoder.to(map_location) if isinstance(map_location, (str, torch.device)) else encoder
        return placed.eval()


def _kind(layer) -> str:
    return getattr(layer, "kind", "dense")


def layer_from_settings(settings: dict):
    """The layer that `layer.settings()` describes: a ConvAutoencoderLayer for kind "conv", else dense."""
    if not isinstance(settings, dict):
        raise TypeError(f"layer settings must be a mapping, got {type(settings).__name__}")
    settings = dict(settings)
    kind = settings.pop("kind", "dense")
    if kind == "conv":
        spec = ConvSpec.from_dict(settings.pop("spec"), "spec")
        return ConvAutoencoderLayer(settings.pop("in_shape"), spec, **settings)
    if kind != "dense":
        raise ValueError(f"unknown layer kind {kind!r}; known: dense, conv")
    return AutoencoderLayer(**settings)


class DeepAutoencoder(nn.Module):
    """Unrolled stack: encoders 1..K then decoders K..1 (Hinton & Salakhutdinov, 2006)."""

    def __init__(self, stack: StackedEncoder):
        super().__init__()
        self.stack = stack
        self.decoders = nn.ModuleList([layer.decoder for layer in reversed(stack.layers)])

    @property
    def n_in(self) -> int:
        return self.stack.n_in

    @property
    def output_activation(self) -> str:
        return self.decoders[-1].activation

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        for decoder in self.decoders[:-1]:
            codes = decoder(codes)
        return self.decoders[-1](codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def recon_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
        """Pre-activation of the reconstruction, and the output decoder (the first layer's)."""
        h = self.encode(x)
        for decoder in self.decoders[:-1]:
            h = decoder(h)
        return self.decoders[-1].logits(h), self.decoders[-1]

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, reconstruction loss): the first layer's decoder loss on the clean input."""
        logits, decoder = self.recon_logits(x)
        recon = loss_from_logits(decoder.activation, logits, x)
        return recon, recon


def check_dropout(name: str, p) -> float:
    """A drop probability in [0, 1); the error names `name`."""
    if not is_real(p) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")
    return float(p)


class Classifier(nn.Module):
    """Stacked encoder + linear head giving logits: (n, n_in) -> (n, n_classes).

    With `input_dropout` / `dropout`, training-mode forward passes zero each input / each hidden
    unit with that probability and scale the survivors by 1 / (1 - p) (inverted dropout, Srivastava
    et al. 2014); evaluation uses the network as is. The head's initial weights and the masks come
    from the `head_init` and `dropout` streams of `seed`, so a seed gives the same training run and
    the global RNG is untouched.

    With `freeze`, the encoder is a fixed feature map: it runs without gradients, and its modules
    are left as the caller made them, parameters and train/eval mode alike (a later unfrozen
    classifier still trains it; an encoder's forward pass is the same in either mode).
    """

    def __init__(self, encoder: StackedEncoder, n_classes: int, *, seed: int = 0, freeze: bool = False,
                 dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        if not is_int(n_classes) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        n_classes = int(n_classes)
        check_dropout("dropout", dropout)
        check_dropout("input_dropout", input_dropout)
        self.encoder = encoder
        self.head = init_linear(encoder.sizes[-1], n_classes,
                                torch.Generator().manual_seed(derive_seed(seed, "head_init")))
        self.head.to(next(encoder.parameters()).device)
        self.frozen = freeze
        self.dropout, self.input_dropout = float(dropout), float(input_dropout)
        self._seed, self._masks = int(seed), None      # mask generator, made on the data's device

    @property
    def n_in(self) -> int:
        return self.encoder.n_in

    @property
    def n_classes(self) -> int:
        return self.head.out_features

    def train(self, mode: bool = True):
        if not self.frozen:
            return super().train(mode)
        self.training = mode    # the head's mode only: the caller's encoder keeps its own
        self.head.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            codes = self.encode(x)
        return self.head(codes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input: the encoder's codes, with dropout in training mode."""
        if not self.training or (self.dropout == 0.0 and self.input_dropout == 0.0):
            return self.encoder(x)
        x = self._drop(x, self.input_dropout)
        for layer in self.encoder.layers:
            x = self._drop(layer.encoder(x), self.dropout)
        return x

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning updates: the head alone when frozen, else every parameter."""
        return list(self.head.parameters()) if self.frozen else list(self.parameters())

    def rng_state(self) -> torch.Tensor | None:
        """The dropout masks' generator state (None before the first training-mode pass with dropout)."""
        return None if self._masks is None else self._masks.get_state()

    def set_rng_state(self, state: torch.Tensor | None) -> None:
        """Continue the dropout masks from `state` (from `rng_state`), as a resumed training run does."""
        if state is None:
            self._masks = None
            return
        self._masks = torch.Generator(device=generator_device(next(self.parameters()).device))
        self._masks.set_state(state)

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if p == 0.0:
            return x
        if self._masks is None or self._masks.device != generator_device(x.device):
            self._masks = stream(derive_seed(self._seed, "dropout"), x.device)
        keep = rand(x.shape, self._masks, x.device).ge_(p)
        return x * keep.mul_(1.0 / (1.0 - p))

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, input_dropout={self.input_dropout}" if self.dropout or \
            self.input_dropout else ""
