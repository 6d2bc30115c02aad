"""AxNN throughput benchmark (issue 3).

ResNet8 (MLPerf Tiny, 16/32/64 filters) on 32x32x3 batches, PTQ-quantised with random
weights (throughput does not depend on the weights). For each multiplier in every layer:
AxNN images/s (numba backend: exact low-rank path where the LUT's error rank allows, gather
otherwise) divided by the images/s of the same network with exact float32 torch convolutions,
measured in the same run; plus the gather kernel's lookups/s on its own.

    python bench/nn_throughput.py [--batch 256] [--reps 5] [--multipliers a,b,...]

Multipliers default to the 13 mul8s netlists in ../shared/evoapprox (through hwsim.store);
LUT .npz files can be given instead.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--multipliers", default=None)
    args = ap.parse_args()

    from nn.design import resolve_multiplier
    from nn.engine import IntegerEngine
    from nn.models import build_model
    from nn.quant import GraphModule
    from nn.train import quantize_module

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, 3, 32, 32), dtype=np.uint8)
    bundle = quantize_module(build_model("resnet8", 3, 10).eval(), x, arch="resnet8")
    if args.multipliers:
        specs = [s for s in args.multipliers.split(",") if s]
    else:
        root = Path(__file__).resolve().parents[2] / "shared" / "evoapprox" / "mul8s"
        specs = sorted(glob.glob(str(root / "*.v")))
        if not specs:
            print("no multipliers: give --multipliers", file=sys.stderr)
            return 2
    luts = [resolve_multiplier(s) for s in specs]
    fm = GraphModule(bundle.graph, "float").eval()
    xf = torch.from_numpy(x).float() / 255.0

    def run_float() -> None:
        with torch.no_grad():
            fm(xf)

    print(f"ResNet8, batch {args.batch}x3x32x32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}")

    def interleaved(fn) -> tuple[float, float]:
        """min time of fn and of the float network, alternating (the machine is shared)."""
        fn(), run_float()
        tf, ta = [], []
        for _ in range(args.reps):
            t = time.perf_counter(); run_float(); tf.append(time.perf_counter() - t)
            t = time.perf_counter(); fn(); ta.append(time.perf_counter() - t)
        return min(tf), min(ta)

    q = IntegerEngine(bundle, None, "numba")
    tf, tq = interleaved(lambda: q.run_codes(x))
    print(f"float32 torch: {args.batch / tf:9.0f} img/s   QNN (numba): {args.batch / tq:9.0f} img/s "
          f"(ratio {tf / tq:.3f})")
    print(f"{'multiplier':14s} {'R':>3s} {'img/s':>9s} {'float img/s':>11s} {'ratio':>7s} {'goal':>7s} ok  path")
    ratios = []
    for lut in luts:
        eng = IntegerEngine(bundle, [lut] * len(bundle.layers()), "numba")
        macs = list(eng.macs.values())
        r = max(getattr(m, "R", 0) for m in macs)
        tf, ta = interleaved(lambda: eng.run_codes(x))
        ratio = tf / ta
        ratios.append(ratio)
        goal = 0.7 / (1 + r)
        kinds = sorted({m.kind for m in macs})
        print(f"{lut.name:14s} {r:3d} {args.batch / ta:9.0f} {args.batch / tf:11.0f} {ratio:7.3f} {goal:7.3f} "
              f"{'yes' if ratio >= goal else 'NO ':3s} {','.join(kinds)}")
    gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
    print(f"geometric mean ratio over {len(ratios)}: {gm:.3f} (goal >= 0.25)")

    # generic gather path: every layer through the numba gather kernel (lookups counted)
    lut = luts[-1]
    eng = IntegerEngine(bundle, [lut] * len(bundle.layers()), "numba", lowrank=False)
    tf, ta = interleaved(lambda: eng.run_codes(x))
    for m in eng.macs.values():
        m.lookups = 0
    t = time.perf_counter()
    eng.run_codes(x)
    dt = time.perf_counter() - t
    look = sum(m.lookups for m in eng.macs.values())
    print(f"gather path ({lut.name} in every layer, low-rank off): ratio {tf / ta:.3f}, "
          f"whole network {look / dt:.3e} lookups/s")
    # the kernel alone on a mid-network layer shape (32 -> 32 channels, 3x3, 16x16, batch)
    from nn import kernels_cpu

    xi = rng.integers(0, 256, (args.batch, 32, 18, 18), dtype=np.uint8)
    wk = rng.integers(0, 256, (32 * 9, 32), dtype=np.uint8)
    acc = np.empty((args.batch, 32, 256), np.int32)
    sidx = np.empty((args.batch, 256), np.int32)
    kernels_cpu.gather_conv(xi[:2], wk, lut.table, 3, 3, 1, 1, 16, 16, acc[:2], sidx[:2])
    best = min(_time(lambda: kernels_cpu.gather_conv(xi, wk, lut.table, 3, 3, 1, 1, 16, 16, acc, sidx))
               for _ in range(args.reps))
    print(f"gather kernel alone (32->32 3x3 on 16x16, batch {args.batch}): "
          f"{args.batch * 256 * 288 * 32 / best:.3e} lookups/s (goal >= 4e9)")
    return 0


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
