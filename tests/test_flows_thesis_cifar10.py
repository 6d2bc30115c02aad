"""The CIFAR-10 thesis flow (flows/thesis_cifar10.yaml) and the CIFAR-10 DSE flow: the flow
files load, networks given by path, the study's tables beside ours, and (slow) the whole flow end
to end on tiny stand-in models and a few exact CIFAR-10 test images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwsim.errors import AxlabError
from tests.hwsim_util import REPO

SHARED = REPO.parent / "shared"
CIFAR = SHARED / "data" / "cifar-10-subset"
MULS = SHARED / "evoapprox" / "mul8s"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _synthetic_study(folder) -> None:
    """A tiny study folder with made-up figures (not the study's) in the study's CSV layout."""
    folder.mkdir(parents=True)
    (folder / "table_4_3_accuracy_cost.csv").write_text(
        "model,implementation,accuracy_pct,power_mW,area_um2\nMinNet,fp,11.11,1.0,2.0\nMinNet,q,22.22,1.0,2.0\n"
        "MinNet,ax_v1,33.33,1.0,2.0\nResNet24,q,44.44,1.0,2.0\n")
    (folder / "table_4_4_attack_success.csv").write_text(
        "model,implementation,BIM,PGD,CW,DeepFool,OP\nMinNet,fp,55.55,66.66,1,2,3\nMinNet,q,,,,,4\n")
    (folder / "table_4_5_transfer_from_fp.csv").write_text(
        "model,source,target,BIM,PGD,CW,DeepFool,OP\nMinNet,fp,q,12.5,13.5,14.5,15.5,16.5\n")
    (folder / "table_4_7_transfer_between_axnns.csv").write_text(
        "source,FpM,QM,AxC0M,AxC1M,FpR24,QR24,AxC0R24,AxC1R24\nAxC0M,17.5,18.5,,19.5,20.5,21.5,22.5,23.5\n")
    (folder / "table_3_4_nps_vs_sota.csv").write_text(
        "network,dataset,NPs,OP,SimBA,BIM,PGD\nResNet24,CIFAR-10,24.5,25.5,26.5,27.5,28.5\n")
    (folder / "table_3_7_ips_resnet24_cifar10.csv").write_text(
        "attack,success_rate,l0,linf,psnr,queries\nIP,29.5,1±0,0.1±0,31±1,10±1\nSQ,30.5,1±0,0.1±0,31±1,10±1\n")


def test_flow_files_load_and_refuse_bad_sections(tmp_path):
    from flows.flow import load_flow

    flow = load_flow(REPO / "flows" / "thesis_cifar10.yaml")
    assert [n["name"] for n in flow["networks"]] == ["minnet", "resnet8", "resnet24", "mlperf-resnet8"]
    assert flow["pixels"]["network"] == "resnet24" and flow["dse"]["max_acc_loss"] == 2.0
    assert flow["attacks"]["study"] is True and flow["attacks"]["n"] >= 200
    dse = load_flow(REPO / "flows" / "cifar10_dse.yaml")
    assert dse["dse"]["objectives"] == ["area", "power", "accuracy", "robustness"]
    assert dse["train"]["path"] == "zoo:resnet8-cifar10"
    assert load_flow(REPO / "flows" / "cifar10_dse.yaml", ["dse.executor=dask", "dse.scheduler=tcp://h:8786"])
    for sets, msg in [(["pixels.network=vgg"], "pixels.network: must be one of"),
                      (["pixels.runs=[{label: a, attack: nope}]"], "unknown attack"),
                      (["attacks.n_by={pgd: 0}"], "attacks.n_by.pgd: must be an integer >= 1"),
                      (["cross.to=some"], "cross.to: must be ax"),
                      (["dse.pop_size=1"], "dse.pop_size: must be an integer >= 2"),
                      (["networks=[{name: a, path: /no/such.axm}]"], r"networks\[0\].path: model file"),
                      (["networks=[{name: a, path: 'zoo:x', epochs: 3}]"], "not trained by the flow"),
                      (["networks=[{name: 'a b', path: 'zoo:x'}]"], r"networks\[0\].name"),
                      (["networks=[{name: a, path: 'zoo:x', study: VGG}]"], "study: must be one of"),
                      (["networks=[{name: a, path: 'zoo:x', params: {pgd.nope: 1}}]"], "params"),
                      (["networks=[{name: a, path: 'zoo:x'}, {name: a, path: 'zoo:y'}]"], "used twice")]:
        with pytest.raises(AxlabError, match=msg):
            load_flow(REPO / "flows" / "thesis_cifar10.yaml", sets)


def test_untrained_zoo_model_refused_before_output(tmp_path, monkeypatch):
    from flows.flow import load_flow, make_runner

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "index.json").write_text(json.dumps({"models": [
        {"name": "minnet-cifar10", "arch": "minnet", "status": "training", "command": "axlab train ..."}]}))
    monkeypatch.setenv("AXLAB_ZOO", str(zoo))
    flow = load_flow(REPO / "flows" / "thesis_cifar10.yaml",
                     ["networks=[{name: minnet, path: 'zoo:minnet-cifar10'}]", "pixels=null"])
    with pytest.raises(AxlabError, match="still training"):
        make_runner(flow, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_dse_without_a_design_within_budget_takes_the_most_accurate(tmp_path, monkeypatch):
    """No design within dse.max_acc_loss (so the feasible front is empty): AxNN v1 is the most
    accurate design the search evaluated, written as a design file and marked out of budget."""
    import flows.dse
    from flows.flow import load_flow, make_runner
    from nn.api import save_model
    from tests.nn_fixtures import minnet_qat

    save_model(minnet_qat(), tmp_path / "m.axm")
    flow = load_flow(REPO / "flows" / "thesis_cifar10.yaml", [
        f"networks=[{{name: sa, path: {tmp_path / 'm.axm'}}}]", "multipliers=[mul8s_bi_exact, mul8s_bi_tr4]",
        "attacks.ax=[mul8s_bi_tr4]", "pixels=null"])
    evals = [{"genes": [1, 1, 0, 1], "acc_loss": 9.0, "power_mw": 0.1},
             {"genes": [0, 1, 1, 1], "acc_loss": 4.0, "power_mw": 0.2},
             {"genes": [1, 1, 1, 1], "acc_loss": 30.0, "power_mw": 0.05}]
    monkeypatch.setattr(flows.dse, "run_dse", lambda cfg, d, progress: flows.dse.DseResult(d, [], evals, [], 0))
    runner = make_runner(flow, tmp_path / "out", progress=False)
    (tmp_path / "out" / "dse" / "sa").mkdir(parents=True)
    runner.stage_dse(flow["dse"])
    choice = json.loads((tmp_path / "out" / "dse" / "sa" / "v1.choice.json").read_text())
    assert choice["within_budget"] is False and choice["acc_loss"] == 4.0
    v1 = json.loads(runner.v1("sa").read_text())
    assert [layer["multiplier"] for layer in v1["layers"]] == ["mul8s_bi_exact"] + ["mul8s_bi_tr4"] * 3


def test_side_by_side_tables_and_notes(tmp_path):
    from flows import reference_tables as rt

    _synthetic_study(tmp_path / "study")
    study = rt.load_study(tmp_path / "study")
    assert rt.load_study(tmp_path / "absent") == {}
    nets = [{"name": "m", "study": "MinNet"}, {"name": "r", "study": "ResNet24"}]
    rows, note = rt.side_4_3(study, nets, {("m", "q"): 20.0, ("m", "fp"): 10.0}, {("m", "q"): (0.4, 700.0)})
    assert rows[1][:3] == ["m", "fp", "10.00 / 11.11"] and rows[2][2] == "20.00 / 22.22"
    assert "mean gap ours - study -1.7 points over 2 cell(s)" in note and "60/20/20" in note
    rows, note = rt.side_4_4(study, nets, {("m", "fp", "pgd"): 50.0, ("m", "q", "onepixel"): 2.0}, 5)
    assert rows[1][3] == "50.0 / 66.66" and rows[2][-1] == "2.0 / 4" and "5 attacked images" in note
    rows, _ = rt.side_4_5(study, nets, {("m", "q", "bim"): 10.0})
    assert rows[1][2] == "10.0 / 12.5"
    cross = [{"source": ("m", "ax_v1", "MinNet", 0), "target": ("r", "q", "ResNet24", None), "rate": 1.0},
             {"source": ("m", "ax_v1", "MinNet", 0), "target": ("m", "ax_b", "MinNet", 1), "rate": 2.0}]
    rows, _ = rt.side_4_7(study, cross)
    assert rows[0][1:] == ["r:q [QR24]", "m:ax_b [AxC1M]"] and rows[1][1:] == ["1.0 / 21.5", "2.0 / 19.5"]
    rows, note = rt.side_3_4(study, "r", {"NPs": 20.0, "OP1": 30.0}, 4)
    assert rows[1][1:3] == ["20.0 / 24.5", "30.0 / 25.5"] and "STAND-IN" not in note
    rows, note = rt.side_3_7(study, {"IP": {"success": 9.0, "l0": "3.00±1.00"}}, 4)
    assert rows[1][:3] == ["IP", "9.0 / 29.5", "3.00±1.00 / 1±0"] and "STAND-IN" not in note
    # another network in the ResNet24 row (e.g. the float ResNet8 while ResNet24 is untrained) is said so
    for note in (rt.side_3_4(study, "r8", {"NPs": 20.0}, 4, "ResNet8")[1],
                 rt.side_3_7(study, {"IP": {"success": 9.0}}, 4, "r8", "ResNet8")[1]):
        assert "Ours on r8 (ResNet8) as a STAND-IN for the study's ResNet24" in note
    rows, _ = rt.side_4_3({}, nets, {("m", "q"): 20.0}, {})   # no study: our figures only
    assert rows[1][2] == "20.00" and "study" not in " ".join(rows[0])


def _stand_in(folder, seed: int):
    """A MinNet trained for 4 epochs (1 QAT) on 1,000 exact CIFAR-10 training images written to a
    temporary image folder: a weak but input-sensitive CIFAR-shaped model (seconds to train)."""
    from nn.api import load_dataset, save_model
    from nn.train import train
    from PIL import Image

    data = folder / "data"
    if not data.exists():
        x, y = load_dataset(f"cifar10:{CIFAR}", "train")
        for split, per in (("train", 100), ("test", 2)):
            for k, c in enumerate(CLASSES):
                (data / split / c).mkdir(parents=True)
                idx = np.flatnonzero(y == k)[: per] if split == "train" else np.flatnonzero(y == k)[-per:]
                for i in idx:
                    Image.fromarray(np.transpose(x[i], (1, 2, 0))).save(data / split / c / f"{i:05d}.png")
    path = folder / f"standin{seed}.axm"
    save_model(train("minnet", f"folder:{data}", epochs=4, qat=True, qat_epochs=1, seed=seed, threads=1), path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR.is_dir() and MULS.is_dir()), reason="../shared/data or evoapprox absent")
def test_thesis_cifar10_flow_end_to_end_on_stand_in(tmp_path, monkeypatch):
    """Every stage on one stand-in network (beside the study's ResNet24 rows), 2 mul8s, 2 images
    per cell; the report holds every table, each with the study's column and a note. Several
    minutes on a loaded 2-core machine (the DSE's worker start-up, ~10 s per attack command)."""
    from flows.flow import load_flow, make_runner

    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    model = _stand_in(tmp_path, 0)
    study = SHARED / "thesis"
    if not study.is_dir():
        study = tmp_path / "study"
        _synthetic_study(study)
    muls = [str(MULS / f"{m}.v") for m in ("mul8s_1KV6", "mul8s_1L2J")]
    flow = load_flow(REPO / "flows" / "thesis_cifar10.yaml", [
        f"networks=[{{name: sa, path: {model}, study: ResNet24}}]",
        f"multipliers={json.dumps(muls)}", f"reference={study}",
        "dse={pop_size: 2, generations: 1, val_images: 10}", "eval.images=40",
        "attacks.n=2", "attacks.n_by={}", "attacks.ax=[mul8s_1L2J]", "attacks.list=[pgd, onepixel]",
        "attacks.params={pgd.eps: 0.3, pgd.alpha: 0.06, pgd.steps: 5, onepixel.max_pixels: 1, onepixel.generations: 2, "
        "onepixel.popsize: 8}",
        "pixels.network=sa", "pixels.n=2",
        "pixels.runs=[{label: NPs, attack: npixels, max_pixels: 3}, {label: IP, attack: ipixels, max_pixels: 2, "
        "Omega: 60, generations: 2}, {label: SQ, attack: square, n_queries: 20}]",
        "cross.attack=pgd", "detect.n_clean=8"])
    out = tmp_path / "run"
    make_runner(flow, out, progress=False).run()
    assert json.loads((out / "dse" / "sa" / "v1.choice.json").read_text())["max_acc_loss"] == 2.0
    assert (out / "eval" / "sa__ax_v1.json").exists() and (out / "attacks" / "sa__ax_v1__pgd.summary.json").exists()
    cmds = (out / "commands.sh").read_text()
    assert "--study" in cmds and "cifar10:../shared/data/cifar-10-subset" in cmds
    # Table 4.4 cells: images every implementation classifies correctly (Eq. 4.5); Tables 3.4/3.7
    # compare attacks on the one network: images its FpNN and QNN classify correctly
    study = lambda stem: json.loads(stem.with_suffix(".meta.json").read_text())["study"]  # noqa: E731
    assert len(study(out / "attacks" / "sa__fp__pgd")) >= 4 and study(out / "pixels" / "IP") == ["fp", "q"]
    report = (out / "report.md").read_text()
    for table in ("Table 4.3", "Table 4.4", "Table 4.5", "Table 3.4", "Table 3.7", "Table 4.7"):
        assert f"### {table} beside the study's" in report, table
    assert report.count("Note: ") >= 7 and "Figures 4.23/4.24" in report and "auc" in report
    assert " / " in report and "One-Pixel cut to 50 images" in report
    before = (out / "eval" / "sa__q.json").read_text()
    make_runner(flow, out, progress=False).run()          # resumed: every stage skipped
    assert (out / "eval" / "sa__q.json").read_text() == before
