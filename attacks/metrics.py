"""Per-image distortion metrics between a clean and an adversarial uint8 image (C, H, W).

* ``l0``: number of changed channel values (a pixel changed on 3 channels counts 3).
* ``l2``, ``linf``: norms of the difference in [0, 1] pixel units (difference / 255).
* ``psnr``: dB with MAX = 255 over all channel values; ``None`` when the images are equal.
* ``ssim``: scikit-image ``structural_similarity`` (channel axis 0, data range 255).
"""
from __future__ import annotations

import math

import numpy as np


def psnr(clean: np.ndarray, adv: np.ndarray) -> float | None:
    """Peak signal-to-noise ratio in dB (MAX = 255); None for identical images."""
    d = clean.astype(np.float64) - adv.astype(np.float64)
    mse = float(np.mean(d * d))
    if mse == 0.0:
        return None
    return 10.0 * math.log10(255.0 ** 2 / mse)


def psnr_batch(clean: np.ndarray, adv: np.ndarray) -> np.ndarray:
    """PSNR (dB) per image for (N, C, H, W) arrays; +inf where identical."""
    d = clean.astype(np.float64) - adv.astype(np.float64)
    mse = (d * d).reshape(len(d), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(clean: np.ndarray, adv: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    c, h, w = clean.shape
    win = min(7, h, w)
    win = win if win % 2 == 1 else win - 1
    return float(structural_similarity(clean, adv, data_range=255, channel_axis=0, win_size=win))


def image_metrics(clean: np.ndarray, adv: np.ndarray) -> dict[str, float | int | None]:
    """All metrics for one (C, H, W) uint8 pair."""
    d = (adv.astype(np.float64) - clean.astype(np.float64)) / 255.0
    return {
        "l0": int(np.count_nonzero(d)),
        "l2": float(np.sqrt(np.sum(d * d))),
        "linf": float(np.max(np.abs(d))) if d.size else 0.0,
        "psnr": psnr(clean, adv),
        "ssim": ssim(clean, adv),
    }
