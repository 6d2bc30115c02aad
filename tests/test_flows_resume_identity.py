"""Resume identity of DSE folders and flow folders (issue 11, class 2).

A rerun of ``axlab dse`` or ``axlab run`` into an existing folder that asks for another search or
another flow is refused, naming the differing key, before any evaluation or stage, and leaves the
folder byte-identical; a rerun that changes only metadata resumes. A DSE folder's outputs list
only the designs its own search visited, even with a store shared with other searches. The DSE
runs here use a random (untrained) MinNet, two or three small LUT files and the torch backend, so
each takes seconds.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli import main
from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_table
from tests.hwsim_util import REPO


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ DSE
@functools.lru_cache(maxsize=None)
def _bundle(seed: int):
    from nn.data import load_dataset
    from nn.models import build_model
    from nn.train import quantize_module

    torch.manual_seed(seed)
    x, _ = load_dataset("digits", "train")
    return quantize_module(build_model("minnet", 1, 10).eval(), x[:64], "digits", "minnet")


def _lut(name: str, noise: int, area: float, seed: int = 0) -> Lut:
    table = exact_table(8, 8, True).astype(np.int64)
    table += np.random.default_rng(seed).integers(-noise, noise + 1, table.shape)
    return Lut(name, table.astype(np.int32), 8, 8, True,
               meta={"cost": {"area_um2": area, "power_mw": area / 100}})


@pytest.fixture(scope="module")
def dse_env(tmp_path_factory):
    from nn.api import save_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dse_id")
    for seed in (1, 2):
        save_model(_bundle(seed), root / f"m{seed}.axm")
    _lut("ex", 0, 100.0).save(root / "ex.npz")
    _lut("ap", 400, 40.0).save(root / "ap.npz")
    _lut("ap", 900, 40.0, seed=1).save(root / "ap_other.npz")      # same name, other table
    _lut("cheap", 2000, 10.0).save(root / "cheap.npz")
    base = {"model": str(root / "m1.axm"), "dataset": "digits", "multipliers": [str(root / "ex.npz"),
            str(root / "ap.npz")], "objectives": ["area", "accuracy"], "pop_size": 2, "generations": 1,
            "val_images": 8, "probe_images": 0, "seed": 0, "workers": 1, "backend": "torch"}
    from flows.dse import run_dse

    run_dse(base, root / "run", progress=False)
    yield {"root": root, "base": base}
    torch.set_num_threads(n)


DSE_CHANGES = {
    "model": ({"model": "m2.axm"}, "model_sha256"),
    "dataset": ({"dataset": "cifar10:/nonexistent/cifar"}, "dataset"),
    "data seed": ({"data_seed": 1}, "data_seed"),
    "multiplier set": ({"multipliers": ["ex.npz", "cheap.npz"]}, "multipliers[1]"),
    "multiplier content": ({"multipliers": ["ex.npz", "ap_other.npz"]}, "lut_sha256[1]"),
    "objectives": ({"objectives": ["area", "power"]}, "objectives[1]"),
    "constraint": ({"max_acc_loss": 5}, "max_acc_loss"),
    "validation images": ({"val_images": 9}, "val_images"),
    "seed": ({"seed": 1}, "seed"),
    "population": ({"pop_size": 3}, "pop_size"),
    "generations": ({"generations": 2}, "generations"),
    "backend": ({"backend": "numba"}, "backend"),
}


@pytest.mark.parametrize("field", list(DSE_CHANGES))
def test_dse_rerun_with_another_search_is_refused(dse_env, field):
    from flows.dse import run_dse

    root = dse_env["root"]
    change, key = DSE_CHANGES[field]
    change = {k: ([str(root / m) for m in v] if k == "multipliers" else str(root / v) if k == "model" else v)
              for k, v in change.items()}
    before = _snapshot(root / "run")
    with pytest.raises(AxlabError) as err:
        run_dse({**dse_env["base"], **change}, root / "run", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and f"was made with {key}=" in msg and f"this run asks for {key}=" in msg, msg
    assert _snapshot(root / "run") == before


def test_dse_rerun_resumes_and_metadata_may_change(dse_env):
    from flows.dse import run_dse

    root = dse_env["root"]
    ident = (root / "run" / "dse_run.json").read_bytes()
    res = run_dse({**dse_env["base"], "workers": 2, "model": str(Path(dse_env["base"]["model"]))},
                  root / "run", progress=False)
    assert res.computed == 0                                   # every design came from the store
    assert (root / "run" / "dse_run.json").read_bytes() == ident


LOCKS = {"folder": ("run/.dse.lock", None, "DSE folder"),
         "store": ("shared.sqlite.lock", "shared.sqlite", "DSE evaluation store")}


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_dse_folder_and_store_take_one_writer(dse_env, which):
    """A second DSE process on a folder, or on a --store, in use is refused before it writes."""
    from flows.dse import run_dse
    from hwsim.fileio import exclusive

    root = dse_env["root"]
    lock, store, what = LOCKS[which]
    cfg = {**dse_env["base"], **({"store": str(root / store)} if store else {})}
    before = _snapshot(root / "run")
    with exclusive(root / lock, "another DSE process"):
        with pytest.raises(AxlabError) as err:
            run_dse(cfg, root / "run", progress=False)
    assert what in str(err.value) and "another process" in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(root / "run") == before
    assert not (root / "shared.sqlite").exists()


def test_dse_damaged_store_is_refused_before_the_folder_is_claimed(dse_env, tmp_path):
    from flows.dse import run_dse

    store = tmp_path / "store.sqlite"
    store.write_text("not a database\n" * 50)
    with pytest.raises(AxlabError) as err:
        run_dse({**dse_env["base"], "store": str(store)}, tmp_path / "new" / "run", progress=False)
    assert "not a usable axlab evaluation store" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["store.sqlite"]
    assert store.read_text() == "not a database\n" * 50


def test_dse_cli_refusal_is_one_line(dse_env, capsys):
    root = dse_env["root"]
    b = dse_env["base"]
    before = _snapshot(root / "run")
    rc = main(["dse", "--model", b["model"], "--multipliers", ",".join(b["multipliers"]), "--objectives",
               "area,accuracy", "--pop", "2", "--gens", "1", "--val-images", "8", "--probe-images", "0",
               "--seed", "7", "--workers", "1", "--backend", "torch", "--out", str(root / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "was made with seed=0, this run asks for seed=7" in err, err
    assert _snapshot(root / "run") == before


def test_dse_outputs_list_only_this_searchs_designs_with_a_shared_store(dse_env):
    """Two searches of one evaluation context (same model, data, multipliers, objectives, seed)
    share a store; the shorter one's folder must not list the longer one's extra designs."""
    from flows.dse import run_dse

    root = dse_env["root"]
    cfg = {**dse_env["base"], "multipliers": [str(root / m) for m in ("ex.npz", "ap.npz", "cheap.npz")],
           "pop_size": 4}
    run_dse({**cfg, "generations": 1}, root / "alone", progress=False)
    store = str(root / "shared.sqlite")
    long = run_dse({**cfg, "generations": 2, "store": store}, root / "long", progress=False)
    short = run_dse({**cfg, "generations": 1, "store": store}, root / "short", progress=False)
    alone = json.loads((root / "alone" / "pareto.json").read_text())
    got = json.loads((root / "short" / "pareto.json").read_text())
    assert short.computed == 0                                  # all reused from the shared store
    assert len(long.evaluations) > len(short.evaluations)     # the long search saw more designs
    assert got["n_evaluations"] == alone["n_evaluations"] == len(short.evaluations)
    assert [p["genes"] for p in got["pareto"]] == [p["genes"] for p in alone["pareto"]]
    assert (root / "short" / "evaluations.csv").read_text() == (root / "alone" / "evaluations.csv").read_text()


# ------------------------------------------------------------------------------------ flows
def _stub_stages(runner, calls: list[str]):
    """Replace every stage by a recorder: the identity logic is what is under test."""
    for stage in runner.STAGES:
        setattr(runner, f"stage_{stage}", lambda cfg, s=stage: calls.append(s))
    return runner


def _flow_run(out: Path, sets: list[str], flow_file: Path | None = None, calls: list[str] | None = None):
    from flows.flow import load_flow, make_runner

    flow = load_flow(flow_file or REPO / "flows" / "quickstart.yaml", sets)
    return _stub_stages(make_runner(flow, out, progress=False), calls if calls is not None else []).run()


@pytest.fixture
def flow_dir(tmp_path):
    calls: list[str] = []
    _flow_run(tmp_path / "run", [], calls=calls)
    assert "dse" in calls and calls[-1] == "report"
    return tmp_path / "run"


@pytest.mark.parametrize("override, key", [
    ("dse.generations=2", "dse.generations"),
    ("seed=3", "seed"),
    ("dataset=cifar10", "dataset"),
    ("backend=torch", "backend"),
    ("train.epochs=1", "train.epochs"),
    ("attacks.n=5", "attacks.n"),
    ("attacks.list=[{attack: pgd, eps: 0.2}, {attack: square, eps: 0.1255, n_queries: 300}, {attack: ipixels, n: 5}]",
     "attacks.list[0].eps"),
    ("dse.attack_params={n_queries: 10, eps: 0.0627}", "dse.attack_params.n_queries"),
    ("detect.n_clean=50", "detect.n_clean"),
])
def test_flow_rerun_with_changed_overrides_is_refused(flow_dir, override, key):
    before = _snapshot(flow_dir)
    calls: list[str] = []
    with pytest.raises(AxlabError) as err:
        _flow_run(flow_dir, [override], calls=calls)
    msg = str(err.value)
    assert "\n" not in msg and f"was made with {key}=" in msg and f"this run asks for {key}=" in msg, msg
    assert calls == [] and _snapshot(flow_dir) == before


@pytest.mark.parametrize("override", ["name=renamed", "report.title=Other", "dse.workers=1", "attacks.batch=3"])
def test_flow_rerun_with_changed_metadata_resumes(flow_dir, override):
    calls: list[str] = []
    _flow_run(flow_dir, [override], calls=calls)
    assert calls == ["report"]                  # every finished stage skipped, the report rebuilt


def test_flow_rerun_with_an_edited_flow_file_or_input_is_refused(tmp_path):
    model = tmp_path / "given.axm"
    model.write_bytes(b"model v1")
    flow_file = tmp_path / "f.yaml"
    text = (REPO / "flows" / "quickstart.yaml").read_text().replace("  epochs: 12", f"  epochs: 12\n  path: {model}")
    flow_file.write_text(text)
    out = tmp_path / "run"
    _flow_run(out, [], flow_file)
    flow_file.write_text(text.replace("generations: 6", "generations: 4"))
    with pytest.raises(AxlabError, match=r"was made with dse\.generations=6, this run asks for dse\.generations=4"):
        _flow_run(out, [], flow_file)
    flow_file.write_text(text)
    model.write_bytes(b"model v2")                 # same path, other content
    with pytest.raises(AxlabError, match=r"was made with inputs\..*given\.axm="):
        _flow_run(out, [], flow_file)


def test_thesis_flow_rerun_with_changed_overrides_is_refused(tmp_path):
    sets = ["multipliers=builtin", "attacks.ax=[mul8s_bi_tr3]", "networks=[minnet]"]
    calls: list[str] = []
    _flow_run(tmp_path, sets, REPO / "flows" / "thesis.yaml", calls)
    assert calls[0] == "train" and (tmp_path / "thesis.json").exists()
    before = _snapshot(tmp_path)
    with pytest.raises(AxlabError, match=r"was made with attacks\.n=20, this run asks for attacks\.n=3"):
        _flow_run(tmp_path, sets + ["attacks.n=3"], REPO / "flows" / "thesis.yaml", calls)
    with pytest.raises(AxlabError, match=r"with networks\[0\]=minnet, this run asks for networks\[0\]=resnet8"):
        _flow_run(tmp_path, ["multipliers=builtin", "attacks.ax=[mul8s_bi_tr3]", "networks=[resnet8]"],
                  REPO / "flows" / "thesis.yaml", calls)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("state, match", [
    ('{"luts": true, "train": true}', "records finished stages but not the flow that ran them"),
    ('{"luts": tru', "cannot read the flow state"),
])
def test_flow_state_of_unknown_origin_is_refused(tmp_path, state, match):
    (tmp_path / "flow_state.json").write_text(state)
    calls: list[str] = []
    with pytest.raises(AxlabError, match=match):
        _flow_run(tmp_path, [], calls=calls)
    assert calls == [] and (tmp_path / "flow_state.json").read_text() == state


def test_cli_run_refusal_is_one_line(flow_dir, capsys, monkeypatch):
    from flows.flow import FlowRunner

    for stage in FlowRunner.STAGES:                # stages never run: the refusal comes first
        monkeypatch.setattr(FlowRunner, f"stage_{stage}", lambda self, cfg: pytest.fail("a stage ran"))
    rc = main(["run", str(REPO / "flows" / "quickstart.yaml"), "--out", str(flow_dir), "--set", "seed=9",
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "was made with seed=0, this run asks for seed=9" in err, err
