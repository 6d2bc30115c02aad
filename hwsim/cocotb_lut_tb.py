"""cocotb test bench run inside the simulator by :mod:`hwsim.rtlsim` (not imported by axlab itself).

The top level ``axlab_lut_top`` has operand buses ``A``, ``B`` holding ``lanes`` operand pairs
side by side and one product bus ``O_k`` per netlist under test. The job file
(``AXLAB_LUT_JOB``, an .npz) holds the operand codes and widths; the raw output bit patterns
are written to ``AXLAB_LUT_OUT`` (.npy, uint64, shape (K, N)). Any X or Z bit on an output
fails the run, naming the operands that produced it.
"""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer


def _pack(codes: np.ndarray, bits: int, lanes: int) -> list[int]:
    """Python ints, one per step: lane l's code in bits [l*bits, (l+1)*bits)."""
    steps = codes.reshape(-1, lanes)
    out = []
    for start in range(0, len(steps), 4096):
        chunk = steps[start:start + 4096]
        b = ((chunk[:, :, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
        packed = np.packbits(b.reshape(len(chunk), lanes * bits), axis=1, bitorder="little")
        out += [int.from_bytes(row.tobytes(), "little") for row in packed]
    return out


def _unpack(values: list[int], width: int, lanes: int) -> np.ndarray:
    """Inverse of _pack for one output bus: uint64 (steps * lanes,)."""
    nbytes = (width * lanes + 7) // 8
    raw = np.frombuffer(b"".join(v.to_bytes(nbytes, "little") for v in values), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(values), nbytes), axis=1, bitorder="little")[:, : width * lanes]
    bits = bits.reshape(len(values) * lanes, width).astype(np.uint64)
    return (bits << np.arange(width, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


@cocotb.test()
async def drive_all_pairs(dut):
    job = np.load(os.environ["AXLAB_LUT_JOB"])
    k, lanes = int(job["k"]), int(job["lanes"])
    bits = job["bits"].tolist()
    n = len(job["a"])
    pad = (-n) % lanes
    a = np.concatenate([job["a"], np.zeros(pad, np.uint64)])
    b = np.concatenate([job["b"], np.zeros(pad, np.uint64)])
    steps_a, steps_b = _pack(a, bits[0], lanes), _pack(b, bits[1], lanes)
    outs = [getattr(dut, f"O_{i}") for i in range(k)]
    read: list[list[int]] = [[] for _ in range(k)]
    port_a, port_b = dut.A, dut.B
    for step, (va, vb) in enumerate(zip(steps_a, steps_b)):
        port_a.value = va
        port_b.value = vb
        await Timer(1, "step")
        for i, o in enumerate(outs):
            v = o.value
            if not v.is_resolvable:
                lane = 0
                if lanes > 1:  # name the first lane with an unknown bit
                    text = str(v)[::-1]
                    lane = next(j // bits[2 + i] for j, c in enumerate(text) if c not in "01")
                idx = step * lanes + lane
                raise AssertionError(f"X/Z on output O_{i} for A={int(a[idx])} B={int(b[idx])}: {v}")
            read[i].append(v.to_unsigned())
    result = np.stack([_unpack(read[i], bits[2 + i], lanes)[:n] for i in range(k)])
    tmp = os.environ["AXLAB_LUT_OUT"] + ".tmp.npy"
    np.save(tmp, result)
    os.replace(tmp, os.environ["AXLAB_LUT_OUT"])
