"""Integer-only inference (the QNN) and approximate inference (the AxNN).

Activations travel *centred*, as ``q - zp`` (int8 code minus the zero point of the tensor's
quantisation) held in float32 torch tensors: exact small integers in [-255, 255], so max
pooling, ReLU (clamp at 0) and flattening run as ordinary torch ops, a convolution's zero
padding is the zero-point code, and the QNN feeds them to the float convolution without a
shift. ``run_codes`` adds the output zero point back. For each conv/dense layer:

    acc[co, p] = sum_k (a_k - za) * w_k[co]  + bias_q[co]           (QNN, exact)
    acc[co, p] = sum_k LUT[a_op, w_op]  - za_op*sum_k w_op - zw_op*sum_k a_op
                 + K*za_op*zw_op + bias_q[co]                          (AxNN)
    out        = clamp(zo + round(acc * M[co]), lo, 127),  M = M0 * 2^-rs (fixed point)

Operand coding follows the multiplier: signed LUT -> a_op = int8 code a, w_op = int8
weight w (zw_op = 0); unsigned LUT -> a_op = a + 128 (uint8 activation, zero point
za + 128), w_op = w + 128 (uint8 weight with zero point 128, TFLite's asymmetric uint8
scheme). The corrections use exact sums, so only the products go through the LUT; with
an exact LUT the result equals the QNN for either signedness. Padding inserts the zero
point code (the circuit multiplies it like any operand).

MAC providers (``acc`` before requantisation):
  * ``conv``: float convolution of integer tensors, exact because every partial sum is
    bounded below 2^24 (float32; input channels are split into groups when needed) or 2^53
    (float64). Serves the QNN (R = 0), the low-rank path (LUT = a*b + sum_r U_r(a) V_r(b)
    with integer U, V: one convolution over (1+R)*C channels) and the fused path (the whole
    product table factorised, T = sum_s U_s(a) V_s(b): S*C channels, where S < 1 + R).
  * ``gather-torch`` (reference), ``gather-numba`` (CPU), ``gather-cuda`` (GPU): LUT lookups.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_table
from nn.bundle import ModelBundle
from nn.graph_check import is_tflite_graph
from nn.lowrank import LowRank, balance, integer_factor
from nn.paths import LayerPaths, check_path, default_path

F32_EXACT = 2**24
F64_EXACT = 2**53
ADD_SHIFT = 20
EPILOGUE_F64 = True  # numba: requantise in exact float64 arithmetic (vectorised) where the bounds allow
BACKENDS = ("torch", "numba", "cuda")


def requant_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real multipliers m > 0 -> (M0 int64 in [2^30, 2^31), rs int64) with m ~= M0 * 2^-rs."""
    m = np.asarray(m, dtype=np.float64)
    frac, exp = np.frexp(m)  # m = frac * 2^exp, frac in [0.5, 1)
    m0 = np.round(frac * 2.0**31).astype(np.int64)
    over = m0 == 2**31
    m0[over] //= 2
    exp = exp + over
    rs = (31 - exp).astype(np.int64)
    if np.any(rs < 1) or np.any(rs > 62):
        raise AxlabError(f"requantisation multiplier out of range ({m.min():.3g}..{m.max():.3g})")
    return m0, rs


_FACTORS: dict[str, LowRank | None] = {}


def lut_factor(lut: Lut, max_rank: int = 8) -> LowRank | None:
    """Integer factorisation of the LUT's error table (cached by LUT sha256), verified exact."""
    key = f"{lut.sha256}:{max_rank}"
    if key not in _FACTORS:
        f = integer_factor(lut.error_table(), max_rank=max_rank)
        if f is not None:  # belt and braces: the fast path must reproduce the gather table
            f = balance(f)
            a, b = lut.values_a(), lut.values_b()
            recon = np.multiply.outer(a, b) + f.U @ f.V
            if not np.array_equal(recon, lut.table.astype(np.int64)):
                f = None
        _FACTORS[key] = f
    return _FACTORS[key]


_PFACTORS: dict[str, LowRank | None] = {}


def product_table(lut: Lut) -> np.ndarray:
    """The per-product table T (256 x 256, int64) that the fused path factorises, indexed by
    operand indices (code + 128): T = LUT - zw * a_op with zw = 0 (signed LUT) or 128 (unsigned:
    the weight operand's zero point), i.e. T = E + a_op * w for the int8 weight code w. A layer's
    accumulator is sum_k T[a_idx, w_idx] - (za + zw) * sum_k w + bias: the weight-operand zero
    point's data-dependent term (zw * sum_k a_op) is already inside T."""
    t = lut.table.astype(np.int64)
    return t if lut.signed else t - 128 * lut.values_a().astype(np.int64)[:, None]


def lut_product_factor(lut: Lut, max_rank: int = 9) -> LowRank | None:
    """Integer factorisation of ``product_table(lut)`` (cached by LUT sha256), verified exact, or
    None when its rank exceeds ``max_rank``. Its rank is 1 + R, R or R - 1 for error rank R: one
    term fewer than the low-rank path's exact + R error terms whenever the LUT's products (e.g. of
    operands truncated before an exact multiplier) are themselves of low rank."""
    key = f"{lut.sha256}:{max_rank}"
    if key not in _PFACTORS:
        t = product_table(lut)
        f = integer_factor(t, max_rank=max_rank)
        f = balance(f) if f is not None else None
        if f is not None and not np.array_equal(f.U @ f.V, t):  # belt and braces, as in lut_factor
            f = None
        _PFACTORS[key] = f
    return _PFACTORS[key]


def fused_factor(lut: Lut, max_rank: int = 8) -> LowRank | None:
    """The product-table factorisation when it needs fewer channel sets than the low-rank path
    (rank < 1 + error rank), else None: with as many sets it has no advantage and its larger
    magnitudes can only cost exactness headroom."""
    f = lut_factor(lut, max_rank)
    if f is None:
        return None
    p = lut_product_factor(lut, max_rank + 1)
    return p if p is not None and p.rank < 1 + f.rank else None


def check_lut(lut: Lut, layer: str) -> None:
    """The layers have 8-bit activation and weight operands: the LUT must be 256 x 256."""
    if lut.bits_a != 8 or lut.bits_b != 8 or lut.table.shape != (256, 256):
        raise AxlabError(f"multiplier {lut.name} is {lut.bits_a}x{lut.bits_b}-bit (LUT shape {lut.table.shape}) "
                         f"but layer {layer} multiplies 8-bit activation codes by 8-bit weight codes (needs 256x256)")
    if not isinstance(lut.signed, (bool, np.bool_)):
        raise AxlabError(f"multiplier {lut.name}: signedness {lut.signed!r} is not a bool")
    # a LUT declared signed whose entries are (much) closer to unsigned products, or the
    # reverse, was built or labelled with the wrong operand coding
    t = lut.table.astype(np.int64)
    own = np.abs(t - exact_table(8, 8, bool(lut.signed))).mean()
    other = np.abs(t - exact_table(8, 8, not lut.signed)).mean()
    if other * 4 < own:
        kind, okind = ("signed", "unsigned") if lut.signed else ("unsigned", "signed")
        raise AxlabError(f"multiplier {lut.name} is declared {kind} but its LUT holds {okind} products "
                         f"(mean |error| {own:.0f} as {kind}, {other:.0f} as {okind}): signedness mismatch")


@dataclass
class LayerQ:
    """Integer parameters of one conv/dense layer."""

    name: str
    w: np.ndarray        # int32 codes (Co, C, kh, kw), dense as (Co, C, 1, 1)
    bq: np.ndarray       # int64 (Co,)
    m0: np.ndarray       # int64 (Co,)
    rs: np.ndarray       # int64 (Co,)
    za: int
    zo: int
    lo: int
    hi: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dense: bool

    @property
    def k(self) -> int:
        return int(np.prod(self.w.shape[1:]))


def _layer_q(bundle: ModelBundle, node: dict[str, Any]) -> LayerQ:
    g, qp = bundle.graph, bundle.qparams
    name = node["name"]
    s_in, za = qp.act[g.quant_source(node["inputs"][0])]
    s_out, zo = qp.act[name]
    w = qp.wq[name].astype(np.int32)
    dense = node["op"] == "linear"
    if dense:
        w = w.reshape(w.shape[0], w.shape[1], 1, 1)
    m0, rs = requant_multiplier(s_in * qp.ws[name] / s_out)
    return LayerQ(name, w, qp.bq[name].astype(np.int64), m0, rs, int(za), int(zo),
                  int(zo) if node["relu"] else -128, 127,
                  (1, 1) if dense else tuple(node["stride"]), (0, 0) if dense else tuple(node["padding"]), dense)


# ----------------------------------------------------------------------------------- MACs
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


# ------------------------------------------------------------------------------ epilogues
def epilogue_torch(y: torch.Tensor, sidx: torch.Tensor | None, zc: int, L: LayerQ, const: np.ndarray) -> torch.Tensor:
    """Reference requantisation in torch int64 (see kernels_cpu.epilogue)."""
    acc = y.to(torch.int64).sum(1)  # (N, Co, P)
    if sidx is not None and zc:
        acc = acc + zc * sidx.to(torch.int64)[:, None, :]
    acc = acc + torch.from_numpy(const)[None, :, None]
    m0 = torch.from_numpy(L.m0)[None, :, None]
    rs = torch.from_numpy(L.rs)[None, :, None]
    v = torch.bitwise_right_shift(acc * m0 + torch.bitwise_left_shift(torch.ones_like(rs), rs - 1), rs)
    return v.clamp_(L.lo - L.zo, L.hi - L.zo).to(torch.float32)  # centred: code - zo


def epilogue_numba(y: torch.Tensor, sidx: torch.Tensor | None, zc: int, L: LayerQ, const: np.ndarray) -> torch.Tensor:
    from nn import kernels_cpu

    n, _, co, p = y.shape
    s = sidx.numpy() if (sidx is not None and zc) else np.zeros((n, 0), dtype=np.int32)
    if EPILOGUE_F64 and L.rs.min() >= 17:  # exact float64 form (see kernels_cpu.epilogue_f64)
        f64 = L.__dict__.get("_f64")
        if f64 is None:  # per-channel constants, once per layer
            f64 = L.__dict__["_f64"] = ((L.m0 >> 16).astype(np.float64), (L.m0 & 0xFFFF).astype(np.float64),
                                        np.ldexp(1.0, L.rs - 17), np.ldexp(1.0, 16 - L.rs))
        if y.dtype == torch.float32 and y.shape[1] == 1 and not s.shape[1] and y.is_contiguous():
            # a float32 convolution's fresh output, requantised where it lies
            y3 = y.view(n, co, p)
            kernels_cpu.epilogue_f64_inplace(y3.numpy(), const.astype(np.float64), *f64, 0.0,
                                             float(L.lo - L.zo), float(L.hi - L.zo))
            return y3
        out = torch.empty((n, co, p), dtype=torch.float32)
        kernels_cpu.epilogue_f64(y.contiguous().numpy(), s, np.int64(zc), const.astype(np.float64), *f64, 0.0,
                                 float(L.lo - L.zo), float(L.hi - L.zo), out.numpy())  # centred
        return out
    out = torch.empty((n, co, p), dtype=torch.float32)
    kernels_cpu.epilogue(y.contiguous().numpy(), s, np.int64(zc), const, L.m0, L.rs, np.int64(0),
                         np.int64(L.lo - L.zo), np.int64(L.hi - L.zo), out.numpy())  # centred
    return out


# --------------------------------------------------------------------------------- engine
class IntegerEngine:
    """Runs a bundle's graph on int8 codes. ``luts`` None: the QNN; else one Lut per layer.

    A bundle imported from TFLite (``tfl_*`` ops) gets a :class:`nn.tflite_engine.TfliteEngine`
    instead (TFLite's own rounding; same interface)."""

    def __new__(cls, bundle: ModelBundle, *args: Any, **kwargs: Any) -> Any:
        if cls is IntegerEngine and is_tflite_graph(bundle.graph.nodes):
            from nn.tflite_engine import TfliteEngine

            return TfliteEngine(bundle, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, bundle: ModelBundle, luts: list[Lut] | None = None, backend: str = "torch",
                 lowrank: bool = True, max_rank: int = 8, path: str | None = None) -> None:
        """``path`` (numba backend; see nn.paths): ``auto`` times the exact paths of each layer on
        its first batch of each shape and keeps the fastest, ``lowrank`` uses the low-rank
        convolution where the LUT's error has one (else the gather kernels), ``fused`` the
        convolution over the factorised product table where it has fewer terms (else as
        ``lowrank``), ``gather`` always the gather kernels; None: ``$AXLAB_NN_PATH`` or auto.
        ``lowrank=False`` means ``gather``.
        The torch and cuda backends have one (gather) path. Every path gives the same logits."""
        if backend not in BACKENDS:
            raise AxlabError(f"unknown backend {backend!r} (torch, numba or cuda)")
        path = check_path(path) if path is not None else default_path()
        if not lowrank:
            if path in ("lowrank", "fused"):
                raise AxlabError(f"--path {path} contradicts --no-lowrank (lowrank=False)")
            path = "gather"
        if backend != "numba" and path in ("lowrank", "fused") and luts is not None:
            raise AxlabError(f"--path {path} needs --backend numba (backend {backend} has only the gather path)")
        self.bundle, self.backend, self.path = bundle, backend, path
        g = bundle.graph
        layers = g.layers()
        if luts is not None and len(luts) != len(layers):
            raise AxlabError(f"{len(luts)} multipliers given but the model has {len(layers)} approximable layers "
                             f"({', '.join(layers)})")
        # macs: each layer's primary MAC (the low-rank one where it exists); paths: every exact
        # path of the layer and the choice among them, which is what run_codes uses
        self.macs: dict[str, Any] = {}
        self.paths: dict[str, LayerPaths] = {}
        self.lq: dict[str, LayerQ] = {}
        self.epi = epilogue_torch if backend == "torch" else epilogue_numba
        for i, name in enumerate(layers):
            node = g.by_name[name]
            L = self.lq[name] = _layer_q(bundle, node)
            lut = luts[i] if luts is not None else None
            cands: dict[str, Any] = {}
            mode = "only"
            if lut is None:
                cands["exact"] = ConvMac(L, None, use_numba=backend != "torch")
            else:
                check_lut(lut, name)
                if backend == "torch":
                    cands["gather"] = TorchGather(L, lut)
                elif backend == "cuda":
                    cands["gather"] = CudaGather(L, lut)
                else:
                    if path in ("auto", "fused"):
                        pf = fused_factor(lut, max_rank)
                        if pf is not None:
                            try:
                                cands["fused"] = ConvMac(L, pf, bool(lut.signed), use_numba=True, whole=True)
                            except AxlabError:
                                pass
                    if path in ("auto", "lowrank") or (path == "fused" and not cands):
                        f = lut_factor(lut, max_rank)
                        if f is not None:
                            # an unsigned LUT's error is E(a_op, w_op); the int8-centred exact part
                            # is unchanged, so the same expansion applies with the LUT's own U, V
                            try:
                                cands["lowrank"] = ConvMac(L, f, use_numba=True)
                            except AxlabError:
                                pass
                    if path == "auto" or not cands:
                        cands["gather"] = NumbaGather(L, lut)
                    mode = "auto" if len(cands) > 1 else ("forced" if path != "auto" else "only")
            self.macs[name] = next(iter(cands.values()))
            shape = {"C": int(L.w.shape[1]), "Co": int(L.w.shape[0]), "k": list(L.w.shape[2:]),
                     "stride": list(L.stride), "padding": list(L.padding), "dense": L.dense}
            self.paths[name] = LayerPaths(name, cands, functools.partial(self._run_mac, L), mode, shape,
                                          lut.sha256 if lut is not None else "", _describe_mac)
        # index of the last node reading each value (the output: never freed), for in-place adds
        self.last_use: dict[str, int] = {g.output: len(g.nodes)}
        for i, n in enumerate(g.nodes):
            for inp in n["inputs"]:
                self.last_use[inp] = max(self.last_use.get(inp, -1), i)
        for n in reversed(g.nodes):  # a flatten output is a view: its input lives as long as it does
            if n["op"] == "flatten":
                src = n["inputs"][0]
                self.last_use[src] = max(self.last_use[src], self.last_use.get(n["name"], -1))
        self.add_q: dict[str, tuple[int, int, int, int, int, int]] = {}
        qp = bundle.qparams
        for n in g.nodes:
            if n["op"] == "add":
                sa, za = qp.act[g.quant_source(n["inputs"][0])]
                sb, zb = qp.act[g.quant_source(n["inputs"][1])]
                so, zo = qp.act[n["name"]]
                ma = int(round(sa / so * 2**ADD_SHIFT))
                mb = int(round(sb / so * 2**ADD_SHIFT))
                self.add_q[n["name"]] = (za, ma, zb, mb, zo, zo if n["relu"] else -128)

    def _run_mac(self, L: LayerQ, mac: Any, x: torch.Tensor) -> torch.Tensor:
        """One layer through one MAC and the epilogue: centred output codes (N, Co, P) float32."""
        acc, sidx = mac(x)
        return self.epi(acc, sidx, mac.zc, L, mac.const)

    def _dead_after(self, name: str, i: int, g: Any) -> bool:
        """Whether value ``name`` is read by no node after node ``i`` and owns its storage (made
        by a conv, linear or add node: fresh tensors, never views of another value)."""
        return self.last_use.get(name, -1) <= i and g.by_name[name]["op"] in ("conv", "linear", "add")

    def describe(self) -> dict[str, str]:
        """Layer -> the MAC that ran last (before any run: the primary MAC, marked ``auto:``
        when the choice is still to be measured)."""
        out = {}
        for k, lp in self.paths.items():
            cur = lp.current()
            if cur is not None:
                out[k] = lp.desc[cur[0]]
            else:
                out[k] = ("auto:" if lp.mode == "auto" else "") + _describe_mac(self.macs[k])
        return out

    def path_report(self) -> dict[str, dict[str, Any]]:
        """Layer -> chosen path, how it was chosen (measured, cache, forced, only) and the
        candidates' times (ms) where measured; see nn.paths.LayerPaths.report."""
        return {k: lp.report() for k, lp in self.paths.items()}

    @torch.no_grad()
    def run_codes(self, x: np.ndarray) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> output codes (float32 tensor of int8 values)."""
        g = self.bundle.graph
        acts = self.bundle.qparams.act
        vals: dict[str, torch.Tensor] = {}
        for i, n in enumerate(g.nodes):
            op = n["op"]
            if op == "input":
                # code = pixel - 128 with zero point -128: the centred value is the pixel
                y = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
            elif op in ("conv", "linear"):
                xi = vals[n["inputs"][0]]
                dense = op == "linear"
                if dense:
                    xi = xi.reshape(xi.shape[0], -1, 1, 1)
                L = self.lq[n["name"]]
                out = self.paths[n["name"]](xi.contiguous())
                if dense:
                    y = out.reshape(out.shape[0], -1)
                else:
                    ho, wo = _conv_out(xi.shape[2:], L)
                    y = out.reshape(out.shape[0], -1, ho, wo)
            elif op == "add":
                za, ma, zb, mb, zo, lo = self.add_q[n["name"]]
                # inputs are centred (a - za, b - zb); so is the output (code - zo)
                if self.backend == "torch":
                    a = vals[n["inputs"][0]].to(torch.int64)
                    b = vals[n["inputs"][1]].to(torch.int64)
                    v = (a * ma + b * mb + (1 << (ADD_SHIFT - 1))) >> ADD_SHIFT
                    y = v.clamp_(lo - zo, 127 - zo).to(torch.float32)
                else:
                    from nn import kernels_cpu

                    ia, ib = n["inputs"]
                    a = vals[ia].contiguous()
                    b = vals[ib].contiguous()
                    f64 = EPILOGUE_F64 and 255 * (abs(ma) + abs(mb)) < 2**52  # exact in float64
                    own = self._dead_after(ia, i, g) if ia != ib else False
                    if f64 and (own or self._dead_after(ib, i, g)) and ia != ib:
                        # an operand nothing reads later, made by a conv or add here: overwrite it
                        if not own:
                            a, b, ma, mb = b, a, mb, ma
                        kernels_cpu.add_requant_f64_inplace(a.view(-1).numpy(), b.view(-1).numpy(), float(ma),
                                                            float(mb), float(1 << (ADD_SHIFT - 1)), 2.0**-ADD_SHIFT,
                                                            float(lo - zo), float(127 - zo))
                        y = a
                    elif f64:
                        y = torch.empty_like(a)
                        kernels_cpu.add_requant_f64(a.view(-1).numpy(), b.view(-1).numpy(), float(ma), float(mb),
                                                    float(1 << (ADD_SHIFT - 1)), 2.0**-ADD_SHIFT, float(lo - zo),
                                                    float(127 - zo), y.view(-1).numpy())
                    else:
                        y = torch.empty_like(a)
                        kernels_cpu.add_requant(a.view(-1).numpy(), b.view(-1).numpy(), np.int64(0), np.int64(ma),
                                                np.int64(0), np.int64(mb), np.int64(ADD_SHIFT), np.int64(0),
                                                np.int64(lo - zo), np.int64(127 - zo), y.view(-1).numpy())
            elif op == "relu":
                y = vals[n["inputs"][0]].clamp_min(0.0)  # centred: the zero point is 0
            elif op == "maxpool":
                y = F.max_pool2d(vals[n["inputs"][0]], tuple(n["kernel"]), tuple(n["stride"]), tuple(n["padding"]))
            elif op in ("avgpool", "gap"):
                xi = vals[n["inputs"][0]]
                cnt = xi.shape[2] * xi.shape[3] if op == "gap" else int(np.prod(n["kernel"]))
                # float32 is exact while |2*sum + cnt| < 2^24 (|values| <= 255); see below
                xi = xi if 511 * cnt < F32_EXACT else xi.to(torch.float64)
                if op == "gap":
                    s, cnt = xi.sum(dim=(2, 3), keepdim=True), xi.shape[2] * xi.shape[3]
                else:
                    k = tuple(n["kernel"])
                    s, cnt = F.avg_pool2d(xi, k, tuple(n["stride"]), divisor_override=1), k[0] * k[1]
                # round half up of sum/cnt, exact; on centred values it equals the code
                # formula shifted by the (integer) zero point. The float division is correctly
                # rounded: a non-integer quotient is >= 1/(2 cnt) from an integer, more than
                # its rounding error (|2 sum + cnt| / (2 cnt) * 2^-24), so floor is exact
                y = torch.floor((2 * s + cnt) / (2 * cnt)).to(torch.float32)
            elif op == "flatten":
                y = vals[n["inputs"][0]].reshape(vals[n["inputs"][0]].shape[0], -1)
            else:  # pragma: no cover
                raise RuntimeError(op)
            vals[n["name"]] = y
        return vals[g.output] + float(acts[g.quant_source(g.output)][1])

    def logits(self, x: np.ndarray, batch: int = 256, progress: bool = False) -> np.ndarray:
        """Output int8 codes as int32 (N, classes)."""
        from tqdm import tqdm

        outs = []
        rng = range(0, len(x), batch)
        for i in tqdm(rng, desc="eval", unit="batch", leave=False, disable=not progress or len(rng) < 2):
            outs.append(self.run_codes(x[i:i + batch]).numpy().astype(np.int32))
        if not outs:
            return np.zeros((0, self.bundle.num_classes), dtype=np.int32)
        return np.concatenate(outs)


def _describe_mac(m: Any) -> str:
    return f"{m.kind}(R={m.R},G={m.groups},{str(m.dtype)[6:]})" if isinstance(m, ConvMac) else m.kind


def _conv_out(hw: tuple[int, int], L: LayerQ) -> tuple[int, int]:
    kh, kw = L.w.shape[2:]
    return ((hw[0] + 2 * L.padding[0] - kh) // L.stride[0] + 1, (hw[1] + 2 * L.padding[1] - kw) // L.stride[1] + 1)


def exact_lut_like(signed: bool) -> Lut:
    return Lut(f"exact8{'s' if signed else 'u'}", exact_table(8, 8, signed), 8, 8, signed)


