"""Built-in standard-cell library for netlists that instantiate library cells they do not define.

EvoApproxLib's ``*_pdk45.v`` files (and the EvoApprox8b ones) are mapped onto the OSU
FreePDK45 cells (``AND2X1``, ``HAX1``, ``FAX1``, ``MUX2X1``, ``AOI21X1`` ...) and instantiate
them without a definition. Their behaviour is given here as plain Verilog, so that the same
text serves the gate evaluator (parsed like any cell module defined in the netlist file) and
the RTL simulation (appended to the simulated sources, see :func:`simulation_text`).

Cell functions follow the EvoApproxLib generic cells (``PDKGEN*`` modules defined at the
bottom of its ``.v`` files) and the OSU library:

* ``HAX1 (A, B -> YC, YS)``, ``FAX1 (A, B, C -> YC, YS)``: half/full adder
* ``AOI21X1 = ~((A&B)|C)``, ``AOI22X1 = ~((A&B)|(C&D))``, ``OAI21X1 = ~((A|B)&C)``,
  ``OAI22X1 = ~((A|B)&(C|D))``
* ``MUX2X1 (A, B, S -> Y) = S ? B : A`` (non-inverting, as EvoApprox's ``PDKGENMUX2X1``; the
  inverting reading ``~(S ? B : A)`` of the OSU liberty file does *not* reproduce the
  published error figures of the EvoApprox8b netlists that use it, e.g. mul8_090, mul8_129).

NanGate-style names (``AND2_X1`` with ``A1, A2 -> ZN`` ...) are included too for netlists
mapped on the Nangate Open Cell Library. A cell defined in the netlist file itself always
wins over this library. Cell names mangled by EvoApprox8b's ``PDKGEN`` renaming (e.g.
``NPDKGEPDKGENNAND2X1``, instantiated but not defined in its ``.v`` files) resolve to the cell
they stand for, see :func:`demangle`.
"""
from __future__ import annotations

import re
from functools import lru_cache

CELLS_VERSION = 1

# name -> (ports in order, body lines); every port is 1 bit, outputs listed in OUT_PORTS
_OSU = {
    "AND2X{d}": ("A B Y", "assign Y = A & B;"),
    "AND3X{d}": ("A B C Y", "assign Y = A & B & C;"),
    "NAND2X{d}": ("A B Y", "assign Y = ~(A & B);"),
    "NAND3X{d}": ("A B C Y", "assign Y = ~(A & B & C);"),
    "OR2X{d}": ("A B Y", "assign Y = A | B;"),
    "OR3X{d}": ("A B C Y", "assign Y = A | B | C;"),
    "NOR2X{d}": ("A B Y", "assign Y = ~(A | B);"),
    "NOR3X{d}": ("A B C Y", "assign Y = ~(A | B | C);"),
    "XOR2X{d}": ("A B Y", "assign Y = A ^ B;"),
    "XNOR2X{d}": ("A B Y", "assign Y = ~(A ^ B);"),
    "INVX{d}": ("A Y", "assign Y = ~A;"),
    "BUFX{d}": ("A Y", "assign Y = A;"),
    "CLKBUF{d}": ("A Y", "assign Y = A;"),
    "AOI21X{d}": ("A B C Y", "assign Y = ~((A & B) | C);"),
    "AOI22X{d}": ("A B C D Y", "assign Y = ~((A & B) | (C & D));"),
    "OAI21X{d}": ("A B C Y", "assign Y = ~((A | B) & C);"),
    "OAI22X{d}": ("A B C D Y", "assign Y = ~((A | B) & (C | D));"),
    "MUX2X{d}": ("A B S Y", "assign Y = S ? B : A;"),
    "HAX{d}": ("A B YC YS", "assign YS = A ^ B;\n  assign YC = A & B;"),
    "FAX{d}": ("A B C YC YS", "assign YS = A ^ B ^ C;\n  assign YC = (A & B) | (B & C) | (A & C);"),
    "TIEHIX{d}": ("Y", "assign Y = 1'b1;"),
    "TIELOX{d}": ("Y", "assign Y = 1'b0;"),
}
_NANGATE = {
    "AND2_X{d}": ("A1 A2 ZN", "assign ZN = A1 & A2;"),
    "AND3_X{d}": ("A1 A2 A3 ZN", "assign ZN = A1 & A2 & A3;"),
    "NAND2_X{d}": ("A1 A2 ZN", "assign ZN = ~(A1 & A2);"),
    "NAND3_X{d}": ("A1 A2 A3 ZN", "assign ZN = ~(A1 & A2 & A3);"),
    "OR2_X{d}": ("A1 A2 ZN", "assign ZN = A1 | A2;"),
    "OR3_X{d}": ("A1 A2 A3 ZN", "assign ZN = A1 | A2 | A3;"),
    "NOR2_X{d}": ("A1 A2 ZN", "assign ZN = ~(A1 | A2);"),
    "NOR3_X{d}": ("A1 A2 A3 ZN", "assign ZN = ~(A1 | A2 | A3);"),
    "XOR2_X{d}": ("A B Z", "assign Z = A ^ B;"),
    "XNOR2_X{d}": ("A B ZN", "assign ZN = ~(A ^ B);"),
    "INV_X{d}": ("A ZN", "assign ZN = ~A;"),
    "BUF_X{d}": ("A Z", "assign Z = A;"),
    "AOI21_X{d}": ("A B1 B2 ZN", "assign ZN = ~(A | (B1 & B2));"),
    "OAI21_X{d}": ("A B1 B2 ZN", "assign ZN = ~(A & (B1 | B2));"),
    "AOI22_X{d}": ("A1 A2 B1 B2 ZN", "assign ZN = ~((A1 & A2) | (B1 & B2));"),
    "OAI22_X{d}": ("A1 A2 B1 B2 ZN", "assign ZN = ~((A1 | A2) & (B1 | B2));"),
    "MUX2_X{d}": ("A B S Z", "assign Z = S ? B : A;"),
    "HA_X{d}": ("A B CO S", "assign S = A ^ B;\n  assign CO = A & B;"),
    "FA_X{d}": ("A B CI CO S", "assign S = A ^ B ^ CI;\n  assign CO = (A & B) | (B & CI) | (A & CI);"),
    "LOGIC1_X{d}": ("Z", "assign Z = 1'b1;"),
    "LOGIC0_X{d}": ("Z", "assign Z = 1'b0;"),
}
OUT_PORTS = {"Y", "YC", "YS", "Z", "ZN", "CO", "S"}


def _module(name: str, ports: str, body: str, out_s: bool) -> str:
    names = ports.split()
    decl = []
    for p in names:
        out = p in OUT_PORTS and (p != "S" or out_s)
        decl.append(f"{'output' if out else 'input'} {p}")
    return f"module {name} ({', '.join(decl)});\n  {body}\nendmodule\n"


@lru_cache(maxsize=1)
def library() -> dict[str, str]:
    """Cell name -> its Verilog module text."""
    out: dict[str, str] = {}
    for table, nangate in ((_OSU, False), (_NANGATE, True)):
        for pattern, (ports, body) in table.items():
            drives = (1, 2, 4, 8, 16, 32) if nangate else (1, 2, 4, 8)
            for d in drives:
                name = pattern.format(d=d)
                # S is an output only of the NanGate adders (HA/FA); elsewhere it is a select input
                out[name] = _module(name, ports, body, out_s=nangate and name.startswith(("HA_", "FA_")))
    return out


def known_cells() -> list[str]:
    return sorted(library())


def demangle(name: str) -> str:
    """The OSU cell behind a name mangled by EvoApprox8b's renaming to ``PDKGEN*`` cells.

    Its ``.v`` files were made by repeated text substitution, so ``NAND2X1`` became
    ``NPDKGEPDKGENNAND2X1`` (instantiated but never defined) and ``AND2X1`` became
    ``PDKGEPDKGENNAND2X1`` (defined as A & B); removing every ``PDKGEN`` gives the cell back.
    """
    out = name
    while "PDKGEN" in out:
        out = out.replace("PDKGEN", "", 1)
    return out


def cell_verilog(name: str) -> str | None:
    """Verilog of the library cell ``name`` (or of the cell its mangled ``PDKGEN`` name stands
    for, under that name); None if it is not a library cell."""
    lib = library()
    if name in lib:
        return lib[name]
    base = demangle(name)
    if base != name and base in lib:
        return re.sub(rf"^module {base} ", f"module {name} ", lib[base])
    return None


def cell_library_verilog(names) -> str:
    """Verilog definitions of the given library cells (unknown names are skipped), sorted."""
    wanted = sorted({n for n in names if cell_verilog(n) is not None})
    if not wanted:
        return ""
    return (f"// axlab built-in cell library v{CELLS_VERSION}: {', '.join(wanted)}\n"
            + "".join(cell_verilog(n) for n in wanted))


INSTANCE_RE = re.compile(  # "CELL name (" or "CELL #(...) name (" at a line start
    r"^\s*([A-Za-z_][A-Za-z0-9_$]*)\s+(?:#\s*\(.*?\)\s*)?[A-Za-z_\\][^\s(]*\s*\(", re.MULTILINE)
_MODULE_RE = re.compile(r"^\s*module\s+([A-Za-z_][A-Za-z0-9_$]*)", re.MULTILINE)


def undefined_cells(text: str) -> list[str]:
    """Library cells the text instantiates without defining them (textual scan)."""
    defined = set(_MODULE_RE.findall(text))
    return sorted({m for m in INSTANCE_RE.findall(text) if m not in defined and cell_verilog(m) is not None})
