"""Autoencoder figures of a folder whose checkpoints are gone (they are not committed with a reference
report): kept while the files they were drawn from are unchanged, refused as out of date once one changes."""
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
from test_report import make_run_dir

from stacked_ae.report.render import render_report

AE_TITLES = ("### Codes", "### Decoded code plane", "### Reconstructions", "### First-layer filters")


def figures_section(md: str) -> str:
    return md.split("## Figures", 1)[1].split("\n## ", 1)[0]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_figures_are_kept_without_checkpoints_while_their_sources_are_unchanged(tmp_path):
    run = make_run_dir(tmp_path / "ae", task="reconstruction", seeds=(0,))
    (run / "stages").mkdir()
    (run / "stages" / "pretrain_seed0.json").write_text(json.dumps({"fingerprint": "a", "seed": 0}))
    first = figures_section(render_report(run).read_text())
    assert all(t in first for t in AE_TITLES), first
    record = json.loads((run / "figures" / "autoencoder.json").read_text())
    assert set(record["sources"]) == {"samples.npz", "stages/pretrain_seed0.json"}
    pngs = {p.name: digest(p) for p in (run / "figures").glob("*.png")}

    shutil.rmtree(run / "encoders")
    shutil.rmtree(run / "models")
    kept = figures_section(render_report(run).read_text())
    assert all(t in kept for t in AE_TITLES), kept
    assert kept.count("(Drawn when the run's checkpoints were present") == len(AE_TITLES)
    assert "Not drawn" not in kept
    assert {p.name: digest(p) for p in (run / "figures").glob("*.png")} == pngs   # nothing redrawn

    # The seed's pretraining stage is rerun elsewhere: the figures no longer show what the folder holds.
    (run / "stages" / "pretrain_seed0.json").write_text(json.dumps({"fingerprint": "b", "seed": 0}))
    stale = figures_section(render_report(run).read_text())
    assert not any(t in stale for t in AE_TITLES[:2]), stale
    assert "out of date (`stages/pretrain_seed0.json` changed since they were drawn)" in stale


def test_kept_figures_are_out_of_date_once_the_tables_drop_their_pretraining(tmp_path):
    """A rerun under new [pretrain] settings, stopped before pretraining finished: the old stage record is still on
    disk, unchanged, but the tables it wrote no longer list the seed's pretraining. The figures drawn from the old
    encoder are then out of date, not shown as the run's."""
    run = make_run_dir(tmp_path / "ae", task="reconstruction", seeds=(0,))
    (run / "stages").mkdir()
    (run / "stages" / "pretrain_seed0.json").write_text(json.dumps({"fingerprint": "a", "seed": 0}))
    (run / "stages" / "arm_seed0_budgetall_pretrained.json").write_text(json.dumps({"fingerprint": "b"}))
    render_report(run)
    shutil.rmtree(run / "encoders")
    shutil.rmtree(run / "models")
    assert all(t in figures_section(render_report(run).read_text()) for t in AE_TITLES)   # kept while listed

    # The all-labels network's record is among the sources whenever it exists, also for figures drawn from the
    # encoder alone: the tables dropping that network (a rerun without budget "all") leaves the figures current.
    results = pd.read_csv(run / "results.csv", dtype={"budget": str})
    results[~((results["budget"] == "all") & (results["arm"] == "pretrained"))].to_csv(run / "results.csv",
                                                                                         index=False)
    assert all(t in figures_section(render_report(run).read_text()) for t in AE_TITLES)

    pretrain = pd.read_csv(run / "pretrain.csv")
    pretrain[pretrain["seed"] != 0].to_csv(run / "pretrain.csv", index=False)
    stale = figures_section(render_report(run).read_text())
    assert not any(t in stale for t in AE_TITLES), stale
    assert "the tables no longer list the stage(s) they were drawn from, `pretrain_seed0`" in stale, stale


def test_a_new_samples_file_makes_kept_figures_out_of_date(tmp_path):
    run = make_run_dir(tmp_path / "ae", task="reconstruction", seeds=(0,))
    render_report(run)
    shutil.rmtree(run / "encoders")
    shutil.rmtree(run / "models")
    with np.load(run / "samples.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["X"] = arrays["X"][::-1].copy()
    np.savez(run / "samples.npz", **arrays)
    stale = figures_section(render_report(run).read_text())
    assert "### Codes" not in stale
    assert "`samples.npz` changed since they were drawn" in stale


def test_without_a_record_or_checkpoints_nothing_is_claimed(tmp_path):
    run = make_run_dir(tmp_path / "ae", task="reconstruction", seeds=(0,))
    shutil.rmtree(run / "encoders")
    shutil.rmtree(run / "models")
    section = figures_section(render_report(run).read_text())
    assert "**Not drawn:** no `encoders/seed{S}.pt`" in section
    assert not (run / "figures" / "autoencoder.json").exists()


def test_a_resumed_run_without_checkpoints_writes_the_figure_encoder_again(tmp_path):
    """`sae run` on a finished folder whose checkpoints are gone: while the recorded figures are current nothing
    is trained; once they are not, the first seed's pretraining runs again and writes the same encoder bytes (the
    stage record untouched), so the report draws its figures from the weights the arms started from."""
    from stacked_ae.pipeline.config import from_dict
    from stacked_ae.pipeline.runner import run_pipeline
    from stacked_ae.report.figures import record_is_current
    cfg = from_dict({"name": "tiny", "seeds": [0], "data": {"dataset": "digits", "budgets": ["all"]},
                     "model": {"sizes": [16, 8]}, "arms": ["pretrained", "logreg"],
                     "pretrain": {"epochs": 2, "batch_size": 64},
                     "finetune": {"epochs": 2, "lr": [0.01], "batch_size": 64}})
    out = tmp_path / "run"

    def resume():
        run_pipeline(cfg, out, device="cpu", progress=False, threads=1, figures_current=record_is_current)
        return render_report(out)

    resume()
    encoder, stage = out / "encoders" / "seed0.pt", out / "stages" / "pretrain_seed0.json"
    original, record = encoder.read_bytes(), stage.read_bytes()
    assert record_is_current(out)

    encoder.unlink()
    assert "### Codes" in figures_section(resume().read_text())
    assert not encoder.exists(), "the recorded figures were current: nothing to train"

    (out / "figures" / "autoencoder.json").unlink()
    assert not record_is_current(out)
    run_pipeline(cfg, out, device="cpu", progress=False, threads=1)     # without the predicate: nothing
    assert not encoder.exists()
    section = figures_section(resume().read_text())
    assert encoder.read_bytes() == original and stage.read_bytes() == record
    assert "### Codes" in section and "Drawn when" not in section and record_is_current(out)
