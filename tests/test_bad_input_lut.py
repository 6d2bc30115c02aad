"""LUT files (.npz) with wrong metadata types, wrong table dtype/shape or damage: one clear
line naming the file and the key, exit status 2, nothing written; never a silent cast."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError
from hwsim.lut import Lut, exact_lut, exact_table
from tests.bad_input_util import assert_one_line_error, axlab, tiny_bundle, tree


def _meta(**over):
    lut = exact_lut(8, True)
    m = {"name": "mul8s_x", "bits_a": 8, "bits_b": 8, "signed": True, "lut_sha256": lut.sha256, "format": 1}
    m.update(over)
    return {k: v for k, v in m.items() if v is not _DROP}


_DROP = object()
GOOD = exact_table(8, 8, True)


def _write(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _case(table=None, meta=None, raw_meta=None, **extra):
    def make(path: Path) -> Path:
        arrays = {"lut": GOOD if table is None else table,
                  "meta": raw_meta if raw_meta is not None else np.array(json.dumps(_meta(**(meta or {}))))}
        arrays.update(extra)
        return _write(path, **{k: v for k, v in arrays.items() if v is not _DROP})
    return make


def _truncated(path: Path) -> Path:
    exact_lut(8, True, "mul8s_x").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _flipped(path: Path) -> Path:
    t = GOOD.copy()
    t[3, 4] += 1
    return _case(table=t)(path)


CASES = {
    "meta_not_json": (_case(raw_meta=np.array("not json {")), "LUT meta is not valid JSON"),
    "meta_json_list": (_case(raw_meta=np.array("[1, 2]")), "LUT meta must be a JSON object, got list"),
    "meta_numbers": (_case(raw_meta=np.arange(3)), "LUT meta must be a JSON text"),
    "width_text": (_case(meta={"bits_a": "8"}), "LUT metadata bits_a must be an integer in [1, 16], got '8'"),
    "width_float": (_case(meta={"bits_b": 8.0}), "LUT metadata bits_b must be an integer"),
    "width_zero": (_case(meta={"bits_a": 0}), "bits_a must be an integer in [1, 16], got 0"),
    "width_huge": (_case(meta={"bits_a": 40}), "bits_a must be an integer in [1, 16], got 40"),
    "signed_list": (_case(meta={"signed": [1]}), "LUT metadata signed must be true or false, got [1]"),
    "signed_text": (_case(meta={"signed": "yes"}), "signed must be true or false"),
    "name_number": (_case(meta={"name": 7}), "LUT metadata name must be a non-empty printable string"),
    "name_two_lines": (_case(meta={"name": "a\nb"}), "LUT metadata name must be a non-empty printable string"),
    "name_missing": (_case(meta={"name": _DROP}), "LUT metadata lacks 'name'"),
    "sha_not_text": (_case(meta={"lut_sha256": 5}), "lut_sha256 must be a 64-digit hex string"),
    "format_other": (_case(meta={"format": 2}), "LUT format 2 is not 1"),
    "table_int64": (_case(table=GOOD.astype(np.int64)), "LUT table must be int32 of shape (256, 256)"),
    "table_float": (_case(table=GOOD.astype(np.float64)), "got float64 of shape (256, 256)"),
    "table_shape": (_case(table=GOOD[:128]), "got int32 of shape (128, 256)"),
    "table_3d": (_case(table=GOOD.reshape(16, 16, 256)), "got int32 of shape (16, 16, 256)"),
    "table_objects": (_case(table=np.array([None, 1], dtype=object)), "not a readable axlab LUT file"),
    "extra_array": (_case(extra=np.zeros(2)), "expected ['lut', 'meta']"),
    "no_table": (_case(table=_DROP), "expected ['lut', 'meta']"),
    "truncated": (_truncated, "not a readable axlab LUT file"),
    "checksum": (_flipped, "LUT checksum mismatch"),
    "not_a_zip": (lambda p: (p.write_bytes(b"\x93NUMPY garbage"), p)[1], "not a readable axlab LUT file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_lut_file_api(tmp_path, case):
    make, expected = CASES[case]
    path = make(tmp_path / "mul8s_x.npz")
    with pytest.raises(AxlabError) as info:
        Lut.load(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_lut_file_cli(tmp_path, case):
    from nn.bundle import save_model

    make, expected = CASES[case]
    lib = tmp_path / "lib"
    lib.mkdir()
    path = make(lib / "mul8s_x.npz")
    model = save_model(tiny_bundle(), tmp_path / "tiny.axm")
    before = tree(tmp_path)
    rc, out, err = axlab(["design", "--model", model, "--multiplier", path, "--out", tmp_path / "d.json"])
    assert_one_line_error(rc, err, str(path), expected)
    assert tree(tmp_path) == before


def test_good_file_loads_and_in_memory_tables_are_never_cast(tmp_path):
    path = _case()(tmp_path / "ok.npz")
    assert Lut.load(path).sha256 == exact_lut(8, True).sha256
    # int64 tables in range are taken exactly; floats and out-of-range values are refused
    assert Lut("x", GOOD.astype(np.int64), 8, 8, True).sha256 == exact_lut(8, True).sha256
    with pytest.raises(AxlabError, match="table must hold integers"):
        Lut("x", GOOD.astype(np.float32), 8, 8, True)
    with pytest.raises(AxlabError, match="outside the int32 range"):
        Lut("x", GOOD.astype(np.int64) * 2**30, 8, 8, True)
    with pytest.raises(AxlabError, match="bits_a must be an integer"):
        Lut("x", GOOD, True, 8, True)


def test_damaged_name_pointer_is_ignored(tmp_path, monkeypatch):
    """A store name pointer that is not a JSON object counts as unknown (no traceback)."""
    from hwsim.store import cache_dir, resolve

    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    ptr = cache_dir() / "names" / "mul8s_zz.json"
    ptr.parent.mkdir(parents=True)
    ptr.write_text("[1, 2]")
    with pytest.raises(AxlabError, match="unknown multiplier 'mul8s_zz'"):
        resolve("mul8s_zz")
