"""The QNN's MAC of an imported TFLite conv / dense layer as an exact integer convolution on AVX2
(nn.kernels_avx2), with the requantisation and, where the engine plans it, the following ADD
fused in; ``exact_mac`` picks it where the host and the layer allow, else nn.tflite_fast's float
convolution ExactConv. Same output codes as the torch reference (tests/test_nn_kernels_avx2.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hwsim.errors import AxlabError
from nn.tflite_fast import ExactConv, _Base, nhwc

_NONE = np.zeros((0, 0, 0, 0), dtype=np.float32)  # "no fused ADD" for IntConv


class IntConv(_Base):
    """The MAC of a conv / dense layer (groups 1) as an exact int32 convolution on AVX2
    (nn.kernels_avx2): int16 operands centred on the zero point (padding for free), the
    requantisation fused; no float convolution, no correction table. A dense layer runs as a 1x1
    convolution over a (1, 1, N) image of the batch.

    QNN (``factor`` None): operands code - za, the layer's weights and bias. AxNN: the LUT's
    low-rank form (``factor`` = nn.lut_forms.lut_factor's, operands code - za and U[code, r] -
    U[za, r], weights w and V[r, w]) or, ``whole``, the factorisation of the whole product table
    (nn.lut_forms.fused_factor's, operand sets U only) -- nn.mac.ConvMac's channel sets, weights
    and constant, here on int16 operands read through one 256-entry table per set."""

    def __init__(self, L: Any, factor: Any = None, whole: bool = False, signed: bool = True) -> None:
        from nn import kernels_avx2 as P

        super().__init__(L)
        self.P = P
        if int(L.groups) != 1:
            raise AxlabError(f"layer {L.name}: grouped, no pmaddwd form")
        if factor is None:
            self.bq = L.bq.numpy().astype(np.int64)
            bound = int(np.abs(self.w4).reshape(self.co, -1).sum(1).max()) * 255 + int(np.abs(self.bq).max())
            self.tabs = np.zeros((0, 256), dtype=np.int16)  # operands by subtraction: code - za
            self.kind = "exact int16 pmaddwd conv"
        else:
            from nn.mac import ConvMac
            from nn.tflite_fast import _layer_q

            cm = ConvMac(_layer_q(L), factor, signed, whole=whole)  # AxlabError where no exact int32 form
            codes = np.arange(-128, 128, dtype=np.int64)
            tabs = ([] if whole else [codes - int(L.za)]) + [t.astype(np.int64) for t in np.rint(cm.tabs)]
            self.tabs = np.stack(tabs)
            self.w4, self.bq, bound = cm.we, np.asarray(cm.const, dtype=np.int64), int(cm.total_bound)
            self.kind = f"{'fused S' if whole else 'lowrank R'}={cm.R} int16 pmaddwd"
        if bound >= 2**31 or max(np.abs(self.w4).max(), np.abs(self.tabs).max(initial=0)) > 32767:
            raise AxlabError(f"layer {L.name}: no exact int32 pmaddwd form")
        self.tabs = np.ascontiguousarray(self.tabs, dtype=np.int16)
        self.sets = max(1, self.tabs.shape[0])  # operand channel sets per input channel
        self.wp = P.pack_weights(self.w4)
        self.use_bound(bound)
        self.bias_f = self.bq.astype(np.float64)
        self.f64_or_0 = self.f64 if self.f64 is not None else tuple(np.zeros(self.co) for _ in range(5))
        self._geo: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # the int32 vector epilogue (and so a fused ADD): double rounding, whole 16-channel blocks,
        # multipliers, shifts and bias in its range
        self.int_epilogue = not L.single and self.co % P.COLS == 0 and \
            P.int_requant_rows(self.bq, self.m, self.s, 1) is not None

    def _geometry(self, width: int, c: int, wo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tap offsets for an input ``width`` pixels wide, float64 and int32 epilogue constants
        tiled over ``wo`` pixels), cached per shape."""
        key = (width, c, wo)
        g = self._geo.get(key)
        if g is None:
            offs = self.P.tap_offsets(self.kh, self.kw, (c * self.sets + 1) // 2, width)
            flat = self.f64 is not None and self.co % self.P.COLS == 0 and not self.int_epilogue  # else unused
            tiles = np.stack([np.tile(v, wo) for v in (self.bias_f, *self.f64_or_0)]) if flat else np.zeros((6, 0))
            qi = np.zeros((3, 0), np.int32)  # no vector epilogue
            if self.int_epilogue:
                qi = self.P.int_requant_rows(self.bq, self.m, self.s, wo)
            g = (offs, np.ascontiguousarray(tiles), qi)
            self._geo[key] = g
        return g

    @property
    def fuses_add(self) -> bool:
        """Whether ``__call__(x, add=...)`` can fuse a following ADD (the int32 vector epilogue)."""
        return not self.dense and self.int_epilogue

    def __call__(self, x: torch.Tensor, add: tuple[np.ndarray, torch.Tensor] | None = None) -> torch.Tensor:
        """Output codes of the layer; ``add`` = (table (65536,) float32 indexed by (this layer's
        code + 128) * 256 + other code + 128, the other operand's codes): the ADD's codes instead."""
        L = self.L
        if self.dense:
            xa = x.reshape(1, 1, x.shape[0], -1).contiguous().numpy()
            t = b = l = r = 0
        else:
            xa = nhwc(x)
            t, b, l, r = self.pad4
        n, h, w, c = xa.shape
        sh, sw = (1, 1) if self.dense else self.stride
        ho, wo = (h + t + b - self.kh) // sh + 1, (w + l + r - self.kw) // sw + 1
        # channels paired (even count); columns for the micro-kernel's last 4-pixel group
        width = max(w + l + r, (-(-wo // self.P.ROWS) * self.P.ROWS - 1) * sw + self.kw)
        offs, tiles, qi = self._geometry(width, c, wo)
        out = np.empty((n, ho, wo, self.co), dtype=np.float32)
        use_f64 = self.f64 is not None
        tab, other = (add[0], nhwc(add[1])) if add is not None else (_NONE, _NONE)
        if add is not None and (not self.fuses_add or other.shape != out.shape):
            raise ValueError(f"layer {L.name}: cannot fuse this ADD")  # the engine's plan asks only where it can
        e = c * self.sets
        self.P.conv_rows(xa, np.float32(L.za), self.tabs, t, l, self.kh, sh, sw, width, e + e % 2, self.wp, offs,
                         self.co, self.bq, self.bias_f, self.m, self.s, *self.f64_or_0, tiles, qi, use_f64, float(L.zo),
                         float(L.lo), float(L.hi), bool(L.single), tab, other, out)
        if self.dense:
            return torch.from_numpy(out.reshape(-1, self.co))
        return torch.from_numpy(out).permute(0, 3, 1, 2)


def int_conv(L: Any, factor: Any = None, whole: bool = False, signed: bool = True) -> IntConv | None:
    """IntConv(L, factor, whole, signed) where the host has AVX2 and the layer (and factors) fit
    its int16 / int32 form, else None."""
    from nn import kernels_avx2

    if kernels_avx2.available():
        try:
            return IntConv(L, factor, whole=whole, signed=signed)
        except AxlabError:
            pass
    return None


def exact_mac(L: Any) -> Any:
    """The QNN's MAC of one layer: IntConv where the host has AVX2 and the layer allows it,
    else the float convolution ExactConv."""
    ic = int_conv(L)
    return ic if ic is not None else ExactConv(L)
