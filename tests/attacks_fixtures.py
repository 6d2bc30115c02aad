"""Shared test helpers for the attacks tests: a tiny CNN trained in seconds on scikit-learn's
digits (32x32, 3 channels) and a shim with the implementation interface the attacks expect."""
from __future__ import annotations

import functools

import numpy as np
import torch


def digits_u8(size: int = 32, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as uint8 (N, channels, size, size) in [0, 255] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)   # (N, 8, 8)
    rep = size // 8
    img = np.kron(img, np.ones((1, rep, rep), dtype=np.uint8))
    x = np.repeat(img[:, None], channels, axis=1)
    return np.ascontiguousarray(x), d.target.astype(np.int64)


class TinyCNN(torch.nn.Module):
    """conv3x3x8, maxpool2, conv3x3x16, maxpool2, flatten, dense 10 (32x32 inputs)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(channels, 8, 3)
        self.p1 = torch.nn.MaxPool2d(2)
        self.c2 = torch.nn.Conv2d(8, 16, 3)
        self.p2 = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(16 * 6 * 6, 10)

    def forward(self, x):
        x = self.p1(torch.relu(self.c1(x)))
        x = self.p2(torch.relu(self.c2(x)))
        return self.fc(x.flatten(1))


class ShimImpl:
    """``predict_proba`` on uint8 images, ``surrogate()`` and ``name``, like nn.api's objects.

    ``levels`` > 0 quantises the network input to that many gray levels in predict_proba, a
    stand-in for a quantized implementation whose surrogate is the float model (BPDA)."""

    def __init__(self, model: torch.nn.Module, name: str = "fp", levels: int = 0) -> None:
        self.model = model.eval()
        self.name = name
        self.levels = levels

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.asarray(x)).float() / 255.0
        if self.levels:
            xt = torch.round(xt * (self.levels - 1)) / (self.levels - 1)
        with torch.no_grad():
            return torch.softmax(self.model(xt), 1).double().numpy()

    def surrogate(self) -> torch.nn.Module:
        return self.model


@functools.lru_cache(maxsize=None)
def trained_tiny(seed: int = 0, epochs: int = 15) -> tuple[TinyCNN, np.ndarray, np.ndarray]:
    """The tiny CNN trained on the first 1,400 digits; returns (model, x_test, y_test)."""
    x, y = digits_u8()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # much faster for this tiny net on a shared 2-core box
    try:
        model = _train(x, y, seed, epochs)
    finally:
        torch.set_num_threads(threads)
    return model, x[1400:], y[1400:]


def _train(x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = torch.from_numpy(x[:1400]).float() / 255.0
    yt = torch.from_numpy(y[:1400])
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), 64):
            b = perm[s:s + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_impl(name: str = "fp", levels: int = 0) -> ShimImpl:
    return ShimImpl(trained_tiny()[0], name, levels)


def _main(argv: list[str]) -> None:
    """``python tests/attacks_fixtures.py OUT N SEED DELAY``: a resumable run (kill test)."""
    import time

    from attacks.registry import make_attack
    from attacks.runner import run_attack, select_evasion_set

    out, n, seed, delay = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    torch.set_num_threads(1)
    model, x, y = trained_tiny()
    impl = ShimImpl(model)
    if delay:
        inner = impl.predict_proba

        def slow(xx):
            time.sleep(delay)
            return inner(xx)
        impl.predict_proba = slow
    idx = select_evasion_set([ShimImpl(model)], x, y, n)
    run_attack(make_attack("square", {"n_queries": 40}), impl, x, y, idx, out, seed=seed)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    _main(sys.argv[1:])
