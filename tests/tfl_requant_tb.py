"""cocotb bench of rtl/axlab_tfl_requant.v (run by tests/test_export_tflite.py): drives the
(acc, M, shift, single, zo, lo, hi) rows of ``$AXLAB_TFL_JOB`` (.npy, int64 (N, 7)) into
axlab_tfl_requant and writes, per row, the 64-bit MultiplyByQuantizedMultiplier result (the
internal ``s``) and the output code ``q`` to ``$AXLAB_TFL_OUT`` (.npy, int64 (N, 2))."""
import os

import cocotb
import numpy as np
from cocotb.triggers import Timer


@cocotb.test()
async def requant_rows(dut):
    rows = np.load(os.environ["AXLAB_TFL_JOB"])
    out = np.zeros((len(rows), 2), dtype=np.int64)
    for i, (acc, m, sh, single, zo, lo, hi) in enumerate(rows.tolist()):
        dut.acc.value = acc & 0xFFFFFFFF
        dut.mult.value = m & 0xFFFFFFFF
        dut.shift.value = sh & 0xFF
        dut.single.value = single
        dut.zo.value = zo & 0xFF
        dut.lo.value = lo & 0xFF
        dut.hi.value = hi & 0xFF
        await Timer(1, unit="ns")
        out[i, 0] = dut.s.value.to_signed()
        out[i, 1] = dut.q.value.to_signed()
    np.save(os.environ["AXLAB_TFL_OUT"], out)
