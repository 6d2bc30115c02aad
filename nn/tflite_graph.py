"""Validation of imported-TFLite graphs (``tfl_*`` ops): attributes, shapes, integer parameters.

nn.graph_check checks such a graph's structure (names, inputs, order, finite tensors,
activation scales); this module checks the rest, so that a damaged or hand-edited model
file gives one AxlabError line naming the node and key instead of a crash at run time.
Shapes are per image in axlab's layout: (C, H, W) feature maps, (F,) vectors.

Ops (attributes):
  tfl_quantize                   requantise the input codes (or quantise the float input)
  tfl_conv (kernel, stride, pad4 [top, bottom, left, right], act)        weight (Co, C, kh, kw)
  tfl_dwconv (kernel, stride, pad4, act, multiplier)                     weight (C*m, 1, kh, kw)
  tfl_fc (act, per_channel)      input flattened in NHWC order            weight (Co, F)
  tfl_add (act); tfl_avgpool / tfl_maxpool (kernel, stride, pad4, act); tfl_mean (keep_dims)
  tfl_pad (pad4); tfl_reshape (shape: TFLite shape without the batch); tfl_softmax (beta)
``act`` is NONE, RELU, RELU6 or RELU_N1_TO_1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwsim.errors import AxlabError

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
MAX_DIM = 1 << 16
WINDOW = {"kernel": "pair", "stride": "pair", "pad4": "quad", "act": "act"}
ATTRS: dict[str, dict[str, str]] = {
    "tfl_quantize": {},
    "tfl_conv": dict(WINDOW),
    "tfl_dwconv": {**WINDOW, "multiplier": "pos"},
    "tfl_fc": {"act": "act", "per_channel": "bool"},
    "tfl_add": {"act": "act"},
    "tfl_avgpool": dict(WINDOW),
    "tfl_maxpool": dict(WINDOW),
    "tfl_mean": {"keep_dims": "bool"},
    "tfl_pad": {"pad4": "quad"},
    "tfl_reshape": {"shape": "dims"},
    "tfl_softmax": {"beta": "float"},
}
INPUTS = {"tfl_add": 2}
INPUT_DTYPES = ("int8", "uint8", "float32")


def _is_int(v: Any, lo: int, hi: int = MAX_DIM) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _kind_problem(kind: str, v: Any) -> str | None:
    if kind == "pair":
        return None if isinstance(v, list) and len(v) == 2 and all(_is_int(x, 1) for x in v) else \
            f"two integers in [1, {MAX_DIM}]"
    if kind == "quad":
        return None if isinstance(v, list) and len(v) == 4 and all(_is_int(x, 0) for x in v) else \
            f"four integers in [0, {MAX_DIM}]"
    if kind == "act":
        return None if v in ACTS else f"one of {', '.join(ACTS)}"
    if kind == "pos":
        return None if _is_int(v, 1) else f"an integer in [1, {MAX_DIM}]"
    if kind == "bool":
        return None if isinstance(v, bool) else "true or false"
    if kind == "dims":
        return None if isinstance(v, list) and 1 <= len(v) <= 3 and all(_is_int(x, 1, 1 << 26) for x in v) else \
            "a list of 1 to 3 integers >= 1"
    if kind == "float":
        return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else \
            "a finite number > 0"
    raise AssertionError(kind)  # pragma: no cover


def _window(n: dict[str, Any], c: int, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (t, b, l, r) = n["kernel"], n["stride"], n["pad4"]
    if t >= kh or b >= kh or l >= kw or r >= kw:
        raise ValueError(f"padding {n['pad4']} must be smaller than the window {n['kernel']}")
    if h + t + b < kh or w + l + r < kw:
        raise ValueError(f"window {kh}x{kw} larger than the padded {h}x{w} input")
    return (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1


def _infer(n: dict[str, Any], ins: list[tuple[int, ...]], g: Any, qp: Any) -> tuple[int, ...]:
    op, name = n["op"], n["name"]
    x = ins[0]
    if op in ("tfl_conv", "tfl_dwconv", "tfl_avgpool", "tfl_maxpool", "tfl_pad", "tfl_mean") and len(x) != 3:
        raise ValueError(f"needs a (C, H, W) feature map, got {x}")
    if op == "tfl_add" and ins[1] != x:
        raise ValueError(f"inputs of different shapes {x} and {ins[1]}")
    if op in ("tfl_quantize", "tfl_add", "tfl_softmax"):
        return x
    if op in ("tfl_avgpool", "tfl_maxpool"):
        return (x[0], *_window(n, *x))
    if op == "tfl_pad":
        t, b, l, r = n["pad4"]
        return (x[0], x[1] + t + b, x[2] + l + r)
    if op == "tfl_mean":
        return (x[0], 1, 1) if n["keep_dims"] else (x[0],)
    if op == "tfl_reshape":
        s = tuple(n["shape"])
        if math.prod(s) != math.prod(x):
            raise ValueError(f"reshape of {x} to {s} changes the size")
        return (s[2], s[0], s[1]) if len(s) == 3 else s
    # layers
    w, ws, bq = qp.wq.get(name), qp.ws.get(name), qp.bq.get(name)
    if not all(isinstance(v, np.ndarray) for v in (w, ws, bq)):
        raise ValueError("weight codes, weight scales or bias codes are missing")
    co = int(w.shape[0]) if w.ndim else 0
    if op == "tfl_fc":
        want = (co, math.prod(x))
    elif op == "tfl_conv":
        want = (co, x[0], *n["kernel"])
    else:
        want = (x[0] * n["multiplier"], 1, *n["kernel"])
    if tuple(w.shape) != want or co < 1:
        raise ValueError(f"weight codes have shape {tuple(w.shape)}, the layer needs {want}")
    if tuple(ws.shape) != (co,) or tuple(bq.shape) != (co,):
        raise ValueError(f"weight scales {tuple(ws.shape)} / bias codes {tuple(bq.shape)} must be ({co},)")
    if w.dtype.kind not in "iu" or w.min() < -128 or w.max() > 127:
        raise ValueError("weight codes must be integers in [-128, 127]")
    if ws.dtype.kind != "f" or not (np.isfinite(ws).all() and (ws > 0).all()):
        raise ValueError("weight scales must be finite numbers > 0")
    if bq.dtype.kind not in "iu" or bq.min() < -2**31 or bq.max() > 2**31 - 1:
        raise ValueError("bias codes must be int32")
    if op == "tfl_fc":
        return (co,)
    return (co, *_window(n, *x))


def check_tflite(bundle: Any) -> dict[str, tuple[int, ...]]:
    """Validate a bundle whose graph uses ``tfl_*`` ops; returns per-image node shapes."""
    g, qp = bundle.graph, bundle.qparams
    meta = bundle.meta if isinstance(bundle.meta, dict) else {}
    if meta.get("input_dtype", "int8") not in INPUT_DTYPES:
        raise AxlabError(f"meta input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {meta.get('input_dtype')!r}")
    tmap = meta.get("tensors", {})
    if not isinstance(tmap, dict) or not all(isinstance(k, str) and _is_int(v, 0, 1 << 30) for k, v in tmap.items()):
        raise AxlabError("meta tensors must map node names to TFLite tensor indices")
    shapes: dict[str, tuple[int, ...]] = {}
    for n in g.nodes:
        op, name = n["op"], n["name"]
        if name not in qp.act:
            raise AxlabError(f"node {name!r}: quantisation (scale, zero point) is missing")
        if op == "input":
            shapes[name] = tuple(g.input_shape)
            continue
        if op not in ATTRS:
            raise AxlabError(f"node {name!r}: op {op!r} cannot be mixed with TFLite ops")
        spec = ATTRS[op]
        extra = sorted(set(n) - {"name", "op", "inputs"} - set(spec))
        if extra:
            raise AxlabError(f"node {name!r}: unknown attribute {extra[0]!r} for op {op} "
                             f"(allowed: {', '.join(spec) or 'none'})")
        for key, kind in spec.items():
            if key not in n:
                raise AxlabError(f"node {name!r}: op {op} needs attribute {key!r}")
            want = _kind_problem(kind, n[key])
            if want:
                raise AxlabError(f"node {name!r}: {key} must be {want}, got {n[key]!r}")
        if len(n["inputs"]) != INPUTS.get(op, 1):
            raise AxlabError(f"node {name!r}: op {op} takes {INPUTS.get(op, 1)} input(s), got {len(n['inputs'])}")
        try:
            out = tuple(int(v) for v in _infer(n, [shapes[i] for i in n["inputs"]], g, qp))
        except ValueError as exc:
            raise AxlabError(f"node {name!r} ({op}): {exc}") from None
        if not out or min(out) < 1 or math.prod(out) > 1 << 26:
            raise AxlabError(f"node {name!r} ({op}): output shape {out} is empty or too large")
        shapes[name] = out
    extra = sorted(set(qp.wq) - {n["name"] for n in g.nodes if n["op"] in ("tfl_conv", "tfl_dwconv", "tfl_fc")})
    if extra:
        raise AxlabError(f"weight codes given for {extra[0]!r}, which is not a layer")
    if len(shapes[g.output]) != 1 or shapes[g.output][0] < 2:
        raise AxlabError(f"the output node {g.output!r} gives shape {shapes[g.output]}; expected class scores "
                         "(classes,), classes >= 2")
    return shapes
