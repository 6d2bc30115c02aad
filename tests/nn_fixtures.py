"""Shared, cached test objects of the nn tests (plain functions cached per process, so the
small training run happens once per pytest session however many modules use it)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from hwsim.lut import Lut, exact_table

EVO_DIR = Path(__file__).resolve().parents[2] / "shared" / "evoapprox" / "mul8s"


@functools.lru_cache(maxsize=None)
def minnet_qat():
    """MinNet on digits, 3 epochs (2 float + 1 QAT): a real but quick model."""
    from nn.train import train

    return train("minnet", "digits", epochs=3, qat=True, seed=0, threads=1)


@functools.lru_cache(maxsize=None)
def resnet8_ptq():
    """ResNet8 (1-channel input) with random weights, calibrated on 200 digits images."""
    import torch

    from nn.data import load_dataset
    from nn.models import build_model
    from nn.train import quantize_module

    torch.manual_seed(1)
    x, _ = load_dataset("digits", "train")
    return quantize_module(build_model("resnet8", 1, 10).eval(), x[:200], "digits", "resnet8")


@functools.lru_cache(maxsize=None)
def digits_test():
    from nn.data import load_dataset

    return load_dataset("digits", "test")


def lowrank_lut(seed: int, rank: int, signed: bool = True, scale: int = 6) -> Lut:
    """Exact product + a random integer error of the given rank."""
    rng = np.random.default_rng(seed)
    u = rng.integers(-scale, scale + 1, (256, rank))
    v = rng.integers(-scale, scale + 1, (rank, 256))
    t = exact_table(8, 8, signed).astype(np.int64) + u @ v
    return Lut(f"lowrank{rank}_{seed}{'s' if signed else 'u'}", t.astype(np.int32), 8, 8, signed)


def fullrank_lut(seed: int, signed: bool = True, amp: int = 300) -> Lut:
    """Exact product + random full-rank error (like the unsigned EvoApprox circuits)."""
    rng = np.random.default_rng(seed)
    t = exact_table(8, 8, signed).astype(np.int64) + rng.integers(-amp, amp + 1, (256, 256))
    return Lut(f"fullrank_{seed}{'s' if signed else 'u'}", t.astype(np.int32), 8, 8, signed)


@functools.lru_cache(maxsize=None)
def builtin_luts() -> tuple[Lut, ...]:
    """The built-in family (hwsim.builtin) via hwsim.store (gate evaluator), or ()."""
    try:
        from hwsim.builtin import builtin_names
        from hwsim.store import resolve
    except ImportError:
        return ()
    return tuple(resolve(n, sim="gates") for n in builtin_names())


def real_luts() -> list[Lut]:
    """EvoApprox mul8s (when ../shared is present) followed by the built-in family."""
    return list(evo_luts()) + list(builtin_luts())


@functools.lru_cache(maxsize=None)
def evo_luts() -> tuple[Lut, ...]:
    """The 13 real mul8s LUTs via hwsim.store (gate evaluator), or [] when unavailable."""
    if not EVO_DIR.is_dir():
        return ()
    try:
        from hwsim.store import resolve
    except ImportError:
        return ()
    return tuple(resolve(str(p), sim="gates") for p in sorted(EVO_DIR.glob("*.v")))
