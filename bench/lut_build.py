"""Benchmark: cold (empty cache) and warm LUT builds of a netlist folder, side by side.

    python bench/lut_build.py [FOLDER] [--sim verilator] [--jobs N]

Cold = empty LUT and simulator caches: parse, gate evaluation, one Verilator build per job,
cocotb simulation of all 65,536 pairs, RTL==gates check, metrics, yosys cost. Warm = the same
call again with the caches filled. Goals on the 2-core machine: cold < 60 s, warm < 1 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/evoapprox/mul8s"))
    ap.add_argument("--sim", default="verilator")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="axlab-bench-") as tmp:
        os.environ["AXLAB_CACHE"] = tmp
        from hwsim.store import build_luts

        t0 = time.perf_counter()
        cold = build_luts([args.folder], sim=args.sim, jobs=args.jobs)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = build_luts([args.folder], sim=args.sim, jobs=args.jobs)
        t_warm = time.perf_counter() - t0
    assert all(not r.cached for r in cold) and all(r.cached for r in warm)
    assert [r.lut.sha256 for r in cold] == [r.lut.sha256 for r in warm]
    ok = sum(bool(r.lut.meta.get("header_match")) for r in cold)
    print(f"netlists: {len(cold)} ({args.sim}, {os.cpu_count()} CPUs), header figures reproduced: {ok}/{len(cold)}")
    print(f"cold: {t_cold:7.2f} s   (goal < 60 s)")
    print(f"warm: {t_warm:7.3f} s   (goal < 1 s)")
    print(f"cold/warm: {t_cold / t_warm:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
