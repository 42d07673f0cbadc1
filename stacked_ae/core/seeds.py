"""Independent random streams: one seed per (run seed, role, keys), so that no two streams coincide.

    derive_seed(0, "layer_init", 1)       # layer 2's initial weights under run seed 0
    derive_seed(0, "batch_order", 1)      # the same layer's batch order: an unrelated stream

Seeds go through numpy's SeedSequence, which hashes its whole entropy list: streams for different
roles, layers or run seeds are statistically independent, not offsets of one another.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

ROLES = ("layer_init", "head_init", "corruption", "dropout", "batch_order", "labeled_subset", "val_subset",
         "baseline")


def derive_seed(seed: int, role: str, *keys: int) -> int:
    """A 63-bit seed for the stream `role` (one of ROLES) of run seed `seed`, further keyed by `keys`."""
    if role not in ROLES:
        raise ValueError(f"unknown random stream {role!r}; expected one of {', '.join(ROLES)}")
    role_word = int.from_bytes(hashlib.sha256(role.encode()).digest()[:8], "little")
    # Every value as exactly two 32-bit words, after the number of keys: SeedSequence reads an int as as many
    # words as it needs and pads short lists with zeros, so (seed, role) and (seed, role, 0) would coincide.
    words = [len(keys)]
    for value in (_word(seed), role_word, *(_word(k) for k in keys)):
        words += [value & 0xFFFFFFFF, value >> 32]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def _word(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"seeds and stream keys must be integers, got {value!r}")
    return int(value) % 2**64   # SeedSequence takes non-negative integers; negative seeds map one to one


def generator_device(device) -> torch.device:
    """Where a stream for tensors on `device` lives: the device itself, or the CPU for MPS, which has no
    seedable generator of its own (its draws are made on the CPU and moved, so they stay seeded and apart)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def stream(seed: int, device) -> torch.Generator:
    """A torch generator seeded with `seed` (from `derive_seed`) for tensors on `device`."""
    return torch.Generator(device=generator_device(device)).manual_seed(int(seed))


def rand(shape, generator: torch.Generator | None, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`torch.rand` on `device` from `generator`, drawn where the generator lives when that is elsewhere."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`torch.randn` on `device` from `generator`, drawn where the generator lives when that is elsewhere."""
    return _draw(torch.randn, shape, generator, device, dtype)


def _draw(fn, shape, generator, device, dtype) -> torch.Tensor:
    device = torch.device(device)
    if generator is None or generator.device.type == device.type:
        return fn(shape, generator=generator, device=device, dtype=dtype)
    return fn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
