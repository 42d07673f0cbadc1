"""AutoencoderLayer: the PCA oracle, input corruption, tied weights and the two penalties."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch.autograd.functional import jacobian

from stacked_ae import AutoencoderLayer, TrainConfig, evaluate_reconstruction, fit_autoencoder
from stacked_ae.core.layers import activate, corrupt, loss_from_logits, reconstruction_loss

CORRUPTIONS = ["mask", "gaussian", "salt_pepper"]


def _seen_inputs(layer: AutoencoderLayer) -> tuple[list, object]:
    """Record every input the encoder's linear map receives (the possibly corrupted x)."""
    seen = []
    handle = layer.encoder.linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen, handle


def _train_loss_input(layer: AutoencoderLayer, X: torch.Tensor, seed: int = 0):
    """(objective, recon, input seen by the encoder) of one training-mode loss call."""
    seen, handle = _seen_inputs(layer)
    layer.train()
    objective, recon = layer.loss(X, torch.Generator().manual_seed(seed))
    handle.remove()
    return objective, recon, seen[0]


# ---------------------------------------------------------------- oracle


def test_linear_autoencoder_matches_pca_reconstruction_error(digits):
    """A linear autoencoder with 16 units reconstructs digits within 10% of 16-component PCA's squared error."""
    X, k = digits.X_train, 16
    pca = PCA(k).fit(X.numpy())
    pca_mse = float(np.mean((X.numpy() - pca.inverse_transform(pca.transform(X.numpy()))) ** 2))
    layer = AutoencoderLayer(64, k, activation="linear", output_activation="linear", seed=0)
    fit_autoencoder(layer, X, TrainConfig(epochs=150, lr=3e-2, batch_size=256, schedule="cosine"), seed=0)
    ae_mse = evaluate_reconstruction(layer, X)["loss"]
    ratio = ae_mse / pca_mse
    # PCA is the optimum (Baldi & Hornik, 1989): the ratio can only fall below 1 by rounding.
    assert 0.999 <= ratio <= 1.10, f"autoencoder MSE {ae_mse:.5f} vs PCA MSE {pca_mse:.5f} (ratio {ratio:.4f})"


# ---------------------------------------------------------------- corruption


@pytest.mark.parametrize("kind,changed", [("mask", 0.3), ("gaussian", 1.0), ("salt_pepper", 0.3)])
def test_training_input_differs_from_target(low_rank, kind, changed):
    """In training mode the encoder sees a corrupted input: about `noise` of the entries changed (all, for gaussian)."""
    layer = AutoencoderLayer(20, 8, corruption=kind, noise=0.3)
    _, _, seen = _train_loss_input(layer, low_rank.X)
    fraction = (seen != low_rank.X).float().mean().item()
    assert abs(fraction - changed) < 0.03, f"{kind}: {fraction:.3f} of inputs changed, expected about {changed}"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_follows_its_noise_model(low_rank, kind):
    """mask zeroes entries, salt_pepper sets them to 0 or 1 evenly, gaussian adds noise of std `noise`."""
    X = low_rank.X
    noisy = corrupt(X, kind, 0.3, torch.Generator().manual_seed(0))
    changed = noisy[noisy != X]
    if kind == "mask":
        assert torch.all(changed == 0), f"masked values {changed.unique()[:5].tolist()}"
    elif kind == "salt_pepper":
        ones = (changed == 1).float().mean().item()
        assert torch.all((changed == 0) | (changed == 1)) and abs(ones - 0.5) < 0.05, f"fraction of 1s {ones:.3f}"
    else:
        std = (noisy - X).std().item()
        assert abs(std - 0.3) < 0.01, f"gaussian noise std {std:.4f}, expected 0.3"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_leaves_target_unchanged(low_rank, kind):
    """Corruption is out of place: the target tensor is bit-identical after a training loss and backward pass."""
    X = low_rank.X.clone()
    layer = AutoencoderLayer(20, 8, corruption=kind, noise=0.3)
    objective, _, _ = _train_loss_input(layer, X)
    objective.backward()
    assert torch.equal(X, low_rank.X), f"{int((X != low_rank.X).sum())} target entries were modified"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_training_reconstructs_the_clean_input(low_rank, kind):
    """The training loss compares the reconstruction of the corrupted input with the clean input."""
    layer = AutoencoderLayer(20, 8, corruption=kind, noise=0.3)
    _, recon, seen = _train_loss_input(layer, low_rank.X)
    with torch.no_grad():
        expected = reconstruction_loss(layer.decoder, layer.encoder(seen), low_rank.X)
        against_noisy = reconstruction_loss(layer.decoder, layer.encoder(seen), seen.clamp(0, 1))
    torch.testing.assert_close(recon.detach(), expected)
    assert not torch.isclose(recon.detach(), against_noisy), f"loss {recon.item():.5f} matches the noisy target"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_eval_mode_loss_is_clean_and_deterministic(low_rank, kind):
    """In eval mode the loss applies no corruption: repeated calls agree and equal the clean loss."""
    layer = AutoencoderLayer(20, 8, corruption=kind, noise=0.3).eval()
    with torch.no_grad():
        first = layer.loss(low_rank.X, torch.Generator().manual_seed(0))[1]
        second = layer.loss(low_rank.X, torch.Generator().manual_seed(1))[1]
        clean = reconstruction_loss(layer.decoder, layer.encoder(low_rank.X), low_rank.X)
    assert torch.equal(first, second), f"eval losses differ: {first.item()} vs {second.item()}"
    assert torch.equal(first, clean), f"eval loss {first.item()} != clean loss {clean.item()}"


def test_fit_autoencoder_leaves_X_unchanged(low_rank):
    """Training with corruption never writes into the caller's X."""
    X = low_rank.X.clone()
    fit_autoencoder(AutoencoderLayer(20, 8, corruption="mask", noise=0.5), X, TrainConfig(epochs=2))
    assert torch.equal(X, low_rank.X), f"{int((X != low_rank.X).sum())} entries of X were modified"


# ---------------------------------------------------------------- tied weights


def test_tied_decoder_owns_only_a_bias():
    """A tied decoder registers one parameter, its bias; the layer holds a single weight matrix."""
    layer = AutoencoderLayer(20, 8, tied=True)
    decoder_params = {name: tuple(p.shape) for name, p in layer.decoder.named_parameters()}
    assert decoder_params == {"bias": (20,)}, decoder_params
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 20 * 8 + 8 + 20, f"{n_params} parameters, expected one 8x20 weight and two biases (188)"


def test_tied_decoder_uses_encoder_weight_transposed(low_rank):
    """A tied decoder computes sigmoid(h W + c) with W the encoder's current weight."""
    layer = AutoencoderLayer(20, 8, tied=True)
    with torch.no_grad():
        layer.decoder.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
        h = layer.encode(low_rank.X)
        expected = torch.sigmoid(h @ layer.encoder.linear.weight + layer.decoder.bias)
        torch.testing.assert_close(layer.decode(h), expected)


def test_reconstruction_gradient_reaches_shared_weight_through_decoder(low_rank):
    """The shared weight's gradient is the sum of its encoder and decoder uses, and the decoder part is nonzero."""
    X = low_rank.X
    layer = AutoencoderLayer(20, 8, tied=True).eval()
    layer.loss(X)[1].backward()
    W = layer.encoder.linear.weight.detach().clone().requires_grad_()
    b, c = layer.encoder.linear.bias.detach(), layer.decoder.bias.detach()

    def hand_loss(decoder_weight):
        h = torch.sigmoid(F.linear(X, W, b))
        return F.binary_cross_entropy_with_logits(F.linear(h, decoder_weight.t(), c), X)

    both = torch.autograd.grad(hand_loss(W), W)[0]
    encoder_only = torch.autograd.grad(hand_loss(W.detach()), W)[0]
    torch.testing.assert_close(layer.encoder.linear.weight.grad, both)
    share = (both - encoder_only).norm().item() / both.norm().item()
    assert share > 0.1, f"decoder path carries only {share:.3f} of the gradient norm"


# ---------------------------------------------------------------- penalties


def test_sparsity_penalty_matches_hand_computed_kl():
    """The sparsity penalty is sum_j KL(rho || mean activation of unit j), computed by hand in float64."""
    layer = AutoencoderLayer(20, 6, sparsity=1.0, sparsity_target=0.1)
    h = torch.rand(50, 6, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    rho, rho_hat = 0.1, h.double().mean(0).numpy()
    expected = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    got = layer.sparsity_penalty(h).item()
    assert got == pytest.approx(expected, rel=1e-5), f"penalty {got:.6f}, hand KL {expected:.6f}"


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_contractive_penalty_equals_jacobian_frobenius_norm(activation):
    """The contractive penalty is the batch mean of ||dh/dx||_F^2 as torch.autograd computes it."""
    layer = AutoencoderLayer(6, 4, activation=activation, contractive=1.0, seed=3).double()
    X = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norms = [jacobian(layer.encoder, x).pow(2).sum() for x in X]      # each (4, 6)
    expected = torch.stack(norms).mean()
    z = layer.encoder.linear(X)
    got = layer.contractive_penalty(z, activate(z, activation))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_penalties_enter_the_objective_with_their_weights(low_rank):
    """objective = reconstruction + sparsity * KL + contractive * ||J||_F^2, with the stated weights."""
    layer = AutoencoderLayer(20, 8, sparsity=0.3, sparsity_target=0.1, contractive=0.7).eval()
    with torch.no_grad():
        objective, recon = layer.loss(low_rank.X)
        z = layer.encoder.linear(low_rank.X)
        h = torch.sigmoid(z)
        expected = recon + 0.3 * layer.sparsity_penalty(h) + 0.7 * layer.contractive_penalty(z, h)
    torch.testing.assert_close(objective, expected)
    assert objective - recon > 1e-3, f"penalties add only {objective - recon:.2e}"


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("kwargs,message", [
    ({"activation": "swish"}, r"activation must be one of .*; got 'swish'"),
    ({"corruption": "blur"}, r"corruption must be one of .*; got 'blur'"),
    ({"noise": 1.0}, r"noise must be in \[0, 1\), got 1.0"),
    ({"activation": "relu", "sparsity": 0.1}, r"sparsity penalty needs sigmoid units"),
    ({"sparsity_target": 0.0}, r"sparsity_target must be in \(0, 1\), got 0.0"),
])
def test_bad_layer_settings_raise_value_error(kwargs, message):
    """Each invalid layer setting raises ValueError naming the setting and the bad value."""
    with pytest.raises(ValueError, match=message):
        AutoencoderLayer(20, 8, **kwargs)


@pytest.mark.parametrize("units", ["linear", "relu", "tanh", "leaky_relu"])
def test_a_non_sigmoid_decoder_trains_on_the_squared_error_of_its_activated_output(units):
    """Every decoder output other than sigmoid is scored by squared error after its units: for ReLU, a negative
    logit under a zero target costs nothing; for linear, it is plain squared error on the logits."""
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(32, 6, generator=g), torch.rand(32, 6, generator=g)
    expected = F.mse_loss(activate(logits, units), target)
    torch.testing.assert_close(loss_from_logits(units, logits, target), expected)
    assert loss_from_logits("relu", torch.full((1, 3), -5.0), torch.zeros(1, 3)).item() == 0.0
