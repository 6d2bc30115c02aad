"""Gate graph of a combinational netlist and its bit-parallel numpy evaluator.

The graph is a list of single-bit nodes in topological order (every node's inputs come
before it). Evaluation packs 64 operand pairs into each uint64 word, so one numpy
operation evaluates a gate for a whole chunk of operand pairs at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# node opcodes
CONST0, CONST1, IN_A, IN_B, NOT, AND, OR, XOR, MUX = range(9)
OP_NAMES = ["const0", "const1", "A", "B", "not", "and", "or", "xor", "mux"]


@dataclass
class GateGraph:
    """Single-bit nodes; ``outputs[k]`` is the node driving output bit k (LSB first).

    A node is ``(op, x, y, z)``: for IN_A/IN_B, ``x`` is the bit index; for gates x, y, z are
    input node ids (MUX: z ? y : x).
    """

    bits_a: int
    bits_b: int
    nodes: list[tuple[int, int, int, int]] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    _memo: dict[tuple[int, int, int, int], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.const(0), self.const(1)  # node 0 = 0, node 1 = 1

    def add(self, op: int, x: int = -1, y: int = -1, z: int = -1) -> int:
        """Add a node (structurally hashed, constant-folded) and return its id."""
        if op in (AND, OR, XOR) and x > y:  # commutative: canonical order
            x, y = y, x
        if op == NOT and x in (0, 1):
            return 1 - x
        if op == AND:
            if x == 0 or y == 0:
                return 0
            if x == 1:
                return y
            if x == y:
                return x
        if op == OR:
            if x == 1 or y == 1:
                return 1
            if x == 0:
                return y
            if x == y:
                return x
        if op == XOR:
            if x == 0:
                return y
            if x == y:
                return 0
            if x == 1:
                return self.add(NOT, y)
        if op == MUX:
            if z in (0, 1):
                return y if z else x
            if x == y:
                return x
        key = (op, x, y, z)
        nid = self._memo.get(key)
        if nid is None:
            nid = len(self.nodes)
            self.nodes.append(key)
            self._memo[key] = nid
        return nid

    def const(self, v: int) -> int:
        key = (CONST1 if v else CONST0, -1, -1, -1)
        if key not in self._memo:
            self._memo[key] = len(self.nodes)
            self.nodes.append(key)
        return self._memo[key]

    def gate_counts(self) -> dict[str, int]:
        """How many 2-input-equivalent gates of each kind the graph holds."""
        counts: dict[str, int] = {}
        for op, *_ in self.nodes:
            if op >= NOT:
                counts[OP_NAMES[op]] = counts.get(OP_NAMES[op], 0) + 1
        return counts

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Raw output bit patterns (uint64, LSB = output bit 0) for operand codes a, b.

        ``a``, ``b``: unsigned operand codes (bit patterns), same 1-D shape.
        """
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        n = a.size
        words = (n + 63) // 64

        def pack(bits: np.ndarray) -> np.ndarray:
            packed = np.packbits(bits.astype(bool), bitorder="little")
            buf = np.zeros(words * 8, dtype=np.uint8)
            buf[: packed.size] = packed
            return buf.view("<u8")

        ones = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF))
        zeros = np.zeros(words, dtype=np.uint64)
        vals: list[np.ndarray | None] = [None] * len(self.nodes)
        # free a node's words after its last reader: keeps memory flat on big chunks
        last_use = [-1] * len(self.nodes)
        for i, (op, x, y, z) in enumerate(self.nodes):
            if op >= NOT:
                for j in (x, y, z):
                    if j >= 0:
                        last_use[j] = i
        keep = set(self.outputs)
        for i, (op, x, y, z) in enumerate(self.nodes):
            if op == CONST0:
                v = zeros
            elif op == CONST1:
                v = ones
            elif op == IN_A:
                v = pack((a >> np.uint64(x)) & np.uint64(1))
            elif op == IN_B:
                v = pack((b >> np.uint64(x)) & np.uint64(1))
            elif op == NOT:
                v = ~vals[x]
            elif op == AND:
                v = vals[x] & vals[y]
            elif op == OR:
                v = vals[x] | vals[y]
            elif op == XOR:
                v = vals[x] ^ vals[y]
            else:  # MUX: z ? y : x
                s = vals[z]
                v = (vals[y] & s) | (vals[x] & ~s)
            vals[i] = v
            if op >= NOT:
                for j in (x, y, z):
                    if j >= 2 and last_use[j] == i and j not in keep:
                        vals[j] = None
        out = np.zeros(n, dtype=np.uint64)
        for k, nid in enumerate(self.outputs):
            bits = np.unpackbits(vals[nid].view(np.uint8), bitorder="little")[:n]
            out |= bits.astype(np.uint64) << np.uint64(k)
        return out


def to_signed(raw: np.ndarray, width: int, signed: bool) -> np.ndarray:
    """Interpret ``width``-bit patterns as two's-complement (signed) or plain integers, int64."""
    v = raw.astype(np.int64)
    if signed:
        v = np.where(v >= 2 ** (width - 1), v - 2**width, v)
    return v
