"""MAC providers: a conv/dense layer's accumulator ``acc`` before requantisation (nn.requant).

Activations arrive *centred*, as ``q - za`` in float32 tensors (N, C, H, W): exact small
integers in [-255, 255], so a convolution's zero padding is the zero-point code and the QNN
feeds them to the float convolution without a shift. For each conv/dense layer:

    acc[co, p] = sum_k (a_k - za) * w_k[co]  + bias_q[co]           (QNN, exact)
    acc[co, p] = sum_k LUT[a_op, w_op]  - za_op*sum_k w_op - zw_op*sum_k a_op
                 + K*za_op*zw_op + bias_q[co]                          (AxNN)

Operand coding follows the multiplier: signed LUT -> a_op = int8 code a, w_op = int8
weight w (zw_op = 0); unsigned LUT -> a_op = a + 128 (uint8 activation, zero point
za + 128), w_op = w + 128 (uint8 weight with zero point 128, TFLite's asymmetric uint8
scheme). The corrections use exact sums, so only the products go through the LUT; with
an exact LUT the result equals the QNN for either signedness. Padding inserts the zero
point code (the circuit multiplies it like any operand).

A MAC called on centred activations returns partial sums (N, G, Co, P) and operand-index sums
(N, P) or None; its ``const`` (Co,) and ``zc`` are what the epilogue adds (acc = sum over G +
zc * sidx + const). The providers:
  * ``conv`` (``ConvMac``): float convolution of integer tensors, exact because every partial
    sum is bounded below 2^24 (float32; input channels are split into groups when needed) or
    2^53 (float64). Serves the QNN (R = 0), the low-rank path (LUT = a*b + sum_r U_r(a) V_r(b)
    with integer U, V: one convolution over (1+R)*C channels) and the fused path (the whole
    product table factorised, T = sum_s U_s(a) V_s(b): S*C channels, where S < 1 + R); the
    factorisations are nn.lut_forms'.
  * ``gather-torch`` (``TorchGather``, reference), ``gather-numba`` (``NumbaGather``, CPU),
    ``gather-cuda`` (``CudaGather``, GPU): LUT lookups.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.errors import AxlabError
from hwsim.lut import Lut
from nn.lowrank import LowRank
from nn.requant import LayerQ

F32_EXACT = 2**24  # integers of smaller magnitude are exact in float32
F64_EXACT = 2**53  # ... in float64


class ConvMac:
    """acc via one float convolution over the (1+R)*C expanded channels; exact by bound.

    ``whole=True`` (the fused path): ``factor`` factorises the whole product table
    (``lut_product_factor``, ``signed`` = the LUT's signedness) and the convolution runs over
    its R*C channels only, with no separate exact channel set."""

    kind = "conv"

    def __init__(self, L: LayerQ, factor: LowRank | None, signed: bool = True, use_numba: bool = False,
                 whole: bool = False) -> None:
        self.L, self.use_numba, self.whole = L, use_numba, whole
        co, c, kh, kw = L.w.shape
        widx = L.w + 128  # operand indices
        za_idx = L.za + 128
        self.R = factor.rank if factor is not None else 0
        if whole:
            if factor is None:
                raise ValueError("the fused path needs a product-table factorisation")
            self.kind = "fused"
            # acc = sum_k T[a_idx, w_idx] - (za + zw) * sum_k w + bias (see product_table)
            chans_w, xmax = [], []
            const = L.bq - (L.za + (0 if signed else 128)) * L.w.astype(np.int64).reshape(co, -1).sum(1)
        else:
            chans_w = [L.w.astype(np.int64)]
            xmax = [max(127 - L.za, L.za + 128)] * c
            const = L.bq.copy()
        self.sets = self.R + (not whole)  # channel sets of C channels each
        tabs = np.zeros((self.R, 256), dtype=np.int64)
        for r in range(self.R):
            u, v = factor.U[:, r], factor.V[r]
            tabs[r] = u - u[za_idx]  # shifted so the zero point (padding) maps to 0
            vw = v[widx]             # (Co, C, kh, kw)
            chans_w.append(vw)
            const += u[za_idx] * vw.reshape(co, -1).sum(1)  # the shift, put back exactly
            xmax += [int(np.abs(tabs[r]).max())] * c
        we = np.concatenate(chans_w, axis=1)  # (Co, (1+R)C, kh, kw) int64
        self.we = we  # (kept for integer kernels: nn.tflite_intconv)
        xmax_a = np.array(xmax, dtype=np.int64)
        # |partial sum| <= sum_k xmax_k |w_k|: pick the fewest contiguous channel groups
        # that keep that bound < 2^24 (float32 exact), else float64, else give up
        per_ch = (np.abs(we).sum(axis=(2, 3)) * xmax_a[None, :])  # (Co, Ce)
        ce = we.shape[1]
        self.dtype = None
        # a group always holds >= 1 whole channel; more than 32 groups is slower than float64
        max_groups = 0 if per_ch.max() >= F32_EXACT else min(ce, 32)
        for groups in range(1, max_groups + 1):
            cg = -(-ce // groups)
            pad = cg * groups - ce
            pc = np.pad(per_ch, ((0, 0), (0, pad))).reshape(co, groups, cg).sum(2)
            if pc.max() < F32_EXACT:
                self.dtype, self.groups, self.cg = torch.float32, groups, cg
                break
        if self.dtype is None:
            if per_ch.sum(1).max() < F64_EXACT:
                self.dtype, self.groups, self.cg = torch.float64, 1, ce
            else:
                raise AxlabError(f"layer {L.name}: low-rank terms too large for exact float convolution")
        self.total_bound = int(per_ch.sum(1).max() + np.abs(const).max())
        if self.total_bound >= 2**31:
            raise AxlabError(f"layer {L.name}: accumulator bound {self.total_bound} exceeds int32")
        pad = self.cg * self.groups - ce
        wg = np.pad(we, ((0, 0), (0, pad), (0, 0), (0, 0)))
        # groups=G conv: group g sees channels [g*cg, (g+1)*cg) and writes its own Co partial sums
        wg = wg.reshape(co, self.groups, self.cg, kh, kw).transpose(1, 0, 2, 3, 4).reshape(
            self.groups * co, self.cg, kh, kw)
        self.weight = torch.from_numpy(wg.astype(np.float64)).to(self.dtype).contiguous()
        self.tabs = tabs.astype(np.float32)
        self.tabs_t = torch.from_numpy(tabs).to(self.dtype)
        self.c_in, self.c_pad = c, self.cg * self.groups
        self.const = const
        self.zc = 0

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) centred activations (code - za) -> (N, c_pad, H, W) float operands."""
        n, c, h, w = x.shape
        if self.R == 0 and self.c_pad == c and not self.whole:
            return x if x.dtype == self.dtype else x.to(self.dtype)
        if self.use_numba and self.dtype == torch.float32:
            from nn import kernels_cpu

            out = torch.empty((n, self.c_pad, h, w), dtype=torch.float32)
            k = kernels_cpu.expand_tabs if self.whole else kernels_cpu.expand
            k(x.reshape(n, c, h * w).numpy(), self.L.za + 128, self.tabs, out.view(n, self.c_pad, h * w).numpy())
            return out
        parts = [] if self.whole else [x.to(self.dtype)]
        idx = (x + (self.L.za + 128)).long()
        for r in range(self.R):
            parts.append(self.tabs_t[r][idx])
        if self.c_pad > self.sets * c:
            parts.append(torch.zeros((n, self.c_pad - self.sets * c, h, w), dtype=self.dtype))
        return torch.cat(parts, 1)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        xe = self.expand(x)
        y = F.conv2d(xe, self.weight, None, self.L.stride, self.L.padding, 1, self.groups)
        n, _, ho, wo = y.shape
        return y.reshape(n, self.groups, -1, ho * wo), None


class _GatherBase:
    """Common set-up of LUT gathers: operand indices, corrections, bounds."""

    def __init__(self, L: LayerQ, lut: Lut) -> None:
        self.L = L
        co = L.w.shape[0]
        off = 0 if lut.signed else 128
        zw = off
        za_op = L.za + off
        self.widx = (L.w + 128).astype(np.int64)  # (Co, C, kh, kw)
        k = L.k
        sum_w_op = (L.w.astype(np.int64) + off).reshape(co, -1).sum(1)
        self.const = L.bq - za_op * sum_w_op - zw * k * (off - 128) + k * za_op * zw
        self.zc = -zw
        self.table = np.ascontiguousarray(lut.table, dtype=np.int32)
        maxabs = int(np.abs(self.table.astype(np.int64)).max())
        if k * maxabs >= 2**31 or k * maxabs + np.abs(self.const).max() + 128 * k * 255 >= 2**31:
            raise AxlabError(f"layer {L.name}: LUT {lut.name} values up to {maxabs} overflow the "
                             f"int32 accumulator over {k} products")
        self.pad_val = float(L.za + 128)

    def padded_idx(self, x: torch.Tensor) -> torch.Tensor:
        """Centred activations -> uint8 operand indices (code + 128), padded with the zero point."""
        ph, pw = self.L.padding
        xi = x + self.pad_val
        if ph or pw:
            xi = F.pad(xi, (pw, pw, ph, ph), value=self.pad_val)
        return xi.to(torch.uint8)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.L.w.shape[2:]
        ph, pw = self.L.padding
        sh, sw = self.L.stride
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


class TorchGather(_GatherBase):
    """Reference: unfold + table gather in torch (clear, slow)."""

    kind = "gather-torch"

    def __init__(self, L: LayerQ, lut: Lut) -> None:
        super().__init__(L, lut)
        self.flat = torch.from_numpy(self.table.reshape(-1).astype(np.int64))
        self.wflat = torch.from_numpy(self.widx.reshape(self.widx.shape[0], -1))  # (Co, K)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        ho, wo = self.out_size(h, w)
        xi = self.padded_idx(x).to(torch.float32)
        kh, kw = self.L.w.shape[2:]
        cols = F.unfold(xi, (kh, kw), stride=self.L.stride).long()  # (N, K, P), k = (c, ky, kx)
        co = self.wflat.shape[0]
        acc = torch.empty((n, co, ho * wo), dtype=torch.int64)
        rows = cols * 256
        chunk = max(1, (1 << 22) // max(1, rows[0].numel()))
        for i in range(0, n, chunk):
            r = rows[i:i + chunk]
            for o in range(co):
                acc[i:i + chunk, o] = self.flat[r + self.wflat[o][None, :, None]].sum(1)
        sidx = cols.sum(1)
        return acc.reshape(n, 1, co, ho * wo), sidx


class NumbaGather(_GatherBase):
    """CPU gather kernels (numba, parallel).

    Two kernels with identical results: ``gather_conv_tab`` adds rows of per-layer expanded
    tables (tabs[k, a, :] = LUT[a, w_idx[k, :]], K x 256 x Co int32, built on first use) and
    is used when a call has at least ``min_pixels_tab`` output pixels (so every tile reuses
    the tables) and the tables fit in ``max_tab_bytes``; ``gather_conv`` (scalar lookups in
    the 256 x 256 LUT) otherwise, e.g. for dense layers on small batches.
    """

    kind = "gather-numba"
    min_pixels_tab = 1024
    max_tab_bytes = 64 << 20

    def __init__(self, L: LayerQ, lut: Lut) -> None:
        super().__init__(L, lut)
        co = self.widx.shape[0]
        self.wk = np.ascontiguousarray(self.widx.reshape(co, -1).T.astype(np.uint8))  # (K, Co)
        self.tabs: np.ndarray | None = None
        self.lookups = 0
        self.last_kernel = ""

    def _tables(self) -> np.ndarray | None:
        if self.tabs is None and self.wk.size * 256 * 4 <= self.max_tab_bytes:
            # (K, 256, Co): column w_idx[k, co] of the LUT, for every operand index a
            self.tabs = np.ascontiguousarray(self.table[:, self.wk.astype(np.int64)].transpose(1, 0, 2))
        return self.tabs

    def release(self) -> None:
        """Drop the expanded tables (rebuilt on the next call that needs them)."""
        self.tabs = None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from numba import get_num_threads

        from nn import kernels_cpu

        n, c, h, w = x.shape
        ho, wo = self.out_size(h, w)
        xi = self.padded_idx(x).contiguous().numpy()
        co = self.wk.shape[1]
        acc = np.empty((n, co, ho * wo), dtype=np.int32)
        sidx = np.empty((n, ho * wo), dtype=np.int32)
        kh, kw = self.L.w.shape[2:]
        total = n * ho * wo
        tabs = self._tables() if total >= self.min_pixels_tab else None
        if tabs is not None:
            # tiles of 512..4096 pixels, at least two per thread when the call is big enough
            tile = int(min(4096, max(512, total // (2 * get_num_threads()))))
            kernels_cpu.gather_conv_tab(xi, tabs, kh, kw, self.L.stride[0], self.L.stride[1], ho, wo, tile,
                                        acc, sidx)
            self.last_kernel = "tab"
        else:
            kernels_cpu.gather_conv(xi, self.wk, self.table, kh, kw, self.L.stride[0], self.L.stride[1],
                                    ho, wo, acc, sidx)
            self.last_kernel = "lut"
        self.lookups += n * ho * wo * self.wk.size
        return torch.from_numpy(acc).reshape(n, 1, co, ho * wo), torch.from_numpy(sidx)


class CudaGather(_GatherBase):
    """numba-cuda gather kernel, LUT resident in GPU memory (runs under the CUDA simulator
    when NUMBA_ENABLE_CUDASIM=1)."""

    kind = "gather-cuda"

    def __init__(self, L: LayerQ, lut: Lut) -> None:
        super().__init__(L, lut)
        from nn import kernels_cuda

        co = self.widx.shape[0]
        self.k = kernels_cuda
        self.d_lut = kernels_cuda.to_device(self.table)
        self.d_w = kernels_cuda.to_device(np.ascontiguousarray(self.widx.reshape(co, -1).astype(np.uint8)))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        ho, wo = self.out_size(h, w)
        xi = np.ascontiguousarray(self.padded_idx(x).numpy())
        kh, kw = self.L.w.shape[2:]
        acc, sidx = self.k.gather_conv(xi, self.d_w, self.d_lut, kh, kw, self.L.stride, ho, wo)
        co = self.widx.shape[0]
        return torch.from_numpy(acc).reshape(n, 1, co, ho * wo), torch.from_numpy(sidx)


def describe_mac(m: Any) -> str:
    """A MAC's kind, with a ConvMac's rank, channel groups and float type: e.g. ``conv(R=2,G=1,float32)``."""
    return f"{m.kind}(R={m.R},G={m.groups},{str(m.dtype)[6:]})" if isinstance(m, ConvMac) else m.kind
