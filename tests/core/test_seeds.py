"""Random streams derived per (seed, role, keys) are repeatable and never coincide."""
import itertools

import pytest
import torch

from stacked_ae.core.seeds import ROLES, derive_seed, generator_device, rand, randn, stream


def test_same_inputs_give_the_same_seed():
    """A stream is a pure function of its inputs (no global state)."""
    assert derive_seed(3, "layer_init", 2) == derive_seed(3, "layer_init", 2)


def test_streams_of_different_roles_layers_and_seeds_are_distinct():
    """The collisions of the old scheme (seed*1000+k; head = layer 1) cannot happen: all 8 x 4 x 5 differ."""
    seeds = {derive_seed(s, role, k) for s, role, k in itertools.product(range(5), ROLES, range(4))}
    assert len(seeds) == 5 * len(ROLES) * 4
    assert derive_seed(0, "corruption", 0) != derive_seed(0, "batch_order", 1)
    assert derive_seed(1, "layer_init", 0) != derive_seed(0, "layer_init", 1000)


def test_seeds_fit_torch_and_numpy_generators():
    """Every derived seed is a non-negative 63-bit integer, also for negative run seeds."""
    for s in (-1, 0, 2**40):
        value = derive_seed(s, "dropout")
        assert 0 <= value < 2**63
    assert derive_seed(-1, "dropout") != derive_seed(1, "dropout")


def test_unknown_role_and_non_integer_keys_are_refused():
    """A typo in a role name is an error, not a silently new stream."""
    with pytest.raises(ValueError, match="unknown random stream 'layer-init'"):
        derive_seed(0, "layer-init")
    with pytest.raises(TypeError, match="integers"):
        derive_seed(0, "layer_init", 1.5)


def test_trailing_zero_keys_and_wide_seeds_give_new_streams():
    """(seed, role), (seed, role, 0) and (seed, role, 0, 0) are three streams; a seed of 2**32 is not (0, 1)."""
    assert len({derive_seed(5, "batch_order"), derive_seed(5, "batch_order", 0),
                derive_seed(5, "batch_order", 0, 0)}) == 3
    assert derive_seed(2**32, "corruption") != derive_seed(0, "corruption", 1)


@pytest.mark.parametrize("draw, direct", [(rand, torch.rand), (randn, torch.randn)])
def test_draws_on_the_generators_own_device_are_torchs_own(draw, direct):
    """Where the generator lives on the tensors' device (cpu, cuda), a draw is torch's, number for number."""
    ours, theirs = stream(7, "cpu"), torch.Generator().manual_seed(7)
    assert torch.equal(draw((3, 5), ours, torch.device("cpu")), direct((3, 5), generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())


@pytest.mark.parametrize("draw, direct", [(rand, torch.rand), (randn, torch.randn)])
def test_draws_for_a_device_without_generators_are_made_on_the_cpu_and_moved(draw, direct):
    """MPS has no seedable generator: its streams live on the CPU, so they stay seeded and independent. The
    `meta` device stands in for it here (a tensor device the CPU generator is not on)."""
    assert generator_device("mps") == torch.device("cpu") and stream(7, "mps").device == torch.device("cpu")
    ours, theirs = stream(7, "cpu"), torch.Generator().manual_seed(7)
    drawn = draw((3, 5), ours, torch.device("meta"), torch.float16)
    assert drawn.device.type == "meta" and drawn.shape == (3, 5) and drawn.dtype == torch.float16
    direct((3, 5), generator=theirs, dtype=torch.float16)
    assert torch.equal(ours.get_state(), theirs.get_state())   # the stream advanced exactly as a CPU draw does
