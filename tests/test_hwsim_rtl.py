"""cocotb + Verilator runs on real netlists, the LUT store, the built-in family, sampled mode."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

from hwsim.lut import Lut, exact_table
from tests.hwsim_util import cached_luts, evo, needs_evoapprox, run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rtl-cache")


@needs_evoapprox
def test_verilator_luts_equal_gates_and_headers(cache, tmp_path):
    out = tmp_path / "luts"
    proc = run_cli("lut", "build", str(evo("1KV8")), str(evo("1L12")), "--sim", "verilator", "--out", str(out),
                   cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert "verilator" in proc.stdout
    for name in ("1KV8", "1L12"):
        lut = Lut.load(out / f"mul8s_{name}.npz")
        assert lut.table.shape == (256, 256) and lut.table.dtype == np.int32 and lut.signed
        prov = lut.meta["provenance"]
        assert prov["simulator"] == "verilator" and prov["verified_against_gates"] is True
        assert lut.meta["header_match"] is True
        assert lut.meta["cost"]["area_um2"] == {"1KV8": 711.0, "1L12": 172.2}[name]
    # the exact product where the circuit is exact: 1KV8 only errs in the low bits
    lut = Lut.load(out / "mul8s_1KV8.npz")
    assert np.abs(lut.error_table()).max() == 5
    # second run: from the cache, same table
    proc = run_cli("lut", "build", str(evo("1KV8")), "--sim", "verilator", cache=cache)
    assert proc.returncode == 0 and " cache " in proc.stdout


@needs_evoapprox
def test_verify_passes_and_fails_on_a_wrong_header(cache, tmp_path):
    proc = run_cli("lut", "verify", str(evo("1KV8")), str(evo("1L12")), cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 netlists verified" in proc.stdout
    bad = tmp_path / "mul8s_1KV8.v"
    bad.write_text(evo("1KV8").read_text().replace("// EP% = 50.00 %", "// EP% = 51.00 %"))
    proc = run_cli("lut", "verify", str(bad), cache=cache)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "ep_pct measured 50 vs header 51.00" in proc.stdout


@needs_evoapprox
def test_rtl_gate_mismatch_names_the_first_differing_pairs(cache, monkeypatch):
    from hwsim import gates, store

    monkeypatch.setenv("AXLAB_CACHE", str(cache))
    real = gates.GateGraph.evaluate

    def off_by_one(self, a, b):
        raw = real(self, a, b)
        raw[5] ^= np.uint64(1)
        return raw

    monkeypatch.setattr(gates.GateGraph, "evaluate", off_by_one)
    with pytest.raises(store.Mismatch, match=r"1 of 65536 pairs differ; first: A=-128 B=-123"):
        store.build_luts([evo("1KV8")], sim="verilator", use_cache=False)


@needs_evoapprox
def test_corrupted_cache_file_is_rebuilt_not_used(cache, monkeypatch):
    from hwsim.store import build_luts

    monkeypatch.setenv("AXLAB_CACHE", str(cache))
    first = build_luts([evo("1KV8")], sim="gates")[0]
    files = [p for p in cached_luts(cache) if Lut.load(p).meta["provenance"]["simulator"] == "gates"]
    assert len(files) == 1
    files[0].write_bytes(files[0].read_bytes()[:200])  # truncated
    again = build_luts([evo("1KV8")], sim="gates")[0]
    assert not again.cached and again.lut.sha256 == first.lut.sha256
    assert Lut.load(files[0]).sha256 == first.lut.sha256  # rewritten whole
    assert build_luts([evo("1KV8")], sim="gates")[0].cached


def test_builtin_family_lists_offline(cache):
    proc = run_cli("lut", "list", "--builtin", "--json", cache=cache)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    names = [r["name"] for r in rows]
    assert names[0] == "mul8s_bi_exact" and len(names) >= 6
    assert rows[0]["mae_pct"] == 0 and all(r["mae_pct"] > 0 for r in rows[1:])
    assert all(r["signed"] for r in rows) and all(r["cost_source"] == "estimate-45nm" for r in rows)
    # the cost estimate falls as the approximation grows
    assert rows[-1]["area_um2"] < rows[0]["area_um2"] and rows[-1]["power_mw"] < rows[0]["power_mw"]


def test_resolve_names_paths_and_unknown(cache, monkeypatch, tmp_path):
    from hwsim.errors import AxlabError
    from hwsim.store import resolve

    monkeypatch.setenv("AXLAB_CACHE", str(cache))
    exact = resolve("exact")
    assert exact.name == "mul8s_bi_exact" and exact.is_exact()
    assert resolve("mul8s_bi_tr2").meta["provenance"]["simulator"] == "verilator"
    path = exact.save(tmp_path / "e.npz")
    assert resolve(str(path)).sha256 == exact.sha256
    with pytest.raises(AxlabError, match="unknown multiplier 'mul8s_nothing'.*known: .*mul8s_bi_exact"):
        resolve("mul8s_nothing")


def _ariths_unsigned(tmp_path, bits: int, name: str):
    from ariths_gen.multi_bit_circuits.multipliers import UnsignedArrayMultiplier
    from ariths_gen.wire_components import Bus

    buf = io.StringIO()
    UnsignedArrayMultiplier(Bus("A", bits), Bus("B", bits), name=name).get_v_code_flat(buf)
    path = tmp_path / f"{name}.v"
    path.write_text(buf.getvalue().replace(f"{name}_out", "O"))
    return path


def test_unsigned_netlist_lut_on_verilator(cache, tmp_path):
    src = _ariths_unsigned(tmp_path, 6, "mul6u_arr")
    out = tmp_path / "out"
    proc = run_cli("lut", "build", str(src), "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr
    lut = Lut.load(out / "mul6u_arr.npz")
    assert not lut.signed and np.array_equal(lut.table, exact_table(6, 6, False))


def test_sampled_mode_for_a_12x12_multiplier(cache, tmp_path):
    src = _ariths_unsigned(tmp_path, 12, "mul12u_arr")
    out = tmp_path / "out"
    proc = run_cli("lut", "build", str(src), "--sampled", "2000", "--seed", "3", "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr
    with np.load(out / "mul12u_arr.sampled.npz") as z:
        a, b, prod = z["a"], z["b"], z["product"]
        meta = json.loads(str(z["meta"]))
    assert a.size == 2000 and np.array_equal(prod, a * b) and meta["metrics"]["ep_pct"] == 0
    assert a.max() > 2048  # really 12-bit operands
    shutil.rmtree(out)
