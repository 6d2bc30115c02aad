"""Resume identity of attack runs (issue 11, class 2).

For every field that defines an attack run, a rerun into the same output that changes only that
field is refused, naming the field, before any image is attacked, and leaves every file of the
run byte-identical; a rerun that changes nothing resumes and attacks only the missing images.
A corrupt line in the middle of a run file is refused the same way. Models are random MinNets
(post-training quantised, no training) and LUTs small .npz files, so everything runs in seconds.
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attacks.registry import make_attack
from attacks.runner import IDENTITY_KEYS, run_attack, run_paths
from flows.cli import main
from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_table
from tests.nn_fixtures import lowrank_lut

BASE = {"model": "A", "impl": "ax", "design": "d_exact", "backend": "torch", "dataset": "digits", "split": "test",
        "data_seed": 0, "indices": (0, 1, 2), "images": "original", "attack": "fgsm", "params": {"eps": 8 / 255},
        "seed": 0}

# field -> (the one change, the identity key the refusal must name)
CHANGES = {
    "model": ({"model": "B"}, "model_sha256"),
    "implementation": ({"impl": "q", "design": None}, "impl"),
    "design LUTs": ({"design": "d_lowrank"}, "luts[0]"),
    "backend": ({"backend": "numba"}, "backend"),
    "dataset": ({"dataset": "cifar10:/data/cifar"}, "dataset"),
    "split": ({"split": "val"}, "split"),
    "data seed": ({"data_seed": 1}, "data_seed"),
    "n": ({"indices": (0, 1, 2, 3)}, "n"),
    "selected indices": ({"indices": (0, 1, 4)}, "indices_sha256"),
    "image pixels": ({"images": "changed"}, "images_sha256"),
    "attack": ({"attack": "bim", "params": {"eps": 8 / 255, "steps": 1}}, "attack"),
    "attack params": ({"params": {"eps": 4 / 255}}, "params.eps"),
    "seed": ({"seed": 1}, "seed"),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def _bundle(name: str):
    from nn.data import load_dataset
    from nn.models import build_model
    from nn.train import quantize_module

    torch.manual_seed({"A": 1, "B": 2}[name])
    x, _ = load_dataset("digits", "train")
    return quantize_module(build_model("minnet", 1, 10).eval(), x[:64], "digits", "minnet")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Two random models, two designs named alike with different LUTs, the digits test set, and
    a base run killed after 2 of its 3 images (its last record cut off)."""
    from nn.api import load_dataset, make_design

    root = tmp_path_factory.mktemp("resume_id")
    Lut("exact8s", exact_table(8, 8, True), 8, 8, True).save(root / "exact.npz")
    lowrank_lut(3, 1).save(root / "lowrank.npz")
    designs = {}
    for model in ("A", "B"):
        for name, lut in (("d_exact", "exact.npz"), ("d_lowrank", "lowrank.npz")):   # same name, other LUTs
            designs[model, name], _ = make_design(_bundle(model), [str(root / lut)], name="d")
    x, y = load_dataset("digits", "test")
    e = {"root": root, "designs": designs, "x": x, "y": y, "impls": {}, "calls": []}
    base = root / "base"
    _run(e, BASE, base / "r.jsonl")
    full = (base / "r.jsonl").read_bytes()
    e["full_records"] = [json.loads(line) for line in full.splitlines()]
    (base / "r.jsonl").write_bytes(b"".join(full.splitlines(keepends=True)[:2]))
    e["base"] = base
    return e


def _impl(e: dict, cfg: dict):
    """nn.api implementation of ``cfg`` (cached), its predict_proba counted in e['calls']."""
    from nn.api import load_implementation

    key = (cfg["model"], cfg["impl"], cfg["design"], cfg["backend"])
    if key not in e["impls"]:
        impl = load_implementation(_bundle(cfg["model"]), cfg["impl"], backend=cfg["backend"],
                                   design=e["designs"][cfg["model"], cfg["design"]] if cfg["design"] else None)
        inner = impl.predict_proba

        def counted(xx):
            e["calls"].append(len(xx))
            return inner(xx)
        impl.predict_proba = counted
        e["impls"][key] = impl
    return e["impls"][key]


def _run(e: dict, cfg: dict, out: Path) -> list[dict]:
    x = e["x"]
    if cfg["images"] == "changed":
        x = x.copy()
        x[cfg["indices"][0], 0, 5, 5] ^= 1
    meta = {"dataset": cfg["dataset"], "split": cfg["split"], "data_seed": cfg["data_seed"], "model": cfg["model"]}
    return run_attack(make_attack(cfg["attack"], cfg["params"]), _impl(e, cfg), x, e["y"], list(cfg["indices"]),
                      out, seed=cfg["seed"], meta=meta)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_base(e: dict, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(e["base"], dest)
    return dest / "r.jsonl"


def _assert_refused(e: dict, cfg: dict, out: Path, key: str) -> None:
    before = _snapshot(out.parent)
    calls = len(e["calls"])
    with pytest.raises(AxlabError) as err:
        _run(e, cfg, out)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"was made with {key}=" in msg and f"this run asks for {key}=" in msg, msg
    assert _snapshot(out.parent) == before, "a refused resume changed the run's files"
    assert len(e["calls"]) == calls, "a refused resume queried the model"


def test_identity_keys_cover_the_table():
    keys = {k.split(".")[0].split("[")[0] for _, k in CHANGES.values()}
    assert keys <= set(IDENTITY_KEYS)
    assert set(IDENTITY_KEYS) - keys == {"impl_kind", "members"}     # changed with impl / ensembles


@pytest.mark.parametrize("field", list(CHANGES))
def test_a_change_of_one_field_is_refused(env, tmp_path, field):
    change, key = CHANGES[field]
    out = _copy_base(env, tmp_path / "run")
    _assert_refused(env, {**BASE, **change}, out, key)


def test_an_unchanged_rerun_resumes_and_skips_finished_images(env, tmp_path):
    out = _copy_base(env, tmp_path / "run")
    meta = run_paths(out)["meta"].read_bytes()
    calls = len(env["calls"])
    recs = _run(env, BASE, out)
    assert recs == env["full_records"]                  # resumed == uninterrupted
    assert run_paths(out)["meta"].read_bytes() == meta  # a resume keeps the recorded identity
    resumed = sum(env["calls"][calls:])
    calls = len(env["calls"])
    assert _run(env, BASE, out) == recs
    assert sum(env["calls"][calls:]) == 0               # nothing left to attack: no query
    assert 0 < resumed                                  # the missing image was attacked...
    # ...and only it: an FGSM image costs 1 verification query + the oracle's queries on it
    one = tmp_path / "one.jsonl"
    calls = len(env["calls"])
    _run(env, {**BASE, "indices": (2,)}, one)
    assert resumed == sum(env["calls"][calls:])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.one_of(
    st.fixed_dictionaries({"seed": st.integers(0, 2**31 - 1)}),
    st.fixed_dictionaries({"data_seed": st.integers(0, 2**31 - 1)}),
    st.fixed_dictionaries({"split": st.sampled_from(["train", "val"])}),
    st.fixed_dictionaries({"dataset": st.sampled_from(["cifar10", "cifar10-thesis", "folder:/imgs"])}),
    st.fixed_dictionaries({"params": st.fixed_dictionaries({"eps": st.floats(1 / 255, 1.0)})}),
    st.fixed_dictionaries({"indices": st.lists(st.integers(0, 359), min_size=1, max_size=5, unique=True)
                           .map(tuple)}),
    st.fixed_dictionaries({"model": st.just("B")}),
    st.fixed_dictionaries({"backend": st.just("numba")}),
))
def test_property_any_changed_field_is_refused(env, tmp_path, change):
    cfg = {**BASE, **change}
    assume(cfg != BASE)
    (field,) = change
    key = {"model": "model_sha256", "indices": "n" if len(cfg["indices"]) != 3 else "indices_sha256",
           "params": "params.eps"}.get(field, field)
    out = _copy_base(env, tmp_path / "prop")
    _assert_refused(env, cfg, out, key)


def test_an_ensemble_member_change_is_refused(env, tmp_path):
    """Ensembles named alike (ens(q,fp)) whose second member runs another model."""
    from attacks.implspec import Ensemble

    def ens(model_b: str) -> Ensemble:
        return Ensemble([_impl(env, {**BASE, "impl": "q", "design": None}),
                         _impl(env, {**BASE, "model": model_b, "impl": "fp", "design": None})])

    out = tmp_path / "ens.jsonl"
    atk = make_attack("fgsm", {"eps": 8 / 255})
    run_attack(atk, ens("A"), env["x"], env["y"], [0, 1], out)
    before = _snapshot(tmp_path)
    with pytest.raises(AxlabError, match=r"was made with members\[1\]\.model_sha256=\w+\.\.\., this run asks"):
        run_attack(atk, ens("B"), env["x"], env["y"], [0, 1], out)
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------ damaged run files
def _lines(out: Path) -> list[bytes]:
    return out.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("bad, line_no", [
    (b'{"index": 1, "lab\n', 1),                         # torn line that is not the last
    (b"not json at all\n", 2),
    (b'[1, 2, 3]\n', 2),                                 # JSON, but not a record
    (b'{"index": "1", "label": 3, "success": false}\n', 1),
    (None, 2),                                           # line 2 repeats line 1's image
])
def test_a_corrupt_middle_line_is_refused_before_any_work(env, tmp_path, bad, line_no):
    out = _copy_base(env, tmp_path / "run")
    lines = _lines(out)
    if bad is None:
        lines[1] = lines[0]
    else:
        lines[line_no - 1] = bad
    out.write_bytes(b"".join(lines) + b'{"index": 7, "la')      # and a torn last line
    before = _snapshot(out.parent)
    calls = len(env["calls"])
    with pytest.raises(AxlabError, match=rf"r\.jsonl, line {line_no}: "):
        _run(env, BASE, out)
    assert _snapshot(out.parent) == before          # the torn tail was not cut either
    assert len(env["calls"]) == calls


def test_only_a_torn_last_line_is_repaired(env, tmp_path):
    out = _copy_base(env, tmp_path / "run")
    out.write_bytes(out.read_bytes() + b'{"index": 2, "label": 3, "succ')
    assert _run(env, BASE, out) == env["full_records"]
    assert all(line.endswith(b"\n") for line in _lines(out)) and len(_lines(out)) == 3


def test_records_without_their_identity_are_refused(env, tmp_path):
    out = _copy_base(env, tmp_path / "run")
    run_paths(out)["meta"].unlink()
    before = _snapshot(out.parent)
    with pytest.raises(AxlabError, match=r"r\.meta\.json is missing"):
        _run(env, BASE, out)
    assert _snapshot(out.parent) == before
    run_paths(out)["meta"].write_text("{not json")
    with pytest.raises(AxlabError, match=r"r\.meta\.json: cannot read the run identity"):
        _run(env, BASE, out)


# ------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli(env):
    from nn.api import save_model

    d = env["root"] / "cli"
    d.mkdir()
    for name in ("A", "B"):
        save_model(_bundle(name), d / f"{name}.axm")
    args = ["attack", "--model", str(d / "A.axm"), "--impl", "q", "--backend", "torch", "--attack", "fgsm",
            "--n", "2", "--study", "none", "--out", str(d / "run" / "r.jsonl"), "--no-progress", "--json"]
    assert main(args) == 0
    return d, args


def _with(args: list[str], opt: str, value: str) -> list[str]:
    if opt in args:
        args = list(args)
        args[args.index(opt) + 1] = value
        return args
    return [*args, opt, value]


@pytest.mark.parametrize("opt, value, key", [
    ("--model", "B.axm", "model_sha256"),
    ("--dataset", "cifar10:/nonexistent/cifar", "dataset"),
    ("--data-seed", "3", "data_seed"),
    ("--impl", "fp", "impl"),
    ("--n", "3", "n"),
])
def test_cli_refuses_a_changed_resume_in_one_line(cli, capsys, opt, value, key):
    d, args = cli
    if opt == "--model":
        value = str(d / value)
    before = _snapshot(d / "run")
    capsys.readouterr()
    assert main(_with(args, opt, value)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("axlab: ") and f"was made with {key}=" in err, err
    assert _snapshot(d / "run") == before
    # the unchanged command still resumes (nothing left to do); records and identity unchanged
    assert main(args) == 0
    after = _snapshot(d / "run")
    assert after["r.jsonl"] == before["r.jsonl"] and after["r.meta.json"] == before["r.meta.json"]
