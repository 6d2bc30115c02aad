"""Transferability: adversarial examples crafted on one implementation fed to others.

For a source run (the successful adversarial images of ``RUN.jsonl``) and a target
implementation, the transfer rate is the fraction of those images the target misclassifies,
counted over the images whose clean version the target classifies correctly (so a target's own
test errors are not counted as transfers). Outputs, like thesis Table 4.7: a long CSV
(``transfer.csv``: source, target, rate, transferred, valid), the rate matrix
(``transfer_matrix.csv``: rows = sources, columns = targets) and a heatmap PNG.
Multi-source perturbations (crafted against several AxNNs at once) are runs made on an
:class:`attacks.implspec.Ensemble` (``axlab attack --ensemble SPEC...``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attacks.runner import Run
from hwsim.errors import AxlabError


def transfer_rates(runs: Sequence[Run], targets: Sequence[tuple[str, Any]],
                   progress: bool = False) -> list[dict[str, Any]]:
    """One row per (source run, target): rate, transferred, valid. A run whose images do not
    fit a target's model input is refused (one line naming the run file) before any work."""
    from attacks.run_images import check_fits

    for run in runs:
        for tname, impl in targets:
            for member in getattr(impl, "members", [impl]):  # an Ensemble: each of its models
                bundle = getattr(member, "bundle", None)
                if bundle is not None:
                    check_fits(run.adv, run.path, tname, bundle.input_shape)
    rows = []
    total = len(runs) * len(targets)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="transfer", unit="pair")
    for run in runs:
        ok = run.success
        adv, clean, lab = run.adv[ok], run.clean[ok], run.labels[ok]
        src = source_label(run)
        for tname, impl in targets:
            if len(adv):
                valid = np.asarray(impl.predict_proba(clean)).argmax(1) == lab
                fooled = np.asarray(impl.predict_proba(adv)).argmax(1) != lab
                nv, nt = int(valid.sum()), int((fooled & valid).sum())
            else:
                nv = nt = 0
            rows.append({"source": src, "target": tname, "rate": nt / nv if nv else float("nan"),
                         "transferred": nt, "valid": nv})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def source_label(run: Run) -> str:
    """``attack@model:implementation``, e.g. ``pgd@minnet:ax:mul8s_1KVA`` (the model file's stem
    keeps runs of different networks apart)."""
    attack = run.meta.get("attack", "?")
    model = run.meta.get("model")
    return f"{attack}@{Path(model).stem}:{run.source}" if model else f"{attack}@{run.source}"


def write_transfer(rows: list[dict[str, Any]], out_dir: str | os.PathLike,
                   title: str = "Transfer rate") -> dict[str, Path]:
    """Write transfer.csv, transfer_matrix.csv and transfer.png into ``out_dir``."""
    if not rows:
        raise AxlabError("no transfer pairs to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = list(dict.fromkeys(r["source"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    mat = np.full((len(sources), len(targets)), np.nan)
    for r in rows:
        mat[sources.index(r["source"]), targets.index(r["target"])] = r["rate"]
    with open(out / "transfer.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "target", "rate", "transferred", "valid"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "rate": f"{r['rate']:.4f}"})
    with open(out / "transfer_matrix.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source \\ target"] + targets)
        for s, row in zip(sources, mat):
            w.writerow([s] + [f"{v:.4f}" for v in row])
    png = out / "transfer.png"
    _heatmap(mat, sources, targets, png, title)
    return {"csv": out / "transfer.csv", "matrix": out / "transfer_matrix.csv", "png": png}


def _heatmap(mat: np.ndarray, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.6 + 1.3 * len(cols), 2.4 + 0.6 * len(rows)))
    im = ax.imshow(np.nan_to_num(mat * 100, nan=0.0), vmin=0, vmax=100, cmap="viridis",
                   aspect="auto")
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = mat[i, j]
            ax.text(j, i, "-" if np.isnan(v) else f"{100 * v:.0f}%", ha="center", va="center",
                    color="white" if np.isnan(v) or v < 0.6 else "black", fontsize=9)
    ax.set_xlabel("target implementation")
    ax.set_ylabel("source (attack@implementation)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="transfer rate (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _short(s: str, n: int = 28) -> str:
    return s if len(s) <= n else "..." + s[-(n - 3):]


def format_matrix(rows: list[dict[str, Any]]) -> str:
    sources = list(dict.fromkeys(r["source"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    width = max(len(_short(s)) for s in sources)
    lines = [" " * width + "  " + "  ".join(f"{_short(t, 14):>14s}" for t in targets)]
    for s in sources:
        cells = []
        for t in targets:
            r = next(r for r in rows if r["source"] == s and r["target"] == t)
            cell = "-" if np.isnan(r["rate"]) else f"{100 * r['rate']:.1f}%"
            cells.append(f"{cell:>14s}")
        lines.append(f"{_short(s):<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
