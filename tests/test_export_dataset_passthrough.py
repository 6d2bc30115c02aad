"""The dataset given to ``axlab export --sweep-lanes`` and to ``axlab dse --hw-cost synth`` reaches
every export: an imported TFLite model names no dataset of its own, so without it each export
stops with "names no dataset". The real export runs (tiny generated TFLite network, digits
images); only place and route is a stand-in (the real tools take minutes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwsim.errors import AxlabError


def _fake_place_and_route(calls: list[str]):
    """Stand-in for flows.export.pnr.place_and_route: the summary fields the sweep, synth_front
    and the reuse check read; LUTs grow with the lanes (from the generated top's size)."""

    def place_and_route(root, sources, aw, dev, dsp, seed, freq_mhz, cycles, input_bytes, classes, say=None):
        calls.append(str(root))
        luts = len((Path(root) / "rtl" / "axlab_net_top.v").read_text()) // 10
        return {"target": dev.name, "part": dev.part, "seed": int(seed), "dsp": "auto" if dsp else "never",
                "clock_constraint_mhz": float(freq_mhz or dev.freq_mhz),
                "resources": {"luts": luts, "ffs": 100, "bram": 1, "dsp": 0, "io": 24},
                "fmax": {"clk": {"achieved_mhz": 50.0}}, "cycles_per_image": int(cycles),
                "latency_us": round(cycles / 50.0, 3), "images_per_s": round(50e6 / cycles, 2)}

    return place_and_route


@pytest.fixture
def tflite_files(tmp_path, monkeypatch):
    """The residual TFLite network of test_export_tflite and a mixed design for it; P&R stubbed."""
    import flows.export.pnr
    from nn.bundle import load_model
    from nn.design import write_design
    from tests.test_export_tflite import residual_model

    monkeypatch.setenv("AXLAB_SIM", "gates")
    calls: list[str] = []
    monkeypatch.setattr(flows.export.pnr, "place_and_route", _fake_place_and_route(calls))
    model = tmp_path / "residual.tflite"
    model.write_bytes(residual_model())
    assert not load_model(model).dataset  # the premise: an imported model names no dataset
    design = tmp_path / "design.json"
    write_design(load_model(model), ["mul8s_bi_ba0_4", "mul8s_bi_tr3", "mul8s_bi_ba0_4", "mul8s_bi_exact"], design)
    return model, design, calls


def test_sweep_passes_the_dataset_to_every_export(tflite_files, tmp_path, capsys):
    from flows.cli import main
    from flows.export.sweep import _finished

    model, design, calls = tflite_files
    out = tmp_path / "sweep"
    base = ["export", "--model", str(model), "--design", str(design), "--out", str(out), "--target", "ecp5-25k",
            "--sweep-lanes", "1,2", "--images", "2", "--json"]
    # without --dataset: refused before DIR is made, one line naming the option
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "names no dataset: give --dataset" in err and err.count("\n") == 1 and not out.exists()
    assert main(base + ["--dataset", "digits"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [p["lanes"] for p in s["points"]] == [1, 2] and not any(p.get("error") for p in s["points"])
    assert len(calls) == 2  # placed and routed once per lanes value
    for L in (1, 2):
        m = json.loads((out / f"lanes_{L}" / "manifest.json").read_text())
        assert m["model"]["dataset"] == "digits" and m["rtl"]["lanes"] == L
        assert m["accuracy"]["dataset"] == "digits" and m["testbench"]["images"] == 2
    # a rerun with the same dataset reuses both points; another dataset would not
    assert main(base + ["--dataset", "digits"]) == 0 and len(calls) == 2
    capsys.readouterr()
    ident = {"model": m["model"]["sha256"], "luts": [ly["lut_sha256"] for ly in m["layers"]], "dataset": "digits",
             "target": "ecp5-25k", "dsp": "never", "seed": 1, "freq": m["pnr"]["clock_constraint_mhz"]}
    assert _finished(out / "lanes_2", ident, 2) is not None
    assert _finished(out / "lanes_2", dict(ident, dataset="cifar10"), 2) is None


def test_hw_cost_synth_passes_the_dse_dataset_to_every_export(tflite_files, tmp_path):
    from flows.hwcost import synth_front
    from nn.bundle import load_model
    from nn.design import write_design

    model, design, calls = tflite_files
    (tmp_path / "designs").mkdir()
    front = []
    for k, names in enumerate((["mul8s_bi_exact"] * 4, ["mul8s_bi_tr3"] * 4)):
        write_design(load_model(model), names, tmp_path / "designs" / f"pareto_{k:02d}.json")
        front.append({"design": f"designs/pareto_{k:02d}.json", "multipliers": names, "area_um2": float(k)})
    cfg = {"model": str(model), "hw_target": "ecp5-25k", "hw_lanes": 1, "hw_dsp": "never"}
    with pytest.raises(AxlabError, match="names no dataset"):
        synth_front(dict(cfg, dataset=None), tmp_path, front, progress=False)
    hw = synth_front(dict(cfg, dataset="digits"), tmp_path, front, progress=False)
    assert [r.get("error") for r in hw["designs"]] == [None, None] and len(calls) == 2
    for k in range(2):
        m = json.loads((tmp_path / "hw" / f"pareto_{k:02d}" / "manifest.json").read_text())
        assert m["model"]["dataset"] == "digits" and m["accuracy"]["dataset"] == "digits"
    assert synth_front(dict(cfg, dataset="digits"), tmp_path, front, progress=False) == hw and len(calls) == 2


def test_flow_export_stage_passes_the_flow_dataset(tmp_path, monkeypatch):
    """The flow's export stage hands the flow's dataset to ``axlab export`` for any model (a
    trained model may record another layout of the data than the flow evaluates on)."""
    from flows.flow import FlowRunner

    runner = FlowRunner.__new__(FlowRunner)
    runner.out, runner.model = tmp_path, str(tmp_path / "model.axm")
    runner.flow = {"dataset": "cifar10:../shared/data/cifar-10-subset"}
    (tmp_path / "dse").mkdir()
    (tmp_path / "dse" / "pareto.json").write_text(json.dumps(
        {"pareto": [{"design": "d0.json", "acc_loss": 0.2, "area_um2": 10.0}]}))
    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(runner, "axlab", lambda *args, stdout=None: seen.append(args))
    runner.stage_export({"images": 5, "verify": False, "max_acc_loss": 1.0})
    (args,) = seen
    assert args[0] == "export" and args[args.index("--dataset") + 1] == "cifar10:../shared/data/cifar-10-subset"
    assert args[args.index("--design") + 1] == str(tmp_path / "dse" / "d0.json")
