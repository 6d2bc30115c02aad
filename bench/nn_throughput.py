"""AxNN throughput benchmark (issue 3).

ResNet8 (MLPerf Tiny, 16/32/64 filters) on 32x32x3 batches, PTQ-quantised with random
weights (throughput does not depend on the weights). For each multiplier in every layer:
AxNN images/s (numba backend: exact low-rank path where the LUT's error rank allows, gather
otherwise) divided by the images/s of the same network with exact float32 torch convolutions,
measured in the same run (runs alternate; the ratio is the median over runs of float time /
AxNN time with the float time averaged over the float runs just before and after), checked
against the goal 0.7/(1+R) for error rank R, and their geometric mean (goal >= 0.25). Then the
generic gather path (low-rank off, last multiplier in every layer): its ratio and the
lookups/s of the gather kernel the engine picks for each real layer of the network (goal
>= 4e9). The machine may be shared: compare ratios, not absolute figures.

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
        """Times of the float network and of fn, alternating (float, fn, float, ...) so that
        both see the same machine load; returns (float, fn) times whose ratio is the median
        of the ratios of adjacent runs (robust to a shared machine), as min-like times."""
        fn(), run_float()
        tf = [_time(run_float)]
        ta = []
        for _ in range(args.reps):
            ta.append(_time(fn))
            tf.append(_time(run_float))
        # each fn run is compared with the mean of the float runs just before and after it
        ratios = sorted((tf[i] + tf[i + 1]) / 2 / ta[i] for i in range(len(ta)))
        med = ratios[len(ratios) // 2]
        t_a = min(ta)
        return t_a * med, t_a

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
    dt = _time(lambda: eng.run_codes(x))
    look = sum(m.lookups for m in eng.macs.values())
    print(f"gather path ({lut.name} in every layer, low-rank off): ratio {tf / ta:.3f}, "
          f"whole network {look / dt:.3e} lookups/s (incl. index preparation, epilogues, adds)")
    # the kernel alone on each real layer of the network (its actual input indices)
    from nn import kernels_cpu

    inputs: dict[str, np.ndarray] = {}
    orig = dict(eng.macs)

    class Grab:  # records each layer's padded operand indices, then runs the real kernel
        def __init__(self, name: str, m) -> None:
            self.name, self.m, self.zc, self.const = name, m, m.zc, m.const

        def __call__(self, xx):
            inputs[self.name] = self.m.padded_idx(xx).contiguous().numpy()
            return self.m(xx)

    eng.macs = {k: Grab(k, m) for k, m in orig.items()}
    eng.run_codes(x)
    eng.macs = orig
    print(f"{'gather kernel, layer':24s} {'shape (C->Co, k/stride, out)':>30s} {'kernel':>6s} {'lookups/s':>10s}")
    from numba import get_num_threads

    tot_l = tot_t = 0.0
    for name, m in eng.macs.items():
        xi = inputs[name]
        n, co = xi.shape[0], m.wk.shape[1]
        kh, kw = m.L.w.shape[2:]
        ho, wo = m.out_size(xi.shape[2] - 2 * m.L.padding[0], xi.shape[3] - 2 * m.L.padding[1])
        acc = np.empty((n, co, ho * wo), np.int32)
        sidx = np.empty((n, ho * wo), np.int32)
        total = n * ho * wo
        tabs = m._tables() if total >= m.min_pixels_tab else None  # the engine's own choice
        if tabs is not None:
            tile = int(min(4096, max(512, total // (2 * get_num_threads()))))
            run = lambda: kernels_cpu.gather_conv_tab(xi, tabs, kh, kw, m.L.stride[0], m.L.stride[1], ho, wo, tile,
                                                       acc, sidx)
        else:
            run = lambda: kernels_cpu.gather_conv(xi, m.wk, m.table, kh, kw, m.L.stride[0], m.L.stride[1], ho, wo,
                                                   acc, sidx)
        run()
        best = min(_time(run) for _ in range(args.reps))
        n_look = total * m.wk.size
        tot_l, tot_t = tot_l + n_look, tot_t + best
        shape = f"{m.L.w.shape[1]}->{co}, {kh}x{kw}/{m.L.stride[0]}, {ho}x{wo}"
        print(f"{name:24s} {shape:>30s} {'tab' if tabs is not None else 'lut':>6s} {n_look / best:10.3e}")
    print(f"gather kernels, all layers of the network: {tot_l / tot_t:.3e} lookups/s (goal >= 4e9)")
    return 0


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
