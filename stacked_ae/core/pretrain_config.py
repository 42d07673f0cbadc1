"""Settings of greedy pretraining: `PretrainConfig`, one frozen dataclass whose fields are scalars or
per-layer lists, and the layer factory that both `greedy_pretrain` and `StackedEncoder.random` use,
so that the random arm starts from exactly the weights pretraining started from.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .checks import positive_int
from .conv import ConvAutoencoderLayer, ConvSpec, image_shape3, map_shapes
from .layers import ACTIVATIONS, CORRUPTIONS, OUTPUT_ACTIVATIONS, AutoencoderLayer
from .seeds import derive_seed
from .train import TrainConfig

PerLayer = Any  # a scalar, or a list/tuple with one entry per layer

LAYER_FIELDS = ("activation", "output_activation", "tied", "corruption", "noise", "sparsity",
                "sparsity_target", "contractive")
TRAIN_FIELDS = ("epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "precision")


def _python(value):
    """A NumPy scalar (np.float32(0.2), np.int64(3), np.bool_(True), np.str_) as the Python value; else as given."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class PretrainConfig:
    """Settings for greedy pretraining; every field is a scalar or a per-layer list."""
    epochs: PerLayer = 10              # passes over the data, per layer
    lr: PerLayer = 1e-3
    batch_size: PerLayer = 64
    optimizer: PerLayer = "adam"       # adam | sgd (with momentum)
    momentum: PerLayer = 0.9
    weight_decay: PerLayer = 0.0
    schedule: PerLayer = "constant"
    precision: PerLayer = "fp32"       # fp32 | bf16 (autocast training steps; see TrainConfig)
    activation: PerLayer = "sigmoid"   # encoder units
    output_activation: PerLayer = "auto"  # auto: layer 1 sigmoid + cross-entropy for data in [0, 1] (else
                                          # linear + MSE); above, the units of the layer below (mirrored)
    tied: PerLayer = False
    corruption: PerLayer = "mask"      # none | mask | gaussian | salt_pepper
    noise: PerLayer = 0.0              # corruption level in [0, 1); 0.0 = plain autoencoder
    sparsity: PerLayer = 0.0           # weight of the KL sparsity penalty
    sparsity_target: PerLayer = 0.05
    contractive: PerLayer = 0.0        # weight of the Jacobian penalty

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (list, tuple)):   # frozen and hashable; NumPy scalars become Python's, so
                value = tuple(_python(v) for v in value)   # that the checks and JSON take np.float32 too
            object.__setattr__(self, f.name, _python(value))
            value = getattr(self, f.name)
            if isinstance(value, tuple) and not value:
                raise ValueError(f"pretrain.{f.name} is an empty list; give a scalar or one entry per layer")
        for k in range(self.n_layers_given() or 1):
            self._check_layer(k)

    def n_layers_given(self) -> int | None:
        """The number of layers implied by per-layer lists (None if every field is a scalar)."""
        lengths = {len(getattr(self, f.name)) for f in fields(self) if isinstance(getattr(self, f.name), tuple)}
        if len(lengths) > 1:
            listed = {f.name: len(getattr(self, f.name)) for f in fields(self)
                      if isinstance(getattr(self, f.name), tuple)}
            raise ValueError(f"pretrain per-layer lists disagree in length: {listed}; give each a scalar or "
                             f"exactly one entry per layer")
        return lengths.pop() if lengths else None

    def check_layers(self, n_layers: int) -> None:
        """Every per-layer list has exactly `n_layers` entries, and no sigmoid decoder sits on codes
        outside [0, 1] (cross-entropy on such targets falls without bound)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) != n_layers:
                raise ValueError(f"pretrain.{f.name} has {len(value)} entries but the model has {n_layers} "
                                 f"layers; give a scalar or exactly {n_layers} values")
        for k in range(1, n_layers):
            below = self.value("activation", k - 1)
            if self.value("output_activation", k) == "sigmoid" and below != "sigmoid":
                key = "output_activation" + (f"[{k}]" if isinstance(self.output_activation, tuple) else "")
                raise ValueError(f"pretrain.{key} is 'sigmoid' (cross-entropy, targets in [0, 1]) but layer "
                                 f"{k + 1} reconstructs the codes of layer {k}, whose activation {below!r} "
                                 f"leaves [0, 1]; use 'auto' or 'linear' there, or sigmoid units below")

    def value(self, name: str, k: int):
        value = getattr(self, name)
        return value[k] if isinstance(value, tuple) else value

    def _check_layer(self, k: int) -> None:
        try:
            self.train_config(k)
        except ValueError as err:
            raise ValueError(f"pretrain.{err}") from None
        for name, known in (("activation", ACTIVATIONS), ("output_activation", OUTPUT_ACTIVATIONS),
                            ("corruption", CORRUPTIONS)):
            if self.value(name, k) not in known:
                raise ValueError(f"pretrain.{name} must be one of {', '.join(known)}; got {self.value(name, k)!r}")
        noise = self.value("noise", k)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise < 1.0:
            raise ValueError(f"pretrain.noise must be in [0, 1), got {noise!r}")
        if noise > 0 and self.value("corruption", k) == "none":
            raise ValueError(f"pretrain.noise = {noise!r} has no effect with pretrain.corruption = \"none\"; name "
                             f"the corruption it sets the level of (mask, gaussian or salt_pepper), or leave noise "
                             f"at 0")
        if not isinstance(self.value("tied", k), bool):
            raise ValueError(f"pretrain.tied must be true or false, got {self.value('tied', k)!r}")
        for name in ("sparsity", "contractive"):
            v = self.value(name, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"pretrain.{name} must be a finite number >= 0, got {v!r}")
        target = self.value("sparsity_target", k)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
            raise ValueError(f"pretrain.sparsity_target must be in (0, 1), got {target!r}")

    def train_config(self, k: int) -> TrainConfig:
        return TrainConfig(**{name: self.value(name, k) for name in TRAIN_FIELDS})

    def make_layer(self, k: int, n_in: int, n_out: int, seed: int,
                   inputs_in_unit_interval: bool | None = None) -> AutoencoderLayer:
        """Dense layer k (0-based) with fresh weights from the run seed's `layer_init` stream of layer k."""
        return AutoencoderLayer(n_in, n_out, **self._layer_settings(k, inputs_in_unit_interval),
                                seed=derive_seed(seed, "layer_init", k))

    def make_conv_layer(self, k: int, in_shape, spec: ConvSpec, seed: int,
                        inputs_in_unit_interval: bool | None = None,
                        channels_last: bool = False) -> ConvAutoencoderLayer:
        """Conv layer k (0-based) on maps of `in_shape`, seeded like a dense layer k."""
        settings = self._layer_settings(k, inputs_in_unit_interval)
        if settings["contractive"]:
            key = "contractive" + (f"[{k}]" if isinstance(self.contractive, tuple) else "")
            raise ValueError(f"pretrain.{key} is {settings['contractive']}, but layer {k + 1} is a conv layer and "
                             f"the contractive penalty is defined for dense layers only; set it to 0 there")
        return ConvAutoencoderLayer(in_shape, spec, **settings, seed=derive_seed(seed, "layer_init", k),
                                    channels_last=channels_last)

    def make_layers(self, n_in: int, sizes: Sequence[int], seed: int, *, conv: Sequence = (),
                    image_shape=None, inputs_in_unit_interval: bool | None = None,
                    channels_last: bool = False) -> list:
        """Every layer of a stack, conv layers (`conv`: ConvSpecs or their dicts, on images of `image_shape`)
        first, then dense layers of `sizes`: the weights greedy pretraining starts from."""
        specs = conv_specs(conv)
        sizes = check_sizes(sizes)
        self.check_layers(len(specs) + len(sizes))
        layers: list = []
        if specs:
            shapes = map_shapes(specs, check_image_shape(image_shape, n_in))
            layers += [self.make_conv_layer(k, shape, spec, seed, inputs_in_unit_interval, channels_last)
                       for k, (spec, shape) in enumerate(zip(specs, shapes, strict=False))]
            n_in = math.prod(shapes[-1])
        widths = [n_in, *sizes]
        for j in range(len(sizes)):
            layers.append(self.make_layer(len(specs) + j, widths[j], widths[j + 1], seed, inputs_in_unit_interval))
        return layers

    def _layer_settings(self, k: int, inputs_in_unit_interval: bool | None) -> dict:
        settings = {name: self.value(name, k) for name in LAYER_FIELDS}
        if settings["output_activation"] == "auto":
            settings["output_activation"] = self._auto_output(k, inputs_in_unit_interval)
        return settings

    def _auto_output(self, k: int, inputs_in_unit_interval: bool | None) -> str:
        """The decoder output units that "auto" picks for layer k.

        Layer 0 rebuilds the data: sigmoid + cross-entropy when they lie in [0, 1] (assumed without
        data), else linear + squared error. Layer k > 0 rebuilds the codes of layer k - 1, so its decoder
        mirrors that layer's units: sigmoid codes get a sigmoid decoder (cross-entropy), leaky-ReLU codes a
        leaky-ReLU decoder (squared error), and so on. Unrolled, the decoders then keep the encoder's
        non-linearities in mirror image; linear decoders on non-sigmoid codes would make the whole decoding
        path below the top code one affine map followed by the output units."""
        if k == 0:
            return "sigmoid" if inputs_in_unit_interval in (None, True) else "linear"
        return self.value("activation", k - 1)

    def mirrors_unbounded_codes(self, n_layers: int) -> bool:
        """Whether "auto" gives some layer a non-linear decoder other than sigmoid (any layer above the first
        whose layer below has units other than sigmoid and linear): the cases where a decoder was linear
        before decoders mirrored their targets' units."""
        return any(self.value("output_activation", k) == "auto"
                   and self.value("activation", k - 1) not in ("sigmoid", "linear") for k in range(1, n_layers))


def check_sizes(sizes) -> list[int]:
    if isinstance(sizes, np.ndarray) and sizes.ndim == 1:
        sizes = sizes.tolist()
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"sizes must be a non-empty list of layer widths, got {sizes!r}")
    return [positive_int(f"sizes[{k}]", n) for k, n in enumerate(sizes)]


def conv_specs(conv) -> list[ConvSpec]:
    """ConvSpecs from specs or mappings (errors name `conv[k]`)."""
    if conv is None:
        return []
    if isinstance(conv, (dict, ConvSpec, str, bytes)) or not isinstance(conv, Sequence):
        raise ValueError(f"conv must be a list of conv layer specs, got {conv!r}")
    return [ConvSpec.from_dict(spec, f"conv[{k}]") for k, spec in enumerate(conv)]


def check_image_shape(image_shape, n_features: int) -> tuple[int, int, int]:
    """(C, H, W) of rows with `n_features` values, or ValueError: conv layers need images."""
    if image_shape is None or (isinstance(image_shape, (tuple, list)) and len(image_shape) == 0):
        raise ValueError(f"conv layers need images, but the data's image shape is unknown ({n_features} "
                         f"features per row); give image_shape=(height, width) or (channels, height, width)")
    shape = image_shape3(image_shape)
    if shape[0] * shape[1] * shape[2] != n_features:
        raise ValueError(f"image_shape {tuple(image_shape)} holds {shape[0] * shape[1] * shape[2]} values but the "
                         f"data have {n_features} features per row")
    return shape
