"""Every attack on a tiny CNN: output contract, budgets, determinism per seed, BPDA."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from attacks.base import image_rngs
from attacks.metrics import psnr_batch
from attacks.oracle import Oracle
from attacks.registry import make_attack
from attacks.runner import select_evasion_set
sys.path.insert(0, os.path.dirname(__file__))
from attacks_fixtures import ShimImpl, trained_tiny  # noqa: E402

# small settings so the whole file runs in well under a minute
FAST = {
    "fgsm": {}, "bim": {"steps": 10}, "pgd": {"steps": 10}, "mifgsm": {"steps": 10},
    "cw": {"steps": 5}, "deepfool": {"steps": 10},
    "onepixel": {"max_pixels": 2, "popsize": 10, "generations": 3},
    "simba": {"max_iters": 30}, "square": {"n_queries": 30}, "pixle": {"restarts": 2},
    "npixels": {"max_pixels": 5}, "ipixels": {"Omega": 40, "mu": 8},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    model, x, y = trained_tiny()
    impl = ShimImpl(model)
    idx = select_evasion_set([impl], x, y, 4)
    return impl, x[idx], y[idx], idx


def _run(name, impl, x, y, idx, params=None, seed=0):
    o = Oracle(impl)
    out = make_attack(name, FAST[name] if params is None else params)(o, x, y,
                                                                       image_rngs(seed, idx))
    return out, o


@pytest.mark.parametrize("name", list(FAST))
def test_contract_and_determinism(name, data):
    impl, x, y, idx = data
    a, oa = _run(name, impl, x, y, idx)
    b, ob = _run(name, impl, x, y, idx)
    assert a.adv.dtype == np.uint8 and a.adv.shape == x.shape
    assert np.array_equal(a.adv, b.adv), "same seed must give the same images"
    assert np.array_equal(oa.slot_queries, ob.slot_queries)
    assert oa.total == oa.slot_queries.sum()
    if name in ("fgsm", "bim", "pgd", "mifgsm", "square"):
        assert np.abs(a.adv.astype(int) - x).max() <= 8        # eps 8/255 in integer steps
    # a different seed changes randomised attacks
    if name in ("pgd", "onepixel", "simba", "square", "pixle"):
        c, _ = _run(name, impl, x, y, idx, seed=1)
        assert not np.array_equal(a.adv, c.adv)


def test_pgd_strong_budget_succeeds(data):
    impl, x, y, idx = data
    out, o = _run("pgd", impl, x, y, idx, {"eps": 64 / 255, "steps": 30, "alpha": 4 / 255})
    assert (impl.predict_proba(out.adv).argmax(1) != y).all()
    assert np.abs(out.adv.astype(int) - x).max() <= 64
    assert (o.slot_queries <= 30).all() and (out.grads <= 30).all()   # early stop


def test_deepfool_and_pixle_fool(data):
    impl, x, y, idx = data
    for name in ("deepfool", "pixle"):
        out, _ = _run(name, impl, x, y, idx, {})
        assert (impl.predict_proba(out.adv).argmax(1) != y).mean() >= 0.75, name


def test_onepixel_changes_at_most_k_pixels(data):
    impl, x, y, idx = data
    out, o = _run("onepixel", impl, x, y, idx, {"pixels": 1, "max_pixels": 2, "popsize": 10,
                                                "generations": 2})
    changed = (out.adv != x).any(1).reshape(len(x), -1).sum(1)
    assert (changed <= 2).all() and (changed >= 1).all()
    assert (o.slot_queries <= 2 * 10 * 3).all()


def test_bpda_on_quantized_implementation(data):
    """Gradients from the float surrogate, success decided by the 'quantized' oracle."""
    impl, x, y, idx = data
    q = ShimImpl(impl.model, "q", levels=16)
    out, o = _run("pgd", q, x, y, idx, {"eps": 64 / 255, "steps": 30, "alpha": 4 / 255})
    assert (q.predict_proba(out.adv).argmax(1) != y).mean() >= 0.75
    assert o.slot_queries.sum() > 0


@pytest.fixture(scope="module")
def fragile():
    """The 4 correctly classified test images with the smallest margin (sparse attacks on this
    blocky 4x-upscaled digits data need PSNR < 30 dB on confident images)."""
    from attacks.oracle import log_proba, margin

    model, x, y = trained_tiny()
    impl = ShimImpl(model)
    p = impl.predict_proba(x)
    mg = margin(log_proba(p), y)
    mg[p.argmax(1) != y] = np.inf
    idx = np.sort(np.argsort(mg)[:4])
    return impl, x[idx], y[idx], idx


@pytest.mark.parametrize("name", ["npixels", "ipixels"])
def test_thesis_attacks_psnr_30(name, fragile):
    """Defaults: every returned image meets w = 100 - PSNR <= 70 (PSNR >= 30 dB); some fool."""
    impl, x, y, idx = fragile
    out, o = _run(name, impl, x, y, idx, {})
    ps = psnr_batch(x, out.adv)
    assert (ps >= 30 - 1e-9).all(), ps
    fooled = impl.predict_proba(out.adv).argmax(1) != y
    assert fooled.sum() >= 2, fooled
    for k, e in enumerate(out.extra):
        if name == "ipixels" and e["delta"] is not None:
            d = np.abs(out.adv[k].astype(int) - x[k])
            assert 1 <= e["delta"] <= 100 and d.max() <= e["delta"]          # Eq. 3.9
            assert 1 <= (d > 0).any(0).sum() <= e["pixels"] <= 10           # 1% of 32x32
        if name == "npixels":
            assert e["candidates"] > 0 and len(e["fiber"]) == 2
            assert (e["pixels"] > 0) == bool(fooled[k])


def test_thesis_constraint_is_a_parameter(fragile):
    impl, x, y, idx = fragile
    out, _ = _run("npixels", impl, x, y, idx, {"omega_w": 60, "max_pixels": 10})
    assert (psnr_batch(x, out.adv) >= 40 - 1e-9).all()


def test_npixels_uses_feature_maps_of_functional_graphs(data):
    """The conv2d interception also works without nn.Conv2d modules."""
    impl, x, y, idx = data
    m = impl.model

    class Functional(torch.nn.Module):
        def forward(self, t):
            t = torch.nn.functional.conv2d(t, m.c1.weight, m.c1.bias)
            t = torch.nn.functional.max_pool2d(torch.relu(t), 2)
            t = torch.nn.functional.conv2d(t, m.c2.weight, m.c2.bias)
            t = torch.nn.functional.max_pool2d(torch.relu(t), 2)
            return m.fc(t.flatten(1))

    class F:
        name = "functional"
        predict_proba = impl.predict_proba

        @staticmethod
        def surrogate():
            return Functional()

    a, _ = _run("npixels", impl, x[:2], y[:2], idx[:2])
    b, _ = _run("npixels", F(), x[:2], y[:2], idx[:2])
    assert np.array_equal(a.adv, b.adv) and a.extra == b.extra


def test_pgd_restarts_extend_the_first_round(data):
    """Round 0 of a restarted PGD is the plain PGD run; unfooled images get every round."""
    impl, x, y, idx = data
    base = {"eps": 40 / 255, "steps": 4, "alpha": 4 / 255}    # fools some images, not all
    one, _ = _run("pgd", impl, x, y, idx, base)
    many, o = _run("pgd", impl, x, y, idx, {**base, "restarts": 3})
    f1 = impl.predict_proba(one.adv).argmax(1) != y
    f3 = impl.predict_proba(many.adv).argmax(1) != y
    assert (f3 | ~f1).all(), "an image fooled by the first round must stay fooled"
    assert np.array_equal(many.adv[f1], one.adv[f1])
    assert f1.any() and not f3.all()
    assert (many.grads[~f3] == 3 * 4).all() and (many.grads <= 3 * 4).all()
    assert np.abs(many.adv.astype(int) - x).max() <= 40
    again, _ = _run("pgd", impl, x, y, idx, {**base, "restarts": 3})
    assert np.array_equal(many.adv, again.adv)


def test_margin_loss_gradient(data):
    """The margin loss ascends max_{j != y} z_j - z_y: its gradient is that logit difference's."""
    from attacks.whitebox import _loss_grad
    impl, x, y, _ = data
    model = Oracle(impl).surrogate()
    z = torch.tensor(x, dtype=torch.float32)
    g = _loss_grad(model, z, torch.tensor(y), "margin")
    for i in range(len(x)):
        xi = (z[i:i + 1] / 255).requires_grad_(True)
        logits = model(xi)[0]
        other = [j for j in range(len(logits)) if j != y[i]]
        j = other[int(logits[other].argmax())]
        (gi,) = torch.autograd.grad(logits[j] - logits[y[i]], xi)
        assert torch.allclose(g[i], gi[0], atol=1e-6)
    assert not torch.allclose(g, _loss_grad(model, z, torch.tensor(y), "ce"))
