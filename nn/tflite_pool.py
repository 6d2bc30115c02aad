"""TFLite's pooling and MEAN on raw int8 codes (int64 torch tensors, NCHW), as LiteRT's reference
kernels compute them: average pool = the sum over the window clipped to the image divided by the
element count, rounded half away from zero; max pool = the max over the clipped window; MEAN over
H and W with the count folded into the requantisation multiplier (:func:`mean`). ``pool_fast``
is the numba version of both pools on float32 codes in channels_last memory (nn.tflite_fast).
Node dicts ``n`` are nn.tflite_graph's (kernel, stride, pad4)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nn.bundle import ModelBundle
from nn.tflite_ops import mbqm, quantize_multiplier


# ---------------------------------------------------------------------------- pooling
def pool_fast(x: torch.Tensor, n: dict[str, Any], lohi: tuple[int, int]) -> torch.Tensor:
    """AVERAGE / MAX_POOL_2D of float32 codes (channels_last) by nn.tflite_kernels.pool_nhwc."""
    from nn import tflite_kernels
    from nn.tflite_fast import nhwc

    (kh, kw), (sh, sw) = n["kernel"], n["stride"]
    t, b, l, r = n["pad4"]
    xa = nhwc(x)
    _, h, w, c = xa.shape
    out = np.empty((xa.shape[0], (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1, c), dtype=np.float32)
    tflite_kernels.pool_nhwc(xa, int(kh), int(kw), int(sh), int(sw), int(t), int(l), n["op"] == "tfl_maxpool",
                             float(lohi[0]), float(lohi[1]), out)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _windows(x: torch.Tensor, n: dict[str, Any], fill: float) -> torch.Tensor:
    t, b, l, r = n["pad4"]
    xf = x.to(torch.float64)
    return F.pad(xf, (l, r, t, b), value=fill) if (t or b or l or r) else xf


def avgpool(x: torch.Tensor, n: dict[str, Any]) -> torch.Tensor:
    """Average of the codes in each window clipped to the image, rounded half away from zero."""
    k, s = tuple(n["kernel"]), tuple(n["stride"])
    total = F.avg_pool2d(_windows(x, n, 0.0), k, s, divisor_override=1).round().to(torch.int64)
    ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=torch.float64)
    count = F.avg_pool2d(_windows(ones, n, 0.0), k, s, divisor_override=1).round().to(torch.int64)
    half = count // 2
    return torch.where(total > 0, torch.div(total + half, count, rounding_mode="trunc"),
                       torch.div(total - half, count, rounding_mode="trunc"))


def maxpool(x: torch.Tensor, n: dict[str, Any]) -> torch.Tensor:
    y = F.max_pool2d(_windows(x, n, float("-inf")), tuple(n["kernel"]), tuple(n["stride"]))
    return y.to(torch.int64)


# ---------------------------------------------------------------------------- mean
def mean_params(bundle: ModelBundle, n: dict[str, Any]) -> tuple:
    """(input scale, zp, output scale, zp, multiplier, shift) of a MEAN node."""
    qp = bundle.qparams
    (si, zi), (so, zo) = qp.act[n["inputs"][0]], qp.act[n["name"]]
    m, s = quantize_multiplier(float(np.float64(np.float32(si)) / np.float64(np.float32(so))))
    return si, zi, so, zo, m, s


def mean(x: torch.Tensor, n: dict[str, Any], p: tuple) -> torch.Tensor:
    """MEAN over H and W as LiteRT's reference kernel computes it: the count is folded
    into the multiplier of s_in / s_out in integers (``M' = (M << k) // count``,
    ``shift' = shift - k`` with ``k = floor(log2 count)`` capped at 32 and 31 + shift),
    then ``MultiplyByQuantizedMultiplier(sum(q - zi), M', shift') + zo``, clamped.
    (Checked against ai-edge-litert 2.3.0 with keep_dims true and false, equal and
    different input/output scales.)"""
    si, zi, so, zo, m, s = p
    count = int(x.shape[2] * x.shape[3])
    k = min(count.bit_length() - 1, 32, 31 + s)
    m2, s2 = (m << k) // count, s - k
    q = (mbqm((x - zi).sum(dim=(2, 3)), m2, s2) + zo).clamp(-128, 127)
    return q[:, :, None, None] if n["keep_dims"] else q
