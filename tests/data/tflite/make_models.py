"""Write the small full-integer int8 TFLite test models of tests/data/tflite/ (no TensorFlow).

Usage: ``python tests/data/tflite/make_models.py [--out DIR]`` (default: this folder).

Each good model is described once, as a float graph whose weights are drawn from a fixed
seed; the script runs that float graph in numpy on seeded random inputs, takes every
activation tensor's quantisation parameters from the float range it observed (min/max with
0 included, 255 steps, as a post-training calibrator does), quantises the weights (int8,
symmetric, per output channel or per tensor), the biases (int32, scale = input scale x
weight scale) and serialises the quantised graph as a TFLite flatbuffer (tflite_writer.py,
on the PyPI ``flatbuffers`` Builder). Output is byte-for-byte deterministic. It also writes
the bad inputs (truncated, float, unsupported operators, damaged tables; see README.md).

``build_models()`` returns the models (bytes plus the float graph) for tests:
``BuiltModel.float_forward(x)`` is the float reference computation (dequantised weights and
biases, float activations) that a quantised run should roughly agree with.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:       # the sibling writer module, also when loaded by path
    sys.path.insert(0, str(HERE))
from tflite_writer import (  # noqa: E402
    ACT_NONE, ACT_RELU, ACT_RELU6, FLOAT32, INT8, INT32, OPT_ADD, OPT_CONV, OPT_DEQUANTIZE,
    OPT_DWCONV, OPT_FC, OPT_NONE, OPT_PAD, OPT_POOL, OPT_QUANTIZE, OPT_REDUCER, OPT_RESHAPE,
    OPT_SOFTMAX, SAME, UINT8, VALID, NP_TYPE, Op, Tensor, serialize)

SEED = 20261201
CALIBRATION_IMAGES = 64

# --- float operators (NHWC, batch first; the numpy reference of each TFLite op) -----------
def _same_pads(size: int, k: int, stride: int) -> tuple[int, int, int]:
    """TFLite SAME padding: (output size, pad before, pad after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2, total - total // 2


def _pad_hw(x: np.ndarray, k: tuple[int, int], stride: int, padding: int,
            value: float = 0.0) -> np.ndarray:
    if padding == VALID:
        return x
    _, ph0, ph1 = _same_pads(x.shape[1], k[0], stride)
    _, pw0, pw1 = _same_pads(x.shape[2], k[1], stride)
    return np.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], stride: int) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) view of the stride-`stride` windows of a padded NHWC tensor."""
    w = np.lib.stride_tricks.sliding_window_view(x, k, axis=(1, 2))
    return w[:, ::stride, ::stride]


def _activate(y: np.ndarray, act: int) -> np.ndarray:
    if act == ACT_RELU:
        return np.maximum(y, 0.0)
    if act == ACT_RELU6:
        return np.clip(y, 0.0, 6.0)
    return y


def f_conv(x, w, b, stride, padding, act):
    """x (N,H,W,Cin), w (Cout,KH,KW,Cin), b (Cout,) -> (N,OH,OW,Cout)."""
    win = _windows(_pad_hw(x, w.shape[1:3], stride, padding), w.shape[1:3], stride)
    return _activate(np.einsum("nhwcij,oijc->nhwo", win, w) + b, act)


def f_dwconv(x, w, b, stride, padding, act, multiplier):
    """x (N,H,W,C), w (1,KH,KW,C*M) (channel c*M+m reads input channel c) -> (N,OH,OW,C*M)."""
    win = _windows(_pad_hw(x, w.shape[1:3], stride, padding), w.shape[1:3], stride)
    c = x.shape[3]
    wk = w[0].reshape(w.shape[1], w.shape[2], c, multiplier)
    y = np.einsum("nhwcij,ijcm->nhwcm", win, wk).reshape(*win.shape[:3], c * multiplier)
    return _activate(y + b, act)


def f_fc(x, w, b, act):
    """x (N,In), w (Out,In), b (Out,) -> (N,Out)."""
    return _activate(x @ w.T + b, act)


def f_maxpool(x, k, stride, padding):
    win = _windows(_pad_hw(x, k, stride, padding, -np.inf), k, stride)
    return win.max(axis=(4, 5))


def f_avgpool(x, k, stride, padding):
    """Average over the valid (unpadded) elements of each window, as TFLite does."""
    ones = np.ones(x.shape[:3] + (1,), dtype=x.dtype)
    s = _windows(_pad_hw(x, k, stride, padding), k, stride).sum(axis=(4, 5))
    n = _windows(_pad_hw(ones, k, stride, padding), k, stride).sum(axis=(4, 5))
    return s / n


def f_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- quantisation helpers ----------------------------------------------------------------
def qparams_from_range(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] with 0 exactly representable."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zp


def quantize_weights(w: np.ndarray, per_channel: bool, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-127, 127]: (codes, float32 scales (1 or per channel))."""
    if per_channel:
        red = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=red)
    else:
        amax = np.array([np.abs(w).max()])
    scales = (np.maximum(amax, 1e-8) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    codes = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return codes, scales


# --- graph description ---------------------------------------------------------------------
@dataclass
class BuiltModel:
    """One generated model: its flatbuffer bytes and its float reference computation."""
    name: str
    data: bytes
    covers: str
    input_type: int
    program: list[tuple[Callable, list[int], int]]
    input_index: int
    output_index: int
    input_qparams: tuple[float, int] | None

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        """Float reference output for a batch x (N, *input shape[1:]) of float input values."""
        env = {self.input_index: np.asarray(x, dtype=np.float64)}
        for fn, ins, out in self.program:
            env[out] = fn(*[env[i] for i in ins])
        return env[self.output_index]

    def input_to_float(self, codes: np.ndarray) -> np.ndarray:
        """Float values of input codes (identity for a float-input model)."""
        if self.input_qparams is None:
            return np.asarray(codes, dtype=np.float64)
        s, z = self.input_qparams
        return (codes.astype(np.float64) - z) * s


class GraphBuilder:
    """Builds a quantised graph while running its float twin on calibration inputs."""

    def __init__(self, name: str, rng: np.random.Generator):
        self.name, self.rng = name, rng
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []
        self.calib: dict[int, np.ndarray] = {}     # float calibration values per tensor
        self.program: list[tuple[Callable, list[int], int]] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.input_qparams: tuple[float, int] | None = None
        self._count = 0

    # tensors
    def _add(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _name(self, what: str) -> str:
        self._count += 1
        return f"{self.name}/{self._count:02d}_{what}"

    def const(self, what: str, arr: np.ndarray, ttype: int, scales=(), zps=(), qdim=0) -> int:
        arr = np.ascontiguousarray(arr, dtype=np.dtype(NP_TYPE[ttype]).newbyteorder("<"))
        return self._add(Tensor(self._name(what), tuple(arr.shape), ttype, arr.tobytes(),
                                tuple(float(s) for s in scales), tuple(int(z) for z in zps), qdim))

    def act(self, what: str, values: np.ndarray, qparams: tuple[float, int] | None,
            ttype: int = INT8) -> int:
        shape = (1,) + values.shape[1:]
        scales, zps = ((qparams[0],), (qparams[1],)) if qparams else ((), ())
        idx = self._add(Tensor(self._name(what), shape, ttype, None, scales, zps, 0, True))
        self.calib[idx] = values
        return idx

    def qp(self, idx: int) -> tuple[float, int]:
        t = self.tensors[idx]
        return t.scales[0], t.zero_points[0]

    def _calibrated(self, values: np.ndarray, act: int = ACT_NONE) -> tuple[float, int]:
        hi = values.max()
        if act == ACT_RELU6:
            hi = min(hi, 6.0)
        return qparams_from_range(0.0 if act != ACT_NONE else values.min(), hi)

    def _op(self, name, fn, ins_float, ins, out, options_type=OPT_NONE, options=()):
        self.ops.append(Op(name, ins, [out], options_type, list(options)))
        self.program.append((fn, ins_float, out))

    # graph inputs
    def input(self, shape: tuple[int, ...], ttype: int, qparams: tuple[float, int] | None,
              calib: np.ndarray) -> int:
        idx = self.act("input", calib, qparams, ttype)
        self.inputs.append(idx)
        self.input_qparams = qparams
        return idx

    # operators
    def quantize(self, x: int, qparams: tuple[float, int] | None = None) -> int:
        v = self.calib[x]
        qparams = qparams or qparams_from_range(v.min(), v.max())
        y = self.act("quantize", v, qparams)
        self._op("QUANTIZE", lambda a: a, [x], [x], y, OPT_QUANTIZE)
        return y

    def dequantize(self, x: int) -> int:
        y = self.act("dequantize", self.calib[x], None, FLOAT32)
        self._op("DEQUANTIZE", lambda a: a, [x], [x], y, OPT_DEQUANTIZE)
        return y

    def _bias(self, b: np.ndarray, in_scale: float, w_scales: np.ndarray):
        """int32 bias codes with scale input scale x weight scale (one per weight scale)."""
        bscale = (np.float64(np.float32(in_scale)) * w_scales.astype(np.float64)).astype(np.float32)
        codes = np.round(b / bscale).astype(np.int32)
        return codes, bscale, codes * bscale.astype(np.float64)

    def conv(self, x: int, cout: int, k: int, stride: int, padding: int, act: int,
             per_channel: bool, gain: float = 1.0) -> int:
        v = self.calib[x]
        cin = v.shape[3]
        w = self.rng.normal(0, gain * math.sqrt(2.0 / (k * k * cin)), (cout, k, k, cin))
        w *= self.rng.uniform(0.3, 1.5, (cout, 1, 1, 1))      # channels of different range
        b = self.rng.normal(0, 0.1, cout)
        wq, ws = quantize_weights(w, per_channel, 0)
        wf = wq * (ws.reshape(-1, 1, 1, 1) if per_channel else ws[0])
        bq, bs, bf = self._bias(b, self.qp(x)[0], ws)
        wi = self.const("conv_w", wq, INT8, ws, [0] * len(ws), 0)
        bi = self.const("conv_b", bq, INT32, bs, [0] * len(bs), 0)

        def fn(a, wf=wf, bf=bf):
            return f_conv(a, wf, bf, stride, padding, act)
        out = fn(v)
        y = self.act("conv", out, self._calibrated(out, act))
        self._op("CONV_2D", fn, [x], [x, wi, bi], y, OPT_CONV,
                 [("i8", 0, padding, 0), ("i32", 1, stride, 0), ("i32", 2, stride, 0),
                  ("i8", 3, act, 0)])
        return y

    def dwconv(self, x: int, multiplier: int, k: int, stride: int, padding: int, act: int,
               per_channel: bool) -> int:
        v = self.calib[x]
        c = v.shape[3] * multiplier
        w = self.rng.normal(0, math.sqrt(2.0 / (k * k)), (1, k, k, c))
        w *= self.rng.uniform(0.3, 1.5, (1, 1, 1, c))
        b = self.rng.normal(0, 0.1, c)
        wq, ws = quantize_weights(w, per_channel, 3)
        wf = wq * (ws.reshape(1, 1, 1, -1) if per_channel else ws[0])
        bq, bs, bf = self._bias(b, self.qp(x)[0], ws)
        wi = self.const("dw_w", wq, INT8, ws, [0] * len(ws), 3 if per_channel else 0)
        bi = self.const("dw_b", bq, INT32, bs, [0] * len(bs), 0)

        def fn(a, wf=wf, bf=bf):
            return f_dwconv(a, wf, bf, stride, padding, act, multiplier)
        out = fn(v)
        y = self.act("dwconv", out, self._calibrated(out, act))
        self._op("DEPTHWISE_CONV_2D", fn, [x], [x, wi, bi], y, OPT_DWCONV,
                 [("i8", 0, padding, 0), ("i32", 1, stride, 0), ("i32", 2, stride, 0),
                  ("i32", 3, multiplier, 0), ("i8", 4, act, 0)])
        return y

    def fc(self, x: int, nout: int, act: int = ACT_NONE) -> int:
        v = self.calib[x]
        nin = v.shape[1]
        w = self.rng.normal(0, math.sqrt(2.0 / nin), (nout, nin))
        b = self.rng.normal(0, 0.1, nout)
        wq, ws = quantize_weights(w, False, 0)
        wf = wq * ws[0]
        bq, bs, bf = self._bias(b, self.qp(x)[0], ws)
        wi = self.const("fc_w", wq, INT8, ws, [0])
        bi = self.const("fc_b", bq, INT32, bs, [0])

        def fn(a, wf=wf, bf=bf):
            return f_fc(a, wf, bf, act)
        out = fn(v)
        y = self.act("fc", out, self._calibrated(out, act))
        self._op("FULLY_CONNECTED", fn, [x], [x, wi, bi], y, OPT_FC, [("i8", 0, act, 0)])
        return y

    def add(self, a: int, b: int, act: int) -> int:
        out = _activate(self.calib[a] + self.calib[b], act)
        y = self.act("add", out, self._calibrated(out, act))
        self._op("ADD", lambda p, q: _activate(p + q, act), [a, b], [a, b], y, OPT_ADD,
                 [("i8", 0, act, 0)])
        return y

    def pool(self, kind: str, x: int, k: int, stride: int, padding: int) -> int:
        f = f_maxpool if kind == "MAX_POOL_2D" else f_avgpool

        def fn(a):
            return f(a, (k, k), stride, padding)
        # TFLite's int8 pooling keeps the input's quantisation parameters
        y = self.act(kind.lower(), fn(self.calib[x]), self.qp(x))
        self._op(kind, fn, [x], [x], y, OPT_POOL,
                 [("i8", 0, padding, 0), ("i32", 1, stride, 0), ("i32", 2, stride, 0),
                  ("i32", 3, k, 0), ("i32", 4, k, 0)])
        return y

    def mean_hw(self, x: int, keep_dims: bool, requantize: bool) -> int:
        axes = self.const("mean_axes", np.array([1, 2]), INT32)

        def fn(a):
            return a.mean(axis=(1, 2), keepdims=keep_dims)
        out = fn(self.calib[x])
        qp = self._calibrated(out) if requantize else self.qp(x)
        y = self.act("mean", out, qp)
        self._op("MEAN", fn, [x], [x, axes], y, OPT_REDUCER, [("bool", 0, keep_dims, False)])
        return y

    def pad_hw(self, x: int, before: int, after: int) -> int:
        pads = [[0, 0], [before, after], [before, after], [0, 0]]
        pi = self.const("pad_paddings", np.array(pads), INT32)

        def fn(a):
            return np.pad(a, pads)
        y = self.act("pad", fn(self.calib[x]), self.qp(x))
        self._op("PAD", fn, [x], [x, pi], y, OPT_PAD)
        return y

    def flatten(self, x: int, with_options: bool) -> int:
        n = int(np.prod(self.calib[x].shape[1:]))
        si = self.const("reshape_shape", np.array([-1, n]), INT32)

        def fn(a):
            return a.reshape(a.shape[0], n)
        y = self.act("reshape", fn(self.calib[x]), self.qp(x))
        if with_options:
            self._op("RESHAPE", fn, [x], [x, si], y, OPT_RESHAPE, [("vec_i32", 0, [-1, n], None)])
        else:
            self._op("RESHAPE", fn, [x], [x, si], y)
        return y

    def softmax(self, x: int) -> int:
        y = self.act("softmax", f_softmax(self.calib[x]), (1.0 / 256.0, -128))
        self._op("SOFTMAX", f_softmax, [x], [x], y, OPT_SOFTMAX, [("f32", 0, 1.0, 0.0)])
        return y

    def raw_op(self, name: str, ins: list[int], out: int, options_type=OPT_NONE, options=()):
        """An operator without float reference (for the bad-input files)."""
        self.ops.append(Op(name, ins, [out], options_type, list(options)))

    def serialize(self, description: str = "axlab test model") -> bytes:
        return serialize(self.tensors, self.ops, self.inputs, self.outputs, description)

    def finish(self, out: int, covers: str) -> BuiltModel:
        self.outputs.append(out)
        return BuiltModel(self.name, self.serialize(), covers,
                         self.tensors[self.inputs[0]].ttype, self.program, self.inputs[0], out,
                         self.input_qparams)


# --- the models ------------------------------------------------------------------------------
def _image_codes(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Uniform random codes of an integer dtype, as int64 (for float arithmetic)."""
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=np.int64)


def model_conv_relu_pool(rng: np.random.Generator) -> BuiltModel:
    g = GraphBuilder("conv_relu_pool", rng)
    qp_in = (1.0 / 255.0, -128)
    x = g.input((1, 12, 12, 3), INT8, qp_in,
                (_image_codes(rng, (CALIBRATION_IMAGES, 12, 12, 3), np.int8) + 128) / 255.0)
    x = g.conv(x, 8, 3, 2, SAME, ACT_RELU, per_channel=True)        # 12 -> 6, pads 0/1
    x = g.conv(x, 8, 3, 1, VALID, ACT_RELU6, per_channel=False, gain=6.0)  # 6 -> 4
    x = g.pool("MAX_POOL_2D", x, 2, 2, VALID)                        # 4 -> 2
    x = g.flatten(x, with_options=False)
    x = g.fc(x, 10)
    return g.finish(g.softmax(x), "int8 input 1x12x12x3; CONV_2D 3x3 stride 2 SAME (asymmetric "
                    "pads 0/1) RELU per-channel; CONV_2D 3x3 VALID RELU6 per-tensor; MAX_POOL_2D "
                    "2x2/2 VALID; RESHAPE (shape tensor, no options); FULLY_CONNECTED; SOFTMAX")


def model_dw_uint8_dequant(rng: np.random.Generator) -> BuiltModel:
    g = GraphBuilder("dw_uint8_dequant", rng)
    x = g.input((1, 12, 12, 3), UINT8, (1.0 / 255.0, 0),
                _image_codes(rng, (CALIBRATION_IMAGES, 12, 12, 3), np.uint8) / 255.0)
    x = g.quantize(x, (1.0 / 255.0, -128))                           # uint8 -> int8
    x = g.pad_hw(x, 1, 1)                                            # 12 -> 14
    x = g.dwconv(x, 2, 3, 1, VALID, ACT_RELU6, per_channel=True)      # 14 -> 12, 3 -> 6 ch
    x = g.conv(x, 8, 1, 1, VALID, ACT_NONE, per_channel=True)         # pointwise
    x = g.dwconv(x, 1, 3, 2, SAME, ACT_RELU, per_channel=True)        # 12 -> 6
    x = g.pool("AVERAGE_POOL_2D", x, 3, 2, SAME)                     # 6 -> 3, edge windows
    x = g.mean_hw(x, keep_dims=False, requantize=True)               # (1, 8)
    x = g.fc(x, 4)
    return g.finish(g.dequantize(x), "uint8 input 1x12x12x3; QUANTIZE uint8->int8; PAD 1 pixel; "
                    "DEPTHWISE_CONV_2D 3x3 multiplier 2 VALID RELU6 per-channel; CONV_2D 1x1 NONE "
                    "per-channel; DEPTHWISE_CONV_2D 3x3 multiplier 1 stride 2 SAME RELU; "
                    "AVERAGE_POOL_2D 3x3/2 SAME; MEAN over H,W keep_dims false (own output "
                    "scale); FULLY_CONNECTED; DEQUANTIZE to float output")


def model_residual_float_in(rng: np.random.Generator) -> BuiltModel:
    g = GraphBuilder("residual_float_in", rng)
    x = g.input((1, 8, 8, 4), FLOAT32, None, rng.uniform(-1, 1, (CALIBRATION_IMAGES, 8, 8, 4)))
    x = g.quantize(x)                                                # float -> int8
    a = g.conv(x, 8, 3, 1, SAME, ACT_RELU, per_channel=True)
    b = g.conv(a, 8, 3, 1, SAME, ACT_NONE, per_channel=True)
    if g.qp(a) == g.qp(b):
        raise RuntimeError("ADD inputs must have different quantisation parameters")
    x = g.add(a, b, ACT_RELU)
    x = g.pool("AVERAGE_POOL_2D", x, 2, 2, VALID)                    # 8 -> 4
    x = g.mean_hw(x, keep_dims=True, requantize=False)               # (1, 1, 1, 8)
    x = g.flatten(x, with_options=True)
    x = g.fc(x, 6)
    return g.finish(g.softmax(x), "float input 1x8x8x4; QUANTIZE float->int8; CONV_2D 3x3 SAME "
                    "RELU and NONE per-channel; ADD of the two (different input scales) with "
                    "fused RELU; AVERAGE_POOL_2D 2x2/2 VALID; MEAN over H,W keep_dims true "
                    "(input's scale); RESHAPE with ReshapeOptions; FULLY_CONNECTED; SOFTMAX")


def model_dw_stride_pertensor(rng: np.random.Generator) -> BuiltModel:
    g = GraphBuilder("dw_stride_pertensor", rng)
    qp_in = (1.0 / 128.0, 0)                                         # symmetric input codes
    x = g.input((1, 10, 10, 4), INT8, qp_in,
                _image_codes(rng, (CALIBRATION_IMAGES, 10, 10, 4), np.int8) / 128.0)
    x = g.dwconv(x, 2, 3, 2, SAME, ACT_NONE, per_channel=False)       # 10 -> 5, 4 -> 8 ch
    x = g.pool("MAX_POOL_2D", x, 3, 2, SAME)                         # 5 -> 3
    x = g.conv(x, 10, 3, 1, VALID, ACT_RELU, per_channel=True)        # 3 -> 1
    x = g.flatten(x, with_options=False)
    return g.finish(x, "int8 input 1x10x10x4 (zero point 0); DEPTHWISE_CONV_2D 3x3 multiplier 2 "
                    "stride 2 SAME NONE per-tensor; MAX_POOL_2D 3x3/2 SAME; CONV_2D 3x3 VALID "
                    "RELU to 1x1; RESHAPE; int8 output (no softmax)")


GOOD_MODELS = [model_conv_relu_pool, model_dw_uint8_dequant, model_residual_float_in,
               model_dw_stride_pertensor]


def bad_float_model(rng: np.random.Generator) -> bytes:
    """An unquantised float32 model: CONV_2D with float weights."""
    g = GraphBuilder("float_model", rng)
    x = g.input((1, 4, 4, 2), FLOAT32, None, rng.uniform(-1, 1, (2, 4, 4, 2)))
    w = g.const("conv_w", rng.normal(0, 0.5, (3, 3, 3, 2)), FLOAT32)
    bias = g.const("conv_b", rng.normal(0, 0.1, 3), FLOAT32)
    y = g.act("conv", np.zeros((1, 4, 4, 3)), None, FLOAT32)
    g.raw_op("CONV_2D", [x, w, bias], y, OPT_CONV,
             [("i8", 0, SAME, 0), ("i32", 1, 1, 0), ("i32", 2, 1, 0)])
    g.outputs.append(y)
    return g.serialize("axlab test model: float32, not quantised")


def bad_unsupported_op(rng: np.random.Generator, op: str) -> bytes:
    """An int8 FULLY_CONNECTED followed by an operator the importer does not support."""
    g = GraphBuilder(f"unsupported_{op.lower()}", rng)
    x = g.input((1, 8), INT8, (1.0 / 128.0, 0), rng.uniform(-1, 1, (4, 8)))
    x = g.fc(x, 4)
    y = g.act(op.lower(), np.zeros((1, 4)), (1.0 / 256.0, -128) if op == "LOGISTIC" else g.qp(x))
    g.raw_op(op, [x], y)
    g.outputs.append(y)
    return g.serialize(f"axlab test model: int8 with unsupported {op}")


def _small_conv(rng: np.random.Generator) -> GraphBuilder:
    """int8 1x4x4x2 -> CONV_2D 3x3 SAME per-channel (4 out): the base of the damaged files."""
    g = GraphBuilder("damaged", rng)
    x = g.input((1, 4, 4, 2), INT8, (1.0 / 128.0, 0), rng.uniform(-1, 1, (4, 4, 4, 2)))
    g.outputs.append(g.conv(x, 4, 3, 1, SAME, ACT_RELU, per_channel=True))
    return g


def damaged_models(rng: np.random.Generator) -> dict[str, bytes]:
    """Structurally valid flatbuffers whose contents are inconsistent (the tensor indices
    0 input, 1 weights, 2 bias, 3 output of `_small_conv`)."""
    out = {}
    g = _small_conv(rng)
    base = (g.tensors, g.ops)

    def variant(name: str, edit: Callable[[list[Tensor], list[Op]], None]) -> None:
        tensors = [Tensor(**vars(t)) for t in base[0]]
        ops = [Op(**{**vars(o), "inputs": list(o.inputs)}) for o in base[1]]
        edit(tensors, ops)
        out[f"bad_{name}.tflite"] = serialize(tensors, ops, g.inputs, g.outputs,
                                              f"axlab test model: damaged ({name})")

    def buffer_index(t, o):
        t[1].buffer_override = 99           # weights point past the buffer list

    def short_weights(t, o):
        t[1].data = t[1].data[:-5]          # 67 of the 72 weight bytes

    def opcode_index(t, o):
        o[0].opcode_override = 7            # only one operator code exists

    def tensor_index(t, o):
        o[0].inputs[1] = 42                 # only four tensors exist

    def scale_count(t, o):
        t[1].scales = t[1].scales[:2]       # 2 weight scales for 4 output channels
        t[1].zero_points = t[1].zero_points[:2]

    for edit in (buffer_index, short_weights, opcode_index, tensor_index, scale_count):
        variant(edit.__name__, edit)
    return out


def build_models(seed: int = SEED) -> tuple[list[BuiltModel], dict[str, bytes]]:
    """(good models, {file name: bytes} of every file this script writes)."""
    rng = np.random.default_rng(seed)
    models = [make(rng) for make in GOOD_MODELS]
    files = {f"{m.name}.tflite": m.data for m in models}
    files["bad_float_model.tflite"] = bad_float_model(rng)
    files["bad_unsupported_logistic.tflite"] = bad_unsupported_op(rng, "LOGISTIC")
    files["bad_unsupported_gelu.tflite"] = bad_unsupported_op(rng, "GELU")
    # a damaged file: the first 384 bytes of a good model (header and tables cut off)
    files["bad_truncated.tflite"] = models[0].data[:384]
    files.update(damaged_models(np.random.default_rng(seed + 1)))
    return models, files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _, files = build_models()
    for name, data in sorted(files.items()):
        (args.out / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
