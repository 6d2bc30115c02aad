"""Error metrics of a multiplier LUT and their comparison with a netlist header.

Definitions (all over every operand pair; e = LUT - exact product; n+m = total input bits;
these reproduce the EvoApproxLib headers of the 13 mul8s circuits to their printed digits):

* MAE  = mean |e|;             MAE% = MAE / 2^(n+m) * 100
* WCE  = max |e|;              WCE% = WCE / 2^(n+m) * 100
* EP%  = share of pairs with e != 0, in percent
* MRE% = mean over pairs whose exact product is non-zero of |e| / |exact| * 100
* WCRE% = max |e| / max(1, |exact|) * 100
* MSE  = mean e^2

One quirk of the headers: their MAE% is derived from MAE rounded to one decimal
(round half to even), e.g. mul8s_1KV8 has MAE 1.25 -> "1.2" and MAE% "0.0018" (1.2/2^16),
not 0.0019. :func:`compare_with_header` applies exactly that rounding for MAE%.
The absolute MAE line itself is printed with inconsistent rounding (mul8s_1KVQ prints "36"
for 36.54, mul8s_1L2L "150" for 149.78), so it is checked to within 1.0; every other figure
is checked to half a unit of its last printed digit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwsim.lut import Lut
from hwsim.netlist import Published

METRIC_KEYS = ["mae", "mae_pct", "wce", "wce_pct", "wcre_pct", "ep_pct", "mre_pct", "mse"]


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
        "wcre_pct": float((err / np.maximum(1, aexact)).max() * 100),
        "ep_pct": float(np.count_nonzero(err) / err.size * 100),
        "mre_pct": float((err[nz] / aexact[nz]).mean() * 100) if nz.any() else 0.0,
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
        measured = metrics[key]
        compared = measured
        if key == "mae_pct":
            compared = round(metrics["mae"], 1) / 2**bits_total * 100
        tol = pub.resolution() * (1 + 1e-9) + 1e-12
        if key == "mae":
            tol = max(tol, 1.0)
        out.append(MetricCheck(key, measured, pub.value, pub.text, compared, abs(compared - pub.value) <= tol))
    return out
