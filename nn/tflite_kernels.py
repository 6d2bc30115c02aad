"""Fast kernels of nn.tflite_engine's numba backend: the TFLite requantisation and ADD
(numba), and the LUT MAC of a whole depthwise layer (``DepthwiseGather``, vectorised torch).

Same integer semantics as the torch reference (:mod:`nn.tflite_ops` ``mbqm`` single and
double rounding, ADD's input rescaling; the engine's per-group gathers); tests check them bit
for bit. Values are int64 holding int32 quantities.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


@njit(cache=True, inline="always")
def _wrap32(v: int) -> int:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@njit(cache=True, inline="always")
def mbqm1(x: int, m: int, shift: int, single: bool) -> int:
    """MultiplyByQuantizedMultiplier of one int32 value (see nn.tflite_ops.mbqm)."""
    if single:
        total = 31 - shift
        return (x * m + (np.int64(1) << (total - 1))) >> total
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    v = _wrap32(x << left)
    if v == INT32_MIN and m == INT32_MIN:
        r = INT32_MAX
    else:
        t = v * m + ((1 << 30) if v * m >= 0 else (1 - (1 << 30)))
        q = (t if t >= 0 else -t) >> 31  # C++ division truncates toward zero
        r = q if t >= 0 else -q
    mask = (np.int64(1) << right) - 1
    rem = r & mask
    thr = (mask >> 1) + (1 if r < 0 else 0)
    return (r >> right) + (1 if rem > thr else 0)


@njit(parallel=True, cache=True)
def requant(acc: np.ndarray, m: np.ndarray, s: np.ndarray, zo: int, lo: int, hi: int, single: bool,
            out: np.ndarray) -> None:
    """out[r, c, p] = clamp(mbqm(acc[r, c, p], m[c], s[c]) + zo, lo, hi); acc (R, C, P) int64."""
    rows, chans, pix = acc.shape
    for rc in prange(rows * chans):
        r = rc // chans
        c = rc - r * chans
        for p in range(pix):
            v = mbqm1(acc[r, c, p], m[c], s[c], single) + zo
            out[r, c, p] = min(max(v, lo), hi)


@njit(parallel=True, cache=True)
def add_requant(a: np.ndarray, b: np.ndarray, za: int, m1: int, s1: int, zb: int, m2: int, s2: int,
                zo: int, mo: int, so: int, lo: int, hi: int, left: int, out: np.ndarray) -> None:
    """TFLite int8 ADD on flat int64 codes a, b -> out (see nn.tflite_engine)."""
    for i in prange(a.size):
        x = mbqm1((a[i] - za) << left, m1, s1, False)
        y = mbqm1((b[i] - zb) << left, m2, s2, False)
        v = mbqm1(x + y, mo, so, False) + zo
        out[i] = min(max(v, lo), hi)


class DepthwiseGather:
    """LUT MAC of a whole depthwise layer at once (all channel groups vectorised in torch).

    ``acc = sum_k T[a_k, w_k] - za_op * sum_k w_op - zw * sum_k a_op + K * za_op * zw + bias``
    with T the LUT indexed by (code + 128), operands a_op = a + off, w_op = w + off (off 0
    for a signed LUT, 128 for an unsigned one: TFLite's uint8 scheme, weight zero point 128),
    za_op = za + off, zw = off: the same products and exact corrections as the engine's
    per-layer gathers (nn.engine._GatherBase), which the tests compare it with.
    """

    kind = "gather-depthwise"

    def __init__(self, w: np.ndarray, bq: np.ndarray, za: int, stride: tuple[int, int], lut: "object") -> None:
        import torch

        co, _, kh, kw = w.shape
        self.kh, self.kw, self.stride = int(kh), int(kw), tuple(stride)
        self.k = self.kh * self.kw
        self.co = int(co)
        off = 0 if lut.signed else 128
        self.za_op, self.zw = int(za) + off, off
        self.widx = torch.from_numpy((w.astype(np.int64) + 128).reshape(co, self.k))  # (C*m, K)
        self.flat = torch.from_numpy(np.ascontiguousarray(lut.table, dtype=np.int64).reshape(-1))
        sum_w_op = (w.astype(np.int64) + off).reshape(co, -1).sum(1)
        self.const = torch.from_numpy(bq.astype(np.int64) - self.za_op * sum_w_op + self.k * self.za_op * self.zw)
        maxabs = int(np.abs(lut.table.astype(np.int64)).max())
        if self.k * maxabs + int(np.abs(self.const.numpy()).max()) + 255 * 128 * self.k >= 2**31:
            from hwsim.errors import AxlabError

            raise AxlabError(f"depthwise layer: LUT {getattr(lut, 'name', '?')} values up to {maxabs} overflow the "
                             f"int32 accumulator over {self.k} products")

    def __call__(self, xc: "object", za: int) -> "object":
        """xc: centred codes (N, C, H, W) float, already padded; -> acc (N, C*m, H', W') int64."""
        import torch
        import torch.nn.functional as F

        n, c, h, w = xc.shape
        m = self.co // c
        ho = (h - self.kh) // self.stride[0] + 1
        wo = (w - self.kw) // self.stride[1] + 1
        idx = (xc + (za + 128)).to(torch.float32)  # LUT row index = code + 128
        cols = F.unfold(idx, (self.kh, self.kw), stride=self.stride).round().long()  # (N, C*K, P)
        cols = cols.reshape(n, c, 1, self.k, ho * wo)
        widx = self.widx.reshape(1, c, m, self.k, 1)
        out = torch.empty((n, c, m, ho * wo), dtype=torch.int64)
        step = max(1, (1 << 24) // max(1, c * m * self.k * ho * wo))
        for i in range(0, n, step):
            out[i:i + step] = self.flat[cols[i:i + step] * 256 + widx].sum(3)
        sum_a_op = (cols.sum(3) + (self.zw - 128) * self.k).reshape(n, c, 1, ho * wo)  # sum of a + off
        acc = out - self.zw * sum_a_op + self.const.reshape(1, c, m, 1)
        return acc.reshape(n, self.co, ho, wo)
