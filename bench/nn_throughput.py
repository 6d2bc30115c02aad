"""AxNN throughput benchmark (issues 3 and 14).

ResNet8 (MLPerf Tiny, 16/32/64 filters) on 32x32x3 batches, PTQ-quantised with random weights
(throughput does not depend on the weights), numba backend against the same network with exact
float32 torch convolutions, measured in the same run. Every figure is a ratio of adjacent runs:
float and integer runs alternate (float, int, float, ...) and each integer run is compared with
the mean of the float runs just before and after it; a measurement is the median of those
ratios. The whole measurement is repeated ``--repeats`` times (default 3) and each figure is
printed as the median over the repeats with its spread (min..max).

Figures:
  * QNN / float32 (goal >= 0.9);
  * for each multiplier in every layer: AxNN / float32 with the exact path chosen per layer
    (``--path``, default auto: measured per layer on the first batch of the first repeat of
    this run, not taken from an older choice cache; later repeats reuse that choice, nn.paths;
    the chosen paths are listed), its goal max(0.7/(1+R), the gather path's ratio) for error
    rank R, and the geometric mean over the multipliers (goal >= 0.30). Column S: channel sets
    of the fused path (rank of the whole product table) where it has fewer than 1 + R;
  * the generic gather path (every layer through the gather kernels, last multiplier): its
    ratio and the lookups/s of the gather kernel the engine picks for each real layer of the
    network (goal >= 4e9).
The machine may be shared: compare ratios, not absolute images/s; quote figures from a quiet
machine only (the load average is printed before and after).

    python bench/nn_throughput.py [--batch 256] [--reps 5] [--repeats 3] [--path auto]
                                  [--multipliers a,b,...] [--quick]

``--quick`` (smoke test: batch 32, 2 reps, 1 repeat, 3 multipliers) checks that everything runs;
its figures mean nothing. The full run (13 multipliers, 3 repeats) takes about 10 minutes on a
quiet 2-core machine. Multipliers default to the 13 mul8s netlists in ../shared/evoapprox
(through hwsim.store); LUT .npz files can be given instead.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _spread(v: list[float], fmt: str = "{:.3f}") -> str:
    """median [min..max] of the repeats."""
    med = statistics.median(v)
    return fmt.format(med) if len(v) < 2 else f"{fmt.format(med)} [{fmt.format(min(v))}..{fmt.format(max(v))}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5, help="integer runs per measurement (float runs: reps + 1)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the whole measurement")
    ap.add_argument("--path", default="auto", choices=["auto", "lowrank", "fused", "gather"])
    ap.add_argument("--multipliers", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 32, 2 reps, 1 repeat, 3 multipliers")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.reps, args.repeats = 32, 2, 1
    if min(args.batch, args.reps, args.repeats) < 1:
        print("--batch, --reps and --repeats must be >= 1", file=sys.stderr)
        return 2

    from numba import get_num_threads

    from nn import paths
    from nn.design import resolve_multiplier
    from nn.engine import IntegerEngine
    from nn.lut_forms import fused_factor, lut_factor
    from nn.models import build_model
    from nn.quant import GraphModule
    from nn.train import quantize_module

    paths.REMEASURE = True  # path auto: choose by this run's timings, not by a cached choice
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
    if args.quick:
        specs = specs[:2] + specs[-1:] if len(specs) > 3 else specs
    luts = [resolve_multiplier(s) for s in specs]
    n_layers = len(bundle.layers())
    fm = GraphModule(bundle.graph, "float").eval()
    xf = torch.from_numpy(x).float() / 255.0

    def run_float() -> None:
        with torch.no_grad():
            fm(xf)

    import numba

    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs ({_cores()}); torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numba {numba.__version__} ({get_num_threads()} threads), "
          f"numpy {np.__version__}, Python {sys.version.split()[0]}")
    print(f"ResNet8, batch {args.batch}x3x32x32, path {args.path}, {args.repeats} repeats x {args.reps} reps, "
          f"load average at start {_load()}", flush=True)
    t_start = time.perf_counter()

    def interleaved(fn: Callable[[], object]) -> tuple[float, float]:
        """(ratio float time / fn time, fn images/s): fn and the float network alternate so that
        both see the same machine load; the ratio is the median over fn's runs of the mean of the
        float runs just before and after it divided by fn's time; images/s from fn's best run."""
        fn(), run_float()  # warm-up (and, with path auto, the per-layer path measurement)
        tf = [_time(run_float)]
        ta = []
        for _ in range(args.reps):
            ta.append(_time(fn))
            tf.append(_time(run_float))
        ratios = [(tf[i] + tf[i + 1]) / 2 / ta[i] for i in range(len(ta))]
        return statistics.median(ratios), args.batch / min(ta)

    qnn: list[float] = []
    ax: dict[str, list[float]] = {lut.name: [] for lut in luts}
    ax_ips: dict[str, list[float]] = {lut.name: [] for lut in luts}
    rank = {lut.name: (f.rank if (f := lut_factor(lut)) is not None else None) for lut in luts}
    sets = {lut.name: (f.rank if (f := fused_factor(lut)) is not None else None) for lut in luts}
    chosen: dict[str, Counter] = {lut.name: Counter() for lut in luts}
    gather: list[float] = []
    net_lookups: list[float] = []
    kern: dict[str, list[float]] = {}
    kern_info: dict[str, str] = {}
    kern_total: list[float] = []
    for rep in range(args.repeats):
        paths.REMEASURE = rep == 0  # later repeats reuse the first repeat's (cached) choices
        q = IntegerEngine(bundle, None, "numba")
        qnn.append(interleaved(lambda: q.run_codes(x))[0])
        del q
        for lut in luts:
            eng = IntegerEngine(bundle, [lut] * n_layers, "numba", path=args.path)
            ratio, ips = interleaved(lambda: eng.run_codes(x))
            ax[lut.name].append(ratio)
            ax_ips[lut.name].append(ips)
            chosen[lut.name].update(r["path"] for r in eng.path_report().values())
            del eng
        # generic gather path, every layer, with lookups counted over one more run
        eng = IntegerEngine(bundle, [luts[-1]] * n_layers, "numba", path="gather")
        gather.append(interleaved(lambda: eng.run_codes(x))[0])
        for m in eng.macs.values():
            m.lookups = 0
        dt = _time(lambda: eng.run_codes(x))
        net_lookups.append(sum(m.lookups for m in eng.macs.values()) / dt)
        tl, tt = _kernel_lookups(eng, x, args.reps, kern, kern_info)
        kern_total.append(tl / tt)
        del eng
        print(f"repeat {rep + 1}/{args.repeats}: QNN {qnn[-1]:.3f}, gather path {gather[-1]:.3f}, geometric mean "
              f"{_gmean([ax[k][-1] for k in ax]):.3f} ({time.perf_counter() - t_start:.0f} s, load average "
              f"{_load()})", flush=True)

    print()
    print(f"QNN (exact, numba) / float32 torch: {_spread(qnn)} (goal >= 0.9)")
    g_med = statistics.median(gather)
    print(f"gather path ({luts[-1].name} in every layer) / float32 torch: {_spread(gather)}")
    print(f"{'multiplier':14s} {'R':>2s} {'S':>2s} {'AxNN img/s':>10s} {'ratio median [min..max]':>25s} "
          f"{'goal':>6s} met  layer paths (all repeats)")
    met = 0
    for lut in luts:
        r = rank[lut.name]
        goal = max(0.7 / (1 + (r if r is not None else 8)), g_med)
        med = statistics.median(ax[lut.name])
        met += med >= goal
        used = ", ".join(f"{k} x{v}" for k, v in sorted(chosen[lut.name].items()))
        rs = f"{r:2d}" if r is not None else " -"
        ss = f"{sets[lut.name]:2d}" if sets[lut.name] is not None else " -"
        print(f"{lut.name:14s} {rs} {ss} {statistics.median(ax_ips[lut.name]):10.0f} {_spread(ax[lut.name]):>25s} "
              f"{goal:6.3f} {'yes' if med >= goal else 'NO ':3s}  {used}")
    gm = _gmean([statistics.median(v) for v in ax.values()])
    gms = [_gmean([v[i] for v in ax.values()]) for i in range(args.repeats)]
    print(f"geometric mean ratio over {len(luts)}: {gm:.3f} (goal >= 0.30; per repeat {_spread(gms)})")
    print(f"{met} of {len(luts)} multipliers meet max(0.7/(1+R), gather-path ratio {g_med:.3f})")
    print()
    print(f"{'gather kernel, layer':24s} {'shape (C->Co, k/stride, out)':>30s} {'kernel':>6s} "
          f"{'lookups/s median [min..max]':>33s}")
    for name, v in kern.items():
        print(f"{name:24s} {kern_info[name]:>40s} {_spread(v, '{:.2e}'):>33s}")
    print(f"gather kernels, all layers of the network: {_spread(kern_total, '{:.2e}')} lookups/s (goal >= 4e9); "
          f"whole network incl. index preparation, epilogues and adds: {_spread(net_lookups, '{:.2e}')}")
    print(f"wall time {time.perf_counter() - t_start:.0f} s, load average at the end {_load()}; numba threading "
          f"layer {numba.threading_layer()}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cores() -> str:
    """Physical cores (distinct physical id / core id pairs in /proc/cpuinfo) where it says."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return "cores unknown"
    cores = set()
    for b in blocks:
        kv = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in b.splitlines())}
        if "core id" in kv:
            cores.add((kv.get("physical id"), kv["core id"]))
    return f"{len(cores)} physical cores" if cores else "cores unknown"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _gmean(v: list[float]) -> float:
    return math.exp(sum(math.log(a) for a in v) / len(v))


def _kernel_lookups(eng, x: np.ndarray, reps: int, kern: dict[str, list[float]],
                    info: dict[str, str]) -> tuple[float, float]:
    """The gather kernel alone on each real layer of the network (its actual input indices):
    appends each layer's lookups/s to ``kern``; returns (all lookups, all seconds)."""
    from numba import get_num_threads

    from nn import kernels_cpu

    inputs: dict[str, np.ndarray] = {}
    for name, lp in eng.paths.items():  # record each layer's padded operand indices
        m = lp.cands["gather"]
        real = lp.run_one

        def grab(mac, xx, name=name, real=real):
            inputs[name] = mac.padded_idx(xx).contiguous().numpy()
            return real(mac, xx)

        lp.run_one = grab
    eng.run_codes(x)
    tot_l = tot_t = 0.0
    for name, lp in eng.paths.items():
        m = lp.cands["gather"]
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

            def run():
                kernels_cpu.gather_conv_tab(xi, tabs, kh, kw, m.L.stride[0], m.L.stride[1], ho, wo, tile, acc, sidx)
        else:
            def run():
                kernels_cpu.gather_conv(xi, m.wk, m.table, kh, kw, m.L.stride[0], m.L.stride[1], ho, wo, acc, sidx)
        run()
        best = min(_time(run) for _ in range(reps))
        n_look = total * m.wk.size
        tot_l, tot_t = tot_l + n_look, tot_t + best
        kern.setdefault(name, []).append(n_look / best)
        info[name] = (f"{m.L.w.shape[1]}->{co}, {kh}x{kw}/{m.L.stride[0]}, {ho}x{wo}".rjust(30)
                      + f" {'tab' if tabs is not None else 'lut':>9s}")
    return tot_l, tot_t


if __name__ == "__main__":
    sys.exit(main())
