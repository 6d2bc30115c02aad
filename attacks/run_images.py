"""Reading the images of an attack run (``RUN.adv/<index>.npy``) as untrusted files.

Each file must be a plain ``.npy`` (no pickle) holding uint8 of shape (2, C, H, W): the clean
image and its adversarial version, 1 to 4 channels, 2 to 1024 pixels a side. The header is
read before the data, so a wrong dtype, shape or size is refused without loading it. Every
problem is one :class:`hwsim.errors.AxlabError` line naming the file (or the run and the
record) and what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError

MAX_SIDE = 1024


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a ``.npy`` header; AxlabError if it is not a readable .npy file."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise AxlabError(f"{path}: not a readable .npy image file ({exc.__class__.__name__}: {exc})") from None
    return tuple(shape), dtype


def load_pair(path: str | Path) -> np.ndarray:
    """One ``RUN.adv/<index>.npy``: uint8 (2, C, H, W) = (clean, adversarial)."""
    path = Path(path)
    shape, dtype = npy_header(path)
    if dtype != np.uint8:
        raise AxlabError(f"{path}: adversarial image file must hold uint8 pixels in [0, 255], got dtype {dtype}")
    if len(shape) != 4 or shape[0] != 2 or not 1 <= shape[1] <= 4 or not (2 <= shape[2] <= MAX_SIDE
                                                                          and 2 <= shape[3] <= MAX_SIDE):
        raise AxlabError(f"{path}: adversarial image file must have shape (2, C, H, W) = (clean, adversarial) with "
                         f"1-4 channels and 2-{MAX_SIDE} pixels a side, got {shape}")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise AxlabError(f"{path}: not a readable .npy image file ({exc.__class__.__name__}: {exc})") from None
    return x


def check_records(records: list[Any], where: Path) -> None:
    """Fields that select and label a run's images: index (int >= 0, unique), label (int >= 0),
    success (bool)."""
    seen: set[int] = set()
    for k, r in enumerate(records):
        at = f"{where}: record {k + 1}"
        if not isinstance(r, dict):
            raise AxlabError(f"{at} must be a JSON object, got {type(r).__name__}")
        for key in ("index", "label"):
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise AxlabError(f"{at}: {key} must be an integer >= 0, got {v!r}")
        if not isinstance(r.get("success"), bool):
            raise AxlabError(f"{at}: success must be true or false, got {r.get('success')!r}")
        if r["index"] in seen:
            raise AxlabError(f"{at}: image index {r['index']} appears twice")
        seen.add(r["index"])


def load_run_images(adv_dir: Path, records: list[dict[str, Any]], where: Path) -> np.ndarray:
    """All (clean, adversarial) pairs of a run, stacked: uint8 (N, 2, C, H, W)."""
    check_records(records, where)
    pairs = []
    for r in records:
        try:
            pairs.append(load_pair(adv_dir / f"{r['index']}.npy"))
        except FileNotFoundError as exc:
            raise AxlabError(f"{where}: adversarial image missing ({exc.filename})") from None
        if pairs[-1].shape != pairs[0].shape:
            raise AxlabError(f"{adv_dir / (str(r['index']) + '.npy')}: image shape {pairs[-1].shape[1:]} differs from "
                             f"the run's first image {pairs[0].shape[1:]}")
    return np.stack(pairs)


def load_run_meta(path: Path) -> dict[str, Any]:
    """``RUN.meta.json`` as a dict ({} when absent)."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AxlabError(f"{path}: not a readable run metadata file ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise AxlabError(f"{path}: run metadata must be a JSON object, got {type(meta).__name__}")
    return meta


def check_fits(images: np.ndarray, where: Any, target: str, input_shape: tuple[int, ...]) -> None:
    """Images (N, C, H, W) of run ``where`` must match ``target``'s model input (C, H, W)."""
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise AxlabError(f"{where}: images of shape {tuple(images.shape[1:])} do not fit {target}, whose model takes "
                         f"{tuple(input_shape)}")
