"""The numba kernels of the TFLite fast path (nn.tflite_kernels) against the int64 reference:
the exact float64 MultiplyByQuantizedMultiplier on edge cases over the whole int32 range
(ties of both roundings, extreme multipliers, every shift), and the low-rank path serving
depthwise layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nn import tflite_kernels as K
from nn.tflite_ops import mbqm

DATA = Path(__file__).resolve().parent / "data" / "tflite"
I32 = (1 << 31) - 1


def _edge_values(rng: np.random.Generator) -> np.ndarray:
    """int32 accumulators: 0, +-2^k +- 1, both ends of the range, ties of the doubling high
    multiply with M = 2^30 (odd x) and of the divide by 2^e (x = 2 (j 2^e + 2^(e-1))), random."""
    v = [0, 1, -1, I32, -I32, -I32 - 1, I32 - 1]
    for k in range(31):
        v += [(1 << k) + d for d in (-1, 0, 1)] + [-(1 << k) + d for d in (-1, 0, 1)]
    for e in range(1, 31):
        for j in (-3, -1, 0, 1, 2):
            t = 2 * (j * (1 << e) + (1 << (e - 1)))
            if abs(t) <= I32:
                v += [t, t - 1, t + 1, -t]
    v += list(rng.integers(-(1 << 31), 1 << 31, 4000))
    v += list(rng.integers(-(1 << 16), 1 << 16, 4000))
    x = np.array(v, dtype=np.int64)
    return x[(x >= -(1 << 31)) & (x <= I32)]


def _f64(x: np.ndarray, m: int, s: int, single: bool) -> np.ndarray:
    p = K.mbqm_f64_params(np.array([m]), np.array([s]), single)
    assert p is not None
    out = np.empty((len(x), 1), dtype=np.float64)
    big = float(1 << 62)  # no clamping: compare the raw results
    K.requant_rows_f64(x.astype(np.float64)[:, None], np.zeros((1, 1)), 1, *p, 0.0, -big, big, single, out)
    return out[:, 0].astype(np.int64)


def test_mbqm_float64_equals_int64_reference_on_edge_cases() -> None:
    rng = np.random.default_rng(0)
    x = _edge_values(rng)
    xt = torch.from_numpy(x)
    mults = [0, 1 << 30, (1 << 30) + 1, I32, 1518500250] + [int(v) for v in rng.integers(1 << 30, 1 << 31, 2)]
    for m in mults:
        for s in range(-31, 1):  # double rounding: no left shift
            want = mbqm(xt, m, s).numpy()
            assert np.array_equal(_f64(x, m, s, False), want), (m, s)
        for s in range(-31, 15):  # single rounding: 31 - shift >= 17
            want = mbqm(xt, m, s, single=True).numpy()
            assert np.array_equal(_f64(x, m, s, True), want), (m, s, "single")
    # outside the exact float form: refused (the int64 kernels are used)
    assert K.mbqm_f64_params(np.array([1 << 30]), np.array([1]), False) is None
    assert K.mbqm_f64_params(np.array([1 << 30]), np.array([15]), True) is None


def test_int64_kernels_equal_torch_reference() -> None:
    """requant_rows (int64 form, left shifts included) against nn.tflite_ops."""
    rng = np.random.default_rng(1)
    acc = rng.integers(-(1 << 24), 1 << 24, (64, 6)).astype(np.float32)
    m = rng.integers(1 << 30, 1 << 31, 6).astype(np.int64)
    s = np.array([-12, -3, 0, 1, 3, -31], dtype=np.int64)
    corr = rng.integers(-1000, 1000, (8, 6)).astype(np.int64)
    for single in (False, True):
        out = np.empty((64, 6), dtype=np.float32)
        K.requant_rows(acc, corr, 8, m, s, 3, -128, 127, single, out)
        a = torch.from_numpy(acc.astype(np.int64) + np.tile(corr, (8, 1)))
        want = (mbqm(a, torch.from_numpy(m)[None], torch.from_numpy(s)[None], single=single) + 3).clamp(-128, 127)
        assert np.array_equal(out, want.numpy().astype(np.float32))


def test_add_table_and_pool_kernels_equal_torch_reference() -> None:
    """The numba backend's ADD (one 256 x 256 table built by the reference arithmetic, looked up
    by lookup2) and pool_nhwc (average and max, padded windows, strides) against the torch
    reference functions, over every pair of int8 codes and random tensors."""
    from nn.tflite_ops import add_int8
    from nn.tflite_pool import avgpool, maxpool, pool_fast

    q = (-5, 1518500250, -1, 7, 1173741824, 0, -3, 1695809536, -19, -128, 127)
    codes = np.arange(-128, 128, dtype=np.float32)
    a, b = np.repeat(codes, 256), np.tile(codes, 256)  # every pair
    codes_t = torch.arange(-128, 128, dtype=torch.int64)
    tab = add_int8(codes_t[:, None].expand(256, 256), codes_t[None, :].expand(256, 256), q)
    out = np.empty_like(a)
    K.lookup2(a, b, tab.reshape(-1).numpy().astype(np.float32), out)
    want = add_int8(torch.from_numpy(a).long(), torch.from_numpy(b).long(), q)
    assert np.array_equal(out, want.numpy().astype(np.float32))
    assert len(np.unique(out)) > 100  # a real rescaling, not a constant table
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.integers(-128, 128, (3, 5, 9, 7)).astype(np.float32)).contiguous(
        memory_format=torch.channels_last)
    for k, st, pad4, lohi in (([3, 3], [2, 2], [1, 1, 1, 1], (-128, 127)), ([2, 3], [1, 2], [0, 1, 1, 0], (-20, 90)),
                              ([9, 7], [1, 1], [0, 0, 0, 0], (-128, 127))):
        for op, ref in (("tfl_avgpool", avgpool), ("tfl_maxpool", maxpool)):
            n = {"op": op, "kernel": k, "stride": st, "pad4": pad4}
            got = pool_fast(x, n, lohi)
            want = ref(x.to(torch.int64), n).clamp(*lohi)
            assert got.shape == want.shape and torch.equal(got.to(torch.int64), want), (op, k, st, pad4)


def test_lowrank_path_serves_depthwise_layers() -> None:
    """Issue 12 item 3: with a low-rank LUT, depthwise layers run the low-rank grouped
    convolution (path lowrank) and equal the torch gather reference on every output code."""
    from nn.tflite_engine import TfliteEngine
    from nn.tflite_import import import_tflite
    from tests.nn_fixtures import lowrank_lut

    for name in ("dw_uint8_dequant", "dw_stride_pertensor"):
        b = import_tflite(DATA / f"{name}.tflite")
        x = np.random.default_rng(3).integers(0, 256, size=(3, *b.input_shape), dtype=np.uint8)
        luts = [lowrank_lut(2, 3)] * len(b.layers())
        e = TfliteEngine(b, luts, "numba", path="lowrank")
        got = e.run_all(x)
        ref = TfliteEngine(b, luts, "torch").run_all(x)
        for k, v in ref.items():
            assert torch.equal(got[k].to(torch.int64), v.to(torch.int64)), (name, k)
        kinds = e.describe()
        dw = [k for k, v in e.layers.items() if v.op == "tfl_dwconv"]
        assert dw and all("lowrank-depthwise" in kinds[k] for k in dw), kinds


def test_fused_path_on_conv_and_dense_layers() -> None:
    """A LUT whose products have a smaller factorisation than exact + error (activation
    truncated to a multiple of 4: product rank 1, error rank 1) runs conv and dense layers on
    the fused path (one channel set) and equals the torch gather reference on every tensor."""
    from hwsim.lut import Lut
    from nn.tflite_engine import TfliteEngine
    from nn.tflite_import import import_tflite

    a = np.arange(-128, 128, dtype=np.int64)
    lut = Lut("trunc4", np.multiply.outer(a & ~3, a).astype(np.int32), 8, 8, True)
    for name in ("conv_relu_pool", "residual_float_in"):
        b = import_tflite(DATA / f"{name}.tflite")
        x = np.random.default_rng(4).integers(0, 256, size=(3, *b.input_shape), dtype=np.uint8)
        luts = [lut] * len(b.layers())
        e = TfliteEngine(b, luts, "numba", path="fused")
        got = e.run_all(x)
        ref = TfliteEngine(b, luts, "torch").run_all(x)
        for k, v in ref.items():
            assert torch.equal(got[k].to(torch.int64), v.to(torch.int64)), (name, k)
        kinds = e.describe()
        assert all("fused S=1" in kinds[k] for k, v in e.layers.items() if v.op != "tfl_dwconv"), kinds
