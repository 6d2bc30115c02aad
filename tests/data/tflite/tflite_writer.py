"""Minimal TFLite flatbuffer writer for the test models (no TensorFlow, no schema compiler).

Field numbers and enum values are those of the public TFLite schema
(tensorflow/lite/schema/schema.fbs); the bytes are laid out by the PyPI ``flatbuffers``
Builder, so the same graph always gives the same file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np

# --- TFLite schema constants (schema.fbs) -------------------------------------------------
FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
FLOAT32, INT32, UINT8, INT8 = 0, 2, 3, 9
SAME, VALID = 0, 1
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 3
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# operator name -> (builtin code, operator version the converter writes for int8 tensors)
OPS = {
    "ADD": (0, 2), "AVERAGE_POOL_2D": (1, 2), "CONCATENATION": (2, 2), "CONV_2D": (3, 3),
    "DEPTHWISE_CONV_2D": (4, 3), "DEQUANTIZE": (6, 2), "FULLY_CONNECTED": (9, 4),
    "LOGISTIC": (14, 2), "MAX_POOL_2D": (17, 2), "RESHAPE": (22, 1), "SOFTMAX": (25, 2),
    "PAD": (34, 2), "MEAN": (40, 2), "QUANTIZE": (114, 2), "GELU": (150, 2),
}
# BuiltinOptions union type ids
OPT_NONE, OPT_CONV, OPT_DWCONV, OPT_POOL, OPT_FC = 0, 1, 2, 5, 8
OPT_SOFTMAX, OPT_CONCAT, OPT_ADD, OPT_RESHAPE, OPT_PAD = 9, 10, 11, 17, 22
OPT_REDUCER, OPT_DEQUANTIZE, OPT_QUANTIZE = 27, 38, 89

NP_TYPE = {FLOAT32: np.float32, INT32: np.int32, UINT8: np.uint8, INT8: np.int8}


@dataclass
class Tensor:
    """One tensor of the subgraph; ``data`` holds a constant's little-endian bytes."""
    name: str
    shape: tuple[int, ...]
    ttype: int
    data: bytes | None = None               # constant contents (little endian)
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    qdim: int = 0
    batch_dynamic: bool = False             # shape_signature with batch -1
    buffer_override: int | None = None      # a wrong buffer index (damaged test files only)


@dataclass
class Op:
    """One operator: ``options`` are the fields of its BuiltinOptions table."""
    name: str                               # key of OPS
    inputs: list[int]
    outputs: list[int]
    options_type: int = OPT_NONE
    options: list[tuple] = field(default_factory=list)  # (kind, slot, value, default)
    opcode_override: int | None = None      # a wrong opcode index (damaged test files only)


# --- flatbuffer serialisation --------------------------------------------------------------
def _vec(b: flatbuffers.Builder, kind: str, values, align: int | None = None) -> int:
    """A vector of scalars; `align` forces the alignment of the data (16 for buffers)."""
    if kind == "u8":
        data = bytes(values)
        b.StartVector(1, len(data), align or 1)
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return b.EndVector()
    size, prepend = {"i32": (4, b.PrependInt32), "i64": (8, b.PrependInt64),
                     "f32": (4, b.PrependFloat32), "off": (4, b.PrependUOffsetTRelative)}[kind]
    b.StartVector(size, len(values), align or size)
    for v in reversed(list(values)):
        prepend(v)
    return b.EndVector()


def _table(b: flatbuffers.Builder, nslots: int, fields: list[tuple]) -> int:
    """fields: (kind, slot, value, default); kind in i8/u8/i32/u32/f32/bool/off."""
    b.StartObject(nslots)
    for kind, slot, value, default in fields:
        {"i8": b.PrependInt8Slot, "u8": b.PrependUint8Slot, "i32": b.PrependInt32Slot,
         "u32": b.PrependUint32Slot, "f32": b.PrependFloat32Slot, "bool": b.PrependBoolSlot,
         "off": b.PrependUOffsetTRelativeSlot}[kind](slot, value, default)
    return b.EndObject()


def serialize(tensors: list[Tensor], ops: list[Op], inputs: list[int], outputs: list[int],
              description: str) -> bytes:
    """The TFLite flatbuffer (file identifier TFL3) of one subgraph."""
    b = flatbuffers.Builder(4096)
    # buffers: 0 is the empty sentinel, then one per constant tensor
    buffer_of: dict[int, int] = {}
    buffers = [_table(b, 3, [])]
    for i, t in enumerate(tensors):
        if t.data is not None:
            data = _vec(b, "u8", t.data, 16)
            buffers.append(_table(b, 3, [("off", 0, data, 0)]))
            buffer_of[i] = len(buffers) - 1
    tensor_offs = []
    for i, t in enumerate(tensors):
        name = b.CreateString(t.name)
        shape = _vec(b, "i32", t.shape)
        sig = _vec(b, "i32", (-1,) + t.shape[1:]) if t.batch_dynamic else None
        quant = None
        if t.scales:
            sc = _vec(b, "f32", t.scales)
            zp = _vec(b, "i64", t.zero_points)
            quant = _table(b, 7, [("off", 2, sc, 0), ("off", 3, zp, 0), ("i32", 6, t.qdim, 0)])
        buf = buffer_of.get(i, 0) if t.buffer_override is None else t.buffer_override
        fields = [("off", 0, shape, 0), ("i8", 1, t.ttype, 0), ("u32", 2, buf, 0),
                  ("off", 3, name, 0)]
        if quant is not None:
            fields.append(("off", 4, quant, 0))
        if sig is not None:
            fields.append(("off", 7, sig, 0))
        tensor_offs.append(_table(b, 10, fields))
    codes = list(dict.fromkeys(op.name for op in ops))
    op_offs = []
    for op in ops:
        opts = None
        if op.options_type != OPT_NONE:
            scalar = []
            for kind, slot, value, default in op.options:
                if kind == "vec_i32":
                    scalar.append(("off", slot, _vec(b, "i32", value), 0))
                else:
                    scalar.append((kind, slot, value, default))
            opts = _table(b, 8, scalar)
        ins, outs = _vec(b, "i32", op.inputs), _vec(b, "i32", op.outputs)
        code = codes.index(op.name) if op.opcode_override is None else op.opcode_override
        fields = [("u32", 0, code, 0), ("off", 1, ins, 0), ("off", 2, outs, 0)]
        if opts is not None:
            fields += [("u8", 3, op.options_type, 0), ("off", 4, opts, 0)]
        op_offs.append(_table(b, 14, fields))
    sg_name = b.CreateString("main")
    sg = _table(b, 6, [("off", 0, _vec(b, "off", tensor_offs), 0),
                       ("off", 1, _vec(b, "i32", inputs), 0),
                       ("off", 2, _vec(b, "i32", outputs), 0),
                       ("off", 3, _vec(b, "off", op_offs), 0),
                       ("off", 4, sg_name, 0)])
    code_offs = []
    for name in codes:
        code, version = OPS[name]
        code_offs.append(_table(b, 4, [("i8", 0, min(code, PLACEHOLDER_FOR_GREATER_OP_CODES), 0),
                                       ("i32", 2, version, 1), ("i32", 3, code, 0)]))
    desc = b.CreateString(description)
    model = _table(b, 8, [("u32", 0, SCHEMA_VERSION, 0),
                          ("off", 1, _vec(b, "off", code_offs), 0),
                          ("off", 2, _vec(b, "off", [sg]), 0),
                          ("off", 3, desc, 0),
                          ("off", 4, _vec(b, "off", buffers), 0)])
    b.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())
