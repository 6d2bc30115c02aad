"""axlab export without a simulator run: bad inputs give one clear error and leave nothing
behind; the same inputs give identical files."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hwsim.errors import AxlabError
from tests.nn_fixtures import EVO_DIR, minnet_qat, resnet8_ptq

pytestmark = pytest.mark.skipif(not EVO_DIR.is_dir(), reason="../shared/evoapprox not present")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """MinNet + a design whose conv1 multiplier is a LUT .npz built from a private netlist copy."""
    monkeypatch.setenv("AXLAB_SIM", "gates")
    from hwsim.store import resolve
    from nn.bundle import save_model
    from nn.design import write_design

    lib = tmp_path / "lib"
    lib.mkdir()
    net = lib / "mul8s_1KVA.v"
    # a private variant (the store caches LUTs by netlist text, so a verbatim copy would hit the
    # cache entry of the shared file and keep that file's provenance)
    net.write_text((EVO_DIR / "mul8s_1KVA.v").read_text() + f"\n// private copy {uuid.uuid4().hex}\n")
    lut = resolve(str(net), sim="gates")
    npz = lut.save(lib / "mul8s_1KVA.npz")
    b = minnet_qat()
    model = save_model(b, tmp_path / "minnet.axm")
    design = tmp_path / "design.json"
    write_design(b, [str(npz), "mul8s_bi_tr3", "mul8s_bi_exact", str(EVO_DIR / "mul8s_1L2N.v")], design)
    return tmp_path, model, design, net


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_deterministic(setup):
    from flows.export import export

    tmp, model, design, _ = setup
    export(model, design, tmp / "a", images=3, synth=False)
    export(model, design, tmp / "b", images=3, synth=False)
    a, b = _files(tmp / "a"), _files(tmp / "b")
    assert a.keys() == b.keys() and a == b
    assert {"manifest.json", "rtl/axlab_net_top.v", "tb/axlab_export_tb.py", "netlists/mul8s_1KVA.v",
            "mem/conv1_w.memh", "synth/memories_blackbox.v"} <= set(a)
    export(model, design, tmp / "a", images=3, synth=False)  # re-export replaces in place
    assert _files(tmp / "a") == b and _leftovers(tmp) == []


def test_export_netlist_changed_or_missing(setup):
    from flows.export import export

    tmp, model, design, net = setup
    net.write_text(net.read_text() + "\n// edited after the LUT was built\n")
    with pytest.raises(AxlabError, match=r"mul8s_1KVA\.v .*changed since its LUT was built"):
        export(model, design, tmp / "out", images=1, synth=False)
    net.unlink()
    with pytest.raises(AxlabError, match=r"mul8s_1KVA\.v .*is missing"):
        export(model, design, tmp / "out", images=1, synth=False)
    assert not (tmp / "out").exists() and _leftovers(tmp) == []


def test_export_design_model_mismatch(setup):
    from flows.export import export
    from nn.bundle import save_model

    tmp, _, design, _ = setup
    other = save_model(resnet8_ptq(), tmp / "resnet8.axm")
    # the design's layer names are checked against the model before their count
    with pytest.raises(AxlabError, match=r"layers\[1\]\.layer 'conv2' is not an approximable layer of the model"):
        export(other, design, tmp / "out", images=1, synth=False)
    assert not (tmp / "out").exists() and _leftovers(tmp) == []


def test_export_output_not_writable(setup):
    from flows.export import export

    tmp, model, design, _ = setup
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    with pytest.raises(AxlabError, match="not writable"):
        export(model, design, Path("/proc/axlab-export"), images=1, synth=False)
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(AxlabError, match="not an axlab export"):
        export(model, design, tmp / "mine", images=1, synth=False)
    assert (tmp / "mine" / "notes.txt").read_text() == "keep" and _leftovers(tmp) == []


def test_export_cli_error_one_line(setup, capsys):
    from flows.cli import main

    tmp, model, design, net = setup
    net.unlink()
    rc = main(["export", "--model", str(model), "--design", str(design), "--out", str(tmp / "o"), "--no-synth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("axlab: layer conv1: netlist")
