"""Score-based black-box attacks: One-Pixel, SimBA, Square (Linf) and Pixle.

All four only call ``oracle.predict_proba`` on uint8 images, batched over the attacked images
(and, for One-Pixel, over the whole population), and stop an image at its first
misclassification. Own implementations following the papers (no library):

* One-Pixel (Su et al. 2019): DE/rand/1 (F = 0.5, no crossover, as Su et al.) over
  (row, col, value per channel) genes, fitness = probability of the true class. The thesis'
  incremental variant retries an unsuccessful image with one more pixel, from ``pixels`` up to
  ``max_pixels`` (defaults: population 80, 97 generations, up to 50 pixels).
* SimBA (Guo et al. 2019), pixel basis: random channel values without replacement, try
  ``-eps`` then ``+eps``; keep a step that lowers the true-class probability.
* Square (Andriushchenko et al. 2020), Linf: vertical-stripe initialisation, random squares of
  +/-eps per channel with the paper's size schedule (p_init, rescaled to the query budget),
  margin loss log p_y - max_j log p_j (equal to the logit margin).
* Pixle (Pomponi et al. 2022), random mapping: patches of the clean image copied to random
  locations of the current best image; restarts x iterations; keep the lowest true-class
  probability.
"""
from __future__ import annotations

import numpy as np

from attacks.base import Attack, AttackOutput
from attacks.de import evolve
from attacks.oracle import Oracle, log_proba, margin


def _true_prob_and_fooled(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p[np.arange(len(y)), y], p.argmax(1) != y


class OnePixel(Attack):
    name = "onepixel"

    @staticmethod
    def apply(x: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """Images (m, P, C, H, W) from clean x (m, C, H, W) and genes (m, P, k, 2 + C)."""
        m, pop, k, _ = genes.shape
        _, c, h, w = x.shape
        imgs = np.repeat(x[:, None], pop, axis=1).copy()
        rows = np.minimum((genes[..., 0] * h).astype(np.int64), h - 1)
        cols = np.minimum((genes[..., 1] * w).astype(np.int64), w - 1)
        vals = np.clip(np.rint(genes[..., 2:] * 255.0), 0, 255).astype(np.uint8)   # (m,P,k,C)
        mi, pi = np.meshgrid(np.arange(m), np.arange(pop), indexing="ij")
        for j in range(k):
            for ch in range(c):
                imgs[mi, pi, ch, rows[..., j], cols[..., j]] = vals[..., j, ch]
        return imgs

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        p = self.params
        n, c, h, w = x.shape
        adv = np.array(x, copy=True)
        active = np.arange(n)
        for k in range(p["pixels"], p["max_pixels"] + 1):
            if active.size == 0:
                break
            xa, ya = x[active], y[active]

            def fitness(genes, ids, xa=xa, ya=ya, act=active, k=k):
                m, pop, _ = genes.shape
                imgs = self.apply(xa[ids], genes.reshape(m, pop, k, 2 + c))
                flat = imgs.reshape(m * pop, c, h, w)
                prob = oracle.predict_proba(flat, who=np.repeat(act[ids], pop))
                tp, fooled = _true_prob_and_fooled(prob, np.repeat(ya[ids], pop))
                return tp.reshape(m, pop), fooled.reshape(m, pop)

            best, _, ok = evolve(fitness, active.size, k * (2 + c), p["popsize"], p["generations"],
                                 [rngs[i] for i in active], f=p["f"], cr=1.0)
            imgs = self.apply(xa, best.reshape(active.size, 1, k, 2 + c))[:, 0]
            adv[active] = imgs
            active = active[~ok]
        return AttackOutput(adv)


class SimBA(Attack):
    name = "simba"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        p = self.params
        n = len(x)
        d = x[0].size
        eps = max(1, int(round(p["eps"] * 255)))
        cur = x.astype(np.int16).reshape(n, d)
        order = np.stack([r.permutation(d) for r in rngs])
        prob = oracle.predict_proba(x, who=np.arange(n))
        best_p, fooled = _true_prob_and_fooled(prob, y)
        done = fooled.copy()
        rows = np.arange(n)
        for it in range(min(p["max_iters"], d)):
            act = rows[~done]
            if act.size == 0:
                break
            coord = order[act, it]
            improved = np.zeros(act.size, dtype=bool)
            for sign in (-1, 1):
                todo = ~improved
                sub = act[todo]
                if sub.size == 0:
                    break
                cand = cur[sub].copy()
                cidx = coord[todo]
                new = np.clip(cand[np.arange(sub.size), cidx] + sign * eps, 0, 255)
                changed = new != cand[np.arange(sub.size), cidx]
                cand[np.arange(sub.size), cidx] = new
                q = sub[changed]
                if q.size == 0:
                    continue
                pr = oracle.predict_proba(cand[changed].astype(np.uint8).reshape((-1,) + x.shape[1:]),
                                          who=q)
                tp, fo = _true_prob_and_fooled(pr, y[q])
                acc = tp < best_p[q]
                cur[q[acc]] = cand[changed][acc]
                best_p[q[acc]] = tp[acc]
                done[q[acc & fo]] = True
                pos = np.flatnonzero(todo)[changed]
                improved[pos[acc]] = True
        return AttackOutput(cur.astype(np.uint8).reshape(x.shape))


class Square(Attack):
    name = "square"
    DRAW_BLOCK = 256      # iterations of random draws taken per image at a time

    @staticmethod
    def p_schedule(it: int, n_queries: int, p_init: float) -> float:
        """Fraction of pixels changed at iteration ``it`` (schedule of Andriushchenko et al.)."""
        t = int(it / n_queries * 10000)
        for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                           (4000, 64), (6000, 128), (8000, 256)):
            if t <= bound:
                return p_init / div
        return p_init / 512

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        p = self.params
        n, c, h, w = x.shape
        eps = max(1, int(np.floor(p["eps"] * 255 + 1e-6)))
        x16 = x.astype(np.int16)
        lo, hi = np.maximum(x16 - eps, 0), np.minimum(x16 + eps, 255)
        # vertical stripes of +/- eps, one sign per (channel, column)
        stripes = np.stack([r.choice(np.array([-eps, eps], dtype=np.int16), size=(c, 1, w))
                            for r in rngs])
        cur = np.clip(x16 + stripes, lo, hi)
        prob = oracle.predict_proba(cur.astype(np.uint8), who=np.arange(n))
        m = margin(log_proba(prob), y)
        done = m < 0
        n_feat = c * h * w
        rows, cols = np.arange(h), np.arange(w)
        draws = np.zeros((n, self.DRAW_BLOCK, 2 + c))
        for it in range(1, p["n_queries"]):
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            k = (it - 1) % self.DRAW_BLOCK
            if k == 0:
                # each image draws its own uniforms block by block (position, position, one
                # sign per channel per iteration): results do not depend on the batch
                for i in act:
                    draws[i] = rngs[i].random((self.DRAW_BLOCK, 2 + c))
            u = draws[act, k]
            frac = self.p_schedule(it, p["n_queries"], p["p_init"])
            s = int(min(max(round(np.sqrt(frac * n_feat / c)), 1), h - 1, w - 1))
            vh = (u[:, 0] * (h - s + 1)).astype(np.int64)
            vw = (u[:, 1] * (w - s + 1)).astype(np.int64)
            sgn = np.where(u[:, 2:] < 0.5, -2 * eps, 2 * eps).astype(np.int16)[:, :, None, None]
            in_r = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
            in_c = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
            square = in_r[:, None, :, None] & in_c[:, None, None, :]        # (k, 1, h, w)
            base = cur[act]
            cand = np.where(square, np.clip(base + sgn, lo[act], hi[act]), base)
            pr = oracle.predict_proba(cand.astype(np.uint8), who=act)
            mm = margin(log_proba(pr), y[act])
            better = mm < m[act]
            cur[act[better]] = cand[better]
            m[act[better]] = mm[better]
            done[act[mm < 0]] = True
        return AttackOutput(cur.astype(np.uint8))


class Pixle(Attack):
    name = "pixle"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        p = self.params
        n, c, h, w = x.shape
        pmin, pmax = min(p["min_patch"], h, w), min(p["max_patch"], h, w)
        prob = oracle.predict_proba(x, who=np.arange(n))
        best_p, fooled = _true_prob_and_fooled(prob, y)
        best = np.array(x, copy=True)
        base = np.array(x, copy=True)        # image the patches are pasted into
        improved_ever = np.zeros(n, dtype=bool)
        done = fooled.copy()
        for _ in range(p["restarts"]):
            last = base.copy()
            for _ in range(p["max_iterations"]):
                act = np.flatnonzero(~done)
                if act.size == 0:
                    break
                cand = base[act].copy()
                for k, i in enumerate(act):
                    r = rngs[i]
                    px, py = int(r.random() * (w - 1)), int(r.random() * (h - 1))
                    ox, oy = int(r.integers(pmin, pmax + 1)), int(r.integers(pmin, pmax + 1))
                    ox, oy = min(ox, w - px), min(oy, h - py)
                    src = x[i, :, py:py + oy, px:px + ox].reshape(c, -1)
                    dx = (r.random(src.shape[1]) * (w - 1)).astype(np.int64)
                    dy = (r.random(src.shape[1]) * (h - 1)).astype(np.int64)
                    cand[k][:, dy, dx] = src
                pr = oracle.predict_proba(cand, who=act)
                tp, fo = _true_prob_and_fooled(pr, y[act])
                better = (tp < best_p[act]) | fo
                best[act[better]] = cand[better]
                best_p[act[better]] = tp[better]
                improved_ever[act[better]] = True
                last[act] = cand
                done[act[fo]] = True
            # next restart pastes into the best image so far (the last candidate if none improved)
            base = np.where(improved_ever[:, None, None, None], best, last)
            if done.all():
                break
        return AttackOutput(best)
