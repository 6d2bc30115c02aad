"""Planning the datapath: the network as a sequence of engine steps (conv/dense, pooling, add),
the activation RAM layout, and the multiplier lanes per layer."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwsim.errors import AxlabError


@dataclass
class Tensor:
    """A CHW int8 code tensor at ``base`` in the activation RAM."""

    base: int
    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w


@dataclass
class Step:
    """One engine run of the top level's sequence."""

    kind: str                      # conv | pool | add
    node: str
    params: dict[str, Any] = field(default_factory=dict)
    layer: int | None = None       # index into the design's layers (conv/dense)


def ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def clog2(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def plan_network(bundle: Any, engine: Any, lanes: int) -> tuple[list[Step], dict[str, Tensor], int]:
    """Steps of the network and the RAM layout (every tensor its own region; flatten aliases)."""
    g = bundle.graph
    layers = g.layers()
    regions: dict[str, Tensor] = {}
    steps: list[Step] = []
    top = 0

    def alloc(name: str, c: int, h: int, w: int) -> Tensor:
        nonlocal top
        t = Tensor(top, c, h, w)
        regions[name] = t
        top += t.size
        return t

    for n in g.nodes:
        op, name = n["op"], n["name"]
        if op == "input":
            alloc(name, *g.input_shape)
            continue
        src = regions[n["inputs"][0]]
        if op in ("conv", "linear"):
            L, mac = engine.lq[name], engine.macs[name]
            co, ci, kh, kw = L.w.shape
            if op == "linear":
                if ci != src.size:
                    raise AxlabError(f"layer {name}: {ci} inputs but the previous tensor has {src.size}")
                src = Tensor(src.base, src.size, 1, 1)
            ho = (src.h + 2 * L.padding[0] - kh) // L.stride[0] + 1
            wo = (src.w + 2 * L.padding[1] - kw) // L.stride[1] + 1
            out = alloc(name, co, ho, wo)
            steps.append(Step("conv", name, {
                "C": ci, "H": src.h, "W": src.w, "CO": co, "HO": ho, "WO": wo, "KH": kh, "KW": kw,
                "SH": L.stride[0], "SW": L.stride[1], "PH": L.padding[0], "PW": L.padding[1], "P": 1,
                "IN_BASE": src.base, "OUT_BASE": out.base, "ZA": L.za, "ZO": L.zo, "LO": L.lo,
                "_L": L, "_const": np.asarray(mac.const, dtype=np.int64)}, layers.index(name)))
        elif op in ("maxpool", "avgpool", "gap"):
            if op == "gap":
                k, s, pad = [src.h, src.w], [1, 1], [0, 0]
            else:
                k, s = list(n["kernel"]), list(n["stride"])
                pad = list(n.get("padding", [0, 0])) if op == "maxpool" else [0, 0]
            ho = (src.h + 2 * pad[0] - k[0]) // s[0] + 1
            wo = (src.w + 2 * pad[1] - k[1]) // s[1] + 1
            out = alloc(name, src.c, ho, wo)
            steps.append(Step("pool", name, {
                "C": src.c, "H": src.h, "W": src.w, "HO": ho, "WO": wo, "KH": k[0], "KW": k[1],
                "SH": s[0], "SW": s[1], "PH": pad[0], "PW": pad[1], "AVG": int(op != "maxpool"),
                "IN_BASE": src.base, "OUT_BASE": out.base}))
        elif op == "add":
            b = regions[n["inputs"][1]]
            if b.size != src.size:
                raise AxlabError(f"add {name}: operand sizes {src.size} and {b.size} differ")
            za, ma, zb, mb, zo, lo = engine.add_q[name]
            for v in (ma, mb):
                if not -2**31 <= v < 2**31:
                    raise AxlabError(f"add {name}: scale ratio {v} does not fit a 32-bit parameter")
            out = alloc(name, src.c, src.h, src.w)
            from nn.engine import ADD_SHIFT

            steps.append(Step("add", name, {
                "N": src.size, "A_BASE": src.base, "B_BASE": b.base, "OUT_BASE": out.base,
                "ZA": za, "ZB": zb, "ZO": zo, "LO": lo, "MA": ma, "MB": mb, "SHIFT": ADD_SHIFT}))
        elif op == "flatten":
            regions[name] = Tensor(src.base, src.size, 1, 1)
        else:
            raise AxlabError(f"export does not support operation {op} ({name}) yet "
                             "(supported: conv, linear, maxpool, avgpool, gap, add, flatten)")
    assign_lanes([s for s in steps if s.kind == "conv"], lanes)
    return steps, regions, top


def assign_lanes(convs: list[Step], lanes: int) -> None:
    """Multipliers per layer in proportion to its MACs: the busiest layer gets ``lanes``, the
    others just enough that no layer needs more clocks than the busiest (fewer instances keep
    the area, the Verilator build and the per-clock simulation cost down)."""
    macs = {id(s): s.params["CO"] * s.params["HO"] * s.params["WO"] * s.params["C"] * s.params["KH"] * s.params["KW"]
            for s in convs}
    if not convs:
        return
    target = max(macs.values()) / lanes  # clocks of the busiest layer
    for s in convs:
        s.params["P"] = int(max(1, min(lanes, s.params["CO"], -(-macs[id(s)] // max(1, int(target))))))

