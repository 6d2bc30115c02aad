"""Netlist formats beyond the 13 reference files: library cells, older headers, constant
expressions, product ports not named O, non-multipliers, batches with bad files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hwsim.cells import cell_library_verilog, known_cells, undefined_cells
from hwsim.lut import exact_table
from hwsim.metrics import compare_with_header, error_metrics
from hwsim.netlist import NetlistInfo, parse_header, read_netlist, signedness_from_name
from hwsim.parse import parse_netlist
from hwsim.store import build_luts, simulation_info
from tests.hwsim_util import (  # noqa: F401 (private_cache: autouse)
    DATA, all_pairs, private_cache, cached_luts, run_cli)


# ----------------------------------------------------------------------------- cell library
_MAJ = lambda a, b, c: (a & b) | (b & c) | (a & c)  # noqa: E731
CELL_TRUTH = {  # name: (input pins, {output pin: function of the inputs})
    "AND2X1": ("A B", {"Y": lambda a, b: a & b}),
    "NAND2X1": ("A B", {"Y": lambda a, b: 1 - (a & b)}),
    "NAND3X1": ("A B C", {"Y": lambda a, b, c: 1 - (a & b & c)}),
    "OR2X1": ("A B", {"Y": lambda a, b: a | b}),
    "NOR2X1": ("A B", {"Y": lambda a, b: 1 - (a | b)}),
    "NOR3X1": ("A B C", {"Y": lambda a, b, c: 1 - (a | b | c)}),
    "XOR2X1": ("A B", {"Y": lambda a, b: a ^ b}),
    "XNOR2X1": ("A B", {"Y": lambda a, b: 1 - (a ^ b)}),
    "INVX1": ("A", {"Y": lambda a: 1 - a}),
    "BUFX2": ("A", {"Y": lambda a: a}),
    "AOI21X1": ("A B C", {"Y": lambda a, b, c: 1 - ((a & b) | c)}),
    "OAI21X1": ("A B C", {"Y": lambda a, b, c: 1 - ((a | b) & c)}),
    "AOI22X1": ("A B C D", {"Y": lambda a, b, c, d: 1 - ((a & b) | (c & d))}),
    "OAI22X1": ("A B C D", {"Y": lambda a, b, c, d: 1 - ((a | b) & (c | d))}),
    "MUX2X1": ("A B S", {"Y": lambda a, b, s: b if s else a}),
    "HAX1": ("A B", {"YS": lambda a, b: a ^ b, "YC": lambda a, b: a & b}),
    "FAX1": ("A B C", {"YS": lambda a, b, c: a ^ b ^ c, "YC": _MAJ}),
    "AND2_X1": ("A1 A2", {"ZN": lambda a, b: a & b}),
    "AOI21_X1": ("A B1 B2", {"ZN": lambda a, b1, b2: 1 - (a | (b1 & b2))}),
    "MUX2_X1": ("A B S", {"Z": lambda a, b, s: b if s else a}),
    "FA_X1": ("A B CI", {"S": lambda a, b, c: a ^ b ^ c, "CO": _MAJ}),
}


@pytest.mark.parametrize("cell", sorted(CELL_TRUTH))
def test_library_cell_truth_tables(tmp_path, cell):
    """Each built-in cell, instantiated undefined in a netlist, evaluates to its documented function
    (MUX2X1 non-inverting: the reading that reproduces the EvoApprox8b headers)."""
    ins, outs = CELL_TRUTH[cell]
    pins = ins.split()
    out_names = sorted(outs)
    conns = [f".{p}(A[{k}])" for k, p in enumerate(pins)] + [f".{o}(O[{k}])" for k, o in enumerate(out_names)]
    src = tmp_path / "cell.v"
    src.write_text(f"module t (A, B, O);\n  input [{len(pins) - 1}:0] A;\n  input B;\n  output [{len(outs) - 1}:0] O;\n"
                   f"  {cell} u0 ({', '.join(conns)});\nendmodule\n")
    p = parse_netlist(read_netlist(src))
    assert p.library_cells == (cell,)
    codes = np.arange(2 ** len(pins), dtype=np.uint64)
    got = p.graph.evaluate(codes, np.zeros_like(codes)).tolist()
    for code, value in zip(range(2 ** len(pins)), got):
        bits = [(code >> k) & 1 for k in range(len(pins))]
        want = sum(outs[o](*bits) << k for k, o in enumerate(out_names))
        assert value == want, (cell, bits)


def test_cell_library_verilog_and_scan():
    text = (DATA / "mul2u_cells.v").read_text()
    used = undefined_cells(text)
    assert used == ["AOI21X1", "BUFX2", "FAX1", "HAX1", "INVX1", "MUX2X1", "NAND2X1", "NOR2X1", "OAI21X1", "XNOR2X1"]
    verilog = cell_library_verilog(used + ["NOT_A_CELL"])
    assert verilog.count("module ") == len(used) and "NOT_A_CELL" not in verilog
    assert cell_library_verilog([]) == ""
    assert {"AND2X1", "HAX1", "FAX1", "MUX2X1", "AOI22X1", "OAI22X1", "INV_X1"} <= set(known_cells())
    # a cell defined in the file wins over the library (mul2u_hand.v defines its own HAX)
    assert undefined_cells((DATA / "mul2u_hand.v").read_text()) == []


def test_library_cell_netlist_with_z_output_is_exact_and_simulation_text_adapts_it():
    info = read_netlist(DATA / "mul2u_cells.v")
    p = parse_netlist(info)
    assert p.ports == ("A", "B", "Z") and "MUX2X1" in p.library_cells
    a, b = all_pairs(2, 2)
    assert p.graph.evaluate(a, b).tolist() == (a * b).tolist()
    sim = simulation_info(info, p)
    assert sim.module == "mul2u_cells__axlab_io" and sim.path == info.path
    assert "module MUX2X1" in sim.text and "assign Y = S ? B : A;" in sim.text
    assert ".Z(O)" in sim.text
    # a netlist with plain A/B/O ports and no library cells is simulated as is
    plain = read_netlist(DATA / "mul2u_hand.v")
    assert simulation_info(plain, parse_netlist(plain)) is plain


def test_evoapprox8b_mangled_pdkgen_cell_names(tmp_path):
    """EvoApprox8b .v files instantiate NAND2X1 as the undefined NPDKGEPDKGENNAND2X1 (and define
    AND2X1 as PDKGEPDKGENNAND2X1): the mangled name resolves to the cell it stands for."""
    src = tmp_path / "mul1u_m.v"
    src.write_text("module mul1u_m (A, B, O);\n input A;\n input B;\n output [1:0] O;\n wire n;\n"
                   " NPDKGEPDKGENNAND2X1 u0 (.A(A), .B(B), .Y(n));\n PDKGENINVX1 u1 (.A(n), .Y(O[0]));\n"
                   " assign O[1] = 1'b0;\nendmodule\n"
                   "module PDKGENINVX1(input A, output Y);\n assign Y = ~A;\nendmodule\n")
    info = read_netlist(src)
    assert undefined_cells(info.text) == ["NPDKGEPDKGENNAND2X1"]
    p = parse_netlist(info)
    assert p.library_cells == ("NPDKGEPDKGENNAND2X1",)
    a, b = all_pairs(1, 1)
    assert p.graph.evaluate(a, b).tolist() == (a * b).tolist()
    assert "module NPDKGEPDKGENNAND2X1 (input A, input B, output Y);\n  assign Y = ~(A & B);" in \
        simulation_info(info, p).text


def test_undefined_cell_outside_the_library_is_still_refused(tmp_path):
    src = tmp_path / "mul1u_x.v"
    src.write_text("module mul1u_x (A, B, O);\n input A;\n input B;\n output [1:0] O;\n"
                   " MYSTERY2X1 u (.A(A), .B(B), .Y(O[0]));\n assign O[1] = 1'b0;\nendmodule\n")
    from hwsim.errors import NetlistError

    with pytest.raises(NetlistError, match="unknown cell 'MYSTERY2X1'"):
        parse_netlist(read_netlist(src))


def test_implicit_wires_in_port_connections(tmp_path):
    src = tmp_path / "mul1u_imp.v"
    src.write_text("module mul1u_imp (A, B, O);\n input A;\n input B;\n output [1:0] O;\n"
                   " AND2X1 u (.A(A), .B(B), .Y(p));\n buf b0 (q, p);\n assign O = {1'b0, q};\nendmodule\n")
    p = parse_netlist(read_netlist(src))
    a, b = all_pairs(1, 1)
    assert p.graph.evaluate(a, b).tolist() == (a * b).tolist()


# ----------------------------------------------------------------------------- older headers
def test_legacy_header_keys_units_and_precision():
    h = parse_header((DATA / "mul2u_legacy.v").read_text())
    assert set(h) == {"area_um2", "delay_ns", "power_mw", "mae", "mse", "mre_pct", "wce", "wcre_pct", "ep_pct"}
    assert all(v.legacy for v in h.values())
    assert h["power_mw"].value == pytest.approx(0.0125)  # "12.50" printed in uW
    assert h["area_um2"].value == 20.0 and h["delay_ns"].value == pytest.approx(0.1)
    assert h["mre_pct"].value == pytest.approx(1.39) and h["mre_pct"].resolution() == pytest.approx(0.005)
    assert h["wcre_pct"].resolution() == pytest.approx(0.5)  # "22.000000" is 22 reprinted with %f
    # the current keys are not legacy and keep their printed precision
    new = parse_header("// MRE% = 0.280 %\n// PDK45_PWR = 0.422 mW\nmodule x(); endmodule\n")
    assert not new["mre_pct"].legacy and new["mre_pct"].resolution() == pytest.approx(5e-4)
    # "(180)" figures are for another process and a power already in mW stays as is
    h2 = parse_header("// Power  (180) = 2199.80\n// Power  (45) = 0.211400\n// EP = 97.8 %\nmodule x(); endmodule")
    assert h2["power_mw"].value == pytest.approx(0.2114) and set(h2) == {"power_mw", "ep_pct"}


def test_legacy_header_figures_are_reproduced_with_the_older_mre_definition(tmp_path):
    lut = build_luts([DATA / "mul2u_legacy.v"], sim="gates")[0].lut
    assert lut.meta["header_match"] is True
    m = lut.meta["metrics"]
    assert m["mre_all_pct"] == pytest.approx(100 * (2 / 9) / 16)  # over all 16 pairs, |e| / max(1, exact)
    assert m["mre_pct"] == pytest.approx(100 * (2 / 9) / 9)  # current definition: non-zero products only
    assert lut.meta["cost"]["power_mw"] == pytest.approx(0.0125)
    # the current definition's value in an older header does not pass
    text = (DATA / "mul2u_legacy.v").read_text().replace("MRE = 1.390000 %", "MRE = 2.470000 %")
    info = NetlistInfo(tmp_path / "x.v", text, "mul2u_legacy", parse_header(text))
    checks = compare_with_header(error_metrics(lut), info.published, 4)
    assert [c.key for c in checks if not c.ok] == ["mre_pct"]


def test_relative_errors_on_zero_products():
    """Current headers leave zero exact products out of MRE% and WCRE% (mul8u_2AC: 32 x 0 -> 36
    would make WCRE% 3600, the header says 3100); older headers divide by max(1, |exact|)."""
    from hwsim.lut import Lut

    table = exact_table(2, 2, False).copy()
    table[2, 0] = 3  # 2 x 0 -> 3
    table[3, 3] = 8  # 3 x 3 -> 8
    m = error_metrics(Lut("z", table, 2, 2, False))
    assert m["wcre_pct"] == pytest.approx(100 / 9) and m["mre_pct"] == pytest.approx(100 / 9 / 9)
    assert m["wcre_all_pct"] == pytest.approx(300) and m["mre_all_pct"] == pytest.approx((300 + 100 / 9) / 16)


def test_crlf_evoapprox8b_file_verifies_and_is_unsigned(tmp_path):
    """EvoApprox8b files have CRLF line ends and mulN_NNN names without s/u (all unsigned)."""
    src = tmp_path / "mul2_007_pdk45.v"
    src.write_bytes((DATA / "mul2u_legacy.v").read_text().replace("mul2u_legacy", "mul2_007")
                    .replace("\n", "\r\n").encode())
    info = read_netlist(src)
    assert info.module == "mul2_007" and info.signed_from_name is False
    assert signedness_from_name("mul8_001") is None  # the name alone says nothing
    proc = run_cli("lut", "verify", "--sim", "gates", str(src), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 1 netlists verified" in proc.stdout and "6 header figures match" in proc.stdout


# ----------------------------------------------------------------------------- constant expressions
def test_constant_expressions_in_widths_indices_and_replications():
    p = parse_netlist(read_netlist(DATA / "mul2u_constexpr.v"))
    assert (p.bits_a, p.bits_b, p.bits_o) == (2, 2, 4)
    a, b = all_pairs(2, 2)
    assert p.graph.evaluate(a, b).tolist() == (a * b).tolist()


def test_wide_constant_width_expression(tmp_path):
    src = tmp_path / "mul4s_w.v"
    src.write_text("module mul4s_w (A, B, O);\n input [4-1:0] A;\n input [2*2-1:0] B;\n output [2*4-1:0] O;\n"
                   " wire [(2*4)-1:0] ea, eb;\n assign ea = {{(8-4){A[4-1]}}, A};\n assign eb = {{4{B[3]}}, B};\n"
                   " assign O = (eb[0] ? ea : 8'd0) + (eb[1] ? {ea[6:0], 1'b0} : 8'd0)\n"
                   "          + (eb[2] ? {ea[5:0], 2'b0} : 8'd0) - (eb[3] ? {ea[4:0], 3'b0} : 8'd0);\nendmodule\n")
    lut = build_luts([src], sim="gates")[0].lut
    assert lut.signed and np.array_equal(lut.table, exact_table(4, 4, True))


# ----------------------------------------------------------------------------- ports, adders
def test_z_output_builds_and_ambiguous_outputs_are_refused(tmp_path):
    lut = build_luts([DATA / "mul2u_cells.v"], sim="gates")[0].lut
    assert not lut.signed and np.array_equal(lut.table, exact_table(2, 2, False))
    assert lut.meta["provenance"]["ports"] == ["A", "B", "Z"]
    two = tmp_path / "mul1u_two.v"
    two.write_text("module mul1u_two (A, B, Z, P);\n input A;\n input B;\n output [1:0] Z;\n output [1:0] P;\n"
                   " assign Z = {1'b0, A & B};\n assign P = Z;\nendmodule\n")
    proc = run_cli("lut", "build", str(two), "--sim", "gates", cache=tmp_path / "cache")
    assert proc.returncode != 0 and "no A/B/O ports" in proc.stderr and str(two) in proc.stderr


ADDER = ("module {name} (A, B, O);\n input [1:0] A;\n input [1:0] B;\n output [{w}:0] O;\n"
         " assign O = {{{pad}A}} + {{{pad}B}};\nendmodule\n")


@pytest.mark.parametrize("name,width,why", [("add2u_0AB", 2, "named like an adder"),
                                            ("add2u_0AC", 3, "named like an adder"),
                                            ("mul2u_sum", 2, "output width 3 != 2+2")])
def test_adders_are_refused_unless_allowed(tmp_path, name, width, why):
    src = tmp_path / f"{name}.v"
    src.write_text(ADDER.format(name=name, w=width, pad="1'b0, " if width == 2 else "2'b0, "))
    cache = tmp_path / "cache"
    proc = run_cli("lut", "build", str(src), "--sim", "gates", cache=cache)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(src) in lines[0] and why in lines[0] and "--allow-non-multiplier" in lines[0]
    assert cached_luts(cache) == []
    proc = run_cli("lut", "build", str(src), "--sim", "gates", "--allow-non-multiplier", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert len(cached_luts(cache)) == 1


# ----------------------------------------------------------------------------- batches
def _batch(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for f in ("mul2u_hand.v", "mul2u_legacy.v"):
        shutil.copy(DATA / f, lib / f)
    (lib / "mul2u_loop.v").write_text(
        "module mul2u_loop (A, B, O);\n input [1:0] A;\n input [1:0] B;\n output [3:0] O;\n wire x, y;\n"
        " assign x = y & A[0];\n assign y = x | B[0];\n assign O = {3'b0, x};\nendmodule\n")
    (lib / "add2u_bad.v").write_text(ADDER.format(name="add2u_bad", w=2, pad="1'b0, "))
    return lib


def test_batch_build_continues_past_bad_files(tmp_path):
    lib = _batch(tmp_path)
    cache = tmp_path / "cache"
    proc = run_cli("lut", "build", str(lib), "--sim", "gates", "--out", str(tmp_path / "out"), cache=cache)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2, proc.stderr
    assert any(str(lib / "mul2u_loop.v") in ln and "combinational loop" in ln for ln in lines)
    assert any(str(lib / "add2u_bad.v") in ln and "not a multiplier" in ln for ln in lines)
    assert all(ln.startswith("axlab: ") for ln in lines)
    assert "mul2u_hand" in proc.stdout and "mul2u_legacy" in proc.stdout
    assert len(cached_luts(cache)) == 2  # the two good ones, nothing for the bad ones
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npz")) == ["mul2u_hand.npz", "mul2u_legacy.npz"]


def test_batch_verify_and_list_report_each_failure_and_exit_non_zero(tmp_path):
    lib = _batch(tmp_path)
    cache = tmp_path / "cache"
    proc = run_cli("lut", "verify", str(lib), "--sim", "gates", cache=cache)
    assert proc.returncode == 1
    assert "2 of 4 netlists verified" in proc.stdout
    assert proc.stdout.count("FAIL") == 2 and proc.stdout.count("ok  ") == 2
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 2
    proc = run_cli("lut", "list", str(lib), str(tmp_path / "missing"), "--sim", "gates", "--json", cache=cache)
    assert proc.returncode == 1
    assert "no such file or folder" in proc.stderr and str(tmp_path / "missing") in proc.stderr
    import json

    assert sorted(r["name"] for r in json.loads(proc.stdout)) == ["mul2u_hand", "mul2u_legacy"]


def test_build_luts_api_keeps_raising_without_an_errors_list(tmp_path):
    from hwsim.errors import NetlistError
    from hwsim.store import Failure

    lib = _batch(tmp_path)
    with pytest.raises(NetlistError):
        build_luts([lib], sim="gates")
    assert cached_luts(tmp_path / "cache") == []
    errors: list[Failure] = []
    results = build_luts([lib], sim="gates", errors=errors)
    assert sorted(r.lut.name for r in results) == ["mul2u_hand", "mul2u_legacy"]
    assert sorted(f.path.name for f in errors) == ["add2u_bad.v", "mul2u_loop.v"]
    assert all("\n" not in f.message and str(f.path) in f.message for f in errors)


# ----------------------------------------------------------------------------- RTL (one Verilator build)
def test_rtl_simulates_library_cells_z_port_and_legacy_netlists_in_one_build(tmp_path):
    sim = "verilator"
    cache = tmp_path / "cache"
    proc = run_cli("lut", "verify", "--sim", sim, "--jobs", "1", str(DATA / "mul2u_cells.v"),
                   str(DATA / "mul2u_legacy.v"), cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 netlists verified" in proc.stdout and "rtl==gates on 16 pairs" in proc.stdout
    assert len(list((cache / "sims").glob(f"{sim}-*"))) == 1  # both in one combined build



def test_top_module_is_the_uninstantiated_one_whatever_the_order(tmp_path):
    src = tmp_path / "mul1u_q_pdk45.v"
    src.write_text("module CELLX (input A, input B, output Y);\n assign Y = A & B;\nendmodule\n"
                   "module mul1u_q (A, B, O);\n input A;\n input B;\n output [1:0] O;\n"
                   " CELLX u (.A(A), .B(B), .Y(O[0]));\n assign O[1] = 1'b0;\nendmodule\n")
    info = read_netlist(src)
    assert info.module == "mul1u_q" and info.signed_from_name is False
    a, b = all_pairs(1, 1)
    assert parse_netlist(info).graph.evaluate(a, b).tolist() == (a * b).tolist()
