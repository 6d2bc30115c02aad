"""The export folder: file names and tool settings shared by the export steps, and the helpers
that write files and replace the finished folder atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

RTL_DIR = Path(__file__).resolve().parents[2] / "rtl"
RTL_FILES = ("axlab_act_ram.v", "axlab_rom.v", "axlab_requant.v", "axlab_conv_engine.v", "axlab_pool_engine.v",
             "axlab_add_engine.v", "axlab_mul_exact.v")
# added to an export of an imported TFLite network (TFLite's requantiser, ADD, pooling, SOFTMAX)
TFL_RTL_FILES = ("axlab_tfl_requant.v", "axlab_tfl_add_engine.v", "axlab_tfl_pool_engine.v",
                 "axlab_tfl_softmax_engine.v")
TB_MODULE = "axlab_export_tb"
TB_SOURCE = Path(__file__).resolve().parent / f"{TB_MODULE}.py"
TOP = "axlab_net_top"
FORMAT = 1
DEFAULT_LANES = 8
DEFAULT_IMAGES = 20
# Verilator: like hwsim.rtlsim, plus -O1 (the export simulates millions of clocks per image)
# and --no-public-flat-rw: cocotb's runner makes every signal public, which stops Verilator from
# optimising the gate-level netlists (the top's ports are made public by metacomments instead)
VERILATOR_ARGS = ["-CFLAGS", "-O1", "--output-split", "0", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                  "-Wno-UNOPTFLAT", "-Wno-MULTITOP", "--no-public-flat-rw"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_file(path: Path, text: str | bytes) -> None:
    """Write ``text`` (str or bytes) to ``path``, creating its parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def save_npy(path: Path, arr: np.ndarray) -> None:
    """``np.save`` without pickles (C-contiguous copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished temp folder to ``out`` (an older export there is replaced)."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

