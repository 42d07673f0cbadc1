"""The Ray executor gives the local executor's numbers: on local worker processes, on a two-node cluster
started inside the test, after a worker is killed mid-stage, and when a rerun resumes a run folder.

Ray starts twice in this module (once on its own, once as a two-node cluster), so the module takes
about a minute on 2 cores.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from stacked_ae.cli import main
from stacked_ae.pipeline.config import dumps_toml, from_dict
from stacked_ae.pipeline.executors import ExecutorError, worker_threads
from stacked_ae.pipeline.runner import run_pipeline

ray = pytest.importorskip("ray")
ray_constants = pytest.importorskip("ray._private.ray_constants")

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "data": {"dataset": "digits", "budgets": [5, "all"]},
    "model": {"sizes": [24, 12]},
    "pretrain": {"epochs": 2, "batch_size": 64, "noise": 0.2},
    "finetune": {"epochs": 3, "lr": [0.01, 0.03], "batch_size": 64, "patience": 2},
}


def results(run_dir) -> pd.DataFrame:
    """results.csv without its wall times: the columns an executor must not change."""
    return pd.read_csv(run_dir / "results.csv").drop(columns=["wall_seconds"])


def run(settings: dict, out, **run_settings):
    cfg = from_dict({**settings, "run": run_settings} if run_settings else settings)
    return run_pipeline(cfg, out, device="cpu", progress=False, threads=1)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    run(TINY, out)
    return out


def test_ray_on_local_workers_equals_the_local_run(local_run, tmp_path):
    """--executor ray --workers 2 (Ray started and stopped by the run) writes the local run's results.csv."""
    assert not ray.is_initialized()
    out = tmp_path / "ray"
    frame = run(TINY, out, executor="ray", workers=2)
    assert not ray.is_initialized(), "the run started Ray, so it shuts it down"
    pd.testing.assert_frame_equal(results(out), results(local_run))
    assert frame.attrs["stages"] == {"computed": 20, "reused": 0, "pretrain computed": 2, "pretrain reused": 0}
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert manifest["executor"]["executor"] == "ray" and len(manifest["placement"]) == 22


def stopped_in_a_learning_rate(out, monkeypatch, epoch_killer) -> dict:
    """A local run of GRID's random arm stopped in epoch 2 of its second learning rate, the kept rate and training
    state marked: a stage that resumes from them adds 3e6 marked seconds to its wall time. Returns the settings."""
    import torch
    from test_faults import GRID

    from stacked_ae.pipeline import arms
    monkeypatch.setattr(arms, "CHECKPOINT_EVERY_S", 0.0)
    settings = dict(GRID, arms=["random"])
    epoch_killer.at = 3 + 2      # lr 0.003 trains its 3 epochs, then the run stops in epoch 2 of lr 0.03
    with pytest.raises(KeyboardInterrupt):
        run(settings, out)
    epoch_killer.at = 0
    partial = out / "partial" / "arm_seed0_budgetall_random"
    assert sorted(p.name for p in partial.iterdir()) == ["lr0.003.pt", "lr0.03.epochs.pt"]
    point = torch.load(partial / "lr0.003.pt", weights_only=True)
    point["record"] = json.dumps({**json.loads(point["record"]), "seconds": 1e6})
    torch.save(point, partial / "lr0.003.pt")
    state = torch.load(partial / "lr0.03.epochs.pt", weights_only=True)
    torch.save({**state, "elapsed": 2e6}, partial / "lr0.03.epochs.pt")
    return settings


def test_a_stage_stopped_inside_a_learning_rate_resumes_there_on_local_workers(tmp_path, monkeypatch, epoch_killer):
    """Workers started here see the run folder: a stage stopped in its second learning rate (the first rate
    finished, the second's training state kept in partial/) resumes on Ray from what was kept, ends with the
    results of an uninterrupted run, and the driver drops partial/ once it has written the stage's record."""
    out = tmp_path / "run"
    settings = stopped_in_a_learning_rate(out, monkeypatch, epoch_killer)
    assert not ray.is_initialized()
    run(settings, out, executor="ray", workers=2)
    assert not (out / "partial").exists()
    assert pd.read_csv(out / "results.csv")["wall_seconds"].iloc[0] >= 3e6, "the kept rate and state were not used"
    run(settings, tmp_path / "uninterrupted")
    pd.testing.assert_frame_equal(results(out), results(tmp_path / "uninterrupted"))


def test_a_worker_keeps_its_stage_progress_only_where_it_sees_the_run_folder(tmp_path, epoch_killer):
    """stage_task with the run folder's path keeps a stopped stage's progress in its partial/; without it (a
    worker on another machine) nothing is kept. auto: shared for workers started here, not with an address."""
    from test_faults import GRID

    from stacked_ae.core.data import load_dataset
    from stacked_ae.pipeline.executors import MemoryRunDir, stage_task
    cfg = from_dict(dict(GRID, arms=["random"]))
    data = load_dataset("digits")
    epoch_killer.at = 3 + 2
    with pytest.raises(KeyboardInterrupt):
        stage_task(cfg.to_dict(), data, ("arm", 0, "all", "random"), None, 1, "cpu", {}, "digits", str(tmp_path))
    kept = tmp_path / "partial" / "arm_seed0_budgetall_random"
    assert sorted(p.name for p in kept.iterdir()) == ["lr0.003.pt"]    # 5 minutes between training states
    assert not MemoryRunDir(Path("/run"), {}).keeps_points
    assert MemoryRunDir(Path("/run"), {}, shared=tmp_path).points_dir("k") == tmp_path / "partial" / "k"

    section = cfg.run
    assert section.shares_run_folder() and not replace(section, address="auto").shares_run_folder()
    assert replace(section, address="auto", shared_folder=True).shares_run_folder()
    assert not replace(section, shared_folder=False).shares_run_folder()
    with pytest.raises(ValueError, match=r'run.shared_folder must be "auto", true or false.*got .yes.'):
        from_dict(dict(GRID, run={"shared_folder": "yes"}))


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node with one CPU each, on this machine."""
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_ray_on_a_two_node_cluster_equals_the_local_run(cluster, local_run, tmp_path):
    """Joining a cluster (--address) gives the same numbers; the stages ran in several worker processes."""
    out = tmp_path / "cluster"
    run(TINY, out, executor="ray", address=cluster.address)
    pd.testing.assert_frame_equal(results(out), results(local_run))
    placement = pd.read_json(out / "manifest.json", typ="series")["placement"]
    assert len(set(placement.values())) >= 2, placement


def test_cluster_workers_retrain_a_stopped_stage_and_the_driver_drops_its_partial(cluster, tmp_path, monkeypatch,
                                                                                   epoch_killer):
    """With an address, workers may be on other machines: they do not read the run folder's partial/, so the stage
    trains from its start (the marked seconds are not counted), to the same results, and the driver then drops
    what the stopped run kept."""
    out = tmp_path / "run"
    settings = stopped_in_a_learning_rate(out, monkeypatch, epoch_killer)
    run(settings, out, executor="ray", address=cluster.address)
    assert not (out / "partial").exists()
    assert pd.read_csv(out / "results.csv")["wall_seconds"].iloc[0] < 1e6
    run(settings, tmp_path / "uninterrupted")
    pd.testing.assert_frame_equal(results(out), results(tmp_path / "uninterrupted"))


def test_a_rerun_on_ray_reuses_finished_stages(cluster, local_run, tmp_path):
    """Stages a killed driver left behind are reused: delete some records, rerun, only those are recomputed."""
    out = tmp_path / "resumed"
    run(TINY, out, executor="ray", address=cluster.address)
    for path in sorted((out / "stages").glob("arm_seed1_*.json")):
        path.unlink()
    frame = run(TINY, out, executor="ray", address=cluster.address)
    assert frame.attrs["stages"]["computed"] == 10 and frame.attrs["stages"]["reused"] == 10
    assert frame.attrs["stages"]["pretrain computed"] == 0
    pd.testing.assert_frame_equal(results(out), results(local_run))


def test_ray_pretrains_a_seed_whose_encoder_is_gone_only_when_an_arm_needs_it(cluster, local_run, tmp_path):
    """As locally (and as `sae status` says): a finished pretraining whose encoder file is gone, as in the shipped
    reference runs, trains again only when an arm that starts from it has to train, and only for that seed. A
    pretraining whose record is gone is a stage to run even with every arm finished."""
    import shutil

    from stacked_ae.pipeline.status import stage_status
    counts = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        shutil.copytree(local_run, out)
        for path in (out / "encoders").glob("*.pt"):
            path.unlink()
        settings = {"executor": "ray", "address": cluster.address} if executor == "ray" else {}
        counts[executor, "none"] = run(TINY, out, **settings).attrs["stages"]
        (out / "stages" / "arm_seed1_budget5_pretrained.json").unlink()
        counts[executor, "one"] = run(TINY, out, **settings).attrs["stages"]
        pd.testing.assert_frame_equal(results(out), results(local_run))
        assert sorted(p.name for p in (out / "encoders").glob("*.pt")) == ["seed1.pt"]
        (out / "stages" / "pretrain_seed0.json").unlink()
        assert [s["key"] for s in stage_status(from_dict(TINY), out) if s["state"] != "finished"] == ["pretrain_seed0"]
        counts[executor, "record"] = run(TINY, out, **settings).attrs["stages"]
        assert {s["state"] for s in stage_status(from_dict(TINY), out)} == {"finished"}
        pd.testing.assert_frame_equal(pd.read_csv(out / "pretrain.csv"), pd.read_csv(local_run / "pretrain.csv"))
    assert counts["ray", "none"] == counts["local", "none"] == {"computed": 0, "reused": 20, "pretrain computed": 0,
                                                                "pretrain reused": 2}
    assert counts["ray", "one"] == counts["local", "one"] == {"computed": 1, "reused": 19, "pretrain computed": 1,
                                                              "pretrain reused": 1}
    assert counts["ray", "record"] == counts["local", "record"] == {"computed": 0, "reused": 20,
                                                                    "pretrain computed": 1, "pretrain reused": 1}


def test_stages_that_reserve_a_gpu_are_refused_on_a_cluster_without_one(cluster, tmp_path):
    """--gpus-per-stage on a cluster with no GPU: its stages would wait for ever in silence; the run is refused
    with the setting, the GPUs the cluster has, and what to do instead."""
    with pytest.raises(ExecutorError, match=r"run.gpus_per_stage = 0.5 \(--gpus-per-stage\): each stage reserves "
                                            r"that much of a GPU, but the cluster at .* has 0 GPU\(s\)"):
        run_pipeline(from_dict({**TINY, "run": {"executor": "ray", "address": cluster.address, "gpus_per_stage": 0.5}}),
                     tmp_path / "run", progress=False, threads=1)


def test_workers_started_here_are_a_new_ray_instance_not_one_left_running(monkeypatch):
    """Without an address, Ray's own default joins the last cluster started on this machine (`ray start`, or one a
    crashed run left in /tmp/ray) and then refuses the worker count; --workers N starts N workers of its own."""
    from stacked_ae.pipeline.executors import start_ray
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert start_ray(ray, 3, "") is True
    assert start_ray(ray, 3, "10.0.0.1:6379") is True
    assert [(c.get("address"), c.get("num_cpus")) for c in calls] == [("local", 3), ("10.0.0.1:6379", None)]


def test_a_worker_killed_mid_stage_is_retried_with_identical_results(cluster, tmp_path):
    """SIGKILL a worker while it pretrains: Ray retries the task and the run ends with the local numbers."""
    slow = {**TINY, "seeds": [0], "pretrain": {**TINY["pretrain"], "epochs": 60}, "arms": ["pretrained", "logreg"]}
    run(slow, tmp_path / "local")
    killed = []
    # only this cluster's workers (children of its raylets): never a worker of another Ray run on the machine
    raylets = ",".join(str(info.process.pid) for node in cluster.list_all_nodes()
                       for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []))
    assert raylets, "the test cluster's raylets were not found"

    def kill_one_worker():
        deadline = time.time() + 300     # generous: a loaded machine starts Ray's workers slowly
        while time.time() < deadline and not killed and not finished.is_set():
            found = subprocess.run(["pgrep", "-P", raylets, "-f", "ray::stage_task"], capture_output=True,
                                   text=True).stdout.split()
            if found:
                time.sleep(0.5)        # well inside the stage
                subprocess.run(["kill", f"-{signal.SIGKILL.value}", found[0]])
                killed.append(found[0])
            time.sleep(0.1)

    finished = threading.Event()
    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        run(slow, tmp_path / "ray", executor="ray", address=cluster.address)
    finally:
        finished.set()
        killer.join()
    assert killed, "no worker was seen running a stage"
    pd.testing.assert_frame_equal(results(tmp_path / "ray"), results(tmp_path / "local"))


def test_without_ray_the_cli_exits_2_with_the_install_command(tmp_path, monkeypatch, capsys):
    """`--executor ray` where Ray is not installed: one line naming the extra to install, exit status 2."""
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text('name = "tiny"\n[data]\ndataset = "digits"\n[model]\nsizes = [8]\n')
    monkeypatch.setitem(sys.modules, "ray", None)     # `import ray` now raises ImportError
    assert main(["run", str(pipeline), "--out", str(tmp_path / "r"), "--executor", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs Ray, which is not installed" in err and 'pip install "stacked-ae[ray]"' in err
    assert issubclass(ExecutorError, ValueError)


def test_each_local_worker_gets_its_share_of_the_cores(monkeypatch):
    """N workers on a machine of C cores get C // N torch threads each (1 when N = C); cluster workers 1."""
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert [worker_threads(n, "") for n in (1, 2, 16, 32)] == [16, 8, 1, 1]
    assert worker_threads(4, "auto") == 1


# ---------------------------------------------------------------- faults under Ray

def test_into_a_log_the_ray_driver_says_how_far_unfinished_stages_got(tmp_path, monkeypatch, caplog):
    """While no stage finishes for PROGRESS_EVERY_S, the driver logs what partial/ keeps of the stages still
    pending (as `sae status` says it), and only of those; then it writes each finished stage as before."""
    import logging

    from stacked_ae.pipeline import executors
    from stacked_ae.pipeline.rundir import RunDir

    class FakeRay:
        waits = 0

        def wait(self, refs, num_returns, timeout):
            assert timeout == executors.PROGRESS_EVERY_S
            self.waits += 1
            return ([], refs) if self.waits < 3 else (refs[:1], refs[1:])

        def get(self, ref):
            return {"files": {}, "node": "host:1", "seconds": 1.0}

    kept = {"arm_seed0_budgetall_random": "1 of 3 learning rates finished", "arm_seed1_budgetall_random": "x"}
    with caplog.at_level(logging.INFO, logger="stacked_ae.pipeline"):
        placement = executors._collect(FakeRay(), RunDir(tmp_path), {"ref": "arm_seed0_budgetall_random"}, "n",
                                       False, describe=lambda: kept)
    assert placement == {"arm_seed0_budgetall_random": "host:1"}
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("arm_seed0_budgetall_random: in progress: 1 of 3 learning rates finished") == 2, lines
    assert not any("seed1" in line for line in lines), lines


def test_kept_progress_reads_partial_as_status_does(tmp_path):
    from stacked_ae.pipeline.arms import arm_fingerprint
    from stacked_ae.pipeline.executors import kept_progress
    from stacked_ae.pipeline.rundir import RunDir, arm_key
    cfg = from_dict({"name": "x", "seeds": [0], "arms": ["random"], "data": {"budgets": ["all"]},
                     "model": {"sizes": [4]}, "finetune": {"lr": [1e-3, 1e-2]}})
    describe = kept_progress(cfg, tmp_path, "d")
    assert describe() == {}
    key = arm_key(0, "all", "random")
    RunDir(tmp_path).save_point(key, 1e-3, {"rows": [{"epoch": 1, "val_error": 0.25, "best": True}]}, None,
                                arm_fingerprint(cfg, 0, "all", "random", "d", 1e-3))
    assert describe() == {key: "1 of 2 learning rates finished (lr 0.001: val error 0.25 at epoch 1)"}


def test_the_bar_counts_running_and_queued_stages_apart():
    """Stages whose pretraining is still pending wait; the ready ones fill the slots, the rest queue."""
    from stacked_ae.pipeline.executors import stage_counts
    pending = ["pre0", "a", "b", "c", "d"]
    waits_on = {"c": "pre0", "d": "pre0"}
    assert stage_counts(pending, waits_on, slots=2) == (2, 3)     # pre0, a, b ready; two slots
    assert stage_counts(pending, waits_on, slots=8) == (3, 2)     # c and d wait for pre0
    assert stage_counts(["c", "d"], waits_on, slots=8) == (2, 0)  # pre0 done: both ready
    assert stage_counts([], waits_on, slots=2) == (0, 0)


def test_a_diverging_stage_under_ray_fails_alone_as_it_does_locally(cluster, tmp_path):
    """Pretraining with lr=1e6 on Ray: the same failed rows and messages as the local run, the others finish."""
    from test_faults import DIVERGING
    run(DIVERGING, tmp_path / "local")
    run(DIVERGING, tmp_path / "ray", executor="ray", address=cluster.address)
    local, remote = results(tmp_path / "local"), results(tmp_path / "ray")
    pd.testing.assert_frame_equal(remote, local)
    assert set(remote.loc[remote["status"] == "failed", "arm"]) == {"pretrained", "frozen"}


def _driver(pipeline, out, address) -> list[str]:
    return [sys.executable, "-m", "stacked_ae", "run", str(pipeline), "--out", str(out), "--quiet", "--no-report",
            "--device", "cpu", "--threads", "1", "--executor", "ray", "--address", address]


def _start_and_wait(cmd, ready, timeout: float = 300) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before the fault:\n{proc.stderr.read()}"
    if not ready():
        proc.kill()
        raise AssertionError(f"the run was not ready for the fault within {timeout} s:\n{proc.communicate()[1]}")
    return proc


# TINY with no early stopping and longer fine-tuning: slow enough to be interrupted between its stages
SLOW = {**TINY, "name": "slow", "finetune": {**TINY["finetune"], "epochs": 12, "patience": "none"}}


def write_slow(tmp_path):
    pipeline = tmp_path / "slow.toml"
    pipeline.write_text(dumps_toml(from_dict(SLOW)))
    return pipeline


def test_a_killed_ray_driver_resumes_to_the_same_results(cluster, tmp_path):
    """SIGKILL the driver (`sae run --executor ray`) once some stages are written: a rerun keeps them and ends
    with the numbers of an uninterrupted local run."""
    pipeline = write_slow(tmp_path)
    out = tmp_path / "run"
    proc = _start_and_wait(_driver(pipeline, out, cluster.address),
                           lambda: len(list(out.glob("stages/arm_*.json"))) >= 2)
    proc.kill()
    proc.communicate(timeout=60)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert kept and not (out / "results.csv").exists()
    assert main(_driver(pipeline, out, cluster.address)[3:]) == 0
    assert {n: (out / "stages" / n).stat().st_mtime_ns for n in kept} == kept, "finished stages were redone"
    run(SLOW, tmp_path / "local")
    pd.testing.assert_frame_equal(results(out), results(tmp_path / "local"))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_under_ray_exits_with_the_resume_hint(cluster, tmp_path, sig, code):
    pipeline = write_slow(tmp_path)
    out = tmp_path / "run"
    proc = _start_and_wait(_driver(pipeline, out, cluster.address), lambda: any(out.glob("stages/*.json")))
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr, stderr
    assert not list(out.rglob(".*.tmp*"))
    finished = {p.stem for p in out.glob("stages/arm_*.json")}   # the tables list what finished, for `sae report`
    listed = pd.read_csv(out / "results.csv", dtype={"budget": str})
    assert {f"arm_seed{r.seed}_budget{r.budget}_{r.arm}" for r in listed.itertuples()} == finished



@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores: one worker's share would be 1 thread anyway")
def test_threads_given_to_a_ray_run_reach_its_tasks(local_run, tmp_path):
    """`--threads 1` with one Ray worker on a machine of C >= 2 cores trains each stage on 1 thread, not the
    worker's share of C, and every stage record says so; the numbers are the local 1-thread run's."""
    out = tmp_path / "ray"
    run(TINY, out, executor="ray", workers=1)                    # run() passes threads=1
    records = [json.loads(p.read_text()) for p in (out / "stages").glob("*.json")]
    assert records and {r["torch_threads"] for r in records} == {1}
    assert {json.loads(p.read_text())["torch_threads"] for p in (local_run / "stages").glob("*.json")} == {1}
    pd.testing.assert_frame_equal(results(out), results(local_run))
