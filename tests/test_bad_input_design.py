"""design.json files with missing keys, wrong types or layers that do not fit the model, and
images of the wrong dtype/shape given to the Python API: one clear line, nothing written."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hwsim.errors import AxlabError
from tests.bad_input_util import assert_one_line_error, axlab, tiny_bundle, tiny_images, tree


@pytest.fixture(scope="module")
def good_design():
    from nn.design import make_design

    d, _ = make_design(tiny_bundle(), ["exact8s"])
    return d


def _entry(i, key, value):
    def change(d):
        if value is _DROP:
            del d["layers"][i][key]
        else:
            d["layers"][i][key] = value
    return change


_DROP = object()

# case -> (change(design dict) or replacement text, expected substrings)
CASES = {
    "multiplier_null": (_entry(0, "multiplier", None), ["layers[0].multiplier must be a multiplier name", "got None"]),
    "multiplier_missing": (_entry(1, "multiplier", _DROP), ["layers[1] lacks 'multiplier'"]),
    "multiplier_number": (_entry(1, "multiplier", 8), ["layers[1].multiplier must be", "got 8"]),
    "layer_missing": (_entry(0, "layer", _DROP), ["layers[0] lacks 'layer'"]),
    "layer_not_in_model": (_entry(1, "layer", "fc9"), ["layers[1].layer 'fc9' is not an approximable layer",
                                                       "(conv1, fc)"]),
    "layers_swapped": (lambda d: d["layers"].reverse(), ["layers[0].layer is 'fc'", "network order"]),
    "too_few_layers": (lambda d: d["layers"].pop(), ["design has 1 layers but the model has 2"]),
    "too_many_layers": (lambda d: d["layers"].append(dict(d["layers"][0])), ["design has 3 layers"]),
    "layers_not_list": (lambda d: d.update(layers={"conv1": "exact8s"}), ["layers must be a non-empty list"]),
    "layers_empty": (lambda d: d.update(layers=[]), ["layers must be a non-empty list"]),
    "layers_missing": (lambda d: d.__delitem__("layers"), ["lacks a 'layers' list"]),
    "entry_not_object": (lambda d: d["layers"].__setitem__(0, "exact8s"), ["layers[0] must be a JSON object"]),
    "entry_unknown_key": (_entry(0, "multipler", "exact8s"), ["layers[0]: unknown key 'multipler'"]),
    "top_unknown_key": (lambda d: d.update(comment="hi"), ["unknown key 'comment'"]),
    "signed_text": (_entry(0, "signed", "yes"), ["layers[0].signed must be true or false"]),
    "sha_number": (_entry(0, "lut_sha256", 123), ["layers[0].lut_sha256 must be a LUT sha256"]),
    "model_number": (lambda d: d.update(model=5), ["model must be a model sha256"]),
    "model_other": (lambda d: d.update(model="ab" * 32), ["design was made for model abababababab"]),
    "unknown_multiplier": (lambda d: (_entry(0, "source", _DROP)(d), _entry(0, "multiplier", "nope_mult")(d)) and None,
                           ["unknown multiplier 'nope_mult'"]),
    "multiplier_vs_source": (_entry(0, "multiplier", "mul8s_other"), ["layers[0]: source exact8s is multiplier 'exact8s', "
                                                                      "not 'mul8s_other'"]),
    "sha_mismatch": (_entry(0, "lut_sha256", "cd" * 32), ["layer conv1", "the design expects cdcdcdcdcdcd"]),
    "signed_mismatch": (_entry(1, "signed", False), ["layer fc", "signedness mismatch"]),
    "not_an_object": (lambda d: [d], ["a design must be a JSON object, got list"]),
    "not_json": ("{ not json", ["not a JSON design file"]),
}


def _write(tmp_path, good_design, case):
    change, expected = CASES[case]
    path = tmp_path / "d.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        d = copy.deepcopy(good_design)
        out = change(d)
        path.write_text(json.dumps(d if out is None or not isinstance(out, list) else out))
    return path, expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_design_api(tmp_path, good_design, case):
    from nn.api import load_implementation

    path, expected = _write(tmp_path, good_design, case)
    with pytest.raises(AxlabError) as info:
        load_implementation(tiny_bundle(), "ax", design=str(path), backend="torch")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for e in expected:
        assert e in msg, (e, msg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_design_cli(tmp_path, good_design, case):
    from nn.bundle import save_model

    model = save_model(tiny_bundle(), tmp_path / "tiny.axm")
    path, expected = _write(tmp_path, good_design, case)
    before = tree(tmp_path)
    rc, out, err = axlab(["eval", "--model", model, "--impl", "ax", "--design", path, "--backend", "torch",
                          "--json", "--limit", "2"])
    assert_one_line_error(rc, err, str(path), *expected)
    assert out == "" and tree(tmp_path) == before


def test_good_design_runs(tmp_path, good_design):
    from nn.api import load_implementation

    path = tmp_path / "d.json"
    path.write_text(json.dumps(good_design))
    impl = load_implementation(tiny_bundle(), "ax", design=str(path), backend="torch")
    ref = load_implementation(tiny_bundle(), "q", backend="torch")
    assert np.array_equal(impl.logits(tiny_images()), ref.logits(tiny_images()))  # exact multiplier == QNN


def test_write_design_with_a_bad_multiplier_writes_nothing(tmp_path):
    from nn.design import write_design

    with pytest.raises(AxlabError, match="unknown multiplier 'nope_mult'"):
        write_design(tiny_bundle(), ["exact8s", "nope_mult"], tmp_path / "sub" / "d.json")
    assert tree(tmp_path) == []


x = tiny_images(3)
IMAGE_CASES = {
    "float": (x.astype(np.float32), "got dtype float32"),
    "int64": (x.astype(np.int64), "got dtype int64"),
    "objects": (x.astype(object), "got dtype object"),
    "list": (x.tolist(), "must be a numpy array"),
    "three_dims": (x[:, 0], "got shape (3, 8, 8)"),
    "nhwc": (np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "looks like NHWC"),
    "wrong_size": (np.zeros((3, 1, 9, 8), np.uint8), "uint8 of shape (N, 1, 8, 8) for this model; got shape (3, 1, 9, 8)"),
    "wrong_channels": (np.zeros((3, 3, 8, 8), np.uint8), "got shape (3, 3, 8, 8)"),
}


@pytest.mark.parametrize("impl", ["fp", "q", "ax"])
@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_images_api(case, impl):
    from nn.api import fq_agreement, load_implementation

    images, expected = IMAGE_CASES[case]
    im = load_implementation(tiny_bundle(), impl, multiplier="exact8s" if impl == "ax" else None, backend="torch")
    for fn in (im.logits, im.predict, im.predict_proba):
        with pytest.raises(AxlabError, match="images must be") as info:
            fn(images)
        assert expected in str(info.value)
    if impl == "q":
        with pytest.raises(AxlabError, match="images must be"):
            fq_agreement(tiny_bundle(), images, backend="torch")


# ------------------------------------------------------------- .npy files (eval --images/--labels)
def _npy_header(shape, descr="|u1") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


class _Payload:      # pickled into an object array: would create a file if it were ever unpickled
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


NPY_CASES = {
    # name -> (write(path, tmp), expected text of the one line)
    "declares_terabytes": (lambda p, t: p.write_bytes(_npy_header((10**12, 8, 8, 1)) + bytes(64)),
                           "header declares images of shape (1000000000000, 8, 8, 1)"),
    "truncated": (lambda p, t: p.write_bytes(_npy_header((4, 8, 8, 1)) + bytes(100)), "the file holds 100 bytes"),
    "header_length_forged": (lambda p, t: p.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{"),
                             "not a readable .npy array of images"),
    "pickled_objects": (lambda p, t: np.save(p, np.array([_Payload(str(t / "PWNED"))], dtype=object), allow_pickle=True),
                        "not a readable .npy array of images"),
    "fifo": (lambda p, t: __import__("os").mkfifo(p), "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(NPY_CASES))
def test_bad_npy_images_file(tmp_path, case):
    from nn.api import load_images

    write, expected = NPY_CASES[case]
    path = tmp_path / "x.npy"
    write(path, tmp_path)
    before = tree(tmp_path)
    with pytest.raises(AxlabError) as info:
        load_images(path, tiny_bundle())
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    if case == "declares_terabytes":        # and through the CLI: one line, nothing written
        model = tmp_path / "m.axm"
        from nn.bundle import save_model

        save_model(tiny_bundle(), model)
        before = tree(tmp_path)
        rc, out, err = axlab(["eval", "--model", model, "--images", path])
        assert_one_line_error(rc, err, expected)
    assert tree(tmp_path) == before and not (tmp_path / "PWNED").exists()
