"""cocotb test bench of an axlab export (copied into ``<export>/tb/``; run by ``axlab export --verify``).

Runs in the export folder (the ROMs' ``$readmemh`` paths are relative to it). For each test
image: write the input codes (pixel - 128, two's complement) through the load port, pulse
``start``, wait for ``done`` (the clock is cocotb's C-implemented ``Clock``, so Python only
wakes up at the end of each image), read the output codes through the peek port and compare
them with the Python simulator's logits (``tb/expected.npy``) bit for bit.

Environment: ``AXLAB_EXPORT_IMAGES`` (how many of the stored images, default all),
``AXLAB_EXPORT_RESULT`` (JSON result path: per image the RTL and simulator logits, cycles).
"""
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge


@cocotb.test()
async def logits_bit_exact(dut):
    with open("tb/config.json") as fh:
        cfg = json.load(fh)
    images = np.load("tb/images.npy")      # uint8 (N, C, H, W)
    expected = np.load("tb/expected.npy")  # int32 (N, classes): simulator output codes
    n = min(int(os.environ.get("AXLAB_EXPORT_IMAGES", len(images))), len(images))
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.start.value = 0
    dut.load_we.value = 0
    dut.load_addr.value = 0
    dut.load_data.value = 0
    dut.peek_addr.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    rows = []
    for i in range(n):
        dut.load_we.value = 1
        for a, v in enumerate(images[i].reshape(-1).tolist()):
            dut.load_addr.value = cfg["in_base"] + a
            dut.load_data.value = v ^ 0x80  # code = pixel - 128 as an 8-bit pattern
            await RisingEdge(dut.clk)
        dut.load_we.value = 0
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.done)
        cycles = int(dut.cycles.value)
        got = []
        for c in range(cfg["classes"]):
            dut.peek_addr.value = cfg["out_base"] + c
            await FallingEdge(dut.clk)  # the RAM registers its read on the falling edge ...
            await RisingEdge(dut.clk)   # ... so the byte is read back at the next rising edge
            got.append(dut.peek_data.value.to_signed())
        want = [int(v) for v in expected[i]]
        rows.append({"image": i, "rtl": got, "sim": want, "match": got == want, "cycles": cycles})
        dut._log.info("image %d: %s (%d cycles)", i, "bit-exact" if got == want else f"MISMATCH rtl={got} sim={want}",
                      cycles)
    out = os.environ.get("AXLAB_EXPORT_RESULT")
    if out:
        with open(out + ".tmp", "w") as fh:
            json.dump({"images": n, "bit_exact": sum(r["match"] for r in rows), "rows": rows}, fh)
        os.replace(out + ".tmp", out)
    bad = [r["image"] for r in rows if not r["match"]]
    assert not bad, f"RTL logits differ from the simulator on images {bad}"
