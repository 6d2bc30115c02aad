"""The LUT store: netlists -> RTL-proven, characterised LUTs, cached by content.

Cache key = sha256(netlist text, simulator + tool versions, LUT format). Files live in
``<cache>/luts/<key>.npz``; ``<cache>/names/<module>.json`` remembers the newest LUT built
for a module name so later commands can say ``--multiplier mul8s_1KV8``. A cache file that
does not load, or whose checksum or key does not match, is deleted and rebuilt.

Building a LUT always evaluates the gate graph too: with ``--sim verilator``/``icarus`` the
RTL result must equal the gate evaluator on every operand pair or the build fails.

Netlists that instantiate built-in library cells (``AND2X1``, ``HAX1`` ... see
:mod:`hwsim.cells`) or name their ports differently (product ``Z``) are simulated from
:func:`simulation_info`: the file's text plus the cells' Verilog and a port adapter.

Batches: with ``errors=[]`` :func:`build_luts` goes on past a bad netlist, records one
:class:`Failure` for it (nothing cached for that file) and builds the others.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from hwsim.builtin import builtin_names, builtin_path
from hwsim.cells import CELLS_VERSION, cell_library_verilog, undefined_cells
from hwsim.cost import cost_of
from hwsim.errors import AxlabError, NetlistError
from hwsim.fileio import atomic_write
from hwsim.gates import to_signed
from hwsim.lut import LUT_FORMAT_VERSION, Lut
from hwsim.metrics import compare_with_header, error_metrics
from hwsim.netlist import NetlistInfo, discover, read_netlist
from hwsim.parse import ParsedNetlist, parse_netlist
from hwsim.tools import cache_dir, simulator_version

DEFAULT_MAX_PAIRS = 2**24
SIMULATORS = ("verilator", "icarus", "gates")


@dataclass
class BuildResult:
    """One netlist's outcome: the LUT, whether it came from the cache, and timings (s)."""

    lut: Lut
    cached: bool
    seconds: dict[str, float] = field(default_factory=dict)


class Mismatch(AxlabError):
    """RTL and gate evaluator disagree; the message lists the first differing pairs."""


@dataclass
class Failure:
    """One netlist of a batch that could not be built; ``message`` is one line naming the file."""

    path: Path
    message: str


def failure_line(path: Path | str, exc: BaseException) -> str:
    """One line naming the file: the error's first line, prefixed with the path if it lacks it."""
    text = str(exc).strip()
    lines = text.splitlines() or [exc.__class__.__name__]
    first = lines[0].strip()
    if str(path) not in first:
        first = f"{path}: {first}"
    if len(lines) > 1:
        first += f" (+{len(lines) - 1} more lines of tool output)"
    return first


_ADDER_NAME_RE = re.compile(r"^(add|sub)|adder|subtract", re.IGNORECASE)


def check_multiplier(path: Path | str, module: str, bits_a: int | None = None, bits_b: int | None = None,
                     bits_o: int | None = None) -> None:
    """Refuse what is not an n x m multiplier: an adder-like name, or (widths given) a product
    width != n+m."""
    stem = Path(path).stem
    if _ADDER_NAME_RE.search(module) or _ADDER_NAME_RE.search(stem):
        raise NetlistError(path, f"module {module} is named like an adder/subtractor, not a multiplier "
                                 "(pass --allow-non-multiplier to build its LUT anyway)")
    if bits_o is not None and bits_o != bits_a + bits_b:
        raise NetlistError(path, f"not a multiplier: output width {bits_o} != {bits_a}+{bits_b} input bits "
                                 f"(an adder?); pass --allow-non-multiplier to build its LUT anyway")


def simulation_info(info: NetlistInfo, p: ParsedNetlist) -> NetlistInfo:
    """The netlist as the RTL simulation sees it: its own text plus the Verilog of the built-in
    library cells it instantiates and, when its ports are not named A, B, O, an adapter module
    ``<module>__axlab_io (A, B, O)`` around it (then the simulated top)."""
    text, module = info.text, info.module
    if tuple(p.ports) != ("A", "B", "O"):
        a, b, o = p.ports
        module = f"{info.module}__axlab_io"
        text += (f"\n// axlab: port adapter (A, B, O) for {info.module}\n"
                 f"module {module} (A, B, O);\n  input [{p.bits_a - 1}:0] A;\n  input [{p.bits_b - 1}:0] B;\n"
                 f"  output [{p.bits_o - 1}:0] O;\n  {info.module} u_dut (.{a}(A), .{b}(B), .{o}(O));\nendmodule\n")
    # the textual scan also catches cells inside user cells whose outputs the product never reads
    cells = cell_library_verilog(set(p.library_cells) | set(undefined_cells(info.tool_text)))
    if cells:
        text += "\n" + cells
    if text is info.text:
        return info
    return NetlistInfo(info.path, text, module, info.published, info.signed_from_name)


def _axlab_version() -> str:
    try:
        return metadata.version("axlab")
    except metadata.PackageNotFoundError:
        return "dev"


def _cost(info: NetlistInfo, p: ParsedNetlist) -> dict:
    """:func:`hwsim.cost.cost_of` of the netlist's checked text; a netlist using built-in library
    cells is handed to yosys with their definitions appended, so that its estimate can be made too."""
    cells = cell_library_verilog(set(p.library_cells) | set(undefined_cells(info.tool_text)))
    return cost_of(info.tool_text + ("\n" + cells if cells else ""), info.module, p.graph, info.published, info.path)


def cache_key(info: NetlistInfo, sim: str, signed: bool) -> str:
    h = hashlib.sha256()
    parts = [info.text, simulator_version(sim), f"signed={signed}", f"format={LUT_FORMAT_VERSION}"]
    cells = undefined_cells(info.tool_text)
    if cells:  # the built-in cell library is part of what the LUT was built from
        parts.append(f"cells=v{CELLS_VERSION}:{','.join(cells)}")
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def operand_codes(bits: int, signed: bool) -> np.ndarray:
    """Bit pattern driven for each LUT index (index i of a signed operand is value i - 2^(bits-1))."""
    idx = np.arange(2**bits, dtype=np.uint64)
    return idx ^ np.uint64(2 ** (bits - 1)) if signed else idx


def _exhaustive_pairs(p: ParsedNetlist, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = operand_codes(p.bits_a, signed), operand_codes(p.bits_b, signed)
    return np.repeat(ca, cb.size), np.tile(cb, ca.size)


def _table(raw: np.ndarray, p: ParsedNetlist, signed: bool) -> np.ndarray:
    return to_signed(raw, p.bits_o, signed).reshape(2**p.bits_a, 2**p.bits_b)


def _first_differences(p: ParsedNetlist, signed: bool, rtl: np.ndarray, gates: np.ndarray, n: int = 5) -> str:
    a, b = _exhaustive_pairs(p, signed)
    bad = np.flatnonzero(rtl != gates)[:n]
    va, vb = to_signed(a[bad], p.bits_a, signed), to_signed(b[bad], p.bits_b, signed)
    ro, go = to_signed(rtl[bad], p.bits_o, signed), to_signed(gates[bad], p.bits_o, signed)
    rows = ", ".join(f"A={x} B={y}: rtl {r} gates {g}" for x, y, r, g in zip(va, vb, ro, go))
    return f"{np.count_nonzero(rtl != gates)} of {rtl.size} pairs differ; first: {rows}"


def _check_widths(info: NetlistInfo, p: ParsedNetlist, max_pairs: int) -> None:
    if p.bits_a + p.bits_b > int(max_pairs).bit_length() - 1:     # compare exponents: 2**(a+b) may be huge
        raise NetlistError(info.path, f"widths {p.bits_a}x{p.bits_b} too large for exhaustive mode "
                                      f"(2^{p.bits_a + p.bits_b} pairs > limit 2^{int(np.log2(max_pairs))}); "
                                      "use sampled mode (--sampled N)")
    if p.bits_o > 32:
        raise NetlistError(info.path, f"output width {p.bits_o} does not fit the int32 LUT")


def _signedness(info: NetlistInfo, signed: bool | None) -> bool:
    if signed is not None:
        return signed
    if info.signed_from_name is None:
        raise NetlistError(info.path, f"cannot tell signedness from module name {info.module} "
                                      "(expected mulNs_/mulNu_); pass --signed or --unsigned")
    return info.signed_from_name


def _lut_path(key: str) -> Path:
    return cache_dir() / "luts" / f"{key}.npz"


def _load_cached(key: str) -> Lut | None:
    path = _lut_path(key)
    if not path.exists():
        return None
    try:
        lut = Lut.load(path)
        if lut.meta.get("cache_key") != key:
            raise AxlabError("cache key mismatch")
        return lut
    except AxlabError:
        path.unlink(missing_ok=True)  # corrupted or truncated: rebuild, never use
        return None


def _remember_name(lut: Lut, key: str) -> None:
    atomic_write(cache_dir() / "names" / f"{lut.name}.json",
                 json.dumps({"key": key, "netlist": lut.meta["provenance"]["netlist_path"]}))


def build_luts(paths: list[str | Path], sim: str = "verilator", signed: bool | None = None,
               max_pairs: int = DEFAULT_MAX_PAIRS, use_cache: bool = True, jobs: int | None = None,
               progress: bool = False, errors: list[Failure] | None = None,
               allow_non_multiplier: bool = False) -> list[BuildResult]:
    """Exhaustive LUTs for every netlist under ``paths`` (files or folders).

    ``errors=None``: every netlist is parsed and validated before anything is simulated or
    written, so one bad file fails the whole call (its error raised) with nothing cached.
    ``errors=[]`` (batch mode): a bad netlist (unreadable, unparsable, not a multiplier, RTL
    build failure, RTL/gates mismatch) is appended there as a :class:`Failure`, nothing is
    cached for it, the others are built; the results list then holds only the good ones.
    ``allow_non_multiplier``: skip the check that the netlist is an n x m -> n+m multiplier.
    """
    if sim not in SIMULATORS:
        raise AxlabError(f"unknown simulator '{sim}' (choose {', '.join(SIMULATORS)})")

    def fail(path, exc: AxlabError) -> None:
        if errors is None:
            raise exc
        errors.append(Failure(Path(path), failure_line(path, exc)))

    if errors is None:
        files = discover(paths)
    else:
        files = []
        for path in paths:
            try:
                files += [f for f in discover([path]) if f not in files]
            except AxlabError as exc:
                fail(path, exc)
    if not files:
        if errors:
            return []
        raise AxlabError(f"no Verilog netlists found under {', '.join(map(str, paths))}")
    todo: list[tuple[int, NetlistInfo, ParsedNetlist, bool, str]] = []
    results: list[BuildResult | None] = [None] * len(files)
    for i, f in enumerate(files):
        t0 = time.perf_counter()
        try:
            info = read_netlist(f)
            if not allow_non_multiplier:
                check_multiplier(f, info.module)
            sgn = _signedness(info, signed)
            key = cache_key(info, sim, sgn)
            hit = _load_cached(key) if use_cache else None
            if hit is not None:
                if not allow_non_multiplier:
                    check_multiplier(f, info.module, hit.bits_a, hit.bits_b, int(hit.meta.get("bits_o", 0)))
                results[i] = BuildResult(hit, True, {"total": time.perf_counter() - t0})
                continue
            p = parse_netlist(info)
            _check_widths(info, p, max_pairs)
            if not allow_non_multiplier:
                check_multiplier(f, info.module, p.bits_a, p.bits_b, p.bits_o)
        except AxlabError as exc:
            fail(f, exc)
            continue
        todo.append((i, info, p, sgn, key))
    if not todo:
        return [r for r in results if r is not None]

    # gate evaluator (always: it is the reference the RTL is checked against)
    gate_raw, gate_time = {}, {}
    for i, info, p, sgn, _ in todo:
        t0 = time.perf_counter()
        gate_raw[i] = p.graph.evaluate(*_exhaustive_pairs(p, sgn))
        gate_time[i] = time.perf_counter() - t0

    rtl_raw: dict[int, np.ndarray] = {}
    rtl_time: dict[int, float] = {}
    if sim != "gates":
        from hwsim.rtlsim import SimTarget, simulate

        groups: dict[tuple[int, int, bool], list] = {}
        for item in todo:
            groups.setdefault((item[2].bits_a, item[2].bits_b, item[3]), []).append(item)
        for (ba, bb, sgn), items in groups.items():
            a, b = _exhaustive_pairs(items[0][2], sgn)

            def run(batch: list) -> None:
                t0 = time.perf_counter()
                targets = [SimTarget(simulation_info(info, p), p.bits_a, p.bits_b, p.bits_o)
                           for _, info, p, _, _ in batch]
                outs = simulate(targets, a, b, sim=sim, jobs=jobs)
                share = (time.perf_counter() - t0) / len(batch)
                for (i, *_), raw in zip(batch, outs):
                    rtl_raw[i], rtl_time[i] = raw, share

            try:
                run(items)
            except AxlabError as exc:
                if errors is None:
                    raise
                if len(items) == 1:
                    fail(items[0][1].path, exc)
                    continue
                for item in items:  # one bad netlist spoils a combined build: find which
                    try:
                        run([item])
                    except AxlabError as exc1:
                        fail(item[1].path, exc1)
        kept = []
        for item in todo:
            i, info, p, sgn, _ = item
            if i not in rtl_raw:
                continue  # its simulation failed (recorded above)
            if not np.array_equal(rtl_raw[i], gate_raw[i]):
                fail(info.path, Mismatch(f"{info.path}: RTL ({sim}) and gate evaluator disagree: "
                                         f"{_first_differences(p, sgn, rtl_raw[i], gate_raw[i])}"))
                continue
            kept.append(item)
        todo = kept

    version = simulator_version(sim)
    for i, info, p, sgn, key in todo:
        t0 = time.perf_counter()
        raw = rtl_raw.get(i, gate_raw[i])
        lut = Lut(info.module, _table(raw, p, sgn), p.bits_a, p.bits_b, sgn)
        metrics = error_metrics(lut)
        checks = compare_with_header(metrics, info.published, p.bits_a + p.bits_b)
        cost = _cost(info, p)
        lut.meta.update({
            "bits_o": p.bits_o,
            "metrics": metrics,
            "published": {k: dict({"value": v.value, "text": v.text}, **({"legacy": True} if v.legacy else {}))
                          for k, v in info.published.items()},
            "header_match": all(c.ok for c in checks) if checks else None,
            "cost": cost,
            "gates": p.graph.gate_counts(),
            "cache_key": key,
            "provenance": {
                "netlist_path": str(info.path), "netlist_sha256": info.sha256, "module": info.module,
                "simulator": sim, "simulator_version": version, "verified_against_gates": sim != "gates",
                "axlab": _axlab_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **({"library_cells": list(p.library_cells)} if p.library_cells else {}),
                **({"ports": list(p.ports)} if tuple(p.ports) != ("A", "B", "O") else {}),
            },
        })
        if use_cache:
            lut.save(_lut_path(key))
            _remember_name(lut, key)
        results[i] = BuildResult(lut, False, {"gates": gate_time[i], "rtl": rtl_time.get(i, 0.0),
                                             "characterise": time.perf_counter() - t0})
    return [r for r in results if r is not None]


def sample_netlist(path: str | Path, n: int, sim: str = "verilator", signed: bool | None = None,
                   seed: int = 0, allow_non_multiplier: bool = False) -> dict:
    """Sampled mode for wide multipliers: N seeded random operand pairs through RTL and gates.

    Returns {'a', 'b' (int64 operand values), 'product' (int64), 'metrics' (estimated from
    the sample, same definitions as the exhaustive ones), 'mismatches' (RTL vs gates)}.
    """
    info = read_netlist(path)
    if not allow_non_multiplier:
        check_multiplier(info.path, info.module)
    sgn = _signedness(info, signed)
    p = parse_netlist(info)
    if not allow_non_multiplier:
        check_multiplier(info.path, info.module, p.bits_a, p.bits_b, p.bits_o)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**p.bits_a, n, dtype=np.uint64)
    b = rng.integers(0, 2**p.bits_b, n, dtype=np.uint64)
    gates = p.graph.evaluate(a, b)
    mismatches = 0
    if sim != "gates":
        from hwsim.rtlsim import SimTarget, simulate

        rtl = simulate([SimTarget(simulation_info(info, p), p.bits_a, p.bits_b, p.bits_o)], a, b, sim=sim, jobs=1)[0]
        mismatches = int(np.count_nonzero(rtl != gates))
    va, vb = to_signed(a, p.bits_a, sgn), to_signed(b, p.bits_b, sgn)
    prod = to_signed(gates, p.bits_o, sgn)
    exact = va * vb
    err = np.abs(prod - exact).astype(np.float64)
    span = float(2 ** (p.bits_a + p.bits_b))
    nz = exact != 0
    metrics = {"mae": err.mean(), "mae_pct": err.mean() / span * 100, "wce": err.max(),
               "wce_pct": err.max() / span * 100, "ep_pct": float(np.count_nonzero(err)) / n * 100,
               "mre_pct": float((err[nz] / np.abs(exact[nz])).mean() * 100) if nz.any() else 0.0,
               "mse": float((err**2).mean())}
    return {"module": info.module, "bits_a": p.bits_a, "bits_b": p.bits_b, "signed": sgn, "a": va, "b": vb,
            "product": prod, "metrics": metrics, "mismatches": mismatches, "n": n, "seed": seed}


def build_builtin(sim: str = "verilator", names: list[str] | None = None, jobs: int | None = None) -> list[BuildResult]:
    """LUTs of the built-in family (generated Verilog, characterised like any netlist)."""
    names = names or builtin_names()
    return build_luts([builtin_path(n) for n in names], sim=sim, jobs=jobs)


def known_names() -> list[str]:
    """Built-in names plus every module name the store has built."""
    d = cache_dir() / "names"
    built = sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
    return sorted(set(builtin_names()) | set(built) | {"exact"})


def resolve(spec: str, sim: str | None = None) -> Lut:
    """A LUT from a spec: a LUT ``.npz`` path, a netlist ``.v``/``.sv`` path, a built-in name
    (``exact`` means ``mul8s_bi_exact``), or a module name built earlier.

    Netlists are built with ``sim`` (default ``$AXLAB_SIM`` or ``verilator``) and cached.
    """
    sim = sim or os.environ.get("AXLAB_SIM", "verilator")
    path = Path(spec)
    if spec.endswith(".npz"):
        if not path.is_file():
            raise AxlabError(f"LUT file {spec} not found")
        return Lut.load(path)
    if path.suffix in (".v", ".sv"):
        if not path.is_file():
            raise AxlabError(f"netlist {spec} not found")
        return build_luts([path], sim=sim)[0].lut
    name = "mul8s_bi_exact" if spec == "exact" else spec
    if name in builtin_names():
        return build_luts([builtin_path(name)], sim=sim)[0].lut
    ptr = cache_dir() / "names" / f"{name}.json"
    if ptr.is_file():
        try:
            entry = json.loads(ptr.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            entry = {}
        if not isinstance(entry, dict):  # a damaged pointer is ignored like a missing one
            entry = {}
        key, netlist = entry.get("key"), entry.get("netlist")
        lut = _load_cached(key) if isinstance(key, str) and key.isalnum() else None
        if lut is not None:
            return lut
        if isinstance(netlist, str) and netlist and Path(netlist).is_file():
            return build_luts([netlist], sim=sim)[0].lut
    raise AxlabError(f"unknown multiplier '{spec}': not a .npz/.v path, built-in or built name "
                     f"(known: {', '.join(known_names())})")
