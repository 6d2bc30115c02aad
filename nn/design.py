"""Multiplier resolution and design files.

design.json: ``{"model": <model sha256>, "layers": [{"layer": name, "multiplier": name,
"lut_sha256": hex, "source": spec}, ...], "name": ..., "arch": ..., "dataset": ...}``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write
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
    """Resolve the multipliers, then write the design file atomically (nothing is written
    when a multiplier cannot be resolved)."""
    design, _ = make_design(bundle, multipliers, name)
    atomic_write(path, json.dumps(design, indent=2) + "\n")
    return design


# design.json schema: key -> (check, what it must be); "layers" entries have their own table
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


TOP_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and bool(_HEX64.match(v)), "a model sha256 (64 lowercase hex digits)"),
    "name": (_text, "a non-empty string"),
    "arch": (lambda v: isinstance(v, str), "a string"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "layers": (lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of layer entries"),
}
ENTRY_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "layer": (_text, "a layer name (non-empty string)"),
    "multiplier": (_text, "a multiplier name or path (non-empty string)"),
    "lut_sha256": (lambda v: isinstance(v, str) and bool(_HEX64.match(v)), "a LUT sha256 (64 lowercase hex digits)"),
    "source": (_text, "a multiplier path or name (non-empty string)"),
    "signed": (lambda v: isinstance(v, bool), "true or false"),
}
REQUIRED_ENTRY_KEYS = ("layer", "multiplier")


def check_design_dict(d: Any, where: str = "design") -> dict[str, Any]:
    """Types and keys of a design (see the module docstring); AxlabError names ``where`` and
    the key, e.g. ``d.json: layers[2].multiplier must be ..., got None``."""
    if not isinstance(d, dict):
        raise AxlabError(f"{where}: a design must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(TOP_KEYS))
    if unknown:
        raise AxlabError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(TOP_KEYS)})")
    if "layers" not in d:
        raise AxlabError(f"{where}: design file lacks a 'layers' list")
    for key, (ok, want) in TOP_KEYS.items():
        if key in d and not ok(d[key]):
            raise AxlabError(f"{where}: {key} must be {want}, got {d[key]!r}")
    for i, e in enumerate(d["layers"]):
        at = f"layers[{i}]"
        if not isinstance(e, dict):
            raise AxlabError(f"{where}: {at} must be a JSON object with layer and multiplier, got {e!r}")
        unknown = sorted(set(e) - set(ENTRY_KEYS))
        if unknown:
            raise AxlabError(f"{where}: {at}: unknown key {unknown[0]!r} (allowed: {', '.join(ENTRY_KEYS)})")
        for key in REQUIRED_ENTRY_KEYS:
            if key not in e:
                raise AxlabError(f"{where}: {at} lacks {key!r}")
        for key, (ok, want) in ENTRY_KEYS.items():
            if key in e and not ok(e[key]):
                raise AxlabError(f"{where}: {at}.{key} must be {want}, got {e[key]!r}")
    return d


def load_design_dict(design: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A design from a path (JSON) or a dict, with its keys and types checked."""
    if isinstance(design, dict):
        return check_design_dict(design)
    p = Path(design)
    try:
        d = json.loads(p.read_text())
    except OSError as exc:
        raise AxlabError(f"cannot read design {p}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AxlabError(f"{p}: not a JSON design file ({exc})") from None
    check_design_dict(d, str(p))
    d.setdefault("name", p.stem)
    return d


def read_design(design: str | Path | dict[str, Any], bundle: Any, where: str | None = None) -> list[Lut]:
    """The LUTs of a design, checked against the model (sha256, layer names, order and count)
    and against the recorded LUT hashes and signedness. ``where`` names the design in errors
    (default: its path, or "design" for a dict)."""
    where = where or ("design" if isinstance(design, dict) else str(design))
    d = design if isinstance(design, dict) else load_design_dict(design)
    check_design_dict(d, where)
    layers = bundle.layers()
    entries = d["layers"]
    names = ", ".join(layers)
    for i, e in enumerate(entries):
        if e["layer"] not in layers:
            raise AxlabError(f"{where}: layers[{i}].layer {e['layer']!r} is not an approximable layer of the model "
                             f"({names})")
    if len(entries) != len(layers):
        raise AxlabError(f"{where}: design has {len(entries)} layers but the model has {len(layers)} approximable "
                         f"layers ({names})")
    if d.get("model") and d["model"] != bundle.sha256:
        raise AxlabError(f"{where}: design was made for model {str(d['model'])[:12]}..., not this model "
                         f"{bundle.sha256[:12]}...")
    luts = []
    for i, (e, ly) in enumerate(zip(entries, layers)):
        if e["layer"] != ly:
            raise AxlabError(f"{where}: layers[{i}].layer is {e['layer']!r} but the model's layer {i + 1} is {ly!r} "
                             f"(entries follow network order: {names})")
        lut = None
        for spec in (e.get("source"), e["multiplier"]):
            if spec:
                try:
                    lut = resolve_multiplier(spec)
                    break
                except AxlabError as exc:
                    if spec == e["multiplier"]:
                        raise AxlabError(f"{where}: layers[{i}].multiplier: {exc}") from None
        assert lut is not None  # the multiplier either resolved or raised
        if spec == e.get("source") and spec != e["multiplier"] and lut.name != e["multiplier"]:
            raise AxlabError(f"{where}: layers[{i}]: source {spec} is multiplier {lut.name!r}, not {e['multiplier']!r}")
        if "signed" in e and e["signed"] != bool(lut.signed):
            raise AxlabError(f"{where}: layer {ly}: design expects a {'signed' if e['signed'] else 'unsigned'} "
                             f"multiplier but {e['multiplier']} is {'signed' if lut.signed else 'unsigned'}: "
                             "signedness mismatch")
        want = e.get("lut_sha256")
        if want and lut.sha256 != want:
            raise AxlabError(f"{where}: layer {ly}: multiplier {e['multiplier']} resolves to a LUT with sha256 "
                             f"{lut.sha256[:12]}..., the design expects {str(want)[:12]}...")
        luts.append(lut)
    return luts
