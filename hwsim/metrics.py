"""Error metrics of a multiplier LUT and their comparison with a netlist header.

Definitions (all over every operand pair; e = LUT - exact product; n+m = total input bits;
these reproduce the EvoApproxLib headers of the 13 mul8s circuits to their printed digits):

* MAE  = mean |e|;             MAE% = MAE / 2^(n+m) * 100
* WCE  = max |e|;              WCE% = WCE / 2^(n+m) * 100
* EP%  = share of pairs with e != 0, in percent
* MRE% = mean over pairs whose exact product is non-zero of |e| / |exact| * 100
* WCRE% = max over pairs whose exact product is non-zero of |e| / |exact| * 100 (mul8u_2AC:
  3100 published; counting 32 x 0 -> 36 as 36/max(1, 0) would give 3600)
* MSE  = mean e^2
* MRE% of older headers (EvoApprox8b style, ``// MRE = 4.36 %``) = mean over *all* pairs of
  |e| / max(1, |exact|) * 100 (key ``mre_all_pct``): reproduces mul8_001, mul8_090, mul8_129,
  where the current definition (non-zero products only) gives 5.40/8.30/4.40 instead of the
  published 5.36/8.24/4.36. Their WCRE likewise uses ``wcre_all_pct`` = max |e| / max(1, |exact|);
  none of the older files at hand errs on a zero product, so that choice is not confirmed.

One quirk of the headers: their MAE% is derived from MAE rounded to one decimal
(round half to even), e.g. mul8s_1KV8 has MAE 1.25 -> "1.2" and MAE% "0.0018" (1.2/2^16),
not 0.0019. :func:`compare_with_header` applies exactly that rounding for MAE%.
The absolute MAE line itself is printed with inconsistent rounding (mul8s_1KVQ prints "36"
for 36.54, mul8s_1L2L "150" for 149.78), so it is checked to within 1.0; every other figure
is checked to half a unit of its last printed digit.

Older headers (:attr:`hwsim.netlist.Published.legacy`) print figures already rounded once and
reprinted with ``%f`` ("4.360000", "44132.106440" for 44132.1064453): they are checked to one
unit of their last significant digit (trailing zeros dropped), and MRE%/WCRE% use
``mre_all_pct``/``wcre_all_pct``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwsim.lut import Lut
from hwsim.netlist import Published

METRIC_KEYS = ["mae", "mae_pct", "wce", "wce_pct", "wcre_pct", "ep_pct", "mre_pct", "mse"]
_LEGACY_METRIC = {"mre_pct": "mre_all_pct", "wcre_pct": "wcre_all_pct"}  # header key -> measured key when the header is legacy


def error_metrics(lut: Lut) -> dict[str, float]:
    """The metrics above, as plain floats, computed on the whole LUT."""
    exact = lut.values_a()[:, None] * lut.values_b()[None, :]
    err = np.abs(lut.table.astype(np.int64) - exact)
    aexact = np.abs(exact)
    span = float(2 ** (lut.bits_a + lut.bits_b))
    nz = aexact > 0
    mae = float(err.mean())
    wce = float(err.max())
    return {
        "mae": mae,
        "mae_pct": mae / span * 100,
        "wce": wce,
        "wce_pct": wce / span * 100,
        "wcre_pct": float((err[nz] / aexact[nz]).max() * 100) if nz.any() else 0.0,
        "wcre_all_pct": float((err / np.maximum(1, aexact)).max() * 100),
        "ep_pct": float(np.count_nonzero(err) / err.size * 100),
        "mre_pct": float((err[nz] / aexact[nz]).mean() * 100) if nz.any() else 0.0,
        "mre_all_pct": float((err / np.maximum(1, aexact)).mean() * 100),
        "mse": float((err.astype(np.float64) ** 2).mean()),
    }


@dataclass
class MetricCheck:
    key: str
    measured: float
    published: float
    published_text: str
    compared: float  # the measured value in the header's convention
    ok: bool


def compare_with_header(metrics: dict[str, float], published: dict[str, Published],
                        bits_total: int) -> list[MetricCheck]:
    """Each published error metric against the measured one, to the header's printed precision."""
    out = []
    for key in METRIC_KEYS:
        pub = published.get(key)
        if pub is None:
            continue
        legacy = getattr(pub, "legacy", False)
        measured = metrics[_LEGACY_METRIC.get(key, key) if legacy else key]
        compared = measured
        if key == "mae_pct" and not legacy:
            compared = round(metrics["mae"], 1) / 2**bits_total * 100
        tol = pub.resolution() * (2 if legacy else 1) * (1 + 1e-9) + 1e-12
        if key == "mae" and not legacy:
            tol = max(tol, 1.0)
        out.append(MetricCheck(key, measured, pub.value, pub.text, compared, abs(compared - pub.value) <= tol))
    return out
