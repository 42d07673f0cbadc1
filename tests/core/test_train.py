"""Training loops: the pretrained classifier learns digits, early stopping stops and restores, bad input is named."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stacked_ae import (
    AutoencoderLayer,
    PretrainConfig,
    StackedEncoder,
    TrainConfig,
    TrainingDiverged,
    evaluate_classifier,
    evaluate_reconstruction,
    fit_autoencoder,
    fit_classifier,
    greedy_pretrain,
)


def _random_labels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def _fit_random_labels(digits, cfg: TrainConfig):
    """A one-layer classifier fitted to digits with random labels: nothing to learn, so validation stalls."""
    clf = StackedEncoder.random(64, [32], seed=0).classifier(10, seed=0)
    y_val = _random_labels(len(digits.X_val), 1)
    history = fit_classifier(clf, digits.X_train, _random_labels(len(digits.X_train), 0), cfg,
                             X_val=digits.X_val, y_val=y_val, seed=0)
    return clf, y_val, history


# ---------------------------------------------------------------- learning


def test_pretrained_three_layer_classifier_reaches_95_percent_on_digits(digits):
    """A 64-96-64-32 stack, pretrained and fine-tuned in a few CPU seconds, scores >= 0.95 on digits test."""
    cfg = PretrainConfig(epochs=10, lr=1e-2, corruption="mask", noise=0.1)
    stack, _ = greedy_pretrain(digits.X_train, [96, 64, 32], cfg, seed=0, progress=False)
    clf = stack.classifier(10, seed=0)
    fit_classifier(clf, digits.X_train, digits.y_train, TrainConfig(epochs=40, lr=1e-2, schedule="cosine"),
                   X_val=digits.X_val, y_val=digits.y_val, seed=0)
    accuracy = evaluate_classifier(clf, digits.X_test, digits.y_test)["accuracy"]
    assert accuracy >= 0.95, f"test accuracy {accuracy:.4f} (chance is 0.10)"


# ---------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_epoch(digits):
    """The returned model has exactly the validation error and loss of the history's best row, not the last."""
    clf, y_val, history = _fit_random_labels(digits, TrainConfig(epochs=40, lr=1e-2, patience=3))
    best = [row for row in history if row["best"]]
    assert len(best) == 1 and best[0]["epoch"] < history[-1]["epoch"], [(r["epoch"], r["best"]) for r in history]
    now = evaluate_classifier(clf, digits.X_val, y_val)
    got, want = (now["error"], now["loss"]), (best[0]["val_error"], best[0]["val_loss"])
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7), f"returned model {got}, best epoch {want}"


def test_best_row_has_lowest_validation_error_then_loss(digits):
    """The row marked best minimises (val_error, val_loss) over the history."""
    _, _, history = _fit_random_labels(digits, TrainConfig(epochs=40, lr=1e-2, patience=3))
    best = next(row for row in history if row["best"])
    lowest = min((row["val_error"], row["val_loss"]) for row in history)
    assert (best["val_error"], best["val_loss"]) == lowest, (best, lowest)


@pytest.mark.parametrize("lr,labels", [(1e-12, "true"), (1e-2, "random")])
def test_early_stopping_stops_before_the_epoch_budget(digits, lr, labels):
    """With patience 3 and nothing to gain (absurdly small lr, or random labels), fewer than 40 epochs run."""
    cfg = TrainConfig(epochs=40, lr=lr, patience=3)
    if labels == "random":
        history = _fit_random_labels(digits, cfg)[2]
    else:
        clf = StackedEncoder.random(64, [32], seed=0).classifier(10, seed=0)
        history = fit_classifier(clf, digits.X_train, digits.y_train, cfg, X_val=digits.X_val, y_val=digits.y_val)
    best = next(row["epoch"] for row in history if row["best"])
    assert len(history) == best + 3 < 40, f"ran {len(history)} of 40 epochs, best epoch {best}, patience 3"


def test_autoencoder_early_stopping_restores_lowest_validation_loss(digits):
    """fit_autoencoder returns the weights of its best epoch: their validation loss equals that row's, not the last."""
    layer = AutoencoderLayer(64, 16, seed=0)
    X_val = 1 - digits.X_val          # inverted digits: learning digits makes these worse
    history = fit_autoencoder(layer, digits.X_train[:200], TrainConfig(epochs=30, lr=3e-2, patience=2), X_val=X_val)
    best = next(row for row in history if row["best"])
    assert best["epoch"] < len(history), f"best epoch {best['epoch']} is the last of {len(history)}"
    now = evaluate_reconstruction(layer, X_val)["loss"]
    assert now == pytest.approx(best["val_loss"], rel=1e-6), f"returned model loss {now:.6f}, best row {best}"


def test_divergence_raises_naming_stage_and_epoch(digits):
    """A loss that becomes non-finite raises TrainingDiverged naming the stage, the epoch and the lr."""
    layer = AutoencoderLayer(64, 8, activation="linear", output_activation="linear")
    with pytest.raises(TrainingDiverged, match=r"layer 1: training loss became nan at epoch 1 \(lr=1e\+06\)"):
        fit_autoencoder(layer, digits.X_train, TrainConfig(epochs=3, lr=1e6, optimizer="sgd"), stage="layer 1")


# ---------------------------------------------------------------- determinism


def _fit_small_classifier(low_rank, seed: int) -> dict:
    clf = StackedEncoder.random(20, [8], seed=0, corruption="mask", noise=0.2).classifier(3, seed=0)
    fit_classifier(clf, low_rank.X, low_rank.y, TrainConfig(epochs=3, lr=1e-2), seed=seed)
    return clf.state_dict()


def test_fit_classifier_same_seed_gives_identical_weights(low_rank):
    """Two fit_classifier runs from the same start with the same seed give bit-identical weights."""
    a, b = _fit_small_classifier(low_rank, 0), _fit_small_classifier(low_rank, 0)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"tensors differ between same-seed runs: {differing}"


def test_fit_classifier_different_seeds_give_different_weights(low_rank):
    """Batch order follows the seed: seeds 0 and 1 give different fine-tuned head weights."""
    a, b = _fit_small_classifier(low_rank, 0), _fit_small_classifier(low_rank, 1)
    gap = (a["head.weight"] - b["head.weight"]).abs().max().item()
    assert gap > 1e-4, f"head weights differ by at most {gap:.2e} across seeds"


def test_fit_classifier_leaves_global_rng_untouched(low_rank):
    """Building and fine-tuning a classifier draws no numbers from torch's global generator."""
    state = torch.random.get_rng_state()
    _fit_small_classifier(low_rank, 0)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG state changed"


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_classifier():
    return StackedEncoder.random(5, [4], seed=0).classifier(3, seed=0)


X5 = np.random.default_rng(0).random((6, 5))
Y5 = np.array([0, 1, 2, 0, 1, 2])
ONE_EPOCH = TrainConfig(epochs=1)


def _with(value, row=2, col=1):
    X = X5.copy()
    X[row, col] = value
    return X


@pytest.mark.parametrize("X,message", [
    (_with(np.nan), r"X contains 1 NaN or infinite values"),
    (_with(np.inf), r"X contains 1 NaN or infinite values"),
    (_with(-np.inf), r"X contains 1 NaN or infinite values"),
    (X5[0], r"X must be 2-D \(n_samples, n_features\), got shape \(5,\)"),
    (X5[None], r"X must be 2-D \(n_samples, n_features\), got shape \(1, 6, 5\)"),
    (X5[:, :4], r"X has 4 features, expected 5"),
    (np.empty((0, 5)), r"X is empty: shape \(0, 5\)"),
    ([["a", "b", "c", "d", "e"]] * 6, r"X must be a numeric array"),
], ids=["nan", "inf", "-inf", "1-D", "3-D", "n_features", "empty", "strings"])
def test_bad_X_raises_value_error(small_classifier, X, message):
    """Non-finite, mis-shaped, empty or non-numeric X raises ValueError naming X and the problem."""
    with pytest.raises(ValueError, match=message):
        fit_classifier(small_classifier, X, Y5, ONE_EPOCH)


@pytest.mark.parametrize("y,message", [
    (np.array([0, 1, 3, 0, 1, 2]), r"y has label 3 but the model has 3 classes \(labels must be in \[0, 3\)\)"),
    (np.array([0, 1, -1, 0, 1, 2]), r"y has negative labels \(min -1\)"),
    (np.array([0, 1, 1.5, 0, 1, 2]), r"y must hold integer class labels, got non-integer floats such as \[1.5\]"),
    (np.array([0, 1, 2, 0, 1]), r"y has 5 labels for 6 samples"),
    (np.array([]), r"y is empty"),
    (np.array([[0, 1, 2, 0, 1, 2]]), r"y must be 1-D, got shape \(1, 6\)"),
    (np.array(["0", "1", "2", "0", "1", "2"]), r"y must hold integer class labels, got dtype <U1"),
], ids=["out-of-range", "negative", "float", "length", "empty", "2-D", "strings"])
def test_bad_labels_raise_value_error(small_classifier, y, message):
    """Out-of-range, negative, fractional, mis-sized, empty or text labels raise ValueError naming y."""
    with pytest.raises(ValueError, match=message):
        fit_classifier(small_classifier, X5, y, ONE_EPOCH)


def test_bad_validation_labels_are_named_y_val(small_classifier):
    """A problem in the validation labels is reported under the name y_val."""
    with pytest.raises(ValueError, match=r"y_val has label 7 but the model has 3 classes"):
        fit_classifier(small_classifier, X5, Y5, ONE_EPOCH, X_val=X5, y_val=np.array([0, 1, 7, 0, 1, 2]))


def test_validation_data_must_come_in_pairs(small_classifier):
    """X_val without y_val raises ValueError saying they go together."""
    with pytest.raises(ValueError, match=r"X_val and y_val must be given together"):
        fit_classifier(small_classifier, X5, Y5, ONE_EPOCH, X_val=X5)


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, r"epochs must be a positive integer, got 0"),
    ({"lr": float("nan")}, r"lr must be a positive number, got nan"),
    ({"optimizer": "lbfgs"}, r"optimizer must be one of adam, sgd; got 'lbfgs'"),
    ({"patience": 0}, r"patience must be a positive integer, got 0"),
    ({"precision": "fp16"}, r"precision must be one of fp32, bf16; got 'fp16'"),
    ({"momentum": "0.9"}, r"momentum must be a finite number, got '0.9'"),
    ({"weight_decay": None}, r"weight_decay must be a finite number, got None"),
    ({"weight_decay": float("nan")}, r"weight_decay must be a finite number, got nan"),
    ({"epochs": True}, r"epochs must be a positive integer, got True"),
])
def test_bad_train_config_raises_value_error(kwargs, message):
    """Invalid TrainConfig fields raise ValueError naming the field and value."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_train_config_takes_numpy_integers_as_python_ints():
    """Counts given as NumPy integers (a grid from np.arange) are accepted and stored as Python ints."""
    cfg = TrainConfig(epochs=np.int64(3), batch_size=np.int32(16), patience=np.int64(2), epoch_size=np.uint16(0))
    assert [(v, type(v)) for v in (cfg.epochs, cfg.batch_size, cfg.patience, cfg.epoch_size)] == \
        [(3, int), (16, int), (2, int), (0, int)]


@pytest.mark.parametrize("deep", [False, True], ids=["layer", "unrolled"])
def test_sigmoid_decoder_refuses_targets_outside_unit_interval(low_rank, deep):
    """fit_autoencoder with a sigmoid (cross-entropy) output refuses X_val in [-0.5, 1] before any epoch,
    naming the stage, the array and the observed range; a linear output takes the same data."""
    model = AutoencoderLayer(20, 6, output_activation="sigmoid")
    if deep:
        model = StackedEncoder([model]).unroll()
    before = {k: t.clone() for k, t in model.state_dict().items()}
    X_val = low_rank.X.clone()
    X_val[0, 0] = -0.5
    with pytest.raises(ValueError, match=r"^layer 1: .*sigmoid output .* but X_val lies in \[-0\.5, 0\.9\d+\]"):
        fit_autoencoder(model, low_rank.X, TrainConfig(epochs=1), X_val=X_val, stage="layer 1")
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items()), "weights changed"
    fit_autoencoder(AutoencoderLayer(20, 6, output_activation="linear"), low_rank.X, TrainConfig(epochs=1),
                    X_val=X_val)


def test_epoch_size_cycles_a_small_training_set_in_whole_permutations():
    """epoch_size=100 over 30 examples gives 4 fresh permutations: every index exactly 4 times."""
    from stacked_ae.core.train import iterate_batches
    batches = list(iterate_batches(30, 10, torch.Generator().manual_seed(0), "cpu", epoch_size=100))
    order = torch.cat(batches)
    assert len(batches) == 12 and len(order) == 120
    assert torch.equal(torch.bincount(order), torch.full((30,), 4))
    assert not torch.equal(order[:30], order[30:60])
    one_pass = torch.cat(list(iterate_batches(30, 10, torch.Generator().manual_seed(0), "cpu")))
    assert torch.equal(torch.sort(one_pass).values, torch.arange(30))


# ---------------------------------------------------------------- bfloat16 autocast


def test_bf16_training_matches_fp32_and_keeps_fp32_state(digits):
    """A denoising layer trained under bf16 autocast ends within 3% of the fp32 loss; the matrix
    products really ran in bf16 (the weights differ), while weights and Adam state stay fp32."""
    losses, layers = {}, {}
    for precision in ("fp32", "bf16"):
        layer = AutoencoderLayer(64, 32, corruption="mask", noise=0.2, seed=0)
        cfg = TrainConfig(epochs=15, lr=1e-2, batch_size=64, precision=precision)
        fit_autoencoder(layer, digits.X_train, cfg, seed=0)
        losses[precision] = evaluate_reconstruction(layer, digits.X_test)["loss"]
        layers[precision] = layer
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.03), losses
    assert all(p.dtype == torch.float32 for p in layers["bf16"].parameters())
    assert not torch.equal(layers["bf16"].encoder.linear.weight, layers["fp32"].encoder.linear.weight)


def test_bf16_classifier_learns_digits_and_is_deterministic(digits):
    """Fine-tuning under bf16 autocast reaches >= 0.93 on digits and repeats bit for bit for a seed."""
    weights, accuracy = [], None
    for _ in range(2):
        clf = StackedEncoder.random(64, [64, 32], seed=0).classifier(10, seed=0)
        fit_classifier(clf, digits.X_train, digits.y_train,
                       TrainConfig(epochs=30, lr=1e-2, schedule="cosine", precision="bf16"), seed=0)
        accuracy = evaluate_classifier(clf, digits.X_test, digits.y_test)["accuracy"]
        weights.append(clf.head.weight.detach().clone())
    assert accuracy >= 0.93, f"test accuracy {accuracy:.4f}"
    assert torch.equal(weights[0], weights[1])


def test_bf16_penalties_are_computed_in_fp32():
    """Sparsity and contractive penalties under autocast equal their fp32 values on the same codes."""
    layer = AutoencoderLayer(20, 8, sparsity=0.1, contractive=0.1, seed=0)
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer.encoder.linear(x)
        h = torch.sigmoid(z)
        assert z.dtype == torch.bfloat16
        sparse, contract = layer.sparsity_penalty(h), layer.contractive_penalty(z, h)
    assert sparse.dtype == contract.dtype == torch.float32
    assert sparse.item() == pytest.approx(layer.sparsity_penalty(h.float()).item(), rel=1e-6)
    assert contract.item() == pytest.approx(layer.contractive_penalty(z.float(), h.float()).item(), rel=1e-6)


def test_the_epoch_bar_counts_every_epoch(digits, monkeypatch):
    """The per-epoch progress bar advances once per epoch, so the count shown beside each epoch's losses is
    that epoch's (iterating tqdm over the epochs refreshed the count only now and then)."""
    import tqdm.auto

    class Recorder(tqdm.auto.tqdm):
        made = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})
            self.counts = []
            Recorder.made.append(self)

        def set_postfix(self, *args, **kwargs):
            self.counts.append(self.n)

        def update(self, n=1):
            self.n += n

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    layer = AutoencoderLayer(64, 8, seed=0)
    fit_autoencoder(layer, digits.X_train, TrainConfig(epochs=4, batch_size=256), seed=0, progress=True)
    bar = Recorder.made[-1]
    assert bar.counts == [0, 1, 2, 3] and bar.n == 4, (bar.counts, bar.n)


def test_bf16_on_a_cpu_without_bfloat16_units_warns_once(monkeypatch):
    """bf16 autocast on a CPU without bfloat16 units is emulated (about 9x slower than fp32 on an AVX2 CPU): the
    first bf16 step warns, naming the fix; later ones, fp32 and CPUs with the units stay silent."""
    import warnings

    import stacked_ae.core.train as train_module
    cpu, native = torch.device("cpu"), train_module.cpu_bf16_native
    train_module._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for precision in ("fp32", "bf16", "bf16"):
            with train_module.autocast(cpu, precision):
                pass
    assert [str(w.message)[:60] for w in caught] == [
        "precision 'bf16' on a CPU without bfloat16 units (no AVX512-"], [str(w.message) for w in caught]
    assert "--precision fp32" in str(caught[0].message)
    train_module._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with train_module.autocast(cpu, "bf16"):
            pass
    assert not caught
    assert native() in (True, False, None)


# ---------------------------------------------------------------- resuming from a training checkpoint

class _Killed(Exception):
    """Stands for the process dying in the middle of an epoch."""


@pytest.fixture
def killer(epoch_killer):
    epoch_killer.error = _Killed
    return epoch_killer


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _dropout_classifier():
    return StackedEncoder.random(64, [32, 16], seed=0).classifier(10, seed=0, dropout=0.3, input_dropout=0.1)


def test_a_classifier_killed_mid_epoch_resumes_to_the_uninterrupted_result(digits, tmp_path, killer):
    """Killed in epoch 5 with a state kept after every epoch: a fresh model resumes after epoch 4 and ends with
    the same history and the same weights, bit for bit, as a run never stopped (dropout masks, batch order, Adam,
    the cosine schedule and the early-stopping record all continue)."""
    from stacked_ae import TrainingCheckpoint
    cfg = TrainConfig(epochs=8, lr=3e-3, batch_size=64, schedule="cosine", patience=6)
    fit = lambda model, checkpoint=None: fit_classifier(  # noqa: E731
        model, digits.X_train, digits.y_train, cfg, X_val=digits.X_val, y_val=digits.y_val, seed=3,
        checkpoint=checkpoint)
    reference = _dropout_classifier()
    expected = fit(reference)

    checkpoint = TrainingCheckpoint(tmp_path / "fit.pt", stamp="a", every_s=0)
    killer.calls.clear()          # counted from here: the reference above trained too
    killer.at = 5
    with pytest.raises(_Killed):
        fit(_dropout_classifier(), checkpoint)
    assert torch.load(tmp_path / "fit.pt", weights_only=True)["epoch"] == 4

    killer.calls.clear()
    resumed = _dropout_classifier()
    history = fit(resumed, TrainingCheckpoint(tmp_path / "fit.pt", stamp="a", every_s=0))
    assert len(killer.calls) == len(expected) - 4          # only the epochs after the kept one were trained
    assert history == expected
    assert _same_state(resumed.state_dict(), reference.state_dict())


def test_a_denoising_autoencoder_resumes_with_its_corruption_stream(digits, tmp_path, killer):
    """Masking noise comes from its own generator: a resumed run continues it, so the result is the
    uninterrupted one; with an early stop the best epoch's weights are restored as before."""
    from stacked_ae import TrainingCheckpoint
    cfg = TrainConfig(epochs=6, lr=1e-2, batch_size=64, patience=2)
    layer = lambda: AutoencoderLayer(64, 24, corruption="mask", noise=0.3, seed=1)  # noqa: E731
    X, X_val = digits.X_train / 16.0, digits.X_val / 16.0
    reference = layer()
    expected = fit_autoencoder(reference, X, cfg, X_val=X_val, seed=2)

    killer.calls.clear()
    killer.at = 4
    with pytest.raises(_Killed):
        fit_autoencoder(layer(), X, cfg, X_val=X_val, seed=2,
                        checkpoint=TrainingCheckpoint(tmp_path / "ae.pt", every_s=0))
    killer.at = 0
    resumed = layer()
    history = fit_autoencoder(resumed, X, cfg, X_val=X_val, seed=2,
                              checkpoint=TrainingCheckpoint(tmp_path / "ae.pt", every_s=0))
    assert history == expected
    assert _same_state(resumed.state_dict(), reference.state_dict())


def test_a_checkpoint_of_other_settings_is_refused_and_one_of_another_stamp_ignored(digits, tmp_path, killer):
    from stacked_ae import TrainingCheckpoint
    cfg = TrainConfig(epochs=4, lr=3e-3, batch_size=64)
    killer.at = 3
    with pytest.raises(_Killed):
        fit_classifier(_dropout_classifier(), digits.X_train, digits.y_train, cfg, seed=0,
                       checkpoint=TrainingCheckpoint(tmp_path / "fit.pt", stamp="a", every_s=0))
    killer.at = 0
    other = TrainConfig(epochs=4, lr=1e-2, batch_size=64)
    with pytest.raises(ValueError, match=r"fit\.pt: training checkpoint written for config = .*lr=0\.003"):
        fit_classifier(_dropout_classifier(), digits.X_train, digits.y_train, other, seed=0,
                       checkpoint=TrainingCheckpoint(tmp_path / "fit.pt", stamp="a", every_s=0))
    with pytest.raises(ValueError, match="written for seed = 0, but this run has 1"):
        fit_classifier(_dropout_classifier(), digits.X_train, digits.y_train, cfg, seed=1,
                       checkpoint=TrainingCheckpoint(tmp_path / "fit.pt", stamp="a", every_s=0))
    # another stamp: the file belongs to other settings or data, so training starts over (and overwrites it)
    fresh, restarted = _dropout_classifier(), _dropout_classifier()
    expected = fit_classifier(fresh, digits.X_train, digits.y_train, other, seed=0)
    history = fit_classifier(restarted, digits.X_train, digits.y_train, other, seed=0,
                             checkpoint=TrainingCheckpoint(tmp_path / "fit.pt", stamp="b", every_s=0))
    assert history == expected and _same_state(fresh.state_dict(), restarted.state_dict())
    assert torch.load(tmp_path / "fit.pt", weights_only=True)["stamp"] == "b"


def test_a_damaged_checkpoint_starts_training_over(digits, tmp_path):
    from stacked_ae import TrainingCheckpoint
    (tmp_path / "fit.pt").write_bytes(b"not a checkpoint")
    cfg = TrainConfig(epochs=2, lr=3e-3, batch_size=64)
    history = fit_classifier(_dropout_classifier(), digits.X_train, digits.y_train, cfg, seed=0,
                             checkpoint=TrainingCheckpoint(tmp_path / "fit.pt"))
    assert [row["epoch"] for row in history] == [1, 2]


def test_checkpoint_saves_are_spaced_by_every_s(digits, tmp_path, epoch_killer):
    """every_s bounds how often the state is written: with a clock that advances 100 s per epoch and
    every_s=250, epochs 3 and 6 of 7 are kept (never the last: a finished run needs no checkpoint)."""
    from stacked_ae import TrainingCheckpoint
    epochs = epoch_killer.calls          # counts epochs (at = 0: never kills)
    checkpoint = TrainingCheckpoint(tmp_path / "fit.pt", every_s=250, clock=lambda: 100.0 * len(epochs))
    saved, real_save = [], checkpoint.save
    checkpoint.save = lambda state: (saved.append(state["epoch"]), real_save(state))
    fit_classifier(_dropout_classifier(), digits.X_train, digits.y_train,
                   TrainConfig(epochs=7, lr=3e-3, batch_size=64), seed=0, checkpoint=checkpoint)
    assert saved == [3, 6]
    with pytest.raises(ValueError, match="every_s must be a number >= 0"):
        TrainingCheckpoint(tmp_path / "x.pt", every_s=-1)


def test_evaluation_takes_arrays_as_fitting_does(digits):
    """evaluate_classifier and evaluate_reconstruction take NumPy arrays and lists as fit_* do (checked, moved to
    the model's device) and give the numbers of the tensors; the model's own mode is its business afterwards."""
    clf = StackedEncoder.random(64, [16], seed=0).classifier(10, seed=0)
    X, y = digits.X_test, digits.y_test
    assert evaluate_classifier(clf, X.numpy(), y.numpy()) == evaluate_classifier(clf, X, y)
    assert evaluate_classifier(clf, X.numpy(), y.tolist())["error"] == evaluate_classifier(clf, X, y)["error"]
    ae = StackedEncoder.random(64, [16], seed=0).unroll()
    assert evaluate_reconstruction(ae, X.numpy()) == evaluate_reconstruction(ae, X)
    with pytest.raises(ValueError, match="X has 10 features, expected 64"):
        evaluate_classifier(clf, X.numpy()[:, :10], y.numpy())
