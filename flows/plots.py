"""Plots of the DSE (matplotlib, Agg backend: files only, no display needed)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"area_um2": "area (um², MAC-weighted)", "power_mw": "power (mW, MAC-weighted)",
          "acc_loss": "accuracy loss vs QNN (pp)", "vulnerability": "attack success on probe set (%)"}


def pareto_scatter(evals: list[dict[str, Any]], pareto: list[dict[str, Any]], objs: list[str], path: Path) -> Path:
    """Pairwise scatter of every evaluated design, Pareto designs highlighted."""
    pairs = list(itertools.combinations(objs, 2)) or [(objs[0], objs[0])]
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    for ax, (a, b) in zip(axes.flat, pairs):
        ax.scatter([e[a] for e in evals], [e[b] for e in evals], s=14, c="0.7", label="evaluated")
        ax.scatter([p[a] for p in pareto], [p[b] for p in pareto], s=36, c="tab:red", edgecolors="k",
                   label=f"Pareto ({len(pareto)})")
        ax.set_xlabel(LABELS.get(a, a))
        ax.set_ylabel(LABELS.get(b, b))
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"DSE: {len(evals)} designs evaluated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def hypervolume_plot(history: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([h["generation"] for h in history], [h["hypervolume"] for h in history], "o-")
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
