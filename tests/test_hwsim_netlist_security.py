"""No code runs from a netlist: every malicious netlist under tests/data/malicious is refused with
one line ``FILE:LINE: refused ...`` before any tool (pyverilog, Verilator, Icarus, yosys) sees
it, at every entry point (CLI, read_netlist, parse_netlist, build_luts, the RTL simulation, the
yosys cost estimate, the export's source writer); clean netlists still pass, and what a tool is
given is exactly the checked text.

The payloads write only to ``$AXLAB_PWNED`` (set to a file in the test's temporary folder) or to
a path relative to the simulator's run folder inside the test's private cache; every test runs
with cwd = its tmp_path and asserts that nothing named ``pwned*`` appeared there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError, NetlistError
from hwsim.netlist import NetlistInfo, read_netlist
from hwsim.netlist_check import check_name, check_tool_text, tool_text
from tests.hwsim_util import DATA, EVOAPPROX, REPO, cached_luts, needs_evoapprox

MALICIOUS = DATA / "malicious"

# file -> (line refused, text the message must hold)
CASES = {
    "always_block.v": (6, "keyword 'always'"),
    "attribute.v": (6, "attribute"),
    "attribute_spaced.v": (6, "attribute"),
    "bind.v": (9, "keyword 'bind'"),
    "define_continuation.v": (2, "'`define'"),
    "define_macro_system.v": (2, "'`define'"),
    "delay_event.v": (7, "operator '#'"),
    "dpi_import.v": (6, "keyword 'import'"),
    "escaped_identifier.v": (6, "escaped identifier"),
    "escaped_keyword.v": (6, "escaped identifier '\\$system'"),
    "final_block.v": (6, "keyword 'final'"),
    "fopen_fwrite.v": (7, "keyword 'initial'"),
    "generate_system.v": (6, "keyword 'generate'"),
    "hierarchical_reference.v": (7, "'.' outside a named port connection"),
    "ifdef_hidden.v": (6, "'`ifdef'"),
    "include_file.v": (6, "'`include'"),
    "initial_system.v": (6, "keyword 'initial'"),
    "keyword_reg.v": (6, "keyword 'reg'"),
    "metacomment_block.v": (6, "tool metacomment 'verilator'"),
    "metacomment_line.v": (6, "tool metacomment 'verilator'"),
    "metacomment_translate_off.v": (6, "tool metacomment 'synopsys'"),
    "non_ascii_identifier.v": (6, "character"),
    "parameter.v": (6, "keyword 'parameter'"),
    "readmemh.v": (7, "keyword 'initial'"),
    "real_number.v": (7, "number '1.'"),
    "second_module.v": (12, "keyword 'initial'"),
    "string_literal.v": (7, "string literal"),
    "sv_cast.v": (7, "number '4''"),
    "system_in_assign.v": (7, "system task/function '$system'"),
    "systemc_verbatim_cpp.v": (6, "'`systemc_imp_header'"),
    "task.v": (6, "keyword 'task'"),
    "task_function.v": (6, "keyword 'function'"),
    "timescale_trailing_code.v": (2, "'`timescale' with more than"),
    "udp_primitive.v": (9, "keyword 'primitive'"),
    "unterminated_comment.v": (7, "unterminated /* comment"),
    "verilator_c_call.v": (7, "system task/function '$c'"),
}


def test_every_malicious_file_has_a_case():
    assert sorted(p.name for p in MALICIOUS.glob("*.v")) == sorted(CASES)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd = tmp_path, a private cache, $AXLAB_PWNED inside tmp_path; the malicious files copied
    to tmp_path/netlists (so that any relative include or write stays in the sandbox)."""
    lib = tmp_path / "netlists"
    shutil.copytree(MALICIOUS, lib)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AXLAB_PWNED", str(tmp_path / "pwned.txt"))
    yield lib
    assert sorted(tmp_path.rglob("pwned*")) == [], "a payload ran"


def _expected(src: Path, case: str) -> tuple[str, str]:
    line, what = CASES[case]
    return f"{src}:{line}: refused ", what


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))  # AXLAB_CACHE / AXLAB_PWNED come from the sandbox
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def _nothing_built(cache: Path, out: Path | None = None) -> None:
    assert cached_luts(cache) == []
    assert not (cache / "sims").exists(), "something reached the simulator"
    assert not (cache / "names").exists() or not any((cache / "names").iterdir())
    if out is not None:
        assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- CLI
def test_cli_refuses_every_variant_with_one_line_each(sandbox, tmp_path):
    """One `axlab lut build` over the whole folder (Verilator, the default): one stderr line per
    file, naming the file and the refused line; nothing built, nothing run."""
    out = tmp_path / "out"
    proc = _cli("lut", "build", str(sandbox), "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(CASES), proc.stderr
    for case in CASES:
        head, what = _expected(sandbox / case, case)
        hits = [ln for ln in lines if f"{sandbox / case}:" in ln]
        assert len(hits) == 1, (case, hits)
        assert hits[0].startswith("axlab: " + head) and what in hits[0], hits[0]
        assert "netlists may contain only" in hits[0]
    _nothing_built(tmp_path / "cache", out)


@pytest.mark.parametrize("case", ["define_macro_system.v", "metacomment_block.v", "escaped_identifier.v"])
def test_cli_single_file_exits_non_zero_with_exactly_one_line(sandbox, tmp_path, case):
    src = sandbox / case
    out = tmp_path / "out"
    proc = _cli("lut", "build", str(src), "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    head, what = _expected(src, case)
    assert len(lines) == 1 and lines[0].startswith("axlab: " + head) and what in lines[0], proc.stderr
    assert proc.stdout.strip() == ""
    _nothing_built(tmp_path / "cache", out)


# ----------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("case", sorted(CASES))
def test_api_entry_points_refuse_before_any_tool(sandbox, tmp_path, case):
    from hwsim.cost import yosys_cells
    from hwsim.parse import parse_netlist
    from hwsim.rtlsim import SimTarget, _renamed, simulate
    from hwsim.store import Failure, build_luts

    src = sandbox / case
    head, what = _expected(src, case)
    text = src.read_text()

    def check(exc_info) -> None:
        msg = str(exc_info.value)
        assert "\n" not in msg and msg.startswith(head) and what in msg, msg

    with pytest.raises(NetlistError) as e:
        read_netlist(src)
    check(e)
    # a NetlistInfo made by hand (not by read_netlist) is checked again by every consumer
    info = NetlistInfo(src, text, "mul2u_evil")
    with pytest.raises(NetlistError) as e:
        parse_netlist(info)
    check(e)
    with pytest.raises(NetlistError) as e:
        simulate([SimTarget(info, 2, 2, 4)], np.arange(4, dtype=np.uint64), np.arange(4, dtype=np.uint64),
                 sim="verilator", jobs=1)
    check(e)
    with pytest.raises(NetlistError) as e:
        yosys_cells(text, "mul2u_evil", src)
    check(e)
    with pytest.raises(NetlistError) as e:  # the export writes its multiplier sources with _renamed
        _renamed(text, "m0", src)
    check(e)
    with pytest.raises(NetlistError) as e:
        build_luts([src], sim="verilator", signed=False)
    check(e)
    errors: list[Failure] = []
    assert build_luts([src], sim="verilator", signed=False, errors=errors) == []
    assert len(errors) == 1 and errors[0].message.startswith(head)
    _nothing_built(tmp_path / "cache")


def test_a_file_changed_after_reading_never_reaches_a_tool(sandbox, tmp_path, monkeypatch):
    """The simulator's and yosys's sources come from the checked text read once, not from the path."""
    from hwsim import cost
    from hwsim.parse import parse_netlist
    from hwsim.rtlsim import SimTarget, _sources
    from hwsim.store import _cost, simulation_info

    src = tmp_path / "mul2u_cells.v"
    shutil.copy(DATA / "mul2u_cells.v", src)
    info = read_netlist(src)
    p = parse_netlist(info)
    src.write_text((sandbox / "initial_system.v").read_text())  # swapped after the check
    files = _sources([SimTarget(simulation_info(info, p), p.bits_a, p.bits_b, p.bits_o)], lanes=2)
    for name, text in files.items():
        check_tool_text(text, name)
        assert "$" not in text and "`" not in text and "//" not in text
    seen: list[str] = []

    def fake_run(cmd, cwd, **kw):  # record what yosys would read instead of running it
        seen.append((Path(cwd) / "in.v").read_text())
        return subprocess.CompletedProcess(cmd, 1, "", "not run in this test")

    monkeypatch.setattr(cost.subprocess, "run", fake_run)
    monkeypatch.setattr(cost.shutil, "which", lambda name: "/bin/false")
    _cost(info, p)
    assert len(seen) == 1 and seen[0].startswith(info.tool_text) and "initial" not in seen[0]
    check_tool_text(seen[0], "in.v")


# ----------------------------------------------------------------------------- clean netlists
def test_clean_test_netlists_pass_and_keep_their_line_numbers():
    for src in sorted(DATA.glob("*.v")):
        info = read_netlist(src)
        checked = info.tool_text
        assert checked.count("\n") == src.read_text().count("\n")
        assert "`" not in checked and "//" not in checked and "/*" not in checked
        assert tool_text(checked, src) == checked  # idempotent: re-checking changes nothing


def test_builtin_family_and_cell_library_pass():
    from hwsim.builtin import builtin_names, builtin_verilog
    from hwsim.cells import library

    for name in builtin_names():
        tool_text(builtin_verilog(name), name)
    tool_text("".join(library().values()), "cells")


@needs_evoapprox
def test_all_evoapprox_mul8s_netlists_pass_and_one_builds(tmp_path, monkeypatch):
    from hwsim.store import build_luts

    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    files = sorted(EVOAPPROX.glob("*.v"))
    assert len(files) == 13
    for src in files:
        read_netlist(src)
    lut = build_luts([EVOAPPROX / "mul8s_1KV8.v"], sim="gates")[0].lut
    assert lut.meta["header_match"] is True


def test_allowed_forms_and_line_numbers():
    text = ("/* a block comment\n   over two lines */\n`timescale 1 ns / 10 ps // trailing comment\n"
            "`default_nettype none\r\nmodule m (A, B, O); // built by a tool, mentions verilator later\n"
            "  input [1:0] A; input [1:0] B; output [3:0] O;\n  supply0 gnd;\n"
            "  assign O = {8 'h0, A[0 +: 1], B} ^ 4'sd3 ^ 12'hf_f;\n  and g (O[0], A[0], B[0]);\nendmodule\n")
    checked = tool_text(text, "t.v")
    assert checked.count("\n") == text.count("\n") and "\r" not in checked
    with pytest.raises(NetlistError, match=r"^t\.v:7: refused keyword 'initial'"):
        tool_text(text.replace("  supply0 gnd;", "  initial gnd;"), "t.v")
    with pytest.raises(NetlistError, match=r"^t\.v:5: refused tool metacomment"):
        tool_text(text.replace("// built by", "/*verilator public*/ // built by"), "t.v")


def test_module_and_file_names_reaching_tools_are_plain_identifiers(tmp_path):
    assert check_name("mul8s_1KV8") == "mul8s_1KV8"
    for bad in ("x; shell touch pwned", "a\nb", "module", "1abc", "", "a$b", "a" * 129):
        with pytest.raises(AxlabError):
            check_name(bad)
    odd = tmp_path / "mul2u_hand\n.v"
    shutil.copy(DATA / "mul2u_hand.v", odd)
    with pytest.raises(NetlistError, match="control characters"):
        read_netlist(odd)


def test_oversized_file_is_refused_before_it_is_read(tmp_path):
    from hwsim.netlist import MAX_NETLIST_BYTES

    big = tmp_path / "mul8s_big.v"
    with big.open("wb") as f:  # sparse: no real disk use
        f.truncate(MAX_NETLIST_BYTES + 1)
    with pytest.raises(NetlistError, match="MiB"):
        read_netlist(big)
