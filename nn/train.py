"""Float training, post-training calibration and quantisation-aware training (BatchNorm folded,
fake quant with straight-through gradients), with resumable per-epoch checkpoints.

Two recipes (every stochastic step draws from ``seed``):

* ``default`` (digits; unchanged behaviour): Adam, lr 2e-3, batch 32, cosine decay per step,
  random shift by up to 2 px (zero fill), horizontal flip for non-digits data; QAT with Adam at
  lr/10.
* ``cifar``: SGD momentum 0.9 (Nesterov), weight decay 5e-4, lr 0.05, batch 128, linear warm-up
  over the first 2 epochs then cosine to 0 per step; random crop with 4-px zero padding and
  horizontal flip; channels_last tensors (1.4-3x faster convolutions on one CPU thread);
  QAT with the same optimizer at lr/10, cosine to 0, no warm-up.

With ``checkpoint`` a training state is written atomically after every epoch (model, optimizer,
step counter, random generator states, epoch, phase, the full configuration) and ``resume``
continues from it with the same final weights as an uninterrupted run (same thread count).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from hwsim.errors import AxlabError
from nn.bundle import ModelBundle
from nn.checkpoint import QAT_LR_FRACTION, TrainState, load_checkpoint, save_checkpoint
from nn.data import load_dataset, parse_spec
from nn.graph import Graph, from_torch
from nn.models import build_model
from nn.quant import DIVERGED, GraphModule, freeze

RECIPES = ("default", "cifar")
# recipe -> (lr, batch) used when the caller passes None
RECIPE_DEFAULTS = {"default": (2e-3, 32), "cifar": (0.05, 128)}


class StopTraining(Exception):
    """Raised by an ``on_epoch`` hook to stop after a checkpoint (tests simulate a kill with it)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (a resume must match it key by key)."""

    arch: str
    dataset: str
    epochs: int
    qat: bool
    qat_epochs: int  # resolved: 0 without QAT
    float_epochs: int
    seed: int
    lr: float
    batch: int
    recipe: str
    qat_lr: float  # peak learning rate of the QAT phase; resolved: a tenth of lr unless given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_config(arch: str, dataset: str, epochs: int, qat: bool = False, seed: int = 0,
                   qat_epochs: int | None = None, batch: int | None = None, lr: float | None = None,
                   recipe: str = "default", qat_lr: float | None = None) -> TrainConfig:
    """Fill the recipe's defaults and split ``epochs`` into float and QAT epochs."""
    if recipe not in RECIPES:
        raise AxlabError(f"unknown training recipe {recipe!r} (known: {', '.join(RECIPES)})")
    parse_spec(dataset)
    d_lr, d_batch = RECIPE_DEFAULTS[recipe]
    q_ep = (qat_epochs if qat_epochs is not None else max(1, epochs // 4)) if qat else 0
    f_ep = max(1, epochs - q_ep) if epochs > 0 else 0
    peak = float(lr if lr is not None else d_lr)
    return TrainConfig(arch, dataset, int(epochs), bool(q_ep), int(q_ep), int(f_ep), int(seed),
                       peak, int(batch if batch is not None else d_batch), recipe,
                       float(qat_lr) if qat_lr is not None else peak * QAT_LR_FRACTION)


def _to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    return t.float().div_(255.0)


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


class _Recipe:
    """Optimizer, per-step learning rate, augmentation and memory format of one phase."""

    def __init__(self, cfg: TrainConfig, phase: str, steps_per_epoch: int) -> None:
        self.cfg, self.phase = cfg, phase
        self.cifar = cfg.recipe == "cifar"
        epochs = cfg.float_epochs if phase == "float" else cfg.qat_epochs
        self.total = max(1, epochs * steps_per_epoch)
        self.warmup = min(2 * steps_per_epoch, self.total // 4) if (self.cifar and phase == "float") else 0
        self.base_lr = cfg.lr if phase == "float" else cfg.qat_lr
        self.flip = parse_spec(cfg.dataset)[0] != "digits"
        self.shift = 4 if self.cifar else 2
        self.memory_format = torch.channels_last if self.cifar else torch.contiguous_format

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        if self.cifar:
            return torch.optim.SGD(params, lr=self.lr_at(0), momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.Adam(params, lr=self.lr_at(0))

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        s = min(step, self.total)
        if self.cifar:
            s, span = s - self.warmup, self.total - self.warmup
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * s / max(1, span)))
        return self.base_lr * (0.5 * (1 + math.cos(math.pi * s / self.total)))


def _progress(total: int, desc: str):  # noqa: ANN202 - tqdm type
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    # in a log file (nohup) one line every 30 s instead of a carriage-return storm
    return tqdm(total=total, desc=desc, unit="img", unit_scale=False, leave=tty, mininterval=0.1 if tty else 30,
                dynamic_ncols=tty, file=sys.stderr)


def _run_epoch(model: tnn.Module, opt: torch.optim.Optimizer, recipe: _Recipe, xt: torch.Tensor, yt: torch.Tensor,
               gen: torch.Generator, step: int, desc: str) -> tuple[int, float, float]:
    """One epoch of SGD steps; returns (next step, mean loss, train accuracy)."""
    model.train()
    n_all, batch = len(xt), recipe.cfg.batch
    perm = torch.randperm(n_all, generator=gen)
    tot, correct, n = 0.0, 0, 0
    with _progress(n_all, desc) as bar:
        for i in range(0, n_all, batch):
            idx = perm[i:i + batch]
            xb = _augment(_to_float(xt[idx]), gen, recipe.flip, recipe.shift)
            if recipe.cifar:
                xb = xb.contiguous(memory_format=recipe.memory_format)
            for g in opt.param_groups:
                g["lr"] = recipe.lr_at(step)
            out = model(xb)
            loss = F.cross_entropy(out, yt[idx])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise AxlabError(f"{desc}: the loss is {value} at step {step + 1}: {DIVERGED}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            tot += value * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
            n += len(idx)
            bar.update(len(idx))
            bar.set_postfix(loss=f"{tot / n:.3f}", acc=f"{correct / n:.3f}", lr=f"{recipe.lr_at(step - 1):.2e}",
                            refresh=False)
    model.eval()
    return step, tot / max(n, 1), correct / max(n, 1)


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
          qat_epochs: int | None = None, batch: int | None = None, lr: float | None = None,
          threads: int | None = None, recipe: str = "default", checkpoint: str | Path | None = None,
          resume: bool = False, on_epoch: Callable[[TrainState], None] | None = None,
          log: Callable[[str], None] | None = None, qat_lr: float | None = None) -> ModelBundle:
    """Train a model and return its bundle (always quantised: by QAT, or by calibration).

    With ``qat`` the ``epochs`` are split: ``epochs - qat_epochs`` float, then ``qat_epochs``
    (default max(1, epochs // 4)) of quantisation-aware fine-tuning. ``batch``/``lr`` default to
    the recipe's; ``qat_lr`` (the QAT phase's peak learning rate) to a tenth of ``lr``.
    ``threads``: torch intra-op threads while training (restored afterwards); None keeps the
    current setting. Small models on small batches (MinNet, batch 32) train about
    as fast on one thread and far more predictably on a busy machine.
    ``checkpoint``: file written after every epoch; ``resume`` continues from it (the
    configuration must match; a built-in ``arch`` name is needed). ``on_epoch`` is called after
    each checkpoint with the state (raise ``StopTraining`` to stop there). ``log`` receives one
    line per epoch.
    """
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        return _train(arch_or_module, dataset, epochs, qat, seed, qat_epochs, batch, lr, recipe,
                      Path(checkpoint) if checkpoint else None, resume, on_epoch, log, qat_lr)
    finally:
        torch.set_num_threads(old)


def _train(arch_or_module: str | tnn.Module, dataset: str, epochs: int, qat: bool, seed: int,
           qat_epochs: int | None, batch: int | None, lr: float | None, recipe_name: str, ckpt: Path | None,
           resume: bool, on_epoch: Callable[[TrainState], None] | None,
           log: Callable[[str], None] | None, qat_lr: float | None = None) -> ModelBundle:
    arch = arch_or_module if isinstance(arch_or_module, str) else type(arch_or_module).__name__
    cfg = resolve_config(arch, dataset, epochs, qat, seed, qat_epochs, batch, lr, recipe_name, qat_lr)
    if resume and not isinstance(arch_or_module, str):
        raise AxlabError("resume needs a built-in architecture name, not a torch module")
    if resume and ckpt is None:
        raise AxlabError("--resume needs --checkpoint FILE")
    state = load_checkpoint(ckpt, cfg.to_dict()) if resume else None
    say = log or (lambda s: None)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_dataset(dataset, "train", seed=0)
    xva, yva = load_dataset(dataset, "val", seed=0)
    c, h, w = xtr.shape[1:]
    if isinstance(arch_or_module, str):
        module = build_model(arch, c, int(ytr.max()) + 1 if len(ytr) else 10, h)
    else:
        module = arch_or_module
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch) if len(xtr) else 0
    history: list[dict[str, Any]] = []
    phase, done, step = "float", 0, 0
    opt_state = None
    if state is not None:
        module.load_state_dict(state.model)
        gen.set_state(state.gen)
        torch.set_rng_state(state.torch_rng)
        phase, done, step, history = state.phase, state.epoch, state.step, list(state.history)
        opt_state = state.optimizer
        say(f"resuming {ckpt}: phase {phase}, {done} epochs done")

    def checkpoint(ph: str, ep: int, st: int, opt: torch.optim.Optimizer | None, gm: GraphModule | None) -> None:
        s = TrainState(cfg.to_dict(), ph, ep, st, module.state_dict(), None if opt is None else opt.state_dict(),
                       gen.get_state(), torch.get_rng_state(), history,
                       None if gm is None else gm.state_dict(), None if gm is None else gm.ranges)
        if ckpt is not None:
            save_checkpoint(ckpt, s)
        if on_epoch is not None:
            on_epoch(s)

    def epochs_of(model: tnn.Module, rec: _Recipe, opt: torch.optim.Optimizer, ph: str, first: int, n_ep: int,
                  gm: GraphModule | None) -> None:
        nonlocal step
        for ep in range(first, n_ep):
            t0 = time.perf_counter()
            step, loss, acc = _run_epoch(model, opt, rec, xt, yt, gen, step, f"{arch} {ph} {ep + 1}/{n_ep}")
            dt = time.perf_counter() - t0
            va = accuracy(model, xva, yva)
            history.append({"phase": ph, "epoch": ep + 1, "loss": round(loss, 5), "train_acc": round(acc, 5),
                            "val_acc": round(va, 5), "seconds": round(dt, 1)})
            left = (n_ep - ep - 1) * dt / 60
            say(f"{arch} {ph} epoch {ep + 1}/{n_ep}: loss {loss:.4f}, train acc {acc:.4f}, val acc {va:.4f}, "
                f"{dt:.0f} s ({len(xt) / dt:.0f} img/s), {ph} phase done in ~{left:.0f} min at this speed"
                + (f" (then {cfg.qat_epochs} QAT epochs, ~2x slower each)" if ph == "float" and cfg.qat_epochs else ""))
            checkpoint(ph, ep + 1, step, opt, gm)

    # -- float phase -----------------------------------------------------------------------
    rec = _Recipe(cfg, "float", steps_per_epoch)
    module = module.to(memory_format=rec.memory_format)
    if phase == "float":
        opt = rec.optimizer(module.parameters())
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        epochs_of(module, rec, opt, "float", done, cfg.float_epochs, None)
        done, opt_state = 0, None
    module = module.to(memory_format=torch.contiguous_format)
    module.eval()
    graph = from_torch(module, (c, h, w))
    qat_params = dict(graph.params)
    # -- calibration and QAT ------------------------------------------------------------------
    gm: GraphModule | None = None
    if phase == "float":
        calib = xtr[torch.randperm(len(xtr), generator=gen)[:2000].numpy()]
        ranges = calibrate(graph, calib)
    else:  # resumed inside QAT: the observers' ranges come from the checkpoint
        if state is None or state.qat_model is None or state.ranges is None:
            raise AxlabError(f"{ckpt}: checkpoint of phase {phase} lacks the QAT state")
        ranges = {k: (float(v[0]), float(v[1])) for k, v in state.ranges.items()}
    if cfg.qat_epochs:
        qrec = _Recipe(cfg, "qat", steps_per_epoch)
        gm = GraphModule(graph, "fq", ranges=ranges).to(memory_format=qrec.memory_format)
        if phase == "qat":
            assert state is not None
            gm.load_state_dict(state.qat_model)
            gm.ranges = {k: list(v) for k, v in state.ranges.items()}
        else:
            step = 0
        opt = qrec.optimizer(gm.parameters())
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        epochs_of(gm, qrec, opt, "qat", done if phase == "qat" else 0, cfg.qat_epochs, gm)
        qat_params = gm.float_params()
        ranges = gm.current_ranges()
    elif ckpt is not None and not history:  # zero epochs: nothing to resume, still leave a state
        checkpoint("float", 0, step, None, None)
    qgraph = graph.copy(qat_params)
    qp = freeze(qgraph, ranges)
    meta = {"epochs": cfg.epochs, "float_epochs": cfg.float_epochs, "qat_epochs": cfg.qat_epochs,
            "qat": cfg.qat, "seed": seed,
            "val_acc_fp": accuracy(GraphModule(graph, "float"), xva, yva),
            "val_acc_fq": accuracy(GraphModule(qgraph, "fq", qparams=qp), xva, yva)}
    if recipe_name != "default":
        meta.update(recipe=recipe_name, lr=cfg.lr, batch=cfg.batch)
    if qat_lr is not None:  # only when given: files of runs without it keep their bytes
        meta.update(qat_lr=cfg.qat_lr)
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
