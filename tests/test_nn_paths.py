"""Per-layer exact-path selection (nn.paths): every path gives the same logits, the choice cache
is keyed by layer shape, LUT, batch size, threads and candidates, and a bad cache file is
ignored with a warning. No timing assertions: which path wins depends on the machine."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwsim.errors import AxlabError
from nn import paths
from hwsim.lut import Lut
from nn.engine import IntegerEngine
from nn.lut_forms import fused_factor, lut_factor, lut_product_factor, product_table
from tests.nn_fixtures import fullrank_lut, lowrank_lut


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """A private, empty choice cache and no inherited default path for every test."""
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(paths.ENV, "auto")  # recorded, so the CLI tests' --path is undone afterwards
    monkeypatch.delenv(paths.ENV)
    return tmp_path / "cache" / "nn_paths"


def _model():
    """MinNet with random weights, PTQ-calibrated on random images (the paths do not care about
    the accuracy), and 24 test images."""
    from nn.models import build_model
    from nn.train import quantize_module

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 1, 32, 32), dtype=np.uint8)
    return quantize_module(build_model("minnet", 1, 10).eval(), x, arch="minnet"), x[:24]


_MODEL = None


def model():
    global _MODEL
    if _MODEL is None:
        _MODEL = _model()
    return _MODEL


def truncated_lut(ka: int, kb: int, signed: bool) -> Lut:
    """Exact product of operands with their ka / kb low bits cleared: error rank 2, but the
    product table itself has rank 1 (signed) or 2 (unsigned), so the fused path is offered."""
    v = np.arange(256) - (128 if signed else 0)
    t = np.multiply.outer((v >> ka) << ka, (v >> kb) << kb)
    return Lut(f"trunc{ka}{kb}{'s' if signed else 'u'}", t.astype(np.int32), 8, 8, signed)


LUTS = [lowrank_lut(11, 2, signed=True), lowrank_lut(12, 3, signed=False), fullrank_lut(13, signed=True),
        truncated_lut(2, 3, signed=True), truncated_lut(1, 2, signed=False)]


def test_fused_factor_offered_only_with_fewer_terms():
    assert [fused_factor(lut) is not None for lut in LUTS] == [False, False, False, True, True]
    for lut in LUTS[3:]:
        f, e = lut_product_factor(lut), lut_factor(lut)
        assert f.rank < 1 + e.rank
        assert np.array_equal(f.U @ f.V, product_table(lut))  # the whole table, exactly
        # and the product table is what the gather kernels' corrections imply: LUT - zw * a_op
        zw = 0 if lut.signed else 128
        assert np.array_equal(product_table(lut), lut.table.astype(np.int64) - zw * lut.values_a()[:, None])


@pytest.mark.parametrize("lut", LUTS, ids=["signed", "unsigned", "fullrank", "trunc-signed", "trunc-unsigned"])
def test_auto_equals_every_forced_path(lut):
    b, x = model()
    luts = [lut] * len(b.layers())
    ref = IntegerEngine(b, luts, "torch").logits(x)
    assert len(np.unique(ref)) > 10  # a non-degenerate network: the comparison can fail
    auto = IntegerEngine(b, luts, "numba", path="auto")
    got = auto.logits(x, batch=16)  # two batch shapes: 16 and 8
    assert np.array_equal(got, ref), "auto"
    rep = auto.path_report()
    expect = {"gather"} | ({"lowrank"} if lut_factor(lut) is not None else set()) | (
        {"fused"} if fused_factor(lut) is not None else set())
    offered = set()
    for name, r in rep.items():
        # a low-rank form whose magnitudes allow no exact float convolution is left out per layer
        assert "gather" in r["candidates"] and set(r["candidates"]) <= expect, name
        offered |= set(r["candidates"])
        assert [s["input"][0] for s in r["shapes"]] == [16, 8]
        if len(r["candidates"]) > 1:  # measured on the first batch of each shape, every candidate timed
            assert all(s["how"] == "measured" and set(s["ms"]) == set(r["candidates"]) for s in r["shapes"])
    assert offered == expect  # every path the LUT has is exercised somewhere in the network
    for p in ("lowrank", "fused", "gather"):
        eng = IntegerEngine(b, luts, "numba", path=p)
        assert np.array_equal(eng.logits(x, batch=16), ref), p
        macs = [m for lp in eng.paths.values() for m in lp.cands.values()]
        assert len(macs) == len(b.layers())  # forced: one candidate per layer
        kinds = {getattr(m, "kind") for m in macs}
        if p == "gather" or not (expect - {"gather"}):
            assert kinds == {"gather-numba"}, p
        elif p == "lowrank":
            assert "conv" in kinds and kinds <= {"conv", "gather-numba"}, p
        else:
            assert ("fused" in kinds) == ("fused" in expect) and kinds <= {"fused", "conv", "gather-numba"}, p
    # each candidate alone, chosen through the cache (as if the machine had measured it fastest)
    for p in sorted(expect):
        for f in Path(paths.cache_dir(), "nn_paths").glob("*.json"):
            rec = json.loads(f.read_text())
            if p in rec["key"]["candidates"]:
                rec["path"] = p
                f.write_text(json.dumps(rec))
        eng = IntegerEngine(b, luts, "numba")
        assert np.array_equal(eng.logits(x, batch=16), ref), p
        for r in eng.path_report().values():
            assert all(s["how"] == ("cache" if len(r["candidates"]) > 1 else "only") for s in r["shapes"])
            assert r["path"] == p or p not in r["candidates"]


def test_default_path_from_environment(monkeypatch):
    b, x = model()
    luts = [lowrank_lut(11, 2)] * len(b.layers())
    monkeypatch.setenv(paths.ENV, "gather")
    assert IntegerEngine(b, luts, "numba").path == "gather"
    assert IntegerEngine(b, luts, "numba", lowrank=False).path == "gather"
    monkeypatch.setenv(paths.ENV, "fastest")
    with pytest.raises(AxlabError, match=r"\$AXLAB_NN_PATH 'fastest'.*auto, lowrank, fused, gather"):
        IntegerEngine(b, luts, "numba")
    monkeypatch.delenv(paths.ENV)
    with pytest.raises(AxlabError, match="--path lowrank needs --backend numba"):
        IntegerEngine(b, luts, "torch", path="lowrank")
    with pytest.raises(AxlabError, match="--path fused needs --backend numba"):
        IntegerEngine(b, luts, "cuda", path="fused")
    for p in ("lowrank", "fused"):
        with pytest.raises(AxlabError, match=f"--path {p} contradicts --no-lowrank"):
            IntegerEngine(b, luts, "numba", lowrank=False, path=p)


# ---------------------------------------------------------------- the cache, on fake candidates
class Counted:
    """A LayerPaths over two fake MACs with equal outputs, counting measurements."""

    def __init__(self, shape=None, lut="a" * 64, desc=("conv(R=2)", "gather-numba")) -> None:
        self.runs = 0
        d = dict(zip(("lowrank", "gather"), desc))
        self.lp = paths.LayerPaths("L", {"lowrank": "lowrank", "gather": "gather"}, self.run, "auto",
                                   shape or {"C": 4, "Co": 8, "k": [3, 3]}, lut, lambda m: d[m])

    def run(self, mac, x):
        self.runs += 1
        return x * 2

    def choose(self, x) -> str:
        self.lp.chosen.clear()  # forget the in-memory choice: only the disk cache remains
        self.lp(x)
        return self.lp.current()[1]


def test_cache_key_components(monkeypatch):
    x = torch.zeros((4, 4, 6, 6))
    assert Counted().choose(x) == "measured"
    assert Counted().choose(x) == "cache"
    assert Counted().choose(torch.zeros((3, 4, 6, 6))) == "cache"      # batch size class: 3 -> 4
    assert Counted().choose(torch.zeros((2, 4, 6, 6))) == "measured"   # batch size (class)
    assert Counted().choose(torch.zeros((4, 4, 7, 6))) == "measured"   # input height (layer shape)
    assert Counted(shape={"C": 4, "Co": 16, "k": [3, 3]}).choose(x) == "measured"  # layer shape
    assert Counted(lut="b" * 64).choose(x) == "measured"               # LUT sha256
    assert Counted(desc=("conv(R=3)", "gather-numba")).choose(x) == "measured"  # candidate set
    real = paths._threads()
    monkeypatch.setattr(paths, "_threads", lambda: {**real, "numba": real["numba"] + 1})
    assert Counted().choose(x) == "measured"                           # thread count
    monkeypatch.setattr(paths, "_threads", lambda: real)
    assert Counted().choose(x) == "cache"
    assert Counted().choose(torch.zeros((2, 4, 6, 6))) == "cache"


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"gather"',
                                     b'{"key": {}, "path": "gather"}', "wrong path", "bad path type"])
def test_corrupt_cache_file_is_ignored_with_a_warning(_cache, content):
    x = torch.zeros((4, 4, 6, 6))
    c = Counted()
    assert c.choose(x) == "measured"
    (f,) = _cache.glob("*.json")
    if content in ("wrong path", "bad path type"):
        rec = json.loads(f.read_text())
        rec["path"] = "turbo" if content == "wrong path" else ["gather"]
        content = json.dumps(rec).encode()
    f.write_bytes(content)
    with pytest.warns(RuntimeWarning, match="ignored"):
        assert c.choose(x) == "measured"
    assert json.loads(f.read_text())["path"] in ("lowrank", "gather")  # rewritten, valid again
    assert c.choose(x) == "cache"


def test_paths_must_agree():
    lp = paths.LayerPaths("L", {"a": 1, "b": 2}, lambda m, x: x * m, "auto", {"C": 1}, "", str)
    with pytest.raises(RuntimeError, match="path b differs from path a"):
        lp(torch.ones((1, 1, 2, 2)))


def test_eval_json_reports_paths(tmp_path):
    from flows.cli import main
    from nn.api import save_model

    b, _ = model()
    save_model(b, tmp_path / "m.axm")
    lut = lowrank_lut(11, 2)
    lut.save(tmp_path / "l.npz")
    res = {}
    for p in ("gather", "auto"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["eval", "--model", str(tmp_path / "m.axm"), "--dataset", "digits", "--limit", "20",
                       "--impl", "ax", "--multiplier", str(tmp_path / "l.npz"), "--path", p, "--json"])
        assert rc == 0
        res[p] = json.loads(out.getvalue())
        paths.set_default_path("auto")
    assert res["gather"]["accuracy"] == res["auto"]["accuracy"]
    assert set(res["gather"]["paths"]) == set(b.layers())
    assert all(r["path"] == "gather" and r["mode"] == "forced" for r in res["gather"]["paths"].values())
    assert all(r["path"] in ("lowrank", "gather") and r["mode"] == "auto" for r in res["auto"]["paths"].values())
