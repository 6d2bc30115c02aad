"""The AVX2 kernels (nn.kernels_avx2): the pmaddwd integer convolution of nn.tflite_fast.IntConv
and the gather lookup, each against an independent int64 reference over whole output tensors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nn import kernels_avx2, tflite_kernels
from nn.tflite_fast import ExactConv
from nn.tflite_intconv import IntConv, exact_mac
from nn.tflite_ops import mbqm

needs_avx2 = pytest.mark.skipif(not kernels_avx2.available(), reason="host without AVX2")


def _layer(rng: np.random.Generator, co: int, c: int, k: tuple[int, int], stride: tuple[int, int],
           pad4: list[int], za: int, zo: int, dense: bool = False, left_shift: bool = False) -> SimpleNamespace:
    """A conv (or dense) layer's integer parameters as nn.tflite_engine._Layer holds them."""
    w = rng.integers(-128, 128, (co, c, *k) if not dense else (co, c)).astype(np.int64)
    m = rng.integers(1 << 30, 1 << 31, co).astype(np.int64)
    shift = (rng.integers(-12, -6, co) if not left_shift else rng.integers(-2, 3, co)).astype(np.int64)
    return SimpleNamespace(name="L", op="tfl_fc" if dense else "tfl_conv", w=w, m=torch.from_numpy(m),
                           shift=torch.from_numpy(shift), bq=torch.from_numpy(rng.integers(-(1 << 20), 1 << 20, co)),
                           za=za, zo=zo, lo=-128, hi=127, single=dense, groups=1,
                           stride=(1, 1) if dense else stride, pad4=[0, 0, 0, 0] if dense else pad4)


def _reference(L: SimpleNamespace, x: np.ndarray) -> np.ndarray:
    """int64 convolution of the centred codes (padding = the zero point), TFLite requantisation:
    x (N, C, H, W) codes -> (N, Co, H', W') codes, or (N, C) -> (N, Co) for a dense layer."""
    w = L.w.reshape(L.w.shape[0], -1, 1, 1) if L.op == "tfl_fc" else L.w
    x4 = x.reshape(x.shape[0], -1, 1, 1) if L.op == "tfl_fc" else x
    t, b, l, r = L.pad4
    xc = np.pad(x4.astype(np.int64) - L.za, ((0, 0), (0, 0), (t, b), (l, r)))
    co, _, kh, kw = w.shape
    sh, sw = L.stride
    ho, wo = (xc.shape[2] - kh) // sh + 1, (xc.shape[3] - kw) // sw + 1
    acc = np.zeros((x.shape[0], co, ho, wo), dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            win = xc[:, :, dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw]
            acc += np.einsum("nchw,oc->nohw", win, w[:, :, dy, dx])
    acc += L.bq.numpy()[None, :, None, None]
    q = (mbqm(torch.from_numpy(acc), L.m[None, :, None, None], L.shift[None, :, None, None], single=L.single)
         + L.zo).clamp(L.lo, L.hi).numpy()
    return q.reshape(x.shape[0], co) if L.op == "tfl_fc" else q


CASES = [  # (Co, C, kernel, stride, pad4, za, zo)
    (16, 16, (3, 3), (1, 1), [1, 1, 1, 1], -128, -3),  # the MLPerf ResNet8 body
    (16, 3, (3, 3), (1, 1), [1, 1, 1, 1], 5, 0),  # odd channel count: a zero channel pairs it
    (32, 16, (3, 3), (2, 2), [0, 1, 0, 1], -17, 9),  # stride 2, TFLite SAME on an even size
    (10, 7, (2, 3), (1, 2), [1, 0, 2, 1], 127, -128),  # Co not a multiple of 16, uneven padding
    (40, 5, (1, 1), (2, 2), [0, 0, 0, 0], -128, 4),  # 1x1 shortcut, three column blocks
    (24, 2, (5, 5), (1, 1), [2, 2, 2, 2], 0, 0),  # kernel wider than the 4-pixel group
]


@needs_avx2
@pytest.mark.parametrize("case", CASES)
def test_int_conv_equals_int64_reference(case: tuple) -> None:
    co, c, k, stride, pad4, za, zo = case
    rng = np.random.default_rng(co * 31 + c)
    L = _layer(rng, co, c, k, stride, pad4, za, zo)
    for h, w in ((9, 13), (4, 4)):  # odd sizes: partial 4-pixel groups
        x = rng.integers(-128, 128, (3, c, h, w)).astype(np.float32)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        got = IntConv(L)(xt).numpy()
        want = _reference(L, x)
        assert got.shape == want.shape and np.array_equal(got, want), (case, h, w)
        assert np.array_equal(ExactConv(L)(xt).numpy(), want)  # the float path agrees as well


@needs_avx2
def test_int_conv_dense_and_int64_epilogue() -> None:
    """A dense layer (a 1x1 convolution over the batch; odd K) and the int64 requantisation
    (left shifts rule the exact float64 form out) equal the reference on every output."""
    rng = np.random.default_rng(5)
    for L in (_layer(rng, 10, 65, (1, 1), (1, 1), [0] * 4, 3, -2, dense=True),
              _layer(rng, 18, 6, (3, 3), (1, 1), [1, 1, 1, 1], -60, 0, left_shift=True)):
        shape = (37, 65) if L.op == "tfl_fc" else (2, 6, 7, 5)
        x = rng.integers(-128, 128, shape).astype(np.float32)
        xt = torch.from_numpy(x)
        if xt.dim() == 4:
            xt = xt.contiguous(memory_format=torch.channels_last)
        ic = IntConv(L)
        assert (ic.f64 is None) == (L.op != "tfl_fc")
        assert np.array_equal(ic(xt).numpy(), _reference(L, x))


def test_exact_mac_falls_back_to_the_float_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    L = _layer(rng, 16, 16, (3, 3), (1, 1), [1, 1, 1, 1], 0, 0)
    monkeypatch.setattr(kernels_avx2, "available", lambda: False)
    assert isinstance(exact_mac(L), ExactConv)
    monkeypatch.setattr(kernels_avx2, "available", lambda: True)
    L.groups = 2  # grouped: no int conv form
    assert isinstance(exact_mac(L), ExactConv)


@needs_avx2
def test_gather_lookup_equals_scalar_lookup() -> None:
    """Every pair of codes, in a length with a remainder past the blocks of 8 and 4096."""
    rng = np.random.default_rng(7)
    tab = rng.standard_normal(65536).astype(np.float32)
    codes = np.arange(-128, 128, dtype=np.float32)
    a = np.concatenate([np.repeat(codes, 256), rng.integers(-128, 128, 4101).astype(np.float32)])
    b = np.concatenate([np.tile(codes, 256), rng.integers(-128, 128, 4101).astype(np.float32)])
    want, got = np.empty_like(a), np.empty_like(a)
    tflite_kernels.lookup2(a, b, tab, want)
    kernels_avx2.lookup2(a, b, tab, got)
    assert np.array_equal(got, want)
    assert np.array_equal(want[:65536], tab)  # every entry reached once, in order


@needs_avx2
def test_int32_vector_requantisation_on_edge_cases() -> None:
    """_requant8 (the QNN's vector epilogue) against nn.tflite_ops.mbqm (double rounding) on
    accumulators at the int32 edges, ties, zero and extreme multipliers, shifts 0 .. -31."""
    from numba import njit

    @njit
    def run(acc, q, out, zo, lo, hi):  # pragma: no cover - jitted
        kernels_avx2._requant8(acc.ctypes.data, q.ctypes.data, acc.size, out.ctypes.data, acc.size // 8,
                               np.int32(zo), np.int32(lo), np.int32(hi), out.ctypes.data, out.ctypes.data)

    rng = np.random.default_rng(8)
    n = 8 * 512
    acc = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
    acc[:64] = [-(1 << 31), (1 << 31) - 1, 0, 1, -1, 1 << 30, -(1 << 30), 12345] * 8
    bias = rng.integers(-1000, 1000, n)
    acc = np.clip(acc, -(1 << 31) - bias, (1 << 31) - 1 - bias)  # acc + bias stays int32, as the bound ensures
    m = rng.integers(0, 1 << 31, n)
    m[::97] = 0
    m[1::89] = (1 << 31) - 1
    m[2::61] = 1 << 30
    shift = -rng.integers(0, 32, n)
    shift[::5] = 0
    shift[1::7] = -31
    for zo, lo, hi in ((0, -(1 << 31), (1 << 31) - 1), (-3, -128, 127)):
        q = np.ascontiguousarray(np.stack([bias, m, -shift]).astype(np.int32))
        out = np.empty(n, dtype=np.float32)
        run(acc.astype(np.int32), q, out, zo, lo, hi)
        want = (mbqm(torch.from_numpy(acc + bias), torch.from_numpy(m), torch.from_numpy(shift)) + zo).clamp(lo, hi)
        # both sides through float32 (the kernel's output type; exact for the clamped codes)
        assert np.array_equal(out, want.numpy().astype(np.float32)), (zo, lo, hi)
    assert len(np.unique(out)) > 50


@needs_avx2
def test_fused_add_equals_layer_then_lookup() -> None:
    """IntConv(x, add=(table, other)) equals the layer's codes looked up with the other operand,
    over the whole tensor (the ADD fused into the int32 vector epilogue)."""
    rng = np.random.default_rng(9)
    L = _layer(rng, 32, 16, (3, 3), (1, 1), [1, 1, 1, 1], -128, -5)
    ic = IntConv(L)
    assert ic.fuses_add
    x = torch.from_numpy(rng.integers(-128, 128, (3, 16, 6, 9)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    other = torch.from_numpy(rng.integers(-128, 128, (3, 32, 6, 9)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    tab = rng.integers(-128, 128, 65536).astype(np.float32)
    plain = ic(x)
    want = np.empty(plain.numel(), dtype=np.float32)
    tflite_kernels.lookup2(plain.permute(0, 2, 3, 1).reshape(-1).numpy(), other.permute(0, 2, 3, 1).reshape(-1).numpy(),
                           tab, want)
    got = ic(x, add=(tab, other))
    assert np.array_equal(got.permute(0, 2, 3, 1).reshape(-1).numpy(), want)
    with pytest.raises(ValueError):
        IntConv(_layer(rng, 10, 4, (3, 3), (1, 1), [1, 1, 1, 1], 0, 0))(x[:, :4], add=(tab, other))


@needs_avx2
def test_engine_fuses_resnet_adds_and_keeps_logits() -> None:
    """On the MLPerf ResNet8 the numba engine fuses its three residual ADDs into the layers before
    them and its logits still equal the torch reference (tensors() runs unfused: every node)."""
    from nn.tflite_engine import TfliteEngine
    from nn.tflite_import import import_tflite
    from tests.hwsim_util import REPO

    path = REPO.parent / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet_quant.tflite"
    if not path.exists():
        pytest.skip("../shared/models absent")
    bundle = import_tflite(path)
    fast, ref = TfliteEngine(bundle, backend="numba"), TfliteEngine(bundle, backend="torch")
    assert sorted(a for a, _, _ in fast.fused.values()) == ["003_add", "007_add", "011_add"]
    x = np.random.default_rng(10).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    assert np.array_equal(fast.logits(x, batch=16), ref.logits(x, batch=16))
    assert set(fast.tensors(x[:2])) == set(ref.tensors(x[:2]))


@needs_avx2
@pytest.mark.parametrize("signed", [True, False])
def test_int_lowrank_and_fused_forms_equal_float_forms(signed: bool) -> None:
    """IntConv on a LUT's low-rank form (operands code - za and the U tables, weights w and V[w])
    and on the whole product table's factorisation (fused) give the same output codes as the
    float convolutions of nn.tflite_fast (LowRankConv) over whole tensors: conv with padding and
    stride, and dense."""
    from hwsim.lut import Lut
    from nn.lut_forms import fused_factor, lut_factor
    from nn.tflite_fast import LowRankConv
    from tests.nn_fixtures import lowrank_lut

    a = np.arange(-128, 128, dtype=np.int64)
    idx = a if signed else a + 128
    trunc = Lut("trunc4", np.multiply.outer(idx & ~3, idx).astype(np.int32), 8, 8, signed)
    rng = np.random.default_rng(11)
    layers = [_layer(rng, 16, 6, (3, 3), (2, 2), [0, 1, 0, 1], -20, 3),
              _layer(rng, 12, 33, (1, 1), (1, 1), [0] * 4, 5, -1, dense=True)]
    for L in layers:
        shape = (5, 33) if L.op == "tfl_fc" else (2, 6, 9, 8)
        x = torch.from_numpy(rng.integers(-128, 128, shape).astype(np.float32))
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for lut, whole in ((lowrank_lut(3, 2, signed), False), (trunc, True)):
            f = fused_factor(lut, 8) if whole else lut_factor(lut, 8)
            if f is None and whole and not signed:
                continue  # nn.lut_forms offers no fused form for this unsigned table
            assert f is not None and f.rank >= 1
            want = LowRankConv(L, f, whole=whole, signed=signed)(x)
            ic = IntConv(L, f, whole=whole, signed=signed)
            assert ("fused" if whole else "lowrank") in ic.kind and "int16" in ic.kind
            assert torch.equal(ic(x), want), (L.op, lut.name)
