"""TFLite's integer arithmetic, reproduced exactly (the semantics of LiteRT's reference kernels).

All tensors here are torch int64 holding int32 quantities; every helper emulates the
int32 C++ expression it stands for (wrapping where C++ would wrap, truncating division
where C++ truncates), so the results are bit-identical to the reference kernels:

* ``quantize_multiplier``: a real multiplier -> (int32 significand in [2^30, 2^31), shift)
  via frexp and round-half-away-from-zero, the flush/saturate rules included.
* ``mbqm``: MultiplyByQuantizedMultiplier. LiteRT (checked on ai-edge-litert 2.3.0) is
  built with TFLITE_SINGLE_ROUNDING: one rounding of ``x * M`` (ties toward +inf); the
  gemmlowp double-rounding form (SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT) is kept as ``single=False``. They differ on near-ties: on the
  MLPerf ResNet8's dense layer 2 % of the codes.
* ``add_int8``: the int8 ADD (both inputs shifted left by ADD_LEFT_SHIFT, rescaled by their
  own multipliers, summed, rescaled).
* the int8 SOFTMAX of the reference kernel: gemmlowp fixed point (Q5.26 input differences,
  exp on negative values by a Taylor polynomial and a barrel shifter, Q12.19 sum, reciprocal
  by Newton-Raphson), as in ``reference_ops::Softmax``.
"""
from __future__ import annotations

import functools

import math

import numpy as np
import torch

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ADD_LEFT_SHIFT = 20       # ADD's inputs are shifted left by this before their rescaling


def wrap32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement int32 wrap of int64 values (what an int32 C++ expression yields)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def tfl_round(v: float) -> int:
    """std::round: half away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def quantize_multiplier(m: float) -> tuple[int, int]:
    """QuantizeMultiplier: m ~= q * 2^(shift - 31), q int32 in [2^30, 2^31) (0 for m == 0)."""
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = tfl_round(frac * (1 << 31))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:  # every bit would be shifted out: flushed to zero
        return 0, 0
    if shift > 30:  # beyond what the shift arithmetic allows: saturated
        return (1 << 31) - 1, 30
    return q, shift


def srdhm(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """SaturatingRoundingDoublingHighMul of int32 values: round(a * b / 2^31), ties away from 0."""
    b = torch.as_tensor(b, dtype=torch.int64)
    ab = a * b
    nudge = torch.where(ab >= 0, torch.tensor(1 << 30), torch.tensor(1 - (1 << 30)))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return torch.where(overflow, torch.tensor(INT32_MAX), out)


def rdbpot(x: torch.Tensor, exponent: torch.Tensor | int) -> torch.Tensor:
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero (exponent 0..31)."""
    e = torch.as_tensor(exponent, dtype=torch.int64)
    mask = torch.bitwise_left_shift(torch.ones_like(e), e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> e) + (remainder > threshold).to(torch.int64)


def mbqm(x: torch.Tensor, mult: torch.Tensor | int, shift: torch.Tensor | int, single: bool = False) -> torch.Tensor:
    """MultiplyByQuantizedMultiplier(x, mult, shift) for int32 x (int64 tensor).

    ``single`` (TFLITE_SINGLE_ROUNDING, what LiteRT's reference kernels are built with):
    ``(x * mult + 2^(30 - shift)) >> (31 - shift)``, one rounding, ties toward +inf.
    Otherwise the gemmlowp form: SaturatingRoundingDoublingHighMul of the left-shifted
    value, then RoundingDivideByPOT (two roundings, ties away from zero)."""
    s = torch.as_tensor(shift, dtype=torch.int64)
    if single:
        total = 31 - s
        rnd = torch.bitwise_left_shift(torch.ones_like(total), total - 1)
        return torch.bitwise_right_shift(x * torch.as_tensor(mult, dtype=torch.int64) + rnd, total)
    left = s.clamp(min=0)
    right = (-s).clamp(min=0)
    return rdbpot(srdhm(wrap32(x * torch.bitwise_left_shift(torch.ones_like(left), left)), mult), right)


def quantize_f32(scale: float, zero_point: int, f: float) -> int:
    """tflite::Quantize used for activation ranges: zp + round(f / scale) in float32."""
    return int(zero_point) + tfl_round(float(np.float32(f) / np.float32(scale)))


def activation_range(act: str, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for NONE / RELU / RELU6 / RELU_N1_TO_1."""
    if act == "NONE":
        return qmin, qmax
    if act == "RELU":
        return max(qmin, quantize_f32(scale, zero_point, 0.0)), qmax
    if act == "RELU6":
        return max(qmin, quantize_f32(scale, zero_point, 0.0)), min(qmax, quantize_f32(scale, zero_point, 6.0))
    if act == "RELU_N1_TO_1":
        return max(qmin, quantize_f32(scale, zero_point, -1.0)), min(qmax, quantize_f32(scale, zero_point, 1.0))
    raise ValueError(act)


# ------------------------------------------------------------------------- softmax (int8)
SCALED_DIFF_INT_BITS = 5
ACCUM_INT_BITS = 12


def softmax_params(input_scale: float, beta: float) -> tuple[int, int, int]:
    """PreprocessSoftmaxScaling + CalculateInputRadius: (multiplier, left_shift, diff_min)."""
    real = min(float(beta) * float(input_scale) * (1 << (31 - SCALED_DIFF_INT_BITS)), (1 << 31) - 1.0)
    mult, left = quantize_multiplier(real)
    if left < 0:
        raise ValueError("softmax input multiplier below one")
    radius = math.floor(1.0 * ((1 << SCALED_DIFF_INT_BITS) - 1) * (1 << (31 - SCALED_DIFF_INT_BITS))
                        / (1 << left))
    return mult, left, -radius


def _sat_mul_pot(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """gemmlowp SaturatingRoundingMultiplyByPOT on int32 raw values."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    out = x << exponent
    out = torch.where(x > threshold, torch.tensor(INT32_MAX), out)
    return torch.where(x < -threshold, torch.tensor(INT32_MIN), out)


def _exp_quarter(a: torch.Tensor) -> torch.Tensor:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor expansion around -1/8)."""
    const_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    return const_term + srdhm(torch.full_like(x, const_term), x + poly)


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
           (3, 720401), (4, 242))


def exp_on_negative_values(a: torch.Tensor, int_bits: int = SCALED_DIFF_INT_BITS) -> torch.Tensor:
    """gemmlowp exp_on_negative_values: Q(int_bits).(31-int_bits) a <= 0 -> Q0.31 exp(a)."""
    frac_bits = 31 - int_bits
    quarter = 1 << (frac_bits - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_quarter(_sat_mul_pot(a_mod, int_bits))
    remainder = a_mod - a
    for exponent, mult in _BARREL:
        if int_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = torch.where((remainder & bit) != 0, srdhm(result, mult), result)
    return torch.where(a == 0, torch.tensor(INT32_MAX), result)


def _one_over_one_plus_x(a: torch.Tensor) -> torch.Tensor:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in, Q0.31 out (Newton-Raphson)."""
    s = a + INT32_MAX
    half_den = torch.div(s + torch.where(s >= 0, 1, -1), 2, rounding_mode="trunc")  # RoundingHalfSum
    x = 1515870810 + srdhm(half_den, -1010580540)  # Q2.29: 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        hdx = srdhm(half_den, x)
        x = x + _sat_mul_pot(srdhm(x, one_q2 - hdx), 2)
    return _sat_mul_pot(x, 1)


@functools.lru_cache(maxsize=64)
def softmax_exp_table(mult: int, left: int, diff_min: int) -> torch.Tensor:
    """int64 (256,): entry d = exp_on_negative_values(MultiplyByQuantizedMultiplierGreaterThanOne(-d))
    in Q0.31 for the input difference -d (d = max code - code, 0..255), 0 where -d < diff_min:
    the elementwise part of softmax_int8, evaluated once per possible difference."""
    diff = -torch.arange(256, dtype=torch.int64)
    e = exp_on_negative_values(mbqm(diff, int(mult), int(left)))
    return torch.where(diff >= int(diff_min), e, torch.zeros_like(e))


def softmax_int8(x: torch.Tensor, mult: int, left: int, diff_min: int) -> torch.Tensor:
    """reference_ops::Softmax for int8 in / int8 out over the last axis; x int64 codes."""
    mx = x.max(dim=-1, keepdim=True).values
    diff = x - mx
    keep = diff >= diff_min
    e = softmax_exp_table(int(mult), int(left), int(diff_min))[-diff]  # Q0.31, 0 where not kept
    total = wrap32(rdbpot(e, ACCUM_INT_BITS).sum(dim=-1, keepdim=True))  # Q12.19
    # GetReciprocal: normalise the sum to [1, 2), 1/(1+x) in Q0.31, count the bits over one
    t = total.to(torch.int64)
    headroom = 32 - _bit_length(t)  # CountLeadingZeros of a positive int32 as uint32
    num_bits_over_unit = ACCUM_INT_BITS - headroom
    shifted_minus_one = wrap32(((t << headroom) & 0xFFFFFFFF) - (1 << 31))
    scale = _one_over_one_plus_x(shifted_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    out = rdbpot(srdhm(scale, e), exponent) - 128
    out = out.clamp(-128, 127)
    return torch.where(keep, out, torch.full_like(out, -128))


def _bit_length(t: torch.Tensor) -> torch.Tensor:
    """Number of significant bits of non-negative int64 values (0 -> 0)."""
    n = torch.zeros_like(t)
    v = t.clone()
    for s in (32, 16, 8, 4, 2, 1):
        big = v >= (1 << s)
        n = n + big.to(torch.int64) * s
        v = torch.where(big, v >> s, v)
    return n + (v > 0).to(torch.int64)


def add_int8(a: torch.Tensor, b: torch.Tensor, q: tuple) -> torch.Tensor:
    """TFLite int8 ADD of int64 codes a, b (``q``: nn.tflite_engine.TfliteEngine.add_q's constants:
    input zero points, multipliers, shifts, output zero point, multiplier, shift, clamp range)."""
    z1, m1, sh1, z2, m2, sh2, zo, mo, sho, lo, hi = q
    x = mbqm((a - z1) << ADD_LEFT_SHIFT, m1, sh1)
    y = mbqm((b - z2) << ADD_LEFT_SHIFT, m2, sh2)
    return (mbqm(x + y, mo, sho) + zo).clamp(lo, hi)
