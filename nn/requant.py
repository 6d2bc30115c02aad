"""A conv/dense layer's integer parameters and its requantisation (the epilogue of its MAC).

    out = clamp(zo + round(acc * M[co]), lo, 127),  M = M0 * 2^-rs (fixed point)

``requant_multiplier`` turns the real multipliers s_in * s_w[co] / s_out into (M0, rs);
``LayerQ`` holds a layer's integer parameters (``layer_q`` reads them from a bundle).
``epilogue_torch`` (reference, int64) and ``epilogue_numba`` (kernels_cpu; exact float64 where
the shifts allow and ``EPILOGUE_F64`` is set, else int64) take a MAC's output (nn.mac): partial
sums y (N, G, Co, P), operand-index sums sidx (N, P) or None with their weight ``zc``, and the
per-channel constant (Co,) int64; they return centred output codes (code - zo), float32
(N, Co, P). Every form gives the same codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hwsim.errors import AxlabError
from nn.bundle import ModelBundle

# numba: requantise in exact float64 arithmetic (vectorised) where the bounds allow; also read by
# nn.engine's residual adds
EPILOGUE_F64 = True


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


def layer_q(bundle: ModelBundle, node: dict[str, Any]) -> LayerQ:
    """The integer parameters of conv/linear ``node`` of the bundle's graph (dense as 1x1)."""
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
    """The same requantisation by the kernels_cpu kernels (the numba and cuda backends)."""
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
