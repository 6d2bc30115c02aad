"""Parameters, bad input, metrics, the oracle and implementation specs (attacks, issue 4)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks.implspec import Ensemble, parse_spec
from attacks.metrics import image_metrics, psnr
from attacks.oracle import Oracle, check_images
from attacks.params import ATTACK_NAMES, parse_kv, resolve_params
from attacks.registry import make_attack
from attacks.runner import select_evasion_set
from hwsim.errors import AxlabError


class Const:
    """Implementation that always predicts class ``k`` (counts calls)."""

    name = "const"

    def __init__(self, k: int = 0, classes: int = 3) -> None:
        self.k, self.classes, self.calls = k, classes, 0

    def predict_proba(self, x):
        self.calls += 1
        p = np.full((len(x), self.classes), 0.1)
        p[:, self.k] = 1.0
        return p / p.sum(1, keepdims=True)

    def surrogate(self):
        raise NotImplementedError


def test_all_attacks_listed():
    assert set(ATTACK_NAMES) == {"fgsm", "bim", "pgd", "mifgsm", "cw", "deepfool", "onepixel",
                                 "simba", "square", "pixle", "npixels", "ipixels"}
    for name in ATTACK_NAMES:
        assert make_attack(name).name == name


def test_thesis_defaults():
    assert resolve_params("bim")["steps"] == 50 and resolve_params("pgd")["steps"] == 50
    assert resolve_params("deepfool")["steps"] == 50 and resolve_params("cw")["steps"] == 20
    assert resolve_params("pgd")["alpha"] == pytest.approx(1 / 255)
    op = resolve_params("onepixel")
    assert (op["popsize"], op["generations"], op["max_pixels"]) == (80, 97, 50)
    ip = resolve_params("ipixels")
    assert (ip["omega"], ip["Omega"], ip["mu"], ip["popsize"], ip["generations"], ip["f"],
            ip["v"]) == (1, 100, 1, 5, 10, 0.5, 127)
    assert resolve_params("npixels")["omega_w"] == 70


def test_param_parsing_and_errors():
    assert resolve_params("pgd", parse_kv(["eps=8/255", "steps=3"]))["eps"] == pytest.approx(8 / 255)
    with pytest.raises(AxlabError, match=r"unknown attack 'nope'.*known: fgsm"):
        make_attack("nope")
    with pytest.raises(AxlabError, match=r"unknown parameter 'foo' for attack pgd; known: eps"):
        resolve_params("pgd", {"foo": "1"})
    with pytest.raises(AxlabError, match=r"eps=2 out of range; allowed: 0 < eps <= 1"):
        resolve_params("pgd", {"eps": "2"})
    with pytest.raises(AxlabError, match=r"steps=0 out of range; allowed: 1 <= steps <= 10000"):
        resolve_params("bim", {"steps": "0"})
    with pytest.raises(AxlabError, match=r"not a valid int"):
        resolve_params("bim", {"steps": "2.5"})
    with pytest.raises(AxlabError, match=r"max_pixels=2 out of range; allowed: pixels \(3\)"):
        resolve_params("onepixel", {"pixels": 3, "max_pixels": 2})
    with pytest.raises(AxlabError, match=r"Omega=5 out of range"):
        resolve_params("ipixels", {"omega": 10, "Omega": 5})
    with pytest.raises(AxlabError, match=r"loss='hinge' not allowed; allowed: loss in \{ce, margin\}"):
        resolve_params("pgd", {"loss": "hinge"})
    with pytest.raises(AxlabError, match=r"restarts=3 needs random_start=1"):
        resolve_params("pgd", {"restarts": "3", "random_start": "0"})
    with pytest.raises(AxlabError, match="KEY=VALUE"):
        parse_kv(["eps"])


def test_image_checks():
    with pytest.raises(AxlabError, match="uint8"):
        check_images(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(AxlabError, match=r"shape \(N, C, H, W\)"):
        check_images(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(AxlabError, match="NHWC"):
        check_images(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(AxlabError, match="numpy uint8 array"):
        check_images([[1]])
    atk = make_attack("fgsm")
    with pytest.raises(AxlabError, match="uint8"):
        atk(Oracle(Const()), np.zeros((1, 3, 8, 8), np.int64), np.zeros(1), [np.random.default_rng()])


def test_empty_evasion_set():
    x = np.zeros((4, 1, 8, 8), np.uint8)
    y = np.array([1, 1, 2, 2])
    with pytest.raises(AxlabError, match="empty evasion set.*const"):
        select_evasion_set([Const(0)], x, y, 3)
    assert select_evasion_set([Const(2)], x, y, 1).tolist() == [2]
    assert select_evasion_set([Const(2), Const(2)], x, y, 5).tolist() == [2, 3]


def test_oracle_counts_every_image():
    o = Oracle(Const(), batch_size=3)
    o.reset_slots(2)
    x = np.zeros((7, 1, 4, 4), np.uint8)
    p = o.predict_proba(x, who=[0, 0, 0, 1, 1, 1, 1])
    assert p.shape == (7, 3) and o.total == 7 and o.slot_queries.tolist() == [3, 4]
    assert o.impl.calls == 3                       # batched by batch_size
    o.predict(x[:2], count=False)
    assert o.total == 7


def test_metrics_units():
    a = np.zeros((3, 4, 4), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    b[1, 0, 0] = 51
    m = image_metrics(a, b)
    assert m["l0"] == 2
    assert m["linf"] == pytest.approx(1.0)
    assert m["l2"] == pytest.approx(np.sqrt(1 + 0.2 ** 2))
    mse = (255 ** 2 + 51 ** 2) / 48
    assert m["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert 0 < m["ssim"] < 1
    assert psnr(a, a) is None
    assert image_metrics(a, a)["ssim"] == pytest.approx(1.0)


def test_spec_syntax():
    s = parse_spec("runs/m.pt:ax:d1.json@numba")
    assert (s.model, s.impl, s.design, s.multiplier, s.backend) == ("runs/m.pt", "ax", "d1.json",
                                                                    None, "numba")
    s = parse_spec("m.pt:ax:mul8s_1L2H")
    assert s.multiplier == "mul8s_1L2H" and s.design is None and s.backend == "torch"
    assert parse_spec("m.pt:q").impl == "q" and str(parse_spec("m.pt:fp")) == "m.pt:fp"
    for bad in ("m.pt", "m.pt:zz", "m.pt:ax", "m.pt:fp:x.json"):
        with pytest.raises(AxlabError, match="implementation spec"):
            parse_spec(bad)


def test_ensemble_means_probabilities():
    e = Ensemble([Const(0), Const(1)])
    p = e.predict_proba(np.zeros((2, 1, 4, 4), np.uint8))
    assert p.shape == (2, 3) and np.allclose(p[:, 0], p[:, 1])
    assert e.name == "ens(const,const)"
