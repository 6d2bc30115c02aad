"""The numba backend's fast MACs of imported TFLite models (used by nn.tflite_engine).

Activations are int8 codes held in float32 tensors, logical NCHW with NHWC memory (torch
``channels_last``), so that oneDNN's fastest float convolution reads them as they lie and the
numba epilogues (nn.tflite_kernels) see plain (pixels, channels) rows. Every path is exact and
gives the same tensors as the torch reference (``_Layer.mac`` + ``requant``):

* ``IntConv`` (QNN on an AVX2 host; nn.tflite_intconv): an exact int32 convolution with the
  requantisation (and a following ADD) fused.
* ``ExactConv`` (QNN elsewhere): a float convolution of the *raw* codes (|code| <= 128, so every partial
  sum is an integer below 128 * sum|w| < 2^24: float32 exact; float64 otherwise) with zero
  padding; the zero point enters as a per-pixel, per-channel integer correction
  ``bias - za * (sum of the weights over the taps inside the image)``, added in int64 by the
  fused epilogue (``requant_rows``: sum, MultiplyByQuantizedMultiplier, zero point, clamp).
* ``LowRankConv`` / ``LowRankDepthwise`` (AxNN, LUT error of integer rank R, nn.lowrank): the
  LUT product of the raw codes ``LUT(a, w) = a*w + sum_r U[a, r] V[r, w]`` as one convolution
  over (1 + R) operand channels per input channel (centred codes and the U columns, padded
  once by ``expand_nhwc``), weights (w, V[r, w]); the weights of conv / dense layers and the
  exactness bounds (channel groups, float32 or float64) are nn.mac.ConvMac's.
* ``GatherConv`` / ``GatherDepthwise`` (AxNN, any LUT): nn.mac.NumbaGather and
  nn.tflite_kernels.DepthwiseGather, with ``requant_nchw``.

Where a layer has both a low-rank and a gather path, nn.paths.LayerPaths times them on the
first batch of each shape (after checking that they agree on the whole output) and keeps the
faster one.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.errors import AxlabError
from hwsim.lut import Lut
from nn import tflite_kernels as K
from nn.mac import F32_EXACT, F64_EXACT

CL = torch.channels_last


def as_cl(t: torch.Tensor) -> torch.Tensor:
    """4-D tensors in channels_last memory (no copy when they already are), others contiguous."""
    return t.contiguous(memory_format=CL) if t.dim() == 4 else t.contiguous()


def nhwc(t: torch.Tensor) -> np.ndarray:
    """The (N, H, W, C) numpy view of a channels_last 4-D tensor (no copy)."""
    return as_cl(t).permute(0, 2, 3, 1).numpy()


def flat(t: torch.Tensor) -> np.ndarray:
    """A tensor's storage as a flat numpy view, in its memory order (channels_last for 4-D)."""
    return (nhwc(t) if t.dim() == 4 else t.contiguous().numpy()).reshape(-1)


def _split_pad(pad4: list[int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(symmetric padding the convolution does itself, the rest done explicitly (t, b, l, r))."""
    t, b, l, r = (int(v) for v in pad4)
    ph, pw = min(t, b), min(l, r)
    return (ph, pw), (t - ph, b - ph, l - pw, r - pw)


def _pad_codes(x: torch.Tensor, extra: tuple[int, int, int, int], val: float) -> torch.Tensor:
    """Explicit padding of channels_last codes (torch's F.pad is slow on that layout)."""
    t, b, l, r = extra
    if not (t or b or l or r):
        return x
    n, c, h, w = x.shape
    out = np.empty((n, h + t + b, w + l + r, c), dtype=np.float32)
    K.pad_nhwc(nhwc(x), t, l, np.float32(val), out)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _rows(y: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) channels_last or (N, C) -> (N*H*W, C) numpy view."""
    if y.dim() == 4:
        a = nhwc(y)
        return a.reshape(-1, a.shape[3])
    return y.contiguous().numpy()


def _pair(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A correction table (Pc, Co) as contiguous int64 (int64 epilogue) and float64 (exact
    float64 epilogue: the entries are below 2^31 wherever that epilogue is used)."""
    c = np.ascontiguousarray(np.asarray(corr, dtype=np.int64))
    return c, c.astype(np.float64)


class _Base:
    """Shared requantisation and output allocation of one layer (``L``: nn.tflite_engine._Layer)."""

    kind = "?"

    def __init__(self, L: Any) -> None:
        self.L = L
        self.m = L.m.numpy().astype(np.int64)
        self.s = L.shift.numpy().astype(np.int64)
        self.dense = L.op == "tfl_fc"
        self.w = np.asarray(L.w, dtype=np.int64)
        self.w4 = self.w.reshape(self.w.shape[0], -1, 1, 1) if self.dense else self.w
        self.co = int(self.w.shape[0])
        self.kh, self.kw = (int(v) for v in self.w4.shape[2:])
        self.stride = tuple(int(v) for v in L.stride)
        self.pad4 = [0, 0, 0, 0] if self.dense else [int(v) for v in L.pad4]

    def use_bound(self, acc_bound: int) -> None:
        """Requantise in exact float64 (``requant_rows_f64``) when every accumulator is below
        2^31 in magnitude (``acc_bound``) and the multipliers allow it; else in int64."""
        self.f64 = K.mbqm_f64_params(self.m, self.s, bool(self.L.single)) if acc_bound < 2**31 else None

    f64: tuple[np.ndarray, ...] | None = None

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        t, b, l, r = self.pad4
        return (h + t + b - self.kh) // self.stride[0] + 1, (w + l + r - self.kw) // self.stride[1] + 1

    def finish(self, y: torch.Tensor, corr: tuple[np.ndarray, np.ndarray], pix: int) -> torch.Tensor:
        """Partial sums y (N, G*Co, H', W') channels_last or (N, G*Co) -> output codes;
        ``corr``: the correction table (Pc, Co) as int64 and as float64 (see ``_pair``)."""
        rows = _rows(y)
        out = np.empty((rows.shape[0], self.co), dtype=np.float32)
        L = self.L
        if self.f64 is not None:
            K.requant_rows_f64(rows, corr[1], pix, *self.f64, float(L.zo), float(L.lo), float(L.hi),
                               bool(L.single), out)
        else:
            K.requant_rows(rows, corr[0], pix, self.m, self.s, int(L.zo), int(L.lo), int(L.hi), bool(L.single), out)
        if y.dim() == 2:
            return torch.from_numpy(out)
        n, _, ho, wo = y.shape
        return torch.from_numpy(out.reshape(n, ho, wo, self.co)).permute(0, 3, 1, 2)

    def finish_nchw(self, acc: np.ndarray, sidx: np.ndarray, zc: int, const: np.ndarray, n: int, ho: int,
                    wo: int) -> torch.Tensor:
        """Gather accumulators acc (N, Co, P) (+ zc * sidx + const) -> output codes."""
        L = self.L
        out = np.empty((n, ho * wo, self.co), dtype=np.float32)
        K.requant_nchw(acc, sidx, np.int64(zc), const, self.m, self.s, int(L.zo), int(L.lo), int(L.hi),
                       bool(L.single), out)
        if self.dense:
            return torch.from_numpy(out.reshape(n, self.co))
        return torch.from_numpy(out.reshape(n, ho, wo, self.co)).permute(0, 3, 1, 2)


class ExactConv(_Base):
    """The QNN's MAC: a float convolution of the raw codes, exact by bound (see the module)."""

    def __init__(self, L: Any) -> None:
        super().__init__(L)
        self.groups = int(L.groups)
        bound = int(np.abs(self.w4).reshape(self.co, -1).sum(1).max()) * 128
        self.dtype = torch.float32 if bound < F32_EXACT else torch.float64
        if bound >= F64_EXACT:
            raise AxlabError(f"layer {L.name}: weights too large for an exact float convolution")
        wt = torch.from_numpy(self.w4.astype(np.float64)).to(self.dtype)
        self.weight = wt.reshape(self.co, -1) if self.dense else as_cl(wt)
        self.sym, self.extra = _split_pad(self.pad4)
        self.kind = f"exact {str(self.dtype)[6:]} conv"
        self.bq = L.bq.numpy().astype(np.int64)
        self._corr: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        sum_w = np.abs(self.w4).reshape(self.co, -1).sum(1)
        self.use_bound(int((np.abs(self.bq) + (128 + abs(int(L.za))) * sum_w).max()))

    def corr(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """int64 (H'*W', Co): bias - za * (sum of the weights over the taps inside the image)."""
        c = self._corr.get((h, w))
        if c is None:
            if self.dense:
                s = self.w.reshape(self.co, -1).sum(1)[None, :]
            else:
                ones = torch.ones((1, self.w4.shape[1] * self.groups, h, w), dtype=torch.float64)
                t, b, l, r = self.extra
                ones = F.pad(ones, (l, r, t, b))
                s4 = F.conv2d(ones, torch.from_numpy(self.w4.astype(np.float64)), None, self.stride, self.sym, 1,
                              self.groups)
                s = s4[0].permute(1, 2, 0).reshape(-1, self.co).round().to(torch.int64).numpy()
            c = self._corr[(h, w)] = _pair(self.bq[None, :] - int(self.L.za) * s)
        return c

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:
            y = F.linear(x.reshape(x.shape[0], -1).to(self.dtype), self.weight)
            return self.finish(y, self.corr(1, 1), 1)
        corr = self.corr(int(x.shape[2]), int(x.shape[3]))
        xp = _pad_codes(x, self.extra, 0.0).to(self.dtype)
        y = F.conv2d(xp, self.weight, None, self.stride, self.sym, 1, self.groups)
        return self.finish(y, corr, int(y.shape[2] * y.shape[3]))


def _layer_q(L: Any) -> Any:
    """nn.requant.LayerQ of a _Layer, unpadded (the callers pad), dense as a 1x1 convolution."""
    from nn.requant import LayerQ

    w = np.asarray(L.w)
    w4 = w.reshape(w.shape[0], -1, 1, 1) if L.op == "tfl_fc" else w
    co = int(w4.shape[0])
    return LayerQ(L.name, w4.astype(np.int32), L.bq.numpy().astype(np.int64).copy(), np.zeros(co, np.int64),
                  np.zeros(co, np.int64), int(L.za), int(L.zo), -128, 127, tuple(int(v) for v in L.stride), (0, 0),
                  False)


class LowRankConv(_Base):
    """AxNN MAC of a conv / dense layer through the LUT's low-rank form (nn.mac.ConvMac's
    expanded weights and bounds; operands expanded and padded once by ``expand_nhwc``)."""

    def __init__(self, L: Any, factor: Any, whole: bool = False, signed: bool = True) -> None:
        from nn.mac import ConvMac

        super().__init__(L)
        # whole: the fused path (factor of the whole product table, nn.lut_forms.fused_factor): the
        # R factor channel sets only, no exact set; raises AxlabError when no exact float form exists
        cm = ConvMac(_layer_q(L), factor, signed, whole=whole)
        self.whole = whole
        self.R, self.groups, self.c_pad, self.dtype = cm.R, cm.groups, cm.c_pad, cm.dtype
        self.tabs = np.ascontiguousarray(cm.tabs, dtype=np.float32)
        self.weight = as_cl(cm.weight)
        self.corr = _pair(cm.const[None, :])
        self.use_bound(int(cm.total_bound))
        self.kind = f"{'fused S' if whole else 'lowrank R'}={self.R} {str(self.dtype)[6:]}" + (
            f" x{self.groups} groups" if self.groups > 1 else "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.pad4
        if self.dense:
            xa = x.reshape(x.shape[0], -1).contiguous().numpy().reshape(x.shape[0], 1, 1, -1)
        else:
            xa = nhwc(x)
        n, h, w, _ = xa.shape
        xe = np.empty((n, h + t + b, w + l + r, self.c_pad), dtype=np.float32)
        K.expand_nhwc(xa, np.float32(self.L.za), self.tabs, t, l, False, not self.whole, xe)
        xt = torch.from_numpy(xe).permute(0, 3, 1, 2).to(self.dtype)
        y = F.conv2d(xt, self.weight, None, self.stride, 0, 1, self.groups)
        if self.dense:
            y = y.reshape(n, -1)
        return self.finish(y, self.corr, int(y.shape[2] * y.shape[3]) if y.dim() == 4 else 1)


class LowRankDepthwise(_Base):
    """AxNN MAC of a depthwise layer through the LUT's low-rank form: a grouped convolution,
    one group of (1 + R) operand channels (interleaved: x - za, then U[x, r] - U[za, r]) per
    input channel, weights (w, V[r, w]), constant bias + sum_k sum_r U[za, r] V[r, w_k]."""

    def __init__(self, L: Any, factor: Any) -> None:
        super().__init__(L)
        self.R = int(factor.rank)
        c_in = int(L.groups)
        za_idx = int(L.za) + 128
        widx = self.w + 128  # (C*m, 1, kh, kw)
        U, V = factor.U.astype(np.int64), factor.V.astype(np.int64)
        tabs = (U - U[za_idx][None, :]).T  # (R, 256), 0 at the zero point
        chans = [self.w] + [V[r][widx] for r in range(self.R)]
        we = np.concatenate(chans, axis=1)  # (C*m, 1+R, kh, kw)
        const = L.bq.numpy().astype(np.int64) + sum(U[za_idx, r] * V[r][widx].reshape(self.co, -1).sum(1)
                                                    for r in range(self.R))
        xmax = np.array([max(127 - int(L.za), int(L.za) + 128)] + [int(np.abs(tabs[r]).max()) for r in range(self.R)],
                        dtype=np.int64)
        bound = int((np.abs(we).sum(axis=(2, 3)) * xmax[None, :]).sum(1).max())
        if bound >= F64_EXACT or bound + int(np.abs(const).max()) >= 2**31:
            raise AxlabError(f"layer {L.name}: low-rank terms too large for an exact int32 / float convolution")
        self.dtype = torch.float32 if bound < F32_EXACT else torch.float64
        self.tabs = np.ascontiguousarray(tabs, dtype=np.float32)
        self.weight = as_cl(torch.from_numpy(we.astype(np.float64)).to(self.dtype))
        self.corr = _pair(const[None, :])
        self.use_bound(bound + int(np.abs(const).max()))
        self.c_in = c_in
        self.kind = f"lowrank-depthwise R={self.R} {str(self.dtype)[6:]}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t, b, l, r = self.pad4
        xa = nhwc(x)
        n, h, w, c = xa.shape
        xe = np.empty((n, h + t + b, w + l + r, c * (1 + self.R)), dtype=np.float32)
        K.expand_nhwc(xa, np.float32(self.L.za), self.tabs, t, l, True, True, xe)
        xt = torch.from_numpy(xe).permute(0, 3, 1, 2).to(self.dtype)
        y = F.conv2d(xt, self.weight, None, self.stride, 0, 1, self.c_in)
        return self.finish(y, self.corr, int(y.shape[2] * y.shape[3]))


def _centred_nchw(x: torch.Tensor, za: int, pad4: list[int]) -> torch.Tensor:
    """Codes -> centred float32 NCHW (contiguous), zero-padded (= the zero point)."""
    t, b, l, r = pad4
    xc = (x - float(za)).contiguous()
    return F.pad(xc, (l, r, t, b)) if (t or b or l or r) else xc


class GatherConv(_Base):
    """AxNN MAC of a conv / dense layer by LUT gathers (nn.mac.NumbaGather)."""

    def __init__(self, L: Any, lut: Lut) -> None:
        from nn.mac import NumbaGather

        super().__init__(L)
        self.g = NumbaGather(_layer_q(L), lut)
        self.kind = "gather-numba"

    def release(self) -> None:
        self.g.release()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:
            x = x.reshape(x.shape[0], -1, 1, 1)
        xc = _centred_nchw(x, int(self.L.za), self.pad4)
        n = int(xc.shape[0])
        ho, wo = self.g.out_size(int(xc.shape[2]), int(xc.shape[3]))
        acc, sidx = self.g(xc)
        s = sidx.numpy() if self.g.zc else np.zeros((n, 0), dtype=np.int32)
        return self.finish_nchw(acc.numpy().reshape(n, self.co, -1), s, self.g.zc,
                                np.asarray(self.g.const, dtype=np.int64), n, ho, wo)


class GatherDepthwise(_Base):
    """AxNN MAC of a depthwise layer by one vectorised LUT gather (DepthwiseGather)."""

    def __init__(self, L: Any, lut: Lut) -> None:
        super().__init__(L)
        self.g = K.DepthwiseGather(self.w, L.bq.numpy(), int(L.za), self.stride, lut)
        self.kind = self.g.kind
        self.zero = np.zeros(self.co, dtype=np.int64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xc = _centred_nchw(x, int(self.L.za), self.pad4).to(torch.float64)
        acc = self.g(xc, int(self.L.za))
        n, _, ho, wo = acc.shape
        return self.finish_nchw(acc.reshape(n, self.co, -1).numpy(), np.zeros((n, 0), dtype=np.int32), 0,
                                self.zero, n, ho, wo)


def build(L: Any, lut: Lut | None, path: str, max_rank: int) -> Any:
    """The fast MAC of one layer: the QNN's (``lut`` None: nn.tflite_intconv.exact_mac), else the
    LUT's paths (fused, where the whole product table has a smaller factorisation, low-rank, each
    also in its integer form where the host has AVX2, gather) under nn.paths.LayerPaths
    (``path``: auto | lowrank | fused | gather)."""
    from nn.lut_forms import lut_factor
    from nn.paths import LayerPaths
    from nn.tflite_intconv import exact_mac, int_conv

    if lut is None:
        return exact_mac(L)
    cands: dict[str, Any] = {}
    f = lut_factor(lut, max_rank) if path != "gather" else None
    if path in ("auto", "fused") and L.op != "tfl_dwconv" and f is not None and f.rank > 0:
        from nn.lut_forms import fused_factor

        pf = fused_factor(lut, max_rank)  # fewer channel sets than the low-rank path, or None
        if pf is not None:
            try:
                cands["fused"] = LowRankConv(L, pf, whole=True, signed=bool(lut.signed))
            except AxlabError:
                pass
            ic = int_conv(L, pf, whole=True, signed=bool(lut.signed))
            if ic is not None:
                cands["fused-int"] = ic
    if path in ("auto", "lowrank") or (path == "fused" and not cands):
        if f is not None and f.rank == 0:  # the LUT holds the exact products: the QNN's convolution
            cands["lowrank"] = exact_mac(L)
            cands["lowrank"].kind = "lowrank R=0: " + cands["lowrank"].kind
        elif f is not None:
            try:
                cands["lowrank"] = LowRankDepthwise(L, f) if L.op == "tfl_dwconv" else LowRankConv(L, f)
            except AxlabError:
                pass
            ic = int_conv(L, f) if L.op != "tfl_dwconv" else None
            if ic is not None:
                cands["lowrank-int"] = ic
    if path == "auto" or not cands:
        cands["gather"] = GatherDepthwise(L, lut) if L.op == "tfl_dwconv" else GatherConv(L, lut)
    mode = "auto" if len(cands) > 1 else ("forced" if path != "auto" else "only")
    w = np.asarray(L.w)
    shape = {"op": L.op, "C": int(w.shape[1]) if w.ndim == 4 else int(w.shape[1]), "Co": int(w.shape[0]),
             "k": list(w.shape[2:]) if w.ndim == 4 else [1, 1], "stride": list(L.stride), "pad4": list(L.pad4),
             "tflite": 1}
    return LayerPaths(L.name, cands, lambda m, x: m(x), mode, shape, lut.sha256, lambda m: m.kind)
