"""axlab on an imported int8 TFLite model against LiteRT, images/s on the same images (issue 12).

Model: the MLPerf Tiny int8 ResNet8 (``../shared/models/mlperf-tiny/pretrainedResnet_quant.tflite``),
images: the first ``--images`` test images of ``cifar10:../shared/data/cifar-10-subset``.

Contenders, all on the same images:
  * LiteRT (PyPI ai-edge-litert; a peer, never an axlab dependency): default kernels (AUTO:
    optimised kernels + XNNPACK), ``num_threads=--threads``; a batch-1 invoke loop and, when the
    model's input can be resized (``resize_tensor_input``), one batched call; the faster of the
    two is the reference (both are printed). The batched call's outputs are checked against the
    loop's before it is used.
  * axlab's QNN (``impl q``) and the AxNN with each multiplier in every layer (``impl ax``,
    default: the 13 EvoApprox mul8s netlists of ../shared/evoapprox/mul8s), numba backend,
    numba threads = ``--threads``, batch ``--batch`` (default: all the images in one call, as
    LiteRT's batched call takes them), exact path auto. Each is run once
    untimed first (numba compilation, per-layer path choice).

Every axlab run is timed between two LiteRT runs (LiteRT, impl, LiteRT, impl, ...) and its ratio
is its images/s over the mean images/s of the LiteRT runs just before and after it. The whole
measurement is repeated ``--repeats`` times; each figure is the median over repeats with its
spread [min..max]. Printed: QNN / LiteRT (goal >= 1.0), each AxNN / LiteRT, the geometric
mean of the AxNN ratios (goal >= 0.25), and the share of the QNN's time spent in its conv /
dense layers with their images/s alone (what the rest of the QNN costs besides them). The
machine may be shared: quote figures from a quiet machine, with the load average this prints.

    python bench/tflite_throughput.py [--images 512] [--repeats 3] [--threads 2] [--batch N]
                                      [--multipliers a,b,...] [--quick]

The process runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it (torch's and
numba's OpenMP pools otherwise spin against each other; printed in the header).

``--quick`` (smoke test: 64 images, 1 repeat, 3 multipliers) checks that everything runs; its
figures mean nothing.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import statistics
from collections import Counter
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# torch (oneDNN convolutions) and numba (epilogues) each run an OpenMP thread pool; with the
# default (active) wait policy the idle pool spins on the cores the other one needs: 2-6x
# slower on 2 cores. Must be set before either runtime is loaded; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mlperf-tiny" / "pretrainedResnet_quant.tflite"
DATA = "cifar10:" + str(SHARED / "data" / "cifar-10-subset")
MULTS = SHARED / "evoapprox" / "mul8s"


def _spread(v: list[float], fmt: str = "{:.3f}") -> str:
    """median [min..max] of the repeats."""
    med = statistics.median(v)
    return fmt.format(med) if len(v) < 2 else f"{fmt.format(med)} [{fmt.format(min(v))}..{fmt.format(max(v))}]"


def _rate(fn: Callable[[], object], n: int) -> float:
    """images/s of one call of ``fn`` over ``n`` images."""
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


class LiteRT:
    """LiteRT's default kernels on NHWC int8 codes (pixel - 128): batch-1 loop and batched call."""

    def __init__(self, model: Path, codes: np.ndarray, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.codes = codes  # (N, H, W, C) of the input dtype
        self.loop_it = Interpreter(model_path=str(model), num_threads=threads)
        self.loop_it.allocate_tensors()
        self.inp = self.loop_it.get_input_details()[0]["index"]
        self.out = self.loop_it.get_output_details()[0]["index"]
        self.batch_it = None
        try:
            it = Interpreter(model_path=str(model), num_threads=threads)
            it.resize_tensor_input(it.get_input_details()[0]["index"], list(codes.shape))
            it.allocate_tensors()
            self.batch_it = it
        except (RuntimeError, ValueError) as exc:  # a model with a fixed batch of 1
            print(f"LiteRT: input cannot be resized to a batch ({' '.join(str(exc).split())[:120]}); loop only")

    def loop(self) -> np.ndarray:
        outs = []
        for img in self.codes:
            self.loop_it.set_tensor(self.inp, img[None])
            self.loop_it.invoke()
            outs.append(self.loop_it.get_tensor(self.out)[0].copy())
        return np.stack(outs)

    def batched(self) -> np.ndarray:
        it = self.batch_it
        it.set_tensor(it.get_input_details()[0]["index"], self.codes)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="LiteRT num_threads and numba threads")
    ap.add_argument("--batch", type=int, default=None, help="axlab batch size (default: --images, one call)")
    ap.add_argument("--multipliers", default=None, help="comma-separated netlists/LUTs (default: the 13 mul8s)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 64 images, 1 repeat, 3 multipliers")
    args = ap.parse_args()
    if args.quick:
        args.images, args.repeats = 64, 1
    if args.batch is None:
        args.batch = args.images
    if min(args.images, args.repeats, args.threads, args.batch) < 1:
        print("--images, --repeats, --threads and --batch must be >= 1", file=sys.stderr)
        return 2
    if not MODEL.exists() or not MULTS.exists():
        print(f"needs {MODEL} and {MULTS} (../shared)", file=sys.stderr)
        return 2
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        print("needs the peer ai-edge-litert (pip install -e '.[dev]')", file=sys.stderr)
        return 2

    import numba

    from nn import paths
    from nn.api import load_dataset, load_implementation, load_model

    paths.REMEASURE = True  # path auto: each layer's path chosen by this run's timings, not a cached choice

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    mults = args.multipliers.split(",") if args.multipliers else sorted(glob.glob(str(MULTS / "*.v")))
    if args.quick and not args.multipliers:
        mults = mults[:3]
    bundle = load_model(MODEL)
    x, _ = load_dataset(DATA, "test")
    x = x[: args.images]
    n = len(x)
    codes = (x.transpose(0, 2, 3, 1).astype(np.int16) - 128).astype(np.int8)  # int8 input: pixel - 128
    lite = LiteRT(MODEL, codes, args.threads)

    impls = {"QNN": load_implementation(bundle, "q", backend="numba", batch=args.batch)}
    for m in mults:
        impls[Path(m).stem] = load_implementation(bundle, "ax", multiplier=m, backend="numba", batch=args.batch)
    ref_out = lite.loop()
    q_out = impls["QNN"].logits(x)
    for impl in list(impls.values())[1:]:
        impl.logits(x[: min(n, args.batch)])  # warm-up: compilation and per-layer path choice
    paths.REMEASURE = False
    print(f"{n} images, LiteRT default kernels num_threads={args.threads}, numba threads "
          f"{numba.get_num_threads()}, axlab batch {args.batch}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"QNN codes equal to LiteRT default kernels' output codes: "
          f"{(q_out == ref_out.reshape(q_out.shape)).mean() * 100:.2f} % of {q_out.size}")

    # the LiteRT mode: the faster of loop and batched call (batched only if it gives the same codes)
    mode = "loop"
    loop_rate = statistics.median(_rate(lite.loop, n) for _ in range(3))
    batch_rate = None
    if lite.batch_it is not None:
        if np.array_equal(lite.batched().reshape(ref_out.shape), ref_out):
            batch_rate = statistics.median(_rate(lite.batched, n) for _ in range(3))
            mode = "batched" if batch_rate > loop_rate else "loop"
        else:
            print("LiteRT batched call gives other codes than the batch-1 loop: not used")
    print(f"LiteRT images/s: batch-1 loop {loop_rate:.0f}"
          + (f", batched call {batch_rate:.0f}" if batch_rate else "") + f" -> reference: {mode}")
    lite_fn = lite.batched if mode == "batched" else lite.loop

    ratios: dict[str, list[float]] = {k: [] for k in impls}
    rates: dict[str, list[float]] = {k: [] for k in ["LiteRT", *impls]}
    for _ in range(args.repeats):
        before = _rate(lite_fn, n)
        for name, impl in impls.items():
            r = _rate(lambda impl=impl: impl.logits(x), n)
            after = _rate(lite_fn, n)
            ratios[name].append(r / ((before + after) / 2))
            rates[name].append(r)
            rates["LiteRT"].append(after)
            before = after
    print(f"\n{'':14s}{'images/s':>22s}  {'/ LiteRT':>22s}")
    print(f"{'LiteRT':14s}{_spread(rates['LiteRT'], '{:.0f}'):>22s}")
    for name, impl in impls.items():
        kinds = Counter(v.split("(", 1)[-1].rstrip(")") for v in impl.engine.describe().values())
        how = ", ".join(f"{k} x{c}" for k, c in kinds.items())  # each layer's MAC path (nn/tflite_fast.py)
        print(f"{name:14s}{_spread(rates[name], '{:.0f}'):>22s}  {_spread(ratios[name]):>22s}   {how}")
    ax = [k for k in impls if k != "QNN"]
    q_ratio = statistics.median(ratios["QNN"])
    print(f"\nQNN / LiteRT: {q_ratio:.3f} (goal >= 1.0: {'met' if q_ratio >= 1.0 else 'NOT met'})")
    if ax:
        per_rep = [math.exp(statistics.fmean(math.log(ratios[k][i]) for k in ax)) for i in range(args.repeats)]
        g = statistics.median(per_rep)
        print(f"AxNN / LiteRT, geometric mean over {len(ax)} multipliers: {_spread(per_rep)} "
              f"(goal >= 0.25: {'met' if g >= 0.25 else 'NOT met'})")
    _layer_share(impls["QNN"], x, statistics.median(rates["LiteRT"]))
    if args.quick:
        print("(--quick: a smoke test; these figures mean nothing)")
    return 0


def _layer_share(impl: object, x: np.ndarray, lite_rate: float) -> None:
    """Where the QNN's time goes: one more run with its conv / depthwise / dense layers (MAC and
    requantisation, and the ADDs fused into them: nn.tflite_fast) timed apart from the rest
    (the other ADDs, pooling, softmax, glue)."""
    fast = impl.engine.fast
    spent = [0.0]
    orig = dict(fast)

    def timed(fn: Callable) -> Callable:
        def run(*a: object, **k: object) -> object:
            t = time.perf_counter()
            r = fn(*a, **k)
            spent[0] += time.perf_counter() - t
            return r
        return run

    try:
        for k, fn in orig.items():
            fast[k] = timed(fn)
        t = time.perf_counter()
        impl.logits(x)
        total = time.perf_counter() - t
    finally:
        fast.update(orig)
    rate = len(x) / spent[0]
    print(f"QNN time in its conv / dense layers (MAC + requantisation + fused ADDs): {spent[0] / total * 100:.0f} % "
          f"(the rest: pooling, softmax, other ADDs, glue); the layers alone run at {rate:.0f} images/s = "
          f"{rate / lite_rate:.2f}x LiteRT")


if __name__ == "__main__":
    sys.exit(main())
