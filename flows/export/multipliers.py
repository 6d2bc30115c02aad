"""The multiplier netlist behind each layer's LUT, checked against the hash the LUT recorded."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError


def layer_netlists(design: dict[str, Any], luts: list[Any], layers: list[str]) -> list[dict[str, Any]]:
    """Per layer: the multiplier's netlist (checked against the sha256 its LUT recorded)."""
    from hwsim.netlist import read_netlist
    from hwsim.parse import parse_netlist
    from hwsim.store import simulation_info

    out = []
    for ly, lut, entry in zip(layers, luts, design["layers"]):
        prov = dict(lut.meta.get("provenance") or {})
        path, want = prov.get("netlist_path"), prov.get("netlist_sha256")
        if not path or not want:
            raise AxlabError(f"layer {ly}: multiplier {lut.name} has no netlist behind its LUT "
                             f"(provenance source {prov.get('source', 'unknown')!r}); export needs a gate-level "
                             "netlist (e.g. mul8s_bi_exact instead of exact8s)")
        if not lut.signed:
            raise AxlabError(f"layer {ly}: multiplier {lut.name} is unsigned; export supports signed multipliers only")
        # the store caches LUTs by netlist text, so the recorded path may be an identical file
        # elsewhere: the design's own .v source is accepted when its hash matches too
        p = Path(path)
        src = entry.get("source")
        alt = Path(src) if isinstance(src, str) and Path(src).suffix in (".v", ".sv") else None
        if alt is not None and alt != p and alt.is_file() and \
                hashlib.sha256(alt.read_bytes()).hexdigest() == want and \
                (not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != want):
            p = alt
        if not p.is_file():
            raise AxlabError(f"layer {ly}: netlist {p} of multiplier {lut.name} is missing")
        got = hashlib.sha256(p.read_bytes()).hexdigest()
        if got != want:
            raise AxlabError(f"layer {ly}: netlist {p} of multiplier {lut.name} changed since its LUT was built "
                             f"(sha256 {got[:12]}... now, {want[:12]}... recorded); rebuild the LUT and the design")
        # as the RTL simulation of the LUT saw it: plus built-in library cells and a port adapter
        raw = read_netlist(p)
        info = simulation_info(raw, parse_netlist(raw))
        prov.pop("date", None)  # keep the export deterministic
        cost = lut.meta.get("cost") or {}
        out.append({"layer": ly, "multiplier": lut.name, "lut_sha256": lut.sha256, "signed": bool(lut.signed),
                    "netlist_path": str(p), "netlist_sha256": got, "module": info.module, "text": info.text,
                    "bits_o": int(lut.meta.get("bits_o", 16)), "provenance": prov,
                    "cost": {k: cost.get(k) for k in ("area_um2", "power_mw", "delay_ns", "source") if k in cost},
                    "design_source": entry.get("source")})
    return out

