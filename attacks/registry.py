"""Attack name -> class, and :func:`make_attack` with parameter validation."""
from __future__ import annotations

from typing import Any

from attacks.base import Attack
from attacks.params import check_attack_name


def _classes() -> dict[str, type[Attack]]:
    from attacks.blackbox import OnePixel, Pixle, SimBA, Square
    from attacks.thesis import IncrementalPixels, NPixels
    from attacks.whitebox import BIM, CW, FGSM, MIFGSM, PGD, DeepFool

    return {c.name: c for c in (FGSM, BIM, PGD, MIFGSM, CW, DeepFool, OnePixel, SimBA, Square,
                                Pixle, NPixels, IncrementalPixels)}


def make_attack(name: str, params: dict[str, Any] | None = None) -> Attack:
    """The attack ``name`` (see :data:`attacks.params.ATTACK_NAMES`) with checked parameters."""
    key = check_attack_name(name)
    return _classes()[key](params)
