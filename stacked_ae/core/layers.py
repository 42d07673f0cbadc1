"""One shallow autoencoder layer: encoder, decoder, input corruption and penalties.

`AutoencoderLayer(n_in, n_out, activation="sigmoid", corruption="mask", noise=0.25)` is
the unit that greedy pretraining trains; its `encoder` is what a `StackedEncoder` keeps and
its `decoder` is what `StackedEncoder.unroll()` reuses, module for module.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import is_real, positive_int
from .seeds import rand, randn

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear", "leaky_relu", "elu", "softplus")
# A decoder's output: any unit (its loss: cross-entropy for sigmoid, squared error for the others), or
# "auto", which mirrors the units whose codes the decoder rebuilds (see PretrainConfig._auto_output).
DECODER_ACTIVATIONS = ACTIVATIONS
OUTPUT_ACTIVATIONS = ("auto", *DECODER_ACTIVATIONS)
CORRUPTIONS = ("none", "mask", "gaussian", "salt_pepper")


# Evaluation and encoding run in batches of at most EVAL_BATCH examples, fewer where one batch's conv maps would
# pass EVAL_BYTES: the book's first conv layer holds 32 x 28 x 28 floats an image (822 MB at 8,192 images), and
# on a CPU a batch that large evaluates at less than half the speed of small ones (benchmarks/bench_eval.py); on
# large images it does not fit in memory at all. Dense layers keep EVAL_BATCH: their speed does not depend on it.
EVAL_BATCH = 8192
EVAL_BYTES = {"cpu": 8 * 2**20}      # per device type; GPUs (and the rest): EVAL_BYTES_OTHER
EVAL_BYTES_OTHER = 2**30


def widest_map(model: nn.Module) -> int:
    """The most numbers one example occupies in any conv map of `model` (inputs, maps before pooling,
    outputs, read from its conv modules' shapes); 0 for a model without conv layers."""
    widest = 0
    for module in model.modules():
        for name in ("in_shape", "conv_shape", "out_shape"):
            shape = getattr(module, name, None)
            if isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(d, int) for d in shape):
                widest = max(widest, math.prod(shape))
    return widest


def eval_batch_size(model: nn.Module, device: torch.device | str | None = None) -> int:
    """Examples per batch when evaluating or encoding with `model` on `device` (default: where its
    parameters are): EVAL_BATCH, or fewer for a conv model, so that one batch's widest map (fp32) stays
    within EVAL_BYTES for the device type."""
    widest = widest_map(model)
    if not widest:
        return EVAL_BATCH
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    budget = EVAL_BYTES.get(torch.device(device).type, EVAL_BYTES_OTHER)
    return max(1, min(EVAL_BATCH, budget // (4 * widest)))


def _check_choice(value: str, known: tuple[str, ...], key: str) -> str:
    if value not in known:
        raise ValueError(f"{key} must be one of {', '.join(known)}; got {value!r}")
    return value


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """`t` in fp32 if it is a 16-bit float (an autocast result); other dtypes (fp32, fp64) as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    """Apply the named elementwise activation."""
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return F.relu(z)
    if name == "linear":
        return z
    if name == "leaky_relu":
        return F.leaky_relu(z, 0.01)
    if name == "elu":
        return F.elu(z)
    if name == "softplus":
        return F.softplus(z)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")


def activation_grad(z: torch.Tensor, h: torch.Tensor, name: str) -> torch.Tensor:
    """d activation / d z, elementwise, given pre-activation `z` and output `h`."""
    if name == "sigmoid":
        return h * (1 - h)
    if name == "tanh":
        return 1 - h * h
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "linear":
        return torch.ones_like(z)
    if name == "leaky_relu":
        return torch.where(z > 0, 1.0, 0.01).to(z.dtype)
    if name == "elu":
        return torch.where(z > 0, torch.ones_like(z), h + 1)
    if name == "softplus":
        return torch.sigmoid(z)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")


def init_linear(n_in: int, n_out: int, generator: torch.Generator | None) -> nn.Linear:
    """A Linear layer with Glorot-uniform weights drawn from `generator` (global RNG untouched)."""
    linear = nn.utils.skip_init(nn.Linear, n_in, n_out)
    bound = math.sqrt(6.0 / (n_in + n_out))
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.zero_()
    return linear


class Encoder(nn.Module):
    """x -> activation(W x + b); the module that is stacked after pretraining."""

    def __init__(self, n_in: int, n_out: int, activation: str = "sigmoid",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.activation = _check_choice(activation, ACTIVATIONS, "activation")
        self.linear = init_linear(n_in, n_out, generator)

    @property
    def n_in(self) -> int:
        return self.linear.in_features

    @property
    def n_out(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(self.linear(x), self.activation)  # (n, n_in) -> (n, n_out)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class Decoder(nn.Module):
    """h -> activation(W' h + c). With `tied` set, W' is the encoder's weight transposed,
    read inside forward: the decoder owns only its bias."""

    def __init__(self, n_in: int, n_out: int, activation: str = "sigmoid",
                 tied: Encoder | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.activation = _check_choice(activation, DECODER_ACTIVATIONS, "output_activation")
        self.n_in, self.n_out = n_in, n_out
        # A plain list keeps the tied encoder out of this module's parameters and state dict.
        self._tied_to = [tied] if tied is not None else []
        if tied is None:
            self.linear = init_linear(n_in, n_out, generator)
        else:
            self.bias = nn.Parameter(torch.zeros(n_out))

    @property
    def tied(self) -> bool:
        return bool(self._tied_to)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activation output (n, n_in) -> (n, n_out); the loss works on these for stability."""
        if self._tied_to:
            return F.linear(h, self._tied_to[0].linear.weight.t(), self.bias)
        return self.linear(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return activate(self.logits(h), self.activation)

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r}, tied={self.tied}"


def reconstruction_loss(decoder: Decoder, codes: torch.Tensor, target: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for a sigmoid decoder, squared error for any other, per element."""
    return loss_from_logits(decoder.activation, decoder.logits(codes), target, reduction)


def loss_from_logits(output_activation: str, logits: torch.Tensor, target: torch.Tensor,
                     reduction: str = "mean") -> torch.Tensor:
    """The reconstruction loss matched to the decoder output, from its pre-activation (in fp32,
    also when the logits come from a bfloat16 autocast region)."""
    logits = full_precision(logits)
    if output_activation == "sigmoid":
        return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    return F.mse_loss(activate(logits, output_activation), target, reduction=reduction)


def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None) -> torch.Tensor:
    """A corrupted copy of `x` (never in place): Vincent et al. (2008, 2010) noise models.

    mask: a fraction `level` of inputs set to 0; gaussian: additive N(0, level^2);
    salt_pepper: a fraction `level` of inputs set to 0 or 1 with equal probability.
    """
    if kind == "none" or level == 0.0:
        return x
    if kind == "mask":
        # 1.0 = keep, 0.0 = drop, compared in place: no bool tensor to convert in the product.
        keep = rand(x.shape, generator, x.device).ge_(level)
        return x * keep
    if kind == "gaussian":
        return x + level * randn(x.shape, generator, x.device, x.dtype)
    if kind == "salt_pepper":
        u = rand(x.shape, generator, x.device)
        salt = rand(x.shape, generator, x.device) < 0.5
        return torch.where(u < level, salt.to(x.dtype), x)
    raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}; got {kind!r}")


def check_layer_settings(activation: str, output_activation: str, corruption: str, noise: float, sparsity: float,
                         sparsity_target: float, contractive: float) -> str:
    """The checks every autoencoder layer (dense or conv) makes of its settings; returns the corruption."""
    _check_choice(output_activation, DECODER_ACTIVATIONS, "output_activation")
    _check_choice(corruption, CORRUPTIONS, "corruption")
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    if noise > 0 and corruption == "none":
        raise ValueError(f"noise={noise} has no effect with corruption='none'; name the corruption it sets the "
                         f"level of ({', '.join(repr(c) for c in CORRUPTIONS if c != 'none')}), or leave noise at 0")
    for name, weight in (("sparsity", sparsity), ("contractive", contractive)):
        if not (is_real(weight) and math.isfinite(weight) and weight >= 0):   # NaN would switch the penalty off
            raise ValueError(f"{name} must be a finite number >= 0 (the penalty's weight), got {weight!r}")
    if sparsity > 0 and activation != "sigmoid":
        raise ValueError(f"the sparsity penalty needs sigmoid units (mean activation in (0, 1)); "
                         f"got activation={activation!r}")
    if not 0.0 < sparsity_target < 1.0:
        raise ValueError(f"sparsity_target must be in (0, 1), got {sparsity_target}")
    return corruption


def sparsity_penalty(h: torch.Tensor, rho: float) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j the batch mean of unit j of the codes `h` (Ng's sparse autoencoder)."""
    rho_hat = full_precision(h).mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


class AutoencoderLayer(nn.Module):
    """A shallow autoencoder n_in -> n_out -> n_in, trained to rebuild its clean input.

    Args:
        activation: encoder units (sigmoid, tanh, relu, linear, leaky_relu, elu, softplus).
        output_activation: decoder output units: "sigmoid" (cross-entropy loss, inputs in [0, 1])
            or any other activation (squared error), e.g. "linear", or the encoder units of the layer
            below, whose codes this layer rebuilds (what `PretrainConfig`'s "auto" picks).
        tied: decoder uses the encoder's weight transposed (no weight of its own).
        corruption, noise: input corruption model and level, applied in training only.
        sparsity, sparsity_target: weight of the KL(target || mean activation) penalty.
        contractive: weight of the squared Frobenius norm of the encoder Jacobian (Rifai et al., 2011).
        seed: draws the initial weights from a local generator.
    """

    kind = "dense"

    def __init__(self, n_in: int, n_out: int, *, activation: str = "sigmoid",
                 output_activation: str = "sigmoid", tied: bool = False, corruption: str = "none",
                 noise: float = 0.0, sparsity: float = 0.0, sparsity_target: float = 0.05,
                 contractive: float = 0.0, seed: int = 0):
        super().__init__()
        n_in, n_out = positive_int("n_in", n_in), positive_int("n_out", n_out)
        self.corruption = check_layer_settings(activation, output_activation, corruption, noise, sparsity,
                                               sparsity_target, contractive)
        self.noise, self.sparsity, self.sparsity_target = float(noise), float(sparsity), float(sparsity_target)
        self.contractive = float(contractive)
        generator = torch.Generator().manual_seed(int(seed))
        self.encoder = Encoder(n_in, n_out, activation, generator)
        self.decoder = Decoder(n_out, n_in, output_activation, tied=self.encoder if tied else None,
                               generator=generator)

    @property
    def n_in(self) -> int:
        return self.encoder.n_in

    @property
    def n_out(self) -> int:
        return self.encoder.n_out

    @property
    def tied(self) -> bool:
        return self.decoder.tied

    @property
    def output_activation(self) -> str:
        return self.decoder.activation

    def settings(self) -> dict:
        """Everything needed to rebuild this layer (JSON-ready)."""
        return {"n_in": self.n_in, "n_out": self.n_out, "activation": self.encoder.activation,
                "output_activation": self.decoder.activation, "tied": self.tied,
                "corruption": self.corruption, "noise": self.noise, "sparsity": self.sparsity,
                "sparsity_target": self.sparsity_target, "contractive": self.contractive}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clean reconstruction (no corruption): (n, n_in) -> (n, n_in)."""
        return self.decode(self.encode(x))

    def recon_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, Decoder]:
        """Pre-activation of the clean reconstruction, and the decoder that made it."""
        return self.decoder.logits(self.encode(x)), self.decoder

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, reconstruction loss) on a batch; corruption only in training mode."""
        x_in = corrupt(x, self.corruption, self.noise, generator) if self.training else x
        z = self.encoder.linear(x_in)
        h = activate(z, self.encoder.activation)
        recon = reconstruction_loss(self.decoder, h, x)
        objective = recon
        if self.sparsity > 0:
            objective = objective + self.sparsity * self.sparsity_penalty(h)
        if self.contractive > 0:
            objective = objective + self.contractive * self.contractive_penalty(z, h)
        return objective, recon

    def sparsity_penalty(self, h: torch.Tensor) -> torch.Tensor:
        return sparsity_penalty(h, self.sparsity_target)

    def contractive_penalty(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Batch mean of ||dh/dx||_F^2 = sum_j act'(z_j)^2 * sum_i W_ji^2 (elementwise units)."""
        grad = activation_grad(full_precision(z), full_precision(h), self.encoder.activation)   # (n, n_out)
        row_norms = self.encoder.linear.weight.pow(2).sum(1)             # (n_out,)
        return (grad.pow(2) * row_norms).sum(1).mean()
