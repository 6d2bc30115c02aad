"""Training throughput (images/s) of float and QAT steps, 1 torch thread by default.

    python bench/train_speed.py --arch resnet8 --batch 128 256 --steps 20 [--channels-last]

Random 32x32x3 images (the speed of a step does not depend on the pixels); one SGD step per
batch with the CIFAR recipe's optimizer; the first 3 steps are warm-up and not timed.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nn.graph import from_torch
from nn.models import build_model
from nn.quant import GraphModule


def _speed(model: torch.nn.Module, batch: int, steps: int, channels_last: bool) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["minnet", "resnet8"])
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-qat", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for arch in a.arch:
        for b in a.batch:
            torch.manual_seed(0)
            m = build_model(arch, 3, 10, 32)
            fp = _speed(m, b, a.steps, a.channels_last)
            line = f"{arch} batch {b} threads {a.threads}{' channels_last' if a.channels_last else ''}: float {fp:.0f} img/s"
            if not a.no_qat:
                m.eval()
                graph = from_torch(m, (3, 32, 32))
                gm = GraphModule(graph, "fq", ranges={})
                gm.train()
                with torch.no_grad():  # first batch initialises the observers
                    gm(torch.rand(b, 3, 32, 32))
                q = _speed(gm, b, a.steps, a.channels_last)
                line += f", QAT {q:.0f} img/s"
            print(line, flush=True)


if __name__ == "__main__":
    main()
