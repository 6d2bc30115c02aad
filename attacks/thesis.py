"""The thesis' two attacks: N-Pixels (gray-box, sec. 3.1, Alg. 1-3) and Incremental Pixels
(black-box, sec. 3.2, Alg. 4-6).

Both follow the thesis, not a library; scikit-learn's ``KMeans`` does the clustering step of
N-Pixels and ``scipy.ndimage.uniform_filter`` the neighbourhood means of Incremental Pixels;
the differential evolution is :mod:`attacks.de`. Similarity: ``w = 100 - PSNR`` (dB, MAX 255);
the constraint ``w <= omega_w`` (default 70, i.e. PSNR >= 30 dB) holds for every image either
attack reports as successful.

N-Pixels (gray-box: the network structure and its feature maps are known, the outputs are
queried through the oracle). Feature maps are taken from the surrogate (the float network for
an FpNN, the fake-quant network for QNN/AxNN) on the clean image, by intercepting its conv2d and
pooling calls (the equivalent of forward hooks on ``Conv2d`` modules that also works for
functional graphs):

1. Alg. 1, most important fiber: in the last Conv2d output (C, H, W) every spatial position is
   a fiber (a C-vector). For every pair of fibers (a, b) count the channels where a > b; a
   fiber wins the pair when its count is larger; the fiber with the most wins (ties: larger
   activation sum) is the most important.
2. Back-mapping: the fiber's position is mapped back through the kernel/stride/padding/dilation
   of every Conv2d and pooling layer executed between the early layer and the last one (chain
   found from the recorded input/output shapes, execution order) to a section of the chosen
   early Conv2d output (``early_layer``, default the first).
3. K-Means (``clusters``, default 3, seeded) on the channel vectors of that section; the
   positions of the largest cluster are mapped back to the input: candidate pixels.
4. Alg. 2-3, per candidate pixel, channel subset (1, 2 or 3 channels) and sign (additive,
   subtractive): the perturbation magnitude d in [1, 255] is limited by the similarity
   constraint (largest d with w <= omega_w); the change of the true-class probability
   v = |rho* - rho_hat*| (v = Omega_v = 1 on misclassification) is measured there and, where it
   misclassifies, a binary search finds the smallest such d. Each pixel keeps its best
   (subset, sign, d) by v / w.
5. Pixels ranked by v / w are combined one by one (N = 1, 2, ... ``max_pixels``) while
   w <= omega_w, until the oracle misclassifies; a final binary search scales all magnitudes
   down as far as the image stays misclassified.

Incremental Pixels (black-box). Two-level bisection: the outer level over the perturbation
delta in [omega, Omega] (defaults 1..100, resolution mu = 1), the inner level over the number of
pixels n in [min_pixels, max_pixels] (default maximum: 1% of the pixels). For a given (delta, n)
a differential evolution (F = 0.5, population 5, 10 generations) chooses only the pixel
coordinates; every channel of a chosen pixel moves by delta, with the sign given per channel by
the mean of its neighbourhood of radius r (2 for images up to 64 px wide, else 3) against
V = 127 (mean > V: subtract, else add). By construction ||x' - x||_inf <= delta (Eq. 3.9);
the pixel count is capped so that w <= omega_w holds (n * C * delta^2 within the PSNR budget) and
candidates with w > omega_w count as failures. The result is the smallest delta, then the
smallest n, that fooled the oracle.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from attacks.base import Attack, AttackOutput
from attacks.de import evolve
from attacks.metrics import psnr_batch
from attacks.oracle import Oracle
from hwsim.errors import AxlabError


# ----------------------------------------------------------------------------------------
# feature maps and geometry (N-Pixels)
# ----------------------------------------------------------------------------------------
def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _arg(args, kwargs, pos, name, default):
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def record_features(model, x01) -> tuple[list[dict], list[int]]:
    """Run ``model`` on float images and record every conv2d / pooling call in execution order.

    The calls are intercepted with a ``torch.overrides.TorchFunctionMode``: this sees the
    ``conv2d`` of ``nn.Conv2d`` modules (what forward hooks would see) and of functional graphs
    such as nn's fake-quant ``GraphModule`` alike. Returns (layers, conv_ids): each layer a dict
    with ``kernel``, ``stride``, ``padding``, ``dilation`` (pairs), ``in_hw``, ``out_hw`` and,
    for convolutions, ``out`` (numpy feature map (N, C, H, W)); conv_ids index the convolutions.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    layers: list[dict] = []

    class _Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = getattr(func, "__name__", "")
            if name in ("conv2d", "max_pool2d", "avg_pool2d") and torch.is_tensor(out) \
                    and out.dim() == 4:
                x_in = args[0] if args else kwargs["input"]
                if name == "conv2d":
                    w = _arg(args, kwargs, 1, "weight", None)
                    k = tuple(w.shape[-2:])
                    s = _arg(args, kwargs, 3, "stride", 1)
                    p = _arg(args, kwargs, 4, "padding", 0)
                    d = _arg(args, kwargs, 5, "dilation", 1)
                    if isinstance(p, str):          # "same" / "valid"
                        p = tuple((dd * (kk - 1)) // 2 for kk, dd in zip(k, _pair(d))) \
                            if p == "same" else (0, 0)
                else:
                    k = _arg(args, kwargs, 1, "kernel_size", 1)
                    s = _arg(args, kwargs, 2, "stride", None) or k
                    p = _arg(args, kwargs, 3, "padding", 0)
                    d = _arg(args, kwargs, 4, "dilation", 1) if name == "max_pool2d" else 1
                layers.append({"conv": name == "conv2d", "kernel": _pair(k), "stride": _pair(s),
                               "padding": _pair(p), "dilation": _pair(d),
                               "in_hw": tuple(x_in.shape[-2:]), "out_hw": tuple(out.shape[-2:]),
                               "out": out.detach().cpu().numpy() if name == "conv2d" else None})
            return out

    with torch.no_grad(), _Recorder():
        model(x01)
    conv_ids = [i for i, l in enumerate(layers) if l["conv"]]
    return layers, conv_ids


def _chain(layers: list[dict], last: int) -> list[int]:
    """Layer ids from the first spatial layer to ``last`` following matching shapes backwards."""
    chain = [last]
    cur = last
    while True:
        want = layers[cur]["in_hw"]
        prev = [j for j in range(cur - 1, -1, -1) if layers[j]["out_hw"] == want]
        if not prev:
            break
        cur = prev[0]
        chain.append(cur)
    return chain[::-1]


def back_map(layer: dict, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
    """Input rows/cols (inclusive) feeding output rows r0..r1, cols c0..c1 of one layer."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (layer["kernel"], layer["stride"], layer["padding"],
                                              layer["dilation"])
    hi, wi = layer["in_hw"]
    return (max(r0 * sh - ph, 0), min(r1 * sh - ph + dh * (kh - 1), hi - 1),
            max(c0 * sw - pw, 0), min(c1 * sw - pw + dw * (kw - 1), wi - 1))


def important_fiber(fmap: np.ndarray) -> tuple[int, int]:
    """Alg. 1: (row, col) of the fiber winning most pairwise channel-count comparisons."""
    c, h, w = fmap.shape
    f = fmap.reshape(c, h * w)
    counts = (f[:, :, None] > f[:, None, :]).sum(0)          # (P, P) channels where a > b
    wins = (counts > counts.T).sum(1)
    order = np.lexsort((-f.sum(0), -wins))                  # most wins, then largest sum
    j = int(order[0])
    return j // w, j % w


class NPixels(Attack):
    name = "npixels"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        import torch

        p = self.params
        model = oracle.surrogate()
        layers, conv_ids = record_features(model, torch.tensor(x, dtype=torch.float32) / 255.0)
        if not conv_ids:
            raise AxlabError("npixels needs a network with 2-D convolutions (feature maps are "
                             "taken from the surrogate's conv2d calls)")
        if p["early_layer"] >= len(conv_ids):
            raise AxlabError(f"parameter early_layer={p['early_layer']} out of range; allowed: "
                             f"0 <= early_layer <= {len(conv_ids) - 1} (the network has "
                             f"{len(conv_ids)} convolution layers)")
        last = conv_ids[-1]
        chain = _chain(layers, last)
        early = conv_ids[p["early_layer"]]
        if early not in chain:
            early = next(j for j in chain if layers[j]["conv"])
        upper = chain[chain.index(early) + 1:]          # layers after the early conv, to last
        lower = chain[:chain.index(early) + 1]          # the early conv and everything before
        n = len(x)
        adv = np.array(x, copy=True)
        extra = []
        counts = sorted({int(c) for c in str(p["channels"]).split(",") if c.strip()})
        for i in range(n):
            fr, fc = important_fiber(layers[last]["out"][i])
            r0, r1, c0, c1 = fr, fr, fc, fc
            for j in reversed(upper):
                r0, r1, c0, c1 = back_map(layers[j], r0, r1, c0, c1)
            pixels = self._cluster_pixels(layers[early]["out"][i], (r0, r1, c0, c1), lower,
                                          layers, rngs[i])
            a, info = self._attack_one(oracle, x[i], int(y[i]), i, pixels, counts)
            adv[i] = a
            info.update({"fiber": [fr, fc], "candidates": len(pixels)})
            extra.append(info)
        return AttackOutput(adv, extra=extra)

    def _cluster_pixels(self, emap, box, lower, layers, rng) -> list[tuple[int, int]]:
        from sklearn.cluster import KMeans

        r0, r1, c0, c1 = box
        sec = emap[:, r0:r1 + 1, c0:c1 + 1]
        ch = sec.shape[0]
        pos = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        vec = sec.reshape(ch, -1).T.astype(np.float64)
        k = min(self.params["clusters"], len(pos), len(np.unique(vec, axis=0)))
        if k > 1:
            km = KMeans(n_clusters=k, n_init=4, random_state=int(rng.integers(2 ** 31))).fit(vec)
            sizes = np.bincount(km.labels_, minlength=k)
            keep = km.labels_ == int(np.argmax(sizes))
            pos = [q for q, kk in zip(pos, keep) if kk]
        out: set[tuple[int, int]] = set()
        for r, c in pos:
            a0, a1, b0, b1 = r, r, c, c
            for j in reversed(lower):
                a0, a1, b0, b1 = back_map(layers[j], a0, a1, b0, b1)
            out.update((rr, cc) for rr in range(a0, a1 + 1) for cc in range(b0, b1 + 1))
        return sorted(out)

    def _attack_one(self, oracle, x, y, slot, pixels, counts):
        p = self.params
        c, h, w = x.shape
        n_val = x.size
        # largest squared-error sum allowed by w <= omega_w: PSNR >= 100 - omega_w
        max_sse = n_val * 255.0 ** 2 / 10 ** ((100.0 - p["omega_w"]) / 10.0)
        rho = oracle.predict_proba(x[None], who=slot)[0, y]
        masks = [m for k in counts if k <= c for m in itertools.combinations(range(c), k)]
        combos = [(pix, m, s) for pix in pixels for m in masks for s in (1, -1)]
        if not combos:
            return x.copy(), {"pixels": 0}
        xi = x.astype(np.int32)

        def make(pix, m, s, d):
            img = xi.copy()
            for ch in m:
                img[ch, pix[0], pix[1]] += s * d
            return np.clip(img, 0, 255).astype(np.uint8)

        def cap(pix, m, s):
            room = min((255 - xi[ch, pix[0], pix[1]]) if s > 0 else xi[ch, pix[0], pix[1]]
                       for ch in m)
            by_w = int(math.floor(math.sqrt(max_sse / len(m))))
            return max(0, min(room, by_w, 255))

        caps = [cap(*cb) for cb in combos]
        keep = [i for i, d in enumerate(caps) if d >= 1]
        if not keep:
            return x.copy(), {"pixels": 0}
        imgs = np.stack([make(*combos[i], caps[i]) for i in keep])
        prob = oracle.predict_proba(imgs, who=slot)
        fooled = prob.argmax(1) != y
        vs = np.where(fooled, 1.0, np.abs(rho - prob[:, y]))
        ds = np.array([caps[i] for i in keep])
        # binary search of the smallest fooling magnitude (Alg. 3) where the cap fools
        for t in np.flatnonzero(fooled):
            lo, hi = 0, int(ds[t])          # lo: known not fooling (0 = clean), hi: fooling
            pix, m, s = combos[keep[t]]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if oracle.predict(make(pix, m, s, mid)[None], who=slot)[0] != y:
                    hi = mid
                else:
                    lo = mid
            ds[t] = hi
        ws = 100.0 - psnr_batch(np.repeat(x[None], len(keep), 0),
                                np.stack([make(*combos[keep[t]], int(ds[t]))
                                          for t in range(len(keep))]))
        score = vs / np.maximum(ws, 1e-9)
        best: dict[tuple[int, int], tuple[float, int]] = {}
        for t, i in enumerate(keep):
            pix = combos[i][0]
            if pix not in best or score[t] > best[pix][0]:
                best[pix] = (score[t], t)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[: p["max_pixels"]]
        plan = [(combos[keep[t]][0], combos[keep[t]][1], combos[keep[t]][2], int(ds[t]))
                for _, (_, t) in ranked]

        def combined(k, scale=1.0):
            img = xi.copy()
            for pix, m, s, d in plan[:k]:
                dd = max(1, int(round(d * scale)))
                for ch in m:
                    img[ch, pix[0], pix[1]] += s * dd
            return np.clip(img, 0, 255).astype(np.uint8)

        def w_of(img):
            return 100.0 - psnr_batch(x[None], img[None])[0]

        cur = x.copy()
        for k in range(1, len(plan) + 1):
            top = 1.0
            if w_of(combined(k)) > p["omega_w"]:
                lo, hi = 0.0, 1.0        # largest common scale that meets w <= omega_w
                for _ in range(12):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if w_of(combined(k, mid)) <= p["omega_w"] else (lo, mid)
                top = lo
                if w_of(combined(k, top)) > p["omega_w"]:
                    break                # even magnitude 1 on every pixel is too much
            img = combined(k, top)
            cur = img
            if oracle.predict(img[None], who=slot)[0] != y:
                lo, hi = 0.0, top        # shrink all magnitudes while still fooling
                for _ in range(6):
                    mid = (lo + hi) / 2
                    if oracle.predict(combined(k, mid)[None], who=slot)[0] != y:
                        hi = mid
                    else:
                        lo = mid
                return combined(k, hi), {"pixels": k}
        return cur, {"pixels": 0}


# ----------------------------------------------------------------------------------------
# Incremental Pixels
# ----------------------------------------------------------------------------------------
class IncrementalPixels(Attack):
    name = "ipixels"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        from scipy.ndimage import uniform_filter

        p = self.params
        n, c, h, w = x.shape
        max_p = p["max_pixels"] or max(1, int(round(0.01 * h * w)))
        min_p = min(p["min_pixels"], max_p)
        r = p["radius"] or (2 if w <= 64 else 3)
        adv = np.array(x, copy=True)
        extra = []
        for i in range(n):
            mean = uniform_filter(x[i].astype(np.float64), size=(1, 2 * r + 1, 2 * r + 1),
                                  mode="nearest")
            sign = np.where(mean > p["v"], -1, 1).astype(np.int32)       # (C, H, W)
            res = self._bisect(oracle, x[i], int(y[i]), i, sign, min_p, max_p, rngs[i])
            if res is None:
                extra.append({"delta": None, "pixels": None})
            else:
                adv[i] = res[0]
                extra.append({"delta": res[1], "pixels": res[2]})
        return AttackOutput(adv, extra=extra)

    def _attempt(self, oracle, x, y, slot, sign, delta, k, rng):
        """DE over k pixel coordinates for a fixed delta; returns the fooling image or None."""
        p = self.params
        c, h, w = x.shape
        xi = x.astype(np.int32)
        step = sign * delta
        min_psnr = 100.0 - p["omega_w"]

        def build(genes):               # genes (P, 2k) -> images (P, C, H, W)
            pop = len(genes)
            rows = np.minimum((genes[:, 0::2] * h).astype(np.int64), h - 1)
            cols = np.minimum((genes[:, 1::2] * w).astype(np.int64), w - 1)
            imgs = np.repeat(xi[None], pop, 0)
            for j in range(k):
                rr, cc = rows[:, j], cols[:, j]
                imgs[np.arange(pop), :, rr, cc] = xi[:, rr, cc].T + step[:, rr, cc].T
            return np.clip(imgs, 0, 255).astype(np.uint8)

        def fitness(genes, ids):
            imgs = build(genes[0])
            prob = oracle.predict_proba(imgs, who=slot)
            ok_w = psnr_batch(np.repeat(x[None], len(imgs), 0), imgs) >= min_psnr
            fooled = (prob.argmax(1) != y) & ok_w
            fit = prob[:, y] + (~ok_w)
            return fit[None], fooled[None]

        best, _, ok = evolve(fitness, 1, 2 * k, p["popsize"], p["generations"], [rng], f=p["f"],
                             cr=1.0)
        return build(best)[0] if ok[0] else None

    def _inner(self, oracle, x, y, slot, sign, delta, min_p, max_p, rng):
        """Bisection over the pixel count for one delta: (image, n) with the smallest n, or None.

        The count is capped where n pixels moved by delta on every channel would break
        w <= omega_w (n * C * delta^2 <= the squared-error budget)."""
        c = x.shape[0]
        budget = x.size * 255.0 ** 2 / 10 ** ((100.0 - self.params["omega_w"]) / 10.0)
        max_p = min(max_p, int(budget // (c * delta * delta)))
        if max_p < min_p:
            return None
        img = self._attempt(oracle, x, y, slot, sign, delta, max_p, rng)
        if img is None:
            return None
        best = (img, max_p)
        lo, hi = min_p - 1, max_p            # lo: known failing (sentinel), hi: known fooling
        while hi - lo > 1:
            mid = (lo + hi) // 2
            img = self._attempt(oracle, x, y, slot, sign, delta, mid, rng)
            if img is not None:
                hi, best = mid, (img, mid)
            else:
                lo = mid
        return best

    def _bisect(self, oracle, x, y, slot, sign, min_p, max_p, rng):
        p = self.params
        res = self._inner(oracle, x, y, slot, sign, p["Omega"], min_p, max_p, rng)
        if res is None:
            return None
        best = (res[0], p["Omega"], res[1])
        lo, hi = p["omega"] - 1, p["Omega"]
        while hi - lo > p["mu"]:
            mid = (lo + hi + 1) // 2
            res = self._inner(oracle, x, y, slot, sign, mid, min_p, max_p, rng)
            if res is not None:
                hi, best = mid, (res[0], mid, res[1])
            else:
                lo = mid
        return best
