"""numba CPU kernels of the integer engine (parallel over images x output rows).

Operand *indices* are used throughout: index = int8 code + 128, which is the LUT row/column
for both signed LUTs (index i = value i - 128) and unsigned ones (uint8 code = int8 code + 128).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True, fastmath=True, boundscheck=False)
def gather_conv(xi, wk, lut, kh, kw, sh, sw, ho, wo, acc, sidx):  # pragma: no cover - jitted
    """acc[n, co, oy*wo+ox] = sum_k lut[x_idx, w_idx[k, co]]; sidx[n, p] = sum_k x_idx.

    xi: uint8 (N, C, Hp, Wp) padded activation indices; wk: uint8 (K, Co) weight indices,
    k = (ci, ky, kx) row-major; lut: int32 (256, 256); acc: int32 (N, Co, ho*wo);
    sidx: int32 (N, ho*wo). Operand-major order: per activation, one LUT row (1 KiB,
    L1-resident) is gathered at the Co weight indices (a SIMD gather once vectorised).
    """
    n_img, c_in = xi.shape[0], xi.shape[1]
    co_n = wk.shape[1]
    kk = c_in * kh * kw
    lf = lut.ravel()
    for t in prange(n_img * ho):
        n = t // ho
        oy = t - n * ho
        a = np.empty(co_n, dtype=np.int32)
        patch = np.empty(kk, dtype=np.int32)
        for ox in range(wo):
            s = 0
            k = 0
            for ci in range(c_in):
                for ky in range(kh):
                    for kx in range(kw):
                        v = np.int32(xi[n, ci, oy * sh + ky, ox * sw + kx])
                        patch[k] = v * 256
                        s += v
                        k += 1
            for co in range(co_n):
                a[co] = 0
            for k in range(kk):
                base = patch[k]
                wrow = wk[k]
                for co in range(co_n):
                    a[co] += lf[base + wrow[co]]
            p = oy * wo + ox
            for co in range(co_n):
                acc[n, co, p] = a[co]
            sidx[n, p] = s


@njit(parallel=True, cache=True, nogil=True)
def epilogue(y, sidx, zc, const, m0, rs, zo, lo, hi, out):  # pragma: no cover - jitted
    """Requantise accumulators to int8 codes (stored as float32 in ``out``).

    acc = sum_g y[n, g, co, p] + zc * sidx[n, p] + const[co]   (exact integers, int64)
    out[n, co, p] = clamp(zo + round_half_up(acc * m0[co] / 2^rs[co]), lo, hi)
    y: (N, G, Co, P) float32/float64/int32 holding exact integers; sidx: int32 (N, P) or
    (N, 0) when zc == 0.
    """
    n_img, groups, co_n, pn = y.shape
    use_s = sidx.shape[1] > 0
    for t in prange(n_img * co_n):
        n = t // co_n
        co = t - n * co_n
        c = const[co]
        m = m0[co]
        r = rs[co]
        half = np.int64(1) << (r - 1)
        for p in range(pn):
            acc = c
            for g in range(groups):
                acc += np.int64(y[n, g, co, p])
            if use_s:
                acc += zc * np.int64(sidx[n, p])
            v = ((acc * m + half) >> r) + zo
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            out[n, co, p] = v


@njit(parallel=True, cache=True, nogil=True)
def expand(x, za, tabs, out):  # pragma: no cover - jitted
    """Low-rank operand transform of int8 codes x (float32, (N, C, P)) into ``out``
    (float32, (N, (1+R)*C_pad, P)): channel c = x - za; channel (1+r)*C + c = tabs[r, x+128]."""
    n_img, c_in, pn = x.shape
    rk = tabs.shape[0]
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for p in range(pn):
            v = x[n, c, p]
            out[n, c, p] = v - za
            i = np.int64(v) + 128
            for r in range(rk):
                out[n, (1 + r) * c_in + c, p] = tabs[r, i]


@njit(parallel=True, cache=True, nogil=True)
def add_requant(a, b, za, ma, zb, mb, shift, zo, lo, hi, out):  # pragma: no cover - jitted
    """Residual add of two int8 code tensors (float32, flat) into ``out`` (float32 codes):
    out = clamp(zo + ((a - za)*ma + (b - zb)*mb + 2^(shift-1)) >> shift, lo, hi)."""
    half = np.int64(1) << (shift - 1)
    for i in prange(a.size):
        v = ((np.int64(a[i]) - za) * ma + (np.int64(b[i]) - zb) * mb + half) >> shift
        v += zo
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        out[i] = v
