"""The float64 requantisation kernels (kernels_cpu.epilogue_f64, add_requant_f64) equal the int64
ones and the torch reference on whole tensors, at rounding ties, threshold neighbours and the
extremes of the int32 accumulator range, clamped and unclamped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nn import kernels_cpu, requant
from nn.requant import LayerQ, epilogue_numba, epilogue_torch


def _accs(rng, m0, rs, shape, const):
    """Accumulators (N, Co, P) int64: half of them at or next to a rounding tie of their
    channel, the rest spread over the whole int32 range (minus the constant)."""
    n, co, p = shape
    lim = 2**31 - 1 - int(np.abs(const).max())
    acc = np.empty(shape, np.int64)
    for c in range(co):
        k = rng.integers(-400, 400, (n, p)) + 0.5
        tie = np.round(k * 2.0 ** int(rs[c]) / int(m0[c])).astype(np.int64) + rng.integers(-2, 3, (n, p))
        wide = rng.integers(-lim, lim, (n, p))
        acc[:, c] = np.clip(np.where(rng.random((n, p)) < 0.5, tie, wide), -lim, lim)
    acc[0, 0, :2] = [-lim, lim]
    return acc - const[None, :, None]


@pytest.mark.parametrize("clamped", [True, False])
@pytest.mark.parametrize("groups,zc", [(1, 0), (2, 0), (1, -128)])
def test_epilogue_f64_is_exact(monkeypatch, clamped, groups, zc):
    rng = np.random.default_rng(groups * 10 - zc + clamped)
    co, n, p = 16, 3, 129
    for lo_rs in (17, 30, 50):  # shifts 17..62: the float64 kernel's whole domain
        rs = rng.integers(lo_rs, min(63, lo_rs + 13), co).astype(np.int64)
        m0 = rng.integers(2**30, 2**31, co).astype(np.int64)
        const = rng.integers(-5000, 5000, co).astype(np.int64)
        acc = _accs(rng, m0, rs, (n, co, p), const)
        sidx = rng.integers(0, 2**16, (n, p)).astype(np.int32)
        acc -= zc * sidx[:, None, :].astype(np.int64)
        parts = [acc // 2, acc - acc // 2] if groups == 2 else [acc]
        y = torch.from_numpy(np.stack(parts, 1).astype(np.int32))
        zo = -7
        lo, hi = (-128, 127) if clamped else (-2**40, 2**40)
        L = LayerQ("t", np.zeros((co, 1, 1, 1), np.int32), np.zeros(co, np.int64), m0, rs, 0, zo, lo, hi,
                   (1, 1), (0, 0), True)
        s = torch.from_numpy(sidx)
        ref = epilogue_torch(y, s, zc, L, const)
        monkeypatch.setattr(requant, "EPILOGUE_F64", True)
        f64 = epilogue_numba(y, s, zc, L, const)
        monkeypatch.setattr(requant, "EPILOGUE_F64", False)
        i64 = epilogue_numba(y, s, zc, L, const)
        assert torch.equal(f64, ref) and torch.equal(i64, ref)
        if not clamped:  # the comparison covered far more than the 256 output codes
            assert len(torch.unique(ref)) > 300


def test_add_requant_f64_is_exact():
    rng = np.random.default_rng(5)
    a = rng.integers(-255, 256, 200_000).astype(np.float32)
    b = rng.integers(-255, 256, 200_000).astype(np.float32)
    a[:4], b[:4] = [-255, 255, 0, 1], [255, -255, 0, 0]
    for ma, mb in [(1 << 20, 1 << 20), (123457, 987651), (3 << 20, 5 << 19), (2**31 - 1, 17)]:
        for lo, hi in [(-128, 127), (0, 200), (-2**40, 2**40)]:
            r64 = np.empty_like(a)
            rint = np.empty_like(a)
            kernels_cpu.add_requant_f64(a, b, float(ma), float(mb), float(1 << 19), 2.0**-20, float(lo), float(hi), r64)
            kernels_cpu.add_requant(a, b, 0, ma, 0, mb, 20, 0, lo, hi, rint)
            ref = np.clip((a.astype(np.int64) * ma + b.astype(np.int64) * mb + (1 << 19)) >> 20, lo, hi)
            assert np.array_equal(r64, ref.astype(np.float32)) and np.array_equal(rint, r64), (ma, mb, lo, hi)


def test_epilogue_f64_inplace_float32(monkeypatch):
    """The in-place form (float32 convolution output, one group) on exact float32 integers."""
    rng = np.random.default_rng(9)
    co, n, p = 16, 3, 257
    rs = rng.integers(17, 45, co).astype(np.int64)
    m0 = rng.integers(2**30, 2**31, co).astype(np.int64)
    const = rng.integers(-5000, 5000, co).astype(np.int64)
    acc = np.clip(_accs(rng, m0, rs, (n, co, p), const), -2**24 + 1, 2**24 - 1)
    L = LayerQ("t", np.zeros((co, 1, 1, 1), np.int32), np.zeros(co, np.int64), m0, rs, 0, 5, -2**40, 2**40,
               (1, 1), (0, 0), True)
    y = torch.from_numpy(acc.astype(np.float32)).reshape(n, 1, co, p)
    ref = epilogue_torch(y, None, 0, L, const)
    monkeypatch.setattr(requant, "EPILOGUE_F64", True)
    got = epilogue_numba(y.clone(), None, 0, L, const)
    assert torch.equal(got, ref) and len(torch.unique(ref)) > 300


def test_resnet_qnn_and_axnn_same_with_and_without_float64_requant(monkeypatch):
    """Whole ResNet8 logits (residual adds in place, in-place epilogues, float32 pooling) equal
    the int64 kernels' and the torch reference's."""
    from nn.engine import IntegerEngine
    from nn.models import build_model
    from nn.train import quantize_module
    from tests.nn_fixtures import lowrank_lut

    torch.manual_seed(4)
    x = np.random.default_rng(4).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    b = quantize_module(build_model("resnet8", 3, 10).eval(), x, arch="resnet8")
    real = kernels_cpu.add_requant_f64_inplace
    for luts in (None, [lowrank_lut(4, 2)] * len(b.layers())):
        ref = IntegerEngine(b, luts, "torch").logits(x)
        assert len(np.unique(ref)) > 10
        monkeypatch.setattr(requant, "EPILOGUE_F64", False)
        i64 = IntegerEngine(b, luts, "numba", path="lowrank").logits(x, batch=16)
        monkeypatch.setattr(requant, "EPILOGUE_F64", True)
        calls = []
        monkeypatch.setattr(kernels_cpu, "add_requant_f64_inplace", lambda *a: (calls.append(1), real(*a)))
        f64 = IntegerEngine(b, luts, "numba", path="lowrank").logits(x, batch=16)
        assert np.array_equal(i64, ref) and np.array_equal(f64, ref)
        assert len(calls) == 3 * 3  # the three residual adds of each of the 3 batches ran in place
