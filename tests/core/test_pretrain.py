"""greedy_pretrain: each layer learns, lower layers stay frozen, codes are clean, runs are reproducible."""
from __future__ import annotations

import copy
from typing import NamedTuple

import pytest
import torch

import stacked_ae.core.layers as layers_module
import stacked_ae.core.pretrain as pretrain_module
import stacked_ae.core.train as train_module
from stacked_ae import PretrainConfig, StackedEncoder, evaluate_reconstruction, greedy_pretrain

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


def test_auto_output_matches_the_data_then_mirrors_the_units_below(low_rank):
    """output_activation="auto": layer 1 gets sigmoid for data in [0, 1] and linear outside it; every layer above
    gets the units of the layer below it, whose codes it rebuilds."""
    cfg = PretrainConfig(epochs=1, activation=["tanh", "leaky_relu", "sigmoid"])
    unit, _ = greedy_pretrain(low_rank.X, [12, 8, 4], cfg, seed=0, progress=False)
    shifted, _ = greedy_pretrain(low_rank.X * 4 - 2, [12, 8, 4], cfg, seed=0, progress=False)
    got = [[layer.decoder.activation for layer in stack.layers] for stack in (unit, shifted)]
    assert got == [["sigmoid", "tanh", "leaky_relu"], ["linear", "tanh", "leaky_relu"]], got


def test_unrolled_decoder_of_a_relu_stack_is_not_affine(low_rank):
    """With ReLU units, "auto" decoders mirror them, so the unrolled decoding path below the top code is not one
    affine map (it was with linear decoders): decode(a) + decode(b) differs from decode(0) + decode(a + b)."""
    stack, _ = greedy_pretrain(low_rank.X, [12, 8, 4], PretrainConfig(epochs=2, activation="relu"), seed=0,
                               progress=False)
    assert [layer.decoder.activation for layer in stack.layers] == ["sigmoid", "relu", "relu"]
    layers = stack.layers[1:]                   # the decoders that rebuild hidden codes, top down
    def decode(code):
        for layer in reversed(layers):
            code = layer.decoder(code)
        return code
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    with torch.no_grad():
        gap = (decode(a) + decode(b) - decode(torch.zeros_like(a)) - decode(a + b)).abs().max().item()
    assert gap > 1e-2, f"the decoding path is affine to within {gap:.2e}"
    assert (decode(a) >= 0).all(), "a ReLU decoder's output lies in [0, inf), like the codes it rebuilds"


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


# ---------------------------------------------------------------- random streams


def test_random_stack_equals_the_weights_pretraining_started_from(low_rank, layer_runs):
    """StackedEncoder.random(seed, config) holds, tensor for tensor, the layers greedy_pretrain began training
    (recorded as each fit starts), so the random arm differs from the pretrained one by pretraining alone."""
    cfg = PretrainConfig(epochs=1, activation=["tanh", "sigmoid", "relu"], noise=0.1, tied=[False, True, False])
    greedy_pretrain(low_rank.X, [12, 8, 4], cfg, seed=3, progress=False)
    fresh = StackedEncoder.random(20, [12, 8, 4], seed=3, config=cfg)
    assert len(layer_runs) == 3, f"{len(layer_runs)} layers trained"
    for k, run in enumerate(layer_runs):
        assert _states_equal(_clone_state(fresh.layers[k]), run.before), f"layer {k + 1}: random start differs"
    other = StackedEncoder.random(20, [12, 8, 4], seed=4, config=cfg)
    assert not _states_equal(_clone_state(other.layers[0]), layer_runs[0].before), "seed 4 gave seed 3's start"


@pytest.fixture
def stream_seeds(monkeypatch):
    """The initial seed of every generator that greedy pretraining hands to corruption and to batch order, per
    fit (one dict per layer), and each layer's first corruption mask and first batch."""
    fits, real_fit = [], train_module.fit
    real_corrupt, real_batches = layers_module.corrupt, train_module.iterate_batches

    def recording_fit(*args, **kwargs):
        fits.append({})
        return real_fit(*args, **kwargs)

    def recording_corrupt(x, kind, level, generator):
        out = real_corrupt(x, kind, level, generator)
        fits[-1].setdefault("corruption", (generator.initial_seed(), (out == 0) & (x != 0)))
        return out

    def recording_batches(n, batch_size, generator, *args, **kwargs):
        batches = list(real_batches(n, batch_size, generator, *args, **kwargs))
        fits[-1].setdefault("batch_order", (generator.initial_seed(), batches[0]))
        return iter(batches)

    monkeypatch.setattr(train_module, "fit", recording_fit)
    monkeypatch.setattr(layers_module, "corrupt", recording_corrupt)
    monkeypatch.setattr(train_module, "iterate_batches", recording_batches)
    return fits


def test_layers_draw_corruption_and_batch_order_from_distinct_streams(low_rank, stream_seeds):
    """No generator seed is shared between layers or roles (layer k's corruption was layer k+1's batch order),
    and adjacent layers of equal width see different first masks and different first batches."""
    cfg = PretrainConfig(epochs=1, batch_size=32, noise=0.3)
    greedy_pretrain(low_rank.X, [20, 20, 20], cfg, seed=0, progress=False)
    assert len(stream_seeds) == 3, f"{len(stream_seeds)} fits recorded"
    seeds = [fit[role][0] for fit in stream_seeds for role in ("corruption", "batch_order")]
    assert len(set(seeds)) == len(seeds), f"generator seeds repeat: {seeds}"
    for k in range(2):
        below, above = stream_seeds[k], stream_seeds[k + 1]
        assert not torch.equal(below["corruption"][1], above["corruption"][1]), f"layers {k + 1}, {k + 2}: same mask"
        assert not torch.equal(below["batch_order"][1], above["batch_order"][1]), f"layers {k + 1}, {k + 2}: batch"


def test_sigmoid_decoder_on_codes_outside_unit_interval_is_refused_before_training(low_rank, layer_runs):
    """tanh codes under an explicit sigmoid (cross-entropy) decoder raise ValueError naming the key, and train
    nothing (before the check, layer 2's loss fell without bound: 0.54 -> -0.97 -> -4.31)."""
    cfg = PretrainConfig(epochs=1, activation=["tanh", "sigmoid", "sigmoid"],
                         output_activation=["auto", "sigmoid", "auto"])
    with pytest.raises(ValueError, match=r"pretrain\.output_activation\[1\] is 'sigmoid' .* layer 2 reconstructs "
                                         r"the codes of layer 1, whose activation 'tanh' leaves \[0, 1\]"):
        greedy_pretrain(low_rank.X, [12, 8, 4], cfg, seed=0, progress=False)
    assert layer_runs == []


def test_sigmoid_first_layer_on_data_outside_unit_interval_names_the_layer_and_range(low_rank):
    """An explicit sigmoid output on data in [-2, 2] raises ValueError naming the layer and the observed range."""
    with pytest.raises(ValueError, match=r"pretrain layer 1/1 \(20->4\): .* needs targets in \[0, 1\], but X lies "
                                         r"in \[-2, 1\.99\d\]"):
        greedy_pretrain(low_rank.X * 4 - 2, [4], PretrainConfig(epochs=1, output_activation="sigmoid"),
                        progress=False)


def test_pretraining_stopped_in_its_second_layer_resumes_to_the_uninterrupted_stack(digits, tmp_path, epoch_killer):
    """Killed in epoch 3 of layer 2 with checkpoint_dir: the rerun loads layer 1 (not trained again), resumes
    layer 2 after its epoch 2, trains layer 3, and returns the weights and histories of a run never stopped."""
    cfg = PretrainConfig(epochs=4, lr=1e-2, corruption="mask", noise=0.2)
    X, X_val = digits.X_train / 16.0, digits.X_val / 16.0
    pretrain = lambda **kept: greedy_pretrain(X, [32, 16, 8], cfg, X_val=X_val, seed=5,  # noqa: E731
                                              progress=False, **kept)
    expected_stack, expected = pretrain()

    epochs = epoch_killer.calls
    epochs.clear()                                # counted from here: the reference above trained too
    epoch_killer.at = 4 + 3                       # killed in epoch 3 of layer 2
    kept = {"checkpoint_dir": tmp_path / "kept", "checkpoint_stamp": "s", "checkpoint_every_s": 0}
    with pytest.raises(KeyboardInterrupt):
        pretrain(**kept)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["layer1.pt", "layer2.epochs.pt"]

    epoch_killer.at, epochs[:] = 0, []
    stack, histories = pretrain(**kept)
    assert len(epochs) == 2 + 4            # layer 2's last two epochs, then layer 3
    assert histories == expected
    for got, want in zip(stack.layers, expected_stack.layers, strict=True):
        got, want = got.state_dict(), want.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["layer1.pt", "layer2.pt", "layer3.pt"]

    # kept layers of another stamp are not used: everything trains again
    epochs[:] = []
    pretrain(checkpoint_dir=tmp_path / "kept", checkpoint_stamp="other", checkpoint_every_s=0)
    assert len(epochs) == 3 * 4
