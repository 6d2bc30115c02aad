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
        self.table = np.ascontiguousarray(self.table, dtype=np.int32)
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
        """Read a LUT .npz; a truncated/corrupt file or a checksum mismatch raises AxlabError."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                table = z["lut"]
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise AxlabError(f"{path}: not a readable axlab LUT file ({exc.__class__.__name__}: {exc})") from exc
        try:
            lut = cls(meta.pop("name"), table, int(meta.pop("bits_a")), int(meta.pop("bits_b")),
                      bool(meta.pop("signed")), meta)
        except KeyError as exc:
            raise AxlabError(f"{path}: LUT metadata lacks {exc}") from exc
        stored = meta.get("lut_sha256")
        if stored and stored != lut.sha256:
            raise AxlabError(f"{path}: LUT checksum mismatch (file corrupted)")
        return lut


def exact_lut(bits: int = 8, signed: bool = True, name: str | None = None) -> Lut:
    """An exact multiplier LUT (no netlist behind it)."""
    name = name or f"exact{bits}{'s' if signed else 'u'}"
    return Lut(name, exact_table(bits, bits, signed), bits, bits, signed,
               {"provenance": {"source": "exact", "simulator": "none"}})
