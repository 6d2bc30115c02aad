"""Accuracy table for the README: test accuracy of a model's QNN and of its AxNN with each
multiplier in every approximable layer, printed as markdown.

    python bench/nn_accuracy_table.py --model /tmp/minnet.axm [--dataset digits] [--backend numba]
        [--multipliers a,b,...] [--sim gates]

The model is an ``axlab train`` output (e.g. ``axlab train --model minnet --dataset digits
--qat --seed 0 --out /tmp/minnet.axm``). Multipliers default to the 13 EvoApprox mul8s
netlists in ../shared/evoapprox/mul8s (when present) followed by the built-in family; each is
resolved through ``hwsim.store.resolve(spec, sim)`` (the LUT cache makes reruns fast).
Columns: multiplier, error rank R of its LUT, signedness, MAE of the LUT (from its metrics when
known), AxNN test accuracy, change versus the QNN, and the kernel path the numba backend used.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _default_specs() -> list[str]:
    from hwsim.builtin import builtin_names

    root = Path(__file__).resolve().parents[2] / "shared" / "evoapprox" / "mul8s"
    return sorted(glob.glob(str(root / "*.v"))) + builtin_names()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model file written by `axlab train`")
    ap.add_argument("--dataset", default=None, help="default: the model's dataset")
    ap.add_argument("--split", default="test")
    ap.add_argument("--backend", default="numba", choices=["torch", "numba", "cuda"])
    ap.add_argument("--multipliers", default=None, help="comma-separated specs (default: evoapprox + built-ins)")
    ap.add_argument("--sim", default="gates", help="simulator used to build netlist LUTs (default gates)")
    args = ap.parse_args()

    from hwsim.errors import AxlabError
    from hwsim.store import resolve
    from nn.api import fq_agreement, load_dataset, load_implementation, load_model
    from nn.lut_forms import lut_factor

    try:
        bundle = load_model(args.model)
        ds = args.dataset or bundle.dataset
        x, y = load_dataset(ds, args.split)
        specs = [s for s in args.multipliers.split(",") if s] if args.multipliers else _default_specs()
        t0 = time.time()
        q = load_implementation(bundle, "q", backend=args.backend)
        acc_q = float((q.logits(x).argmax(1) == y).mean())
        agree = fq_agreement(bundle, x, backend=args.backend)
        rows = []
        for spec in specs:
            lut = resolve(spec, sim=args.sim)
            design = {"name": lut.name, "layers": [{"layer": ly, "multiplier": lut.name, "source": spec,
                                                    "lut_sha256": lut.sha256} for ly in bundle.layers()]}
            impl = load_implementation(bundle, "ax", design=design, backend=args.backend)
            acc = float((impl.logits(x).argmax(1) == y).mean())
            f = lut_factor(lut)
            mae = (lut.meta.get("metrics") or {}).get("mae")
            kinds = sorted(set(impl.engine.describe().values()))
            rows.append((lut.name, "full" if f is None else str(f.rank), "s" if lut.signed else "u",
                         "" if mae is None else f"{mae:.1f}", acc, acc - acc_q, ", ".join(kinds)))
    except AxlabError as exc:
        print(f"nn_accuracy_table: {exc}", file=sys.stderr)
        return 2
    meta = bundle.meta
    print(f"Model `{args.model}` ({bundle.arch}, {ds}/{args.split}, {len(y)} images; "
          f"{meta.get('epochs')} epochs{' with QAT' if meta.get('qat') else ''}, seed {meta.get('seed')}); "
          f"backend {args.backend}; {time.time() - t0:.0f} s.")
    print()
    print(f"QNN (exact int8): **{acc_q * 100:.2f} %**; QNN vs fake-quant top-1 agreement "
          f"{agree['top1'] * 100:.2f} % (output codes equal: {agree['codes'] * 100:.2f} %).")
    print()
    print("| multiplier (all layers) | error rank R | signed | MAE | AxNN accuracy | vs QNN | numba path |")
    print("|---|---:|:---:|---:|---:|---:|---|")
    for name, r, sg, mae, acc, d, kinds in rows:
        print(f"| {name} | {r} | {sg} | {mae} | {acc * 100:.2f} % | {d * 100:+.2f} | {kinds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
