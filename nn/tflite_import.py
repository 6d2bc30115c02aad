"""Convert a full-integer int8 TFLite model into an axlab model (ModelBundle).

The imported graph uses the ``tfl_*`` ops (see :mod:`nn.tflite_graph`), run by
:class:`nn.tflite_engine.TfliteEngine` with TFLite's own integer arithmetic
(:mod:`nn.tflite_ops`). Layout: TFLite tensors are NHWC; axlab's are NCHW, so per image a
(1, H, W, C) tensor becomes (C, H, W) and a (1, F) tensor (F,). Weights become
conv (Co, Ci, kh, kw), depthwise (C*m, 1, kh, kw), dense (Co, Ci) with Ci in TFLite's
(NHWC) flattening order.

Input images are uint8 pixels p. The ``input`` node holds int8 codes p - 128:
* int8 model input: the model's own (scale, zero point);
* uint8 model input (QUANTIZE to int8 follows): (scale, zp - 128), the same real values;
* float32 model input (QUANTIZE follows): the float fed is p / 255 (float32), so the
  input node is (1/255, -128).
A DEQUANTIZE at the output is dropped: the model's output is its int8 input tensor, and
``Implementation.dequantize`` turns codes into real values.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError
from nn.bundle import ModelBundle
from nn.graph import Graph
from nn.quant import QuantParams
from nn.tflite_read import TflModel, TflOp, TflTensor, parse_tflite

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D",
             "MEAN", "PAD", "RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")
ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _same_pad(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TFLite SAME: (out, pad before, pad after); the odd pixel goes after."""
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _valid_out(size: int, k: int, s: int) -> int:
    return (size - k + s) // s


class _Importer:
    def __init__(self, m: TflModel) -> None:
        self.m = m
        self.where = m.path
        self.nodes: list[dict[str, Any]] = []
        self.params: dict[str, np.ndarray] = {}
        self.qp = QuantParams()
        self.node_of: dict[int, str] = {}   # TFLite tensor index -> node name
        self.tensor_of: dict[str, int] = {}
        self.shape_of: dict[str, tuple[int, ...]] = {}  # per image, axlab layout

    # ------------------------------------------------------------------ helpers
    def fail(self, msg: str) -> AxlabError:
        return AxlabError(f"{self.where}: {msg}")

    def t(self, idx: int, op: TflOp, what: str) -> TflTensor:
        if idx < 0:
            raise self.fail(f"operator {op.index} ({op.name}): {what} is missing")
        return self.m.tensors[idx]

    def act_q(self, t: TflTensor, op: TflOp) -> tuple[float, int]:
        if t.dtype != "int8":
            raise self.fail(f"operator {op.index} ({op.name}): tensor {t.name!r} is {t.dtype}; only int8 "
                            "activations are supported (is this a float model?)")
        if t.scales.size != 1 or t.zero_points.size != 1:
            raise self.fail(f"operator {op.index} ({op.name}): activation {t.name!r} needs one scale and one "
                            f"zero point, has {t.scales.size} and {t.zero_points.size}")
        s, zp = float(t.scales[0]), int(t.zero_points[0])
        if not (np.isfinite(s) and s > 0) or not -128 <= zp <= 127:
            raise self.fail(f"operator {op.index} ({op.name}): activation {t.name!r} has scale {s} / zero point "
                            f"{zp} (needs scale > 0, zero point in [-128, 127])")
        return s, zp

    def src(self, idx: int, op: TflOp) -> str:
        if idx not in self.node_of:
            t = self.m.tensors[idx] if 0 <= idx < len(self.m.tensors) else None
            why = "a constant" if t is not None and t.data is not None else "not computed before it"
            raise self.fail(f"operator {op.index} ({op.name}): input tensor {idx} "
                            f"({t.name if t else '?'!r}) is {why}")
        return self.node_of[idx]

    def fmap(self, name: str, op: TflOp) -> tuple[int, int, int]:
        s = self.shape_of[name]
        if len(s) != 3:
            raise self.fail(f"operator {op.index} ({op.name}) needs a 4-D NHWC input, got {len(s) + 1}-D")
        return s  # type: ignore[return-value]

    def out_shape(self, t: TflTensor, op: TflOp) -> tuple[int, ...]:
        if not t.shape or t.shape[0] != 1:
            raise self.fail(f"operator {op.index} ({op.name}): tensor {t.name!r} has shape {t.shape}; "
                            "batch 1 models only")
        s = t.shape[1:]
        return (s[2], s[0], s[1]) if len(s) == 3 else tuple(s)

    def add(self, op: TflOp, kind: str, inputs: list[str], out_idx: int, out_shape: tuple[int, ...],
            **attrs: Any) -> str:
        name = f"{op.index:03d}_{op.name.lower()}"
        out = self.m.tensors[out_idx]
        self.nodes.append({"name": name, "op": kind, "inputs": inputs, **attrs})
        self.qp.act[name] = self.act_q(out, op)
        want = self.out_shape(out, op)
        if tuple(want) != tuple(out_shape):
            raise self.fail(f"operator {op.index} ({op.name}): output tensor {out.name!r} has shape {out.shape}, "
                            f"the operator computes {out_shape} per image")
        self.node_of[out_idx] = name
        self.tensor_of[name] = out_idx
        self.shape_of[name] = tuple(out_shape)
        return name

    def act(self, op: TflOp) -> str:
        a = op.options.get("act", "NONE")
        if a not in ACTS:
            raise self.fail(f"operator {op.index} ({op.name}): fused activation {a} is not supported "
                            f"(supported: {', '.join(ACTS)})")
        return a

    def weights(self, op: TflOp, w: TflTensor, co_axis: int, co: int) -> tuple[np.ndarray, bool]:
        if w.data is None or w.dtype != "int8":
            raise self.fail(f"operator {op.index} ({op.name}): weights {w.name!r} must be constant int8, got "
                            f"{w.dtype}{'' if w.data is not None else ' (not constant)'}")
        if w.scales.size not in (1, co) or w.zero_points.size not in (w.scales.size, 1):
            raise self.fail(f"operator {op.index} ({op.name}): weights {w.name!r} have {w.scales.size} scales "
                            f"for {co} output channels")
        if w.scales.size > 1 and w.quantized_dim != co_axis:
            raise self.fail(f"operator {op.index} ({op.name}): weights {w.name!r} are quantised along axis "
                            f"{w.quantized_dim}, expected the output-channel axis {co_axis}")
        if np.any(w.zero_points != 0):
            raise self.fail(f"operator {op.index} ({op.name}): weights {w.name!r} have a non-zero zero point "
                            "(int8 weights are symmetric)")
        if not (np.isfinite(w.scales).all() and (w.scales > 0).all()):
            raise self.fail(f"operator {op.index} ({op.name}): weights {w.name!r} have scales that are not > 0")
        return np.broadcast_to(w.scales.astype(np.float64), (co,)).copy(), w.scales.size > 1

    def bias(self, op: TflOp, idx: int, co: int) -> np.ndarray:
        if idx < 0:
            return np.zeros(co, np.int64)
        b = self.m.tensors[idx]
        if b.data is None or b.dtype != "int32" or b.shape != (co,):
            raise self.fail(f"operator {op.index} ({op.name}): bias {b.name!r} must be a constant int32 ({co},) "
                            f"tensor, got {b.dtype} {b.shape}")
        return b.data.astype(np.int64)

    def layer(self, name: str, wq: np.ndarray, ws: np.ndarray, bq: np.ndarray, s_in: float) -> None:
        shape = (-1,) + (1,) * (wq.ndim - 1)
        self.qp.wq[name] = wq.astype(np.int32)
        self.qp.ws[name] = ws
        self.qp.bq[name] = bq
        # float twin parameters (dequantised), also what num_classes and the checks read
        self.params[f"{name}.weight"] = (wq * ws.reshape(shape)).astype(np.float32)
        self.params[f"{name}.bias"] = (bq * (s_in * ws)).astype(np.float32)

    def window(self, op: TflOp, h: int, w: int, kh: int, kw: int) -> tuple[int, int, list[int]]:
        sh, sw = op.options["stride"]
        if sh < 1 or sw < 1 or kh < 1 or kw < 1:
            raise self.fail(f"operator {op.index} ({op.name}): stride {sh}x{sw} / window {kh}x{kw} must be >= 1")
        if op.options["padding"] == "SAME":
            ho, pt, pb = _same_pad(h, kh, sh)
            wo, pl, pr = _same_pad(w, kw, sw)
        elif op.options["padding"] == "VALID":
            ho, wo, pt, pb, pl, pr = _valid_out(h, kh, sh), _valid_out(w, kw, sw), 0, 0, 0, 0
        else:
            raise self.fail(f"operator {op.index} ({op.name}): padding {op.options['padding']} (SAME or VALID)")
        if ho < 1 or wo < 1:
            raise self.fail(f"operator {op.index} ({op.name}): window {kh}x{kw} larger than its {h}x{w} input")
        return ho, wo, [pt, pb, pl, pr]

    # ------------------------------------------------------------------ ops
    def run(self) -> tuple[Graph, QuantParams, dict[str, Any]]:
        m = self.m
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            raise self.fail(f"{len(m.inputs)} inputs / {len(m.outputs)} outputs; one of each is supported")
        floats = [op for op in m.ops if op.name != "DEQUANTIZE" and any(
            0 <= o < len(m.tensors) and m.tensors[o].dtype == "float32" for o in op.outputs)]
        if floats:
            op = floats[0]
            raise self.fail(f"float (unquantised) model: operator {op.index} ({op.name}) computes "
                            f"{m.tensors[op.outputs[0]].dtype}; only full-integer int8 models are supported")
        bad = [op for op in m.ops if op.name not in SUPPORTED]
        if bad:
            raise self.fail(f"unsupported operator {bad[0].name} (operator {bad[0].index}; supported: "
                            f"{', '.join(SUPPORTED)})")
        if not m.ops:
            raise self.fail("the model has no operators")
        tin = m.tensors[m.inputs[0]]
        if len(tin.shape) != 4 or tin.shape[0] != 1:
            raise self.fail(f"input {tin.name!r} has shape {tin.shape}; an NHWC image input (1, H, W, C) is needed")
        _, h, w, c = tin.shape
        in_dtype = tin.dtype
        if in_dtype == "int8":
            s, zp = self.act_q(tin, m.ops[0])
        elif in_dtype == "uint8":
            if tin.scales.size != 1 or tin.zero_points.size != 1 or not 0 <= int(tin.zero_points[0]) <= 255:
                raise self.fail(f"uint8 input {tin.name!r} needs one scale and a zero point in [0, 255]")
            s, zp = float(tin.scales[0]), int(tin.zero_points[0]) - 128
        elif in_dtype == "float32":
            s, zp = 1.0 / 255.0, -128
        else:
            raise self.fail(f"input {tin.name!r} is {in_dtype}; int8, uint8 or float32 inputs are supported")
        self.nodes.append({"name": "input", "op": "input", "inputs": []})
        self.qp.act["input"] = (float(s), int(zp))
        self.node_of[m.inputs[0]] = "input"
        self.tensor_of["input"] = m.inputs[0]
        self.shape_of["input"] = (c, h, w)
        out_idx = m.outputs[0]
        dequant_out = False
        for op in m.ops:
            getattr(self, "op_" + op.name.lower())(op)
            if op.name == "DEQUANTIZE":
                if op.outputs[0] != out_idx:
                    raise self.fail(f"operator {op.index} (DEQUANTIZE) inside the graph; only at its output")
                dequant_out = True
        if out_idx not in self.node_of:
            raise self.fail(f"the output tensor {out_idx} is not computed by a supported operator")
        if self.node_of[out_idx] != self.nodes[-1]["name"]:
            raise self.fail("the output tensor is not computed by the last operator")
        if in_dtype != "int8" and not any(n["op"] == "tfl_quantize" and n["inputs"] == ["input"] for n in self.nodes):
            raise self.fail(f"{in_dtype} input without a QUANTIZE to int8")
        meta = {"input_dtype": in_dtype, "tensors": self.tensor_of, "dequantize_output": dequant_out,
                "input_name": tin.name}
        return Graph(self.nodes, (c, h, w), self.params), self.qp, meta

    def op_quantize(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        tin = self.m.tensors[op.inputs[0]]
        if not (i == "input" or tin.dtype == "int8"):
            raise self.fail(f"operator {op.index} (QUANTIZE) from {tin.dtype} inside the graph; only at its input")
        self.add(op, "tfl_quantize", [i], op.outputs[0], self.shape_of[i])

    def op_dequantize(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        if self.m.tensors[op.outputs[0]].dtype != "float32":
            raise self.fail(f"operator {op.index} (DEQUANTIZE) to {self.m.tensors[op.outputs[0]].dtype}")
        self.node_of[op.outputs[0]] = i  # the graph's output stays the int8 codes

    def op_conv_2d(self, op: TflOp, depthwise: bool = False) -> None:
        o = op.options
        if tuple(o.get("dilation", (1, 1))) != (1, 1):
            raise self.fail(f"operator {op.index} ({op.name}): dilation {o['dilation']} (only 1 is supported)")
        i = self.src(op.inputs[0], op)
        c, h, w = self.fmap(i, op)
        wt = self.t(op.inputs[1], op, "the weight tensor")
        if len(wt.shape) != 4:
            raise self.fail(f"operator {op.index} ({op.name}): weights of shape {wt.shape}")
        s_in = self.qp.act[i][0]
        if depthwise:
            _, kh, kw, co = wt.shape
            mult = co // c if c else 0
            if wt.shape[0] != 1 or mult < 1 or co != c * mult or o.get("depth_multiplier", mult) not in (0, mult):
                raise self.fail(f"operator {op.index} ({op.name}): weights {wt.shape} do not fit {c} input channels "
                                f"with depth multiplier {o.get('depth_multiplier')}")
            ws, per_ch = self.weights(op, wt, 3, co)
            wq = wt.data.reshape(kh, kw, co).transpose(2, 0, 1)[:, None]  # (C*m, 1, kh, kw)
        else:
            co, kh, kw, ci = wt.shape
            if ci != c:
                raise self.fail(f"operator {op.index} ({op.name}): weights {wt.shape} expect {ci} input channels, "
                                f"the input has {c}")
            ws, per_ch = self.weights(op, wt, 0, co)
            wq = wt.data.transpose(0, 3, 1, 2)  # (Co, Ci, kh, kw)
        ho, wo, pad4 = self.window(op, h, w, kh, kw)
        bq = self.bias(op, op.inputs[2] if len(op.inputs) > 2 else -1, co)
        attrs: dict[str, Any] = {"kernel": [kh, kw], "stride": list(o["stride"]), "pad4": pad4, "act": self.act(op)}
        if depthwise:
            attrs["multiplier"] = int(co // c)
        name = self.add(op, "tfl_dwconv" if depthwise else "tfl_conv", [i], op.outputs[0], (co, ho, wo), **attrs)
        self.layer(name, np.ascontiguousarray(wq), ws, bq, s_in)

    def op_depthwise_conv_2d(self, op: TflOp) -> None:
        self.op_conv_2d(op, depthwise=True)

    def op_fully_connected(self, op: TflOp) -> None:
        o = op.options
        if o.get("weights_format", 0) != 0:
            raise self.fail(f"operator {op.index} ({op.name}): shuffled weights format is not supported")
        i = self.src(op.inputs[0], op)
        wt = self.t(op.inputs[1], op, "the weight tensor")
        if len(wt.shape) != 2:
            raise self.fail(f"operator {op.index} ({op.name}): weights of shape {wt.shape}")
        co, ci = wt.shape
        feats = int(np.prod(self.shape_of[i]))
        if feats != ci:
            raise self.fail(f"operator {op.index} ({op.name}): weights take {ci} features, the input has {feats} "
                            "per image")
        ws, per_ch = self.weights(op, wt, 0, co)
        s_in = self.qp.act[i][0]
        bq = self.bias(op, op.inputs[2] if len(op.inputs) > 2 else -1, co)
        name = self.add(op, "tfl_fc", [i], op.outputs[0], (co,), act=self.act(op), per_channel=bool(per_ch))
        self.layer(name, wt.data.astype(np.int32), ws, bq, s_in)

    def op_add(self, op: TflOp) -> None:
        if len(op.inputs) != 2:
            raise self.fail(f"operator {op.index} (ADD) with {len(op.inputs)} inputs")
        a, b = self.src(op.inputs[0], op), self.src(op.inputs[1], op)
        if self.shape_of[a] != self.shape_of[b]:
            raise self.fail(f"operator {op.index} (ADD): inputs of shapes {self.shape_of[a]} and {self.shape_of[b]} "
                            "(broadcasting is not supported)")
        self.add(op, "tfl_add", [a, b], op.outputs[0], self.shape_of[a], act=self.act(op))

    def _pool(self, op: TflOp, kind: str) -> None:
        i = self.src(op.inputs[0], op)
        c, h, w = self.fmap(i, op)
        kh, kw = op.options["filter"]
        ho, wo, pad4 = self.window(op, h, w, kh, kw)
        self._same_quant(op, i)
        self.add(op, kind, [i], op.outputs[0], (c, ho, wo), kernel=[kh, kw], stride=list(op.options["stride"]),
                 pad4=pad4, act=self.act(op))

    def _same_quant(self, op: TflOp, i: str) -> None:
        out = self.m.tensors[op.outputs[0]]
        if self.act_q(out, op) != self.qp.act[i]:
            raise self.fail(f"operator {op.index} ({op.name}): input and output quantisation differ "
                            f"({self.qp.act[i]} vs {self.act_q(out, op)}); the operator keeps the codes")

    def op_average_pool_2d(self, op: TflOp) -> None:
        self._pool(op, "tfl_avgpool")

    def op_max_pool_2d(self, op: TflOp) -> None:
        self._pool(op, "tfl_maxpool")

    def _const_ints(self, op: TflOp, idx: int, what: str) -> np.ndarray:
        t = self.t(idx, op, what)
        if t.data is None or t.dtype not in ("int32", "int64"):
            raise self.fail(f"operator {op.index} ({op.name}): {what} must be a constant int32 tensor")
        return t.data.astype(np.int64)

    def op_mean(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        c, _, _ = self.fmap(i, op)
        axes = sorted({int(a) % 4 for a in self._const_ints(op, op.inputs[1], "the axes").reshape(-1)})
        if axes != [1, 2]:
            raise self.fail(f"operator {op.index} (MEAN) over axes {axes}; only over H and W (1, 2)")
        keep = bool(op.options.get("keep_dims", False))
        self.add(op, "tfl_mean", [i], op.outputs[0], (c, 1, 1) if keep else (c,), keep_dims=keep)

    def op_pad(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        c, h, w = self.fmap(i, op)
        p = self._const_ints(op, op.inputs[1], "the paddings")
        if p.shape != (4, 2) or p.min() < 0 or p[0].any() or p[3].any():
            raise self.fail(f"operator {op.index} (PAD): paddings {p.tolist()}; only non-negative H/W padding")
        self._same_quant(op, i)
        pad4 = [int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1])]
        self.add(op, "tfl_pad", [i], op.outputs[0], (c, h + pad4[0] + pad4[1], w + pad4[2] + pad4[3]), pad4=pad4)

    def op_reshape(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        out = self.m.tensors[op.outputs[0]]
        shape = self.out_shape(out, op)
        if int(np.prod(shape)) != int(np.prod(self.shape_of[i])):
            raise self.fail(f"operator {op.index} (RESHAPE): {self.shape_of[i]} to {shape} changes the size")
        self._same_quant(op, i)
        self.add(op, "tfl_reshape", [i], op.outputs[0], shape, shape=[int(v) for v in out.shape[1:]])

    def op_softmax(self, op: TflOp) -> None:
        i = self.src(op.inputs[0], op)
        s, zp = self.act_q(self.m.tensors[op.outputs[0]], op)
        if zp != -128 or abs(s - 1 / 256) > 0.001 / 256:
            raise self.fail(f"operator {op.index} (SOFTMAX): int8 output must have scale 1/256 and zero point -128")
        beta = float(op.options.get("beta", 1.0))
        if not np.isfinite(beta) or beta <= 0:
            raise self.fail(f"operator {op.index} (SOFTMAX): beta {beta}")
        self.add(op, "tfl_softmax", [i], op.outputs[0], self.shape_of[i], beta=beta)


def import_tflite_bytes(data: bytes, where: str) -> ModelBundle:
    """A TFLite flatbuffer -> ModelBundle (validated like any axlab model)."""
    from nn.tflite_engine import TfliteEngine

    m = parse_tflite(data, where)
    graph, qp, meta = _Importer(m).run()
    meta.update({"source": "tflite", "file": Path(where).name, "tflite_sha256": hashlib.sha256(data).hexdigest(),
                 "rounding": "tflite"})
    bundle = ModelBundle("tflite", graph, dict(graph.params), qp, "", meta)
    try:
        TfliteEngine.check(bundle)  # every multiplier derivable, every op runnable
    except AxlabError as exc:
        raise AxlabError(f"{where}: {exc}") from None
    return bundle


def import_tflite(path: str | Path) -> ModelBundle:
    """Read and convert ``path`` (see the module docstring)."""
    from nn.tflite_read import read_bytes

    return import_tflite_bytes(read_bytes(path), str(path))
