"""Shared helpers of the hwsim tests (paths, a private cache, running the CLI)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EVOAPPROX = REPO.parent / "shared" / "evoapprox" / "mul8s"

needs_evoapprox = pytest.mark.skipif(not EVOAPPROX.is_dir(), reason="../shared/evoapprox not present")


def evo(name: str) -> Path:
    return EVOAPPROX / f"mul8s_{name}.v"


def run_cli(*args: str, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m flows ...`` with a private cache; returns the completed process."""
    env = dict(os.environ, AXLAB_CACHE=str(cache), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def cached_luts(cache: Path) -> list[Path]:
    d = cache / "luts"
    return sorted(d.glob("*.npz")) if d.is_dir() else []



@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """An empty LUT cache per test, in the modules that import this fixture (autouse there)."""
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))


def all_pairs(bits_a: int, bits_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Every operand pair of an exhaustive LUT as (A codes, B codes), uint64, row-major."""
    codes = np.arange(2 ** (bits_a + bits_b), dtype=np.uint64)
    return codes >> np.uint64(bits_b), codes & np.uint64(2**bits_b - 1)
