"""greedy_pretrain: each layer learns, lower layers stay frozen, codes are clean, runs are reproducible."""
from __future__ import annotations

import copy
from typing import NamedTuple

import pytest
import torch

import stacked_ae.core.pretrain as pretrain_module
from stacked_ae import PretrainConfig, evaluate_reconstruction, greedy_pretrain

CFG = PretrainConfig(epochs=5, lr=1e-2, corruption="mask", noise=0.1)


class LayerRun(NamedTuple):
    layer: torch.nn.Module
    inputs: torch.Tensor      # the codes the layer was trained on
    before: dict              # state dict at the start of its training
    after: dict               # state dict right after its training


def _clone_state(module) -> dict:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


@pytest.fixture
def layer_runs(monkeypatch):
    """Records, for each fit_autoencoder call greedy_pretrain makes, the layer, its inputs and its weights
    before and after training (the real fit_autoencoder still does the training)."""
    runs, real_fit = [], pretrain_module.fit_autoencoder

    def recording_fit(layer, X, *args, **kwargs):
        before = _clone_state(layer)
        history = real_fit(layer, X, *args, **kwargs)
        runs.append(LayerRun(layer, X.detach().clone(), before, _clone_state(layer)))
        return history

    monkeypatch.setattr(pretrain_module, "fit_autoencoder", recording_fit)
    return runs


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- learning


def test_every_pretrained_layer_beats_its_initialisation(digits, layer_runs):
    """Each layer reconstructs its own input with less than half the squared error it had at initialisation."""
    stack, _ = greedy_pretrain(digits.X_train, [32, 16], CFG, seed=0, progress=False)
    assert len(layer_runs) == 2, f"{len(layer_runs)} layers trained"
    for k, run in enumerate(layer_runs):
        initial = copy.deepcopy(run.layer)
        initial.load_state_dict(run.before)
        trained_sse = evaluate_reconstruction(stack.layers[k], run.inputs)["sse"]
        initial_sse = evaluate_reconstruction(initial, run.inputs)["sse"]
        assert trained_sse < 0.5 * initial_sse, f"layer {k + 1}: SSE {trained_sse:.3f} vs {initial_sse:.3f} at init"


def test_training_layer_k_leaves_lower_layers_bit_identical(low_rank, layer_runs):
    """Each layer's weights at the end equal those captured right after its own training."""
    stack, _ = greedy_pretrain(low_rank.X, [12, 8, 4], CFG, seed=0, progress=False)
    assert len(layer_runs) == 3, f"{len(layer_runs)} layers trained"
    for k, run in enumerate(layer_runs):
        assert stack.layers[k] is run.layer, f"layer {k + 1} in the stack is not the module that was trained"
        assert _states_equal(_clone_state(stack.layers[k]), run.after), f"layer {k + 1} changed after its training"
        assert not _states_equal(run.before, run.after), f"layer {k + 1} did not train at all"


def test_layer_k_trains_on_clean_codes_of_layers_below(low_rank, layer_runs):
    """Layer k's training input is the uncorrupted eval-mode encoding of X by the trained layers 1..k-1."""
    stack, _ = greedy_pretrain(low_rank.X, [12, 8, 4], CFG, seed=0, progress=False)
    for k, run in enumerate(layer_runs):
        expected = stack.encode(low_rank.X, depth=k)
        assert torch.equal(run.inputs, expected), f"layer {k + 1}: max difference " \
            f"{(run.inputs - expected).abs().max().item():.3g} from the clean codes"


def test_history_has_one_row_per_epoch_and_final_clean_loss(low_rank):
    """Each layer's history has `epochs` rows; the last adds the clean reconstruction loss of the final weights."""
    stack, histories = greedy_pretrain(low_rank.X, [12, 8], CFG, seed=0, progress=False)
    assert [len(h) for h in histories] == [5, 5], [len(h) for h in histories]
    codes = low_rank.X
    for k, history in enumerate(histories):
        expected = evaluate_reconstruction(stack.layers[k], codes)["loss"]
        assert history[-1]["clean_loss"] == pytest.approx(expected, rel=1e-6), (k, history[-1], expected)
        codes = stack.layers[k].encode(codes).detach()


# ---------------------------------------------------------------- per-layer settings


def test_per_layer_lists_set_each_layer(low_rank):
    """Per-layer lists give layer k the k-th activation and noise, and sizes set the widths."""
    cfg = PretrainConfig(epochs=1, activation=["tanh", "relu", "sigmoid"], noise=[0.1, 0.2, 0.3])
    stack, _ = greedy_pretrain(low_rank.X, [12, 8, 4], cfg, seed=0, progress=False)
    assert stack.activations == ["tanh", "relu", "sigmoid"], stack.activations
    assert [layer.noise for layer in stack.layers] == [0.1, 0.2, 0.3], [layer.noise for layer in stack.layers]
    assert (stack.n_in, stack.sizes) == (20, [12, 8, 4]), (stack.n_in, stack.sizes)


def test_auto_output_matches_the_range_of_each_layers_input(low_rank):
    """output_activation="auto" gives sigmoid for inputs in [0, 1] and linear for inputs outside it."""
    cfg = PretrainConfig(epochs=1, activation=["tanh", "sigmoid"])
    unit, _ = greedy_pretrain(low_rank.X, [12, 8], cfg, seed=0, progress=False)
    shifted, _ = greedy_pretrain(low_rank.X * 4 - 2, [12, 8], cfg, seed=0, progress=False)
    got = [[layer.decoder.activation for layer in stack.layers] for stack in (unit, shifted)]
    assert got == [["sigmoid", "linear"], ["linear", "linear"]], got


def test_per_layer_list_of_wrong_length_raises():
    """A per-layer list with 2 entries for 3 layers raises ValueError naming the key and both counts."""
    X = torch.rand(10, 5)
    with pytest.raises(ValueError, match=r"pretrain\.noise has 2 entries but the model has 3 layers"):
        greedy_pretrain(X, [4, 3, 2], PretrainConfig(noise=[0.1, 0.2]), progress=False)


@pytest.mark.parametrize("sizes,message", [
    ([], r"sizes must be a non-empty list"),
    (8, r"sizes must be a non-empty list"),
    ([8, 0], r"sizes\[1\] must be a positive integer, got 0"),
    ([8, 2.5], r"sizes\[1\] must be a positive integer, got 2.5"),
])
def test_bad_sizes_raise_value_error(sizes, message):
    """Empty, scalar, zero or fractional layer sizes raise ValueError naming the bad entry."""
    with pytest.raises(ValueError, match=message):
        greedy_pretrain(torch.rand(10, 5), sizes, PretrainConfig(epochs=1), progress=False)


@pytest.mark.parametrize("bad,message", [
    (float("nan"), r"X contains 1 NaN or infinite values"),
    (float("inf"), r"X contains 1 NaN or infinite values"),
])
def test_non_finite_input_raises_value_error(low_rank, bad, message):
    """NaN or inf anywhere in X raises ValueError counting the bad values, before any training."""
    X = low_rank.X.clone()
    X[7, 3] = bad
    with pytest.raises(ValueError, match=message):
        greedy_pretrain(X, [4], PretrainConfig(epochs=1), progress=False)


# ---------------------------------------------------------------- determinism


def _pretrain(X, seed):
    return greedy_pretrain(X, [12, 6], CFG, seed=seed, progress=False)[0].state_dict()


def test_same_seed_gives_identical_weights(low_rank):
    """Two greedy_pretrain runs with the same seed give bit-identical weights."""
    a, b = _pretrain(low_rank.X, 0), _pretrain(low_rank.X, 0)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"tensors differ between same-seed runs: {differing}"


def test_different_seeds_give_different_weights(low_rank):
    """greedy_pretrain runs with seeds 0 and 1 differ in every weight matrix."""
    a, b = _pretrain(low_rank.X, 0), _pretrain(low_rank.X, 1)
    same = [k for k in a if k.endswith("weight") and torch.equal(a[k], b[k])]
    assert not same, f"weights equal across seeds: {same}"


def test_pretraining_leaves_global_rng_untouched(low_rank):
    """greedy_pretrain with corruption draws no numbers from torch's global generator."""
    state = torch.random.get_rng_state()
    _pretrain(low_rank.X, 0)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG state changed"
