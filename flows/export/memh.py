"""``$readmemh`` ROM contents: weights (P lanes per word) and per-channel requantisation
parameters of a conv/dense layer."""
from __future__ import annotations

from typing import Any

import numpy as np

from hwsim.errors import AxlabError


def weights_memh(L: Any, p: int) -> tuple[str, int]:
    """Weight ROM text: word g*K + k holds lanes l = 0..P-1 (co = g*P + l) as bytes, lane 0 lowest."""
    co = L.w.shape[0]
    k = int(np.prod(L.w.shape[1:]))
    ng = -(-co // p)
    w = np.zeros((ng * p, k), dtype=np.int64)
    w[:co] = L.w.reshape(co, k)
    w = (w & 0xFF).reshape(ng, p, k).transpose(0, 2, 1)[:, :, ::-1]  # (G, K, lanes high..low)
    lines = ["".join(f"{int(b):02x}" for b in row) for row in w.reshape(ng * k, p)]
    return "\n".join(lines) + "\n", ng * k


def params_memh(L: Any, const: np.ndarray, p: int) -> tuple[str, int]:
    """Parameter ROM text: per output channel {rs[7:0], m0[31:0], const[31:0]} (72 bits)."""
    co = L.w.shape[0]
    n = -(-co // p) * p
    lines = []
    for c in range(n):
        if c < co:
            rs, m0, k = int(L.rs[c]), int(L.m0[c]), int(const[c])
            if not (1 <= rs <= 62 and 0 < m0 < 2**31 and -2**31 <= k < 2**31):
                raise AxlabError(f"layer {L.name} channel {c}: parameters out of range (rs {rs}, m0 {m0}, const {k})")
            lines.append(f"{rs:02x}{m0:08x}{k & 0xFFFFFFFF:08x}")
        else:
            lines.append("0" * 18)
    return "\n".join(lines) + "\n", n



def tfl_params_memh(L: Any, const: np.ndarray, p: int) -> tuple[str, int]:
    """Parameter ROM text of an imported TFLite layer: per output channel
    {shift[7:0] (two's complement, in [-31, 30]), M[31:0] (in [0, 2^31)), const[31:0]} (72 bits),
    the operands of axlab_tfl_requant."""
    co = L.w.shape[0]
    n = -(-co // p) * p
    lines = []
    for c in range(n):
        if c < co:
            sh, m, k = int(L.shift[c]), int(L.m[c]), int(const[c])
            if not (-31 <= sh <= 30 and 0 <= m < 2**31 and -2**31 <= k < 2**31):
                raise AxlabError(f"layer {L.name} channel {c}: parameters out of range (shift {sh}, multiplier {m}, "
                                 f"const {k})")
            lines.append(f"{sh & 0xFF:02x}{m:08x}{k & 0xFFFFFFFF:08x}")
        else:
            lines.append("0" * 18)
    return "\n".join(lines) + "\n", n
