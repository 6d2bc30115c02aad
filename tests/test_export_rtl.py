"""axlab export: MinNet with a mixed design (EvoApprox + built-in multipliers) and ResNet8 run
in Verilator (cocotb) and must reproduce the Python simulator's logits bit for bit."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.nn_fixtures import EVO_DIR, minnet_qat, resnet8_ptq

pytestmark = pytest.mark.skipif(not EVO_DIR.is_dir(), reason="../shared/evoapprox not present")

# conv1, conv2, fc1, fc2: two EvoApprox netlists and two built-in family members
MINNET_MULS = [str(EVO_DIR / "mul8s_1KV8.v"), "mul8s_bi_ba0_4", str(EVO_DIR / "mul8s_1L2J.v"), "mul8s_bi_exact"]


def _design(bundle, muls: list[str], folder: Path, name: str) -> tuple[Path, Path]:
    from nn.bundle import save_model
    from nn.design import write_design

    model = save_model(bundle, folder / f"{name}.axm")
    design = folder / f"{name}_design.json"
    write_design(bundle, muls, design)
    return model, design


@pytest.fixture
def gates_sim(monkeypatch):
    """Resolve multipliers with the gate evaluator (LUT builds need no Verilator run)."""
    monkeypatch.setenv("AXLAB_SIM", "gates")


@pytest.fixture
def minnet_files(tmp_path, gates_sim):
    return _design(minnet_qat(), MINNET_MULS, tmp_path, "minnet")


def test_export_minnet_mixed_design_bit_exact(minnet_files, tmp_path, capsys):
    """axlab export --verify through the CLI: RTL logits == simulator logits (2 images here;
    the README's run uses --images 20)."""
    from flows.cli import main
    from nn.api import load_dataset, load_implementation

    model, design = minnet_files
    out = tmp_path / "hw"
    rc = main(["export", "--model", str(model), "--design", str(design), "--out", str(out), "--images", "2",
               "--no-synth", "--verify", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["verify"]["bit_exact"] == 2 == summary["verify"]["images"], summary
    m = json.loads((out / "manifest.json").read_text())
    muls = [l["multiplier"] for l in m["layers"]]
    assert muls == ["mul8s_1KV8", "mul8s_bi_ba0_4", "mul8s_1L2J", "mul8s_bi_exact"]
    for layer in m["layers"]:  # the copied netlists are the ones the LUTs were built from
        copy = out / layer["netlist"]["copy"]
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == layer["netlist"]["sha256"]
        assert (out / layer["weights"]).is_file() and (out / layer["params"]).is_file()
    assert 0.5 < m["accuracy"]["accuracy"] <= 1.0 and m["estimate"]["multiplier_area_um2"] > 0
    # the test bench's reference is the simulator's output on the stored images
    x, _ = load_dataset("digits", "test")
    ref = load_implementation(str(model), "ax", design=str(design), backend="torch").logits(x[:2])
    assert np.array_equal(np.load(out / "tb" / "expected.npy"), ref)


@pytest.mark.slow
def test_export_minnet_synthesis_report(minnet_files, tmp_path):
    from flows.export import export

    model, design = minnet_files
    m = export(model, design, tmp_path / "syn", images=1, synth=True)
    s = m["synthesis"]
    assert s["generic"]["cells"] > 1000 and s["ice40"]["SB_LUT4"] > 1000
    text = (tmp_path / "syn" / "synth" / "resources.md").read_text()
    assert "SB_LUT4" in text and "$_XOR_" in text
    assert json.loads((tmp_path / "syn" / "synth" / "resources.json").read_text()) == s


@pytest.mark.slow
def test_export_resnet8_bit_exact(tmp_path, gates_sim):
    from flows.export import export, verify

    bundle = resnet8_ptq()
    n = len(bundle.layers())
    muls = ([str(EVO_DIR / "mul8s_1KV8.v"), "mul8s_bi_tr2"] * n)[:n]
    model, design = _design(bundle, muls, tmp_path, "resnet8")
    m = export(model, design, tmp_path / "hw", images=1, synth=False)
    assert [s["kind"] for s in m["steps"]].count("add") == 3
    r = verify(tmp_path / "hw")
    assert r["bit_exact"] == r["images"] == 1, r["rows"]
