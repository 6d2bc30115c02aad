"""The numba-cuda backend, run in numba's CUDA simulator (a subprocess: the simulator must be
enabled before numba.cuda is first imported). Tiny inputs: the simulator is slow."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    from torch import nn as tnn
    from hwsim.lut import exact_lut
    from nn.engine import IntegerEngine
    from nn.train import quantize_module
    from tests.nn_fixtures import fullrank_lut, lowrank_lut, real_luts

    class Tiny(tnn.Module):  # conv (padded, strided), residual add, pool, dense: every op kind
        def __init__(self):
            super().__init__()
            self.c1 = tnn.Conv2d(1, 4, 3, padding=1)
            self.c2 = tnn.Conv2d(4, 4, 3, stride=1, padding=1)
            self.c3 = tnn.Conv2d(4, 6, 3, stride=2)
            self.fc = tnn.Linear(6 * 3 * 3, 5)
        def forward(self, x):
            y = torch.relu(self.c1(x))
            y = torch.relu(self.c2(y) + y)
            y = torch.relu(self.c3(y))
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)
    b = quantize_module(Tiny().eval(), rng.integers(0, 256, (32, 1, 8, 8), dtype=np.uint8))
    synthetic = [exact_lut(8, True), exact_lut(8, False), lowrank_lut(1, 2), lowrank_lut(4, 3, signed=False),
                 fullrank_lut(2), fullrank_lut(3, signed=False)]
    for lut in synthetic:
        luts = [lut] * len(b.layers())
        ref = IntegerEngine(b, luts, "torch").logits(x)
        cu = IntegerEngine(b, luts, "cuda").logits(x)
        assert np.array_equal(ref, cu), (lut.name, ref, cu)
        print("ok", lut.name)
    # every real LUT (13 EvoApprox mul8s + the built-in family) on one image, all layers
    for lut in real_luts():
        luts = [lut] * len(b.layers())
        ref = IntegerEngine(b, luts, "torch").logits(x[:1])
        cu = IntegerEngine(b, luts, "cuda").logits(x[:1])
        assert np.array_equal(ref, cu), (lut.name, ref, cu)
        print("ok", lut.name)
    print("ALL-OK")
""")


def test_cuda_backend_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "ALL-OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]
