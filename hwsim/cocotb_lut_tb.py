"""cocotb test bench run inside the simulator by :mod:`hwsim.rtlsim` (not imported by axlab itself).

The top level ``axlab_lut_top`` has operands ``A``, ``B`` and one product output ``O_k`` per
netlist under test. The job file (``AXLAB_LUT_JOB``, an .npz) holds the operand codes to drive;
the raw output bit patterns are written to ``AXLAB_LUT_OUT`` (.npy, uint64, shape (K, N)).
Any X or Z bit on an output fails the run with the operands that produced it.
"""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer


@cocotb.test()
async def drive_all_pairs(dut):
    job = np.load(os.environ["AXLAB_LUT_JOB"])
    a_codes, b_codes, k = job["a"].tolist(), job["b"].tolist(), int(job["k"])
    outs = [getattr(dut, f"O_{i}") for i in range(k)]
    result = np.zeros((k, len(a_codes)), dtype=np.uint64)
    port_a, port_b = dut.A, dut.B
    for n, (a, b) in enumerate(zip(a_codes, b_codes)):
        port_a.value = a
        port_b.value = b
        await Timer(1, "step")
        for i, o in enumerate(outs):
            v = o.value
            if not v.is_resolvable:
                raise AssertionError(f"X/Z on output O_{i} for A={a} B={b}: {v}")
            result[i, n] = v.to_unsigned()
    tmp = os.environ["AXLAB_LUT_OUT"] + ".tmp.npy"
    np.save(tmp, result)
    os.replace(tmp, os.environ["AXLAB_LUT_OUT"])
