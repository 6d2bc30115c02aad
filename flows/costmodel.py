"""Design-level hardware cost from per-multiplier cost.

Model: every multiplication of layer l runs on layer l's multiplier, so a design's cost is the
multiplication-count-weighted mean of its multipliers' costs:

    area  = sum_l macs_l * area_l  / sum_l macs_l     (um^2 per multiplier, PDK45 or estimate)
    power = sum_l macs_l * power_l / sum_l macs_l     (mW per multiplier at its rated activity)

i.e. the area of a time-shared MAC array whose cycles are split between layers as the
multiplications are, and the mean power drawn per multiplication. Both equal the multiplier's
own figure when one multiplier serves every layer, so designs compare with the exact
multiplier directly (energy per inference = power x MACs x cycle time).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


class _CountingFunctional:
    """Stands in for torch.nn.functional inside nn.quant for one forward pass and records
    each conv/linear call's multiplications per image, in call (= network) order."""

    def __init__(self, real: Any) -> None:
        self.real, self.macs = real, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def conv2d(self, x, w, *args, **kwargs):
        y = self.real.conv2d(x, w, *args, **kwargs)
        self.macs.append(int(y[0].numel() * w[0].numel()))
        return y

    def linear(self, x, w, *args, **kwargs):
        y = self.real.linear(x, w, *args, **kwargs)
        self.macs.append(int(y[0].numel() * w.shape[1]))
        return y


def _tflite_layer_macs(bundle: Any) -> dict[str, int]:
    """Multiplications per image of the CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED layers of
    an imported TFLite graph, from the validated node shapes: output elements x products per
    output (conv: C*kh*kw, depthwise: kh*kw, dense: input features)."""
    from nn.tflite_graph import check_tflite

    shapes = check_tflite(bundle)
    macs: dict[str, int] = {}
    for n in bundle.graph.nodes:
        if n["op"] in ("tfl_conv", "tfl_dwconv", "tfl_fc"):
            w = bundle.qparams.wq[n["name"]]
            per_out = int(np.prod(w.shape[1:]))  # depthwise weight (C*m, 1, kh, kw): kh*kw
            macs[n["name"]] = int(np.prod(shapes[n["name"]])) * per_out
    return macs


def layer_macs(bundle: Any) -> dict[str, int]:
    """Multiplications per image of every approximable layer, in network order."""
    import nn.quant as q
    from nn.graph_check import is_tflite_graph

    if is_tflite_graph(bundle.graph.nodes):
        macs = _tflite_layer_macs(bundle)
        if list(macs) != list(bundle.layers()):
            raise AssertionError(f"counted layers {list(macs)}, model has {bundle.layers()}")
        return macs
    module = q.GraphModule(bundle.graph, "float").eval()
    counter = _CountingFunctional(q.F)
    q.F = counter
    try:
        with torch.no_grad():
            module(torch.zeros((1, *bundle.input_shape)))
    finally:
        q.F = counter.real
    layers = bundle.layers()
    if len(counter.macs) != len(layers):
        raise AssertionError(f"counted {len(counter.macs)} layers, model has {len(layers)}")
    return dict(zip(layers, counter.macs))


def design_cost(macs: list[int], luts: list[Any]) -> dict[str, float]:
    """{'area_um2', 'power_mw'} of a design: MAC-weighted means of the per-layer LUT costs."""
    w = np.asarray(macs, dtype=np.float64)
    w = w / w.sum()
    area = [lut.meta["cost"]["area_um2"] for lut in luts]
    power = [lut.meta["cost"]["power_mw"] for lut in luts]
    return {"area_um2": float(np.dot(w, area)), "power_mw": float(np.dot(w, power))}
