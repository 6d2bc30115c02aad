"""Compact implementation specs and ensembles (multi-source attacks).

SPEC syntax (used by ``axlab transfer --to`` and ``axlab attack --ensemble``)::

    MODEL:fp                  floating-point network (FpNN)
    MODEL:q                   8-bit integer network (QNN)
    MODEL:ax:DESIGN.json      approximate network with a design file (AxNN)
    MODEL:ax:MULTIPLIER       approximate network, MULTIPLIER in every approximable layer
                              (a LUT .npz, a netlist or a LUT-store name; not ending in .json)
    ...@BACKEND               optional suffix: torch (default), numba or cuda

e.g. ``m.pt:fp``, ``m.pt:ax:d1.json@numba``, ``m.pt:ax:mul8s_1L2H``. Implementations are
loaded through ``nn.api.load_implementation``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hwsim.errors import AxlabError

BACKENDS = ("torch", "numba", "cuda")
_SPEC = re.compile(r"^(?P<model>.+?):(?P<impl>fp|q|ax)(?::(?P<arg>.+))?$")


@dataclass(frozen=True)
class ImplSpec:
    model: str
    impl: str
    design: str | None = None
    multiplier: str | None = None
    backend: str = "torch"

    def __str__(self) -> str:
        arg = self.design or self.multiplier
        s = f"{self.model}:{self.impl}" + (f":{arg}" if arg else "")
        return s + (f"@{self.backend}" if self.backend != "torch" else "")


def parse_spec(text: str) -> ImplSpec:
    """Parse ``MODEL:fp|q|ax[:DESIGN.json|:MULTIPLIER][@BACKEND]``."""
    body, backend = text, "torch"
    if "@" in text:
        head, _, tail = text.rpartition("@")
        if tail in BACKENDS:
            body, backend = head, tail
    m = _SPEC.match(body)
    if not m:
        raise AxlabError(f"bad implementation spec {text!r}; expected MODEL:fp, MODEL:q, "
                         "MODEL:ax:DESIGN.json or MODEL:ax:MULTIPLIER, optionally @torch|numba|cuda")
    impl, arg = m["impl"], m["arg"]
    if impl != "ax" and arg:
        raise AxlabError(f"bad implementation spec {text!r}: only ax takes a design or multiplier")
    if impl == "ax" and not arg:
        raise AxlabError(f"bad implementation spec {text!r}: ax needs :DESIGN.json or :MULTIPLIER")
    design = arg if arg and arg.endswith(".json") else None
    mult = arg if arg and not design else None
    return ImplSpec(m["model"], impl, design, mult, backend)


def load_impl(spec: ImplSpec | str, bundle: Any = None) -> Any:
    """Load one implementation (``nn.api``) from a spec; ``bundle`` reuses a loaded model."""
    from nn.api import load_implementation, load_model

    s = parse_spec(spec) if isinstance(spec, str) else spec
    model = bundle if bundle is not None else load_model(s.model)
    if s.impl == "ax" and not (s.design or s.multiplier):
        raise AxlabError("--impl ax needs --design DESIGN.json or --multiplier M")
    return load_implementation(model, s.impl, design=s.design, multiplier=s.multiplier,
                               backend=s.backend)


class Ensemble:
    """Several implementations attacked at once (multi-source perturbations).

    ``predict_proba``: mean of the members' probabilities; ``surrogate()``: mean of the members'
    surrogate logits (differentiable). Labels are taken from the mean probabilities.
    """

    def __init__(self, members: Sequence[Any]) -> None:
        if not members:
            raise AxlabError("an ensemble needs at least one implementation")
        self.members = list(members)
        self.name = "ens(" + ",".join(getattr(m, "name", "?") for m in self.members) + ")"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([np.asarray(m.predict_proba(x), dtype=np.float64) for m in self.members],
                       axis=0)

    def surrogate(self) -> Any:
        import torch

        mods = [m.surrogate() for m in self.members]

        class _Mean(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.parts = torch.nn.ModuleList(mods)

            def forward(self, x):
                return torch.stack([p(x) for p in self.parts]).mean(0)

        return _Mean()
