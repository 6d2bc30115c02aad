"""Public API of the nn package (used by attacks, flows and export).

Shapes and units: images are uint8 NCHW in [0, 255] (32x32; 1 channel for digits, 3 for
CIFAR-10); surrogates take float NCHW in [0, 1]; logits are (N, classes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn as tnn

from hwsim.errors import AxlabError
from hwsim.lut import Lut
from nn.bundle import ModelBundle, load_model, save_model
from nn.data import load_dataset
from nn.design import load_design_dict, make_design, read_design, resolve_multiplier, write_design
from nn.engine import BACKENDS, IntegerEngine
from nn.graph_check import is_tflite_graph
from nn.quant import GraphModule

__all__ = ["load_dataset", "load_model", "save_model", "ModelBundle", "approximable_layers", "load_images", "load_labels",
           "load_implementation", "Implementation", "write_design", "read_design", "resolve_multiplier",
           "make_design", "fq_agreement"]

IMPLS = ("fp", "q", "ax")


def approximable_layers(bundle: ModelBundle) -> list[str]:
    """Conv/dense layer names in network order (MinNet: conv1, conv2, fc1, fc2)."""
    return bundle.layers()


def _softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Implementation:
    """One way of running a model: float (fp), integer QNN (q) or approximate AxNN (ax)."""

    def __init__(self, bundle: ModelBundle, impl: str, backend: str, luts: list[Lut] | None,
                 name: str, lowrank: bool = True, batch: int = 256) -> None:
        self.bundle, self.impl, self.backend, self.luts, self.name = bundle, impl, backend, luts, name
        self.batch = batch
        self.engine = None if impl == "fp" else IntegerEngine(bundle, luts, backend, lowrank=lowrank)
        self._float = _twin(bundle, "float").eval() if impl == "fp" else None
        self.out_scale, self.out_zp = (1.0, 0) if impl == "fp" else bundle.qparams.act[
            bundle.graph.quant_source(bundle.graph.output)]
        # an imported model ending in SOFTMAX outputs probabilities (its fp twin: logits)
        self.probs_out = impl != "fp" and bundle.graph.by_name[bundle.graph.output]["op"] == "tfl_softmax"

    def logits(self, x: np.ndarray, progress: bool = False) -> np.ndarray:
        """fp: float32 logits; q/ax: int8 output codes as int32. x: uint8 (N, C, H, W)."""
        x = _check_images(x, self.bundle)
        if self.engine is not None:
            return self.engine.logits(x, self.batch, progress)
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch):
                outs.append(self._float(torch.from_numpy(x[i:i + self.batch]).float() / 255.0).numpy())
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, self.bundle.num_classes), np.float32)

    def dequantize(self, logits: np.ndarray) -> np.ndarray:
        """Logits in real units (float64): (code - zp) * scale for q/ax."""
        return (logits.astype(np.float64) - self.out_zp) * self.out_scale

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the dequantised logits, float64 (N, classes); for a model whose output
        is a SOFTMAX (imported TFLite), its dequantised output renormalised to sum 1."""
        if self.probs_out:
            p = np.clip(self.dequantize(self.logits(x)), 0.0, None) + 1e-12
            return p / p.sum(axis=1, keepdims=True)
        return _softmax64(self.dequantize(self.logits(x)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def surrogate(self) -> tnn.Module:
        """Differentiable float model: [0, 1] NCHW -> float logits. fp: the float network;
        q/ax: the fake-quant network with straight-through rounding (BPDA)."""
        if self.impl == "fp":
            return _twin(self.bundle, "float").eval()
        return _twin(self.bundle, "fq").eval()

    def __repr__(self) -> str:
        return f"Implementation({self.name!r}, backend={self.backend!r})"


def _twin(bundle: ModelBundle, mode: str) -> tnn.Module:
    """The float ("float") or fake-quant ("fq") torch twin of a bundle (imported TFLite
    models: nn.tflite_float)."""
    if is_tflite_graph(bundle.graph.nodes):
        from nn.tflite_float import TfliteFloatModule

        return TfliteFloatModule(bundle, mode)
    if mode == "float":
        return GraphModule(bundle.graph, "float")
    return GraphModule(bundle.qat_graph(), "fq", qparams=bundle.qparams)


def fq_agreement(bundle: ModelBundle, x: np.ndarray, backend: str = "numba", batch: int = 256) -> dict[str, float]:
    """How closely the integer-only QNN follows the fake-quant network it was derived from.

    ``top1``: fraction of images whose predicted class agrees; ``codes``: fraction of output
    codes that are equal (fake-quant logits requantised to the output grid, float64).
    """
    x = _check_images(x, bundle)
    q = Implementation(bundle, "q", backend, None, "q", batch=batch).logits(x)
    fq = GraphModule(bundle.qat_graph(), "fq", qparams=bundle.qparams).double().eval()
    s, zp = bundle.qparams.act[bundle.graph.quant_source(bundle.graph.output)]
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(fq(torch.from_numpy(x[i:i + batch]).double() / 255.0).numpy())
    f = np.clip(np.round(np.concatenate(outs) / s) + zp, -128, 127) if outs else np.zeros_like(q, dtype=np.float64)
    if not len(x):
        return {"top1": float("nan"), "codes": float("nan")}
    return {"top1": float((q.argmax(1) == f.argmax(1)).mean()), "codes": float((q == f).mean())}


def _npy_fits(path: Path, what: str) -> None:
    """Refuse, from the header alone, a .npy file whose declared array is larger than the data it
    holds (a truncated file, or a header declaring terabytes to make np.load allocate them), and
    anything that is not a regular file (a FIFO or device would block or never end)."""
    if path.exists() and not path.is_file():
        raise AxlabError(f"{path}: not a regular file; a .npy file of {what} is needed")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            start = fh.tell()
    except (ValueError, EOFError) as exc:        # not .npy (np.load below says why), or a bad header
        if "magic" in str(exc).lower():
            return
        raise AxlabError(f"{path}: not a readable .npy array of {what} ({exc})") from None
    except OSError:
        return                                   # np.load below reports it
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = path.stat().st_size - start
    if need > have:
        raise AxlabError(f"{path}: .npy header declares {what} of shape {tuple(shape)} ({need} bytes) but the file "
                         f"holds {have} bytes of data (truncated or forged)")


def _load_npy(path: str | Path, what: str) -> np.ndarray:
    try:
        _npy_fits(Path(path), what)
        a = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise AxlabError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # pickled objects, bad header, truncated data
        raise AxlabError(f"{path}: not a readable .npy array of {what} ({exc})") from None
    if not isinstance(a, np.ndarray):
        raise AxlabError(f"{path}: a .npy file with one array of {what} is needed (got an archive)")
    return a


def load_images(path: str | Path, bundle: ModelBundle) -> np.ndarray:
    """uint8 images from a .npy file, NCHW or NHWC, -> NCHW matching the model's input
    (C, H, W); anything else is one AxlabError line naming the file and the shapes allowed."""
    a = _load_npy(path, "images")
    c, h, w = (int(v) for v in bundle.input_shape)
    if a.dtype != np.uint8:
        raise AxlabError(f"{path}: images must be uint8 (pixels 0..255), got {a.dtype}")
    if a.ndim == 4 and tuple(a.shape[1:]) == (c, h, w):
        return np.ascontiguousarray(a)
    if a.ndim == 4 and tuple(a.shape[1:]) == (h, w, c):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    raise AxlabError(f"{path}: images of shape {a.shape} do not fit the model input: need (N, {c}, {h}, {w}) "
                     f"NCHW or (N, {h}, {w}, {c}) NHWC uint8")


def load_labels(path: str | Path, n: int, classes: int) -> np.ndarray:
    """Integer labels (n,) in [0, classes) from a .npy file, as int64."""
    a = _load_npy(path, "labels")
    if a.ndim != 1 or len(a) != n or a.dtype.kind not in "iu":
        raise AxlabError(f"{path}: labels must be {n} integers (one per image), got {a.dtype} of shape {a.shape}")
    if n and (a.min() < 0 or a.max() >= classes):
        raise AxlabError(f"{path}: labels must lie in [0, {classes - 1}], got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def _check_images(x: Any, bundle: ModelBundle, what: str = "images") -> np.ndarray:
    """``x`` as a C-contiguous uint8 (N, C, H, W) array matching the model input, or one
    AxlabError line saying what was expected and what was given (nothing is cast)."""
    want = f"uint8 of shape (N, {', '.join(map(str, bundle.input_shape))})"
    if not isinstance(x, np.ndarray):
        raise AxlabError(f"{what} must be a numpy array, {want}; got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise AxlabError(f"{what} must be {want} with pixels in [0, 255]; got dtype {x.dtype}")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(bundle.input_shape):
        hint = " (looks like NHWC; transpose to NCHW)" if x.ndim == 4 and tuple(x.shape[1:]) == tuple(
            bundle.input_shape[1:]) + (bundle.input_shape[0],) else ""
        raise AxlabError(f"{what} must be {want} for this model; got shape {tuple(x.shape)}{hint}")
    return np.ascontiguousarray(x)


def load_implementation(model: str | Path | ModelBundle, impl: str, design: str | dict[str, Any] | None = None,
                        multiplier: str | None = None, backend: str = "torch", lowrank: bool = True,
                        batch: int = 256) -> Implementation:
    """fp | q | ax (ax needs ``design`` (path or dict) or ``multiplier`` for every layer).

    ``lowrank`` (numba backend): use the exact low-rank convolution path where the LUT's error
    rank allows it, else the gather kernel.
    """
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    if impl not in IMPLS:
        raise AxlabError(f"unknown implementation {impl!r} (fp, q or ax)")
    if backend not in BACKENDS:
        raise AxlabError(f"unknown backend {backend!r} (torch, numba or cuda)")
    if impl != "ax":
        if design is not None or multiplier is not None:
            raise AxlabError(f"--design/--multiplier only apply to impl ax, not {impl}")
        return Implementation(bundle, impl, backend, None, impl, lowrank, batch)
    if (design is None) == (multiplier is None):
        raise AxlabError("impl ax needs exactly one of a design or a multiplier")
    if design is not None:
        d = load_design_dict(design)
        luts = read_design(d, bundle, where=None if isinstance(design, dict) else str(design))
        name = f"ax:{d.get('name') or 'design'}"
    else:
        d, luts = make_design(bundle, [multiplier])
        name = f"ax:{d['name']}"
    return Implementation(bundle, "ax", backend, luts, name, lowrank, batch)
