"""Pipeline config: TOML round trips, unknown keys, wrong types, per-layer lists, overrides."""
import tomllib
from pathlib import Path

import pytest

from stacked_ae.pipeline.config import ConfigError, PipelineConfig, dumps_toml, from_dict, load_config

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_every_shipped_pipeline_validates():
    """Each file in pipelines/ loads into a PipelineConfig."""
    files = sorted(PIPELINES.glob("*.toml"))
    assert len(files) >= 5, [f.name for f in files]
    for path in files:
        assert isinstance(load_config(path), PipelineConfig), path


def test_toml_round_trip_gives_an_equal_config():
    """dumps_toml then loading gives back the same frozen config, reference table included."""
    cfg = load_config(PIPELINES / "mnist-deep-ae.toml")
    again = from_dict(tomllib.loads(dumps_toml(cfg)))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


def test_dict_round_trip_keeps_none_and_lists():
    """patience = "none" and per-layer lists survive to_dict -> TOML -> from_dict."""
    cfg = from_dict({"model": {"sizes": [8, 4]}, "pretrain": {"noise": [0.1, 0.3]},
                     "finetune": {"patience": "none", "lr": [0.01, 0.1]}})
    assert cfg.finetune.patience is None and cfg.pretrain.noise == (0.1, 0.3)
    assert from_dict(tomllib.loads(dumps_toml(cfg))) == cfg


@pytest.mark.parametrize("text", ["\U00010000 astral", "del \x7f", "tab\tquote\" back\\slash", "bell \x07 nl \n",
                                  "caf\u00e9 \u2603"])
def test_toml_round_trip_keeps_any_text(text):
    """Strings TOML must escape (control characters, U+007F, quotes) or may keep raw (beyond U+FFFF) come back equal,
    in the name, in reference values and in reference keys."""
    cfg = from_dict({"name": "run \U00010000 caf\u00e9", "reference": {"source": text, "test_error": {text: 0.5}}})
    written = dumps_toml(cfg)
    assert from_dict(tomllib.loads(written)) == cfg
    written.encode("utf-8")   # the file can be saved


@pytest.mark.parametrize("name", ["a/b", "a\\b", ".hidden", "", "tab\there", "lone \ud800"])
def test_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="name must be a plain"):
        from_dict({"name": name})


def test_reference_text_must_be_storable():
    with pytest.raises(ConfigError, match="reference.source must be valid Unicode"):
        from_dict({"reference": {"source": "lone \udc00"}})
    with pytest.raises(ConfigError, match="reference keys must be strings"):
        from_dict({"reference": {1: 0.5}})


@pytest.mark.parametrize("text, key", [
    ("bogus = 1", "'bogus'"),
    ("[data]\nbogus = 1", "'data.bogus'"),
    ("[pretrain]\nlearning_rate = 0.1", "'pretrain.learning_rate'"),
    ("[finetune]\npatiance = 3", "'finetune.patiance'"),
])
def test_unknown_key_raises_with_dotted_key(tmp_path, text, key):
    """An unknown key at any level is an error that names the dotted key and the known keys."""
    with pytest.raises(ConfigError, match=f"unknown key {key}; known keys"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("[pretrain]\nepochs = \"ten\"", r"pretrain.epochs must be an integer or a list of integers, got 'ten'"),
    ("seeds = \"zero\"", r"seeds must be a list of integers, got 'zero'"),
    ("[model]\nsizes = [8, 4.5]", r"model.sizes must be a list of integers"),
    ("[finetune]\nlr = \"fast\"", r"finetune.lr must be a list of numbers or a number|finetune.lr must be"),
    ("[pretrain]\ntied = 1", r"pretrain.tied must be true or false"),
])
def test_wrong_type_raises_with_dotted_key(tmp_path, text, message):
    """A value of the wrong type names the dotted key, what was expected and what was given."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_per_layer_list_of_wrong_length_raises(tmp_path):
    """A per-layer list whose length differs from model.sizes names the key and both lengths."""
    path = write(tmp_path, "[model]\nsizes = [16, 8, 4]\n[pretrain]\nnoise = [0.1, 0.2]\n")
    with pytest.raises(ConfigError, match=r"pretrain.noise has 2 entries but the model has 3 layers"):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("[pretrain]\nnoise = 1.0", r"pretrain.noise must be in \[0, 1\), got 1.0"),
    ("[pretrain]\nlr = -0.1", r"pretrain.lr must be a positive number"),
    ("[finetune]\nbatch_size = 0", r"finetune.batch_size must be a positive integer"),
    ("[model]\nsizes = [8, 0]", r"model.sizes must be a non-empty list of positive widths"),
    ("[model]\nactivation = \"swish\"", r"model.activation must be one of sigmoid, tanh"),
    ("[pretrain]\noptimizer = \"lbfgs\"", r"pretrain.optimizer must be one of adam, sgd"),
    ("[pretrain]\ncorruption = \"blur\"", r"pretrain.corruption must be one of none, mask, gaussian, salt_pepper"),
    ("[pretrain]\nprecision = \"fp16\"", r"pretrain.precision must be one of fp32, bf16; got 'fp16'"),
    ("[finetune]\nprecision = \"int8\"", r"finetune.precision must be one of fp32, bf16; got 'int8'"),
    ("[finetune]\ndropout = 1.0", r"finetune.dropout must be a probability in \[0, 1\), got 1.0"),
    ("[data]\ndataset = \"cifar\"", r"data.dataset must be one of digits, mnist, fashion-mnist"),
    ("[data]\nbudgets = [0]", r"data.budgets entries must be positive integers"),
    ("arms = [\"pretrained\", \"svm\"]", r"arms: 'svm' is not an arm of a classification pipeline"),
])
def test_impossible_value_raises_before_training(tmp_path, text, message):
    """Impossible values are reported at load time with the dotted key and what is allowed."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_malformed_toml_names_the_file(tmp_path):
    """A TOML syntax error names the file and the position."""
    with pytest.raises(ConfigError, match=r"p\.toml: not valid TOML: .*line 1"):
        load_config(write(tmp_path, "name = [unclosed"))


def test_overrides_are_converted_to_the_field_type(tmp_path):
    """--set values take the declared type: ints, floats, per-layer lists, budgets, strings, none."""
    cfg = load_config(write(tmp_path, "[model]\nsizes = [8, 4]\n"), [
        "pretrain.epochs=5", "finetune.lr=0.01", "pretrain.noise=[0.1, 0.2]", "data.budgets=[5, \"all\"]",
        "data.dataset=digits", "finetune.patience=none", "seeds=[3, 4]", "pretrain.lr=1"])
    assert cfg.pretrain.epochs == 5 and isinstance(cfg.pretrain.epochs, int)
    assert cfg.finetune.lr == (0.01,)
    assert cfg.pretrain.noise == (0.1, 0.2)
    assert cfg.data.budgets == (5, "all")
    assert cfg.finetune.patience is None
    assert cfg.seeds == (3, 4)
    assert cfg.pretrain.lr == 1.0 and isinstance(cfg.pretrain.lr, float)


def test_overrides_of_text_settings_and_nested_reference_tables(tmp_path):
    """A text setting takes what follows '=' as text even where it reads as a number or a boolean (a pipeline
    named 2024, a label column named 7), and [reference]'s own nested tables take dotted overrides."""
    path = write(tmp_path, '[reference]\nsource = "a paper"\n[reference.test_error]\nrandom = 1.5\n')
    cfg = load_config(path, ["name=2024", "data.label_column=7", "run.address=true",
                             "reference.test_error.pretrained=1.2", "reference.note.year=2006"])
    assert (cfg.name, cfg.data.label_column, cfg.run.address) == ("2024", "7", "true")
    assert cfg.reference == {"source": "a paper", "test_error": {"random": 1.5, "pretrained": 1.2},
                             "note": {"year": 2006}}
    assert load_config(path, ["run.shared_folder=false"]).run.shared_folder is False   # text or boolean: TOML
    with pytest.raises(ConfigError, match=r"override 'reference.source.x': 'source' is not a table"):
        load_config(path, ["reference.source.x=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'data.foo'"):
        load_config(path, ["data.foo.bar=1"])


def test_bad_override_names_the_key(tmp_path):
    """An override of the wrong type, an unknown section or without '=' is a ConfigError."""
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"pretrain.epochs must be an integer"):
        load_config(path, ["pretrain.epochs=fast"])
    with pytest.raises(ConfigError, match=r"unknown section 'pretrian'"):
        load_config(path, ["pretrian.epochs=5"])
    with pytest.raises(ConfigError, match=r"must look like key=value"):
        load_config(path, ["pretrain.epochs"])


def test_config_is_frozen():
    """Configs cannot be changed after load."""
    cfg = from_dict({})
    with pytest.raises(AttributeError):
        cfg.name = "other"  # type: ignore[misc]


def test_reference_table_must_be_data(tmp_path):
    """[reference] holds strings, numbers and tables only."""
    with pytest.raises(ConfigError, match=r"reference.test_error must be a string, a number or a table"):
        load_config(write(tmp_path, "[reference]\ntest_error = [1, 2]\n"))


@pytest.mark.parametrize("model, message", [
    ('activation = ["tanh", "sigmoid", "sigmoid"]\noutput_activation = ["auto", "sigmoid", "auto"]',
     r"model\.output_activation\[1\] is 'sigmoid' .* layer 2 reconstructs the codes of layer 1, whose activation "
     r"'tanh' leaves \[0, 1\]"),
    ('activation = "relu"\noutput_activation = "sigmoid"',
     r"model\.output_activation is 'sigmoid' .* layer 2 reconstructs the codes of layer 1, whose activation 'relu'"),
])
def test_sigmoid_output_on_unbounded_codes_is_a_config_error(tmp_path, model, message):
    """A sigmoid (cross-entropy) decoder over codes that leave [0, 1] is refused before training, naming the key."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"[model]\nsizes = [16, 8, 4]\n{model}\n"))
