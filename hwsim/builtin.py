"""The offline default library: a family of 8x8 signed multipliers generated with ariths-gen.

* ``mul8s_bi_exact``: ariths-gen's exact unsigned array multiplier (``UnsignedArrayMultiplier``).
* ``mul8s_bi_tr<k>``: truncated array multipliers (ariths-gen ``UnsignedTruncatedArrayMultiplier``,
  the k lowest partial-product columns dropped) and ``mul8s_bi_ba<h>_<v>`` broken-array
  multipliers (``UnsignedBrokenArrayMultiplier``, horizontal/vertical cuts).

ariths-gen makes the approximate ones unsigned only, so every member (the exact one too, so
that the family's costs compare like with like) is wrapped sign-magnitude: |A| x |B| on the
unsigned core, negated when the operand signs differ. |-128| = 128 still fits the 8-bit core.

The Verilog is written into the cache (``<cache>/builtin/``) and then characterised exactly
like any third-party netlist (RTL simulation, metrics, yosys cost estimate).
"""
from __future__ import annotations

import io
from pathlib import Path

from hwsim.fileio import atomic_write
from hwsim.tools import cache_dir

# name -> (core kind, parameters); ordered from exact to most approximate
FAMILY: dict[str, tuple[str, dict[str, int]]] = {
    "mul8s_bi_exact": ("exact", {}),
    "mul8s_bi_ba0_4": ("ba", {"horizontal_cut": 0, "vertical_cut": 4}),
    "mul8s_bi_ba0_5": ("ba", {"horizontal_cut": 0, "vertical_cut": 5}),
    "mul8s_bi_ba1_5": ("ba", {"horizontal_cut": 1, "vertical_cut": 5}),
    "mul8s_bi_ba2_5": ("ba", {"horizontal_cut": 2, "vertical_cut": 5}),
    "mul8s_bi_tr2": ("tr", {"truncation_cut": 2}),
    "mul8s_bi_tr3": ("tr", {"truncation_cut": 3}),
    "mul8s_bi_tr4": ("tr", {"truncation_cut": 4}),
}


def _ariths_verilog(kind: str, params: dict[str, int], name: str) -> str:
    """Flat Verilog of one ariths-gen circuit with its output port renamed to O."""
    from ariths_gen.multi_bit_circuits.approximate_multipliers import (
        UnsignedBrokenArrayMultiplier,
        UnsignedTruncatedArrayMultiplier,
    )
    from ariths_gen.multi_bit_circuits.multipliers import UnsignedArrayMultiplier
    from ariths_gen.wire_components import Bus

    cls = {"exact": UnsignedArrayMultiplier, "tr": UnsignedTruncatedArrayMultiplier,
           "ba": UnsignedBrokenArrayMultiplier}[kind]
    circuit = cls(Bus("A", 8), Bus("B", 8), name=name, **params)
    buf = io.StringIO()
    circuit.get_v_code_flat(buf)
    return buf.getvalue().replace(f"{name}_out", "O")


def _sign_magnitude(name: str, core: str) -> str:
    """A signed wrapper around an unsigned 8x8 core module ``core``."""
    return f"""module {name} (A, B, O);
  input [7:0] A;
  input [7:0] B;
  output [15:0] O;
  wire [7:0] mag_a;
  wire [7:0] mag_b;
  wire [15:0] mag_p;
  wire neg;
  assign mag_a = A[7] ? (~A + 8'd1) : A;
  assign mag_b = B[7] ? (~B + 8'd1) : B;
  assign neg = A[7] ^ B[7];
  {core} core (.A(mag_a), .B(mag_b), .O(mag_p));
  assign O = neg ? (~mag_p + 16'd1) : mag_p;
endmodule
"""


def builtin_verilog(name: str) -> str:
    """The Verilog text of a built-in multiplier (deterministic)."""
    kind, params = FAMILY[name]
    header = (f"// axlab built-in multiplier {name}: generated with ariths-gen "
              f"({kind} {params or ''}), sign-magnitude wrapped\n")
    core = f"{name}_core"
    return header + _sign_magnitude(name, core) + "\n" + _ariths_verilog(kind, params, core)


def builtin_names() -> list[str]:
    return list(FAMILY)


def builtin_path(name: str) -> Path:
    """Write (if needed) and return the cached Verilog file of a built-in multiplier."""
    text = builtin_verilog(name)
    path = cache_dir() / "builtin" / f"{name}.v"
    if not path.exists() or path.read_text() != text:
        atomic_write(path, text)
    return path
