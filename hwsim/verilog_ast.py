"""Verilog text -> pyverilog AST, and what is read off a module's AST (its ports).

Only pyverilog's grammar is used (no preprocessor), so no iverilog is needed. Before pyverilog
sees a text, :mod:`hwsim.netlist_check` has refused anything outside a gate-level netlist
(directives, system tasks, procedural blocks ...) and blanked its comments; the parser reads that
checked text. The built-in standard cells (:mod:`hwsim.cells`) are parsed the same way.
"""
from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import pyverilog.vparser.ast as va

from hwsim.cells import cell_verilog
from hwsim.errors import NetlistError
from hwsim.netlist_check import tool_text


@lru_cache(maxsize=1)
def _parser():
    from pyverilog.vparser.parser import VerilogParser

    tabdir = Path(os.environ.get("AXLAB_CACHE", Path.home() / ".cache" / "axlab")) / "pyverilog"
    try:
        tabdir.mkdir(parents=True, exist_ok=True)
    except OSError:
        tabdir = Path(tempfile.mkdtemp(prefix="axlab-pyverilog-"))
    return VerilogParser(outputdir=str(tabdir), debug=False)


def parse_text(text: str, where: str) -> va.Source:
    """pyverilog AST of a Verilog text; ``where`` names the file in errors.

    The text goes through :func:`hwsim.netlist_check.tool_text` first (idempotent on text that
    already did): the parser sees exactly the checked text the RTL tools see, with comments and
    `` `timescale`` lines blanked (no preprocessor here) and CRLF ends made LF (ply refuses '\\r').
    """
    from pyverilog.vparser.parser import ParseError

    clean = tool_text(text, where)
    parser = _parser()
    parser.lexer.lexer.lineno = 1  # ply keeps counting across parses otherwise
    try:
        return parser.parse(clean)
    except ParseError as exc:
        raise NetlistError(where, f"not Verilog ({exc})") from None
    except Exception as exc:  # the lexer reports odd characters with other types
        raise NetlistError(where, f"not Verilog ({exc.__class__.__name__}: {exc})") from None


@lru_cache(maxsize=None)
def library_module(name: str) -> va.ModuleDef | None:
    """The built-in library cell ``name`` (see :mod:`hwsim.cells`) as a pyverilog module, or None."""
    text = cell_verilog(name)
    if text is None:
        return None
    ast = parse_text(text, f"<axlab cell library: {name}>")
    return next(d for d in ast.description.definitions if isinstance(d, va.ModuleDef))


def port_order(mod: va.ModuleDef) -> list[str]:
    out = []
    for p in mod.portlist.ports if mod.portlist is not None else []:
        out.append(p.first.name if isinstance(p, va.Ioport) else p.name)
    return out


def port_dirs(mod: va.ModuleDef) -> dict[str, str]:
    dirs: dict[str, str] = {}
    for p in mod.portlist.ports if mod.portlist is not None else []:
        if isinstance(p, va.Ioport):
            dirs[p.first.name] = "input" if isinstance(p.first, va.Input) else "output"
    for item in mod.items:
        if isinstance(item, va.Decl):
            for d in item.list:
                if isinstance(d, va.Input):
                    dirs[d.name] = "input"
                elif isinstance(d, va.Output):
                    dirs[d.name] = "output"
    return dirs
