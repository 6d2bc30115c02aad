"""Float training (Adam, cross-entropy, shift/flip augmentation), post-training calibration
and quantisation-aware training (BatchNorm folded, fake quant with straight-through
gradients). Every stochastic step draws from ``seed``."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from nn.bundle import ModelBundle
from nn.data import load_dataset, parse_spec
from nn.graph import Graph, from_torch
from nn.models import build_model
from nn.quant import GraphModule, freeze


def _to_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float().div_(255.0)


def _augment(xb: torch.Tensor, gen: torch.Generator, flip: bool, shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero fill) and optional horizontal flip."""
    n, c, h, w = xb.shape
    padded = F.pad(xb, (shift, shift, shift, shift))
    oy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        m = torch.rand(n, generator=gen) < 0.5
        out[m] = out[m].flip(-1)
    return out.contiguous()


def _run_epochs(model: tnn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch: int,
                gen: torch.Generator, flip: bool, desc: str, on_epoch: Callable[[int], None] | None = None) -> None:
    from tqdm import tqdm

    if epochs <= 0:
        return
    xt, yt = _to_float(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False)
    for ep in bar:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        tot, correct, n = 0.0, 0, 0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb = _augment(xt[idx], gen, flip)
            out = model(xb)
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
            n += len(idx)
        bar.set_postfix(loss=f"{tot / n:.3f}", acc=f"{correct / n:.3f}")
        if on_epoch:
            on_epoch(ep)
    model.eval()


@torch.no_grad()
def accuracy(model: tnn.Module, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    model.eval()
    pred = [model(_to_float(x[i:i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)]
    return float((np.concatenate(pred) == y).mean()) if len(x) else float("nan")


@torch.no_grad()
def calibrate(graph: Graph, x: np.ndarray, batch: int = 500) -> dict[str, tuple[float, float]]:
    """Min/max of every quantised activation over ``x`` (float forward)."""
    gm = GraphModule(graph, "float")
    gm.observe = True
    gm.eval()
    for i in range(0, len(x), batch):
        gm(_to_float(x[i:i + batch]))
    return gm.current_ranges()


def train(arch_or_module: str | tnn.Module, dataset: str, epochs: int, qat: bool = False, seed: int = 0,
          qat_epochs: int | None = None, batch: int = 32, lr: float = 2e-3, threads: int | None = None) -> ModelBundle:
    """Train a model and return its bundle (always quantised: by QAT, or by calibration).

    With ``qat`` the ``epochs`` are split: ``epochs - qat_epochs`` float, then ``qat_epochs``
    (default max(1, epochs // 4)) of quantisation-aware fine-tuning. ``threads``: torch
    intra-op threads while training (restored afterwards); None keeps the current setting.
    Small models on small batches (MinNet, batch 32) train about as fast on one thread and
    far more predictably on a busy machine (no OpenMP barrier waits on descheduled threads).
    """
    if threads is None:
        return _train(arch_or_module, dataset, epochs, qat, seed, qat_epochs, batch, lr)
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _train(arch_or_module, dataset, epochs, qat, seed, qat_epochs, batch, lr)
    finally:
        torch.set_num_threads(old)


def _train(arch_or_module: str | tnn.Module, dataset: str, epochs: int, qat: bool, seed: int,
           qat_epochs: int | None, batch: int, lr: float) -> ModelBundle:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    name, _ = parse_spec(dataset)
    flip = name != "digits"
    xtr, ytr = load_dataset(dataset, "train", seed=0)
    xva, yva = load_dataset(dataset, "val", seed=0)
    c, h, w = xtr.shape[1:]
    if isinstance(arch_or_module, str):
        arch = arch_or_module
        module = build_model(arch, c, int(ytr.max()) + 1 if len(ytr) else 10, h)
    else:
        arch, module = type(arch_or_module).__name__, arch_or_module
    q_ep = (qat_epochs if qat_epochs is not None else max(1, epochs // 4)) if qat else 0
    f_ep = max(1, epochs - q_ep) if epochs > 0 else 0
    _run_epochs(module, xtr, ytr, f_ep, lr, batch, gen, flip, f"train {arch}")
    graph = from_torch(module, (c, h, w))
    calib = xtr[torch.randperm(len(xtr), generator=gen)[:2000].numpy()]
    ranges = calibrate(graph, calib)
    qat_params = dict(graph.params)
    if q_ep:
        gm = GraphModule(graph, "fq", ranges=ranges)
        _run_epochs(gm, xtr, ytr, q_ep, lr * 0.1, batch, gen, flip, f"QAT {arch}")
        qat_params = gm.float_params()
        ranges = gm.current_ranges()
    qgraph = graph.copy(qat_params)
    qp = freeze(qgraph, ranges)
    meta = {"epochs": epochs, "float_epochs": f_ep, "qat_epochs": q_ep, "qat": bool(q_ep), "seed": seed,
            "val_acc_fp": accuracy(GraphModule(graph, "float"), xva, yva),
            "val_acc_fq": accuracy(GraphModule(qgraph, "fq", qparams=qp), xva, yva)}
    return ModelBundle(arch, graph, qat_params, qp, dataset, meta)


def quantize_module(module: tnn.Module, calib_x: np.ndarray, dataset: str = "synthetic",
                    arch: str | None = None) -> ModelBundle:
    """Post-training quantisation of an (already trained or random) torch module.

    ``calib_x``: uint8 images (N, C, H, W) used to calibrate activation ranges.
    """
    graph = from_torch(module, tuple(calib_x.shape[1:]))
    ranges = calibrate(graph, calib_x)
    qp = freeze(graph, ranges)
    return ModelBundle(arch or type(module).__name__, graph, dict(graph.params), qp, dataset,
                       {"epochs": 0, "qat": False, "ptq_images": int(len(calib_x))})
