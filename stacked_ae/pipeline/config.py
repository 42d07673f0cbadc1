"""Pipeline configuration: typed, frozen dataclasses loaded from TOML, validated once.

`load_config("pipelines/quickstart.toml", overrides=["pretrain.epochs=5"])` returns a
`PipelineConfig`. Tables map one-to-one onto the dataclasses below; unknown keys, wrong
types and impossible values raise `ConfigError` naming the dotted key before any training.
"""
import copy
import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Union

from ..core.conv import ConvSpec, map_shapes
from ..core.data import (
    IMAGE_SHAPES,
    KNOWN_DATASETS,
    LABELED_SUFFIXES,
    USER_SUFFIXES,
    Dataset,
    SplitSizeError,
    load_dataset,
)
from ..core.layers import ACTIVATIONS
from ..core.model import check_dropout
from ..core.pretrain_config import PretrainConfig, check_image_shape
from ..core.train import TrainConfig

TASKS = ("classification", "reconstruction")
ARMS = {"classification": ("pretrained", "random", "frozen", "logreg", "pca-logreg"),
        "reconstruction": ("pretrained", "random", "pca")}


MAX_SEED = 2**32 - 1     # NumPy's and scikit-learn's seeds are 32-bit


class ConfigError(ValueError):
    """A pipeline file or override is invalid; the message names the dotted key or the file."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"            # digits | mnist | fashion-mnist | a .npz/.npy/.csv/.parquet path
    root: str | None = None            # data root for mnist/fashion-mnist (else $STACKED_AE_DATA)
    val_size: int | float = 0.1        # fraction (< 1) or count, drawn from the training images
    test_size: int | float = 0.25      # digits and user files only; MNIST keeps its 10,000 test images
    split_seed: int = 0                # the train/val/test split is the same for every seed
    budgets: tuple[int | str, ...] = ("all",)   # labels per class for fine-tuning; "all" = every label
    val_per_class: int | str = "budget"   # validation labels per class for model selection: "budget" (as many
    #                                       as the training budget), a count, or "all" (the whole split)
    label_column: str = "label"        # user tables: the column holding the class
    download: bool = False             # let torchvision download mnist/fashion-mnist into root

    def __post_init__(self):
        if self.dataset.lower().endswith(".npy"):
            raise ConfigError(f"data.dataset: {self.dataset!r} is a .npy file, one array of features with no labels; "
                              f"a pipeline needs labels: a .npz with arrays X and y, or a .csv/.parquet with a label "
                              f"column (data.label_column)")
        if self.dataset not in KNOWN_DATASETS and not self.dataset.lower().endswith(LABELED_SUFFIXES):
            raise ConfigError(f"data.dataset must be one of {', '.join(KNOWN_DATASETS)} or a file ending in "
                              f"{', '.join(LABELED_SUFFIXES)}; got {self.dataset!r}")
        for key, needs in (("val_size", "model selection and early stopping read it"),
                           ("test_size", "the test error is measured on it")):
            v = getattr(self, key)
            if v <= 0 or (isinstance(v, float) and v >= 1):
                raise ConfigError(f"data.{key} must be a fraction in (0, 1) or a count >= 1 ({needs}), got {v!r}")
        if self.split_seed < 0 or self.split_seed > MAX_SEED:
            raise ConfigError(f"data.split_seed must be an integer in [0, {MAX_SEED}], got {self.split_seed!r}")
        if not self.budgets:
            raise ConfigError("data.budgets must list at least one label budget (e.g. [10, 100, \"all\"])")
        for b in self.budgets:
            if b != "all" and (isinstance(b, str) or b < 1):
                raise ConfigError(f"data.budgets entries must be positive integers (labels per class) or "
                                  f"\"all\", got {b!r}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError(f"data.budgets has duplicates: {list(self.budgets)}")
        v = self.val_per_class
        if v not in ("budget", "all") and (isinstance(v, (str, bool)) or v < 1):
            raise ConfigError(f"data.val_per_class must be \"budget\" (as many validation labels per class as "
                              f"training labels), \"all\" (the whole validation split) or a positive count; "
                              f"got {v!r}")

    def load(self, data_root=None) -> Dataset:
        """The dataset these settings name, split as they say (`data_root` before `root`; unchecked: see
        `runner.check_data`, which checks the label budgets against it)."""
        try:
            return load_dataset(self.dataset, data_root if data_root is not None else self.root,
                                val_size=self.val_size, test_size=self.test_size, seed=self.split_seed,
                                download=self.download, label_column=self.label_column)
        except SplitSizeError as err:   # the library names its arguments; a pipeline names its keys
            raise ConfigError(re.sub(r"\b(val_size|test_size)\b", r"data.\1", str(err))) from None


@dataclass(frozen=True)
class ModelConfig:
    sizes: tuple[int, ...] = (48, 32, 16)       # dense widths, bottom to top (after any conv layers)
    activation: str | tuple[str, ...] = "sigmoid"  # encoder units, one for all or one per layer (conv + dense)
    output_activation: str | tuple[str, ...] = "auto"  # decoder outputs; auto matches the data range
    conv: tuple[dict, ...] = ()        # conv layers below the dense ones: {channels, kernel, stride, padding, pool}

    def __post_init__(self):
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ConfigError(f"model.sizes must be a non-empty list of positive widths, got {list(self.sizes)}")
        specs = []
        for k, spec in enumerate(self.conv):
            try:
                specs.append(ConvSpec.from_dict(spec, f"model.conv[{k}]").to_dict())
            except ValueError as err:
                raise ConfigError(str(err)) from None
        object.__setattr__(self, "conv", tuple(specs))   # every field spelled out: one spelling, one fingerprint
        acts = self.activation if isinstance(self.activation, tuple) else (self.activation,)
        for a in acts:
            if a not in ACTIVATIONS:
                raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}; got {a!r}")
        n_layers = self.n_layers
        for key in ("activation", "output_activation"):
            v = getattr(self, key)
            if isinstance(v, tuple) and len(v) != n_layers:
                layers = (f"{len(self.conv)} conv + {len(self.sizes)} dense" if self.conv else
                          f"model.sizes has {len(self.sizes)}")
                raise ConfigError(f"model.{key} has {len(v)} entries but {layers} layers; give one value or "
                                  f"exactly {n_layers}")

    @property
    def n_layers(self) -> int:
        """Conv and dense layers together: what per-layer lists count."""
        return len(self.conv) + len(self.sizes)

    def check_image_shape(self, image_shape, n_features: int, source: str) -> None:
        """Conv layers fit images of `image_shape`, or ConfigError naming `source` and the culprit key."""
        if not self.conv:
            return
        if not image_shape:   # the library's hint (image_shape=...) is no key of a pipeline file
            raise ConfigError(f"model.conv: {source} has no image shape (rows of {n_features} features); conv "
                              f"layers need images: a .npz whose X is (n, height, width) or (n, channels, height, "
                              f"width), digits, mnist or fashion-mnist; or drop model.conv")
        try:
            shape = check_image_shape(image_shape, n_features)
        except ValueError as err:
            raise ConfigError(f"model.conv: {source}: {err}") from None
        try:
            map_shapes(self.conv, shape, "model.conv")
        except ValueError as err:
            raise ConfigError(str(err)) from None


PerLayerFloat = float | tuple[float, ...]
PerLayerInt = int | tuple[int, ...]
PerLayerStr = str | tuple[str, ...]
PerLayerBool = bool | tuple[bool, ...]


def per_layer_keys(cls) -> frozenset[str]:
    """The keys of a section that take one value for every layer or a list of one per layer."""
    return frozenset(k for k, hint in _hints(cls).items()
                     if hint in (PerLayerFloat, PerLayerInt, PerLayerStr, PerLayerBool))


@dataclass(frozen=True)
class PretrainSection:
    epochs: PerLayerInt = 10           # passes over the training images, per layer
    lr: PerLayerFloat = 1e-3
    batch_size: PerLayerInt = 64
    optimizer: PerLayerStr = "adam"    # adam | sgd (momentum)
    momentum: PerLayerFloat = 0.9
    weight_decay: PerLayerFloat = 0.0
    schedule: PerLayerStr = "constant"
    precision: PerLayerStr = "fp32"    # fp32 | bf16: training steps under bfloat16 autocast
    tied: PerLayerBool = False         # decoder uses the encoder weight transposed
    corruption: PerLayerStr = "mask"   # none | mask | gaussian | salt_pepper
    noise: PerLayerFloat = 0.0         # corruption level in [0, 1); 0 = plain autoencoder
    sparsity: PerLayerFloat = 0.0      # weight of the KL sparsity penalty
    sparsity_target: PerLayerFloat = 0.05
    contractive: PerLayerFloat = 0.0   # weight of the contractive (Jacobian) penalty


@dataclass(frozen=True)
class FinetuneSection:
    epochs: int = 30                   # at most; early stopping may end sooner
    lr: tuple[float, ...] = (1e-3,)    # grid: each arm keeps its best value on validation
    batch_size: int = 32
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    patience: int | None = 10          # epochs without validation improvement; none = train all epochs
    epoch_size: int = 0                # examples per epoch at least (small label budgets are cycled); 0 = one pass
    precision: str = "fp32"            # fp32 | bf16: training steps under bfloat16 autocast
    dropout: float = 0.0               # drop probability of each hidden unit in training (pretrained, random)
    input_dropout: float = 0.0         # drop probability of each input in training (pretrained, random)
    probe_lr: tuple[float, ...] = ()   # the frozen arm's grid (a linear probe: the head alone trains, on fixed
    #                                    codes, and its best rate lies higher); empty: the same grid as lr
    extend: int = 0                    # while a network arm's best rate is the lowest or highest tried, try the
    #                                    next one beyond it (the grid's step at that end), at most this many per end

    def __post_init__(self):
        if not self.lr:
            raise ConfigError("finetune.lr must list at least one learning rate")
        if isinstance(self.extend, bool) or not isinstance(self.extend, int) or self.extend < 0:
            raise ConfigError(f"finetune.extend must be an integer >= 0 (0: the grid as given), got {self.extend!r}")
        for name in ("lr", "probe_lr"):
            grid = getattr(self, name) or ()
            if len(set(grid)) != len(grid):   # a rate twice would be trained once and recorded twice
                raise ConfigError(f"finetune.{name} has duplicates: {list(grid)}")
        for name in ("lr", "probe_lr"):
            try:   # the library's checks, their messages prefixed with the section
                check_dropout("dropout", self.dropout)
                check_dropout("input_dropout", self.input_dropout)
                for lr in getattr(self, name):
                    self.train_config(lr)
            except ValueError as err:
                raise ConfigError(f"finetune.{err}".replace("finetune.lr ", f"finetune.{name} ")) from None

    def grid(self, arm: str) -> tuple[float, ...]:
        """The learning rates a network arm tries: probe_lr for the frozen arm where given, else lr."""
        return self.probe_lr if arm == "frozen" and self.probe_lr else self.lr

    def train_config(self, lr: float) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=lr, batch_size=self.batch_size, optimizer=self.optimizer,
                           momentum=self.momentum, weight_decay=self.weight_decay, schedule=self.schedule,
                           patience=self.patience, epoch_size=self.epoch_size, precision=self.precision)


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunSection:
    """How the stages run; never part of a stage's fingerprint (the executor does not change a number)."""
    executor: str = "local"            # local (in process) | ray (worker processes, or a cluster)
    workers: int = 0                   # ray: worker processes to start on this machine; 0 = one per core
    address: str = ""                  # ray: join this cluster ("auto", or host:port) instead of starting one
    gpus_per_stage: float = 0.0        # ray: GPUs (or a fraction of one) per stage
    shared_folder: str | bool = "auto"  # ray: the workers read and write the run folder's partial/, so a stopped
                                        # stage resumes inside itself; auto: yes for workers started here

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError(f"run.executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r}")
        if self.workers < 0:
            raise ConfigError(f"run.workers must be >= 0 (0: one per core), got {self.workers!r}")
        if not 0.0 <= self.gpus_per_stage:
            raise ConfigError(f"run.gpus_per_stage must be >= 0, got {self.gpus_per_stage!r}")
        if self.shared_folder not in ("auto", True, False):
            raise ConfigError("run.shared_folder must be \"auto\", true or false (whether Ray's workers see the run "
                              f"folder), got {self.shared_folder!r}")

    def shares_run_folder(self) -> bool:
        """Whether Ray's workers keep an unfinished stage's progress in the run folder: they must see it (the
        same filesystem). auto: yes when the run starts its own workers on this machine, no with an address."""
        return not self.address if self.shared_folder == "auto" else bool(self.shared_folder)


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "experiment"
    seeds: tuple[int, ...] = (0,)
    task: str = "classification"       # classification | reconstruction (Hinton & Salakhutdinov 2006)
    arms: tuple[str, ...] = ()          # empty: every arm of the task
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    run: RunSection = field(default_factory=RunSection)
    reference: dict = field(default_factory=dict)  # published figures and their source, for the report

    def __post_init__(self):
        if (not self.name or not self.name.isprintable() or self.name.startswith(".")
                or any(sep in self.name for sep in "/\\")):
            raise ConfigError(f"name must be a plain, non-empty folder name (printable, no slashes, not starting "
                              f"with '.'), got {self.name!r}")
        if (not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0
                or max(self.seeds) > MAX_SEED):
            raise ConfigError(f"seeds must be a non-empty list of distinct integers in [0, {MAX_SEED}], "
                              f"got {list(self.seeds)}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not self.arms:
            object.__setattr__(self, "arms", ARMS[self.task])
        for arm in self.arms:
            if arm not in ARMS[self.task]:
                raise ConfigError(f"arms: {arm!r} is not an arm of a {self.task} pipeline; "
                                  f"known: {', '.join(ARMS[self.task])}")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms has duplicates: {list(self.arms)}")
        if self.task == "reconstruction" and self.data.budgets != ("all",):
            raise ConfigError("data.budgets: reconstruction pipelines use no labels; leave budgets at [\"all\"]")
        shape = IMAGE_SHAPES.get(self.data.dataset)
        if self.model.conv and shape is not None:   # user files are checked once loaded (runner.check_data)
            self.model.check_image_shape(shape, shape[0] * shape[1], f"dataset {self.data.dataset!r}")
        try:
            self.pretrain_config()
        except ValueError as err:
            message = str(err)
            for key in ("activation", "output_activation"):   # these two live in [model]
                for end in (" ", "["):
                    message = message.replace(f"pretrain.{key}{end}", f"model.{key}{end}")
            raise ConfigError(message) from None
        _check_reference(self.reference)

    def pretrain_config(self) -> PretrainConfig:
        """The core PretrainConfig: [pretrain] plus the unit types from [model]."""
        cfg = PretrainConfig(**dataclasses.asdict(self.pretrain), activation=self.model.activation,
                             output_activation=self.model.output_activation)
        cfg.check_layers(self.model.n_layers)
        for k in range(len(self.model.conv)):
            if cfg.value("contractive", k):
                key = "contractive" + (f"[{k}]" if isinstance(cfg.contractive, tuple) else "")
                raise ValueError(f"pretrain.{key}: layer {k + 1} is a conv layer (model.conv[{k}]) and the "
                                 f"contractive penalty is defined for dense layers only; set it to 0 there")
        return cfg

    def to_dict(self) -> dict:
        settings = _plain(dataclasses.asdict(self))
        if not self.model.conv:   # dense pipelines keep the settings (and the fingerprints) they had
            del settings["model"]["conv"]
        if not self.finetune.probe_lr:   # likewise pipelines whose frozen arm shares the grid
            del settings["finetune"]["probe_lr"]
        if not self.finetune.extend:     # and pipelines whose grids are not extended
            del settings["finetune"]["extend"]
        return settings

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _check_reference(reference: dict, key: str = "reference") -> None:
    """Published figures are data: strings, numbers, and tables of them."""
    for k, v in reference.items():
        if not isinstance(k, str) or not _is_text(k):
            raise ConfigError(f"{key} keys must be strings, got {k!r}")
        if isinstance(v, str) and not _is_text(v):
            raise ConfigError(f"{key}.{k} must be valid Unicode text, got {v!r}")
        if isinstance(v, dict):
            _check_reference(v, f"{key}.{k}")
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ConfigError(f"{key}.{k} must be a string, a number or a table, got {v!r}")


def _is_text(s: str) -> bool:
    """False for strings that no file can hold (lone surrogates, which only arrive from Python, never from TOML)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain(value):
    """Tuples to lists, recursively (JSON/TOML friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- typed construction from plain data

SECTIONS = {"data": DataConfig, "model": ModelConfig, "pretrain": PretrainSection, "finetune": FinetuneSection,
            "run": RunSection}


def from_dict(raw: dict) -> PipelineConfig:
    """Build a PipelineConfig from plain data (a parsed TOML file), checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a pipeline must be a table of settings, got {type(raw).__name__}")
    _check_keys(raw, PipelineConfig, "")
    kwargs = {}
    for f in fields(PipelineConfig):
        if f.name not in raw:
            continue
        if f.name in SECTIONS:
            section = raw[f.name]
            if not isinstance(section, dict):
                raise ConfigError(f"{f.name} must be a table ([{f.name}]), got {section!r}")
            _check_keys(section, SECTIONS[f.name], f"{f.name}.")
            kwargs[f.name] = _build(SECTIONS[f.name], section, f"{f.name}.")
        elif f.name == "reference":
            if not isinstance(raw[f.name], dict):
                raise ConfigError(f"reference must be a table ([reference]), got {raw[f.name]!r}")
            kwargs[f.name] = raw[f.name]
        else:
            kwargs[f.name] = coerce(raw[f.name], _hints(PipelineConfig)[f.name], f.name)
    try:
        return PipelineConfig(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def _build(cls, values: dict, prefix: str):
    hints = _hints(cls)
    kwargs = {k: coerce(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{prefix.rstrip('.')}: {err}") from None


def _check_keys(values: dict, cls, prefix: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            where = f" in [{prefix.rstrip('.')}]" if prefix else ""
            raise ConfigError(f"unknown key {prefix + key!r}; known keys{where}: {', '.join(known)}")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_name(tp, plural: bool = False) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0], plural=True)}"
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a, plural) for a in typing.get_args(tp))
    names = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
             bool: ("true or false", "true/false values"), dict: ("a table", "tables"),
             type(None): ('"none"', '"none"')}
    return names[tp][plural] if tp in names else str(tp)


def coerce(value, tp, key: str):
    """Convert `value` to the declared type `tp`, or raise ConfigError naming `key`."""
    result = _try_coerce(value, tp)
    if result is _FAIL:
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    return result


_FAIL = object()


def _try_coerce(value, tp):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value == "none" and type(None) in args:
            return None
        # a scalar for a "scalar or list" field; a list for the list member
        for arg in sorted(args, key=lambda a: typing.get_origin(a) is tuple):
            result = _try_coerce(value, arg)
            if result is not _FAIL:
                return result
        return _FAIL
    if origin is tuple:
        item = typing.get_args(tp)[0]
        items = value if isinstance(value, (list, tuple)) else [value]   # a scalar means a list of one
        converted = [_try_coerce(v, item) for v in items]
        return _FAIL if any(c is _FAIL for c in converted) else tuple(converted)
    if tp is type(None):
        return None if value is None else _FAIL
    if tp is bool:
        return value if isinstance(value, bool) else _FAIL
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _FAIL
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return _FAIL
    if tp is str:
        return value if isinstance(value, str) else _FAIL
    if tp is dict:
        return value if isinstance(value, dict) else _FAIL
    raise TypeError(f"unsupported config type {tp!r}")


# ---------------------------------------------------------------- files and overrides

def parse_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None


def load_config(path, overrides: list[str] = ()) -> PipelineConfig:
    """Read a pipeline file, apply `key=value` overrides (dotted keys), validate, freeze."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")   # -sig: editors that save a byte-order mark
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read pipeline file ({err})") from None
    raw = parse_toml(text, str(path))
    _resolve_data_paths(raw, path.resolve().parent)   # absolute: config.json is the same from any directory
    if not overrides:
        try:
            return from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    try:
        from_dict(copy.deepcopy(raw))   # the file alone: its own errors are blamed on it
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for override in overrides:
        apply_override(raw, override)
    try:
        return from_dict(raw)
    except ConfigError as err:   # the file was fine: an override broke it
        raise ConfigError(f"--set {' --set '.join(overrides)}: {err}") from None


def _resolve_data_paths(raw: dict, folder: Path) -> None:
    """Relative `data.dataset` files and `data.root` in a pipeline file are relative to the file's folder (given
    as an absolute path), so the file runs the same, and records the same config.json, from any working directory
    (overrides stay relative to the working directory)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    dataset, root = data.get("dataset"), data.get("root")
    if isinstance(dataset, str) and dataset.lower().endswith(USER_SUFFIXES) and not Path(dataset).is_absolute():
        data["dataset"] = str(folder / dataset)
    if isinstance(root, str) and root and not Path(root).is_absolute():
        data["root"] = str(folder / root)


def apply_override(raw: dict, override: str) -> None:
    """Set a dotted key in the raw table from `key=value`; the value is read as TOML, else as a string."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key=value, e.g. pretrain.epochs=5")
    *parents, leaf = key.split(".")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if not isinstance(value, (str, list, dict)) and _text_key(parents, leaf):
        value = text.strip()   # name=2024 is the name "2024": a text setting takes the text as given
    if parents and parents[0] not in SECTIONS and parents[0] != "reference":
        raise ConfigError(f"override {key!r}: unknown section {parents[0]!r}; "
                          f"known: {', '.join([*SECTIONS, 'reference'])}")
    table = raw
    for part in parents:     # [reference] nests tables of its own: reference.test_error.pretrained = 1.2
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a table")
    table[leaf] = value


def _text_key(parents: list[str], leaf: str) -> bool:
    """Whether a dotted key names a setting that holds text only (a name, a path, a column): a number or a
    boolean given for it on the command line is that text."""
    if len(parents) > 1 or (parents and parents[0] not in SECTIONS):
        return False
    hint = _hints(SECTIONS[parents[0]] if parents else PipelineConfig).get(leaf)
    return hint in (str, str | None)


def dumps_toml(cfg: PipelineConfig) -> str:
    """The config as a TOML pipeline file (load_config of it gives back an equal config)."""
    data = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += _toml_table(section, values)
    return "\n".join(lines) + "\n"


def _toml_table(name: str, values: dict) -> list[str]:
    lines = ["", f"[{name}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict):
            lines += _toml_table(f"{name}.{_toml_key(k)}", v)
    return lines


def _toml_key(key: str) -> str:
    bare = key and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in key)
    return key if bare else _toml_string(key)


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, everything else as is.

    (json.dumps is not TOML: it writes characters beyond U+FFFF as surrogate-pair escapes, which TOML rejects,
    and leaves U+007F raw, which TOML forbids.)
    """
    def esc(ch):
        if ch in _TOML_ESCAPES:
            return _TOML_ESCAPES[ch]
        return f"\\u{ord(ch):04x}" if ch < " " or ch == "\x7f" else ch
    return '"' + "".join(map(esc, s)) + '"'


def _toml_value(v) -> str:
    if v is None:
        return '"none"'   # TOML has no null; typed fields read "none" back as None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")
