"""axlab export of imported int8 TFLite networks: the RTL implements the model's own arithmetic
(TFLite's requantiser, ADD and pooling; approximate multipliers on the raw int8 codes with exact
zero-point corrections) and co-simulates bit for bit with nn.tflite_engine's AxNN."""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hwsim.errors import AxlabError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "tflite"
SHARED = REPO.parent / "shared"
RESNET8 = SHARED / "models" / "mlperf-tiny" / "pretrainedResnet_quant.tflite"
CIFAR = SHARED / "data" / "cifar-10-subset"
EVO = SHARED / "evoapprox" / "mul8s"


@functools.lru_cache(maxsize=None)
def _make_models():
    """tests/data/tflite/make_models.py as a module (its GraphBuilder writes the test model)."""
    pytest.importorskip("flatbuffers")
    spec = importlib.util.spec_from_file_location("tflite_make_models", DATA / "make_models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def residual_model() -> bytes:
    """A tiny int8 network for the digits images (1x32x32x1): CONV_2D 3x3 stride 2 SAME (pads 0/1)
    RELU per-channel; CONV_2D 3x3 SAME NONE; ADD of the two (different scales) RELU; CONV_2D 3x3
    stride 2 SAME RELU6 per-tensor; AVERAGE_POOL_2D 3x3/2 SAME (edge windows average fewer
    codes); RESHAPE of a 8x4x4 map (TFLite's NHWC order); FULLY_CONNECTED; SOFTMAX. Seeded."""
    mm = _make_models()
    rng = np.random.default_rng(20261212)
    g = mm.GraphBuilder("export_residual", rng)
    x = g.input((1, 32, 32, 1), mm.INT8, (1.0 / 255.0, -128),
                (mm._image_codes(rng, (mm.CALIBRATION_IMAGES, 32, 32, 1), np.int8) + 128) / 255.0)
    a = g.conv(x, 4, 3, 2, mm.SAME, mm.ACT_RELU, per_channel=True)
    b = g.conv(a, 4, 3, 1, mm.SAME, mm.ACT_NONE, per_channel=True)
    x = g.add(a, b, mm.ACT_RELU)
    x = g.conv(x, 8, 3, 2, mm.SAME, mm.ACT_RELU6, per_channel=False, gain=6.0)
    x = g.pool("AVERAGE_POOL_2D", x, 3, 2, mm.SAME)
    x = g.flatten(x, with_options=False)
    x = g.fc(x, 10)
    return g.finish(g.softmax(x), "export test").data


@pytest.fixture
def gates_sim(monkeypatch):
    """Resolve multipliers with the gate evaluator (LUT builds need no Verilator run)."""
    monkeypatch.setenv("AXLAB_SIM", "gates")


@pytest.fixture
def residual_files(tmp_path, gates_sim):
    from nn.bundle import load_model
    from nn.design import write_design

    model = tmp_path / "residual.tflite"
    model.write_bytes(residual_model())
    design = tmp_path / "design.json"
    # conv layers approximate (two different netlists), dense exact
    write_design(load_model(model), ["mul8s_bi_ba0_4", "mul8s_bi_tr3", "mul8s_bi_ba0_4", "mul8s_bi_exact"],
                 design)
    return model, design


def test_export_tflite_residual_bit_exact(residual_files, tmp_path, capsys):
    """Export + co-simulation through the CLI: the RTL's output (the SOFTMAX codes) equals the
    AxNN's on the whole (images, 10) tensor; the approximate multipliers change the output."""
    from flows.cli import main
    from nn.api import load_dataset
    from nn.bundle import load_model
    from nn.design import read_design
    from nn.engine import IntegerEngine

    model, design = residual_files
    out = tmp_path / "hw"
    rc = main(["export", "--model", str(model), "--design", str(design), "--out", str(out), "--dataset", "digits",
               "--images", "3", "--lanes", "4", "--no-synth", "--verify", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["verify"]["bit_exact"] == 3 == summary["verify"]["images"], summary
    assert summary["verify"]["cycles_per_image"] == [summary["cycles_per_image"]]
    m = json.loads((out / "manifest.json").read_text())
    assert m["output"] == {"node": "007_softmax", "codes": 10}
    assert [s["kind"] for s in m["steps"]] == ["conv", "conv", "add", "conv", "pool", "conv", "softmax"]
    assert "rtl/axlab_tfl_requant.v" in m["rtl"]["sources"] and m["tables"][0]["file"] == "mem/007_softmax_exp.memh"
    # the reference, recomputed here: the AxNN's output codes on the stored images
    bundle = load_model(model)
    x, _ = load_dataset("digits", "test")
    ax = IntegerEngine(bundle, read_design(str(design), bundle), "numba")
    expected = np.load(out / "tb" / "expected.npy")
    assert np.array_equal(expected, ax.logits(x[:3]))
    assert len(np.unique(expected)) > 5  # not a saturated softmax
    fc = ax.run_all(x[:3])["006_fully_connected"].numpy()
    assert not np.array_equal(fc, IntegerEngine(bundle).run_all(x[:3])["006_fully_connected"].numpy())
    # re-verification of the folder against the model and design
    rc = main(["export", "verify", str(out), "--model", str(model), "--design", str(design), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["bit_exact"] == 3


@pytest.mark.parametrize("name, op, node", [("dw_stride_pertensor", "tfl_dwconv", "000_depthwise_conv_2d"),
                                            ("residual_float_in", "tfl_quantize", "000_quantize")])
def test_export_tflite_refuses_unsupported_ops(name, op, node, tmp_path, gates_sim, capsys):
    """A depthwise model (or any op the RTL does not implement) is one line naming the op and the
    node, exit 2, nothing written."""
    from flows.cli import main
    from nn.bundle import load_model
    from nn.design import write_design

    model = DATA / f"{name}.tflite"
    design = tmp_path / "d.json"
    write_design(load_model(model), ["mul8s_bi_exact"] * len(load_model(model).layers()), design)
    out = tmp_path / "hw"
    rc = main(["export", "--model", str(model), "--design", str(design), "--out", str(out), "--dataset", "digits",
               "--no-synth", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"operation {op} (node {node})" in err, err
    assert not out.exists() and not any(p.name.startswith(".hw") for p in tmp_path.iterdir())


def test_export_tflite_needs_a_dataset(residual_files, tmp_path):
    from flows.export import export

    model, design = residual_files
    with pytest.raises(AxlabError, match="names no dataset: give --dataset"):
        export(model, design, tmp_path / "hw", synth=False)


def _requant_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """(acc, M, shift, single, zo, lo, hi) rows: random and edge cases."""
    i32 = (-2**31, -2**31 + 1, -1, 0, 1, 2**31 - 1)
    acc = rng.integers(-2**31, 2**31, n)
    acc[: n // 4] = rng.integers(-2**16, 2**16, n // 4)     # typical accumulators
    acc[n // 4: n // 4 + 6] = i32
    m = rng.integers(2**30, 2**31, n)
    m[:8] = (0, 2**30, 2**31 - 1, 2**30, 2**31 - 1, 1, 2**31 - 1, 2**30)
    shift = rng.integers(-31, 31, n)
    shift[8:16] = (-31, 30, 0, 1, -1, 30, -31, 29)
    single = rng.integers(0, 2, n)
    zo = rng.integers(-128, 128, n)
    lo = rng.integers(-128, 0, n)
    hi = rng.integers(0, 128, n)
    lo[n // 2:], hi[n // 2:] = -128, 127
    rows = np.stack([acc, m, shift, single, zo, lo, hi], 1).astype(np.int64)
    # every edge accumulator with every edge shift, both roundings
    edge = [(a, mm, s, r, 0, -128, 127) for a in i32 for mm in (2**30, 2**31 - 1) for s in (-31, -1, 0, 1, 30)
            for r in (0, 1)]
    return np.concatenate([rows, np.array(edge, dtype=np.int64)])


def test_rtl_tfl_requant_matches_mbqm(tmp_path):
    """rtl/axlab_tfl_requant.v against nn.tflite_ops.mbqm (both roundings) on random and edge
    (acc, M, shift) incl. INT32_MIN and left shifts: the 64-bit result and the clamped code."""
    import torch
    from cocotb_tools.runner import get_runner

    from hwsim.tools import setup_verilator
    from nn.tflite_ops import mbqm

    try:
        setup_verilator()
    except AxlabError as exc:
        pytest.skip(str(exc))
    rows = _requant_rows(np.random.default_rng(7), 1500)
    job, res = tmp_path / "job.npy", tmp_path / "out.npy"
    np.save(job, rows)
    runner = get_runner("verilator")
    runner.build(sources=[REPO / "rtl" / "axlab_tfl_requant.v"], hdl_toplevel="axlab_tfl_requant",
                 build_dir=tmp_path / "build", build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style"],
                 always=True, log_file=tmp_path / "build.log")
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    runner.test(test_module="tests.tfl_requant_tb", hdl_toplevel="axlab_tfl_requant", hdl_toplevel_lang="verilog",
                build_dir=tmp_path / "build", test_dir=tmp_path, extra_env={"AXLAB_TFL_JOB": str(job),
                                                                            "AXLAB_TFL_OUT": str(res)},
                log_file=tmp_path / "sim.log")
    got = np.load(res)
    t = torch.from_numpy(rows)
    want = torch.empty(len(rows), dtype=torch.int64)
    for single in (0, 1):
        sel = t[:, 3] == single
        want[sel] = mbqm(t[sel, 0], t[sel, 1], t[sel, 2], single=bool(single))
    code = (want + t[:, 4]).clamp(min=t[:, 5]).minimum(t[:, 6])
    assert np.array_equal(got[:, 0], want.numpy()), np.flatnonzero(got[:, 0] != want.numpy())[:5]
    assert np.array_equal(got[:, 1], code.numpy())
    assert len(np.unique(got[:, 1])) > 100  # the codes are not all clamped


@pytest.mark.slow
@pytest.mark.skipif(not (RESNET8.is_file() and CIFAR.is_dir() and EVO.is_dir()), reason="../shared absent")
def test_export_mlperf_resnet8_mixed_design_bit_exact(tmp_path, gates_sim, capsys):
    """The README's run: the imported MLPerf ResNet8 with ten different EvoApprox mul8s, five
    CIFAR-10 test images co-simulated; the SOFTMAX codes equal the AxNN's bit for bit."""
    from flows.cli import main
    from nn.bundle import load_model
    from nn.design import write_design

    muls = [str(EVO / f"mul8s_{m}.v") for m in ("1KVA", "1KV8", "1KV9", "1KVM", "1KVP", "1KVQ", "1L2J", "1KX5",
                                                  "1L2L", "1KV6")]
    design = tmp_path / "mixed.json"
    write_design(load_model(RESNET8), muls, design)
    out = tmp_path / "hw"
    rc = main(["export", "--model", str(RESNET8), "--design", str(design), "--out", str(out), "--dataset",
               f"cifar10:{CIFAR}", "--images", "5", "--no-synth", "--verify", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["verify"]["bit_exact"] == 5 == summary["verify"]["images"], summary
    m = json.loads((out / "manifest.json").read_text())
    assert m["output"]["node"] == "015_softmax" and m["steps"][-1]["kind"] == "softmax"
    assert len({ly["multiplier"] for ly in m["layers"]}) == 10
