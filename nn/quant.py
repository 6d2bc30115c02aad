"""8-bit quantisation (TFLite int8 semantics) and the float / fake-quant torch executor of a Graph.

* Weights: int8 symmetric per output channel, codes in [-127, 127], ``w = s_w[c] * q``.
* Activations: int8 affine per tensor, codes in [-128, 127], ``x = s * (q - zp)``; the range
  always contains 0 (so zero padding and ReLU are exact). The input image uses
  ``s = 1/255, zp = -128``: code = pixel - 128, exact.
* Bias: int32, ``b = s_in * s_w[c] * q_b``.
* Fake quantisation rounds in the forward pass and passes gradients straight through
  (clipped to the representable range for activations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from hwsim.errors import AxlabError
from nn.graph import LAYER_OPS, QUANT_OPS, Graph
from nn.graph_check import is_tflite_graph

# The remedy named when training diverges: a non-finite activation range here, a non-finite loss in nn.train
DIVERGED = "training diverged; lower the learning rate (--lr, or --qat-lr in the QAT phase)"

QMIN, QMAX = -128, 127
WMAX = 127
INPUT_SCALE, INPUT_ZP = 1.0 / 255.0, -128


@dataclass
class QuantParams:
    """Frozen quantisation of a Graph: everything the integer engine needs.

    act[node] = (scale float, zero point int) for every node in QUANT_OPS;
    wq[layer] int32 codes shaped like the weight; ws[layer] float64 (Co,); bq[layer] int64 (Co,).
    """

    act: dict[str, tuple[float, int]] = field(default_factory=dict)
    wq: dict[str, np.ndarray] = field(default_factory=dict)
    ws: dict[str, np.ndarray] = field(default_factory=dict)
    bq: dict[str, np.ndarray] = field(default_factory=dict)


def act_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Affine int8 (scale, zero point) for the float range [lo, hi] widened to contain 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / (QMAX - QMIN), 1e-8)
    zp = int(np.clip(np.round(QMIN - lo / scale), QMIN, QMAX))
    return float(scale), zp


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (codes int32 same shape, scales float64 (Co,))."""
    w = np.asarray(w, dtype=np.float64)
    flat = w.reshape(w.shape[0], -1)
    s = np.abs(flat).max(axis=1) / WMAX
    # an all-zero (dead) channel has codes 0 whatever its scale; give it the largest scale of
    # the layer so that its bias stays representable and its requantisation multiplier stays
    # in the engine's fixed-point range (a 1e-12 floor made both overflow)
    live = s > 0
    s[~live] = s[live].max() if live.any() else 1.0 / WMAX
    s = np.maximum(s, 1e-12)
    q = np.clip(np.round(flat / s[:, None]), -WMAX, WMAX).astype(np.int32)
    return q.reshape(w.shape), s


def quantize_bias(b: np.ndarray, s_in: float, ws: np.ndarray) -> np.ndarray:
    lim = 2**31 - 1
    return np.clip(np.round(np.asarray(b, np.float64) / (s_in * ws)), -lim, lim).astype(np.int64)


def freeze(graph: Graph, ranges: dict[str, tuple[float, float]]) -> QuantParams:
    """QuantParams from activation ranges (node -> (lo, hi)) and the graph's float weights."""
    qp = QuantParams()
    for n in graph.nodes:
        if n["op"] == "input":
            qp.act["input"] = (INPUT_SCALE, INPUT_ZP)
        elif n["op"] in QUANT_OPS:
            qp.act[n["name"]] = act_qparams(*ranges[n["name"]])
    for n in graph.nodes:
        if n["op"] in LAYER_OPS:
            name = n["name"]
            q, s = quantize_weights(graph.params[f"{name}.weight"])
            s_in = qp.act[graph.quant_source(n["inputs"][0])][0]
            qp.wq[name], qp.ws[name] = q, s
            qp.bq[name] = quantize_bias(graph.params[f"{name}.bias"], s_in, s)
    return qp


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """Affine int8 fake quantisation; gradient passes inside the range, zero outside."""
    lo, hi = (QMIN - zp) * scale, (QMAX - zp) * scale
    xc = torch.clamp(x, lo, hi)
    q = torch.clamp(torch.round(xc / scale) + zp, QMIN, QMAX)
    return xc + ((q - zp) * scale - xc).detach()


class GraphModule(tnn.Module):
    """Executes a Graph in float (``mode='float'``) or fake-quant (``mode='fq'``).

    Input: float images in [0, 1], NCHW. Output: float logits (N, classes).
    In fq mode with ``qparams`` given, weights/bias/activation grids are the frozen ones
    (what the integer engine uses); otherwise (QAT training) weights are quantised on the
    fly and activation ranges come from EMA observers (updated in training mode).
    """

    def __init__(self, graph: Graph, mode: str = "float", qparams: QuantParams | None = None,
                 ranges: dict[str, tuple[float, float]] | None = None, momentum: float = 0.05) -> None:
        super().__init__()
        if is_tflite_graph(graph.nodes):
            raise AxlabError("graphs of imported TFLite models run in nn.tflite_float.TfliteFloatModule "
                             "(float / fake-quant twin), not GraphModule")
        self.graph = graph
        self.mode = mode
        self.qparams = qparams
        self.momentum = momentum
        self.keys = {n["name"]: n["name"].replace(".", "__") for n in graph.nodes}
        self.weights = tnn.ParameterDict()
        self.biases = tnn.ParameterDict()
        for n in graph.nodes:
            if n["op"] in LAYER_OPS:
                k = self.keys[n["name"]]
                self.weights[k] = tnn.Parameter(torch.from_numpy(np.array(graph.params[f"{n['name']}.weight"],
                                                                          dtype=np.float32)))
                self.biases[k] = tnn.Parameter(torch.from_numpy(np.array(graph.params[f"{n['name']}.bias"],
                                                                         dtype=np.float32)))
        self.ranges: dict[str, list[float]] = {k: list(v) for k, v in (ranges or {}).items()}
        self.observe = False  # record ranges (calibration) without fake-quantising

    # -- export -------------------------------------------------------------------------
    def float_params(self) -> dict[str, np.ndarray]:
        out = {}
        for n in self.graph.nodes:
            if n["op"] in LAYER_OPS:
                k = self.keys[n["name"]]
                out[f"{n['name']}.weight"] = self.weights[k].detach().cpu().float().numpy().copy()
                out[f"{n['name']}.bias"] = self.biases[k].detach().cpu().float().numpy().copy()
        return out

    def current_ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (float(v[0]), float(v[1])) for k, v in self.ranges.items()}

    # -- helpers -----------------------------------------------------------------------
    def _observe(self, name: str, y: torch.Tensor) -> None:
        """Calibration (``observe``): running min/max. QAT training: EMA of batch min/max."""
        lo, hi = float(y.detach().min()), float(y.detach().max())
        r = self.ranges.get(name)
        if r is None:
            self.ranges[name] = [lo, hi]
        elif self.observe:
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        else:
            m = self.momentum
            r[0], r[1] = (1 - m) * r[0] + m * lo, (1 - m) * r[1] + m * hi

    def _act(self, name: str, y: torch.Tensor) -> torch.Tensor:
        if self.mode != "fq" and not self.observe:
            return y
        if self.qparams is not None:
            s, zp = self.qparams.act[name]
            return fake_quant(y, s, zp)
        if self.training or self.observe or name not in self.ranges:
            self._observe(name, y)
        if self.observe:
            return y
        lo, hi = self.ranges[name]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise AxlabError(f"activation range of {name} is [{lo}, {hi}]: {DIVERGED}")
        s, zp = act_qparams(lo, hi)
        return fake_quant(y, s, zp)

    def _layer_wb(self, n: dict, s_in: float | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.keys[n["name"]]
        w, b = self.weights[k].to(dtype), self.biases[k].to(dtype)
        if self.mode != "fq" or self.observe:
            return w, b
        if self.qparams is not None:
            name = n["name"]
            ws = torch.from_numpy(self.qparams.ws[name]).to(dtype)
            shape = (-1,) + (1,) * (w.dim() - 1)
            wq = torch.from_numpy(self.qparams.wq[name]).to(dtype) * ws.reshape(shape)
            bq = torch.from_numpy(self.qparams.bq[name]).to(dtype) * (s_in * ws)
            return w + (wq - w).detach(), b + (bq - b).detach()
        flat = w.reshape(w.shape[0], -1)
        ws = flat.detach().abs().amax(dim=1) / WMAX
        if not bool((ws > 0).all()):  # dead channels: the same scale rule as quantize_weights
            ws = torch.where(ws > 0, ws, ws.max() if bool((ws > 0).any()) else ws.new_tensor(1.0 / WMAX))
        ws = ws.clamp_min(1e-12)
        shape = (-1,) + (1,) * (w.dim() - 1)
        wq = torch.clamp(_ste_round(w / ws.reshape(shape)), -WMAX, WMAX) * ws.reshape(shape)
        bscale = s_in * ws
        bq = _ste_round(b / bscale) * bscale
        return wq, bq

    def _scale_of(self, name: str) -> float:
        src = self.graph.quant_source(name)
        if self.qparams is not None:
            return self.qparams.act[src][0]
        if src == "input":
            return 1.0 / 255.0
        return act_qparams(*self.ranges[src])[0]

    # -- forward -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        vals: dict[str, torch.Tensor] = {}
        for n in self.graph.nodes:
            op = n["op"]
            if op == "input":
                y = self._act("input", x) if self.mode == "fq" and not self.observe else x
            else:
                xi = vals[n["inputs"][0]]
                if op in LAYER_OPS:
                    s_in = self._scale_of(n["inputs"][0]) if self.mode == "fq" and not self.observe else None
                    w, b = self._layer_wb(n, s_in, dtype)
                    if op == "conv":
                        y = F.conv2d(xi, w, b, tuple(n["stride"]), tuple(n["padding"]))
                    else:
                        y = F.linear(xi, w, b)
                    if n["relu"]:
                        y = torch.relu(y)
                    y = self._act(n["name"], y)
                elif op == "add":
                    y = xi + vals[n["inputs"][1]]
                    if n["relu"]:
                        y = torch.relu(y)
                    y = self._act(n["name"], y)
                elif op == "relu":
                    y = torch.relu(xi)
                elif op == "maxpool":
                    y = F.max_pool2d(xi, tuple(n["kernel"]), tuple(n["stride"]), tuple(n["padding"]))
                elif op in ("avgpool", "gap"):
                    if op == "gap":
                        y = xi.mean(dim=(2, 3), keepdim=True)
                    else:
                        y = F.avg_pool2d(xi, tuple(n["kernel"]), tuple(n["stride"]))
                    if self.mode == "fq" and not self.observe:  # stays on the input's grid
                        src = self.graph.quant_source(n["name"])
                        s, zp = (self.qparams.act[src] if self.qparams is not None
                                 else (act_qparams(*self.ranges[src]) if src != "input"
                                       else (INPUT_SCALE, INPUT_ZP)))
                        y = fake_quant(y, s, zp)
                elif op == "flatten":
                    y = torch.flatten(xi, 1)
                else:  # pragma: no cover - graph.check rejects unknown ops
                    raise RuntimeError(op)
            vals[n["name"]] = y
        return vals[self.graph.output]
