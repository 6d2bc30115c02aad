"""Validation of a model graph and its quantisation: one table of ops, one shape pass.

Everything a model file says is checked here before any of it is run: the node list
(names, ops, inputs in topological order), every op's attributes against :data:`OPS`, the
shape of every tensor (weights against the layer, each op's output from its inputs), that
weights are finite, and that the frozen int8 quantisation is usable (scales finite and > 0,
zero points and codes int8 integers, bias codes int32). A problem raises one
:class:`hwsim.errors.AxlabError` line naming the node, attribute or tensor and the allowed range.

Adding an op: add an :class:`OpSpec` to :data:`OPS` (number of inputs, attributes with
their kinds, parameter tensors, and a shape function ``infer(node, in_shapes, params) ->
out_shape`` that raises :class:`ShapeError` for inputs it cannot take). Shapes are per
image, without the batch axis: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hwsim.errors import AxlabError

Shape = tuple[int, ...]
MAX_ELEMENTS = 2**26          # per tensor (per image): a bound against absurd shapes
MAX_NAME = 200


class ShapeError(Exception):
    """Raised by an op's ``infer``: the message says what does not fit (no node name)."""


# ----------------------------------------------------------------------------- attribute kinds
@dataclass(frozen=True)
class Bool:
    """A JSON boolean."""

    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else "a boolean (true/false)"


@dataclass(frozen=True)
class Int:
    """A JSON integer in [lo, hi]."""

    lo: int | None = None
    hi: int | None = None

    def problem(self, v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and (self.lo is None or v >= self.lo) \
            and (self.hi is None or v <= self.hi)
        if ok:
            return None
        rng = f" >= {self.lo}" if self.hi is None else f" in [{self.lo}, {self.hi}]"
        return "an integer" + (rng if self.lo is not None else "")


@dataclass(frozen=True)
class Pair:
    """A list of two JSON integers (height, width), each >= lo."""

    lo: int = 1

    def problem(self, v: Any) -> str | None:
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= self.lo for x in v)
        return None if ok else f"a list of two integers >= {self.lo}"


@dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    choices: tuple[str, ...]

    def problem(self, v: Any) -> str | None:
        return None if v in self.choices else f"one of {', '.join(self.choices)}"


# ----------------------------------------------------------------------------- shape functions
def _fmap(shape: Shape, what: str = "input") -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"needs a (C, H, W) feature map as {what}, got shape {shape}")
    return shape  # type: ignore[return-value]


def _param(params: dict[str, np.ndarray], key: str, want: Shape, what: str) -> None:
    got = tuple(params[key].shape)
    if got != want:
        raise ShapeError(f"tensor {key} has shape {got}, {what} needs {want}")


def _window(n: dict[str, Any], h: int, w: int, pad: list[int]) -> tuple[int, int]:
    (kh, kw), (sh, sw) = n["kernel"], n["stride"]
    if h + 2 * pad[0] < kh or w + 2 * pad[1] < kw:
        raise ShapeError(f"kernel {kh}x{kw} is larger than its padded {h}x{w} input")
    return (h + 2 * pad[0] - kh) // sh + 1, (w + 2 * pad[1] - kw) // sw + 1


def _infer_input(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    raise AssertionError("the input node's shape is the graph's input_shape")  # pragma: no cover


def _infer_conv(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    c, h, w = _fmap(ins[0])
    kh, kw = n["kernel"]
    if n["padding"][0] >= kh or n["padding"][1] >= kw:
        raise ShapeError(f"padding {n['padding']} must be smaller than the kernel {n['kernel']}")
    wt = params[f"{n['name']}.weight"]
    if wt.ndim != 4:
        raise ShapeError(f"tensor {n['name']}.weight has shape {tuple(wt.shape)}, a conv needs (Co, {c}, {kh}, {kw})")
    co = int(wt.shape[0])
    _param(params, f"{n['name']}.weight", (co, c, kh, kw), f"a {kh}x{kw} conv on {c} channels")
    _param(params, f"{n['name']}.bias", (co,), f"a conv with {co} output channels")
    return (co, *_window(n, h, w, n["padding"]))


def _infer_linear(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    if len(ins[0]) != 1:
        raise ShapeError(f"needs a flat (F,) input (flatten first), got shape {ins[0]}")
    wt = params[f"{n['name']}.weight"]
    co = int(wt.shape[0]) if wt.ndim >= 1 else 0
    _param(params, f"{n['name']}.weight", (co, ins[0][0]), f"a linear layer on {ins[0][0]} input features")
    _param(params, f"{n['name']}.bias", (co,), f"a linear layer with {co} outputs")
    return (co,)


def _infer_same(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    if any(s != ins[0] for s in ins[1:]):
        raise ShapeError(f"inputs of different shapes {', '.join(map(str, ins))}")
    return ins[0]


def _infer_maxpool(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    c, h, w = _fmap(ins[0])
    if any(2 * p > k for p, k in zip(n["padding"], n["kernel"])):
        raise ShapeError(f"padding {n['padding']} must be at most half the kernel {n['kernel']}")
    return (c, *_window(n, h, w, n["padding"]))


def _infer_avgpool(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    c, h, w = _fmap(ins[0])
    return (c, *_window(n, h, w, [0, 0]))


def _infer_gap(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    c, _, _ = _fmap(ins[0])
    return (c, 1, 1)


def _infer_flatten(n: dict[str, Any], ins: list[Shape], params: dict[str, np.ndarray]) -> Shape:
    return (int(np.prod(ins[0])),)


@dataclass(frozen=True)
class OpSpec:
    """What one op needs: input count, attributes (name -> kind), parameter tensors
    (``<node>.<suffix>`` in ``graph.params``) and the per-image output shape function."""

    inputs: int
    infer: Callable[[dict[str, Any], list[Shape], dict[str, np.ndarray]], Shape]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()


# The op table. Keys are node["op"]; nn/graph.py documents the semantics.
OPS: dict[str, OpSpec] = {
    "input": OpSpec(0, _infer_input),
    "conv": OpSpec(1, _infer_conv, {"kernel": Pair(1), "stride": Pair(1), "padding": Pair(0), "relu": Bool()},
                   ("weight", "bias")),
    "linear": OpSpec(1, _infer_linear, {"relu": Bool()}, ("weight", "bias")),
    "add": OpSpec(2, _infer_same, {"relu": Bool()}),
    "relu": OpSpec(1, _infer_same),
    "maxpool": OpSpec(1, _infer_maxpool, {"kernel": Pair(1), "stride": Pair(1), "padding": Pair(0)}),
    "avgpool": OpSpec(1, _infer_avgpool, {"kernel": Pair(1), "stride": Pair(1)}),
    "gap": OpSpec(1, _infer_gap),
    "flatten": OpSpec(1, _infer_flatten),
}
NODE_KEYS = ("name", "op", "inputs")

# TFLite-semantics ops (nn/tflite_import.py). A graph made of these is checked here for its
# structure (names, inputs, order) and finite tensors and scales; its attributes, shapes and
# integer parameters are checked by nn.tflite_engine.TfliteEngine (``check_tflite`` below).
# Moving an op into OPS (with its attributes and shape function) makes it checked here too.
TFLITE_OPS = ("tfl_quantize", "tfl_conv", "tfl_dwconv", "tfl_fc", "tfl_add", "tfl_avgpool", "tfl_maxpool",
              "tfl_mean", "tfl_pad", "tfl_reshape", "tfl_softmax")


def is_tflite_graph(nodes: Any) -> bool:
    """Whether a node list uses the TFLite op family (then every non-input op must)."""
    return isinstance(nodes, list) and any(isinstance(n, dict) and n.get("op") in TFLITE_OPS for n in nodes)


# ----------------------------------------------------------------------------- structure
def _err(where: str, msg: str) -> AxlabError:
    return AxlabError(f"{where}: {msg}")


def check_graph_json(d: Any, where: str = "model") -> None:
    """Structure of a graph's JSON (``{"input_shape": [C, H, W], "nodes": [...]}``): node
    names unique, ops known, attributes of the right kind, inputs defined earlier (so no
    cycle and no dangling input). Raises AxlabError naming the node and key."""
    if not isinstance(d, dict):
        raise _err(where, f"graph must be a JSON object, got {type(d).__name__}")
    shape = d.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise _err(where, f"graph input_shape must be three integers >= 1 (C, H, W), got {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise _err(where, f"graph input_shape {list(shape)} has more than {MAX_ELEMENTS} values")
    nodes = d.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise _err(where, "graph nodes must be a non-empty list")
    extra = sorted(set(d) - {"input_shape", "nodes"})
    if extra:
        raise _err(where, f"graph has unknown key {extra[0]!r} (allowed: input_shape, nodes)")
    tflite = is_tflite_graph(nodes)
    defined: dict[str, int] = {}
    all_names = {n.get("name") for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str)}
    for i, n in enumerate(nodes):
        at = f"graph node {i}"
        if not isinstance(n, dict):
            raise _err(where, f"{at} must be a JSON object, got {type(n).__name__}")
        name = n.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
            raise _err(where, f"{at}: name must be a non-empty printable string of at most {MAX_NAME} "
                              f"characters, got {name!r}")
        at = f"node {name!r}"
        if name in defined:
            raise _err(where, f"duplicate node name {name!r} (nodes {defined[name]} and {i})")
        op = n.get("op")
        known = ("input",) + TFLITE_OPS if tflite else tuple(OPS)
        if op not in known:
            raise _err(where, f"{at}: unknown op {op!r} (known: {', '.join(known)})")
        spec = OPS.get(op)
        if (i == 0) != (op == "input"):
            raise _err(where, f"{at}: the first node, and only it, must be the input (op 'input')")
        inputs = n.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise _err(where, f"{at}: inputs must be a list of node names, got {inputs!r}")
        if spec is None:  # a TFLite op: attributes checked by nn.tflite_engine
            if not inputs:
                raise _err(where, f"{at}: op {op} needs at least one input")
        elif len(inputs) != spec.inputs:
            raise _err(where, f"{at}: op {op} takes {spec.inputs} input(s), got {len(inputs)}")
        for x in inputs:
            if x not in defined:
                why = ("is defined after it (a cycle, or nodes not in topological order)" if x in all_names
                       else "is not a node of the graph (dangling input)")
                raise _err(where, f"{at}: input {x!r} {why}")
        defined[name] = i
        if spec is None:
            continue
        unknown = sorted(set(n) - set(NODE_KEYS) - set(spec.attrs))
        if unknown:
            raise _err(where, f"{at}: unknown attribute {unknown[0]!r} for op {op} "
                              f"(allowed: {', '.join(spec.attrs) or 'none'})")
        for key, kind in spec.attrs.items():
            if key not in n:
                raise _err(where, f"{at}: op {op} needs attribute {key!r}")
            want = kind.problem(n[key])
            if want:
                raise _err(where, f"{at}: {key} must be {want}, got {n[key]!r}")


def _check_finite(g: Any, where: str) -> None:
    for k in sorted(g.params):
        v = g.params[k]
        if not isinstance(v, np.ndarray):
            raise _err(where, f"tensor {k} must be an array, got {type(v).__name__}")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise _err(where, f"tensor {k} holds {int((~np.isfinite(v)).sum())} NaN/inf value(s)")


def _check_params(g: Any, where: str) -> None:
    want = {f"{n['name']}.{s}" for n in g.nodes for s in OPS[n["op"]].params}
    missing = sorted(want - set(g.params))
    if missing:
        raise _err(where, f"tensor {missing[0]} is missing")
    extra = sorted(set(g.params) - want)
    if extra:
        raise _err(where, f"unexpected tensor {extra[0]} (no node uses it)")
    for k in sorted(want):
        v = g.params[k]
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            raise _err(where, f"tensor {k} must be a float array, got {getattr(v, 'dtype', type(v).__name__)}")
        if not np.isfinite(v).all():
            raise _err(where, f"tensor {k} holds {int((~np.isfinite(v)).sum())} NaN/inf value(s)")


def infer_shapes(g: Any, where: str = "model") -> dict[str, Shape]:
    """Per-image output shape of every node (after :func:`check_graph_json`)."""
    shapes: dict[str, Shape] = {}
    for n in g.nodes:
        if n["op"] == "input":
            shapes[n["name"]] = tuple(g.input_shape)
            continue
        try:
            out = tuple(int(v) for v in OPS[n["op"]].infer(n, [shapes[i] for i in n["inputs"]], g.params))
        except ShapeError as exc:
            raise _err(where, f"node {n['name']!r} ({n['op']}): {exc}") from None
        if not out or min(out) < 1 or math.prod(out) > MAX_ELEMENTS:
            raise _err(where, f"node {n['name']!r} ({n['op']}): output shape {out} is empty or too large")
        shapes[n["name"]] = out
    return shapes


def check_graph(g: Any, where: str = "model") -> dict[str, Shape]:
    """Full check of a :class:`nn.graph.Graph` (structure, parameters, shapes, a flat
    output of class scores); returns the per-image shape of every node."""
    check_graph_json(g.to_json(), where)
    if is_tflite_graph(g.nodes):  # attributes and shapes: nn.tflite_engine (check_tflite)
        _check_finite(g, where)
        return {}
    _check_params(g, where)
    shapes = infer_shapes(g, where)
    out = shapes[g.output]
    if len(out) != 1 or out[0] < 2:
        raise _err(where, f"the output node {g.output!r} gives shape {out}; expected class scores (classes,), classes >= 2")
    return shapes


# ----------------------------------------------------------------------------- quantisation
QMIN, QMAX = -128, 127
INPUT_ZP = -128
BIAS_LIM = 2**31 - 1


def _check_act(qp: Any, names: list[str], where: str) -> None:
    """(scale, zero point) of each named node: 0 < scale < inf, integer zero point in int8."""
    for name in names:
        entry = qp.act[name]
        s, zp = entry if isinstance(entry, (tuple, list)) and len(entry) == 2 else (None, None)
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (float, int, np.floating, np.integer)) \
                or not math.isfinite(s) or s <= 0:
            raise _err(where, f"node {name!r}: activation scale must be a finite number > 0, got {s!r}")
        if isinstance(zp, (bool, np.bool_)) or not isinstance(zp, (int, np.integer)) or not QMIN <= zp <= QMAX:
            raise _err(where, f"node {name!r}: activation zero point must be an integer in [{QMIN}, {QMAX}], got {zp!r}")


def check_quant(g: Any, qp: Any, qat_params: dict[str, np.ndarray] | None = None, where: str = "model") -> None:
    """The frozen int8 quantisation (:class:`nn.quant.QuantParams`) of a checked graph:
    activation (scale, zero point) of every quantised node with 0 < scale < inf and an
    integer zero point in [-128, 127]; per layer int8 weight codes shaped like the weight,
    per-channel weight scales (Co,) finite and > 0, int32-range integer bias codes (Co,).
    ``qat_params`` (if given) must match the float parameters' keys and shapes and be finite."""
    from nn.graph import LAYER_OPS, QUANT_OPS

    if is_tflite_graph(g.nodes):
        _check_act(qp, list(qp.act), where)
        return
    quant_nodes = [n["name"] for n in g.nodes if n["op"] in QUANT_OPS]
    for name in quant_nodes:
        if name not in qp.act:
            raise _err(where, f"quantisation of node {name!r} is missing")
    extra = sorted(set(qp.act) - set(quant_nodes))
    if extra:
        raise _err(where, f"quantisation given for {extra[0]!r}, which is not a quantised node")
    _check_act(qp, quant_nodes, where)
    # the integer engine feeds pixels as code = pixel - 128: the input grid is fixed
    s_in, zp_in = qp.act["input"]
    if zp_in != INPUT_ZP or abs(s_in * 255.0 - 1.0) > 1e-9:
        raise _err(where, f"node 'input': activation quantisation must be (1/255, {INPUT_ZP}) (code = pixel - 128), "
                          f"got ({s_in!r}, {zp_in!r})")
    layers = [n["name"] for n in g.nodes if n["op"] in LAYER_OPS]
    for d, what in ((qp.wq, "weight codes"), (qp.ws, "weight scales"), (qp.bq, "bias codes")):
        extra = sorted(set(d) - set(layers))
        if extra:
            raise _err(where, f"{what} given for {extra[0]!r}, which is not a conv/linear layer")
    for name in layers:
        w = g.params[f"{name}.weight"]
        co = int(w.shape[0])
        for d, what, shape in ((qp.wq, "weight codes", tuple(w.shape)), (qp.ws, "weight scales", (co,)),
                               (qp.bq, "bias codes", (co,))):
            v = d.get(name)
            if not isinstance(v, np.ndarray):
                raise _err(where, f"layer {name!r}: {what} are missing")
            if tuple(v.shape) != shape:
                raise _err(where, f"layer {name!r}: {what} have shape {tuple(v.shape)}, the layer needs {shape}")
        wq, ws, bq = qp.wq[name], qp.ws[name], qp.bq[name]
        if wq.dtype.kind not in "iu" or (wq.size and (wq.min() < QMIN or wq.max() > QMAX)):
            raise _err(where, f"layer {name!r}: weight codes must be integers in [{QMIN}, {QMAX}], got "
                              f"{wq.dtype} in [{wq.min() if wq.size else '-'}, {wq.max() if wq.size else '-'}]")
        if ws.dtype.kind != "f" or not (np.isfinite(ws).all() and (ws > 0).all()):
            raise _err(where, f"layer {name!r}: weight scales must be finite numbers > 0 "
                              f"(got {int((~(np.isfinite(ws) & (ws > 0))).sum()) if ws.dtype.kind == 'f' else ws.dtype} bad)")
        if bq.dtype.kind not in "iu" or (bq.size and (bq.min() < -BIAS_LIM or bq.max() > BIAS_LIM)):
            raise _err(where, f"layer {name!r}: bias codes must be integers in [-2^31+1, 2^31-1]")
        # requantisation M = s_in * s_w / s_out is applied in fixed point as M0 * 2^-rs, rs in [1, 62]
        s_in, s_out = qp.act[g.quant_source(g.by_name[name]["inputs"][0])][0], qp.act[name][0]
        m = s_in * ws / s_out
        if not (np.isfinite(m).all() and (m >= 2.0**-32).all() and (m < 2.0**30).all()):
            raise _err(where, f"layer {name!r}: requantisation multiplier s_in*s_w/s_out must be in [2^-32, 2^30), "
                              f"got {float(np.min(m)):.3g}..{float(np.max(m)):.3g}")
    if qat_params is not None:
        if set(qat_params) != set(g.params):
            diff = sorted(set(qat_params) ^ set(g.params))
            raise _err(where, f"QAT tensor set differs from the float tensors at {diff[0]}")
        for k, v in qat_params.items():
            if not isinstance(v, np.ndarray) or v.shape != g.params[k].shape or v.dtype.kind != "f":
                raise _err(where, f"QAT tensor {k} has shape {getattr(v, 'shape', None)}, the float tensor "
                                  f"{tuple(g.params[k].shape)}")
            if not np.isfinite(v).all():
                raise _err(where, f"QAT tensor {k} holds NaN/inf values")
