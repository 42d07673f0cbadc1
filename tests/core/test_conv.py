"""ConvAutoencoderLayer and mixed conv-then-dense stacks: exact shapes, the PCA oracle, corruption, tied
kernels, greedy pretraining, the random-init contract, checkpoints and the errors that name the culprit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from stacked_ae import PretrainConfig, StackedEncoder, TrainConfig, evaluate_reconstruction, fit_autoencoder
from stacked_ae.core.conv import ConvAutoencoderLayer, ConvSpec
from stacked_ae.core.model import CheckpointError
from stacked_ae.core.pretrain import greedy_pretrain

BOOK = [{"channels": 8, "stride": 1}, {"channels": 16, "stride": 2}]   # a small cut of the book's encoder


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("size", [28, 27, 8, 7, 5])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, "same"), (3, 2, "same"), (5, 2, "same"), (3, 3, 0),
                                                   (4, 2, 1), (2, 2, 0)])
@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_decoder_restores_the_exact_input_shape(size, kernel, stride, padding, pool, tied):
    """Odd and even sizes, strides 1-3, explicit and 'same' padding, with and without pooling: the output
    padding is computed so that the reconstruction has the input's shape, and the code has the spec's."""
    spec = ConvSpec(3, kernel=kernel, stride=stride, padding=padding, pool=pool)
    try:
        out_shape = spec.check((2, size, size))
    except ValueError:   # too small for this layer: the layer refuses it too
        with pytest.raises(ValueError, match="leaves nothing|larger than its"):
            ConvAutoencoderLayer((2, size, size), spec)
        return
    layer = ConvAutoencoderLayer((2, size, size), spec, tied=tied, seed=0)
    x = torch.rand(4, 2 * size * size)
    codes = layer.encode(x)
    assert codes.shape == (4, int(np.prod(out_shape))) and layer.n_out == codes.shape[1]
    ref = F.conv2d(x.view(4, 2, size, size), layer.encoder.conv.weight, layer.encoder.conv.bias,
                   stride=stride, padding=spec.pad)
    assert ref.shape[1:] == spec.conv_shape((2, size, size))
    assert layer(x).shape == x.shape


def test_same_padding_keeps_the_size_at_stride_1_and_halves_it_rounding_up_at_stride_2():
    assert ConvSpec(4).out_shape((1, 28, 28)) == (4, 28, 28)
    assert ConvSpec(4, stride=2).out_shape((1, 28, 28)) == (4, 14, 14)
    assert ConvSpec(4, stride=2).out_shape((1, 7, 7)) == (4, 4, 4)
    assert ConvSpec(4, pool=True).out_shape((1, 7, 7)) == (4, 3, 3)


@pytest.mark.parametrize("spec,shape,message", [
    (ConvSpec(4, kernel=7, padding=0), (1, 5, 5), "kernel 7 is larger than its 5x5 input"),
    (ConvSpec(4, stride=2, pool=True), (1, 2, 2), "2x2 pooling of 1x1 maps leaves nothing"),
])
def test_impossible_shapes_are_refused_with_the_key(spec, shape, message):
    with pytest.raises(ValueError, match=message) as err:
        spec.check(shape, "conv[3]")
    assert str(err.value).startswith("conv[3]")


@pytest.mark.parametrize("spec,message", [
    ({"channels": 0}, "conv[1].channels must be a positive integer"),
    ({"channels": 8, "strides": 2}, "conv[1]: unknown key(s) strides"),
    ({"kernel": 3}, "conv[1]: missing 'channels'"),
    ({"channels": 8, "padding": "valid"}, "conv[1].padding must be 'same' or an integer"),
    ({"channels": 8, "pool": 2}, "conv[1].pool must be true or false"),
])
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ValueError) as err:
        ConvSpec.from_dict(spec, "conv[1]")
    assert message in str(err.value)


# ---------------------------------------------------------------- what the layer computes

def test_full_image_kernel_linear_conv_autoencoder_matches_pca(digits):
    """A linear conv autoencoder whose kernel covers the whole 8x8 image (no padding) is a linear autoencoder
    with `channels` units, so its optimum is PCA's (Baldi & Hornik 1989): within 10% of 8-component PCA."""
    X, k = digits.X_train, 8
    pca = PCA(k).fit(X.numpy())
    pca_mse = float(np.mean((X.numpy() - pca.inverse_transform(pca.transform(X.numpy()))) ** 2))
    layer = ConvAutoencoderLayer((8, 8), ConvSpec(k, kernel=8, padding=0), activation="linear",
                                 output_activation="linear", seed=0)
    assert layer.out_shape == (k, 1, 1)
    fit_autoencoder(layer, X, TrainConfig(epochs=150, lr=3e-2, batch_size=256, schedule="cosine"), seed=0)
    ratio = evaluate_reconstruction(layer, X)["loss"] / pca_mse
    assert 0.999 <= ratio <= 1.10, f"conv autoencoder / PCA squared error = {ratio:.4f}"


def test_a_conv_layer_learns_digits_by_a_margin(digits):
    layer = ConvAutoencoderLayer((8, 8), ConvSpec(8, stride=2), activation="leaky_relu", seed=0)
    before = evaluate_reconstruction(layer, digits.X_val)["loss"]
    fit_autoencoder(layer, digits.X_train, TrainConfig(epochs=15, lr=3e-3, batch_size=64), seed=0)
    after = evaluate_reconstruction(layer, digits.X_val)["loss"]
    assert after < 0.5 * before, (before, after)


def test_loss_matches_the_decoder_output(digits):
    """Cross-entropy on the logits for a sigmoid decoder, squared error for a linear one (the dense rules)."""
    x = digits.X_train[:32]
    for output, loss in (("sigmoid", F.binary_cross_entropy_with_logits), ("linear", F.mse_loss)):
        layer = ConvAutoencoderLayer((8, 8), ConvSpec(4), output_activation=output, seed=1).eval()
        _, recon = layer.loss(x)
        logits, _ = layer.recon_logits(x)
        assert torch.allclose(recon, loss(logits, x)), output


def test_corruption_is_out_of_place_and_in_training_only(digits):
    x = digits.X_train[:64].clone()
    keep = x.clone()
    layer = ConvAutoencoderLayer((8, 8), ConvSpec(4), corruption="mask", noise=0.5, seed=0)
    seen = []
    handle = layer.encoder.conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    layer.train()
    layer.loss(x, torch.Generator().manual_seed(0))
    layer.eval()
    layer.loss(x)
    handle.remove()
    assert torch.equal(x, keep), "the caller's batch was changed"
    flat = [s.reshape(len(s), -1) for s in seen]
    dropped = ((flat[0] == 0) & (x != 0)).float().sum() / (x != 0).float().sum()
    assert 0.45 < float(dropped) < 0.55, float(dropped)
    assert torch.equal(flat[1], x), "evaluation saw a corrupted input"


def test_tied_decoder_uses_the_encoder_kernel_and_owns_only_a_bias(digits):
    layer = ConvAutoencoderLayer((8, 8), ConvSpec(4, stride=2), tied=True, seed=0)
    assert sorted(layer.decoder.state_dict()) == ["bias"]
    x = digits.X_train[:8]
    with torch.no_grad():
        layer.encoder.conv.weight.mul_(2.0)     # the decoder reads the changed kernel
    expected = F.conv_transpose2d(layer.encode(x).view(8, 4, 4, 4), layer.encoder.conv.weight, layer.decoder.bias,
                                  stride=2, padding=1, output_padding=1).flatten(1)
    assert torch.allclose(layer.decoder.logits(layer.encode(x)), expected)
    layer.loss(x)[0].backward()
    assert layer.encoder.conv.weight.grad is not None and layer.encoder.conv.weight.grad.abs().sum() > 0


def test_sparsity_needs_sigmoid_units_and_contractive_is_dense_only():
    with pytest.raises(ValueError, match="sparsity penalty needs sigmoid units"):
        ConvAutoencoderLayer((8, 8), ConvSpec(4), activation="relu", sparsity=0.1)
    layer = ConvAutoencoderLayer((8, 8), ConvSpec(4), activation="sigmoid", sparsity=0.5, seed=0)
    x = torch.rand(16, 64)
    objective, recon = layer.loss(x)
    assert float(objective.detach()) > float(recon.detach())
    with pytest.raises(ValueError, match="contractive penalty is defined for dense layers only"):
        ConvAutoencoderLayer((8, 8), ConvSpec(4), contractive=0.1)
    with pytest.raises(ValueError, match=r"pretrain.contractive\[0\].*conv layer"):
        PretrainConfig(contractive=[0.1, 0.0]).make_layers(64, [4], 0, conv=[{"channels": 2}], image_shape=(8, 8))


def test_same_seed_same_weights_and_the_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a = ConvAutoencoderLayer((8, 8), ConvSpec(4), seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert _equal(_state(a), _state(ConvAutoencoderLayer((8, 8), ConvSpec(4), seed=5)))
    assert not _equal(_state(a), _state(ConvAutoencoderLayer((8, 8), ConvSpec(4), seed=6)))


def test_channels_last_gives_the_same_numbers(digits):
    x = digits.X_train[:16]
    a = ConvAutoencoderLayer((8, 8), ConvSpec(8, stride=2), seed=0)
    b = ConvAutoencoderLayer((8, 8), ConvSpec(8, stride=2), seed=0, channels_last=True)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    assert a(x).is_contiguous()


# ---------------------------------------------------------------- stacks

@pytest.fixture(scope="module")
def mixed(digits):
    cfg = PretrainConfig(epochs=2, lr=3e-3, noise=0.2, activation=["leaky_relu", "leaky_relu", "sigmoid"])
    stack, histories = greedy_pretrain(digits.X_train, [12], cfg, conv=BOOK, image_shape=(8, 8), seed=3,
                                       progress=False)
    return stack, histories, cfg


def test_mixed_stack_is_conv_layers_then_dense(mixed, digits):
    stack, histories, _ = mixed
    assert [type(layer).__name__ for layer in stack.layers] == ["ConvAutoencoderLayer"] * 2 + ["AutoencoderLayer"]
    assert stack.sizes == [8 * 8 * 8, 16 * 4 * 4, 12] and stack.image_shape == (1, 8, 8)
    assert [s.channels for s in stack.conv] == [8, 16]
    assert len(histories) == 3 and all(len(h) == 2 for h in histories)
    assert stack.encode(digits.X_test).shape == (len(digits.X_test), 12)
    # layer 1 rebuilds pixels in [0, 1] (sigmoid); above it, "auto" mirrors the leaky codes each layer rebuilds
    assert [layer.output_activation for layer in stack.layers] == ["sigmoid", "leaky_relu", "leaky_relu"]


def test_random_mixed_stack_equals_the_weights_pretraining_started_from(digits, monkeypatch):
    import stacked_ae.core.pretrain as pretrain_module
    starts, real_fit = [], pretrain_module.fit_autoencoder

    def recording_fit(layer, X, *args, **kwargs):
        starts.append(_state(layer))
        return real_fit(layer, X, *args, **kwargs)

    monkeypatch.setattr(pretrain_module, "fit_autoencoder", recording_fit)
    cfg = PretrainConfig(epochs=1, activation="leaky_relu", tied=[True, False, False])
    greedy_pretrain(digits.X_train[:200], [6], cfg, conv=BOOK, image_shape=(8, 8), seed=2, progress=False)
    fresh = StackedEncoder.random(64, [6], seed=2, config=cfg, conv=BOOK, image_shape=(8, 8))
    assert len(starts) == 3
    for k, start in enumerate(starts):
        assert _equal(_state(fresh.layers[k]), start), f"layer {k + 1}"


def test_unrolled_conv_autoencoder_reuses_the_pretrained_decoders_and_decodes_any_code(mixed, digits):
    stack, _, _ = mixed
    ae = stack.unroll()
    assert [id(d) for d in ae.decoders] == [id(layer.decoder) for layer in reversed(stack.layers)]
    x = digits.X_test[:10]
    with torch.no_grad():
        out = ae(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert ae.decode(torch.randn(5, 12)).shape == (5, 64)   # no encoder pass needed (no unpooling switches)


def test_classifier_on_a_mixed_stack_learns(mixed, digits):
    import copy

    from stacked_ae import fit_classifier
    stack = copy.deepcopy(mixed[0])
    clf = stack.classifier(10, seed=0)
    fit_classifier(clf, digits.X_train, digits.y_train, TrainConfig(epochs=8, lr=3e-3, batch_size=64), seed=0,
                   progress=False)
    with torch.no_grad():
        error = (clf(digits.X_test).argmax(1) != digits.y_test).float().mean()
    assert float(error) < 0.15, float(error)


def test_mixed_stack_round_trips_through_a_weights_only_checkpoint(mixed, digits, tmp_path):
    stack = mixed[0]
    path = stack.save(tmp_path / "conv.pt")
    blob = torch.load(path, weights_only=True)
    import json
    meta = json.loads(blob["metadata"])
    assert meta["format_version"] == 2 and meta["layers"][0]["kind"] == "conv"
    loaded = StackedEncoder.load(path)
    assert torch.equal(loaded.encode(digits.X_test), stack.encode(digits.X_test))
    assert torch.equal(loaded.unroll()(digits.X_test[:5]), stack.unroll()(digits.X_test[:5]))
    dense = StackedEncoder.random(64, [8], seed=0)
    assert json.loads(torch.load(dense.save(tmp_path / "d.pt"), weights_only=True)["metadata"])["format_version"] == 1


def test_a_checkpoint_from_a_newer_format_is_refused(mixed, tmp_path):
    import io
    import json
    blob = torch.load(io.BytesIO(mixed[0].to_bytes()), weights_only=True)
    meta = json.loads(blob["metadata"])
    meta["format_version"] = 99
    blob["metadata"] = json.dumps(meta)
    torch.save(blob, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer than this stacked-ae understands"):
        StackedEncoder.load(tmp_path / "new.pt")


def test_conv_layers_need_an_image_shape_that_fits_the_rows(digits):
    cfg = PretrainConfig(epochs=1)
    with pytest.raises(ValueError, match="conv layers need images"):
        greedy_pretrain(digits.X_train, [4], cfg, conv=BOOK, progress=False)
    with pytest.raises(ValueError, match=r"image_shape \(7, 7\) holds 49 values but the data have 64"):
        greedy_pretrain(digits.X_train, [4], cfg, conv=BOOK, image_shape=(7, 7), progress=False)
    with pytest.raises(ValueError, match="pretrain.epochs has 2 entries but the model has 3 layers"):
        greedy_pretrain(digits.X_train, [4], PretrainConfig(epochs=[1, 1]), conv=BOOK, image_shape=(8, 8),
                        progress=False)


def test_a_conv_layer_on_top_of_a_dense_one_is_refused():
    dense = StackedEncoder.random(64, [64], seed=0).layers[0]
    conv = ConvAutoencoderLayer((8, 8), ConvSpec(2), seed=0)
    with pytest.raises(ValueError, match="layer 2 is a conv layer"):
        StackedEncoder([dense, conv])


def test_conv_layers_train_under_bf16_autocast_close_to_fp32(digits):
    """precision="bf16": the conv layer's steps run under bfloat16 autocast, weights stay fp32, and the
    reconstruction error lands within 5% of the fp32 run's."""
    losses = {}
    for precision in ("fp32", "bf16"):
        layer = ConvAutoencoderLayer((8, 8), ConvSpec(8, stride=2), activation="leaky_relu", seed=0)
        fit_autoencoder(layer, digits.X_train, TrainConfig(epochs=8, lr=3e-3, batch_size=64, precision=precision),
                        seed=0)
        assert layer.encoder.conv.weight.dtype == torch.float32
        losses[precision] = evaluate_reconstruction(layer, digits.X_val)["loss"]
    assert abs(losses["bf16"] / losses["fp32"] - 1) < 0.05, losses


# ---------------------------------------------------------------- evaluation batches

def test_evaluation_batches_keep_a_conv_models_widest_map_within_the_byte_budget(mixed, monkeypatch):
    """The widest map is read from the conv modules (here layer 1's 8 maps of 8x8 = 512 floats an image);
    a batch holds as many images as EVAL_BYTES allows on the device type, at most EVAL_BATCH, at least 1;
    dense models keep EVAL_BATCH."""
    from stacked_ae.core import layers

    stack, _, _ = mixed
    assert layers.widest_map(stack) == layers.widest_map(stack.unroll()) == 8 * 8 * 8
    assert layers.widest_map(StackedEncoder.random(64, [1000, 30], seed=0)) == 0
    assert layers.eval_batch_size(StackedEncoder.random(64, [1000, 30], seed=0)) == layers.EVAL_BATCH
    monkeypatch.setattr(layers, "EVAL_BYTES", {"cpu": 4 * 512 * 37})
    monkeypatch.setattr(layers, "EVAL_BYTES_OTHER", 4 * 512 * 100)
    assert layers.eval_batch_size(stack) == 37 and layers.eval_batch_size(stack.unroll(), "cpu") == 37
    assert layers.eval_batch_size(stack, torch.device("cuda")) == 100     # reads the type, needs no GPU
    monkeypatch.setattr(layers, "EVAL_BYTES", {"cpu": 1})
    assert layers.eval_batch_size(stack) == 1
    # the book's network at its real size: 32 maps of 28x28 (100,352 bytes an image) -> 83 images in 8 MiB
    book = [ConvSpec(32, 3, 1), ConvSpec(64, 3, 2), ConvSpec(64, 3, 2), ConvSpec(64, 3, 1)]
    monkeypatch.undo()
    net = StackedEncoder.random(784, [2], seed=0, conv=book, image_shape=(28, 28),
                                activation=["leaky_relu"] * 4 + ["linear"])
    assert layers.eval_batch_size(net) == 8 * 2**20 // (4 * 32 * 28 * 28) == 83
    assert layers.eval_batch_size(net, "cuda") == layers.EVAL_BATCH


def test_evaluation_gives_the_same_numbers_in_any_batch_size(mixed, digits):
    """Sized batches change only how the work is cut: codes, logits and averaged losses agree to float
    rounding, whether one batch holds 7 images, the default number or all of them."""
    from stacked_ae.core.train import evaluate_classifier, predict_logits

    stack, _, _ = mixed
    X, y = digits.X_test, digits.y_test
    assert torch.allclose(stack.encode(X), stack.encode(X, batch_size=7), atol=1e-6)
    ae = stack.unroll()
    default, small = evaluate_reconstruction(ae, X), evaluate_reconstruction(ae, X, batch_size=7)
    assert default == pytest.approx(small, rel=1e-5) and default == pytest.approx(
        evaluate_reconstruction(ae, X, batch_size=len(X)), rel=1e-5)
    head = stack.classifier(10, seed=0)
    assert torch.allclose(predict_logits(head, X), predict_logits(head, X, batch_size=7), atol=1e-6)
    assert evaluate_classifier(head, X, y) == pytest.approx(evaluate_classifier(head, X, y, batch_size=7),
                                                            rel=1e-5)
