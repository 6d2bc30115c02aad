"""KL-divergence detection of adversarial examples by input transformations (thesis sec. 4.5,
after Nesti et al.).

For an image x, a transform T and an implementation f (probabilities):
``D = max(KL(f(x) || f(T x)), KL(f(T x) || f(x)))`` (natural log, probabilities clipped at
1e-12). Adversarial examples sit close to a decision boundary, so a transform moves their
output distribution more than a clean image's.

Transforms (uint8 NCHW -> uint8, scipy.ndimage, bilinear, zero fill outside the image):
``translate`` 2 px right and down, ``rotate`` 45 degrees (the thesis' +/-45; the sign is a
parameter), ``scale`` zoom to 80 % about the centre, ``hflip``, ``blur`` Gaussian 5x5 (sigma 1.1,
OpenCV's sigma for a 5x5 kernel, radius 2), ``contrast`` alpha = 1.5 (values multiplied by
alpha and clipped, as OpenCV ``convertScaleAbs``).

Report (beyond the thesis): ROC AUC (scikit-learn) and TPR at 5 % FPR per transform and
implementation; a per-implementation threshold per transform calibrated on a calibration half
of the clean images (the 95th percentile of their D) and a majority-vote detector (more than
half of the transforms over threshold) evaluated on the other half and on the adversarial
images, per implementation and across implementations (majority of the implementations'
votes). Box plots of D like thesis Fig. 4.23.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from attacks.oracle import check_images
from hwsim.errors import AxlabError


def _affine(x: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    from scipy.ndimage import affine_transform

    out = np.empty(x.shape, dtype=np.float64)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = affine_transform(x[i, c].astype(np.float64), matrix, offset=offset,
                                         order=1, mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def translate(x: np.ndarray, px: int = 2) -> np.ndarray:
    out = np.zeros_like(x)
    out[:, :, px:, px:] = x[:, :, :-px or None, :-px or None]
    return out


def rotate(x: np.ndarray, degrees: float = 45.0) -> np.ndarray:
    h, w = x.shape[-2:]
    t = np.deg2rad(degrees)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    return _affine(x, m, centre - m @ centre)


def scale(x: np.ndarray, factor: float = 0.8) -> np.ndarray:
    h, w = x.shape[-2:]
    m = np.eye(2) / factor
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    return _affine(x, m, centre - m @ centre)


def hflip(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1])


def blur(x: np.ndarray, sigma: float = 1.1) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    y = gaussian_filter(x.astype(np.float64), sigma=(0, 0, sigma, sigma), truncate=2.0 / sigma,
                        mode="nearest")
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def contrast(x: np.ndarray, alpha: float = 1.5) -> np.ndarray:
    return np.clip(np.rint(x.astype(np.float64) * alpha), 0, 255).astype(np.uint8)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "translate": translate, "rotate": rotate, "scale": scale, "hflip": hflip, "blur": blur,
    "contrast": contrast}


def kl_max(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """max(KL(p||q), KL(q||p)) per row of (N, K) probability arrays."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-12, 1.0)
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    a = (p * np.log(p / q)).sum(1)
    b = (q * np.log(q / p)).sum(1)
    return np.maximum(a, b)


def scores(impl: Any, x: np.ndarray, transforms: Sequence[str] = tuple(TRANSFORMS)) -> dict[str, np.ndarray]:
    """D per transform for images x (N, C, H, W) uint8 on one implementation."""
    check_images(x)
    base = np.asarray(impl.predict_proba(x))
    return {t: kl_max(base, impl.predict_proba(TRANSFORMS[t](x))) for t in transforms}


def _tpr_at(fpr_target: float, clean: np.ndarray, adv: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    yv = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    fpr, tpr, _ = roc_curve(yv, np.r_[clean, adv])
    return float(np.interp(fpr_target, fpr, tpr))


def evaluate(impls: Sequence[tuple[str, Any]], clean: np.ndarray, adv: np.ndarray,
             seed: int = 0, calib_frac: float = 0.5, fpr: float = 0.05,
             progress: bool = False, sources: tuple[str, str] = ("clean images", "adversarial images")
             ) -> dict[str, Any]:
    """Scores, per-transform metrics and the majority vote for clean and adversarial images.
    ``sources`` name where the clean and adversarial images came from (in error messages)."""
    from sklearn.metrics import roc_auc_score

    from attacks.run_images import check_fits

    check_images(clean, sources[0])
    check_images(adv, sources[1])
    for name, impl in impls:
        for member in getattr(impl, "members", [impl]):
            bundle = getattr(member, "bundle", None)
            if bundle is not None:
                check_fits(clean, sources[0], name, bundle.input_shape)
                check_fits(adv, sources[1], name, bundle.input_shape)
    if len(clean) < 2 or len(adv) < 1:
        raise AxlabError(f"detection needs >= 2 clean and >= 1 adversarial image, got "
                         f"{len(clean)} clean and {len(adv)} adversarial")
    perm = np.random.default_rng(seed).permutation(len(clean))
    n_cal = min(max(1, int(round(calib_frac * len(clean)))), len(clean) - 1)
    cal, ev = perm[:n_cal], perm[n_cal:]
    all_scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    rows, votes = [], []
    impl_votes_adv, impl_votes_clean = [], []
    it = impls
    if progress:
        from tqdm import tqdm
        it = tqdm(impls, desc="detect", unit="impl")
    for name, impl in it:
        sc, sa = scores(impl, clean), scores(impl, adv)
        all_scores[name] = {"clean": sc, "adv": sa}
        flags_a, flags_c = [], []
        for t in TRANSFORMS:
            c, a = sc[t], sa[t]
            thr = float(np.quantile(c[cal], 1.0 - fpr))
            auc = float(roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a]))
            rows.append({"impl": name, "transform": t, "auc": auc,
                         "tpr_at_5fpr": _tpr_at(fpr, c, a), "threshold": thr,
                         "tpr_calibrated": float(np.mean(a > thr)),
                         "fpr_calibrated": float(np.mean(c[ev] > thr)),
                         "median_d_clean": float(np.median(c)), "median_d_adv": float(np.median(a)),
                         "n_clean": len(c), "n_adv": len(a)})
            flags_a.append(a > thr)
            flags_c.append(c[ev] > thr)
        va = np.sum(flags_a, 0) > len(TRANSFORMS) / 2
        vc = np.sum(flags_c, 0) > len(TRANSFORMS) / 2
        impl_votes_adv.append(va)
        impl_votes_clean.append(vc)
        votes.append({"impl": name, "tpr": float(va.mean()), "fpr": float(vc.mean()),
                      "n_adv": len(va), "n_clean_eval": len(vc)})
    if len(impls) > 1:
        va = np.sum(impl_votes_adv, 0) > len(impls) / 2
        vc = np.sum(impl_votes_clean, 0) > len(impls) / 2
        votes.append({"impl": "majority(all)", "tpr": float(va.mean()), "fpr": float(vc.mean()),
                      "n_adv": len(va), "n_clean_eval": len(vc)})
    return {"rows": rows, "votes": votes, "scores": all_scores}


def write_report(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """detection.csv, vote.csv, scores.csv and boxplot.png (thesis Fig. 4.23 style)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, votes = result["rows"], result["votes"]
    with open(out / "detection.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / "vote.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(votes[0]))
        w.writeheader()
        w.writerows(votes)
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["impl", "transform", "kind", "image", "d"])
        for impl, by_kind in result["scores"].items():
            for kind, by_t in by_kind.items():
                for t, vals in by_t.items():
                    for i, v in enumerate(vals):
                        w.writerow([impl, t, kind, i, f"{v:.6g}"])
    png = out / "boxplot.png"
    _boxplot(result["scores"], png)
    return {"csv": out / "detection.csv", "vote": out / "vote.csv", "scores": out / "scores.csv",
            "png": png}


def _boxplot(sc: dict[str, dict[str, dict[str, np.ndarray]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sc)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False,
                             sharey=True)
    ts = list(TRANSFORMS)
    for ax, name in zip(axes[0], names):
        data, pos, colors = [], [], []
        for k, t in enumerate(ts):
            for j, kind in enumerate(("clean", "adv")):
                data.append(np.maximum(sc[name][kind][t], 1e-12))
                pos.append(3 * k + j)
                colors.append("tab:blue" if kind == "clean" else "tab:red")
        bp = ax.boxplot(data, positions=pos, widths=0.8, patch_artist=True, showfliers=True)
        for patch, col in zip(bp["boxes"], colors):
            patch.set_facecolor(col)
            patch.set_alpha(0.6)
        ax.set_yscale("log")
        ax.set_xticks([3 * k + 0.5 for k in range(len(ts))], ts, rotation=30)
        ax.set_title(name)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("D = max KL (log scale)")
    from matplotlib.patches import Patch
    axes[0][-1].legend(handles=[Patch(color="tab:blue", alpha=0.6, label="clean"),
                                Patch(color="tab:red", alpha=0.6, label="adversarial")])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'implementation':<22s} {'transform':<10s} {'AUC':>6s} {'TPR@5%FPR':>10s} "
             f"{'TPR(cal)':>9s} {'FPR(cal)':>9s}"]
    for r in result["rows"]:
        lines.append(f"{r['impl'][:22]:<22s} {r['transform']:<10s} {r['auc']:6.3f} "
                     f"{r['tpr_at_5fpr']:10.3f} {r['tpr_calibrated']:9.3f} {r['fpr_calibrated']:9.3f}")
    lines.append("")
    lines.append(f"{'majority vote':<22s} {'TPR':>6s} {'FPR':>6s}")
    for v in result["votes"]:
        lines.append(f"{v['impl'][:22]:<22s} {v['tpr']:6.3f} {v['fpr']:6.3f}")
    return "\n".join(lines)
