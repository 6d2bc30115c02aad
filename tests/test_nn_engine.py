"""QNN / AxNN engine: agreement with fake quant, exactness, bit-identical backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_lut
from nn.api import fq_agreement, load_implementation
from nn.engine import IntegerEngine
from nn.lowrank import integer_factor
from nn.lut_forms import lut_factor
from nn.mac import ConvMac, NumbaGather
from nn.quant import GraphModule
from nn.requant import requant_multiplier
from tests.nn_fixtures import digits_test, fullrank_lut, lowrank_lut, minnet_qat, resnet8_ptq


def _fq_codes(bundle, x):
    fq = GraphModule(bundle.qat_graph(), "fq", qparams=bundle.qparams).double().eval()
    with torch.no_grad():
        f = fq(torch.from_numpy(x).double() / 255.0).numpy()
    s, zp = bundle.qparams.act[bundle.graph.output]
    return np.clip(np.round(f / s) + zp, -128, 127)


def test_qnn_agrees_with_fake_quant():
    b = minnet_qat()  # a real (short) QAT training run
    x, y = digits_test()
    q = IntegerEngine(b).logits(x)
    f = _fq_codes(b, x)
    agree = float((q.argmax(1) == f.argmax(1)).mean())
    assert agree >= 0.995, agree
    # the public helper (printed by `axlab train` and `axlab eval --impl q --agreement`)
    a = fq_agreement(b, x)
    assert a["top1"] == pytest.approx(agree) and a["top1"] >= 0.995 and a["codes"] >= 0.99, a
    assert (q.argmax(1) == y).mean() > 0.8  # the model did learn something
    # and the integer codes themselves are (nearly) the fake-quant codes
    assert np.mean(q != f) < 0.01


def test_qnn_agrees_with_fake_quant_resnet():
    b = resnet8_ptq()
    x, _ = digits_test()
    q = IntegerEngine(b).logits(x[:100])
    f = _fq_codes(b, x[:100])
    assert np.unique(q).size > 10  # not a degenerate (saturated) network
    assert np.abs(q - f).max() <= 2 and np.mean(q != f) < 0.05


@pytest.mark.parametrize("signed", [True, False])
def test_exact_lut_equals_qnn_every_backend(signed):
    b = minnet_qat()
    x, _ = digits_test()
    x = x[:24]
    q = IntegerEngine(b).logits(x)
    lut = exact_lut(8, signed)
    for backend, lowrank in [("torch", True), ("numba", False), ("numba", True)]:
        a = IntegerEngine(b, [lut] * 4, backend, lowrank=lowrank).logits(x)
        assert np.array_equal(a, q), (backend, lowrank)


def _saturating_unsigned() -> Lut:
    """Unsigned, full rank, products up to the largest uint8 x uint8 values (accumulator bounds)."""
    a = np.arange(256, dtype=np.int64)
    t = np.maximum(np.multiply.outer(a, a) - (np.multiply.outer(a, a) & 0xFF) + (a[:, None] ^ a[None, :]), 0)
    return Lut("trunc_xor_u", t.astype(np.int32), 8, 8, False)


def _luts():
    return [lowrank_lut(1, 1), lowrank_lut(2, 3), lowrank_lut(3, 2, signed=False), fullrank_lut(4),
            fullrank_lut(5, signed=False), lowrank_lut(6, 6, scale=40), lowrank_lut(7, 8, signed=False, scale=3),
            _saturating_unsigned()]


@pytest.mark.parametrize("lut", _luts(), ids=lambda l: l.name)
def test_backends_bit_identical_minnet(lut):
    b = minnet_qat()
    x, _ = digits_test()
    x = x[:16]
    ref = IntegerEngine(b, [lut] * 4, "torch").logits(x)
    gat = IntegerEngine(b, [lut] * 4, "numba", lowrank=False)
    assert all(isinstance(m, NumbaGather) for m in gat.macs.values())
    assert np.array_equal(gat.logits(x), ref)
    fast = IntegerEngine(b, [lut] * 4, "numba")
    assert np.array_equal(fast.logits(x), ref)
    if lut.name.startswith(("lowrank1_", "lowrank2_", "lowrank3_")):
        assert all(isinstance(m, ConvMac) for m in fast.macs.values())


def test_backends_bit_identical_resnet_mixed_design():
    b = resnet8_ptq()
    x, _ = digits_test()
    x = x[:8]
    layers = b.layers()
    pool = _luts() + [exact_lut(8, True)]
    luts = [pool[i % len(pool)] for i in range(len(layers))]
    ref = IntegerEngine(b, luts, "torch").logits(x)
    assert np.array_equal(IntegerEngine(b, luts, "numba", lowrank=False).logits(x), ref)
    assert np.array_equal(IntegerEngine(b, luts, "numba").logits(x), ref)
    # an approximate design really changes the output relative to the QNN
    assert not np.array_equal(ref, IntegerEngine(b).logits(x))


def test_integer_factor_exact_and_limits():
    rng = np.random.default_rng(0)
    for r in (1, 2, 4):
        E = rng.integers(-9, 10, (256, r)) @ rng.integers(-9, 10, (r, 256))
        f = integer_factor(E)
        assert f is not None and f.rank == np.linalg.matrix_rank(E.astype(float))
        assert np.array_equal(f.U @ f.V, E)
    assert integer_factor(np.zeros((256, 256), np.int64)).rank == 0
    assert integer_factor(rng.integers(-5, 6, (256, 256)), max_rank=16) is None
    assert lut_factor(fullrank_lut(1)) is None
    f = lut_factor(lowrank_lut(1, 3))
    assert f is not None and f.rank == 3


def test_balance_keeps_the_product_and_shrinks_near_parallel_terms():
    from nn.lowrank import LowRank, _cost, balance

    a = np.arange(256, dtype=np.int64) - 128
    # the shape integer_factor returns for truncation-like tables: two near-parallel columns
    U = np.stack([a // 2, 16 * a, 16 * a - (a // 8)], axis=1)
    rng = np.random.default_rng(5)
    V = np.concatenate([rng.integers(-760, 761, (1, 256)), rng.integers(-8, 9, (2, 256))])
    f = balance(LowRank(U, V))
    assert np.array_equal(f.U @ f.V, U @ V)  # the whole table, exactly
    assert _cost(f.U, f.V) < 0.7 * _cost(U, V) and np.abs(f.U).max() <= 16
    g = balance(f)  # a balanced factorisation is a fixed point (no step lowers the cost)
    assert np.array_equal(g.U, f.U) and np.array_equal(g.V, f.V)


def test_requant_multiplier():
    m = np.array([0.5, 0.123456, 1e-4, 0.99999999999])
    m0, rs = requant_multiplier(m)
    assert np.all((m0 >= 2**30) & (m0 < 2**31))
    assert np.allclose(m0 / 2.0**rs, m, rtol=1e-9)


def test_bad_lut_shape_and_count():
    b = minnet_qat()
    small = Lut("m4", np.zeros((16, 16), np.int32), 4, 4, True)
    with pytest.raises(AxlabError, match="256x256"):
        IntegerEngine(b, [small] * 4, "numba")
    with pytest.raises(AxlabError, match="model has 4 approximable layers"):
        IntegerEngine(b, [exact_lut()] * 3, "numba")
    with pytest.raises(AxlabError, match="unknown backend"):
        IntegerEngine(b, None, "tpu")
    # signedness mismatch: unsigned products labelled signed (and the reverse)
    from hwsim.lut import exact_table
    mislabelled = Lut("u_as_s", exact_table(8, 8, False), 8, 8, True)
    with pytest.raises(AxlabError, match="signedness mismatch"):
        IntegerEngine(b, [mislabelled] * 4, "torch")
    with pytest.raises(AxlabError, match="signedness mismatch"):
        IntegerEngine(b, [Lut("s_as_u", exact_table(8, 8, True), 8, 8, False)] * 4, "numba")


def test_overflowing_lut_is_refused():
    b = minnet_qat()
    huge = Lut("huge", np.full((256, 256), 2**30, np.int32), 8, 8, True)
    with pytest.raises(AxlabError, match="overflow"):
        IntegerEngine(b, [huge] * 4, "numba", lowrank=False)


def test_implementation_api():
    b = minnet_qat()
    x, y = digits_test()
    x = x[:32]
    fp = load_implementation(b, "fp")
    assert fp.logits(x).dtype == np.float32 and fp.name == "fp"
    q = load_implementation(b, "q", backend="numba")
    lq = q.logits(x)
    assert lq.dtype == np.int32 and lq.shape == (32, 10)
    p = q.predict_proba(x)
    assert p.dtype == np.float64 and np.allclose(p.sum(1), 1)
    assert np.array_equal(p.argmax(1), lq.argmax(1))
    ax = load_implementation(b, "ax", multiplier="exact8u", backend="torch")
    assert ax.name == "ax:exact8u" and np.array_equal(ax.logits(x), lq)
    # surrogates: differentiable, and the fq surrogate follows the integer model
    xs = torch.from_numpy(x).float().div(255).requires_grad_(True)
    out = q.surrogate()(xs)
    out.sum().backward()
    assert xs.grad is not None and torch.isfinite(xs.grad).all() and xs.grad.abs().sum() > 0
    assert (out.detach().numpy().argmax(1) == lq.argmax(1)).mean() >= 0.95
    with pytest.raises(AxlabError):
        load_implementation(b, "ax")
    with pytest.raises(AxlabError):
        load_implementation(b, "q", multiplier="exact")
    with pytest.raises(AxlabError, match="uint8"):
        q.logits(x.astype(np.float32))


@pytest.mark.parametrize("min_pixels", [0, 10**9], ids=["table-kernel", "lut-kernel"])
def test_numba_gather_kernels_identical(monkeypatch, min_pixels):
    """Both numba gather kernels (expanded per-layer tables / scalar LUT lookups) in every
    layer, signed and unsigned full-rank LUTs, padded and strided convolutions."""
    monkeypatch.setattr(NumbaGather, "min_pixels_tab", min_pixels)
    b = resnet8_ptq()
    x, _ = digits_test()
    x = x[:3]
    for lut in (fullrank_lut(11), fullrank_lut(12, signed=False)):
        luts = [lut] * len(b.layers())
        eng = IntegerEngine(b, luts, "numba", lowrank=False)
        out = eng.logits(x)
        want = "tab" if min_pixels == 0 else "lut"
        assert {m.last_kernel for m in eng.macs.values()} == {want}
        assert np.array_equal(out, IntegerEngine(b, luts, "torch").logits(x)), lut.name
