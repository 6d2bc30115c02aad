"""Attack names, their parameters (defaults, types, allowed ranges) and ``k=v`` parsing.

This module is pure Python (no numpy/torch import) so the CLI can build ``--help`` quickly.
Units: every perturbation size given in "pixel units" is a float in [0, 1], i.e. a fraction of
the 8-bit range (``8/255`` is eight intensity steps); fractions like ``8/255`` are accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from hwsim.errors import AxlabError


@dataclass(frozen=True)
class Param:
    """One attack parameter: default, type and the allowed closed/open range."""

    default: Any
    kind: type = float              # float, int, bool or str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False           # True: lo itself is not allowed
    choices: tuple[str, ...] = ()
    help: str = ""

    def range_text(self, name: str) -> str:
        if self.kind is bool:
            return f"{name} in {{0, 1}}"
        if self.choices:
            return f"{name} in {{{', '.join(self.choices)}}}"
        lo = "" if self.lo is None else f"{_fmt(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" <= {_fmt(self.hi)}"
        return f"{lo}{name}{hi}"

    def parse(self, name: str, text: Any) -> Any:
        """Convert ``text`` (str or already-typed value) and check the range."""
        try:
            if self.kind is bool:
                if isinstance(text, bool):
                    value: Any = text
                elif str(text).lower() in ("1", "true", "yes", "on"):
                    value = True
                elif str(text).lower() in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif self.kind is int:
                f = float(Fraction(str(text))) if not isinstance(text, (int, float)) else text
                if float(f) != int(f):
                    raise ValueError
                value = int(f)
            elif self.kind is float:
                value = float(Fraction(str(text))) if isinstance(text, str) else float(text)
            else:
                value = str(text)
        except (ValueError, ZeroDivisionError):
            raise AxlabError(f"parameter {name}={text!r} is not a valid {self.kind.__name__}; "
                             f"allowed: {self.range_text(name)}") from None
        if self.choices and value not in self.choices:
            raise AxlabError(f"parameter {name}={value!r} not allowed; allowed: "
                             f"{self.range_text(name)}")
        if self.kind in (int, float):
            bad = ((self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)))
                   or (self.hi is not None and value > self.hi))
            if bad:
                raise AxlabError(f"parameter {name}={_fmt(value)} out of range; allowed: "
                                 f"{self.range_text(name)}")
        return value


def _fmt(v: float) -> str:
    if isinstance(v, float) and not v.is_integer():
        f = Fraction(v).limit_denominator(1000)
        if abs(float(f) - v) < 1e-12 and f.denominator == 255:
            return f"{f.numerator}/255"
        return f"{v:g}"
    return str(int(v)) if isinstance(v, float) else str(v)


_EPS = dict(kind=float, lo=0.0, hi=1.0, lo_open=True)
_STEP = dict(kind=float, lo=0.0, hi=1.0, lo_open=True)

#: every attack, its kind and its parameters (thesis defaults where the thesis gives one)
ATTACK_SPECS: dict[str, dict[str, Any]] = {
    "fgsm": {"kind": "white", "help": "Fast Gradient Sign Method (Goodfellow et al.)", "params": {
        "eps": Param(8 / 255, help="Linf budget, pixel units", **_EPS)}},
    "bim": {"kind": "white", "help": "Basic Iterative Method (Kurakin et al.)", "params": {
        "eps": Param(8 / 255, help="Linf budget, pixel units", **_EPS),
        "alpha": Param(1 / 255, help="step, pixel units", **_STEP),
        "steps": Param(50, int, 1, 10000),
        "early_stop": Param(True, bool, help="stop an image at its first oracle misclassification")}},
    "pgd": {"kind": "white", "help": "Projected Gradient Descent, Linf, random start (Madry et al.)",
            "params": {
                "eps": Param(8 / 255, help="Linf budget, pixel units", **_EPS),
                "alpha": Param(1 / 255, help="step, pixel units", **_STEP),
                "steps": Param(50, int, 1, 10000),
                "random_start": Param(True, bool),
                "restarts": Param(1, int, 1, 1000, help="random starts tried per image until one fools"),
                "loss": Param("ce", str, choices=("ce", "margin"),
                              help="ascended loss: cross-entropy or logit margin"),
                "early_stop": Param(True, bool)}},
    "mifgsm": {"kind": "white", "help": "Momentum Iterative FGSM (Dong et al.)", "params": {
        "eps": Param(8 / 255, help="Linf budget, pixel units", **_EPS),
        "alpha": Param(1 / 255, help="step, pixel units", **_STEP),
        "steps": Param(50, int, 1, 10000),
        "decay": Param(1.0, float, 0.0, 10.0),
        "early_stop": Param(True, bool)}},
    "cw": {"kind": "white", "help": "Carlini-Wagner L2 (Adam in tanh space)", "params": {
        "c": Param(1.0, float, 0.0, 1e6, lo_open=True, help="weight of the margin term"),
        "kappa": Param(0.0, float, 0.0, 1e3, help="confidence margin (logits)"),
        "steps": Param(20, int, 1, 10000),
        "lr": Param(0.01, float, 0.0, 10.0, lo_open=True)}},
    "deepfool": {"kind": "white", "help": "DeepFool, L2 (Moosavi-Dezfooli et al.)", "params": {
        "steps": Param(50, int, 1, 10000),
        "overshoot": Param(0.02, float, 0.0, 10.0)}},
    "onepixel": {"kind": "black",
                 "help": "One-Pixel (Su et al.), differential evolution, incremental pixel count",
                 "params": {
                     "pixels": Param(1, int, 1, 1024, help="first number of pixels tried"),
                     "max_pixels": Param(50, int, 1, 1024, help="incremental variant: largest "
                                         "number of pixels tried (= pixels: classic attack)"),
                     "popsize": Param(80, int, 4, 10000),
                     "generations": Param(97, int, 1, 100000),
                     "f": Param(0.5, float, 0.0, 2.0, lo_open=True, help="DE mutation factor")}},
    "simba": {"kind": "black", "help": "SimBA, pixel basis (Guo et al.)", "params": {
        "eps": Param(0.2, help="step along a basis vector, pixel units", **_EPS),
        "max_iters": Param(1000, int, 1, 1000000, help="basis directions tried (<= 2 queries each)")}},
    "square": {"kind": "black", "help": "Square attack, Linf (Andriushchenko et al.)", "params": {
        "eps": Param(8 / 255, help="Linf budget, pixel units", **_EPS),
        "n_queries": Param(5000, int, 1, 10000000),
        "p_init": Param(0.8, float, 0.0, 1.0, lo_open=True)}},
    "pixle": {"kind": "black", "help": "Pixle, random-search pixel rearrangement (Pomponi et al.)",
              "params": {
                  "restarts": Param(20, int, 1, 100000),
                  "max_iterations": Param(10, int, 1, 100000),
                  "min_patch": Param(2, int, 1, 4096, help="smallest patch side, pixels"),
                  "max_patch": Param(10, int, 1, 4096, help="largest patch side, pixels")}},
    "npixels": {"kind": "gray", "help": "N-Pixels (thesis sec. 3.1, Alg. 1-3), gray-box", "params": {
        "early_layer": Param(0, int, 0, 1000, help="index of the Conv2d layer the important "
                             "section is clustered on (0 = first)"),
        "clusters": Param(3, int, 1, 64, help="K-Means clusters"),
        "omega_w": Param(70.0, float, 0.0, 100.0, help="max w = 100 - PSNR (70: PSNR >= 30 dB)"),
        "max_pixels": Param(50, int, 1, 100000, help="most pixels combined"),
        "channels": Param("1,2,3", str, help="channel counts tried per pixel, e.g. 1,3")}},
    "ipixels": {"kind": "black", "help": "Incremental Pixels (thesis sec. 3.2, Alg. 4-6), black-box",
                "params": {
                    "omega": Param(1, int, 1, 255, help="smallest perturbation delta"),
                    "Omega": Param(100, int, 1, 255, help="largest perturbation delta"),
                    "mu": Param(1, int, 1, 255, help="bisection resolution of delta"),
                    "min_pixels": Param(1, int, 1, 100000),
                    "max_pixels": Param(0, int, 0, 100000, help="0: 1% of the pixels"),
                    "popsize": Param(5, int, 4, 10000),
                    "generations": Param(10, int, 1, 100000),
                    "f": Param(0.5, float, 0.0, 2.0, lo_open=True),
                    "radius": Param(0, int, 0, 64, help="sign neighbourhood radius; 0: 2 for "
                                    "images <= 64 px wide, else 3"),
                    "v": Param(127, int, 0, 255, help="threshold V of the neighbourhood mean"),
                    "omega_w": Param(70.0, float, 0.0, 100.0,
                                     help="similarity constraint w = 100 - PSNR <= omega_w")}},
}

ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_SPECS)


def check_attack_name(name: str) -> str:
    key = name.lower()
    if key not in ATTACK_SPECS:
        raise AxlabError(f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}")
    return key


def resolve_params(attack: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``attack`` overridden by ``given`` (strings or values), range-checked."""
    attack = check_attack_name(attack)
    spec: dict[str, Param] = ATTACK_SPECS[attack]["params"]
    out = {k: p.default for k, p in spec.items()}
    for k, v in (given or {}).items():
        if k not in spec:
            raise AxlabError(f"unknown parameter {k!r} for attack {attack}; known: "
                             f"{', '.join(spec) or 'none'}")
        out[k] = spec[k].parse(k, v)
    _cross_checks(attack, out)
    return out


def _cross_checks(attack: str, p: dict[str, Any]) -> None:
    if attack == "onepixel" and p["max_pixels"] < p["pixels"]:
        raise AxlabError(f"parameter max_pixels={p['max_pixels']} out of range; allowed: "
                         f"pixels ({p['pixels']}) <= max_pixels <= 1024")
    if attack == "pixle" and p["max_patch"] < p["min_patch"]:
        raise AxlabError(f"parameter max_patch={p['max_patch']} out of range; allowed: "
                         f"min_patch ({p['min_patch']}) <= max_patch <= 4096")
    if attack == "pgd" and p["restarts"] > 1 and not p["random_start"]:
        raise AxlabError(f"parameter restarts={p['restarts']} needs random_start=1 (without a "
                         "random start every restart repeats the same steps)")
    if attack == "ipixels":
        if p["Omega"] < p["omega"]:
            raise AxlabError(f"parameter Omega={p['Omega']} out of range; allowed: "
                             f"omega ({p['omega']}) <= Omega <= 255")
        if p["max_pixels"] and p["max_pixels"] < p["min_pixels"]:
            raise AxlabError(f"parameter max_pixels={p['max_pixels']} out of range; allowed: 0 or "
                             f"min_pixels ({p['min_pixels']}) <= max_pixels <= 100000")
    if attack == "npixels":
        try:
            counts = sorted({int(c) for c in str(p["channels"]).split(",") if c.strip()})
        except ValueError:
            counts = []
        if not counts or any(c < 1 or c > 3 for c in counts):
            raise AxlabError(f"parameter channels={p['channels']!r} not allowed; allowed: a "
                             "comma-separated subset of 1,2,3")


def parse_kv(items: list[str] | None) -> dict[str, str]:
    """``["eps=8/255", "steps=10"]`` -> ``{"eps": "8/255", "steps": "10"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise AxlabError(f"--param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def params_help() -> str:
    """A compact listing of every attack and its parameters with defaults and ranges."""
    lines = []
    for name, spec in ATTACK_SPECS.items():
        ps = ", ".join(f"{k}={_fmt(p.default) if not isinstance(p.default, bool) else int(p.default)}"
                       for k, p in spec["params"].items())
        lines.append(f"  {name:9s} ({spec['kind']}) {ps}")
    return "\n".join(lines)
