"""Spearman correlation of axlab's 45 nm cost estimate with the published PDK45 figures.

    python bench/cost_correlation.py [FOLDER]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from scipy.stats import spearmanr

    from hwsim.store import build_luts

    folder = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "shared/evoapprox/mul8s")
    rows = []
    for r in build_luts([folder], sim="gates"):
        c = r.lut.meta["cost"]
        rows.append((r.lut.name, c["area_um2"], c["estimate"]["area_um2"], c["power_mw"], c["estimate"]["power_mw"]))
    print(f"{'name':14} {'area pub':>9} {'area est':>9} {'power pub':>9} {'power est':>9}")
    for row in rows:
        print(f"{row[0]:14} {row[1]:9.1f} {row[2]:9.1f} {row[3]:9.3f} {row[4]:9.3f}")
    _, ap, ae, pp, pe = zip(*rows)
    print(f"Spearman area: {spearmanr(ap, ae)[0]:.3f}   power: {spearmanr(pp, pe)[0]:.3f}   (n={len(rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
