"""axlab train / eval / design / data fetch, and design files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError
from hwsim.lut import exact_lut
from nn.api import load_implementation, read_design, save_model, write_design
from tests.nn_fixtures import digits_test, lowrank_lut, minnet_qat

ROOT = Path(__file__).resolve().parents[1]


def _axlab_subprocess(*args, cwd=ROOT):
    """The real entry point (``python -m flows``) in a child process."""
    r = subprocess.run([sys.executable, "-m", "flows", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    return r.returncode, r.stdout, r.stderr


def _axlab(*args):
    """``axlab ARGS`` in this process (same ``flows.cli.main`` as the console script; no
    interpreter start-up per call): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def nn_model_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("nn") / "minnet.safetensors"
    save_model(minnet_qat(), p)
    return p


def test_cli_train_tiny(tmp_path):
    out = tmp_path / "m.safetensors"
    rc, so, se = _axlab_subprocess("train", "--model", "minnet", "--dataset", "digits", "--epochs", "1", "--seed", "0",
                                   "--out", out)
    assert rc == 0, se
    assert out.exists() and "test accuracy" in so and "fake-quant agreement" in so


def test_cli_eval_json_and_logits(nn_model_file, tmp_path):
    lut_path = lowrank_lut(1, 2).save(tmp_path / "lr2.npz")
    rc, so, se = _axlab("eval", "--model", nn_model_file, "--impl", "ax", "--multiplier", lut_path, "--backend", "numba",
                        "--json", "--logits", tmp_path / "l.npy", "--limit", "50")
    assert rc == 0, se
    res = json.loads(so)
    assert {"accuracy", "n", "impl", "backend"} <= set(res) and res["n"] == 50 and res["impl"] == "ax"
    logits = np.load(tmp_path / "l.npy")
    assert logits.dtype == np.int32 and logits.shape == (50, 10)
    x, y = digits_test()
    ref = load_implementation(nn_model_file, "ax", multiplier=str(lut_path), backend="torch").logits(x[:50])
    assert np.array_equal(logits, ref)
    assert res["accuracy"] == pytest.approx(float((ref.argmax(1) == y[:50]).mean()))
    rc, so, se = _axlab("eval", "--model", nn_model_file, "--impl", "q", "--json", "--limit", "20", "--agreement")
    assert rc == 0, se
    res = json.loads(so)
    assert res["impl"] == "q" and res["n"] == 20 and 0.9 <= res["fq_agreement"] <= 1.0


def test_cli_design_and_errors(nn_model_file, tmp_path):
    d = tmp_path / "d.json"
    rc, so, se = _axlab("design", "--model", nn_model_file, "--multipliers", "exact8s,exact8u,exact8s,exact8s",
                        "--out", d)
    assert rc == 0, se
    design = json.loads(d.read_text())
    assert design["model"] == minnet_qat().sha256 or len(design["model"]) == 64
    assert [e["layer"] for e in design["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(len(e["lut_sha256"]) == 64 for e in design["layers"])
    rc, so, se = _axlab("eval", "--model", nn_model_file, "--impl", "ax", "--design", d, "--json", "--limit", "20")
    assert rc == 0, se
    # bad input: one line "axlab: ..." and exit 2
    cases = [
        (["design", "--model", nn_model_file, "--multipliers", "exact8s,exact8s", "--out", d], "has 4 approximable"),
        (["eval", "--model", nn_model_file, "--impl", "ax", "--multiplier", "no_such_mult"], "unknown multiplier"),
        (["eval", "--model", nn_model_file, "--impl", "ax", "--multiplier", "exact", "--agreement"], "needs --impl q"),
        (["eval", "--model", tmp_path / "missing.safetensors", "--impl", "q"], "cannot read model file"),
        (["eval", "--model", nn_model_file, "--dataset", f"cifar10:{tmp_path / 'none'}"], "CIFAR-10 not found"),
    ]
    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 10)
    cases.append((["eval", "--model", tmp_path / "bad.safetensors"], "not a valid axlab model file"))
    for args, msg in cases:
        rc, so, se = _axlab(*args)
        assert rc == 2 and msg in se, (args, se)
        assert se.strip().startswith("axlab: ") and len(se.strip().splitlines()) == 1, se


def test_design_api_checks(tmp_path):
    b = minnet_qat()
    lr = lowrank_lut(2, 1).save(tmp_path / "a.npz")
    d = write_design(b, [str(lr), "exact8s", str(lr), "exact8u"], tmp_path / "d.json")
    assert d["model"] == b.sha256
    luts = read_design(tmp_path / "d.json", b)
    assert [l.name for l in luts] == ["lowrank1_2s", "exact8s", "lowrank1_2s", "exact8u"]
    bad = dict(d, layers=d["layers"][:3])
    with pytest.raises(AxlabError, match="model has 4 approximable layers"):
        read_design(bad, b)
    tampered = json.loads(json.dumps(d))
    tampered["layers"][0]["lut_sha256"] = "0" * 64
    with pytest.raises(AxlabError, match="sha256"):
        read_design(tampered, b)
    flipped = json.loads(json.dumps(d))
    flipped["layers"][1]["signed"] = False
    with pytest.raises(AxlabError, match="signedness mismatch"):
        read_design(flipped, b)
    other = dict(d, model="f" * 64)
    with pytest.raises(AxlabError, match="made for model"):
        read_design(other, b)
    x, _ = digits_test()
    a = load_implementation(b, "ax", design=str(tmp_path / "d.json"), backend="numba").logits(x[:10])
    r = load_implementation(b, "ax", design=d, backend="torch").logits(x[:10])
    assert np.array_equal(a, r)
    assert exact_lut().sha256 == luts[1].sha256


def test_fetch_cli_offline(tmp_path):
    # an unreachable URL (no network at test time): the fetch must fail with one clear line
    import nn.data as data

    with pytest.raises(AxlabError, match="cannot download CIFAR-10"):
        data.fetch_cifar10(tmp_path, url="http://127.0.0.1:9/cifar.tgz", timeout=2)
