"""The query oracle: batched ``predict_proba`` on uint8 images, counting every queried image.

An *implementation* is any object with ``predict_proba(x_uint8) -> (N, classes) float``,
``surrogate() -> torch.nn.Module`` (float images in [0, 1], NCHW -> logits, differentiable) and
``name`` (duck typing: the ``nn.api`` implementations, an ensemble, or a test shim).

Images are uint8 arrays of shape (N, C, H, W) (channels first, C in 1..4) in [0, 255].
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from hwsim.errors import AxlabError


class Implementation(Protocol):
    name: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def surrogate(self) -> Any: ...


def check_images(x: Any, what: str = "images") -> np.ndarray:
    """Return ``x`` as a uint8 (N, C, H, W) array or raise one clear :class:`AxlabError`."""
    if not isinstance(x, np.ndarray):
        raise AxlabError(f"{what} must be a numpy uint8 array of shape (N, C, H, W), got "
                         f"{type(x).__name__}")
    if x.dtype != np.uint8:
        raise AxlabError(f"{what} must be uint8 pixels in [0, 255], got dtype {x.dtype}")
    if x.ndim != 4:
        raise AxlabError(f"{what} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if not 1 <= c <= 4:
        hint = " (looks like NHWC; transpose to NCHW)" if 1 <= w <= 4 else ""
        raise AxlabError(f"{what} must have shape (N, C, H, W) with 1 to 4 channels, got shape "
                         f"{tuple(x.shape)}{hint}")
    if h < 2 or w < 2:
        raise AxlabError(f"{what} must be at least 2x2 pixels, got shape {tuple(x.shape)}")
    return x


class Oracle:
    """Counts every image sent to ``impl.predict_proba``, in total and per attack slot.

    ``predict_proba(x, who)``: ``who`` is an int array (len N) naming the slot (the position of
    the attacked image in the current batch) each query belongs to; the runner reads
    ``slot_queries`` after an attack to get the per-image query count.
    """

    def __init__(self, impl: Implementation, batch_size: int = 1024) -> None:
        self.impl = impl
        self.name: str = getattr(impl, "name", type(impl).__name__)
        self.batch_size = int(batch_size)
        self.total = 0
        self.slot_queries = np.zeros(0, dtype=np.int64)
        self._surrogate: Any = None
        self.input_shape: tuple[int, int, int] | None = None

    # -- slots ---------------------------------------------------------------------------
    def reset_slots(self, n: int) -> None:
        self.slot_queries = np.zeros(n, dtype=np.int64)

    # -- queries -------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray, who: np.ndarray | Sequence[int] | int | None = None,
                      count: bool = True) -> np.ndarray:
        """Probabilities (N, classes) float64 of uint8 images x (N, C, H, W)."""
        check_images(x)
        n = len(x)
        if count:
            self.total += n
            if who is not None:
                w = np.broadcast_to(np.asarray(who, dtype=np.int64), (n,))
                np.add.at(self.slot_queries, w, 1)
        outs = []
        for i in range(0, n, self.batch_size):
            p = np.asarray(self.impl.predict_proba(np.ascontiguousarray(x[i:i + self.batch_size])),
                           dtype=np.float64)
            outs.append(p)
        if not outs:
            return np.zeros((0, 0))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def predict(self, x: np.ndarray, who: Any = None, count: bool = True) -> np.ndarray:
        """Predicted labels (N,) int64."""
        return self.predict_proba(x, who, count).argmax(1)

    # -- gradients -----------------------------------------------------------------------
    def surrogate(self) -> Any:
        """The differentiable torch module (cached, eval mode, parameters frozen)."""
        if self._surrogate is None:
            mod = self.impl.surrogate()
            mod.eval()
            for p in mod.parameters():
                p.requires_grad_(False)
            self._surrogate = mod
        return self._surrogate


def margin(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p_y - max_{j != y} log p_j per row (< 0: misclassified); logp (N, K), y (N,)."""
    n = len(y)
    own = logp[np.arange(n), y]
    other = logp.copy()
    other[np.arange(n), y] = -np.inf
    return own - other.max(1)


def log_proba(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-300, None))
