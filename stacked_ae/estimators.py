"""scikit-learn wrappers: greedy layer-wise pretraining as a transformer and as a classifier.

    Pipeline([("sae", StackedAutoencoderTransformer(random_state=0)),
              ("clf", LogisticRegression())]).fit(X, y)

Thin by design: parameters become the core configs, NumPy <-> torch happens only here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from dataclasses import fields

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .core.checks import is_real
from .core.conv import image_shape3
from .core.model import StackedEncoder, check_dropout
from .core.pretrain import greedy_pretrain
from .core.pretrain_config import TRAIN_FIELDS, PretrainConfig, check_sizes, conv_specs
from .core.train import TrainConfig, fit_autoencoder, fit_classifier, predict_logits, resolve_device
from .encode import check_output, decode_codes, encode_layers

INITS = ("pretrained", "random")


def _seed(random_state) -> int:
    """The core's integer seed; None draws one from OS entropy, leaving the global RNGs untouched."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    try:
        rng = check_random_state(random_state)
    except ValueError:
        raise ValueError(f"random_state must be None, an int or a numpy.random.RandomState, "
                         f"got {random_state!r}") from None
    return int(rng.randint(np.iinfo(np.int32).max))


def _check_random_state(random_state) -> None:
    """A ValueError naming random_state for a value that cannot seed; draws nothing from a RandomState."""
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.RandomState)):
        return
    _seed(random_state)


def _to_tensor(X: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(X, dtype=dtype)   # a copy: the caller's array is never shared with torch


def _build(config_cls, params: dict, prefix: str = ""):
    """A core config from estimator parameters; errors name the estimator parameter."""
    try:
        return config_cls(**params)
    except ValueError as err:
        raise ValueError(prefix + str(err).removeprefix("pretrain.")) from None


def _noise_of_corrupted_layers(corruption, noise):
    """`noise` with 0 for the layers whose corruption is "none": the estimators' noise (default 0.2) is the level
    of their corruption and goes unused without one, where the core refuses a noise that would do nothing."""
    if isinstance(corruption, str):
        return 0.0 if corruption == "none" else noise
    if not isinstance(corruption, (list, tuple)) or "none" not in corruption:
        return noise
    levels = noise if isinstance(noise, (list, tuple)) else [noise] * len(corruption)
    if len(levels) != len(corruption):
        return noise    # refused by PretrainConfig, naming the list lengths
    return [0.0 if c == "none" else level for c, level in zip(corruption, levels, strict=True)]


def _is_fitted_attribute(name: str) -> bool:
    """scikit-learn's convention: what fit sets ends with one underscore (n_features_in_, model_, ...)."""
    return name.endswith("_") and not name.startswith("_")


class _StackedAutoencoderBase(BaseEstimator):
    """Shared plumbing of the two estimators: configs from parameters, pretraining, validation."""

    def _pretrain_config(self) -> PretrainConfig:
        params = {f.name: getattr(self, f.name) for f in fields(PretrainConfig)}
        params["noise"] = _noise_of_corrupted_layers(params["corruption"], params["noise"])
        return _build(PretrainConfig, params)

    def _finetune_config(self, **extra) -> TrainConfig:
        params = {name: getattr(self, f"finetune_{name}") for name in TRAIN_FIELDS if name != "precision"}
        _build(TrainConfig, {"precision": self.precision})   # one setting for both stages: its error names it
        return _build(TrainConfig, {**params, "precision": self.precision, **extra}, prefix="finetune_")

    def _checked_settings(self, finetune_optional: bool = False,
                          **finetune) -> tuple[PretrainConfig, TrainConfig | None]:
        """(pretraining config, fine-tuning config), every parameter checked before any data is looked at or any
        fitted attribute changes: a fit refused for a bad parameter leaves a fitted estimator as it was. The
        fine-tuning settings are checked even where they go unused (`finetune_optional` and finetune_epochs=0:
        the config is then None), so a bad value is found at once rather than when a search reaches a grid point
        that uses it. `finetune`: fine-tuning settings that are not TrainConfig fields of the estimator
        (the classifier's patience)."""
        pretrain_cfg = self._pretrain_config()
        try:
            pretrain_cfg.check_layers(self._n_layers())
        except ValueError as err:
            raise ValueError(str(err).removeprefix("pretrain.")) from None
        skip = finetune_optional and self.finetune_epochs == 0 and not isinstance(self.finetune_epochs, bool)
        finetune_cfg = self._finetune_config(**finetune, **({"epochs": 1} if skip else {}))
        resolve_device(self.device)
        _check_random_state(self.random_state)
        return pretrain_cfg, None if skip else finetune_cfg

    def _pretrain(self, X, cfg, seed, X_val=None) -> tuple[StackedEncoder, list]:
        return greedy_pretrain(X, self.sizes, cfg, X_val=X_val, seed=seed, device=self.device,
                               progress=bool(self.verbose), **self._conv())

    def _conv(self) -> dict:
        """The conv layers and the image shape they read, checked (nothing without conv layers)."""
        if self.conv is None or (isinstance(self.conv, (list, tuple)) and len(self.conv) == 0):
            return {}   # anything else but a list is refused by conv_specs, naming conv
        specs = conv_specs(self.conv)
        if self.image_shape is None:
            raise ValueError("conv layers need image_shape=(height, width) or (channels, height, width): the "
                             "shape of the images that each row of X holds")
        image_shape3(self.image_shape)      # a ValueError naming image_shape, before anything is built
        return {"conv": specs, "image_shape": tuple(self.image_shape)}

    def _n_layers(self) -> int:
        return len(self._conv().get("conv", ())) + len(check_sizes(self.sizes))

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """A fit that raises leaves the estimator as it was: validate_data sets n_features_in_ and
        feature_names_in_ before training starts, so a failed refit would otherwise leave a fitted model
        beside the new data's attributes, and it would refuse the data it was trained on."""
        saved = {k: v for k, v in vars(self).items() if _is_fitted_attribute(k)}
        try:
            yield
        except BaseException:
            for key in [k for k in vars(self) if _is_fitted_attribute(k)]:
                delattr(self, key)
            vars(self).update(saved)
            raise

    def _validate(self, X) -> torch.Tensor:
        check_is_fitted(self)
        return _to_tensor(validate_data(self, X, reset=False, dtype=np.float32))


class StackedAutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _StackedAutoencoderBase):
    """Features from a stack of autoencoders trained greedily, one layer at a time.

    Each layer is a shallow autoencoder trained to reconstruct the codes of the layer
    below it (Hinton & Salakhutdinov, 2006; Bengio et al., 2007), optionally from a
    corrupted copy (denoising, Vincent et al., 2008). The trained encoders, stacked, map X
    to codes; optionally the unrolled deep autoencoder is then fine-tuned on reconstruction.

    Inputs are expected scaled to [0, 1] (e.g. ``MinMaxScaler``, or pixels / 255) for the
    sigmoid + cross-entropy first layer that ``output_activation="auto"`` picks for such
    data; other data get a linear decoder with squared error.

    Parameters
    ----------
    sizes : sequence of int, default=(512, 256)
        Hidden layer widths, input side first; the top codes have ``sizes[-1]`` columns.
    conv : list of dict or None, default=None
        Convolutional layers below the dense ones, input side first, each a dict such as
        ``{"channels": 32, "kernel": 3, "stride": 2, "padding": "same", "pool": False}``
        (all but ``channels`` optional). Each is pretrained greedily as a shallow conv
        autoencoder (Masci et al., 2011); per-layer parameter lists count conv and dense
        layers together. Needs ``image_shape``.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(channels, height, width)`` of the image each row of X
        holds (rows are flattened images, channels first); used by ``conv`` only.
    activation : str or list of str, default="sigmoid"
        Encoder units: "sigmoid", "tanh", "relu", "linear", "leaky_relu", "elu" or
        "softplus". This and every pretraining parameter below, down to ``contractive``,
        also accepts a list with one value per layer.
    output_activation : {"auto", "sigmoid", "linear", ...} or list, default="auto"
        Decoder output units of each layer: "sigmoid" (cross-entropy loss, inputs in
        [0, 1]) or any encoder activation (squared error). "auto": for layer 1, sigmoid
        when the data lie in [0, 1], else linear; above it, the units of the layer below,
        whose codes the decoder rebuilds.
    epochs : int or list of int, default=30
        Passes over the data per layer in greedy pretraining.
    lr : float or list of float, default=3e-3
        Pretraining learning rate.
    batch_size : int or list of int, default=64
        Pretraining minibatch size.
    optimizer : {"adam", "sgd"} or list, default="adam"
        Pretraining optimizer.
    momentum : float or list of float, default=0.9
        SGD momentum (unused by Adam).
    weight_decay : float or list of float, default=0.0
        L2 penalty on all parameters, applied by the optimizer.
    schedule : {"constant", "cosine", "linear"} or list, default="constant"
        Learning-rate schedule over the epochs of each layer.
    corruption : {"none", "mask", "gaussian", "salt_pepper"} or list, default="mask"
        Input corruption of each layer in pretraining; active only when ``noise > 0``.
    noise : float in [0, 1) or list of float, default=0.2
        Corruption level: the fraction of inputs hit ("mask", "salt_pepper") or the
        standard deviation ("gaussian"). 0.0 trains plain autoencoders, as does
        corruption="none", whatever the noise.
    tied : bool or list of bool, default=False
        Decoders use the transposed encoder weight instead of a weight of their own.
    sparsity : float or list of float, default=0.0
        Weight of the KL sparsity penalty on the mean code activation (sigmoid units only).
    sparsity_target : float in (0, 1) or list of float, default=0.05
        Target mean activation of the sparsity penalty.
    contractive : float or list of float, default=0.0
        Weight of the contractive penalty, the squared Frobenius norm of the encoder
        Jacobian (Rifai et al., 2011).
    finetune_epochs : int, default=0
        Epochs of reconstruction fine-tuning of the unrolled deep autoencoder (encoders
        1..K, then decoders K..1) after pretraining; 0 skips fine-tuning.
    finetune_lr : float, default=1e-3
        Fine-tuning learning rate.
    finetune_batch_size : int, default=64
        Fine-tuning minibatch size.
    finetune_optimizer : {"adam", "sgd"}, default="adam"
        Fine-tuning optimizer.
    finetune_momentum : float, default=0.9
        Fine-tuning SGD momentum.
    finetune_weight_decay : float, default=0.0
        Fine-tuning L2 penalty.
    finetune_schedule : {"constant", "cosine", "linear"}, default="constant"
        Fine-tuning learning-rate schedule.
    output : "top", "all" or int, default="top"
        What ``transform`` returns: the codes of the top layer, the codes of layer
        ``output`` (1-based), or the codes of every layer side by side, layer 1 first.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch order and corruption through generators the
        estimator owns; the global NumPy and torch generators are never touched. An int
        gives identical results on every CPU run (the core's ``seed``); None draws a fresh
        seed from the operating system.
    device : str, default="cpu"
        Torch device to train and encode on: "cpu", "cuda", "mps", or "auto" (cuda, then
        mps, then cpu).
    precision : {"fp32", "bf16"}, default="fp32"
        "bf16" runs the training steps (pretraining and fine-tuning) under bfloat16
        autocast; weights and optimizer state stay fp32. Faster on GPUs and on CPUs with
        AMX, slower on CPUs without bfloat16 units.
    verbose : bool, default=False
        Show a progress bar per layer and per fine-tuning run.

    Attributes
    ----------
    encoder_ : stacked_ae.StackedEncoder
        The trained encoder (a torch module). ``encoder_.save(path)`` writes a checkpoint
        that ``stacked_ae.encode.encode_file`` and ``sae encode`` read.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Column names seen in ``fit``, only when X was a DataFrame with string column names.
    history_ : dict
        ``"pretrain"``: one list of per-epoch dicts (``epoch``, ``lr``, ``train_loss``, ...)
        per layer; ``"finetune"``: the per-epoch dicts of fine-tuning (empty without it).

    See Also
    --------
    StackedAutoencoderClassifier : The same stack fine-tuned with a classifier head.
    sklearn.neural_network.BernoulliRBM : Features from one restricted Boltzmann machine.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from stacked_ae.estimators import StackedAutoencoderTransformer
    >>> X = load_digits().data / 16.0
    >>> sae = StackedAutoencoderTransformer(sizes=(48, 16), epochs=2, random_state=0)
    >>> sae.fit_transform(X).shape
    (1797, 16)
    >>> sae.set_params(output="all").transform(X).shape
    (1797, 64)
    >>> sae.inverse_transform(sae.set_params(output="top").transform(X)).shape
    (1797, 64)
    """

    def __init__(self, sizes=(512, 256), *, conv=None, image_shape=None, activation="sigmoid",
                 output_activation="auto", epochs=30, lr=3e-3,
                 batch_size=64, optimizer="adam", momentum=0.9, weight_decay=0.0, schedule="constant",
                 corruption="mask", noise=0.2, tied=False, sparsity=0.0, sparsity_target=0.05, contractive=0.0,
                 finetune_epochs=0, finetune_lr=1e-3, finetune_batch_size=64, finetune_optimizer="adam",
                 finetune_momentum=0.9, finetune_weight_decay=0.0, finetune_schedule="constant", output="top",
                 random_state=None, device="cpu", precision="fp32", verbose=False):
        self.sizes, self.activation, self.output_activation = sizes, activation, output_activation
        self.conv, self.image_shape = conv, image_shape
        self.epochs, self.lr, self.batch_size, self.optimizer = epochs, lr, batch_size, optimizer
        self.momentum, self.weight_decay, self.schedule = momentum, weight_decay, schedule
        self.corruption, self.noise, self.tied = corruption, noise, tied
        self.sparsity, self.sparsity_target, self.contractive = sparsity, sparsity_target, contractive
        self.finetune_epochs, self.finetune_lr, self.finetune_batch_size = finetune_epochs, finetune_lr, \
            finetune_batch_size
        self.finetune_optimizer, self.finetune_momentum = finetune_optimizer, finetune_momentum
        self.finetune_weight_decay, self.finetune_schedule = finetune_weight_decay, finetune_schedule
        self.output, self.random_state, self.device, self.verbose = output, random_state, device, verbose
        self.precision = precision

    def fit(self, X, y=None):
        """Pretrain the stack on X (then fine-tune the unrolled autoencoder if asked); returns self.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training data, ideally scaled to [0, 1].
        y : None
            Ignored.
        """
        with self._all_or_nothing():
            return self._fit(X)

    def _fit(self, X):
        check_output(self.output, self._n_layers())
        pretrain_cfg, finetune_cfg = self._checked_settings(finetune_optional=True)
        X = _to_tensor(validate_data(self, X, dtype=np.float32))
        seed = _seed(self.random_state)
        self.encoder_, pretrain_history = self._pretrain(X, pretrain_cfg, seed)
        finetune_history = [] if finetune_cfg is None else fit_autoencoder(
            self.encoder_.unroll(), X, finetune_cfg, seed=seed, stage="finetune autoencoder",
            progress=bool(self.verbose))
        self.history_ = {"pretrain": pretrain_history, "finetune": finetune_history}
        return self

    def transform(self, X):
        """Codes of X chosen by ``output``: ndarray of float32, (n_samples, n_codes)."""
        X = self._validate(X)   # checks fitted first: NotFittedError, not an AttributeError
        return encode_layers(self.encoder_, X, self.output).numpy()

    def inverse_transform(self, X):
        """Reconstruct inputs from top-layer codes through the decoders: (n_samples, n_features_in_)."""
        check_is_fitted(self)
        codes = check_array(X, dtype=np.float32, input_name="X")
        width = self.encoder_.sizes[-1]
        if codes.shape[1] != width:
            gives = "" if self.output == "top" else f"; transform with output={self.output!r} gives " \
                f"{self._n_features_out}"
            raise ValueError(f"X has {codes.shape[1]} features, but inverse_transform takes top-layer codes "
                             f"({width} columns){gives}")
        return decode_codes(self.encoder_, _to_tensor(codes)).numpy()

    def score(self, X, y=None):
        """Negative mean squared reconstruction error per element (greater is better).

        X goes through every encoder and back through every decoder; the score is
        ``-mean((X - reconstruction) ** 2)`` over all samples and features, whatever the
        training loss (cross-entropy or squared error) was.
        """
        X = self._validate(X)
        recon = decode_codes(self.encoder_, self.encoder_.encode(X))
        return -float((recon.double() - X.double()).pow(2).mean())

    @property
    def _n_features_out(self) -> int:
        check_output(self.output, len(self.encoder_.sizes))
        sizes = self.encoder_.sizes
        return sum(sizes) if self.output == "all" else sizes[-1] if self.output == "top" else sizes[self.output - 1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]   # torch computes in float32
        return tags


class StackedAutoencoderClassifier(ClassifierMixin, _StackedAutoencoderBase):
    """A classifier whose hidden layers are pretrained greedily as autoencoders, then fine-tuned.

    ``fit`` pretrains a stack of autoencoders on X as ``StackedAutoencoderTransformer``
    does (or, with ``init="random"``, builds the same network with fresh weights), adds a
    linear softmax head, and fine-tunes the whole network with cross-entropy on (X, y).
    With ``validation_fraction``, a stratified part of the data is held out to pick the
    best epoch and, with ``finetune_patience``, to stop early.

    Parameters
    ----------
    sizes : sequence of int, default=(512, 256)
        Hidden layer widths, input side first.
    conv : list of dict or None, default=None
        Convolutional layers below the dense ones, input side first, each a dict such as
        ``{"channels": 32, "kernel": 3, "stride": 2, "padding": "same", "pool": False}``
        (all but ``channels`` optional). Each is pretrained greedily as a shallow conv
        autoencoder (Masci et al., 2011); per-layer parameter lists count conv and dense
        layers together. Needs ``image_shape``.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(channels, height, width)`` of the image each row of X
        holds (rows are flattened images, channels first); used by ``conv`` only.
    activation : str or list of str, default="sigmoid"
        Encoder units: "sigmoid", "tanh", "relu", "linear", "leaky_relu", "elu" or
        "softplus". This and every pretraining parameter below, down to ``contractive``,
        also accepts a list with one value per layer.
    output_activation : {"auto", "sigmoid", "linear", ...} or list, default="auto"
        Decoder output units of each layer in pretraining: "sigmoid" (cross-entropy, inputs
        in [0, 1]) or any encoder activation (squared error). "auto": for layer 1, sigmoid
        when the data lie in [0, 1], else linear; above it, the units of the layer below.
    epochs : int or list of int, default=30
        Passes over the data per layer in greedy pretraining.
    lr : float or list of float, default=3e-3
        Pretraining learning rate.
    batch_size : int or list of int, default=64
        Pretraining minibatch size.
    optimizer : {"adam", "sgd"} or list, default="adam"
        Pretraining optimizer.
    momentum : float or list of float, default=0.9
        SGD momentum (unused by Adam).
    weight_decay : float or list of float, default=0.0
        L2 penalty in pretraining, applied by the optimizer.
    schedule : {"constant", "cosine", "linear"} or list, default="constant"
        Pretraining learning-rate schedule over the epochs of each layer.
    corruption : {"none", "mask", "gaussian", "salt_pepper"} or list, default="mask"
        Input corruption of each layer in pretraining; active only when ``noise > 0``.
    noise : float in [0, 1) or list of float, default=0.2
        Corruption level; 0.0 (or corruption="none") trains plain autoencoders.
    tied : bool or list of bool, default=False
        Decoders use the transposed encoder weight in pretraining.
    sparsity : float or list of float, default=0.0
        Weight of the KL sparsity penalty (sigmoid units only).
    sparsity_target : float in (0, 1) or list of float, default=0.05
        Target mean activation of the sparsity penalty.
    contractive : float or list of float, default=0.0
        Weight of the contractive (encoder Jacobian) penalty.
    finetune_epochs : int, default=100
        Epochs of supervised fine-tuning of encoder and head (at most: see ``finetune_patience``).
    finetune_lr : float, default=1e-3
        Fine-tuning learning rate.
    finetune_batch_size : int, default=64
        Fine-tuning minibatch size.
    finetune_optimizer : {"adam", "sgd"}, default="adam"
        Fine-tuning optimizer.
    finetune_momentum : float, default=0.9
        Fine-tuning SGD momentum.
    finetune_weight_decay : float, default=0.0
        Fine-tuning L2 penalty.
    finetune_schedule : {"constant", "cosine", "linear"}, default="constant"
        Fine-tuning learning-rate schedule.
    finetune_patience : int or None, default=20
        Stop fine-tuning after this many epochs without a better validation score. None, or
        no validation data (``validation_fraction=None``), trains all ``finetune_epochs``.
    finetune_dropout : float in [0, 1), default=0.0
        Fine-tuning drops each hidden unit with this probability (inverted dropout; masks from
        the estimator's own generator). Prediction uses the whole network.
    finetune_input_dropout : float in [0, 1), default=0.0
        The same for each input feature.
    init : {"pretrained", "random"}, default="pretrained"
        Starting weights of the hidden layers: greedy pretraining, or fresh Glorot-uniform
        weights from the same layer constructor (the baseline arm; no pretraining).
    validation_fraction : float in (0, 1) or None, default=0.1
        Fraction of the training data held out, stratified by class (at least one row per
        class; every class needs two rows). Pretraining and fine-tuning each restore the epoch with the best
        validation score (fine-tuning: lowest error, ties broken by loss). None uses all
        data for training.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order, corruption and the validation split through
        generators the estimator owns; the global NumPy and torch generators are never
        touched. None draws a fresh seed from the operating system.
    device : str, default="cpu"
        "cpu", "cuda", "mps", or "auto" (cuda, then mps, then cpu).
    precision : {"fp32", "bf16"}, default="fp32"
        "bf16" runs the training steps (pretraining and fine-tuning) under bfloat16
        autocast; weights and optimizer state stay fp32. Faster on GPUs and on CPUs with
        AMX, slower on CPUs without bfloat16 units.
    verbose : bool, default=False
        Show a progress bar per layer and for fine-tuning.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels as given in ``y`` (strings included), sorted.
    model_ : stacked_ae.Classifier
        The fine-tuned network: ``encoder_`` followed by a linear head giving logits.
    encoder_ : stacked_ae.StackedEncoder
        The fine-tuned hidden layers (the same modules as ``model_.encoder``).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Column names seen in ``fit``, only when X was a DataFrame with string column names.
    history_ : dict
        ``"pretrain"``: one list of per-epoch dicts per layer (empty for ``init="random"``);
        ``"finetune"``: per-epoch dicts with ``train_loss`` and, with validation,
        ``val_loss``, ``val_error``, ``val_accuracy`` and ``best``.

    See Also
    --------
    StackedAutoencoderTransformer : The pretrained stack as a feature transformer.
    sklearn.neural_network.MLPClassifier : The same network shape, trained from random weights.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from stacked_ae.estimators import StackedAutoencoderClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StackedAutoencoderClassifier(sizes=(48, 32), epochs=2, finetune_epochs=5, random_state=0)
    >>> clf.fit(X / 16.0, y).predict_proba(X[:3] / 16.0).shape
    (3, 10)
    >>> clf.classes_
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    def __init__(self, sizes=(512, 256), *, conv=None, image_shape=None, activation="sigmoid",
                 output_activation="auto", epochs=30, lr=3e-3,
                 batch_size=64, optimizer="adam", momentum=0.9, weight_decay=0.0, schedule="constant",
                 corruption="mask", noise=0.2, tied=False, sparsity=0.0, sparsity_target=0.05, contractive=0.0,
                 finetune_epochs=100, finetune_lr=1e-3, finetune_batch_size=64, finetune_optimizer="adam",
                 finetune_momentum=0.9, finetune_weight_decay=0.0, finetune_schedule="constant",
                 finetune_patience=20, finetune_dropout=0.0, finetune_input_dropout=0.0, init="pretrained",
                 validation_fraction=0.1, random_state=None, device="cpu", precision="fp32", verbose=False):
        self.sizes, self.activation, self.output_activation = sizes, activation, output_activation
        self.conv, self.image_shape = conv, image_shape
        self.epochs, self.lr, self.batch_size, self.optimizer = epochs, lr, batch_size, optimizer
        self.momentum, self.weight_decay, self.schedule = momentum, weight_decay, schedule
        self.corruption, self.noise, self.tied = corruption, noise, tied
        self.sparsity, self.sparsity_target, self.contractive = sparsity, sparsity_target, contractive
        self.finetune_epochs, self.finetune_lr, self.finetune_batch_size = finetune_epochs, finetune_lr, \
            finetune_batch_size
        self.finetune_optimizer, self.finetune_momentum = finetune_optimizer, finetune_momentum
        self.finetune_weight_decay, self.finetune_schedule = finetune_weight_decay, finetune_schedule
        self.finetune_patience, self.init, self.validation_fraction = finetune_patience, init, validation_fraction
        self.finetune_dropout, self.finetune_input_dropout = finetune_dropout, finetune_input_dropout
        self.random_state, self.device, self.verbose = random_state, device, verbose
        self.precision = precision

    def fit(self, X, y):
        """Pretrain (or initialise) the hidden layers, add a head and fine-tune on (X, y); returns self.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training data, ideally scaled to [0, 1].
        y : array-like of shape (n_samples,)
            Class labels of any type numpy can sort (ints, strings, ...).
        """
        with self._all_or_nothing():
            return self._fit(X, y)

    def _fit(self, X, y):
        _, finetune_cfg = self._checked_settings(patience=self.finetune_patience)   # before the data or attributes
        check_dropout("finetune_dropout", self.finetune_dropout)
        check_dropout("finetune_input_dropout", self.finetune_input_dropout)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
        vf = self.validation_fraction
        if vf is not None and not (is_real(vf) and 0 < vf < 1):
            raise ValueError(f"validation_fraction must be a float in (0, 1) or None, got {vf!r}")
        if vf is None:      # patience needs a validation part: without one, training runs its epochs
            finetune_cfg = dataclasses.replace(finetune_cfg, patience=None)
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        classes, y = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has 1 class ({classes[0]!r}); a classifier needs at least 2 classes")
        seed = _seed(self.random_state)
        X, y, X_val, y_val = self._split(X, y, seed)
        encoder, pretrain_history = self._initial_encoder(X, X_val, seed)
        model = encoder.classifier(len(classes), seed=seed, dropout=self.finetune_dropout,
                                   input_dropout=self.finetune_input_dropout)
        finetune_history = fit_classifier(model, X, y, finetune_cfg, X_val=X_val, y_val=y_val, seed=seed,
                                          stage="finetune classifier", progress=bool(self.verbose))
        self.classes_, self.model_, self.encoder_ = classes, model, model.encoder
        self.history_ = {"pretrain": pretrain_history, "finetune": finetune_history}
        return self

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits), columns in the order of ``classes_``."""
        X = self._validate(X).to(next(self.model_.parameters()).device)
        return torch.softmax(predict_logits(self.model_, X).double(), dim=1).cpu().numpy()

    def predict(self, X):
        """The most probable class of each sample, as a label from ``classes_``."""
        proba = self.predict_proba(X)   # checks fitted and X first
        return self.classes_[proba.argmax(axis=1)]

    def _split(self, X, y, seed):
        """(X, y, X_val, y_val) as tensors; the validation part is None without validation_fraction."""
        if self.validation_fraction is None:
            return _to_tensor(X), _to_tensor(y, torch.int64), None, None
        counts = np.bincount(y)
        n_val = max(math.ceil(self.validation_fraction * len(y)), len(counts))   # at least one row per class
        if counts.min() < 2 or len(y) - n_val < len(counts):
            raise ValueError(f"validation_fraction={self.validation_fraction} cannot hold out a stratified part "
                             f"of {len(y)} rows in {len(counts)} classes (smallest class: {counts.min()} rows): "
                             f"each class needs a row on both sides; give more data or validation_fraction=None")
        X, X_val, y, y_val = train_test_split(X, y, test_size=n_val, stratify=y, random_state=seed % 2**32)
        return _to_tensor(X), _to_tensor(y, torch.int64), _to_tensor(X_val), _to_tensor(y_val, torch.int64)

    def _initial_encoder(self, X, X_val, seed) -> tuple[StackedEncoder, list]:
        """Greedily pretrained layers, or fresh ones from the same constructor and settings."""
        cfg = self._pretrain_config()
        if self.init == "pretrained":
            return self._pretrain(X, cfg, seed, X_val)
        encoder = StackedEncoder.random(X.shape[1], check_sizes(self.sizes), seed=seed, config=cfg, **self._conv())
        return encoder.to(resolve_device(self.device)), []
