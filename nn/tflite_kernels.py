"""numba kernels for the TFLite requantisation (the numba backend of nn.tflite_engine).

Same integer semantics as the torch reference in :mod:`nn.tflite_ops` (``mbqm`` single and
double rounding, ADD's input rescaling); tests check the two bit for bit. Values are int64
holding int32 quantities.
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
