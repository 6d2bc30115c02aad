"""Fast kernels of nn.tflite_engine's numba backend: the TFLite requantisation, ADD and pooling
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
    per-layer gathers (nn.mac._GatherBase), which the tests compare it with.
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


# ------------------------------------------------------------------ fast path (nn.tflite_fast)
# Activations of the fast path are int8 codes held in float32, NHWC in memory (torch
# channels_last); the kernels below see them as plain C-contiguous numpy arrays.
@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def requant_rows(y, corr, pix, m, s, zo, lo, hi, single, out):  # pragma: no cover - jitted
    """Fused TFLite epilogue of a float convolution in NHWC order.

    y: (R, G*Co) float32/float64 holding exact integer partial sums, R = N * pix rows (one per
    output pixel), G channel groups of Co partial sums each; corr: int64 (Pc, Co), Pc = pix
    (a per-pixel correction, e.g. bias - za * sum of the in-image weights) or 1 (per channel);
    out (R, Co) float32 codes = clamp(mbqm(sum_g y + corr, m[c], s[c]) + zo, lo, hi).
    """
    rows = y.shape[0]
    co_n = out.shape[1]
    groups = y.shape[1] // co_n
    per_pix = corr.shape[0] > 1
    for r in prange(rows):
        p = r % pix if per_pix else 0
        yr = y[r]
        cr = corr[p]
        orow = out[r]
        for c in range(co_n):
            acc = cr[c]
            for g in range(groups):
                acc += np.int64(yr[g * co_n + c])
            v = mbqm1(acc, m[c], s[c], single) + zo
            orow[c] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def requant_nchw(acc, sidx, zc, const, m, s, zo, lo, hi, single, out):  # pragma: no cover - jitted
    """The epilogue of a LUT gather: acc (N, Co, P) int32/int64, sidx (N, P) int32 index sums
    (or (N, 0) when zc == 0), const (Co) int64 -> out (N, P, Co) float32 codes (NHWC)."""
    n_img, co_n, pn = acc.shape
    use_s = sidx.shape[1] > 0
    for t in prange(n_img * pn):
        n = t // pn
        p = t - n * pn
        extra = zc * np.int64(sidx[n, p]) if use_s else np.int64(0)
        for c in range(co_n):
            v = mbqm1(np.int64(acc[n, c, p]) + extra + const[c], m[c], s[c], single) + zo
            out[n, p, c] = min(max(v, lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def lookup2(a, b, tab, out):  # pragma: no cover - jitted
    """A two-operand op of int8 codes as one table: out[i] = tab[(a[i] + 128) * 256 + b[i] + 128];
    a, b, out flat float32 codes, tab (65536,) float32 (nn.tflite_engine builds ADD's with the
    reference arithmetic, so the result is the reference's by construction)."""
    for i in prange(a.size):
        out[i] = tab[(np.int32(a[i]) + 128) * 256 + np.int32(b[i]) + 128]


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def pool_nhwc(x, kh, kw, sh, sw, top, left, is_max, lo, hi, out):  # pragma: no cover - jitted
    """TFLite int8 AVERAGE_POOL_2D / MAX_POOL_2D on codes x (N, H, W, C) float32 -> out
    (N, H', W', C) float32, windows clipped to the image (padding never counts): the average is
    the window sum over the in-image count rounded half away from zero (integer division),
    then clamped to [lo, hi]. Sums are exact in float32 (|code| <= 128, windows < 2^17 values)."""
    n_img, h, w, c = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for t in prange(n_img * ho):
        n = t // ho
        oy = t - n * ho
        y0 = oy * sh - top
        y1 = min(y0 + kh, h)
        y0 = max(y0, 0)
        for ox in range(wo):
            x0 = ox * sw - left
            x1 = min(x0 + kw, w)
            x0 = max(x0, 0)
            o = out[n, oy, ox]
            for ch in range(c):
                o[ch] = -np.inf if is_max else 0.0
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    xr = x[n, yy, xx]
                    if is_max:
                        for ch in range(c):
                            o[ch] = max(o[ch], xr[ch])
                    else:
                        for ch in range(c):
                            o[ch] += xr[ch]
            if not is_max:
                cnt = (y1 - y0) * (x1 - x0)
                half = cnt // 2
                for ch in range(c):
                    tot = np.int64(o[ch])
                    o[ch] = (tot + half) // cnt if tot > 0 else -((half - tot) // cnt)
            for ch in range(c):
                o[ch] = min(max(o[ch], lo), hi)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def input_codes(x, out):  # pragma: no cover - jitted
    """uint8 images x (N, C, H, W) -> out (N, H, W, C) float32 int8 codes (pixel - 128)."""
    n_img, c, h, w = x.shape
    for t in prange(n_img * h):
        n = t // h
        yy = t - n * h
        for xx in range(w):
            o = out[n, yy, xx]
            for ch in range(c):
                o[ch] = np.float32(x[n, ch, yy, xx]) - np.float32(128.0)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def pad_nhwc(x, top, left, val, out):  # pragma: no cover - jitted
    """out (N, Hp, Wp, C) = x (N, H, W, C) placed at (top, left), ``val`` elsewhere."""
    n_img, h, w, c = x.shape
    hp, wp = out.shape[1], out.shape[2]
    for t in prange(n_img * hp):
        n = t // hp
        yy = t - n * hp
        ys = yy - top
        for xx in range(wp):
            xs = xx - left
            o = out[n, yy, xx]
            if ys < 0 or ys >= h or xs < 0 or xs >= w:
                for ch in range(c):
                    o[ch] = val
            else:
                xr = x[n, ys, xs]
                for ch in range(c):
                    o[ch] = xr[ch]


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def expand_nhwc(x, za, tabs, top, left, interleave, with_x, out):  # pragma: no cover - jitted
    """Low-rank operands of codes x (N, H, W, C) float32 into the padded out (N, Hp, Wp, Cp):
    x - za and tabs[r, x + 128] (tabs (R, 256) float32, 0 at the zero point's index), channel
    (1+r)*C + c (``interleave`` False; channels past (1+R)*C are 0) or c*(1+R) + r (True,
    for grouped convolutions); ``with_x`` False (not interleaved: the fused path): the tabs
    only, channel r*C + c; padding positions are 0 (= the zero point, centred).
    Flat unsigned offsets: no negative-index wraparound checks in the inner loops."""
    n_img, h, w, c = x.shape
    rk = tabs.shape[0]
    hp, wp, cp = out.shape[1], out.shape[2], out.shape[3]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    tf = tabs.reshape(-1)
    for t in prange(n_img * hp):
        n = t // hp
        yy = t - n * hp
        ys = yy - top
        obase = np.uint64(t * wp * cp)
        if ys < 0 or ys >= h:
            for i in range(wp * cp):
                of[obase + np.uint64(i)] = 0.0
            continue
        for xx in range(wp):
            xs = xx - left
            ob = obase + np.uint64(xx * cp)
            if xs < 0 or xs >= w:
                for ch in range(cp):
                    of[ob + np.uint64(ch)] = 0.0
                continue
            xb = np.uint64(((n * h + ys) * w + xs) * c)
            if interleave:
                for ch in range(c):
                    v = xf[xb + np.uint64(ch)]
                    k = np.uint64(np.int64(v) + 128)
                    base = ob + np.uint64(ch * (1 + rk))
                    of[base] = v - za
                    for r in range(rk):
                        of[base + np.uint64(1 + r)] = tf[np.uint64(r * 256) + k]
            else:
                sx = 1 if with_x else 0
                if with_x:
                    for ch in range(c):
                        of[ob + np.uint64(ch)] = xf[xb + np.uint64(ch)] - za
                for r in range(rk):
                    rb = ob + np.uint64((sx + r) * c)
                    tb = np.uint64(r * 256 + 128)
                    for ch in range(c):
                        of[rb + np.uint64(ch)] = tf[tb + np.uint64(np.int64(xf[xb + np.uint64(ch)]))]
                for ch in range((sx + rk) * c, cp):
                    of[ob + np.uint64(ch)] = 0.0


# Exact float64 forms of MultiplyByQuantizedMultiplier (see ``mbqm_f64_params``). With
# M = mh * 2^16 + ml (mh < 2^15, ml < 2^16) and an integer x, |x| < 2^31:
#   double rounding (shift <= 0, e = -shift): SaturatingRoundingDoublingHighMul is
#     floor((x*M + 2^30) / 2^31) (the saturating case needs M = -2^31, never a multiplier),
#     = floor((x*mh + floor(x*ml / 2^16) + 2^14) / 2^15) (nested floors of exact quotients);
#     RoundingDivideByPOT(r, e) = floor((r + 2^(e-1) - [r < 0]) / 2^e) for e >= 1, r for e = 0;
#   single rounding (t = 31 - shift >= 17): floor((x*M + 2^(t-1)) / 2^t)
#     = floor((x*mh + floor(x*ml / 2^16) + 2^(t-17)) / 2^(t-16)).
# Every intermediate is an integer below 2^48 in magnitude and every scaling a power of two,
# so each float64 operation is exact; tests compare with the int64 kernels on edge cases.
INV16 = 1.0 / 65536.0


@njit(cache=True, inline="always")
def mbqm_f64(x, mh, ml, h, n2, sc, single):  # pragma: no cover - jitted
    """MultiplyByQuantizedMultiplier of an integer-valued float64 x (|x| < 2^31), exactly."""
    t = x * mh + np.floor(x * ml * INV16)
    if single:
        return np.floor((t + h) * sc)
    r = np.floor((t + 16384.0) * 3.0517578125e-05)  # / 2^15
    return np.floor((r + h - (n2 if r < 0.0 else 0.0)) * sc)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def requant_rows_f64(y, corr, pix, mh, ml, h, n2, sc, zo, lo, hi, single, out):  # pragma: no cover - jitted
    """``requant_rows`` in exact float64 arithmetic (vectorisable); corr float64 (Pc, Co)."""
    rows = y.shape[0]
    co_n = out.shape[1]
    groups = y.shape[1] // co_n
    per_pix = corr.shape[0] > 1
    for r in prange(rows):
        p = r % pix if per_pix else 0
        yr = y[r]
        cr = corr[p]
        orow = out[r]
        if groups == 1:
            for c in range(co_n):
                v = mbqm_f64(cr[c] + np.float64(yr[c]), mh[c], ml[c], h[c], n2[c], sc[c], single) + zo
                orow[c] = min(max(v, lo), hi)
        else:
            for c in range(co_n):
                acc = cr[c]
                for g in range(groups):
                    acc += np.float64(yr[g * co_n + c])
                v = mbqm_f64(acc, mh[c], ml[c], h[c], n2[c], sc[c], single) + zo
                orow[c] = min(max(v, lo), hi)


def mbqm_f64_params(m: np.ndarray, shift: np.ndarray, single: bool) -> tuple[np.ndarray, ...] | None:
    """Per-channel float64 constants (mh, ml, h, n2, sc) of ``mbqm_f64`` for multipliers
    ``m`` (int, 0 or [2^30, 2^31)) and ``shift``, or None where the exact float form does not
    apply (double rounding with a left shift, single rounding with 31 - shift < 17)."""
    m = np.asarray(m, dtype=np.int64).reshape(-1)
    s = np.asarray(shift, dtype=np.int64).reshape(-1)
    if m.size == 0 or m.min() < 0 or m.max() >= 2**31 or s.min() < -31:
        return None
    mh, ml = (m >> 16).astype(np.float64), (m & 0xFFFF).astype(np.float64)
    if single:
        t = 31 - s
        if t.min() < 17:
            return None
        return mh, ml, np.ldexp(1.0, t - 17), np.zeros_like(mh), np.ldexp(1.0, 16 - t)
    if s.max() > 0:
        return None
    e = -s
    h = np.where(e >= 1, np.ldexp(1.0, np.maximum(e, 1) - 1), 0.0)
    return mh, ml, h, (e >= 1).astype(np.float64), np.ldexp(1.0, -e)
