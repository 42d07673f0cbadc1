"""Autoencoder figures of a folder whose checkpoints are gone (they are not committed with a reference
report): kept while the files they were drawn from are unchanged, refused as out of date once one changes."""
import hashlib
import json
import shutil

import numpy as np
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
