"""The float twin of an imported TFLite model (``tfl_*`` ops), for gradient attacks.

``TfliteFloatModule(bundle, "float")``: dequantised weights and biases (w = s_w * q,
b = s_in * s_w * q_b), float activations, the graph's ops in float (fused activations as
ReLU / clamp, pooling over the window clipped to the image, padding with real 0 = the zero
point). ``"fq"``: the same with every tensor fake-quantised to its own int8 grid (rounding
with a straight-through gradient, clamped to the representable range): the BPDA surrogate
of the QNN/AxNN. Neither is TFLite's integer arithmetic (that is nn.tflite_engine): they
approximate it, the fake-quant twin closely.

Input: float images in [0, 1], NCHW, like every axlab surrogate; the pixel p = 255 x maps to
the model's input value as the import does (int8/uint8 input: the real value of code
p - 128; float input: p / 255). Output: class scores; a final SOFTMAX is left out (its input
times beta is returned), so the twin gives logits for a cross-entropy loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from nn.quant import fake_quant


def _nhwc_flat(x: torch.Tensor) -> torch.Tensor:
    return (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).reshape(x.shape[0], -1)


def _act(y: torch.Tensor, act: str) -> torch.Tensor:
    if act == "RELU":
        return torch.relu(y)
    if act == "RELU6":
        return y.clamp(0.0, 6.0)
    if act == "RELU_N1_TO_1":
        return y.clamp(-1.0, 1.0)
    return y


class TfliteFloatModule(tnn.Module):
    """Float (``mode='float'``) or fake-quant (``mode='fq'``) execution of an imported model."""

    def __init__(self, bundle: Any, mode: str = "float") -> None:
        super().__init__()
        if mode not in ("float", "fq"):
            raise ValueError(mode)
        self.bundle, self.graph, self.mode = bundle, bundle.graph, mode
        self.qp = bundle.qparams
        self.weights = tnn.ParameterDict()
        self.biases = tnn.ParameterDict()
        for n in self.graph.nodes:
            if n["op"] in ("tfl_conv", "tfl_dwconv", "tfl_fc"):
                k = n["name"]
                s_in = self.qp.act[n["inputs"][0]][0]
                ws = self.qp.ws[k].astype(np.float64)
                wq = self.qp.wq[k].astype(np.float64)
                w = wq * ws.reshape((-1,) + (1,) * (wq.ndim - 1))
                b = self.qp.bq[k].astype(np.float64) * s_in * ws
                self.weights[k] = tnn.Parameter(torch.from_numpy(w.astype(np.float32)), requires_grad=False)
                self.biases[k] = tnn.Parameter(torch.from_numpy(b.astype(np.float32)), requires_grad=False)

    def _q(self, name: str, y: torch.Tensor) -> torch.Tensor:
        if self.mode != "fq":
            return y
        s, zp = self.qp.act[name]
        return fake_quant(y, float(s), int(zp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, torch.Tensor] = {}
        dtype = x.dtype
        out_name = self.graph.output
        for n in self.graph.nodes:
            op, name = n["op"], n["name"]
            ins = [vals[i] for i in n["inputs"]]
            if op == "input":
                s, zp = self.qp.act["input"]
                y = (x * 255.0 - 128.0 - zp) * s  # the real value of the input code p - 128
            elif op == "tfl_quantize":
                y = ins[0]
            elif op in ("tfl_conv", "tfl_dwconv"):
                t, b, l, r = n["pad4"]
                xi = F.pad(ins[0], (l, r, t, b)) if (t or b or l or r) else ins[0]
                groups = ins[0].shape[1] if op == "tfl_dwconv" else 1
                y = F.conv2d(xi, self.weights[name].to(dtype), self.biases[name].to(dtype), tuple(n["stride"]),
                             0, 1, groups)
                y = _act(y, n["act"])
            elif op == "tfl_fc":
                y = _act(F.linear(_nhwc_flat(ins[0]), self.weights[name].to(dtype), self.biases[name].to(dtype)),
                         n["act"])
            elif op == "tfl_add":
                y = _act(ins[0] + ins[1], n["act"])
            elif op in ("tfl_avgpool", "tfl_maxpool"):
                t, b, l, r = n["pad4"]
                k, st = tuple(n["kernel"]), tuple(n["stride"])
                if op == "tfl_maxpool":
                    y = F.max_pool2d(F.pad(ins[0], (l, r, t, b), value=float("-inf")), k, st)
                else:  # mean over the part of the window inside the image
                    total = F.avg_pool2d(F.pad(ins[0], (l, r, t, b)), k, st, divisor_override=1)
                    ones = torch.ones((1, 1, *ins[0].shape[2:]), dtype=dtype)
                    y = total / F.avg_pool2d(F.pad(ones, (l, r, t, b)), k, st, divisor_override=1)
                y = _act(y, n["act"])
            elif op == "tfl_mean":
                y = ins[0].mean(dim=(2, 3), keepdim=n["keep_dims"])
            elif op == "tfl_pad":
                t, b, l, r = n["pad4"]
                y = F.pad(ins[0], (l, r, t, b))
            elif op == "tfl_reshape":
                v = ins[0]
                y = (v.permute(0, 2, 3, 1) if v.dim() == 4 else v).reshape((v.shape[0], *n["shape"]))
                if y.dim() == 4:
                    y = y.permute(0, 3, 1, 2)
            elif op == "tfl_softmax":
                z = ins[0] * float(n["beta"])
                if name == out_name:
                    return z  # logits for the loss (see the module docstring)
                y = torch.softmax(z.permute(0, 2, 3, 1) if z.dim() == 4 else z, dim=-1)
                y = y.permute(0, 3, 1, 2) if y.dim() == 4 else y
            else:  # pragma: no cover - check_tflite rejects other ops
                raise RuntimeError(op)
            vals[name] = self._q(name, y)
        return vals[out_name].reshape(x.shape[0], -1)
