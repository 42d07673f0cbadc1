"""Conv layers in pipeline files: parsing, errors that name the dotted key before any training, user images,
and tiny conv pipelines end to end (classification and reconstruction) on digits."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stacked_ae.core.model import StackedEncoder
from stacked_ae.pipeline.config import ConfigError, from_dict, load_config
from stacked_ae.pipeline.runner import check_data, run_pipeline
from stacked_ae.report.render import render_report

CONV = {
    "name": "tiny-conv",
    "seeds": [0],
    "data": {"dataset": "digits", "budgets": [5, "all"]},
    "model": {"conv": [{"channels": 4}, {"channels": 8, "stride": 2}], "sizes": [16],
              "activation": ["leaky_relu", "leaky_relu", "sigmoid"]},
    "pretrain": {"epochs": 2, "batch_size": 64, "noise": 0.2},
    "finetune": {"epochs": 4, "lr": [3e-3, 1e-2], "batch_size": 64, "patience": 2},
}


def with_model(**model) -> dict:
    return dict(CONV, model=dict(CONV["model"], **model))


def test_a_toml_file_declares_conv_layers_as_inline_tables(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[model]\nconv = [{channels = 32, kernel = 3, stride = 1}, {channels = 64, stride = 2,'
                    ' pool = true}]\nsizes = [2]\n')
    cfg = load_config(path)
    assert cfg.model.conv[1] == {"channels": 64, "kernel": 3, "stride": 2, "padding": "same", "pool": True}
    assert cfg.model.n_layers == 3
    # one spelling per model: defaults are written out, so {channels = 4} and the full table are the same settings
    short = from_dict(with_model(conv=[{"channels": 4}], activation="sigmoid")).to_dict()
    full = from_dict(with_model(conv=[{"channels": 4, "kernel": 3, "stride": 1, "padding": "same", "pool": False}],
                                activation="sigmoid")).to_dict()
    assert short == full
    assert "conv" not in from_dict({"name": "dense"}).to_dict()["model"]   # dense fingerprints unchanged


@pytest.mark.parametrize("model,message", [
    ({"conv": [{"channels": 4}, {"channels": 8, "strides": 2}]}, "model.conv[1]: unknown key(s) strides"),
    ({"conv": [{"channels": 4, "kernel": 9, "padding": 0}], "activation": "relu"},
     "model.conv[0]: kernel 9 is larger than its 8x8 input"),
    ({"conv": [{"channels": 4, "stride": 2, "pool": True}, {"channels": 4, "stride": 2, "pool": True}]},
     "model.conv[1]: 2x2 pooling of 1x1 maps leaves nothing"),
    ({"activation": ["relu", "relu"]}, "model.activation has 2 entries but 2 conv + 1 dense layers"),
    ({"conv": [{"channels": "many"}]}, "model.conv[0].channels must be a positive integer"),
])
def test_bad_conv_models_are_refused_before_training_with_the_dotted_key(model, message):
    with pytest.raises(ConfigError) as err:
        from_dict(with_model(**model))
    assert message in str(err.value)


def test_the_contractive_penalty_on_a_conv_layer_is_named():
    with pytest.raises(ConfigError, match=r"pretrain.contractive\[0\]: layer 1 is a conv layer"):
        from_dict(dict(CONV, pretrain={"contractive": [0.1, 0.0, 0.1]}))


def test_conv_on_a_table_without_image_shape_names_the_file(tmp_path):
    path = tmp_path / "table.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.random((200, 64)), y=rng.integers(0, 2, 200))
    cfg = from_dict(dict(CONV, data={"dataset": str(path), "budgets": ["all"]}))
    with pytest.raises(ConfigError, match=r"model.conv: dataset '.*table.npz' has no image shape \(rows of 64 "
                                          r"features\); conv layers need images: a .npz whose X is \(n, height, "
                                          r"width\)") as err:
        check_data(cfg)
    assert "image_shape=" not in str(err.value), "a pipeline has no image_shape key"


def test_user_images_of_shape_n_h_w_carry_their_shape(tmp_path):
    path = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.random((200, 6, 5)), y=rng.integers(0, 2, 200))
    data = check_data(from_dict(dict(CONV, data={"dataset": str(path), "budgets": ["all"]},
                                     model={"conv": [{"channels": 2}], "sizes": [4]})))
    assert data.image_shape == (6, 5) and data.X_train.shape[1] == 30
    with pytest.raises(ConfigError, match=r"model.conv\[0\]: kernel 7 is larger than its 6x5 input"):
        check_data(from_dict(dict(CONV, data={"dataset": str(path), "budgets": ["all"]},
                                  model={"conv": [{"channels": 2, "kernel": 7, "padding": 0}], "sizes": [4]})))


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "tiny-conv"
    run_pipeline(from_dict(CONV), out, device="cpu", progress=False)
    return out


def test_a_conv_classification_pipeline_runs_every_arm(conv_run):
    res = pd.read_csv(conv_run / "results.csv", dtype={"budget": str})
    assert len(res) == 2 * 5 and (res["status"] == "ok").all(), res[["budget", "arm", "status", "message"]]
    full = res[res["budget"] == "all"].set_index("arm")["test_error"]
    assert full["pretrained"] < 0.2 and full["random"] < 0.3, full.to_dict()
    stack = StackedEncoder.load(conv_run / "encoders" / "seed0.pt")
    assert [s.channels for s in stack.conv] == [4, 8] and stack.sizes[-1] == 16


def test_a_conv_run_resumes_without_recomputing(conv_run):
    before = {p.name: p.stat().st_mtime_ns for p in (conv_run / "stages").glob("*.json")}
    run_pipeline(from_dict(CONV), conv_run, device="cpu", progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (conv_run / "stages").glob("*.json")}
    assert before == after


def test_the_conv_report_names_the_maps_and_draws_the_kernels(conv_run):
    md = render_report(conv_run).read_text()
    assert "`64-4@8x8-8@4x4-16`" in md
    assert "### First-layer kernels" in md and "The 3x3 kernels of the first 4 of 4 maps" in md
    assert (conv_run / "figures" / "filters.png").stat().st_size > 1000


def test_a_conv_reconstruction_pipeline_reports_sse_and_knn(tmp_path):
    cfg = dict(CONV, task="reconstruction", data={"dataset": "digits"},
               model=dict(CONV["model"], activation=["leaky_relu", "leaky_relu", "linear"]))
    out = tmp_path / "recon"
    run_pipeline(from_dict(cfg), out, device="cpu", progress=False)
    res = pd.read_csv(out / "results.csv").set_index("arm")
    assert (res["status"] == "ok").all()
    from stacked_ae.core.data import load_dataset
    d = load_dataset("digits")
    mean_image_sse = float(((d.X_test - d.X_train.mean(0)) ** 2).sum(1).mean())   # knowing nothing of the image
    assert res.loc["pretrained", "test_sse"] < 0.5 * mean_image_sse, (res["test_sse"].to_dict(), mean_image_sse)
    assert res["knn_accuracy"].between(0.5, 1.0).all(), res["knn_accuracy"].to_dict()
    md = render_report(out).read_text()
    assert "Decoded interpolations" in md and "Reconstructions" in md
    assert json.loads((out / "config.json").read_text())["model"]["conv"][1]["stride"] == 2


def test_shipped_conv_pipelines_validate():
    root = Path(__file__).resolve().parents[2] / "pipelines"
    for name in ("quickstart-conv", "mnist-conv-2d", "fashion-mnist-conv"):
        cfg = load_config(root / f"{name}.toml")
        assert cfg.model.conv, name


def test_small_conv_models_train_on_one_thread_and_large_ones_on_all():
    """auto_threads: digits-sized conv layers are overhead-bound (one thread is faster); the book's layers on
    28x28 MNIST maps are not. The multiply-adds per example are those of the convolutions themselves."""
    import torch

    from stacked_ae.pipeline.runner import SMALL_LAYER_MACS, auto_threads, conv_macs
    assert conv_macs([{"channels": 8}, {"channels": 16, "stride": 2}], (8, 8)) == [8 * 9 * 64, 16 * 8 * 9 * 16]
    root = Path(__file__).resolve().parents[2] / "pipelines"
    assert auto_threads(load_config(root / "quickstart-conv.toml")) == 1
    book = load_config(root / "mnist-conv-2d.toml")
    assert max(conv_macs(book.model.conv, (28, 28))) > SMALL_LAYER_MACS
    assert auto_threads(book) == torch.get_num_threads()
