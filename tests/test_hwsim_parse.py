"""Parser and bit-parallel gate evaluator on tiny hand-written netlists, plus LUT metrics."""
from __future__ import annotations

import numpy as np
import pytest

from hwsim.gates import to_signed
from hwsim.lut import Lut, exact_lut, exact_table
from hwsim.metrics import compare_with_header, error_metrics
from hwsim.netlist import Published, parse_header, read_netlist, signedness_from_name
from hwsim.parse import parse_netlist
from hwsim.store import build_luts
from tests.hwsim_util import (  # noqa: F401 (private_cache: autouse)
    DATA, all_pairs, private_cache, EVOAPPROX, needs_evoapprox)


def test_half_adder_truth_table():
    p = parse_netlist(read_netlist(DATA / "half_adder.v"))
    assert (p.bits_a, p.bits_b, p.bits_o) == (1, 1, 2)
    a, b = all_pairs(1, 1)
    assert p.graph.evaluate(a, b).tolist() == [0, 1, 1, 2]  # {carry, sum} of a + b
    assert p.graph.gate_counts() == {"and": 1, "xor": 1}


def test_hand_written_2x2_unsigned_multiplier_is_exact():
    p = parse_netlist(read_netlist(DATA / "mul2u_hand.v"))
    a, b = all_pairs(2, 2)
    assert p.graph.evaluate(a, b).tolist() == (a * b).tolist()


def test_behavioural_signed_2x2_multiplier_is_exact():
    """+/-, ?:, replication and part selects evaluate with Verilog's width rules."""
    lut = build_luts([DATA / "mul2s_hand.v"], sim="gates")[0].lut
    assert lut.signed and lut.table.shape == (4, 4)
    assert np.array_equal(lut.table, exact_table(2, 2, True))
    assert lut.table[0, 0] == 4  # index 0 is the most negative value: (-2) * (-2)


def test_evaluator_handles_large_chunks_and_arbitrary_order():
    p = parse_netlist(read_netlist(DATA / "mul2u_hand.v"))
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, 1000, dtype=np.uint64)
    b = rng.integers(0, 4, 1000, dtype=np.uint64)
    assert np.array_equal(p.graph.evaluate(a, b), a * b)


def test_to_signed():
    assert to_signed(np.array([0, 1, 7, 8, 15], dtype=np.uint64), 4, True).tolist() == [0, 1, 7, -8, -1]
    assert to_signed(np.array([8, 15], dtype=np.uint64), 4, False).tolist() == [8, 15]


def test_header_parsing_and_precision():
    text = "// MAE% = 0.0018 %\n// MSE = 47164.981e4 \n// PDK45_PWR = 0.422 mW\n// FPGA_LUT = 16\nmodule x(); endmodule"
    h = parse_header(text)
    assert h["mae_pct"].value == pytest.approx(0.0018) and h["mae_pct"].resolution() == pytest.approx(5e-5)
    assert h["mse"].value == pytest.approx(471649810.0) and h["mse"].resolution() == pytest.approx(5.0)
    assert h["power_mw"].value == pytest.approx(0.422)
    assert "FPGA_LUT" not in h
    assert signedness_from_name("mul8s_1KV8") is True
    assert signedness_from_name("mul12u_2AB") is False
    assert signedness_from_name("adder") is None


def test_metrics_of_a_known_error_table():
    table = exact_table(2, 2, True).copy()
    table[3, 3] += 2  # 1*1 -> 3: one wrong pair out of 16, |e| = 2, relative error 200%
    m = error_metrics(Lut("t", table, 2, 2, True))
    assert m["ep_pct"] == pytest.approx(100 / 16)
    assert m["mae"] == pytest.approx(2 / 16) and m["wce"] == 2
    assert m["mse"] == pytest.approx(4 / 16)
    assert m["mre_pct"] == pytest.approx(200 / 9)  # 3 x 3 pairs of -2..1 have a non-zero product
    assert m["wcre_pct"] == pytest.approx(200)
    assert error_metrics(exact_lut(8, True))["mae"] == 0


def test_header_comparison_flags_a_wrong_figure():
    m = {"mae": 1.25, "mae_pct": 1.25 / 2**16 * 100, "wce": 5.0, "wce_pct": 5 / 2**16 * 100,
         "wcre_pct": 500.0, "ep_pct": 50.0, "mre_pct": 0.2747, "mse": 3.75}
    good = {"mae_pct": Published(0.0018, "0.0018"), "ep_pct": Published(50.0, "50.00"), "mse": Published(3.8, "3.8")}
    assert all(c.ok for c in compare_with_header(m, good, 16))
    bad = dict(good, ep_pct=Published(51.0, "51.00"))
    assert [c.key for c in compare_with_header(m, bad, 16) if not c.ok] == ["ep_pct"]


@needs_evoapprox
def test_gate_luts_of_all_13_evoapprox_match_their_headers():
    results = build_luts([EVOAPPROX], sim="gates")
    assert len(results) == 13
    for r in results:
        assert r.lut.meta["header_match"] is True, r.lut.name
        assert r.lut.meta["cost"]["source"] == "published-pdk45"
    exact = [r.lut for r in results if r.lut.name == "mul8s_1KV6"][0]
    assert exact.is_exact()


def test_lut_save_load_roundtrip_and_corruption(tmp_path):
    from hwsim.errors import AxlabError

    lut = exact_lut(4, False)
    path = lut.save(tmp_path / "x.npz")
    back = Lut.load(path)
    assert back.sha256 == lut.sha256 and not back.signed and np.array_equal(back.table, lut.table)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(AxlabError, match="not a readable axlab LUT"):
        Lut.load(path)
