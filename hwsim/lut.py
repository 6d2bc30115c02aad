"""The lookup-table (LUT) object every other part of axlab consumes.

Index convention (fixed, relied on by nn/, attacks/ and the export):
  * ``lut[i, j]`` is the product the circuit computes for operand A code ``i`` and
    operand B code ``j``; shape ``(2**bits_a, 2**bits_b)``, dtype int32.
  * Signed multipliers: index ``i`` stands for the two's-complement value
    ``i - 2**(bits_a-1)`` (index 0 is the most negative value). Unsigned: index = value.
  * Entries are the integer products with the output bits interpreted with the
    circuit's signedness.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write

LUT_FORMAT_VERSION = 1
MAX_BITS = 16           # per operand
MAX_PAIRS_LOG2 = 24     # a LUT file holds at most 2^24 entries (64 MiB of int32)


def operand_values(bits: int, signed: bool) -> np.ndarray:
    """Integer value of every operand index, shape (2**bits,), int64."""
    idx = np.arange(2**bits, dtype=np.int64)
    return idx - 2 ** (bits - 1) if signed else idx


def exact_table(bits_a: int, bits_b: int, signed: bool) -> np.ndarray:
    """The exact product table in the LUT index convention, int32 (2**bits_a, 2**bits_b)."""
    a = operand_values(bits_a, signed)
    b = operand_values(bits_b, signed)
    return np.multiply.outer(a, b).astype(np.int32)


def table_sha256(table: np.ndarray) -> str:
    """sha256 of the table contents (int32 little-endian, C order, shape prefixed)."""
    t = np.ascontiguousarray(table, dtype="<i4")
    h = hashlib.sha256(f"{t.shape[0]}x{t.shape[1]}:".encode())
    h.update(t.tobytes())
    return h.hexdigest()


@dataclass
class Lut:
    """An exhaustive multiplier lookup table with its metadata.

    ``meta`` holds: metrics (measured), published (header figures), cost, provenance.
    """

    name: str
    table: np.ndarray
    bits_a: int
    bits_b: int
    signed: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("bits_a", "bits_b"):
            v = getattr(self, key)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_BITS:
                raise AxlabError(f"LUT {self.name}: {key} must be an integer in [1, {MAX_BITS}], got {v!r}")
        if self.bits_a + self.bits_b > MAX_PAIRS_LOG2:
            raise AxlabError(f"LUT {self.name}: {self.bits_a}x{self.bits_b} bits is more than 2^{MAX_PAIRS_LOG2} entries")
        table = np.asarray(self.table)
        # exact integers only: a float or out-of-range table is refused, never cast
        if table.dtype.kind not in "iu":
            raise AxlabError(f"LUT {self.name}: table must hold integers (int32), got dtype {table.dtype}")
        if table.dtype != np.int32 and table.size and (table.min() < -2**31 or table.max() > 2**31 - 1):
            raise AxlabError(f"LUT {self.name}: table values outside the int32 range")
        self.table = np.ascontiguousarray(table, dtype=np.int32)
        want = (2**self.bits_a, 2**self.bits_b)
        if self.table.shape != want:
            raise AxlabError(f"LUT {self.name}: shape {self.table.shape} does not match widths {want}")

    @property
    def sha256(self) -> str:
        return table_sha256(self.table)

    @property
    def lut(self) -> np.ndarray:  # the name used in the .npz file
        return self.table

    def values_a(self) -> np.ndarray:
        return operand_values(self.bits_a, self.signed)

    def values_b(self) -> np.ndarray:
        return operand_values(self.bits_b, self.signed)

    def error_table(self) -> np.ndarray:
        """LUT - exact product, int64, same shape as the table."""
        return self.table.astype(np.int64) - exact_table(self.bits_a, self.bits_b, self.signed)

    def is_exact(self) -> bool:
        return bool(np.array_equal(self.table, exact_table(self.bits_a, self.bits_b, self.signed)))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz: ``lut`` int32 + ``meta`` JSON) atomically."""
        meta = dict(self.meta, name=self.name, bits_a=self.bits_a, bits_b=self.bits_b,
                    signed=self.signed, lut_sha256=self.sha256, format=LUT_FORMAT_VERSION)
        buf = io.BytesIO()
        np.savez_compressed(buf, lut=self.table, meta=np.array(json.dumps(meta, sort_keys=True)))
        return atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Lut":
        """Read a LUT .npz (``lut``: int32 (2^bits_a, 2^bits_b); ``meta``: a JSON object with
        name str, bits_a/bits_b int, signed bool, lut_sha256 hex). Anything else -- a
        truncated/corrupt file, other dtypes (never cast), metadata of the wrong type, a
        checksum mismatch -- raises one AxlabError line naming the file and the key."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                names = sorted(z.files)
                if names != ["lut", "meta"]:
                    raise KeyError(f"arrays {names}, expected ['lut', 'meta']")
                shape, dtype = _npy_header(z, "lut")  # size known before anything is inflated
                if int(np.prod(shape)) * dtype.itemsize > 4 * 2**MAX_PAIRS_LOG2:
                    raise AxlabError(f"{path}: LUT table of shape {shape} ({dtype}) is larger than 2^{MAX_PAIRS_LOG2} "
                                     "int32 entries")
                table, raw = z["lut"], z["meta"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise AxlabError(f"{path}: not a readable axlab LUT file ({exc.__class__.__name__}: {exc})") from None
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise AxlabError(f"{path}: LUT meta must be a JSON text, got a {raw.dtype} array of shape {raw.shape}")
        try:
            meta = json.loads(str(raw))
        except json.JSONDecodeError as exc:
            raise AxlabError(f"{path}: LUT meta is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise AxlabError(f"{path}: LUT meta must be a JSON object, got {type(meta).__name__}")
        for key, ok, want in (("name", lambda v: isinstance(v, str) and v.strip() != "" and v.isprintable()
                               and len(v) <= 200, "a non-empty printable string of at most 200 characters"),
                              ("bits_a", _is_width, f"an integer in [1, {MAX_BITS}]"),
                              ("bits_b", _is_width, f"an integer in [1, {MAX_BITS}]"),
                              ("signed", lambda v: isinstance(v, bool), "true or false")):
            if key not in meta:
                raise AxlabError(f"{path}: LUT metadata lacks {key!r}")
            if not ok(meta[key]):
                raise AxlabError(f"{path}: LUT metadata {key} must be {want}, got {meta[key]!r}")
        stored = meta.get("lut_sha256")
        if stored is not None and not (isinstance(stored, str) and len(stored) == 64):
            raise AxlabError(f"{path}: LUT metadata lut_sha256 must be a 64-digit hex string, got {stored!r}")
        if meta.get("format", LUT_FORMAT_VERSION) != LUT_FORMAT_VERSION:
            raise AxlabError(f"{path}: LUT format {meta.get('format')!r} is not {LUT_FORMAT_VERSION}")
        want_shape = (2 ** meta["bits_a"], 2 ** meta["bits_b"])
        if table.dtype != np.int32 or table.shape != want_shape:
            raise AxlabError(f"{path}: LUT table must be int32 of shape {want_shape} (bits_a={meta['bits_a']}, "
                             f"bits_b={meta['bits_b']}), got {table.dtype} of shape {table.shape}")
        lut = cls(meta.pop("name"), table, meta.pop("bits_a"), meta.pop("bits_b"), meta.pop("signed"), meta)
        if stored and stored != lut.sha256:
            raise AxlabError(f"{path}: LUT checksum mismatch (file corrupted)")
        return lut


def _npy_header(z: Any, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array ``key`` of an open .npz, read from its header only."""
    with z.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return tuple(shape), dtype


def _is_width(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_BITS


def exact_lut(bits: int = 8, signed: bool = True, name: str | None = None) -> Lut:
    """An exact multiplier LUT (no netlist behind it)."""
    name = name or f"exact{bits}{'s' if signed else 'u'}"
    return Lut(name, exact_table(bits, bits, signed), bits, bits, signed,
               {"provenance": {"source": "exact", "simulator": "none"}})
