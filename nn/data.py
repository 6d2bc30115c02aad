"""Datasets: images uint8 NCHW in [0, 255], labels int64.

* ``digits`` (offline default): scikit-learn's 1,797 real 8x8 handwritten digits (bundled
  with scikit-learn, no download), resized to 32x32 with bilinear interpolation, **1 channel**
  (grayscale; no channel replication, so a perturbation is one value per pixel). Seeded
  60/20/20 train/val/test split (1078/359/360 images for seed 0).
* ``cifar10[:PATH]``: the python pickle batches (``cifar-10-batches-py``). Official split:
  test = ``test_batch`` (10k), train/val = the data batches minus/plus a seeded 10% held out.
* ``cifar10-thesis[:PATH]``: the thesis protocol: all 60k images pooled, seeded 60/20/20 split.
* ``folder:PATH``: an image-folder data set (``PATH/train/<class>/*``, ``PATH/test/<class>/*``,
  PNG/JPEG; see ``nn.data_folder``). Split like ``cifar10``: test = ``test/``, train/val = the
  ``train/`` images minus/plus a seeded 10% held out. Classes in sorted name order.
PATH is the ``cifar-10-batches-py`` folder or its parent; default
``$AXLAB_DATA/cifar-10-batches-py``, ``$AXLAB_DATA`` defaulting to ``~/.cache/axlab/data``.
A folder with only some of the batches (a development subset) works too.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from hwsim.errors import AxlabError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
SPLITS = ("train", "val", "test")
DATASETS = ("digits", "cifar10", "cifar10-thesis", "folder")


def data_root() -> Path:
    return Path(os.environ.get("AXLAB_DATA", Path.home() / ".cache" / "axlab" / "data"))


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'cifar10:/some/path' -> ('cifar10', '/some/path')."""
    name, _, path = spec.partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        raise AxlabError(f"unknown dataset {spec!r} (known: digits, cifar10[:PATH], cifar10-thesis[:PATH], folder:PATH)")
    return name, (path or None)


def dataset_info(spec: str) -> tuple[int, int, int]:
    """(channels, num_classes, side) of a dataset without loading it."""
    name, path = parse_spec(spec)
    if name == "folder":
        from nn.data_folder import folder_info

        return folder_info(path)
    return (1, 10, 32) if name == "digits" else (3, 10, 32)


def _split(n: int, seed: int, fractions: tuple[float, float]) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise AxlabError(f"unknown split {split!r} (train, val or test)")


_DIGITS_CACHE: dict[str, np.ndarray] = {}


def digits_all() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 1, 32, 32) and int64 labels."""
    if not _DIGITS_CACHE:
        from sklearn.datasets import load_digits
        from skimage.transform import resize

        d = load_digits()
        imgs = d.images.astype(np.float64) / 16.0  # 8x8 in [0, 1]
        big = np.stack([resize(im, (32, 32), order=1, mode="edge", anti_aliasing=False) for im in imgs])
        _DIGITS_CACHE["x"] = np.clip(np.round(big * 255.0), 0, 255).astype(np.uint8)[:, None]
        _DIGITS_CACHE["y"] = d.target.astype(np.int64)
    return _DIGITS_CACHE["x"], _DIGITS_CACHE["y"]


def cifar_dir(path: str | None) -> Path:
    p = Path(path).expanduser() if path else data_root()
    for cand in (p, p / "cifar-10-batches-py"):
        if cand.is_dir() and (any(cand.glob("data_batch_*")) or (cand / "test_batch").exists()):
            return cand
    hint = "" if path else " (run `axlab data fetch cifar10`, or give cifar10:PATH)"
    raise AxlabError(f"CIFAR-10 not found at {p}: no cifar-10-batches-py data_batch_*/test_batch files{hint}")


def _read_batch(f: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(f, "rb") as fh:
            # the official batches are pickles of dicts of numpy arrays; read them with a
            # restricted unpickler that only rebuilds numpy arrays (no arbitrary code)
            d = _SafeUnpickler(fh, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except AxlabError:
        raise
    except Exception as exc:
        raise AxlabError(f"{f}: not a CIFAR-10 python batch ({exc.__class__.__name__}: {exc})") from exc
    return x, y


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise AxlabError(f"CIFAR-10 batch refers to {module}.{name}: refusing to unpickle it")


def load_cifar(path: str | None, split: str, seed: int, thesis: bool) -> tuple[np.ndarray, np.ndarray]:
    d = cifar_dir(path)
    train = sorted(d.glob("data_batch_*"))
    test = d / "test_batch"
    parts_tr = [_read_batch(f) for f in train]
    xtr = np.concatenate([p[0] for p in parts_tr]) if parts_tr else np.zeros((0, 3, 32, 32), np.uint8)
    ytr = np.concatenate([p[1] for p in parts_tr]) if parts_tr else np.zeros(0, np.int64)
    xte, yte = _read_batch(test) if test.exists() else (np.zeros((0, 3, 32, 32), np.uint8), np.zeros(0, np.int64))
    if thesis:
        x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
        idx = _split(len(x), seed, (0.6, 0.2))[split]
        return x[idx], y[idx]
    if split == "test":
        if not len(xte):
            raise AxlabError(f"{d}: no test_batch file")
        return xte, yte
    if not len(xtr):
        raise AxlabError(f"{d}: no data_batch_* files")
    idx = _split(len(xtr), seed, (0.9, 0.1))["train" if split == "train" else "val"]
    return xtr[idx], ytr[idx]


def load_folder(path: str | None, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``folder:PATH`` with the ``cifar10`` split semantics (test folder; seeded 90/10 train/val)."""
    from nn.data_folder import load_folder_split

    if split == "test":
        return load_folder_split(path, "test")
    x, y = load_folder_split(path, "train")
    idx = _split(len(x), seed, (0.9, 0.1))["train" if split == "train" else "val"]
    return x[idx], y[idx]


def load_dataset(spec: str, split: str = "test", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, C, 32, 32) in [0, 255] and labels int64 (N,), deterministic per seed."""
    _check_split(split)
    name, path = parse_spec(spec)
    if name == "digits":
        if path:
            raise AxlabError("dataset digits takes no path (it ships with scikit-learn)")
        x, y = digits_all()
        idx = _split(len(x), seed, (0.6, 0.2))[split]
        return x[idx].copy(), y[idx].copy()
    if name == "folder":
        return load_folder(path, split, seed)
    return load_cifar(path, split, seed, thesis=(name == "cifar10-thesis"))


def fetch_cifar10(dest: str | Path | None = None, url: str = CIFAR_URL, timeout: float = 30.0) -> Path:
    """Download and unpack the official CIFAR-10 python archive into ``dest`` (md5 checked)."""
    dest = Path(dest).expanduser() if dest else data_root()
    out = dest / "cifar-10-batches-py"
    if (out / "test_batch").exists() and len(list(out.glob("data_batch_*"))) == 5:
        return out
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "cifar-10-python.tar.gz.part"
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            from tqdm import tqdm

            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="cifar-10", leave=False) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except OSError as exc:  # URLError, timeouts, DNS failures are all OSErrors
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise AxlabError(f"cannot download CIFAR-10 from {url} (offline?): {reason}") from None
    if md5.hexdigest() != CIFAR_MD5:
        tmp.unlink(missing_ok=True)
        raise AxlabError(f"CIFAR-10 download corrupt: md5 {md5.hexdigest()} != {CIFAR_MD5}")
    with tarfile.open(tmp, "r:gz") as tf:
        tf.extractall(dest, filter="data")
    tmp.unlink()
    return out
