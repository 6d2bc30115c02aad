"""Model files whose graph, tensors or quantisation are wrong: one clear line naming the file
and the node/tensor/key, exit status 2, nothing written; the same through the Python API."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError
from tests.bad_input_util import (assert_one_line_error, axlab, model_parts, mutated_model, node, tiny_bundle,
                                  tiny_images, tree)

ROOT = Path(__file__).resolve().parents[1]


def _set(name, key, value):
    def change(meta, t):
        node(meta, name)[key] = value
    return change


def _del_attr(name, key):
    def change(meta, t):
        del node(meta, name)[key]
    return change


def _tensor(key, fn):
    def change(meta, t):
        t[key] = fn(t[key].copy())
    return change


def _nan_at(v):
    v.flat[0] = np.nan
    return v


def _graph(fn):
    def change(meta, t):
        fn(meta["graph"])
    return change


def _no_classifier(meta, t):
    meta["graph"]["nodes"] = [n for n in meta["graph"]["nodes"] if n["name"] not in ("flat", "fc")]
    for k in [k for k in t if ".fc" in k]:
        del t[k]


def _act(key, value):
    def change(meta, t):
        t[f"q.act.{key}"] = np.array(value, dtype=np.float64)
    return change


# case -> (change(meta, tensors), expected substrings of the one error line)
CASES = {
    # graph structure
    "cycle": (_set("conv1", "inputs", ["fc"]), ["node 'conv1'", "defined after it"]),
    "dangling_input": (_set("fc", "inputs", ["nowhere"]), ["node 'fc'", "dangling input"]),
    "unknown_op": (_set("pool", "op", "softplus"), ["unknown op 'softplus'"]),
    "duplicate_name": (_set("pool", "name", "conv1"), ["duplicate node name 'conv1'"]),
    "two_inputs_to_linear": (_set("fc", "inputs", ["flat", "flat"]), ["op linear takes 1 input"]),
    "input_not_first": (_graph(lambda g: g["nodes"].reverse()), ["the first node, and only it, must be the input"]),
    "nodes_not_list": (_graph(lambda g: g.update(nodes={"a": 1})), ["graph nodes must be a non-empty list"]),
    "node_not_object": (_graph(lambda g: g["nodes"].append(7)), ["graph node 5 must be a JSON object"]),
    "input_shape_text": (_graph(lambda g: g.update(input_shape=["1", 8, 8])), ["input_shape must be three integers"]),
    "input_shape_zero": (_graph(lambda g: g.update(input_shape=[1, 0, 8])), ["input_shape must be three integers >= 1"]),
    "graph_not_object": (lambda meta, t: meta.update(graph=[1, 2]), ["graph must be a JSON object"]),
    # attributes
    "stride_zero": (_set("conv1", "stride", [0, 1]), ["node 'conv1'", "stride must be a list of two integers >= 1"]),
    "negative_kernel": (_set("pool", "kernel", [-2, 2]), ["node 'pool'", "kernel must be a list of two integers >= 1"]),
    "negative_padding": (_set("conv1", "padding", [-1, 0]), ["padding must be a list of two integers >= 0"]),
    "padding_too_large": (_set("conv1", "padding", [3, 3]), ["node 'conv1'", "smaller than the kernel"]),
    "pool_padding_too_large": (_set("pool", "padding", [2, 0]), ["node 'pool'", "at most half the kernel"]),
    "stride_float": (_set("conv1", "stride", [1.0, 1]), ["stride must be a list of two integers"]),
    "stride_text": (_set("conv1", "stride", "1"), ["stride must be a list of two integers"]),
    "relu_text": (_set("fc", "relu", "yes"), ["node 'fc'", "relu must be a boolean"]),
    "missing_attribute": (_del_attr("conv1", "kernel"), ["needs attribute 'kernel'"]),
    "unknown_attribute": (_set("conv1", "dilation", [2, 2]), ["unknown attribute 'dilation'"]),
    "kernel_larger_than_input": (_set("pool", "kernel", [7, 7]), ["node 'pool'", "larger than its padded 6x6 input"]),
    # tensors against the graph
    "kernel_vs_weight": (_set("conv1", "kernel", [2, 2]), ["tensor conv1.weight has shape (2, 1, 3, 3)", "(2, 1, 2, 2)"]),
    "weight_wrong_channels": (_tensor("fp.conv1.weight", lambda v: np.concatenate([v, v], 1)),
                              ["conv1.weight has shape (2, 2, 3, 3)", "needs (2, 1, 3, 3)"]),
    "bias_wrong_length": (_tensor("fp.fc.bias", lambda v: v[:2]), ["fc.bias has shape (2,)", "needs (3,)"]),
    "linear_vs_flatten": (_tensor("fp.fc.weight", lambda v: v[:, :17]),
                          ["fc.weight has shape (3, 17)", "on 18 input features"]),
    "input_shape_vs_linear": (_graph(lambda g: g.update(input_shape=[1, 10, 10])),
                              ["fc.weight has shape (3, 18)", "on 32 input features needs (3, 32)"]),
    "nan_weight": (_tensor("fp.conv1.weight", _nan_at), ["tensor conv1.weight holds 1 NaN/inf"]),
    "inf_qat_bias": (_tensor("qat.fc.bias", lambda v: v + np.inf), ["QAT tensor fc.bias holds NaN/inf"]),
    "missing_tensor": (lambda meta, t: t.pop("fp.fc.bias"), ["tensor fc.bias is missing"]),
    "orphan_tensor": (lambda meta, t: t.update({"fp.ghost.weight": np.zeros(2, np.float32)}),
                      ["unexpected tensor ghost.weight"]),
    "unknown_prefix": (lambda meta, t: t.update({"zz": np.zeros(2, np.float32)}), ["unexpected tensor 'zz'"]),
    "output_not_flat": (_no_classifier, ["output node 'pool' gives shape (2, 3, 3)"]),
    # quantisation
    "scale_nan": (_act("conv1", [np.nan, -128]), ["q.act.conv1", "finite"]),
    "scale_zero": (_act("conv1", [0.0, -128]), ["node 'conv1'", "activation scale must be a finite number > 0"]),
    "scale_negative": (_act("fc", [-0.5, 0]), ["node 'fc'", "activation scale must be a finite number > 0"]),
    "zero_point_out_of_range": (_act("fc", [0.1, 300]), ["zero point must be an integer in [-128, 127]"]),
    "zero_point_fraction": (_act("fc", [0.1, 0.5]), ["q.act.fc", "integer zero point"]),
    "input_grid": (_act("input", [0.5, 0]), ["node 'input': activation quantisation must be (1/255, -128)"]),
    "requant_range": (_act("fc", [1e-30, 0]), ["layer 'fc': requantisation multiplier s_in*s_w/s_out must be in"]),
    "act_missing": (lambda meta, t: t.pop("q.act.fc"), ["quantisation of node 'fc' is missing"]),
    "float_weight_codes": (_tensor("q.wq.conv1", lambda v: v.astype(np.float32) + 0.5),
                           ["tensor q.wq.conv1 must have an integer dtype, got float32"]),
    "weight_codes_out_of_range": (_tensor("q.wq.fc", lambda v: v.astype(np.int16) * 0 + 300),
                                  ["layer 'fc': weight codes must be integers in [-128, 127]"]),
    "weight_codes_wrong_shape": (_tensor("q.wq.fc", lambda v: v[:, :5]), ["layer 'fc': weight codes have shape (3, 5)"]),
    "weight_scale_zero": (_tensor("q.ws.fc", lambda v: v * 0), ["layer 'fc': weight scales must be finite numbers > 0"]),
    "weight_scale_nan": (_tensor("q.ws.conv1", _nan_at), ["layer 'conv1': weight scales must be finite"]),
    "float_bias_codes": (_tensor("q.bq.fc", lambda v: v.astype(np.float64)), ["tensor q.bq.fc must have an integer"]),
    "bias_codes_too_large": (_tensor("q.bq.fc", lambda v: v * 0 + 2**40), ["layer 'fc': bias codes must be integers"]),
    # metadata
    "arch_not_text": (lambda meta, t: meta.update(arch=5), ["metadata key 'arch' must be a string"]),
    "meta_not_object": (lambda meta, t: meta.update(meta=[1]), ["metadata key 'meta' must be a JSON object"]),
    "foreign_format": (lambda meta, t: meta.update(format="other/9"), ["not a valid axlab model file"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_model_file_api(tmp_path, case):
    from nn.api import load_model

    change, expected = CASES[case]
    path = mutated_model(tmp_path / "bad.axm", change)
    with pytest.raises(AxlabError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for e in expected:
        assert e in msg, (e, msg)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_model_file_cli(tmp_path, case):
    change, expected = CASES[case]
    path = mutated_model(tmp_path / "bad.axm", change)
    before = tree(tmp_path)
    rc, out, err = axlab(["design", "--model", path, "--multiplier", "exact8s", "--out", tmp_path / "d" / "d.json"])
    assert_one_line_error(rc, err, str(path), *expected)
    assert rc == 2 and out == "" and tree(tmp_path) == before


def test_good_tiny_model_round_trips(tmp_path):
    """The same helpers, unchanged, give a model that loads and runs (the cases above fail
    because of their one change)."""
    from nn.api import load_implementation, load_model

    path = mutated_model(tmp_path / "ok.axm", lambda meta, t: None)
    b = load_model(path)
    assert b.sha256 == tiny_bundle().sha256
    assert load_implementation(b, "q", backend="torch").logits(tiny_images()).shape == (4, 3)


def test_bad_model_subprocess_has_no_traceback(tmp_path):
    path = mutated_model(tmp_path / "bad.axm", CASES["cycle"][0])
    r = subprocess.run([sys.executable, "-m", "flows", "eval", "--model", str(path), "--impl", "q"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert_one_line_error(r.returncode, r.stderr, str(path), "defined after it")
    assert r.returncode == 2 and r.stdout == ""


def test_save_refuses_a_broken_bundle(tmp_path):
    """A bundle whose quantisation was broken in memory is not written."""
    import copy

    from nn.api import save_model

    b = copy.deepcopy(tiny_bundle())
    b.qparams.act["fc"] = (float("nan"), 0)
    with pytest.raises(AxlabError, match="activation scale must be a finite number > 0"):
        save_model(b, tmp_path / "m.axm")
    assert tree(tmp_path) == []


def test_model_parts_helper_is_faithful():
    meta, t = model_parts(tiny_bundle().to_bytes())
    assert [n["name"] for n in meta["graph"]["nodes"]] == ["input", "conv1", "pool", "flat", "fc"]
    assert t["q.wq.conv1"].dtype == np.int8
