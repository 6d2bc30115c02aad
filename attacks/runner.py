"""Evasion protocol, resumable per-image JSONL results and run loading.

Files of a run ``RUN.jsonl`` (paths derived by :func:`run_paths`):

* ``RUN.jsonl``: one JSON object per attacked image, appended (one ``write`` + flush + fsync)
  right after the image's attack: ``index`` (dataset index), ``label``, ``success``,
  ``queries`` (oracle images), ``grads`` (surrogate gradient rounds; 0 for black-box), ``l0``
  (changed channel values), ``l2``, ``linf`` (pixel units in [0, 1]), ``psnr`` (dB, MAX 255,
  null when unchanged), ``ssim``, ``adv_label``, ``clean_label`` and attack-specific extras.
* ``RUN.adv/<index>.npy``: uint8 (2, C, H, W) = (clean, adversarial), written atomically
  *before* its JSONL line, so every finished line has its image.
* ``RUN.meta.json``: the configuration (attack, parameters, seed, implementation, model and
  dataset); a rerun with a different configuration and the same output is refused.
* ``RUN.npz``: all images of the finished run (``index``, ``label``, ``success``, ``clean``,
  ``adv``), rewritten at the end of every (possibly resumed) run.

A run holds an exclusive lock on ``RUN.jsonl`` while it writes: a second process on the same
output is refused at once. A rerun with the same output skips finished images; a killed run
loses at most the batch in flight (``batch`` images, default 1). Results do not depend on resuming: every image's random
stream is seeded from (seed, dataset index).
"""
from __future__ import annotations

import io
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attacks.base import Attack, image_rngs
from attacks.metrics import image_metrics
from attacks.oracle import Oracle, check_images
from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write, exclusive

META_KEYS = ("attack", "params", "seed", "impl")     # must match to resume


def run_paths(out: str | os.PathLike) -> dict[str, Path]:
    p = Path(out)
    stem = p.with_suffix("") if p.suffix == ".jsonl" else p
    return {"jsonl": p, "meta": Path(f"{stem}.meta.json"), "adv": Path(f"{stem}.adv"),
            "npz": Path(f"{stem}.npz")}


def select_evasion_set(impls: Sequence[Any], x: np.ndarray, y: np.ndarray, n: int,
                       chunk: int = 512) -> np.ndarray:
    """Thesis Eq. 4.5: dataset indices of the first ``n`` images every implementation in
    ``impls`` classifies correctly (each needs ``predict_proba``). Raises when none is left."""
    check_images(x, "dataset images")
    keep: list[int] = []
    for s in range(0, len(x), chunk):
        xs, ys = x[s:s + chunk], y[s:s + chunk]
        ok = np.ones(len(xs), dtype=bool)
        for impl in impls:
            ok &= np.asarray(impl.predict_proba(xs)).argmax(1) == ys
        keep.extend((np.flatnonzero(ok) + s).tolist())
        if len(keep) >= n:
            break
    if not keep:
        names = ", ".join(getattr(i, "name", "?") for i in impls)
        raise AxlabError(f"empty evasion set: no image is classified correctly by every "
                         f"implementation under study ({names})")
    return np.asarray(keep[:n], dtype=np.int64)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Complete JSONL records; with ``repair`` a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    recs = []
    for line in data[:end].splitlines():
        if line.strip():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                if not repair:
                    raise AxlabError(f"{path}: corrupt line {line[:60]!r}") from None
    return recs


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def run_attack(attack: Attack, impl: Any, x: np.ndarray, y: np.ndarray, indices: Iterable[int],
               out: str | os.PathLike, seed: int = 0, batch: int = 1,
               meta: dict[str, Any] | None = None, progress: bool = False) -> list[dict]:
    """Attack dataset images ``x[indices]`` on ``impl`` and append per-image records to ``out``.

    ``x`` (N, C, H, W) uint8 and ``y`` (N,) are the whole dataset (indexed by ``indices``).
    Returns all records of the run file (earlier ones included), in file order.
    """
    check_images(x, "dataset images")
    paths = run_paths(out)
    with exclusive(paths["jsonl"], f"attack run {paths['jsonl']}"):
        return _run_locked(attack, impl, x, y, indices, paths, seed, batch, meta, progress)


def _run_locked(attack: Attack, impl: Any, x: np.ndarray, y: np.ndarray, indices: Iterable[int],
                paths: dict[str, Path], seed: int, batch: int, meta: dict[str, Any] | None,
                progress: bool) -> list[dict]:
    cfg = {"attack": attack.name, "params": attack.params, "seed": int(seed),
           "impl": getattr(impl, "name", "?")}
    cfg.update({k: v for k, v in (meta or {}).items() if k not in cfg})
    if paths["meta"].exists() and paths["jsonl"].stat().st_size:
        old = json.loads(paths["meta"].read_text())
        diff = [k for k in META_KEYS if json.dumps(old.get(k), sort_keys=True)
                != json.dumps(cfg.get(k), sort_keys=True)]
        if diff:
            raise AxlabError(f"{paths['jsonl']} holds a run with a different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another "
                             "--out or delete it")
    paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
    paths["adv"].mkdir(parents=True, exist_ok=True)
    paths["meta"].write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str))
    done = {int(r["index"]) for r in read_records(paths["jsonl"], repair=True)}
    todo = [int(i) for i in indices if int(i) not in done]
    oracle = Oracle(impl)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"{attack.name} on {oracle.name}", unit="img")
    with open(paths["jsonl"], "ab") as fh:
        for s in range(0, len(todo), max(1, batch)):
            idx = np.asarray(todo[s:s + max(1, batch)], dtype=np.int64)
            xb, yb = x[idx], np.asarray(y[idx], dtype=np.int64)
            res = attack(oracle, xb, yb, image_rngs(seed, idx))
            queries = oracle.slot_queries.copy()
            adv_label = oracle.predict(res.adv, count=False)     # verification, not counted
            for k, i in enumerate(idx):
                rec = {"index": int(i), "label": int(yb[k]), "success": bool(adv_label[k] != yb[k]),
                       "queries": int(queries[k]),
                       "grads": int(res.grads[k]) if res.grads is not None else 0,
                       **image_metrics(xb[k], res.adv[k]), "adv_label": int(adv_label[k])}
                if res.extra:
                    rec.update({kk: _jsonable(v) for kk, v in res.extra[k].items()})
                buf = io.BytesIO()
                np.save(buf, np.stack([xb[k], res.adv[k]]))
                atomic_write(paths["adv"] / f"{int(i)}.npy", buf.getvalue())
                line = (json.dumps({k2: _jsonable(v) for k2, v in rec.items()}) + "\n").encode()
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    records = read_records(paths["jsonl"])
    _write_npz(paths, records)
    return records


def _write_npz(paths: dict[str, Path], records: list[dict]) -> None:
    if not records:
        return
    imgs = np.stack([np.load(paths["adv"] / f"{r['index']}.npy") for r in records])
    buf = io.BytesIO()
    np.savez_compressed(buf, index=np.array([r["index"] for r in records], dtype=np.int64),
                        label=np.array([r["label"] for r in records], dtype=np.int64),
                        success=np.array([r["success"] for r in records], dtype=bool),
                        clean=imgs[:, 0], adv=imgs[:, 1])
    atomic_write(paths["npz"], buf.getvalue())


@dataclass
class Run:
    """A loaded run: records (file order), clean and adversarial uint8 images, configuration."""

    path: Path
    records: list[dict]
    clean: np.ndarray
    adv: np.ndarray
    meta: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return np.array([r["label"] for r in self.records], dtype=np.int64)

    @property
    def success(self) -> np.ndarray:
        return np.array([bool(r["success"]) for r in self.records], dtype=bool)

    @property
    def source(self) -> str:
        return str(self.meta.get("source") or self.meta.get("impl") or self.path.stem)


def load_run(path: str | os.PathLike) -> Run:
    """Load ``RUN.jsonl`` with its images (per-image files; finished or interrupted runs)."""
    paths = run_paths(path)
    if not paths["jsonl"].exists():
        raise AxlabError(f"{paths['jsonl']}: no such run file")
    records = read_records(paths["jsonl"])
    if not records:
        raise AxlabError(f"{paths['jsonl']}: the run holds no attacked image")
    from attacks.run_images import load_run_images, load_run_meta  # untrusted files: checked

    imgs = load_run_images(paths["adv"], records, paths["jsonl"])
    meta = load_run_meta(paths["meta"])
    return Run(paths["jsonl"], records, imgs[:, 0], imgs[:, 1], meta)


def summarize(records: list[dict]) -> dict[str, Any]:
    """Success rate and medians (over successful images) of queries and distortion metrics."""
    n = len(records)
    ok = [r for r in records if r["success"]]

    def med(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None]
        return float(statistics.median(vals)) if vals else None

    return {"n": n, "success": len(ok), "success_rate": len(ok) / n if n else 0.0,
            "median_queries": med("queries"), "median_grads": med("grads"), "median_l0": med("l0"),
            "median_l2": med("l2"), "median_linf": med("linf"), "median_psnr": med("psnr"),
            "median_ssim": med("ssim")}


def format_summary(s: dict[str, Any], title: str = "") -> str:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [("images attacked", str(s["n"])), ("successful", str(s["success"])),
            ("success rate", f"{100 * s['success_rate']:.1f} %"),
            ("median queries", f(s["median_queries"], ".0f")),
            ("median gradient rounds", f(s["median_grads"], ".0f")),
            ("median L0 (channels)", f(s["median_l0"], ".0f")),
            ("median L2", f(s["median_l2"], ".4f")), ("median Linf", f(s["median_linf"], ".4f")),
            ("median PSNR (dB)", f(s["median_psnr"], ".2f")),
            ("median SSIM", f(s["median_ssim"], ".4f"))]
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("(medians over successful images)")
    return "\n".join(lines)
