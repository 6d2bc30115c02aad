"""Peer check against torchattacks (optional dependency) on an FpNN: same images, same
parameters; success rates must agree within a few points.

torchattacks works on float images; its adversarial images are rounded to uint8 (the pixel
space of axlab) before they are scored by the same implementation (DeepFool: see FLOAT_SCORED). The torchattacks side runs
first and its global torch seed is fixed, so the comparison itself is reproducible.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from attacks_fixtures import ShimImpl, trained_tiny  # noqa: E402

from attacks.base import image_rngs  # noqa: E402
from attacks.oracle import Oracle  # noqa: E402
from attacks.registry import make_attack  # noqa: E402
from attacks.runner import select_evasion_set  # noqa: E402

# name: (axlab parameters, torchattacks constructor, allowed difference in success rate)
CASES = {
    "fgsm": ({"eps": 32 / 255}, lambda ta, m: ta.FGSM(m, eps=32 / 255), 0.05),
    "bim": ({"eps": 32 / 255, "alpha": 2 / 255, "steps": 20, "early_stop": False},
            lambda ta, m: ta.BIM(m, eps=32 / 255, alpha=2 / 255, steps=20), 0.05),
    "pgd": ({"eps": 32 / 255, "alpha": 2 / 255, "steps": 20, "early_stop": False},
            lambda ta, m: ta.PGD(m, eps=32 / 255, alpha=2 / 255, steps=20, random_start=True), 0.10),
    "cw": ({"c": 1.0, "kappa": 0.0, "steps": 20, "lr": 0.01},
           lambda ta, m: ta.CW(m, c=1.0, kappa=0.0, steps=20, lr=0.01), 0.10),
    # torchattacks clamps DeepFool's iterate to [0, 1] after every step, which stalls on
    # saturated pixels (digits are mostly 0/255); axlab accumulates the unclamped perturbation
    # as in the paper and clamps only the evaluated image: axlab must be at least as strong.
    "deepfool": ({"steps": 50, "overshoot": 0.02},
                 lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02), None),
    "onepixel": ({"pixels": 1, "max_pixels": 1, "popsize": 20, "generations": 10},
                 lambda ta, m: ta.OnePixel(m, pixels=1, steps=10, popsize=20), 0.15),
    "square": ({"eps": 32 / 255, "n_queries": 200, "p_init": 0.8},
               lambda ta, m: ta.Square(m, eps=32 / 255, n_queries=200, p_init=0.8, seed=0), 0.15),
    "pixle": ({"restarts": 5, "max_iterations": 10, "min_patch": 2, "max_patch": 10},
              lambda ta, m: ta.Pixle(m, x_dimensions=(2, 10), y_dimensions=(2, 10), restarts=5,
                                     max_iterations=10), 0.15),
}

# DeepFool stops right past the boundary (overshoot 0.02): rounding torchattacks' float output
# to uint8 undoes about half of its successes, while axlab keeps stepping until the uint8 image
# fools the implementation. Its torchattacks side is therefore scored on the float images.
FLOAT_SCORED = {"deepfool"}


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, x, y = trained_tiny()
    impl = ShimImpl(model)
    idx = select_evasion_set([impl], x, y, 24)
    yield impl, model, x[idx], y[idx], idx
    torch.set_num_threads(threads)


def peer_rates(name, impl, model, x, y, idx, seed=0):
    """(axlab success rate, torchattacks success rate) on the same images."""
    ta = pytest.importorskip("torchattacks")
    params, make_ta, _ = CASES[name]
    torch.manual_seed(seed)
    np.random.seed(seed)
    atk = make_ta(ta, model)
    adv = atk(torch.from_numpy(x).float() / 255.0, torch.from_numpy(y))
    if name in FLOAT_SCORED:
        with torch.no_grad():
            theirs = float(np.mean(model(adv.detach()).argmax(1).numpy() != y))
    else:
        adv8 = (adv.detach() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        theirs = float(np.mean(impl.predict_proba(adv8).argmax(1) != y))
    out = make_attack(name, params)(Oracle(impl), x, y, image_rngs(seed, idx))
    ours = float(np.mean(impl.predict_proba(out.adv).argmax(1) != y))
    return ours, theirs


@pytest.mark.parametrize("name", list(CASES))
def test_success_rate_matches_torchattacks(name, setup):
    impl, model, x, y, idx = setup
    ours, theirs = peer_rates(name, impl, model, x, y, idx)
    print(f"peer {name}: axlab {ours:.3f} torchattacks {theirs:.3f}")
    tol = CASES[name][2]
    if tol is None:
        assert ours >= theirs - 0.05, (name, ours, theirs)
    else:
        assert abs(ours - theirs) <= tol + 1e-9, (name, ours, theirs)
