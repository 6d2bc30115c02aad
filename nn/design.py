"""Multiplier resolution and design files.

design.json: ``{"model": <model sha256>, "layers": [{"layer": name, "multiplier": name,
"lut_sha256": hex, "source": spec}, ...], "name": ..., "arch": ..., "dataset": ...}``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_lut

# names that work even without the LUT store (exact products need no netlist)
EXACT_NAMES = {"exact": True, "exact8s": True, "exact8u": False}


def resolve_multiplier(spec: str) -> Lut:
    """A LUT ``.npz`` path, a netlist path, or a name known to the LUT store -> Lut."""
    spec = str(spec).strip()
    if spec.endswith(".npz"):
        if not Path(spec).is_file():
            raise AxlabError(f"multiplier LUT file {spec} not found")
        return Lut.load(spec)
    try:
        from hwsim.store import resolve
    except ImportError:
        resolve = None
    if resolve is not None:
        try:
            return resolve(spec)
        except AxlabError:
            if spec not in EXACT_NAMES:
                raise
    if spec in EXACT_NAMES:
        return exact_lut(8, EXACT_NAMES[spec], name=spec)
    raise AxlabError(f"unknown multiplier {spec!r} (give a LUT .npz, a netlist .v, or a name from `axlab lut list`)")


def _source(spec: str) -> str:
    p = Path(spec)
    return str(p.resolve()) if p.suffix in (".npz", ".v") and p.exists() else spec


def make_design(bundle: Any, multipliers: list[str], name: str | None = None) -> tuple[dict[str, Any], list[Lut]]:
    """One multiplier per approximable layer (network order) -> (design dict, LUTs)."""
    layers = bundle.layers()
    if len(multipliers) == 1 and len(layers) > 1:
        multipliers = multipliers * len(layers)
    if len(multipliers) != len(layers):
        raise AxlabError(f"{len(multipliers)} multipliers given but the model has {len(layers)} approximable "
                         f"layers ({', '.join(layers)})")
    luts = [resolve_multiplier(m) for m in multipliers]
    if name is None:
        names = {l.name for l in luts}
        name = names.pop() if len(names) == 1 else "+".join(l.name for l in luts)
    design = {"model": bundle.sha256, "name": name, "arch": bundle.arch, "dataset": bundle.dataset,
              "layers": [{"layer": ly, "multiplier": l.name, "lut_sha256": l.sha256, "source": _source(m),
                          "signed": bool(l.signed)}
                         for ly, l, m in zip(layers, luts, multipliers)]}
    return design, luts


def write_design(bundle: Any, multipliers: list[str], path: str | Path, name: str | None = None) -> dict[str, Any]:
    design, _ = make_design(bundle, multipliers, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(design, indent=2) + "\n")
    return design


def load_design_dict(design: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(design, dict):
        return design
    p = Path(design)
    try:
        d = json.loads(p.read_text())
    except OSError as exc:
        raise AxlabError(f"cannot read design {p}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise AxlabError(f"{p}: not a JSON design file ({exc})") from None
    if not isinstance(d, dict) or not isinstance(d.get("layers"), list):
        raise AxlabError(f"{p}: design file lacks a 'layers' list")
    d.setdefault("name", p.stem)
    return d


def read_design(design: str | Path | dict[str, Any], bundle: Any) -> list[Lut]:
    """The LUTs of a design, checked against the model (sha256, layer names and count) and
    against the recorded LUT hashes."""
    d = load_design_dict(design)
    layers = bundle.layers()
    entries = d["layers"]
    if len(entries) != len(layers):
        raise AxlabError(f"design has {len(entries)} layers but the model has {len(layers)} approximable layers "
                         f"({', '.join(layers)})")
    if d.get("model") and d["model"] != bundle.sha256:
        raise AxlabError(f"design was made for model {str(d['model'])[:12]}..., not this model "
                         f"{bundle.sha256[:12]}...")
    luts = []
    for e, ly in zip(entries, layers):
        if not isinstance(e, dict) or "multiplier" not in e:
            raise AxlabError(f"design entry {e!r} lacks 'multiplier'")
        if e.get("layer", ly) != ly:
            raise AxlabError(f"design layer {e.get('layer')!r} does not match the model's layer {ly!r}")
        lut = None
        for spec in (e.get("source"), e["multiplier"]):
            if spec:
                try:
                    lut = resolve_multiplier(spec)
                    break
                except AxlabError:
                    if spec == e["multiplier"]:
                        raise
        if "signed" in e and bool(e["signed"]) != bool(lut.signed):
            raise AxlabError(f"layer {ly}: design expects a {'signed' if e['signed'] else 'unsigned'} multiplier "
                             f"but {e['multiplier']} is {'signed' if lut.signed else 'unsigned'}: signedness mismatch")
        want = e.get("lut_sha256")
        if want and lut.sha256 != want:
            raise AxlabError(f"layer {ly}: multiplier {e['multiplier']} resolves to a LUT with sha256 "
                             f"{lut.sha256[:12]}..., the design expects {str(want)[:12]}...")
        luts.append(lut)
    return luts
