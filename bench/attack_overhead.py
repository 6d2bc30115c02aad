"""Attack overhead over raw batched inference (issue 4 benchmark).

Measures, in one run and on the same implementation: the oracle's raw images/s on batched
inference, and the queries/s that One-Pixel and Square achieve (all oracle images they send,
bookkeeping included); prints the ratios (goal >= 0.7).

    python bench/attack_overhead.py [--model m.pt --impl fp|q|ax --design d.json] [--n 32]

Without --model, a MinNet is trained on digits for 2 epochs (a few seconds) in a temporary
folder. Attacks run ``--n`` images at once (the runner's ``--batch``), so every One-Pixel
generation and every Square iteration is one batched query.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--impl", default="fp", choices=["fp", "q", "ax"])
    ap.add_argument("--design")
    ap.add_argument("--multiplier")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--n", type=int, default=32, help="images attacked at once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from attacks.base import image_rngs
    from attacks.oracle import Oracle
    from attacks.registry import make_attack
    from attacks.runner import select_evasion_set
    from nn.api import load_dataset, load_implementation, load_model

    if args.model:
        bundle = load_model(args.model)
    else:
        from nn.bundle import save_model
        from nn.train import train

        tmp = Path(tempfile.mkdtemp()) / "minnet.pt"
        save_model(train("minnet", "digits", epochs=2, qat=True, seed=0), tmp)
        bundle = load_model(tmp)
    impl = load_implementation(bundle, args.impl, design=args.design, multiplier=args.multiplier,
                               backend=args.backend)
    x, y = load_dataset("digits", "test", 0)
    idx = select_evasion_set([impl], x, y, args.n)
    xa, ya = x[idx], y[idx]

    def raw_rate(batch: int, seconds: float = 2.0) -> float:
        o = Oracle(impl)
        reps = np.resize(np.arange(len(xa)), batch)
        xb = xa[reps]
        o.predict_proba(xb)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            o.predict_proba(xb)
            n += batch
        return n / (time.perf_counter() - t0)

    results = []
    for name, params, batch in (
            ("onepixel", {"max_pixels": 1, "popsize": 80, "generations": 15}, 80 * args.n),
            ("square", {"eps": 8 / 255, "n_queries": 600}, args.n)):
        atk = make_attack(name, params)
        o = Oracle(impl)
        t0 = time.perf_counter()
        atk(o, xa, ya, image_rngs(0, idx))
        dt = time.perf_counter() - t0
        qps = o.total / dt
        raw = raw_rate(batch)
        results.append((name, qps, raw, qps / raw))
        print(f"{name:9s} {o.total:8d} queries in {dt:6.2f} s = {qps:9.0f} queries/s; raw oracle "
              f"at batch {batch}: {raw:9.0f} images/s; ratio {qps / raw:.2f}")
    big = raw_rate(1024)
    print(f"raw oracle at batch 1024: {big:.0f} images/s")
    for name, qps, _, _ in results:
        print(f"{name:9s} ratio vs batch-1024 inference: {qps / big:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
