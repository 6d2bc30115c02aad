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
    kk4 = kk - kk % 4
    lf = lut.ravel()
    for t in prange(n_img * ho):
        n = t // ho
        oy = t - n * ho
        a = np.empty(co_n, dtype=np.int32)
        patch = np.empty(kk, dtype=np.int64)
        for ox in range(wo):
            s = 0
            k = 0
            for ci in range(c_in):
                for ky in range(kh):
                    for kx in range(kw):
                        v = np.int64(xi[n, ci, oy * sh + ky, ox * sw + kx])
                        patch[k] = v * 256
                        s += v
                        k += 1
            for co in range(co_n):
                a[co] = 0
            # four activations per pass over the output channels: 4 independent lookups per
            # accumulator update (more memory-level parallelism, a quarter of the a[] traffic)
            for k in range(0, kk4, 4):
                b0 = patch[k]
                b1 = patch[k + 1]
                b2 = patch[k + 2]
                b3 = patch[k + 3]
                w0 = wk[k]
                w1 = wk[k + 1]
                w2 = wk[k + 2]
                w3 = wk[k + 3]
                for co in range(co_n):
                    a[co] += (lf[b0 + w0[co]] + lf[b1 + w1[co]]) + (lf[b2 + w2[co]] + lf[b3 + w3[co]])
            for k in range(kk4, kk):
                base = patch[k]
                wrow = wk[k]
                for co in range(co_n):
                    a[co] += lf[base + wrow[co]]
            p = oy * wo + ox
            for co in range(co_n):
                acc[n, co, p] = a[co]
            sidx[n, p] = s


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def gather_conv_tab(xi, tabs, kh, kw, sh, sw, ho, wo, tile, acc, sidx):  # pragma: no cover - jitted
    """Same result as ``gather_conv`` from per-layer expanded tables: no scalar gathers.

    tabs: int32 (K, 256, Co), tabs[k, a, co] = lut[a, w_idx[k, co]] (the LUT columns of the
    layer's weights, built once per layer). Each task takes a tile of ``tile`` output pixels
    (over images x positions) and, for every k, adds the contiguous row tabs[k, x_idx] (Co
    values) to each pixel's accumulators: SIMD vector adds, with the 256 x Co slice of tabs for
    one k reused by the whole tile while it is cache-resident.
    """
    n_img, c_in, hp, wp = xi.shape
    kk = tabs.shape[0]
    co_n = tabs.shape[2]
    xf = xi.ravel()
    pn = ho * wo
    total = n_img * pn
    n_tiles = (total + tile - 1) // tile
    offs = np.empty(kk, dtype=np.int64)  # flat offset of tap k = (ci, ky, kx) from a pixel's base
    k = 0
    for ci in range(c_in):
        for ky in range(kh):
            for kx in range(kw):
                offs[k] = ci * hp * wp + ky * wp + kx
                k += 1
    kk2 = kk - kk % 2
    for ti in prange(n_tiles):
        t0 = ti * tile
        nt = min(total, t0 + tile) - t0
        a = np.zeros((nt, co_n), dtype=np.int32)
        base = np.empty(nt, dtype=np.int64)
        for j in range(nt):
            g = t0 + j
            n = g // pn
            p = g - n * pn
            oy = p // wo
            base[j] = n * (c_in * hp * wp) + (oy * sh) * wp + (p - oy * wo) * sw
        for k in range(0, kk2, 2):  # two taps per pass: half the accumulator traffic
            tk0 = tabs[k]
            tk1 = tabs[k + 1]
            o0 = offs[k]
            o1 = offs[k + 1]
            for j in range(nt):
                r0 = tk0[np.int64(xf[base[j] + o0])]
                r1 = tk1[np.int64(xf[base[j] + o1])]
                aj = a[j]
                for co in range(co_n):
                    aj[co] += r0[co] + r1[co]
        for k in range(kk2, kk):
            tk0 = tabs[k]
            o0 = offs[k]
            for j in range(nt):
                r0 = tk0[np.int64(xf[base[j] + o0])]
                aj = a[j]
                for co in range(co_n):
                    aj[co] += r0[co]
        for j in range(nt):
            g = t0 + j
            n = g // pn
            p = g - n * pn
            sv = 0
            for k in range(kk):
                sv += np.int64(xf[base[j] + offs[k]])
            sidx[n, p] = sv
            for co in range(co_n):
                acc[n, co, p] = a[j, co]


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
        orow = out[n, co]
        y0 = y[n, 0, co]
        if groups == 1 and not use_s:  # the common case: one simple, vectorisable loop
            for p in range(pn):
                v = (((c + np.int64(y0[p])) * m + half) >> r) + zo
                orow[p] = min(max(v, lo), hi)
            continue
        for p in range(pn):
            acc = c
            for g in range(groups):
                acc += np.int64(y[n, g, co, p])
            if use_s:
                acc += zc * np.int64(sidx[n, p])
            v = ((acc * m + half) >> r) + zo
            orow[p] = min(max(v, lo), hi)


@njit(inline="always", cache=True, nogil=True, boundscheck=False)
def _requant_row_f64(src, dst, c, a_h, a_l, h, s, zo, lo, hi):  # pragma: no cover - jitted
    """dst[p] = requantised (c + src[p]) for one channel row (``epilogue_f64``'s formula);
    ``dst`` may be ``src`` (in place). Inlined into its callers so that each loop vectorises."""
    for p in range(src.shape[0]):
        acc = c + np.float64(src[p])
        v = np.floor((acc * a_h + h + np.floor(acc * a_l * 1.52587890625e-05)) * s) + zo
        dst[p] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def epilogue_f64(y, sidx, zc, const, mh, ml, hh, sc, zo, lo, hi, out):  # pragma: no cover - jitted
    """``epilogue`` in float64 arithmetic that is exact (AVX2 vectorises it; int64 conversions
    and multiplies do not), for layers whose every shift rs >= 17.

    With m0 = mh*2^16 + ml (mh < 2^15, ml < 2^16), hh = 2^(rs-17), sc = 2^-(rs-16) per channel:
        (acc*m0 + 2^(rs-1)) >> rs == floor((acc*mh + hh + floor(acc*ml / 2^16)) * sc)
    (nested floor division by 2^16 then 2^(rs-16)); for |acc| < 2^31 every intermediate is
    an integer below 2^48, so every float64 operation is exact.
    """
    n_img, groups, co_n, pn = y.shape
    use_s = sidx.shape[1] > 0
    zcf = np.float64(zc)
    for t in prange(n_img * co_n):
        n = t // co_n
        co = t - n * co_n
        c = const[co]
        a_h = mh[co]
        a_l = ml[co]
        h = hh[co]
        s = sc[co]
        orow = out[n, co]
        if groups == 1 and not use_s:  # the common case: one simple, vectorisable loop
            _requant_row_f64(y[n, 0, co], orow, c, a_h, a_l, h, s, zo, lo, hi)
            continue
        for p in range(pn):
            acc = c
            for g in range(groups):
                acc += np.float64(y[n, g, co, p])
            if use_s:
                acc += zcf * np.float64(sidx[n, p])
            v = np.floor((acc * a_h + h + np.floor(acc * a_l * 1.52587890625e-05)) * s) + zo
            orow[p] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def epilogue_f64_inplace(y, const, mh, ml, hh, sc, zo, lo, hi):  # pragma: no cover - jitted
    """``epilogue_f64`` for one channel group and no index sums, overwriting ``y`` (N, Co, P)
    float32 (the convolution's own output: no new tensor)."""
    n_img, co_n, pn = y.shape
    for t in prange(n_img * co_n):
        n = t // co_n
        co = t - n * co_n
        row = y[n, co]
        _requant_row_f64(row, row, const[co], mh[co], ml[co], hh[co], sc[co], zo, lo, hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def add_requant_f64_inplace(a, b, ma, mb, half, sc, lo, hi):  # pragma: no cover - jitted
    """``add_requant_f64`` writing into ``a`` (when nothing reads ``a`` afterwards)."""
    for i in prange(a.size):
        v = np.floor((np.float64(a[i]) * ma + np.float64(b[i]) * mb + half) * sc)
        a[i] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def add_requant_f64(a, b, ma, mb, half, sc, lo, hi, out):  # pragma: no cover - jitted
    """``add_requant`` with za = zb = zo = 0 (centred codes) in exact float64 arithmetic:
    out = clamp(floor((a*ma + b*mb + half) * sc), lo, hi), sc = 2^-shift; exact while
    255*(|ma| + |mb|) + half < 2^53 (the caller checks)."""
    for i in prange(a.size):
        v = np.floor((np.float64(a[i]) * ma + np.float64(b[i]) * mb + half) * sc)
        out[i] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True)
def expand(x, off, tabs, out):  # pragma: no cover - jitted
    """Low-rank operand transform of centred activations x (code - za, float32, (N, C, P))
    into ``out`` (float32, (N, C_pad, P)): channel c = x; channel (1+r)*C + c =
    tabs[r, x + off] with off = za + 128 (the operand index); channels past (1+R)*C = 0."""
    n_img, c_in, pn = x.shape
    rk = tabs.shape[0]
    c_pad = out.shape[1]
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        xr = x[n, c]
        out[n, c, :] = xr
        for r in range(rk):
            tr = tabs[r]
            orow = out[n, (1 + r) * c_in + c]
            for p in range(pn):
                orow[p] = tr[np.int64(xr[p]) + off]
        if c < c_pad - (1 + rk) * c_in:  # zero the padding channels (spread over the tasks)
            for cc in range((1 + rk) * c_in + c, c_pad, c_in):
                out[n, cc, :] = 0.0


@njit(parallel=True, cache=True, nogil=True)
def expand_tabs(x, off, tabs, out):  # pragma: no cover - jitted
    """``expand`` without the identity channels (the fused path: the exact products are inside the
    factorised table): channel r*C + c = tabs[r, x + off]; channels past R*C = 0."""
    n_img, c_in, pn = x.shape
    rk = tabs.shape[0]
    c_pad = out.shape[1]
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        xr = x[n, c]
        for r in range(rk):
            tr = tabs[r]
            orow = out[n, r * c_in + c]
            for p in range(pn):
                orow[p] = tr[np.int64(xr[p]) + off]
        if c < c_pad - rk * c_in:
            for cc in range(rk * c_in + c, c_pad, c_in):
                out[n, cc, :] = 0.0


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
