"""The forms of an 8-bit multiplier's LUT that the exact MAC paths use (nn.mac), and its checks.

The LUT (256 x 256) is indexed by operand indices (code + 128); its operand coding (signed or
unsigned) is nn.mac's.

* ``lut_factor``: LUT = a*b + sum_r U_r(a) V_r(b) with integer U, V (an exact factorisation of
  the error table, R terms): the low-rank path's one convolution over (1+R)*C channels.
* ``product_table``, ``lut_product_factor``, ``fused_factor``: the whole product table
  factorised, T = sum_s U_s(a) V_s(b) (S terms): the fused path's S*C channels, offered where
  S < 1 + R.
* ``check_lut``: a LUT's shape and declared signedness, checked before a layer uses it.

Factorisations are verified exact against the LUT and cached per process by LUT sha256.
"""
from __future__ import annotations

import numpy as np

from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_table
from nn.lowrank import LowRank, balance, integer_factor

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
