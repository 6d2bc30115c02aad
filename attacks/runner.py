"""Evasion protocol, resumable per-image JSONL results and run loading.

Files of a run ``RUN.jsonl`` (paths derived by :func:`run_paths`):

* ``RUN.jsonl``: one JSON object per attacked image, appended (one ``write`` + flush + fsync)
  right after the image's attack: ``index`` (dataset index), ``label``, ``success``,
  ``queries`` (oracle images), ``grads`` (surrogate gradient rounds; 0 for black-box), ``l0``
  (changed channel values), ``l2``, ``linf`` (pixel units in [0, 1]), ``psnr`` (dB, MAX 255,
  null when unchanged), ``ssim``, ``adv_label``, ``clean_label`` and attack-specific extras.
* ``RUN.adv/<index>.npy``: uint8 (2, C, H, W) = (clean, adversarial), written atomically
  *before* its JSONL line, so every finished line has its image.
* ``RUN.meta.json``: the run's identity and metadata (below), written once, before the first
  record; a resume leaves it as it is.
* ``RUN.npz``: all images of the finished run (``index``, ``label``, ``success``, ``clean``,
  ``adv``), rewritten at the end of every (possibly resumed) run.

A run holds an exclusive lock on ``RUN.jsonl`` while it writes: a second process on the same
output is refused at once. A rerun with the same output skips finished images; a killed run
loses at most the batch in flight (``batch`` images, default 1). Results do not depend on
resuming or on ``batch``: every image's random stream is seeded from (seed, dataset index).

Resume identity (:data:`IDENTITY_KEYS`). A rerun into a run file that holds records resumes only
when every identity key equals the recorded one; else it is refused, naming the first differing
key and both values (:mod:`attacks.resume`), before any image is attacked and before any file
is touched. Identity is what the records depend on:

* ``attack``, ``params`` (all parameters, defaults filled in), ``seed``;
* the attacked implementation by content: ``model_sha256`` (model file bytes), ``impl`` (its
  name, e.g. ``q`` or ``ax:DESIGN``), ``impl_kind`` (fp, q, ax, ensemble), ``backend``, ``luts``
  (sha256 of each approximable layer's LUT table, in layer order: what a design or multiplier
  resolves to) and, for an ensemble, ``members`` (each member's identity);
* the data: ``dataset`` (spec, e.g. ``digits`` or ``cifar10:PATH``), ``split``, ``data_seed``
  (given by the caller; None through the Python API unless passed in ``meta``), and the image
  selection: ``n`` (number of selected images), ``indices_sha256`` (the selected dataset indices,
  int64, in order) and ``images_sha256`` (their uint8 pixels and labels, so a changed data file
  at the same path is caught too).

Metadata, recorded on the first run and not compared: file paths (``model``, designs,
``ensemble`` specs), ``source``, ``study`` (which implementations chose the images: what they
chose is identity), ``batch``, ``created`` (UTC), ``axlab_version``.

Run files are checked line by line before any work: a complete line that is not a JSON record
with an integer ``index``, or that repeats an index, is refused naming the file and line
number; only a torn last line (no final newline: a kill mid-write) is cut off, and only once
everything else checked out.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
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
from attacks.resume import HINT, canonical, check_identity, read_identity
from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write, exclusive

# what a resume must agree on, in the order a mismatch is reported (see the module docstring)
IDENTITY_KEYS = ("attack", "params", "seed", "model_sha256", "impl", "impl_kind", "backend", "luts", "members",
                 "dataset", "split", "data_seed", "n", "indices_sha256", "images_sha256")
CALLER_KEYS = ("model_sha256", "dataset", "split", "data_seed")   # identity the caller may pass in meta


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


def _parse_records(path: Path) -> tuple[list[dict], int | None]:
    """Records of the complete lines of ``path`` and the byte offset of a torn last line (None
    when the file ends with a newline). A bad complete line is an error naming its number."""
    if path.is_dir():
        raise AxlabError(f"{path} is a directory, not a run file (RUN.jsonl)")
    if not path.is_file():     # a FIFO or device would block or never end
        raise AxlabError(f"{path} is not a regular file (a device, FIFO or socket), not a run file (RUN.jsonl)")
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    recs: list[dict] = []
    seen: dict[int, int] = {}
    for no, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AxlabError(f"{path}, line {no}: corrupt record ({exc.__class__.__name__}: "
                             f"{str(exc)[:60]}); only a torn last line is repaired: fix or delete the "
                             "run file") from None
        idx = rec.get("index") if isinstance(rec, dict) else None
        if not (isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0
                and isinstance(rec.get("label"), int) and isinstance(rec.get("success"), bool)):
            raise AxlabError(f"{path}, line {no}: not an attack record (needs integer index >= 0, integer "
                             "label, boolean success): fix or delete the run file")
        if idx in seen:
            raise AxlabError(f"{path}, line {no}: image index {idx} is already recorded on line "
                             f"{seen[idx]} (two runs mixed?): fix or delete the run file")
        seen[idx] = no
        recs.append(rec)
    return recs, (end if end != len(data) else None)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Complete JSONL records, in file order. A complete line that is not a record, or repeats
    an image index, raises :class:`AxlabError` naming the line; a torn last line (no final
    newline: killed mid-write) is ignored, and with ``repair`` cut off the file, but only after
    every complete line checked out (a refused file is left byte-identical)."""
    if not path.exists():
        return []
    recs, torn = _parse_records(path)
    if repair and torn is not None:
        with open(path, "r+b") as fh:
            fh.truncate(torn)
    return recs


def impl_identity(impl: Any) -> dict[str, Any]:
    """Identity of an implementation (see the module docstring): name, kind, backend, model
    and per-layer LUT sha256 (nn.api objects); an ensemble lists its members' identities.
    Objects without these attributes (test shims) contribute their name only."""
    members = getattr(impl, "members", None)
    if members is not None:
        return {"impl": getattr(impl, "name", "?"), "impl_kind": "ensemble", "backend": None, "luts": None,
                "model_sha256": None, "members": [impl_identity(m) for m in members]}
    bundle = getattr(impl, "bundle", None)
    luts = getattr(impl, "luts", None)
    return {"impl": getattr(impl, "name", "?"), "impl_kind": getattr(impl, "impl", None),
            "backend": getattr(impl, "backend", None), "luts": [lut.sha256 for lut in luts] if luts else None,
            "model_sha256": getattr(bundle, "sha256", None), "members": None}


def run_identity(attack: Attack, impl: Any, x: np.ndarray, y: np.ndarray, indices: Sequence[int],
                 seed: int, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity (:data:`IDENTITY_KEYS`) of attacking ``x[indices]`` on ``impl``; the keys of
    :data:`CALLER_KEYS` come from ``meta`` (``model_sha256`` only where ``impl`` has no model)."""
    meta = meta or {}
    idx = np.asarray(list(indices), dtype=np.int64)
    img = hashlib.sha256()
    img.update(np.ascontiguousarray(x[idx]).tobytes())
    img.update(np.asarray(y, dtype=np.int64)[idx].tobytes())
    ident = {k: meta.get(k) for k in CALLER_KEYS}
    own = impl_identity(impl)
    if own["model_sha256"] is None:
        own["model_sha256"] = meta.get("model_sha256")
    ident.update(own)
    ident.update({"attack": attack.name, "params": attack.params, "seed": int(seed), "n": int(len(idx)),
                  "indices_sha256": hashlib.sha256(idx.tobytes()).hexdigest(), "images_sha256": img.hexdigest()})
    return canonical(ident)


def check_resume(out: str | os.PathLike, wanted: dict[str, Any],
                 keys: Sequence[str] = IDENTITY_KEYS) -> list[dict]:
    """Refuse to resume ``out`` unless its recorded identity agrees with ``wanted`` on ``keys``.

    Reads only: checks every complete line of the run file first (a corrupt one is an error
    naming its number). Returns the finished records ([] for a new or empty run). The CLI calls
    it with the keys it knows before loading data, so a mismatch is refused before any work."""
    paths = run_paths(out)
    records = read_records(paths["jsonl"])
    if not records:
        return []
    if not paths["meta"].exists():
        raise AxlabError(f"{paths['jsonl']} holds {len(records)} records but {paths['meta']} is missing, so "
                         f"which run made them cannot be checked; {HINT}")
    check_identity(paths["jsonl"], read_identity(paths["meta"], "run identity"), wanted, list(keys))
    return records


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
    indices = [int(i) for i in indices]
    ident = run_identity(attack, impl, x, y, indices, seed, meta)
    # everything that can refuse happens here, before any image is attacked or any file written
    records = check_resume(paths["jsonl"], ident)
    wanted = set(indices)
    stray = [r["index"] for r in records if r["index"] not in wanted]
    if stray:          # cannot happen with equal identities unless the file was edited
        raise AxlabError(f"{paths['jsonl']}: image index {stray[0]} is not in this run's image selection; {HINT}")
    made_adv = not paths["adv"].exists()
    made_meta = not records and not paths["meta"].exists()
    try:
        return _attack_locked(attack, impl, x, y, indices, paths, seed, batch, meta, progress, ident, records)
    except BaseException:
        # a new run that fails before its first record leaves nothing behind (exclusive()
        # removes the empty run file); a run with records keeps them for a resume
        if paths["jsonl"].exists() and paths["jsonl"].stat().st_size == 0:
            if made_meta:
                paths["meta"].unlink(missing_ok=True)
            if made_adv:
                try:
                    paths["adv"].rmdir()
                except OSError:
                    pass
        raise


def _attack_locked(attack: Attack, impl: Any, x: np.ndarray, y: np.ndarray, indices: list[int],
                   paths: dict[str, Path], seed: int, batch: int, meta: dict[str, Any] | None,
                   progress: bool, ident: dict[str, Any], records: list[dict]) -> list[dict]:
    paths["adv"].mkdir(parents=True, exist_ok=True)
    if not records:    # a new run (or one without a finished image): record what defines it
        info = {k: v for k, v in (meta or {}).items() if k not in ident}
        info.update(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    axlab_version=_version(), batch=int(batch))
        atomic_write(paths["meta"], json.dumps({**info, **ident}, indent=1, sort_keys=True, default=str))
    read_records(paths["jsonl"], repair=True)            # cut a torn last line (killed mid-write)
    done = {int(r["index"]) for r in records}
    todo = [i for i in indices if i not in done]
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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("axlab")
    except Exception:          # not installed as a distribution (source tree): metadata only
        return "unknown"


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
