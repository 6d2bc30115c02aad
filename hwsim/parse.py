"""Verilog netlist -> :class:`hwsim.gates.GateGraph`: the public entry point :func:`parse_netlist`.

Two steps: :mod:`hwsim.verilog_ast` reads the checked text into a pyverilog AST (no
preprocessor, so no iverilog is needed), then :mod:`hwsim.elaborate` flattens the top module
into a gate graph, refusing anything that is not a gate-level netlist with a message naming
the file and line. Here the top module's operand ports (A, B) and product port (O) are found.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import pyverilog.vparser.ast as va

from hwsim.elaborate import Elaborator, Scope
from hwsim.errors import NetlistError
from hwsim.gates import GateGraph
from hwsim.netlist import NetlistInfo
from hwsim.verilog_ast import parse_text, port_dirs


@dataclass
class ParsedNetlist:
    """The result of parsing: the gate graph plus the top module's port widths."""

    graph: GateGraph
    module: str
    bits_a: int
    bits_b: int
    bits_o: int
    ports: tuple[str, str, str] = ("A", "B", "O")  # the top module's names of A, B and the product
    library_cells: tuple[str, ...] = ()  # built-in library cells it instantiates (hwsim.cells)


def _find_port(dirs: dict[str, str], want: str, direction: str) -> str | None:
    for name, d in dirs.items():
        if name.upper() == want and d == direction:
            return name
    return None


def find_ports(dirs: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """Names of the operand inputs (A, B, any case) and the product output: O (any case), or
    else the one output the module has (e.g. Z or P); None where missing or ambiguous."""
    a, b, o = _find_port(dirs, "A", "input"), _find_port(dirs, "B", "input"), _find_port(dirs, "O", "output")
    if o is None:
        outs = [n for n, d in dirs.items() if d == "output"]
        if len(outs) == 1:
            o = outs[0]
    return a, b, o


def parse_netlist(info: NetlistInfo) -> ParsedNetlist:
    """Elaborate a netlist's top module into a gate graph (operands A, B; product O)."""
    where = str(info.path)
    ast = parse_text(info.tool_text, where)
    modules: dict[str, va.ModuleDef] = {}
    for d in ast.description.definitions:
        if isinstance(d, va.ModuleDef):
            if d.name in modules:
                raise NetlistError(where, f"line {d.lineno}: module {d.name} defined twice")
            modules[d.name] = d
    if info.module not in modules:
        raise NetlistError(where, f"module {info.module} not found")
    top = modules[info.module]
    dirs = port_dirs(top)
    a, b, o = find_ports(dirs)
    if not (a and b and o):
        have = ", ".join(f"{d} {n}" for n, d in dirs.items()) or "none"
        raise NetlistError(where, f"module {info.module} has no A/B/O ports (inputs A, B; output O, or a "
                                  f"single output of another name); ports: {have}")
    elab = Elaborator(where, modules, a, b)
    graph = elab.graph = GateGraph(0, 0)
    scope = Scope(elab, top, info.module, None)
    bits_a, bits_b, bits_o = scope.nets[a].width, scope.nets[b].width, scope.nets[o].width
    graph.bits_a, graph.bits_b = bits_a, bits_b
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 100_000))  # resolution recurses once per logic level
    try:
        graph.outputs = [scope.bit(o, k) for k in range(bits_o)]
    except RecursionError:
        raise NetlistError(where, "netlist too deep to elaborate (logic depth over the recursion limit)") from None
    finally:
        sys.setrecursionlimit(old_limit)
    return ParsedNetlist(graph, info.module, bits_a, bits_b, bits_o, (a, b, o), tuple(sorted(elab.library_cells)))
