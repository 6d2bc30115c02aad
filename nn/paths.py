"""Per-layer choice of the exact MAC path, by measurement, with an on-disk cache.

An approximable layer of the numba backend can run through several exact paths that give
bit-identical requantised outputs (``nn.engine``): ``lowrank`` (one float convolution over
the (1+R)*C low-rank expanded channels; R = 0 for an exact LUT), ``fused`` (one float
convolution over S*C channels from an exact integer factorisation of the LUT's whole product
table, offered where its rank S < 1 + R: the exact term fused into the error terms) and
``gather`` (the tabled LUT-gather kernels). ``LayerPaths`` holds a layer's candidates; with path ``auto`` it runs
every candidate on the first batch of each input shape, checks that their outputs are equal
over the whole tensor, times them (interleaved rounds, median) and keeps the fastest for that
shape. The choice is cached in memory and on disk under ``$AXLAB_CACHE/nn_paths``, one small
JSON file per key (layer shape, LUT sha256, batch size class, thread counts, candidate set), written
atomically; a corrupt or mismatching file is ignored with a warning and re-measured. A choice
measured on a busy machine stays until its file is deleted (``rm -r $AXLAB_CACHE/nn_paths``).

Which path runs may vary between machines and runs; the logits never do.

The process-wide default path comes from ``$AXLAB_NN_PATH`` (auto | lowrank | fused | gather; default
auto); the CLI's ``--path`` sets it (``set_default_path``) so worker processes inherit it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write
from hwsim.tools import cache_dir

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports this module to build its parsers
    import argparse

    import torch

PATHS = ("auto", "lowrank", "fused", "gather")
ENV = "AXLAB_NN_PATH"
CACHE_VERSION = 1
ROUNDS = 3  # timed rounds per candidate after one untimed (warm-up + equality check) run
CLEAR_WIN = 2.0  # ... but one round when the slowest candidate took this many times the fastest
REMEASURE = False  # True: ignore cached choices (still write the new ones), e.g. for benchmarks


def check_path(path: str, what: str = "--path") -> str:
    """Validate a path name (auto | lowrank | fused | gather)."""
    if path not in PATHS:
        raise AxlabError(f"{what} {path!r}: expected one of {', '.join(PATHS)}")
    return path


def default_path() -> str:
    """The process-wide default path: ``$AXLAB_NN_PATH`` or ``auto``."""
    v = os.environ.get(ENV)
    return check_path(v, f"${ENV}") if v else "auto"


def set_default_path(path: str | None) -> None:
    """Make ``path`` the default of every engine built later in this process and its children
    (sets ``$AXLAB_NN_PATH``); None leaves the default unchanged."""
    if path is not None:
        os.environ[ENV] = check_path(path)


PATH_HELP = ("exact MAC path of the numba backend: auto = the fastest, measured per layer on the first batch of "
             "each shape and cached; lowrank = the low-rank convolution where the LUT allows; fused = the "
             "convolution over the factorised product table where it has fewer terms (else as lowrank); "
             "gather = the LUT-gather kernels (default: $AXLAB_NN_PATH or auto; the logits are the same either way)")


def add_path_option(p: argparse.ArgumentParser) -> None:
    """The CLI's ``--path`` (stored as ``nn_path``) beside ``--backend``."""
    p.add_argument("--path", dest="nn_path", choices=list(PATHS), default=None, help=PATH_HELP)


def apply_path_option(args: argparse.Namespace) -> None:
    """Make the command's ``--path`` the default of every engine it (and its workers) builds."""
    set_default_path(getattr(args, "nn_path", None))


def _threads() -> dict[str, int]:
    import torch
    from numba import get_num_threads

    return {"torch": int(torch.get_num_threads()), "numba": int(get_num_threads())}


def choice_key(layer_shape: dict[str, Any], lut_sha256: str, batch: int, candidates: dict[str, str]) -> dict[str, Any]:
    """The cache key of one choice: every component that can change which path is fastest.

    ``layer_shape``: input channels, output channels, kernel, stride, padding, input H, W;
    ``candidates``: path name -> its description (which encodes the low-rank R, channel groups
    and float type, i.e. the parts of the cost that depend on the weights and the LUT)."""
    return {"v": CACHE_VERSION, "shape": layer_shape, "lut": lut_sha256, "batch": int(batch),
            "threads": _threads(), "cpus": os.cpu_count(), "candidates": candidates}


def _key_file(key: dict[str, Any]) -> Path:
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "nn_paths" / f"{h}.json"


def load_choice(key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record for ``key``, or None (absent, or invalid: then with a warning)."""
    f = _key_file(key)
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.warn(f"{f}: unreadable path-choice cache file ignored ({type(e).__name__}); re-measuring",
                      RuntimeWarning, stacklevel=2)
        return None
    ok = (isinstance(rec, dict) and rec.get("key") == key and isinstance(rec.get("path"), str)
          and rec["path"] in key["candidates"])
    if not ok:
        warnings.warn(f"{f}: path-choice cache file does not match its key or names no candidate path; "
                      "ignored, re-measuring", RuntimeWarning, stacklevel=2)
        return None
    return rec


def store_choice(key: dict[str, Any], path: str, ms: dict[str, float]) -> None:
    """Write the record atomically; a cache that cannot be written only costs a re-measurement."""
    try:
        atomic_write(_key_file(key), json.dumps({"key": key, "path": path, "ms": ms}, sort_keys=True))
    except OSError as e:
        warnings.warn(f"path-choice cache not written ({e})", RuntimeWarning, stacklevel=2)


Runner = Callable[[Any, "torch.Tensor"], "torch.Tensor"]


def batch_class(n: int) -> int:
    """The batch size a choice is measured and cached for: ``n`` rounded up to a power of two."""
    return 1 << max(0, int(n) - 1).bit_length()


class LayerPaths:
    """The exact paths of one layer and the choice among them per input shape.

    ``candidates``: path name -> MAC object (in preference order: ties go to the first);
    ``run_one(mac, x)`` returns the requantised, centred output (N, Co, P) float32 of a MAC on
    ``x`` (N, C, H, W). ``mode``: auto (measure), or how a fixed choice came about (forced,
    only) for the report."""

    def __init__(self, name: str, candidates: dict[str, Any], run_one: Runner, mode: str,
                 layer_shape: dict[str, Any], lut_sha256: str, describe: Callable[[Any], str]) -> None:
        if not candidates:
            raise ValueError("no candidate path")
        self.name, self.cands, self.run_one, self.mode = name, candidates, run_one, mode
        self.layer_shape, self.lut = layer_shape, lut_sha256
        self.desc = {k: describe(m) for k, m in candidates.items()}
        self.chosen: dict[tuple[int, ...], tuple[str, str, dict[str, float]]] = {}  # shape -> (path, how, ms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # batch sizes are grouped by the next power of two: attacks query many small, varying
        # batches, and timing both paths for every distinct size cost more than it saved
        shape = (batch_class(int(x.shape[0])),) + tuple(x.shape[1:])
        c = self.chosen.get(shape)
        if c is None:
            if len(self.cands) == 1:
                c = (next(iter(self.cands)), self.mode, {})
                self.chosen[shape] = c
            else:
                out, c = self._choose(x)
                self.chosen[shape] = c
                return out
        return self.run_one(self.cands[c[0]], x)

    def _choose(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str, dict[str, float]]]:
        key = choice_key(dict(self.layer_shape, H=int(x.shape[2]), W=int(x.shape[3])), self.lut,
                         batch_class(int(x.shape[0])), self.desc)
        rec = None if REMEASURE else load_choice(key)
        if rec is not None:
            return self.run_one(self.cands[rec["path"]], x), (rec["path"], "cache", dict(rec.get("ms") or {}))
        ms, out = self.measure(x)
        best = min(self.cands, key=lambda k: ms[k])  # dict order breaks ties
        store_choice(key, best, ms)
        in_use = {c[0] for c in self.chosen.values()} | {best}
        for k, m in self.cands.items():  # the losers' per-layer tables (tens of MB) are rebuilt if ever needed
            if k not in in_use and hasattr(m, "release"):
                m.release()
        return out, (best, "measured", ms)

    def measure(self, x: torch.Tensor, rounds: int = ROUNDS) -> tuple[dict[str, float], torch.Tensor]:
        """Median wall time (ms) of every candidate on ``x`` over ``rounds`` interleaved rounds
        (one when the first shows a clear winner), after one untimed run each whose outputs
        must all be equal (bit-exact, whole tensor); returns the times and that common output."""
        import torch

        ref = None
        for k, m in self.cands.items():
            out = self.run_one(m, x)
            if ref is None:
                ref, ref_k = out, k
            elif not torch.equal(out, ref):  # an engine bug, never a user error
                raise RuntimeError(f"layer {self.name}: path {k} differs from path {ref_k}")
        times: dict[str, list[float]] = {k: [] for k in self.cands}
        for i in range(rounds):
            for k, m in self.cands.items():
                t = time.perf_counter()
                self.run_one(m, x)
                times[k].append(time.perf_counter() - t)
            first = [v[0] for v in times.values()]
            if i == 0 and max(first) >= CLEAR_WIN * min(first):
                break  # a clear winner after one round: the choice costs less on every new shape
        return {k: round(1e3 * sorted(v)[len(v) // 2], 4) for k, v in times.items()}, ref

    def current(self) -> tuple[str, str, dict[str, float]] | None:
        """The choice for the last input shape seen (None before the first call)."""
        return next(reversed(self.chosen.values())) if self.chosen else None

    def report(self) -> dict[str, Any]:
        """JSON-able: the chosen path per input shape with how it was chosen and the times."""
        shapes = []
        for shape, (p, how, ms) in self.chosen.items():
            shapes.append({"input": list(shape), "path": p, "how": how, "mac": self.desc[p],
                           **({"ms": ms} if ms else {})})
        cur = self.current()
        return {"path": cur[0] if cur else None, "mac": self.desc[cur[0]] if cur else None,
                "mode": self.mode, "candidates": self.desc, "shapes": shapes}
