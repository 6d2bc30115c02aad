"""Image-folder data sets (``folder:PATH``): ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``.

* Files: ``.png``, ``.jpg``, ``.jpeg`` (any case); other files and dot-files are ignored.
* Classes: the sub-folder names in sorted order give labels 0..K-1 (for CIFAR-10 this is the
  official label order: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
  ``train/`` and ``test/`` must hold the same class names.
* Images: all of one size (H, W); grayscale ('L') when the first image is grayscale, else RGB.
  Returned as uint8 (N, C, H, W), files in sorted order within a class, classes in order.
* Decoded splits are cached as uint8 ``.npy`` under ``$AXLAB_CACHE/datasets`` (default
  ``~/.cache/axlab/datasets``), keyed by a sha256 of the sorted file list with sizes and
  modification times, so any change to the folder invalidates the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write

EXTS = (".png", ".jpg", ".jpeg")
CACHE_VERSION = "folder-v1"
MAX_PIXELS = 4096 * 4096  # per image; a data set of small images never comes near it


def cache_dir() -> Path:
    return Path(os.environ.get("AXLAB_CACHE", Path.home() / ".cache" / "axlab")) / "datasets"


def _root(path: str | None) -> Path:
    if not path:
        raise AxlabError("dataset folder:PATH needs a path (folder:PATH with PATH/train/<class>/ and PATH/test/<class>/)")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise AxlabError(f"dataset folder {p}: no such folder")
    return p


def _classes(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise AxlabError(f"dataset folder {split_dir.parent}: missing split folder {split_dir.name}/ "
                         f"(expected {split_dir.parent}/train/<class>/ and {split_dir.parent}/test/<class>/)")
    names = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise AxlabError(f"dataset folder {split_dir}: no class sub-folders")
    return names


def class_names(path: str | None) -> list[str]:
    """Sorted class names of ``folder:PATH`` (checked to be the same in train/ and test/)."""
    root = _root(path)
    tr, te = _classes(root / "train"), _classes(root / "test")
    if tr != te:
        diff = sorted(set(tr) ^ set(te))
        raise AxlabError(f"dataset folder {root}: train/ and test/ hold different classes ({', '.join(diff[:5])})")
    return tr


def _files(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    out: list[tuple[Path, int]] = []
    for label, c in enumerate(classes):
        d = root / split / c
        fs = sorted(f for f in d.iterdir() if f.suffix.lower() in EXTS and not f.name.startswith(".") and f.is_file())
        if not fs:
            raise AxlabError(f"dataset folder {d}: empty class (no .png/.jpg/.jpeg files)")
        out.extend((f, label) for f in fs)
    return out


def _fingerprint(root: Path, split: str, files: list[tuple[Path, int]]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\n{root.resolve()}\n{split}\n".encode())
    for f, label in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(files: list[tuple[Path, int]]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    first_size: tuple[int, int] | None = None
    mode = "RGB"
    x: np.ndarray | None = None
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:  # from the header, before decoding anything
                    raise AxlabError(f"{f}: image of {im.size[0]}x{im.size[1]} pixels is larger than the "
                                     f"{MAX_PIXELS} allowed per image")
                if first_size is None:
                    first_size, mode = im.size, ("L" if im.mode == "L" else "RGB")
                    c = 1 if mode == "L" else 3
                    x = np.empty((len(files), c, first_size[1], first_size[0]), np.uint8)
                elif im.size != first_size:  # checked from the header, before decoding
                    raise AxlabError(f"{f}: image size {im.size[0]}x{im.size[1]} differs from "
                                     f"{first_size[0]}x{first_size[1]} of {files[0][0]} (all images must have one size)")
                a = np.asarray(im.convert(mode), dtype=np.uint8)
        except AxlabError:
            raise
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise AxlabError(f"{f}: unreadable image ({exc.__class__.__name__}: {exc})") from None
        assert x is not None
        x[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    assert x is not None
    return x


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def load_folder_split(path: str | None, split: str, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All images of ``PATH/<split>/`` (split 'train' or 'test') as uint8 (N, C, H, W) and
    int64 labels (N,). Decoded once, then read from the cache."""
    root = _root(path)
    classes = class_names(path)
    files = _files(root, split, classes)
    y = np.array([lab for _, lab in files], dtype=np.int64)
    key = _fingerprint(root, split, files)
    cfile = cache_dir() / f"{key[:32]}.npy"
    if use_cache and cfile.is_file():
        try:
            x = np.load(cfile, allow_pickle=False)
            if x.dtype == np.uint8 and x.ndim == 4 and len(x) == len(y) and x.shape[1] in (1, 3):
                return x, y
        except (OSError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    x = _decode(files)
    if use_cache:
        try:
            atomic_write(cfile, _npy_bytes(x))
        except OSError:
            pass  # a read-only cache only costs speed
    return x, y


def folder_info(path: str | None) -> tuple[int, int, int]:
    """(channels, num_classes, side) from the first training image, without decoding them all."""
    from PIL import Image

    root = _root(path)
    classes = class_names(path)
    d = root / "train" / classes[0]
    fs = sorted(f for f in d.iterdir() if f.suffix.lower() in EXTS and not f.name.startswith("."))
    if not fs:
        raise AxlabError(f"dataset folder {d}: empty class (no .png/.jpg/.jpeg files)")
    try:
        with Image.open(fs[0]) as im:
            c, (w, h) = (1 if im.mode == "L" else 3), im.size
    except Exception as exc:
        raise AxlabError(f"{fs[0]}: unreadable image ({exc.__class__.__name__}: {exc})") from None
    if w != h:
        raise AxlabError(f"{fs[0]}: images must be square for the built-in models, got {w}x{h}")
    return c, len(classes), h
