"""White-box gradient attacks: FGSM, BIM, PGD (Linf, random start), MI-FGSM, CW (L2), DeepFool.

Gradients come from ``oracle.surrogate()``: the float network for an FpNN and, for QNN/AxNN,
the fake-quant straight-through model (BPDA: the forward pass follows the quantized network,
the backward pass treats rounding as identity). Success is always decided by the real
implementation through the oracle, on the uint8 image.

Pixel space: iterates are kept in [0, 255] units; Linf budgets become ``floor(eps * 255)``
integer steps, so every produced image is uint8 and within the budget. Steps of a multiple of
1/255 (thesis default 1/255) keep the iterate integral; other steps are rounded when queried.

Algorithms follow the original papers (own implementation, no library): FGSM (Goodfellow et al.
2015), BIM (Kurakin et al. 2017), PGD (Madry et al. 2018), MI-FGSM (Dong et al. 2018),
CW-L2 (Carlini & Wagner 2017; Adam in tanh space, fixed c, best-L2 successful iterate kept),
DeepFool (Moosavi-Dezfooli et al. 2016; multi-class linearisation, overshoot applied to the
accumulated perturbation). With ``early_stop`` (default), BIM/PGD/MI-FGSM query the oracle
after every step and keep an image's first misclassified iterate (one query per step).
``grads`` counts surrogate forward/backward rounds per image (DeepFool: one Jacobian = one round).
PGD also takes ``restarts`` (new random starts for the images not yet fooled, Madry et al.) and
``loss=margin`` (ascend max_{j != y} z_j - z_y instead of the cross-entropy, which saturates on
confident predictions); together they are the strong PGD used to check a low success rate.
"""
from __future__ import annotations

import math

import numpy as np

from attacks.base import Attack, AttackOutput
from attacks.oracle import Oracle


def _torch():
    import torch
    return torch


def _loss_grad(model, z255, y, loss: str = "ce"):
    """Gradient w.r.t. x in [0, 1] of the loss the attack ascends, for images z255 (n, C, H, W)
    float in [0, 255]. ``ce``: cross-entropy; ``margin``: max_{j != y} z_j - z_y on the logits
    (Carlini-Wagner's margin; it does not saturate when the softmax does)."""
    torch = _torch()
    xt = (z255 / 255.0).detach().requires_grad_(True)
    logits = model(xt)
    if loss == "margin":
        true = logits.gather(1, y[:, None])[:, 0]
        other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), -torch.inf)
        value = (other.max(1).values - true).sum()
    else:
        value = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    (g,) = torch.autograd.grad(value, xt)
    return g


def _u8(z255) -> np.ndarray:
    return z255.round().clamp(0, 255).to(_torch().uint8).cpu().numpy()


def _eps_steps(eps: float) -> int:
    return int(math.floor(eps * 255 + 1e-6))


class FGSM(Attack):
    name = "fgsm"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        torch = _torch()
        model = oracle.surrogate()
        z = torch.tensor(x, dtype=torch.float32)
        g = _loss_grad(model, z, torch.tensor(y))
        adv = (z + _eps_steps(self.params["eps"]) * g.sign()).clamp(0, 255)
        return AttackOutput(_u8(adv), np.ones(len(x), dtype=np.int64))


class _IterativeLinf(Attack):
    """Shared loop of BIM / PGD / MI-FGSM: sign steps, Linf projection, optional early stop."""

    random_start = False
    momentum = False

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        torch = _torch()
        p = self.params
        model = oracle.surrogate()
        x0 = torch.tensor(x, dtype=torch.float32)
        yt = torch.tensor(y)
        eps = float(_eps_steps(p["eps"]))
        alpha = p["alpha"] * 255.0
        early = p.get("early_stop", False)
        loss = p.get("loss", "ce")
        rounds = p.get("restarts", 1) if self.random_start else 1
        mom = torch.zeros_like(x0)
        n = len(x)
        grads = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        adv = np.array(x, copy=True)
        z = x0.clone()

        def settle(idx: np.ndarray) -> None:
            """Query the oracle on the current iterates of ``idx``; keep and finish the fooled."""
            cand = _u8(z[torch.tensor(idx)])
            fooled = oracle.predict(cand, who=idx) != y[idx]
            adv[idx[fooled]] = cand[fooled]
            done[idx[fooled]] = True

        for rnd in range(rounds):
            todo = np.flatnonzero(~done)
            if todo.size == 0:
                break
            if self.random_start and p.get("random_start", True):
                # each restart draws a new start from the image's own stream
                noise = np.stack([rngs[i].integers(-int(eps), int(eps) + 1, size=x.shape[1:]) for i in todo])
                ti = torch.tensor(todo)
                z[ti] = (x0[ti] + torch.tensor(noise, dtype=torch.float32)).clamp(0, 255)
            for _ in range(p["steps"]):
                act = np.flatnonzero(~done)
                if act.size == 0:
                    break
                ai = torch.tensor(act)
                g = _loss_grad(model, z[ai], yt[ai], loss)
                grads[act] += 1
                if self.momentum:
                    g = g / g.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    mom[ai] = p["decay"] * mom[ai] + g
                    g = mom[ai]
                za = z[ai] + alpha * g.sign()
                za = torch.max(torch.min(za, x0[ai] + eps), x0[ai] - eps).clamp(0, 255)
                z[ai] = za
                if early:
                    settle(act)
            rest = np.flatnonzero(~done)
            if rest.size and rnd < rounds - 1 and not early:
                settle(rest)    # without early stop a restart needs to know which images still hold
        rest = np.flatnonzero(~done)
        if rest.size:
            adv[rest] = _u8(z[torch.tensor(rest)])
        return AttackOutput(adv, grads)


class BIM(_IterativeLinf):
    name = "bim"


class PGD(_IterativeLinf):
    name = "pgd"
    random_start = True


class MIFGSM(_IterativeLinf):
    name = "mifgsm"
    momentum = True


class CW(Attack):
    name = "cw"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        torch = _torch()
        p = self.params
        model = oracle.surrogate()
        x01 = torch.tensor(x, dtype=torch.float32) / 255.0
        yt = torch.tensor(y)
        w = torch.atanh((x01 * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=p["lr"])
        n = len(x)
        best_l2 = np.full(n, np.inf)
        adv = np.array(x, copy=True)
        last = adv
        onehot = None
        for _ in range(p["steps"]):
            xa = (torch.tanh(w) + 1) / 2
            logits = model(xa)
            if onehot is None:
                onehot = torch.nn.functional.one_hot(yt, num_classes=logits.shape[1])
            real = (logits * onehot).sum(1)
            other = (logits - 1e9 * onehot).max(1).values
            f = torch.clamp(real - other, min=-p["kappa"])
            l2 = ((xa - x01) ** 2).flatten(1).sum(1)
            loss = (l2 + p["c"] * f).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                xa = (torch.tanh(w) + 1) / 2
            cand = _u8(xa * 255.0)
            fooled = oracle.predict(cand, who=np.arange(n)) != y
            d = ((cand.astype(np.float64) - x) / 255.0).reshape(n, -1)
            l2r = (d * d).sum(1)
            better = fooled & (l2r < best_l2)
            best_l2[better] = l2r[better]
            adv[better] = cand[better]
            last = cand
        fail = ~np.isfinite(best_l2)
        adv[fail] = last[fail]
        return AttackOutput(adv, np.full(n, p["steps"], dtype=np.int64))


class DeepFool(Attack):
    name = "deepfool"

    def run(self, oracle: Oracle, x, y, rngs) -> AttackOutput:
        torch = _torch()
        p = self.params
        model = oracle.surrogate()
        x0 = torch.tensor(x, dtype=torch.float32)
        n = len(x)
        r_tot = torch.zeros_like(x0)
        grads = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        adv = np.array(x, copy=True)
        scale = 1.0 + p["overshoot"]
        for _ in range(p["steps"]):
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            ai = torch.tensor(act)
            xt = ((x0[ai] + scale * r_tot[ai]).clamp(0, 255) / 255.0).detach().requires_grad_(True)
            logits = model(xt)
            k = logits.shape[1]
            jac = torch.stack([torch.autograd.grad(logits[:, j].sum(), xt, retain_graph=j < k - 1)[0]
                               for j in range(k)], 1)          # (m, K, C, H, W), per [0,1] unit
            grads[act] += 1
            ya = torch.tensor(y[act])
            rows = torch.arange(len(act))
            f = (logits - logits[rows, ya][:, None]).detach()            # (m, K)
            wv = jac - jac[rows, ya][:, None]                             # (m, K, C, H, W)
            wn = wv.flatten(2).norm(dim=2).clamp_min(1e-12)               # (m, K)
            ratio = f.abs() / wn
            ratio[rows, ya] = np.inf
            l = ratio.argmin(1)
            fl = f[rows, l].abs()
            wl = wv[rows, l]
            r = ((fl + 1e-4) / wn[rows, l] ** 2).view(-1, 1, 1, 1) * wl    # [0, 1] units
            r_tot[ai] = r_tot[ai] + r * 255.0
            cand = _u8((x0[ai] + scale * r_tot[ai]).clamp(0, 255))
            fooled = oracle.predict(cand, who=act) != y[act]
            adv[act] = cand
            done[act[fooled]] = True
        return AttackOutput(adv, grads)
