"""Convolutional autoencoder layers (Masci et al. 2011, "Stacked Convolutional Auto-Encoders").

`ConvAutoencoderLayer((1, 28, 28), ConvSpec(32, kernel=3, stride=2))` is a shallow conv
autoencoder: a Conv2d encoder (optionally followed by 2x2 max-pooling) and a transposed-conv
decoder that restores the exact input shape. It keeps the dense layer's interface: it reads and
writes **flat** rows, (n, C*H*W), and views them as maps inside. So greedy pretraining caches
codes, `StackedEncoder` stacks conv and dense layers, and the classifier head reads the top
codes exactly as for dense layers; only the layers know their maps' shapes.

The decoder unpools by nearest-neighbour upsampling, not by the encoder's max locations: a
decoder that needs no side information from an encoder pass can decode any code, such as the
random points of a 2-D code plane that the reports draw.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import is_int, positive_int
from .layers import (
    ACTIVATIONS,
    DECODER_ACTIVATIONS,
    _check_choice,
    activate,
    check_layer_settings,
    corrupt,
    loss_from_logits,
    sparsity_penalty,
)

Shape = tuple[int, int, int]   # (channels, height, width)
SPEC_KEYS = ("channels", "kernel", "stride", "padding", "pool")


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer: `channels` output maps, a square `kernel`, `stride`, `padding` ("same": kernel // 2,
    which keeps the size at stride 1 and gives ceil(size / stride) for odd kernels), and an optional 2x2
    max-pooling of the activated maps."""
    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int | str = "same"
    pool: bool = False

    def __post_init__(self):
        for name in ("channels", "kernel", "stride"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if not (isinstance(self.padding, str) and self.padding == "same"):
            if not is_int(self.padding) or self.padding < 0:
                raise ValueError(f"padding must be 'same' or an integer >= 0, got {self.padding!r}")
            object.__setattr__(self, "padding", int(self.padding))
        if not isinstance(self.pool, bool):
            raise ValueError(f"pool must be true or false, got {self.pool!r}")

    @classmethod
    def from_dict(cls, spec: dict, key: str = "conv") -> ConvSpec:
        """A spec from a mapping (a pipeline file's inline table); errors name `key` and the field."""
        if isinstance(spec, ConvSpec):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"{key} must be a table such as {{channels = 32, kernel = 3, stride = 1}}, "
                             f"got {spec!r}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"{key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(SPEC_KEYS)}")
        if "channels" not in spec:
            raise ValueError(f"{key}: missing 'channels' (the number of output maps)")
        try:
            return cls(**spec)
        except ValueError as err:
            raise ValueError(f"{key}.{err}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding == "same" else int(self.padding)

    def conv_shape(self, in_shape: Shape) -> Shape:
        """The shape of the maps after the convolution, before pooling."""
        _, h, w = in_shape
        return (self.channels, (h + 2 * self.pad - self.kernel) // self.stride + 1,
                (w + 2 * self.pad - self.kernel) // self.stride + 1)

    def out_shape(self, in_shape: Shape) -> Shape:
        c, h, w = self.conv_shape(in_shape)
        return (c, h // 2, w // 2) if self.pool else (c, h, w)

    def check(self, in_shape: Shape, key: str = "conv") -> Shape:
        """The output shape, or ValueError naming `key` when the input is too small for this layer."""
        _, h, w = in_shape
        if self.kernel > min(h, w) + 2 * self.pad:
            raise ValueError(f"{key}: kernel {self.kernel} is larger than its {h}x{w} input (padded by "
                             f"{self.pad}); use a smaller kernel or fewer downsampling layers below it")
        ch, hh, ww = self.conv_shape(in_shape)
        if self.pool and min(hh, ww) < 2:
            raise ValueError(f"{key}: 2x2 pooling of {hh}x{ww} maps leaves nothing; drop `pool` or a stride below")
        return self.out_shape(in_shape)


def image_shape3(shape) -> Shape:
    """(H, W) or (C, H, W) as (C, H, W); ValueError naming `image_shape` for anything else."""
    dims = tuple(shape) if isinstance(shape, (tuple, list, torch.Size, np.ndarray)) else None
    if dims is None or len(dims) not in (2, 3) or not all(is_int(d) and d >= 1 for d in dims):
        raise ValueError(f"image_shape must be (height, width) or (channels, height, width) with positive "
                         f"integers, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    return dims if len(dims) == 3 else (1, *dims)


def map_shapes(conv, image_shape, key: str = "conv") -> list[Shape]:
    """The maps each conv layer of `conv` (ConvSpecs or their dicts) reads, then the maps the last one gives:
    [input, after layer 1, ...], every layer checked against its input (errors name `key[k]`)."""
    shapes = [image_shape3(image_shape)]
    for k, spec in enumerate(conv):
        shapes.append(ConvSpec.from_dict(spec, f"{key}[{k}]").check(shapes[-1], f"{key}[{k}]"))
    return shapes


def init_conv_weight(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """Glorot-uniform over the kernel's fan-in and fan-out, drawn from `generator` (global RNG untouched)."""
    receptive = weight[0, 0].numel()
    bound = math.sqrt(6.0 / (weight.shape[1] * receptive + weight.shape[0] * receptive))
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


def _n(shape: Shape) -> int:
    return shape[0] * shape[1] * shape[2]


class ConvEncoder(nn.Module):
    """Flat rows (n, C*H*W) -> activation(conv(x)) [-> 2x2 max-pool] -> flat rows (n, C'*H'*W')."""

    def __init__(self, in_shape: Shape, spec: ConvSpec, activation: str = "leaky_relu",
                 generator: torch.Generator | None = None, channels_last: bool = False):
        super().__init__()
        self.in_shape, self.spec = tuple(in_shape), spec
        self.out_shape = spec.check(self.in_shape)
        self.activation = _check_choice(activation, ACTIVATIONS, "activation")
        self.conv = nn.utils.skip_init(nn.Conv2d, in_shape[0], spec.channels, spec.kernel, stride=spec.stride,
                                       padding=spec.pad)
        init_conv_weight(self.conv.weight, generator)
        with torch.no_grad():
            self.conv.bias.zero_()
        self.channels_last = channels_last

    @property
    def n_in(self) -> int:
        return _n(self.in_shape)

    @property
    def n_out(self) -> int:
        return _n(self.out_shape)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Flat rows viewed as (n, C, H, W) maps (in channels-last memory when the layer asks for it)."""
        x = x.reshape(len(x), *self.in_shape)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.maps(x))

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        """Activated (and pooled) maps of pre-activation `z`, as flat rows."""
        h = activate(z, self.activation)
        if self.spec.pool:
            h = F.max_pool2d(h, 2)
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.pre_activation(x))

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, activation={self.activation!r}"


class ConvDecoder(nn.Module):
    """Codes (n, C'*H'*W') -> [nearest upsampling] -> transposed conv -> (n, C*H*W), the exact input shape
    (output padding computed). With `tied` set, the transposed conv uses the encoder's kernel, read inside
    forward: the decoder owns only its bias."""

    def __init__(self, encoder: ConvEncoder, activation: str = "sigmoid", tied: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.activation = _check_choice(activation, DECODER_ACTIVATIONS, "output_activation")
        self.in_shape, self.out_shape = encoder.out_shape, encoder.in_shape   # a decoder's in is the code
        self.spec, self.channels_last = encoder.spec, encoder.channels_last
        self.conv_shape = encoder.spec.conv_shape(encoder.in_shape)
        s, p, k = self.spec.stride, self.spec.pad, self.spec.kernel
        self.output_padding = tuple(size - ((c - 1) * s - 2 * p + k)
                                    for size, c in zip(self.out_shape[1:], self.conv_shape[1:], strict=True))
        self._tied_to = [encoder] if tied else []   # a plain list: not a submodule, not in the state dict
        if tied:
            self.bias = nn.Parameter(torch.zeros(self.out_shape[0]))
        else:
            self.deconv = nn.utils.skip_init(nn.ConvTranspose2d, self.spec.channels, self.out_shape[0], k,
                                             stride=s, padding=p, output_padding=self.output_padding)
            init_conv_weight(self.deconv.weight, generator)
            with torch.no_grad():
                self.deconv.bias.zero_()

    @property
    def tied(self) -> bool:
        return bool(self._tied_to)

    @property
    def n_in(self) -> int:
        return _n(self.in_shape)

    @property
    def n_out(self) -> int:
        return _n(self.out_shape)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activation output, flat: (n, C'*H'*W') -> (n, C*H*W)."""
        h = h.reshape(len(h), *self.in_shape)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        if self.spec.pool:
            h = F.interpolate(h, size=self.conv_shape[1:], mode="nearest")
        s, p = self.spec.stride, self.spec.pad
        if self._tied_to:
            z = F.conv_transpose2d(h, self._tied_to[0].conv.weight, self.bias, stride=s, padding=p,
                                   output_padding=self.output_padding)
        else:
            z = self.deconv(h)
        return z.flatten(1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return activate(self.logits(h), self.activation)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, activation={self.activation!r}, " \
               f"tied={self.tied}"


class ConvAutoencoderLayer(nn.Module):
    """A shallow convolutional autoencoder that rebuilds its clean input; rows in and out are flat.

    Args:
        in_shape: (channels, height, width) of the maps a row holds.
        spec: the ConvSpec (output channels, kernel, stride, padding, pool).
        activation, output_activation, tied, corruption, noise, sparsity, sparsity_target, seed: as for
            the dense `AutoencoderLayer`. The contractive penalty is dense-only and refused here.
        channels_last: run the convolutions in channels-last memory (faster on many CPUs and GPUs).
    """

    kind = "conv"

    def __init__(self, in_shape, spec: ConvSpec | dict, *, activation: str = "leaky_relu",
                 output_activation: str = "sigmoid", tied: bool = False, corruption: str = "none",
                 noise: float = 0.0, sparsity: float = 0.0, sparsity_target: float = 0.05,
                 contractive: float = 0.0, seed: int = 0, channels_last: bool = False):
        super().__init__()
        in_shape = image_shape3(in_shape)
        spec = ConvSpec.from_dict(spec) if isinstance(spec, dict) else spec
        if contractive:
            raise ValueError(f"the contractive penalty is defined for dense layers only; a conv layer got "
                             f"contractive={contractive}")
        self.corruption = check_layer_settings(activation, output_activation, corruption, noise, sparsity,
                                               sparsity_target, 0.0)
        self.noise, self.sparsity, self.sparsity_target = float(noise), float(sparsity), float(sparsity_target)
        self.contractive = 0.0
        generator = torch.Generator().manual_seed(int(seed))
        self.encoder = ConvEncoder(in_shape, spec, activation, generator, channels_last)
        self.decoder = ConvDecoder(self.encoder, output_activation, tied=tied, generator=generator)

    @property
    def n_in(self) -> int:
        return self.encoder.n_in

    @property
    def n_out(self) -> int:
        return self.encoder.n_out

    @property
    def in_shape(self) -> Shape:
        return self.encoder.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.encoder.out_shape

    @property
    def spec(self) -> ConvSpec:
        return self.encoder.spec

    @property
    def tied(self) -> bool:
        return self.decoder.tied

    @property
    def output_activation(self) -> str:
        return self.decoder.activation

    def settings(self) -> dict:
        """Everything needed to rebuild this layer (JSON-ready; `kind` tells a loader it is a conv layer)."""
        return {"kind": self.kind, "in_shape": list(self.in_shape), "spec": self.spec.to_dict(),
                "activation": self.encoder.activation, "output_activation": self.decoder.activation,
                "tied": self.tied, "corruption": self.corruption, "noise": self.noise,
                "sparsity": self.sparsity, "sparsity_target": self.sparsity_target,
                "channels_last": self.encoder.channels_last}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clean reconstruction (no corruption), flat: (n, C*H*W) -> (n, C*H*W)."""
        return self.decode(self.encode(x))

    def recon_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, ConvDecoder]:
        return self.decoder.logits(self.encode(x)), self.decoder

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, reconstruction loss) on a batch of flat rows; corruption only in training mode."""
        x_in = corrupt(x, self.corruption, self.noise, generator) if self.training else x
        h = self.encoder(x_in)
        recon = loss_from_logits(self.decoder.activation, self.decoder.logits(h), x)
        objective = recon
        if self.sparsity > 0:
            objective = objective + self.sparsity * self.sparsity_penalty(h)
        return objective, recon

    def sparsity_penalty(self, h: torch.Tensor) -> torch.Tensor:
        """The dense layer's KL penalty over every unit of the (flat) code maps."""
        return sparsity_penalty(h, self.sparsity_target)
