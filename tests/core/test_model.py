"""StackedEncoder: exact weight hand-off to the classifier and the unrolled autoencoder; safe save/load."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from stacked_ae import (
    CheckpointError,
    PretrainConfig,
    StackedEncoder,
    TrainConfig,
    evaluate_reconstruction,
    fit_autoencoder,
    fit_classifier,
    greedy_pretrain,
)

# Mixed activations, so that a hand-off that swapped or defaulted them would show.
SETTINGS = dict(epochs=1, lr=1e-2, activation=["tanh", "sigmoid"], corruption="mask", noise=0.2)


@pytest.fixture
def pretrained(low_rank):
    """A freshly pretrained 20-12-6 stack and clones of its weights taken right after pretraining."""
    stack, _ = greedy_pretrain(low_rank.X, [12, 6], PretrainConfig(**SETTINGS), seed=0, progress=False)
    return stack, {name: t.clone() for name, t in stack.state_dict().items()}


# ---------------------------------------------------------------- hand-off


def test_classifier_holds_the_pretrained_encoder_modules(pretrained):
    """classifier() uses each pretrained encoder module itself, with weights equal to those pretraining produced."""
    stack, weights = pretrained
    clf = stack.classifier(3, seed=0)
    for k, layer in enumerate(stack.layers):
        inner = clf.encoder.layers[k].encoder
        assert inner is layer.encoder, f"layer {k + 1}: the classifier holds a different encoder module"
        assert inner.linear.weight is layer.encoder.linear.weight, f"layer {k + 1}: weight is a different tensor"
        assert torch.equal(inner.linear.weight, weights[f"layers.{k}.encoder.linear.weight"]), f"layer {k + 1}"
        assert torch.equal(inner.linear.bias, weights[f"layers.{k}.encoder.linear.bias"]), f"layer {k + 1}"


def test_classifier_keeps_the_pretrained_activations(pretrained, low_rank):
    """The classifier computes head(tanh-layer, then sigmoid-layer codes), the activations used in pretraining."""
    stack, _ = pretrained
    clf = stack.classifier(3, seed=0).eval()
    assert clf.encoder.activations == ["tanh", "sigmoid"], clf.encoder.activations
    first, second = (layer.encoder.linear for layer in stack.layers)
    with torch.no_grad():
        expected = clf.head(torch.sigmoid(second(torch.tanh(first(low_rank.X)))))
        torch.testing.assert_close(clf(low_rank.X), expected)


def test_unroll_reuses_encoders_and_reverses_pretrained_decoders(pretrained):
    """unroll() holds the pretrained encoders and the pretrained decoders in reverse order, as the same modules."""
    stack, weights = pretrained
    deep = stack.unroll()
    assert deep.stack is stack, "the unrolled autoencoder holds a different stack"
    expected = [layer.decoder for layer in reversed(stack.layers)]
    assert all(d is e for d, e in zip(deep.decoders, expected, strict=True)), "decoders are not reversed originals"
    for k, layer in enumerate(stack.layers):
        assert torch.equal(layer.decoder.linear.weight, weights[f"layers.{k}.decoder.linear.weight"]), f"layer {k + 1}"


def test_unrolled_forward_is_encoders_then_decoders_in_reverse(pretrained, low_rank):
    """The unrolled network computes dec1(dec2(enc2(enc1(x)))) with each layer's own activations."""
    stack, _ = pretrained
    (enc1, dec1), (enc2, dec2) = ((layer.encoder, layer.decoder) for layer in stack.layers)
    assert [dec2.activation, dec1.activation] == ["tanh", "sigmoid"], (dec2.activation, dec1.activation)
    with torch.no_grad():
        z = enc2.linear(torch.tanh(enc1.linear(low_rank.X)))
        expected = torch.sigmoid(dec1.linear(torch.tanh(dec2.linear(torch.sigmoid(z)))))
        torch.testing.assert_close(stack.unroll()(low_rank.X), expected)


def test_frozen_classifier_trains_only_its_head(pretrained, low_rank):
    """Fine-tuning a classifier(freeze=True) leaves every encoder tensor bit-identical and changes the head."""
    stack, weights = pretrained
    clf = stack.classifier(3, seed=0, freeze=True)
    head = clf.head.weight.detach().clone()
    fit_classifier(clf, low_rank.X, low_rank.y, TrainConfig(epochs=2, lr=1e-2))
    changed = [name for name, t in stack.state_dict().items() if not torch.equal(t, weights[name])]
    assert not changed, f"frozen encoder tensors changed: {changed}"
    assert not torch.equal(clf.head.weight, head), "the head did not train"


def test_freezing_leaves_the_callers_encoder_trainable(pretrained, low_rank):
    """A frozen classifier changes nothing on the caller's stack: afterwards every parameter still requires
    gradients and every module is in the mode it was, and a later unfrozen classifier trains every encoder weight."""
    stack, weights = pretrained
    stack.train()
    fit_classifier(stack.classifier(3, seed=0, freeze=True), low_rank.X, low_rank.y, TrainConfig(epochs=1, lr=1e-2))
    assert all(m.training for m in stack.modules()), "the caller's stack was left in eval mode"
    frozen_flags = [name for name, p in stack.named_parameters() if not p.requires_grad]
    assert not frozen_flags, f"the caller's parameters were frozen: {frozen_flags}"
    fit_classifier(stack.classifier(3, seed=0), low_rank.X, low_rank.y, TrainConfig(epochs=2, lr=1e-2))
    encoder_weights = [name for name in weights if ".encoder.linear." in name]
    unchanged = [name for name in encoder_weights if torch.equal(stack.state_dict()[name], weights[name])]
    assert not unchanged, f"the unfrozen classifier left encoder tensors untrained: {unchanged}"


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_head_initial_weights_are_not_a_rescaled_copy_of_layer_one(seed):
    """The head's initial weights and layer 1's come from unrelated streams: their (scale-free) correlation over
    the head's entries is near 0 (before, the head was layer 1's first draws times the ratio of Glorot bounds)."""
    stack = StackedEncoder.random(64, [32], seed=seed)
    head = stack.classifier(10, seed=seed).head.weight.detach().flatten()         # (320,)
    first = stack.layers[0].encoder.linear.weight.detach().flatten()[:len(head)]   # layer 1's first 320 draws
    corr = torch.corrcoef(torch.stack([head, first]))[0, 1].item()
    assert abs(corr) < 0.3, f"correlation {corr:.3f} between the head's and layer 1's initial weights"


def test_fine_tuning_the_unrolled_autoencoder_halves_its_error(pretrained, low_rank):
    """Ten epochs of fit_autoencoder on unroll() at least halve its squared reconstruction error."""
    deep = pretrained[0].unroll()
    before = evaluate_reconstruction(deep, low_rank.X)["sse"]
    fit_autoencoder(deep, low_rank.X, TrainConfig(epochs=10, lr=1e-2))
    after = evaluate_reconstruction(deep, low_rank.X)["sse"]
    assert after < 0.5 * before, f"SSE per example {before:.4f} -> {after:.4f}"


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_save_load_round_trip_gives_identical_codes_and_metadata(tmp_path, low_rank, tied):
    """A loaded encoder gives bit-identical encode() output and the same metadata as the one saved."""
    stack, _ = greedy_pretrain(low_rank.X, [12, 6], PretrainConfig(**SETTINGS, tied=tied), seed=0, progress=False)
    loaded = StackedEncoder.load(stack.save(tmp_path / "encoder.pt"))
    assert loaded.metadata() == stack.metadata(), (loaded.metadata(), stack.metadata())
    codes, again = stack.encode(low_rank.X), loaded.encode(low_rank.X)
    assert torch.equal(codes, again), f"max code difference {(codes - again).abs().max().item():.3g}"


def test_truncated_checkpoint_raises_checkpoint_error(tmp_path, pretrained):
    """A checkpoint cut to half its length raises CheckpointError saying it is not readable."""
    path = pretrained[0].save(tmp_path / "encoder.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"encoder\.pt: not a readable stacked-ae checkpoint"):
        StackedEncoder.load(path)


def test_foreign_torch_file_raises_checkpoint_error(tmp_path):
    """A torch file of another shape (a plain dict of tensors) raises CheckpointError naming the expected keys."""
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3, 2), "epoch": 4}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a stacked-ae checkpoint \(expected keys metadata"):
        StackedEncoder.load(path)


def test_non_torch_file_raises_checkpoint_error(tmp_path):
    """A file that is not a torch checkpoint at all (text) raises CheckpointError."""
    path = tmp_path / "notes.pt"
    path.write_text("n_in,sizes\n20,12-6\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a readable stacked-ae checkpoint"):
        StackedEncoder.load(path)


def test_checkpoint_not_matching_its_metadata_raises(tmp_path, pretrained):
    """Weights that do not fit the architecture in the metadata raise CheckpointError naming the architecture."""
    path = pretrained[0].save(tmp_path / "encoder.pt")
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["layers.0.encoder.linear.weight"] = torch.zeros(5, 20)
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=r"weights do not match the architecture in its metadata \(20-12-6\)"):
        StackedEncoder.load(path)


class _MakesMarker:
    """Unpickling this object calls os.makedirs(marker): code execution, if the loader allowed it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_raises_without_running_code(tmp_path, writer):
    """A checkpoint whose pickle would call os.makedirs raises CheckpointError and the call never happens."""
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    payload = {"metadata": "{}", "state_dict": _MakesMarker(marker)}
    with open(path, "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable stacked-ae checkpoint"):
        StackedEncoder.load(path)
    assert not marker.exists(), "loading the checkpoint ran the pickled code"
    # Control: an unrestricted unpickle does run it, so the payload is live.
    torch.load(path, weights_only=False) if writer == "torch.save" else pickle.loads(path.read_bytes())
    assert marker.exists(), "the crafted payload is inert, so the check above proves nothing"


# ---------------------------------------------------------------- dropout in the classifier


def test_dropout_acts_in_training_only():
    """Evaluation gives exactly the network without dropout; training passes draw fresh masks."""
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(0))
    plain = StackedEncoder.random(20, [16, 8], seed=0).classifier(3, seed=0)
    dropped = StackedEncoder.random(20, [16, 8], seed=0).classifier(3, seed=0, dropout=0.5, input_dropout=0.2)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x), dropped(x))
    dropped.train()
    first, second = dropped(x), dropped(x)
    assert not torch.equal(first, second) and not torch.equal(first, plain(x))


def test_dropout_masks_have_the_rate_and_keep_the_expectation():
    """p = 0.3: about 30% zeros, survivors scaled by 1/0.7, so the mean of ones stays 1."""
    clf = StackedEncoder.random(4, [4], seed=0).classifier(2, seed=0, dropout=0.3).train()
    out = clf._drop(torch.ones(2000, 500), 0.3)
    zeros = (out == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.005)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_dropout_training_is_deterministic_and_leaves_global_rng_alone(low_rank):
    """Two fits with the same seed give identical weights; the global torch RNG is not drawn from."""
    def fit():
        clf = StackedEncoder.random(20, [16], seed=0).classifier(3, seed=0, dropout=0.3, input_dropout=0.1)
        fit_classifier(clf, low_rank.X, low_rank.y, TrainConfig(epochs=3, lr=1e-2), seed=0)
        return clf.head.weight.detach().clone()
    state = torch.get_rng_state()
    first, second = fit(), fit()
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kwargs, message", [
    ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
    ({"input_dropout": -0.1}, r"input_dropout must be a probability in \[0, 1\), got -0.1"),
])
def test_bad_dropout_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackedEncoder.random(4, [4], seed=0).classifier(2, **kwargs)


def test_encoder_bytes_round_trip_and_a_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    """to_bytes/from_bytes give the same weights as save/load; a save that fails midway leaves neither
    a half-written checkpoint nor its temp file (one atomic writer serves every file the package writes)."""
    from stacked_ae.core import files
    encoder = StackedEncoder.random(12, [6, 3], seed=4)
    again = StackedEncoder.from_bytes(encoder.to_bytes())
    for a, b in zip(encoder.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        encoder.save(tmp_path / "enc.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_stack_in_another_dtype_encodes_in_its_own(low_rank):
    """A stack made .double() reads float64 from any input (check_X gives float32), with the float32 stack's codes
    to float32 precision; bfloat16 runs too."""
    stack = StackedEncoder.random(20, [12, 6], seed=0)
    codes = stack.encode(low_rank.X)
    double = stack.double().encode(low_rank.X.numpy())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), codes)
    assert stack.bfloat16().encode(low_rank.X).dtype == torch.bfloat16


def test_load_takes_torch_loads_other_map_locations(tmp_path):
    """map_location as a dict of devices (torch.load's other form) loads the same weights."""
    stack = StackedEncoder.random(5, [3], seed=0)
    path = stack.save(tmp_path / "e.pt")
    loaded = StackedEncoder.load(path, map_location={"cpu": "cpu"})
    weights = loaded.state_dict()
    assert weights.keys() == stack.state_dict().keys()
    assert all(torch.equal(t, weights[name]) for name, t in stack.state_dict().items())
