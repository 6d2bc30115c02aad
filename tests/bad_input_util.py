"""Shared helpers of the bad-input suites: a tiny model (built in ~1 s, no training), model
files rewritten with one field changed, and running the real CLI in this process."""
from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np


@functools.lru_cache(maxsize=None)
def tiny_bundle():
    """conv1 (1->2, 3x3, ReLU) -> 2x2 max pool -> flatten -> fc (18 -> 3) on 1x8x8 images,
    random weights, calibrated on 8 random images."""
    import torch
    from torch import nn as tnn

    from nn.train import quantize_module

    torch.manual_seed(0)
    m = tnn.Sequential(OrderedDict(conv1=tnn.Conv2d(1, 2, 3), relu=tnn.ReLU(), pool=tnn.MaxPool2d(2),
                                   flat=tnn.Flatten(), fc=tnn.Linear(18, 3)))
    x = np.random.default_rng(0).integers(0, 256, (8, 1, 8, 8), dtype=np.uint8)
    return quantize_module(m, x, "digits", "tiny")


def tiny_images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)


def model_parts(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(axlab metadata, tensors) of a model file's bytes."""
    from safetensors.numpy import load

    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    return json.loads(header["__metadata__"]["axlab"]), dict(load(data))


def write_model(path: Path, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save

    path.write_bytes(save(tensors, metadata={"axlab": json.dumps(meta)}))
    return path


def mutated_model(path: Path, change: Callable[[dict[str, Any], dict[str, np.ndarray]], None]) -> Path:
    """The tiny model file with ``change(meta, tensors)`` applied, written to ``path``."""
    meta, tensors = model_parts(tiny_bundle().to_bytes())
    change(meta, tensors)
    return write_model(path, meta, tensors)


def node(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in meta["graph"]["nodes"] if n["name"] == name)


def axlab(argv: list[Any]) -> tuple[int, str, str]:
    """``axlab ARGV`` in this process: (exit status, stdout, stderr)."""
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, *expected: str) -> str:
    """Non-zero exit, exactly one stderr line ``axlab: ...`` containing every ``expected``."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0, err
    assert len(lines) == 1, err
    assert lines[0].startswith("axlab: ") and "Traceback" not in err, err
    for e in expected:
        assert e in lines[0], (e, lines[0])
    return lines[0]


def tree(folder: Path) -> list[str]:
    """Every path under ``folder`` (to assert that nothing was written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
