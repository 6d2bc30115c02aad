"""NSGA-II DSE: determinism, kill-and-resume through the evaluation store, the Dask executor,
flow-file validation and the report."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwsim.errors import AxlabError
from tests.hwsim_util import REPO

SMALL = {"dataset": "digits", "multipliers": ["mul8s_bi_exact", "mul8s_bi_ba2_5", "mul8s_bi_tr3", "mul8s_bi_tr4"],
         "objectives": ["area", "accuracy", "robustness"], "pop_size": 4, "generations": 3, "val_images": 60,
         "probe_images": 3, "attack": "square", "attack_params": {"n_queries": 15, "eps": 0.0627},
         "seed": 1, "workers": 1, "backend": "numba"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The small QAT MinNet of the nn tests (trained once per session) saved to a file."""
    from nn.api import save_model
    from tests.nn_fixtures import minnet_qat

    root = tmp_path_factory.mktemp("dse")
    model = root / "minnet.axm"
    save_model(minnet_qat(), model)
    return {"root": root, "model": str(model)}


def _front(result_dir: Path) -> list[tuple]:
    d = json.loads((result_dir / "pareto.json").read_text())
    return [(tuple(p["genes"]), round(p["area_um2"], 6), round(p["acc_loss"], 6), round(p["vulnerability"], 6))
            for p in d["pareto"]]


def test_dse_writes_outputs_and_is_deterministic(env):
    from flows.dse import run_dse

    a = run_dse(dict(SMALL, model=env["model"]), env["root"] / "a", progress=False)
    assert a.computed == len(a.evaluations) >= 4 and a.pareto
    for name in ("evaluations.csv", "pareto.csv", "pareto.json", "pareto_scatter.png", "hypervolume.png"):
        assert (env["root"] / "a" / name).is_file(), name
    design = json.loads((env["root"] / "a" / a.pareto[0]["design"]).read_text())
    assert len(design["layers"]) == 4 and design["layers"][0]["lut_sha256"]
    assert [h["generation"] for h in a.history] == [1, 2, 3]
    # a second call with the same store computes nothing and gives the same front
    again = run_dse(dict(SMALL, model=env["model"]), env["root"] / "a", progress=False)
    assert again.computed == 0 and _front(env["root"] / "a") == [
        (tuple(p["genes"]), round(p["area_um2"], 6), round(p["acc_loss"], 6), round(p["vulnerability"], 6))
        for p in a.pareto]


def test_uniform_start_evaluates_each_multiplier_in_every_layer_first(env):
    """init: uniform puts every multiplier alone in every layer into the first generation (the
    rest random, seeded); the folder records it, so a random-start rerun into it is refused."""
    from flows.dse import run_dse

    cfg = dict(SMALL, model=env["model"], generations=1, pop_size=6, init="uniform")
    res = run_dse(cfg, env["root"] / "uni", progress=False)
    genes = [tuple(e["genes"]) for e in res.evaluations]
    assert {(m,) * 4 for m in range(4)} <= set(genes) and len(genes) == 6
    assert run_dse(cfg, env["root"] / "uni2", progress=False).evaluations == res.evaluations   # seeded
    with pytest.raises(AxlabError, match="init"):
        run_dse(dict(cfg, init="random"), env["root"] / "uni", progress=False)
    with pytest.raises(AxlabError, match="DSE init: must be random or uniform"):
        run_dse(dict(cfg, init="best"), env["root"] / "uni3", progress=False)
    # a folder written before the option existed (no init recorded) counts as a random start
    old = env["root"] / "old"
    run_dse(dict(cfg, init="random"), old, progress=False)
    ident = json.loads((old / "dse_run.json").read_text())
    (old / "dse_run.json").write_text(json.dumps({k: v for k, v in ident.items() if k != "init"}))
    assert run_dse(dict(cfg, init="random"), old, progress=False).computed == 0
    with pytest.raises(AxlabError, match="init"):
        run_dse(cfg, old, progress=False)


def _dse_cmd(env, out: Path) -> list[str]:
    return [sys.executable, "-m", "flows", "dse", "--model", env["model"], "--multipliers",
            ",".join(SMALL["multipliers"]), "--objectives", "area,accuracy,robustness", "--pop", "4", "--gens", "3",
            "--val-images", "60", "--probe-images", "3", "--param", "n_queries=15", "eps=0.0627", "--seed", "1",
            "--workers", "1", "--out", str(out), "--no-progress"]


def test_killed_dse_resumes_to_the_same_front_without_repeating(env):
    reference = env["root"] / "a"
    if not (reference / "pareto.json").exists():
        test_dse_writes_outputs_and_is_deterministic(env)
    out = env["root"] / "killed"
    cmd = _dse_cmd(env, out)
    penv = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    db = out / "evals.sqlite"
    deadline = time.time() + 300
    count = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM evals").fetchone()[0]
            except sqlite3.Error:
                count = 0
            if count >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "pareto.json").exists()
    done = subprocess.run(cmd, env=penv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _front(out) == _front(reference)
    con = sqlite3.connect(db)
    counts = [c for _, c in con.execute("SELECT key, COUNT(*) FROM log GROUP BY key")]
    assert counts and max(counts) == 1  # no design computed twice across the kill
    n_ref = len(json.loads((reference / "pareto.json").read_text())["pareto"])
    assert n_ref == len(_front(out))


def test_dask_executor_matches_local(env):
    distributed = pytest.importorskip("distributed")
    from flows.dse import run_dse

    reference = env["root"] / "a"
    if not (reference / "pareto.json").exists():
        test_dse_writes_outputs_and_is_deterministic(env)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        res = run_dse(dict(SMALL, model=env["model"], executor="dask", scheduler=cluster.scheduler_address),
                      env["root"] / "dask", progress=False)
        from flows.dse_executors import DaskExecutor, usable_cores

        ex = DaskExecutor(cluster.scheduler_address)  # compute threads: the worker's cores over its 1 worker
        assert list(ex.threads.values()) == [usable_cores()]
        ex.close()
    assert res.computed == len(res.evaluations)
    assert _front(env["root"] / "dask") == _front(reference)
    ref = {tuple(e["genes"]): e for e in json.loads((reference / "pareto.json").read_text())["pareto"]}
    for p in res.pareto:
        assert p["accuracy"] == ref[tuple(p["genes"])]["accuracy"]


def test_usable_cores_follows_cpu_affinity(monkeypatch):
    """A process pinned to one core (taskset -c 1) computes with one thread, not the host's CPU count."""
    from flows import dse_executors

    monkeypatch.setattr(dse_executors.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    monkeypatch.setattr(dse_executors.os, "cpu_count", lambda: 16)
    assert dse_executors.usable_cores() == 1
    monkeypatch.delattr(dse_executors.os, "sched_getaffinity")
    assert dse_executors.usable_cores() == 16


def test_flow_file_validation_errors(tmp_path):
    from flows.flow import load_flow

    f = tmp_path / "f.yaml"
    f.write_text("name: x\ndse:\n  pop_size: many\n")
    with pytest.raises(AxlabError, match=r"f.yaml: dse.pop_size: expected int, got 'many'"):
        load_flow(f)
    f.write_text("name: x\ndse:\n  popsize: 4\n")
    with pytest.raises(AxlabError, match=r"unknown key dse.popsize"):
        load_flow(f)
    f.write_text("name: [unclosed\n")
    with pytest.raises(AxlabError, match=r"not valid YAML at line"):
        load_flow(f)
    flow = load_flow(REPO / "flows" / "quickstart.yaml")
    assert flow["dse"]["objectives"] == ["area", "power", "accuracy", "robustness"]


def test_unknown_objective_is_an_error(env):
    from flows.dse import run_dse

    with pytest.raises(AxlabError, match="unknown DSE objective"):
        run_dse(dict(SMALL, model=env["model"], objectives=["speed"]), env["root"] / "bad", progress=False)


def test_report_from_a_dse_run(env):
    from flows.report import write_report

    run = env["root"] / "a"
    if not (run / "pareto.json").exists():
        test_dse_writes_outputs_and_is_deterministic(env)
    copy = env["root"] / "report_run"
    copy.mkdir(exist_ok=True)
    (copy / "dse").mkdir(exist_ok=True)
    for f in run.iterdir():
        if f.is_file():
            (copy / "dse" / f.name).write_bytes(f.read_bytes())
    md, page = write_report(copy)
    text = md.read_text()
    assert "Design-space exploration" in text and "dse/pareto_scatter.png" in text
    assert "<table>" in page.read_text()
    empty = env["root"] / "empty_run"
    empty.mkdir(exist_ok=True)
    with pytest.raises(AxlabError, match="nothing to report"):
        write_report(empty)


def test_flow_folder_takes_one_runner_at_a_time(tmp_path):
    """A second `axlab run` into a folder in use is refused (its stages would interleave)."""
    from flows.flow import StagedRunner
    from hwsim.fileio import exclusive

    runner = StagedRunner({}, tmp_path)
    with exclusive(tmp_path / ".flow.lock", "another runner"):
        with pytest.raises(AxlabError, match="flow folder .* another process"):
            runner.run()
    assert runner.run() == tmp_path          # free again once the holder is gone
    assert json.loads((tmp_path / "flow_state.json").read_text())["report"] is True
