"""Planning the datapath of an imported TFLite network (``tfl_*`` ops, nn.tflite_engine) as engine
steps that implement the model's OWN integer arithmetic:

* CONV_2D / FULLY_CONNECTED -> the conv/dense engine (axlab_conv_engine: the layer's multiplier
  netlist sees the raw int8 codes, activation code x weight code, with the zero point's code in
  the padding; ``const = bias - za * sum(w)`` makes the zero-point correction exact, as the
  AxNN of nn.tflite_engine computes it) and TFLite's requantiser (axlab_tfl_requant:
  MultiplyByQuantizedMultiplier with per-channel multiplier and shift, double rounding for
  CONV_2D, single rounding for FULLY_CONNECTED; the fused activation's range as the clamp);
* ADD -> axlab_tfl_add_engine (both inputs shifted left by 20 and rescaled);
* AVERAGE_POOL_2D / MAX_POOL_2D -> axlab_tfl_pool_engine (window clipped to the image, rounding
  half away from zero);
* RESHAPE -> no step (the RAM region is reused; a FULLY_CONNECTED layer reading a flattened
  feature map gets its weight columns reordered from TFLite's NHWC order to the RAM's CHW order);
* SOFTMAX as the graph's last operator -> axlab_tfl_softmax_engine (LiteRT's int8 softmax: the
  model's exp table in a 256-word ROM, the reciprocal by gemmlowp's Newton-Raphson) when
  ``softmax`` is true (default), else the RTL stops at SOFTMAX's input.

Anything else (DEPTHWISE_CONV_2D, MEAN, PAD, QUANTIZE, ...) is refused with one line naming the
op and the node: the export never writes Verilog it cannot co-simulate bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flows.export.plan import Step, Tensor, assign_lanes
from hwsim.errors import AxlabError

SUPPORTED = ("tfl_conv", "tfl_fc", "tfl_add", "tfl_avgpool", "tfl_maxpool", "tfl_reshape", "tfl_softmax (last)")


@dataclass
class TflLayerQ:
    """The integer parameters of one CONV_2D / FULLY_CONNECTED layer as the export writes them
    (LayerQ-like: ``w`` (Co, C, kh, kw) int codes in the RAM's operand order, dense as (Co, F, 1, 1))."""

    name: str
    op: str
    w: np.ndarray        # int64 (Co, C, kh, kw)
    bq: np.ndarray       # int64 (Co,)
    m: np.ndarray        # int64 (Co,) significands in [0, 2^31)
    shift: np.ndarray    # int64 (Co,) in [-31, 30]
    single: bool         # one rounding (FULLY_CONNECTED) or gemmlowp's two (CONV_2D)
    za: int
    zo: int
    lo: int
    hi: int
    stride: tuple[int, int]
    padding: tuple[int, int]  # top, left (bottom / right follow from the output size)

    @property
    def k(self) -> int:
        return int(np.prod(self.w.shape[1:]))


def _refuse(op: str, name: str, why: str = "") -> AxlabError:
    return AxlabError(f"export does not support operation {op} (node {name}) of an imported TFLite model"
                      f"{why} (supported: {', '.join(SUPPORTED)})")


def plan_tflite(bundle: Any, engine: Any, lanes: int, softmax: bool = True
                ) -> tuple[list[Step], dict[str, Tensor], int, str]:
    """Steps, RAM layout (every tensor its own CHW region; reshapes alias), RAM size and the name
    of the node whose codes the RTL leaves in RAM (the graph's output, or SOFTMAX's input)."""
    from nn.tflite_ops import ADD_LEFT_SHIFT

    g = bundle.graph
    layers = g.layers()
    regions: dict[str, Tensor] = {}
    # flat (rank-1) tensors: the (c, h, w) feature map whose CHW bytes they alias
    flat_of: dict[str, tuple[int, int, int]] = {}
    steps: list[Step] = []
    top = 0
    nodes = g.nodes
    out_name = g.output

    def alloc(name: str, c: int, h: int, w: int) -> Tensor:
        nonlocal top
        t = Tensor(top, c, h, w)
        regions[name] = t
        top += t.size
        return t

    def fmap(name: str, user: dict[str, Any]) -> Tensor:
        """A feature-map operand: its CHW region (a flattened alias is refused)."""
        if name in flat_of and not _trivial(flat_of[name]):
            raise _refuse(user["op"], user["name"], f": its input {name} is a flattened feature map")
        return regions[name]

    for idx, n in enumerate(nodes):
        op, name = n["op"], n["name"]
        if op == "input":
            alloc(name, *g.input_shape)
            continue
        if op in ("tfl_conv", "tfl_fc"):
            L = engine.layers[name]
            src_name = n["inputs"][0]
            co = int(L.w.shape[0])
            if op == "tfl_conv":
                src = fmap(src_name, n)
                _, ci, kh, kw = L.w.shape
                t, b, l, r = L.pad4
                ho = (src.h + t + b - kh) // L.stride[0] + 1
                wo = (src.w + l + r - kw) // L.stride[1] + 1
                w4 = np.asarray(L.w, dtype=np.int64)
                stride, pad = (int(L.stride[0]), int(L.stride[1])), (int(t), int(l))
                geo = {"C": ci, "H": src.h, "W": src.w, "KH": kh, "KW": kw}
            else:
                src = regions[src_name]
                wf = np.asarray(L.w, dtype=np.int64).reshape(co, -1)
                c, h, w = flat_of.get(src_name, (src.c, src.h, src.w))
                if wf.shape[1] != c * h * w:
                    raise AxlabError(f"layer {name}: {wf.shape[1]} inputs but the previous tensor has {c * h * w}")
                # TFLite flattens NHWC: column (y*W + x)*C + ch; the RAM holds ch*H*W + y*W + x
                wf = wf.reshape(co, h, w, c).transpose(0, 3, 1, 2).reshape(co, -1)
                w4 = wf[:, :, None, None]
                ho = wo = 1
                stride, pad = (1, 1), (0, 0)
                geo = {"C": wf.shape[1], "H": 1, "W": 1, "KH": 1, "KW": 1}
            m = L.m.numpy().astype(np.int64)
            sh = L.shift.numpy().astype(np.int64)
            Lq = TflLayerQ(name, op, w4, L.bq.numpy().astype(np.int64), m, sh, bool(L.single), int(L.za),
                           int(L.zo), int(L.lo), int(L.hi), stride, pad)
            const = Lq.bq - Lq.za * w4.reshape(co, -1).sum(1)  # signed multiplier: exact zero-point term
            out = alloc(name, co, ho, wo)
            steps.append(Step("conv", name, {
                **geo, "CO": co, "HO": ho, "WO": wo, "SH": stride[0], "SW": stride[1], "PH": pad[0], "PW": pad[1],
                "P": 1, "IN_BASE": src.base, "OUT_BASE": out.base, "ZA": Lq.za, "ZO": Lq.zo, "LO": Lq.lo,
                "_HI": Lq.hi, "_SINGLE": int(Lq.single), "_L": Lq, "_const": const, "_tfl": True},
                layers.index(name)))
        elif op == "tfl_add":
            a, b = fmap(n["inputs"][0], n), fmap(n["inputs"][1], n)
            if a.size != b.size:
                raise AxlabError(f"add {name}: operand sizes {a.size} and {b.size} differ")
            z1, m1, sh1, z2, m2, sh2, zo, mo, sho, lo, hi = (int(v) for v in engine.add_q[name])
            out = alloc(name, a.c, a.h, a.w)
            steps.append(Step("add", name, {
                "N": a.size, "A_BASE": a.base, "B_BASE": b.base, "OUT_BASE": out.base,
                "Z1": z1, "M1": m1, "SH1": sh1, "Z2": z2, "M2": m2, "SH2": sh2, "ZO": zo, "MO": mo, "SHO": sho,
                "LO": lo, "HI": hi, "LEFT": ADD_LEFT_SHIFT, "_tfl": True}))
        elif op in ("tfl_avgpool", "tfl_maxpool"):
            src = fmap(n["inputs"][0], n)
            (kh, kw), (sh_, sw_), (t, b, l, r) = n["kernel"], n["stride"], n["pad4"]
            ho = (src.h + t + b - kh) // sh_ + 1
            wo = (src.w + l + r - kw) // sw_ + 1
            lo, hi = engine.misc[name]
            out = alloc(name, src.c, ho, wo)
            steps.append(Step("pool", name, {
                "C": src.c, "H": src.h, "W": src.w, "HO": ho, "WO": wo, "KH": kh, "KW": kw, "SH": sh_, "SW": sw_,
                "PH": t, "PW": l, "AVG": int(op == "tfl_avgpool"), "LO": int(lo), "HI": int(hi),
                "IN_BASE": src.base, "OUT_BASE": out.base, "_tfl": True}))
        elif op == "tfl_reshape":
            src_name = n["inputs"][0]
            src = regions[src_name]
            shp = flat_of.get(src_name, (src.c, src.h, src.w))
            dims = list(n["shape"])
            if len(dims) == 1:
                regions[name] = Tensor(src.base, src.size, 1, 1)
                flat_of[name] = shp
            elif _trivial(shp) and (len(dims) != 3 or _trivial((dims[2], dims[0], dims[1]))):
                # NHWC and CHW orders coincide on both sides: the bytes stay where they are
                c, h, w = (dims[2], dims[0], dims[1]) if len(dims) == 3 else (int(np.prod(dims)), 1, 1)
                regions[name] = Tensor(src.base, c, h, w)
            else:
                raise _refuse(op, name, f": {shp} to {dims} moves bytes")
        elif op == "tfl_softmax" and idx == len(nodes) - 1:
            src_name = n["inputs"][0]
            src = regions[src_name]
            if src_name in flat_of and not _trivial(flat_of[src_name]):
                raise _refuse(op, name, ": its input is a flattened feature map")
            if src.h * src.w != 1:
                raise _refuse(op, name, f": softmax over the channels of a {src.h}x{src.w} map")
            if not softmax:
                out_name = src_name
                break
            if src.size > 512:
                raise _refuse(op, name, f": {src.size} codes (at most 512: the output division by a power of two "
                                        "must stay within 31 bits)")
            out = alloc(name, src.c, 1, 1)
            steps.append(Step("softmax", name, {"N": src.size, "IN_BASE": src.base, "OUT_BASE": out.base,
                                                "_table": softmax_table(*engine.misc[name]), "_tfl": True}))
        else:
            raise _refuse(op, name, " yet" if op == "tfl_dwconv" else "")
    if out_name in flat_of and not _trivial(flat_of[out_name]):
        raise AxlabError(f"export: the output {out_name} is a flattened feature map (TFLite's NHWC order); "
                         "not supported")
    assign_lanes([s for s in steps if s.kind == "conv"], lanes)
    return steps, regions, top, out_name


def softmax_table(mult: int, left: int, diff_min: int) -> np.ndarray:
    """The exp ROM of a SOFTMAX node (256 int32, Q0.31): entry d = exp of the scaled input
    difference -d (d = max code - code), 0 where -d < diff_min; computed with nn.tflite_ops'
    own table (nn.tflite_ops.softmax_exp_table), the one its softmax_int8 gathers from."""
    from nn.tflite_ops import softmax_exp_table

    out = softmax_exp_table(int(mult), int(left), int(diff_min)).numpy().astype(np.int64)
    if out.min() < 0 or out.max() >= 2**31:
        raise AxlabError(f"softmax exp table out of range [{out.min()}, {out.max()}]")
    return out


def _trivial(chw: tuple[int, int, int]) -> bool:
    """True when TFLite's NHWC element order equals the RAM's CHW order."""
    c, h, w = chw
    return c == 1 or h * w == 1
