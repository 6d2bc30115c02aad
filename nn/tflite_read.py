"""Read a TFLite flatbuffer into plain Python objects, treating the file as untrusted.

The schema bindings come from the PyPI ``tflite`` package (generated flatbuffer accessors,
pure Python). Those accessors follow offsets without checking them, so every access here
goes through ``_guard`` (any struct/index error becomes one AxlabError naming the file),
every vector length is checked against the file size before it is iterated, and every
tensor's buffer size is checked against its shape and type.

Only what the importer needs is read: the first subgraph's tensors (shape, type,
quantisation, constant data), its operators (builtin name, inputs, outputs, options) and
its inputs/outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError

MAX_FILE_BYTES = 256 << 20  # far above any model axlab can run; refuses memory bombs early
MAX_RANK = 6

# TensorType enum of the TFLite schema -> numpy dtype (only the types the importer handles)
TENSOR_TYPES: dict[int, Any] = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
                                9: np.int8, 7: np.int16}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
              7: "int16", 8: "complex64", 9: "int8", 10: "float64"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDINGS = {0: "SAME", 1: "VALID"}


@dataclass
class TflTensor:
    """One tensor: ``shape`` as stored (TFLite is NHWC), ``dtype`` a TYPE_NAMES value,
    ``scales``/``zero_points`` (empty when unquantised), ``data`` the constant contents
    (numpy, shaped) or None for activations."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dim: int
    data: np.ndarray | None


@dataclass
class TflOp:
    index: int
    name: str                      # builtin operator name, e.g. "CONV_2D"
    inputs: list[int]              # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TflModel:
    path: str
    tensors: list[TflTensor]
    ops: list[TflOp]
    inputs: list[int]
    outputs: list[int]


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


class _Guard:
    """Turns any low-level parse failure into one AxlabError naming the file and the part."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size

    def fail(self, what: str) -> AxlabError:
        return AxlabError(f"{self.path}: damaged TFLite file ({what})")

    def length(self, n: int, what: str, elem_bytes: int = 1) -> int:
        n = int(n)
        if n < 0 or n * elem_bytes > self.size:
            raise self.fail(f"{what}: length {n} does not fit in a {self.size}-byte file")
        return n


def _options(op: Any, name: str) -> dict[str, Any]:
    """The builtin options of the operators the importer knows (defaults when absent)."""
    table = op.BuiltinOptions()
    mods = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
            "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
            "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "SOFTMAX": "SoftmaxOptions",
            "MEAN": "ReducerOptions", "RESHAPE": "ReshapeOptions"}
    if name not in mods:
        return {}
    import importlib

    cls = getattr(importlib.import_module(f"tflite.{mods[name]}"), mods[name])
    o = cls()
    if table is not None:
        o.Init(table.Bytes, table.Pos)
    else:  # absent table: the schema defaults
        return {"CONV_2D": {"padding": "SAME", "stride": (1, 1), "act": "NONE", "dilation": (1, 1)},
                "DEPTHWISE_CONV_2D": {"padding": "SAME", "stride": (1, 1), "act": "NONE", "dilation": (1, 1),
                                      "depth_multiplier": 0},
                "AVERAGE_POOL_2D": {"padding": "SAME", "stride": (0, 0), "filter": (0, 0), "act": "NONE"},
                "MAX_POOL_2D": {"padding": "SAME", "stride": (0, 0), "filter": (0, 0), "act": "NONE"},
                "FULLY_CONNECTED": {"act": "NONE", "keep_num_dims": False, "weights_format": 0},
                "ADD": {"act": "NONE"}, "SOFTMAX": {"beta": 0.0}, "MEAN": {"keep_dims": False},
                "RESHAPE": {}}[name]
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        d = {"padding": PADDINGS.get(o.Padding(), str(o.Padding())), "stride": (o.StrideH(), o.StrideW()),
             "act": ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction())),
             "dilation": (o.DilationHFactor(), o.DilationWFactor())}
        if name == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = o.DepthMultiplier()
        return d
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return {"padding": PADDINGS.get(o.Padding(), str(o.Padding())), "stride": (o.StrideH(), o.StrideW()),
                "filter": (o.FilterHeight(), o.FilterWidth()),
                "act": ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction()))}
    if name == "FULLY_CONNECTED":
        return {"act": ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction())),
                "keep_num_dims": bool(o.KeepNumDims()), "weights_format": o.WeightsFormat()}
    if name == "ADD":
        return {"act": ACTIVATIONS.get(o.FusedActivationFunction(), str(o.FusedActivationFunction()))}
    if name == "SOFTMAX":
        return {"beta": float(o.Beta())}
    if name == "MEAN":
        return {"keep_dims": bool(o.KeepDims())}
    return {}


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a model file, refusing files over MAX_FILE_BYTES before reading them."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AxlabError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES >> 20} MiB a TFLite "
                             "model for axlab may have")
        return path.read_bytes()
    except OSError as exc:
        raise AxlabError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def read_tflite(path: str | Path) -> TflModel:
    """Parse ``path``; AxlabError (one line, naming the file) for anything malformed."""
    return parse_tflite(read_bytes(path), str(path))


def is_tflite(data: bytes) -> bool:
    """The flatbuffer file identifier of TFLite models ("TFL3" at byte 4)."""
    return len(data) >= 8 and data[4:8] == b"TFL3"


def parse_tflite(data: bytes, where: str = "<bytes>") -> TflModel:
    if not is_tflite(data):
        raise AxlabError(f"{where}: not a TFLite model (no TFL3 file identifier)")
    if len(data) > MAX_FILE_BYTES:
        raise AxlabError(f"{where}: {len(data)} bytes is larger than the {MAX_FILE_BYTES >> 20} MiB a TFLite "
                         "model for axlab may have")
    g = _Guard(where, len(data))
    try:
        return _parse(data, g)
    except AxlabError:
        raise
    except Exception as exc:  # struct.error, IndexError, ValueError ... from bad offsets
        import struct

        if isinstance(exc, (struct.error, IndexError)):
            raise g.fail(f"truncated, or an offset points outside the {len(data)}-byte file") from None
        raise g.fail(f"{exc.__class__.__name__}: {exc}") from None


def _parse(data: bytes, g: _Guard) -> TflModel:
    from tflite.Model import Model

    buf = bytearray(data)
    (root,) = np.frombuffer(data[:4], dtype="<u4")
    if root < 8 or root + 4 > len(data):
        raise g.fail(f"root offset {int(root)} outside the file")
    model = Model.GetRootAs(buf, 0)
    names = _builtin_names()
    n_codes = g.length(model.OperatorCodesLength(), "operator codes", 4)
    codes: list[str] = []
    for i in range(n_codes):
        oc = model.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == 32:  # CUSTOM
            cc = oc.CustomCode()
            codes.append(f"CUSTOM({cc.decode('utf-8', 'replace') if cc else '?'})")
        else:
            codes.append(names.get(code, f"builtin operator code {code}"))
    if g.length(model.SubgraphsLength(), "subgraphs", 4) < 1:
        raise g.fail("no subgraph")
    n_buffers = g.length(model.BuffersLength(), "buffers", 4)
    sg = model.Subgraphs(0)
    n_tensors = g.length(sg.TensorsLength(), "tensors", 4)
    tensors: list[TflTensor] = []
    for i in range(n_tensors):
        t = sg.Tensors(i)
        rank = g.length(t.ShapeLength(), f"tensor {i} shape", 4)
        if rank > MAX_RANK:
            raise g.fail(f"tensor {i} has rank {rank}")
        shape = tuple(int(t.Shape(k)) for k in range(rank))
        if any(d < 0 or d > (1 << 24) for d in shape):
            raise g.fail(f"tensor {i} has shape {shape}")
        ttype = int(t.Type())
        dtype = TYPE_NAMES.get(ttype, f"type {ttype}")
        name = (t.Name() or b"").decode("utf-8", "replace")
        scales = np.zeros(0, np.float32)
        zps = np.zeros(0, np.int64)
        qdim = 0
        q = t.Quantization()
        if q is not None:
            ns = g.length(q.ScaleLength(), f"tensor {i} scales", 4)
            nz = g.length(q.ZeroPointLength(), f"tensor {i} zero points", 8)
            scales = np.array([q.Scale(k) for k in range(ns)], dtype=np.float32)
            zps = np.array([q.ZeroPoint(k) for k in range(nz)], dtype=np.int64)
            qdim = int(q.QuantizedDimension())
        bidx = int(t.Buffer())
        arr = None
        if bidx < 0 or bidx >= max(n_buffers, 1) and bidx != 0:
            raise g.fail(f"tensor {i} refers to buffer {bidx} of {n_buffers}")
        if 0 < bidx < n_buffers:
            b = model.Buffers(bidx)
            if int(b.Offset()) > 1 or int(b.Size()) > 0:
                raise g.fail(f"tensor {i} keeps its data outside the flatbuffer (large-model format)")
            nbytes = g.length(b.DataLength(), f"buffer {bidx}")
            if nbytes:
                if ttype not in TENSOR_TYPES:
                    raise g.fail(f"constant tensor {i} ({name}) of unsupported type {dtype}")
                np_t = np.dtype(TENSOR_TYPES[ttype]).newbyteorder("<")
                want = int(np.prod(shape, dtype=np.int64)) * np_t.itemsize
                if nbytes != want:
                    raise g.fail(f"tensor {i} ({name}) of shape {shape} {dtype} needs {want} bytes, "
                                 f"its buffer holds {nbytes}")
                raw = b.DataAsNumpy()
                if not isinstance(raw, np.ndarray) or raw.size != nbytes:
                    raise g.fail(f"buffer {bidx} is cut short")
                arr = np.frombuffer(raw.tobytes(), dtype=np_t).reshape(shape).astype(np_t.newbyteorder("="))
        tensors.append(TflTensor(i, name, shape, dtype, scales, zps, qdim, arr))

    def tensor_list(n: int, get: Any, what: str) -> list[int]:
        out = [int(get(k)) for k in range(g.length(n, what, 4))]
        for v in out:
            if v < -1 or v >= n_tensors:
                raise g.fail(f"{what} refers to tensor {v} of {n_tensors}")
        return out

    ops: list[TflOp] = []
    for i in range(g.length(sg.OperatorsLength(), "operators", 4)):
        op = sg.Operators(i)
        ci = int(op.OpcodeIndex())
        if ci < 0 or ci >= n_codes:
            raise g.fail(f"operator {i} has opcode index {ci} of {n_codes}")
        name = codes[ci]
        ops.append(TflOp(i, name, tensor_list(op.InputsLength(), op.Inputs, f"operator {i} inputs"),
                         tensor_list(op.OutputsLength(), op.Outputs, f"operator {i} outputs"),
                         _options(op, name)))
    inputs = tensor_list(sg.InputsLength(), sg.Inputs, "subgraph inputs")
    outputs = tensor_list(sg.OutputsLength(), sg.Outputs, "subgraph outputs")
    return TflModel(g.path, tensors, ops, inputs, outputs)
