"""The attack interface shared by every attack.

An attack gets an :class:`~attacks.oracle.Oracle`, a batch of clean uint8 images
``x`` (B, C, H, W) with their labels ``y`` (B,) int64, and one ``numpy.random.Generator`` per
image (seeded from the run seed and the dataset index, so an image's result does not depend on
the batch it ran in). It returns the adversarial uint8 images and, for white-box attacks, the
number of surrogate gradient rounds per image; oracle queries are counted by the oracle itself
(``oracle.slot_queries``, slot = position in the batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from attacks.oracle import Oracle, check_images
from attacks.params import ATTACK_SPECS, resolve_params
from hwsim.errors import AxlabError


@dataclass
class AttackOutput:
    adv: np.ndarray                                   # (B, C, H, W) uint8
    grads: np.ndarray | None = None                   # (B,) int64 surrogate gradient rounds
    extra: list[dict[str, Any]] = field(default_factory=list)   # per-image extra JSON fields


class Attack:
    """Base class: ``name`` selects the parameter spec in :mod:`attacks.params`."""

    name: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = resolve_params(self.name, params)

    @property
    def kind(self) -> str:
        return ATTACK_SPECS[self.name]["kind"]

    def __call__(self, oracle: Oracle, x: np.ndarray, y: np.ndarray,
                 rngs: list[np.random.Generator]) -> AttackOutput:
        x = check_images(x)
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (len(x),):
            raise AxlabError(f"labels must have shape ({len(x)},), got {tuple(y.shape)}")
        if len(rngs) != len(x):
            raise AxlabError("one random generator per image is required")
        oracle.reset_slots(len(x))
        out = self.run(oracle, x, y, rngs)
        if out.adv.dtype != np.uint8 or out.adv.shape != x.shape:
            raise AssertionError(f"{self.name} returned {out.adv.dtype} {out.adv.shape}")
        return out

    def run(self, oracle: Oracle, x: np.ndarray, y: np.ndarray,
            rngs: list[np.random.Generator]) -> AttackOutput:
        raise NotImplementedError


def image_rngs(seed: int, indices: np.ndarray | list[int]) -> list[np.random.Generator]:
    """One generator per image from (seed, dataset index): the same image gets the same stream."""
    return [np.random.default_rng([int(seed) & 0xFFFFFFFF, int(i) & 0xFFFFFFFF, 0xA7])
            for i in indices]
