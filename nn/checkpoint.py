"""Training checkpoints: one file per run, rewritten atomically after every epoch.

Layout: the line ``axlab-train-ckpt/1``, the sha256 (hex) of the payload on the next line, then
the payload, a ``torch.save`` of plain containers and tensors (read back with
``weights_only=True``: no code runs on load). A torn or edited file fails the checksum and is
refused with one line.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write

# The QAT phase's peak learning rate when --qat-lr is not given (and in checkpoints written
# before it was a setting): this fraction of the float phase's peak lr.
QAT_LR_FRACTION = 0.1

MAGIC = b"axlab-train-ckpt/1\n"


@dataclass
class TrainState:
    """Where a run stands after a finished epoch.

    ``phase``: 'float' or 'qat'; ``epoch``: epochs finished in that phase; ``step``: optimizer
    steps taken in that phase (drives the learning-rate schedule). ``model``: the float torch
    module's state (final float weights once in QAT); ``qat_model``/``ranges``: the fake-quant
    module and its activation observers (QAT phase only)."""

    config: dict[str, Any]
    phase: str
    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    gen: torch.Tensor
    torch_rng: torch.Tensor
    history: list[dict[str, Any]]
    qat_model: dict[str, torch.Tensor] | None = None
    ranges: dict[str, list[float]] | None = None


def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    buf = io.BytesIO()
    torch.save(asdict(state), buf)
    payload = buf.getvalue()
    return atomic_write(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def read_checkpoint(path: str | Path) -> TrainState:
    """Read and verify a checkpoint file (any damage raises a one-line AxlabError)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AxlabError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not data.startswith(MAGIC):
        raise AxlabError(f"{path}: not an axlab training checkpoint (no {MAGIC.strip().decode()} header)")
    rest = data[len(MAGIC):]
    digest, _, payload = rest.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise AxlabError(f"{path}: corrupt checkpoint (sha256 mismatch; truncated or modified)")
    try:
        d = torch.load(io.BytesIO(payload), weights_only=True)
        names = {f.name for f in fields(TrainState)}
        if not isinstance(d, dict) or not names.issuperset(d) or d.get("phase") not in ("float", "qat"):
            raise ValueError("unexpected contents")
        return TrainState(**d)
    except Exception as exc:  # a checksummed file that still does not parse: foreign or buggy writer
        raise AxlabError(f"{path}: corrupt checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})") \
            from None


def load_checkpoint(path: str | Path | None, config: dict[str, Any]) -> TrainState:
    """Read a checkpoint for ``--resume``, refusing one whose configuration differs from ``config``."""
    if path is None:
        raise AxlabError("--resume needs --checkpoint FILE")
    path = Path(path)
    if not path.exists():
        raise AxlabError(f"--resume: checkpoint {path} does not exist (start without --resume)")
    state = read_checkpoint(path)
    saved = {"qat_lr": state.config["lr"] * QAT_LR_FRACTION, **state.config} if "lr" in state.config else state.config
    # user-facing settings first; float_epochs is derived from epochs and qat_epochs
    for key in sorted(set(saved) | set(config), key=lambda k: (k == "float_epochs", k)):
        if key == "qat_lr" and state.phase == "float":
            continue  # QAT has not begun: the float phase does not depend on it
        if saved.get(key) != config.get(key):
            raise AxlabError(f"{path}: checkpoint was written with {key}={saved.get(key)!r}, this run has "
                             f"{key}={config.get(key)!r}; resume with the checkpoint's settings or start a new "
                             f"checkpoint")
    return state
