"""Evaluating the DSE's designs: one design on a worker, and the executors that spread them.

:func:`evaluate_design` is the worker entry point: each worker process loads the model, the
LUTs, the fixed validation subset and the attack probe set once (per evaluation context) and
measures a design's accuracy, cost and robustness (the objectives of :mod:`flows.dse`).
:class:`LocalExecutor` runs it in a spawned process pool (in this process for one worker),
:class:`DaskExecutor` on a Dask cluster; the workers of either get the host's cores over its
worker processes as compute threads.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from hwsim.errors import AxlabError


# ----------------------------------------------------------------------------- evaluation
class _Context:
    """Everything an evaluation needs, loaded once per worker process."""

    def __init__(self, ctx: dict[str, Any]) -> None:
        from attacks.runner import select_evasion_set
        from flows.costmodel import layer_macs
        from hwsim.store import resolve
        from nn.api import load_dataset, load_implementation, load_model

        self.ctx = ctx
        self.bundle = load_model(ctx["model"])
        self.luts = [resolve(m) for m in ctx["multipliers"]]
        self.macs = list(layer_macs(self.bundle).values())
        x, y = load_dataset(ctx["dataset"], "val", seed=ctx["data_seed"])
        self.x, self.y = x[: ctx["val_images"]], y[: ctx["val_images"]]
        qnn = load_implementation(self.bundle, "q", backend=ctx["backend"])
        self.qnn_acc = float((qnn.predict(self.x) == self.y).mean() * 100)
        self.probe = select_evasion_set([qnn], self.x, self.y, ctx["probe_images"]) \
            if "robustness" in ctx["objectives"] else np.zeros(0, dtype=np.int64)

    def evaluate(self, genes: list[int]) -> dict[str, Any]:
        from attacks.base import image_rngs
        from attacks.oracle import Oracle
        from attacks.registry import make_attack
        from flows.costmodel import design_cost
        from nn.api import load_implementation, make_design

        luts = [self.luts[g] for g in genes]
        design, _ = make_design(self.bundle, [self.ctx["multipliers"][g] for g in genes])
        impl = load_implementation(self.bundle, "ax", design=design, backend=self.ctx["backend"])
        acc = float((impl.predict(self.x) == self.y).mean() * 100)
        out: dict[str, Any] = {"multipliers": [lut.name for lut in luts], "accuracy": acc,
                               "qnn_accuracy": self.qnn_acc, "acc_loss": self.qnn_acc - acc,
                               **design_cost(self.macs, luts)}
        if len(self.probe):
            xp, yp = self.x[self.probe], self.y[self.probe]
            attack = make_attack(self.ctx["attack"], self.ctx["attack_params"])
            oracle = Oracle(impl)
            adv = attack(oracle, xp, yp, image_rngs(self.ctx["seed"], self.probe)).adv
            robust = float((impl.predict(adv) == yp).mean() * 100)
            out.update({"robust_acc": robust, "vulnerability": 100.0 - robust,
                        "attack_queries": int(oracle.total)})
        return out


@functools.lru_cache(maxsize=4)
def _context(ctx_json: str) -> _Context:
    return _Context(json.loads(ctx_json))


def evaluate_design(ctx: dict[str, Any], genes: list[int]) -> tuple[dict[str, Any], float]:
    """Evaluate one design (worker entry point; picklable for process pools and Dask)."""
    t0 = time.perf_counter()
    result = _context(json.dumps(ctx, sort_keys=True)).evaluate(list(genes))
    return result, time.perf_counter() - t0


# ----------------------------------------------------------------------------- executors
def usable_cores() -> int:
    """The CPUs this process may run on: its affinity set (``taskset``, a cgroup cpuset) where
    the OS reports one, else every logical CPU of the host."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def _init_worker(n: int) -> None:
    """Worker initializer: exit with the parent; n compute threads per worker, so workers x threads <= cores (spinning
    thread pools of torch and numba slow down many times over when oversubscribed)."""
    import numba
    import torch

    try:  # Linux: die with the parent, so a killed run leaves no orphan workers computing
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


class LocalExecutor:
    def __init__(self, workers: int) -> None:
        # spawn, not fork: a forked child of a process running torch/numba thread pools can
        # deadlock on a lock held by one of those threads at fork time
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, usable_cores() // max(1, workers))
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads,)) if workers > 1 else None

    def map_unordered(self, ctx, genes_list):
        if self.pool is None:
            for g in genes_list:
                yield g, evaluate_design(ctx, g)
            return
        futs = {self.pool.submit(evaluate_design, ctx, g): g for g in genes_list}
        for f in as_completed(futs):
            yield futs[f], f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


DASK_CONNECT_S = 5.0  # how long to wait for a Dask scheduler before giving up


def probe_scheduler(address: str, timeout: float = DASK_CONNECT_S) -> None:
    """Refuse at once (one line) a tcp scheduler address nobody listens on, before any output
    is written; other schemes (tls://, inproc://...) are left to the client's own timeout."""
    import socket
    from urllib.parse import urlsplit

    text = address if "://" in address else f"tcp://{address}"
    u = urlsplit(text)
    if u.scheme != "tcp":
        return
    try:
        host, port = u.hostname, u.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise AxlabError(f"--scheduler {address!r}: expected a Dask scheduler address tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise AxlabError(f"--scheduler {address}: cannot reach the Dask scheduler within {timeout:g} s "
                         f"({exc.strerror or exc.__class__.__name__})") from None


def _host(address: str) -> str:
    """The host part of a Dask address tcp://HOST:PORT."""
    return address.split("://")[-1].rsplit(":", 1)[0]


def _evaluate_on_dask(ctx: dict[str, Any], genes: list[int], threads: dict[str, int]) -> tuple[dict[str, Any], float]:
    """evaluate_design on a Dask worker, with the compute threads of its host (set in the task's
    own thread: numba's thread count is per calling thread)."""
    import numba
    import torch
    from distributed import get_worker

    n = threads.get(_host(get_worker().address), 1)
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return evaluate_design(ctx, genes)


class DaskExecutor:
    def __init__(self, scheduler: Any) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise AxlabError("the dask executor needs 'distributed' (pip install 'axlab[dist]')") from exc
        if scheduler is None:
            raise AxlabError("--executor dask needs --scheduler ADDRESS")
        self.own = isinstance(scheduler, str)
        try:
            self.client = Client(scheduler, timeout=DASK_CONNECT_S) if self.own else Client(scheduler)
        except (OSError, TimeoutError) as exc:
            raise AxlabError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler "
                             f"({' '.join(str(exc).split()) or exc.__class__.__name__})") from None

        # compute threads per worker as the local pool gives them: the cores a worker may use
        # over the worker processes on its host (numba's and torch's pools oversubscribed run
        # many times slower; a worker pinned with taskset to one core gets one thread)
        workers = self.client.scheduler_info()["workers"]
        cores = self.client.run(usable_cores)
        procs = Counter(_host(a) for a in workers)
        self.threads = {_host(a): max(1, (cores.get(a) or 1) // procs[_host(a)]) for a in workers}

    def map_unordered(self, ctx, genes_list):
        from distributed import as_completed as das_completed

        futs = self.client.map(_evaluate_on_dask, [ctx] * len(genes_list), genes_list,
                               [self.threads] * len(genes_list), pure=False)
        index = {f.key: g for f, g in zip(futs, genes_list)}
        for f in das_completed(futs):
            yield index[f.key], f.result()

    def close(self) -> None:
        self.client.close()
