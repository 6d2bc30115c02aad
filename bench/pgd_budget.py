"""How large a Linf budget does PGD need on a model? Success rate against eps (issue 4 study).

For each model (given with --model, or MinNet trained on digits with QAT for 20 epochs, one per
--seeds entry) and each implementation (--impls: fp, q, or ax:MULTIPLIER), attacks the first
--n test images every implementation classifies correctly with

* ``pgd``: axlab's PGD at the thesis defaults (50 steps of 1/255, random start, CE loss);
* ``pgd-strong`` (FpNN only): logit-margin loss, 200 steps of 2/255, 5 random restarts,

and prints the success rates, one row per (model, implementation, attack), one column per eps.
With --plot, draws the curves to a PNG.

    python bench/pgd_budget.py --seeds 0,1,2 --plot docs/pgd_budget_digits.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRONG = {"loss": "margin", "steps": 200, "alpha": 2 / 255, "restarts": 5}


def success_rate(attack: str, params: dict, impl, x: np.ndarray, y: np.ndarray, idx: np.ndarray,
                 seed: int = 0) -> float:
    """Fraction of images whose adversarial image the implementation misclassifies."""
    from attacks.base import image_rngs
    from attacks.oracle import Oracle
    from attacks.registry import make_attack

    out = make_attack(attack, params)(Oracle(impl), x, y, image_rngs(seed, idx))
    return float((impl.predict_proba(out.adv).argmax(1) != y).mean())


def plot(rows: list[tuple[str, list[float]]], groups: list[str], eps_list: list[int], path: Path) -> None:
    """Success rate (%) against eps; one colour per implementation and attack, one line per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    kinds = list(dict.fromkeys(groups))
    for i, ((_, rates), group) in enumerate(zip(rows, groups)):
        n_models = groups.count(group)
        label = f"{group} ({n_models} model{'s' if n_models > 1 else ''})" if groups.index(group) == i else None
        ax.plot(eps_list, [r * 100 for r in rates], marker="o", color=f"C{kinds.index(group)}", alpha=0.8,
                linestyle="--" if "strong" in group else "-", label=label)
    ax.plot([8], [95], marker="*", markersize=12, color="black", linestyle="none",
            label="issue 4 target: 95 % at 8/255")
    ax.set_xlabel("Linf budget eps (x 1/255)")
    ax.set_ylabel("PGD success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(eps_list)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model file (repeatable); default: train MinNet")
    ap.add_argument("--seeds", default="0", help="training seeds when no --model is given")
    ap.add_argument("--impls", default="fp,q", help="fp, q, ax:MULTIPLIER (comma separated)")
    ap.add_argument("--eps", default="4,8,16,24,32", help="budgets in 1/255 steps")
    ap.add_argument("--n", type=int, default=100, help="images attacked")
    ap.add_argument("--no-strong", action="store_true", help="skip the strong PGD on the FpNN")
    ap.add_argument("--plot", help="PNG of success rate against eps")
    args = ap.parse_args(argv)

    from attacks.runner import select_evasion_set
    from nn.api import load_dataset, load_implementation, load_model

    eps_list = [int(e) for e in args.eps.split(",")]
    models: list[tuple[str, object]] = []
    if args.model:
        models = [(Path(m).stem, load_model(m)) for m in args.model]
    else:
        from nn.bundle import save_model
        from nn.train import train

        tmp = Path(tempfile.mkdtemp())
        for s in (int(v) for v in args.seeds.split(",")):
            path = tmp / f"minnet_s{s}.axm"
            save_model(train("minnet", "digits", epochs=20, qat=True, seed=s), path)
            models.append((f"minnet seed {s}", load_model(path)))
    x_all, y_all = load_dataset("digits", "test", 0)

    rows: list[tuple[str, list[float]]] = []
    groups: list[str] = []          # "implementation attack" of each row (plot colour)
    for label, bundle in models:
        impls = []
        for spec in args.impls.split(","):
            kind, _, mult = spec.partition(":")
            impls.append(load_implementation(bundle, kind, multiplier=mult or None,
                                             backend="torch" if kind == "fp" else "numba"))
        idx = select_evasion_set(impls, x_all, y_all, args.n)
        x, y = x_all[idx], y_all[idx]
        for impl in impls:
            variants = [("pgd", {})]
            if impl.impl == "fp" and not args.no_strong:
                variants.append(("pgd-strong", STRONG))
            for name, extra in variants:
                t0 = time.perf_counter()
                rates = [success_rate("pgd", {"eps": e / 255, **extra}, impl, x, y, idx) for e in eps_list]
                rows.append((f"{label} {impl.name} {name} (n={len(idx)})", rates))
                groups.append(f"{impl.name} {name}")
                print(f"{rows[-1][0]:48s} " + " ".join(f"{r * 100:5.1f}%" for r in rates)
                      + f"   [{time.perf_counter() - t0:.0f} s]", flush=True)

    print("\n| model, implementation, attack | " + " | ".join(f"{e}/255" for e in eps_list) + " |")
    print("|---|" + "---:|" * len(eps_list))
    for name, rates in rows:
        print(f"| {name} | " + " | ".join(f"{r * 100:.0f} %" for r in rates) + " |")
    if args.plot:
        plot(rows, groups, eps_list, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
