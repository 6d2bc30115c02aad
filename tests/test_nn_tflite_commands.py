"""Every command accepts imported TFLite models (issue 12, item 5): the cost model's MAC counts
of ``tfl_*`` layers, ``axlab dse``, ``attack`` -> ``transfer`` / ``detect``, ``run`` of a flow
file, on the small generated test models of tests/data/tflite/ (every machine) with a tiny
image-folder data set; the MLPerf flow file loads; the shared ResNet8 case skips when absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli import main
from flows.costmodel import design_cost, layer_macs
from nn.api import load_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "tflite"
RESNET8 = ROOT.parent / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet_quant.tflite"
TEST_MODELS = ["conv_relu_pool", "dw_uint8_dequant", "residual_float_in", "dw_stride_pertensor"]


def _twin_macs(bundle) -> list[int]:
    """Multiplications per image counted independently of flows.costmodel: the float twin's
    conv2d / linear calls on one image (output elements x products per output)."""
    import nn.tflite_float as tf

    counts: list[int] = []
    real = tf.F

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
            y = real.conv2d(x, w, b, stride, padding, dilation, groups)
            counts.append(int(y[0].numel() * w[0].numel()))
            return y

        def linear(self, x, w, b=None):
            y = real.linear(x, w, b)
            counts.append(int(y[0].numel() * w.shape[1]))
            return y

    tf.F = Counting()
    try:
        with torch.no_grad():
            tf.TfliteFloatModule(bundle, "float")(torch.zeros((1, *bundle.input_shape)))
    finally:
        tf.F = real
    return counts


@pytest.mark.parametrize("name", TEST_MODELS + ["shared:resnet8"])
def test_layer_macs_of_imported_models(name: str) -> None:
    path = RESNET8 if name == "shared:resnet8" else DATA / f"{name}.tflite"
    if not path.exists():
        pytest.skip(f"{path} absent")
    bundle = load_model(path)
    macs = layer_macs(bundle)
    assert list(macs) == bundle.layers()
    assert list(macs.values()) == _twin_macs(bundle)
    assert min(macs.values()) > 0


def test_design_cost_weights_imported_layers() -> None:
    from hwsim.store import resolve

    bundle = load_model(DATA / "conv_relu_pool.tflite")
    macs = list(layer_macs(bundle).values())
    exact, small = resolve("mul8s_bi_exact"), resolve("mul8s_bi_ba0_5")
    luts = [small] + [exact] * (len(macs) - 1)
    w0 = macs[0] / sum(macs)
    got = design_cost(macs, luts)
    want = w0 * small.meta["cost"]["area_um2"] + (1 - w0) * exact.meta["cost"]["area_um2"]
    assert got["area_um2"] == pytest.approx(want, rel=1e-12)


def _folder_dataset(root: Path, model: Path, per_class: int) -> str:
    """A seeded image-folder data set of random RGB PNGs of the model's input size, each filed
    under the class the model's QNN gives it (so attacks and the DSE find correct images); a
    class the QNN never gives holds one image."""
    from PIL import Image

    from nn.api import load_implementation

    b = load_model(model)
    c, h, w = b.input_shape
    assert c == 3
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40 * b.num_classes, c, h, w), dtype=np.uint8)
    pred = load_implementation(b, "q").predict(x)
    for split, n in (("train", per_class), ("test", 2)):
        for k in range(b.num_classes):
            d = root / split / f"c{k}"
            d.mkdir(parents=True)
            mine = x[pred == k][:n] if split == "train" else x[pred == k][per_class:per_class + n]
            if not len(mine):
                mine = x[k:k + 1]
            for i, img in enumerate(mine):
                Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(d / f"{i:03d}.png")
    return f"folder:{root}"


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, str]:
    model = DATA / "conv_relu_pool.tflite"
    return model, _folder_dataset(tmp_path / "data", model, 6)


def test_dse_on_imported_model(tiny: tuple[Path, str], tmp_path: Path) -> None:
    model, ds = tiny
    out = tmp_path / "dse"
    rc = main(["dse", "--model", str(model), "--dataset", ds, "--multipliers", "mul8s_bi_exact,mul8s_bi_ba0_5",
               "--pop", "4", "--gens", "1", "--val-images", "6", "--probe-images", "1", "--attack", "square",
               "--param", "n_queries=2", "--workers", "1", "--backend", "torch", "--out", str(out), "--no-progress"])
    assert rc == 0
    pareto = json.loads((out / "pareto.json").read_text())["pareto"]
    assert pareto and all(p["area_um2"] > 0 for p in pareto)


def test_attack_transfer_detect_on_imported_model(tiny: tuple[Path, str], tmp_path: Path) -> None:
    model, ds = tiny
    run = tmp_path / "a.jsonl"
    assert main(["attack", "--model", str(model), "--impl", "q", "--attack", "fgsm", "--param", "eps=0.3",
                 "--dataset", ds, "--n", "3", "--seed", "0", "--backend", "torch", "--out", str(run),
                 "--no-progress"]) == 0
    assert len(run.read_text().splitlines()) >= 1
    specs = [f"{model}:fp", f"{model}:q@torch", f"{model}:ax:mul8s_bi_ba0_5@torch"]
    assert main(["transfer", str(run), "--to", *specs, "--out", str(tmp_path / "tr"), "--no-progress"]) == 0
    assert (tmp_path / "tr" / "transfer_matrix.csv").exists()
    assert main(["detect", "--model", str(model), "--impl", "fp", "q", "--backend", "torch", "--adv", str(run),
                 "--out", str(tmp_path / "det"), "--no-progress"]) == 0
    assert (tmp_path / "det" / "detection.csv").exists()


def _run_tiny_flow(tmp_path: Path, model: Path, ds: str, stages: str) -> Path:
    flow = tmp_path / "f.yaml"
    flow.write_text(
        f"name: tflite_tiny\nseed: 0\ndataset: '{ds}'\nbackend: torch\n"
        "luts: {multipliers: [mul8s_bi_exact, mul8s_bi_ba0_5]}\n"
        f"train: {{path: '{model}'}}\neval: {{multipliers: false}}\n"
        "dse: {objectives: [area, accuracy], pop_size: 4, generations: 1, val_images: 6, probe_images: 1,"
        f" workers: 1}}\n{stages}export: false\n")
    out = tmp_path / "run"
    assert main(["run", str(flow), "--out", str(out), "--no-progress"]) == 0
    assert (out / "report.md").exists()
    assert json.loads((out / "eval" / "q.json").read_text())["n"] > 0
    assert json.loads((out / "dse" / "pareto.json").read_text())["pareto"]
    return out


def test_flow_run_on_imported_model(tiny: tuple[Path, str], tmp_path: Path) -> None:
    _run_tiny_flow(tmp_path, *tiny, "attacks: false\ntransfer: false\ndetect: false\n")


@pytest.mark.slow
def test_flow_every_stage_on_imported_model(tiny: tuple[Path, str], tmp_path: Path) -> None:
    """attacks (FpNN, QNN, one Pareto design), transfer and detect stages too (~50 s)."""
    out = _run_tiny_flow(tmp_path, *tiny, "attacks: {designs: 1, n: 3, list: [{attack: fgsm, eps: 0.3}]}\n"
                         "transfer: {attack: fgsm}\ndetect: {attack: fgsm, n_clean: 4}\n")
    runs = sorted(p.name for p in (out / "attacks").glob("*.jsonl"))
    assert len(runs) == 3 and runs[1:] == ["fp_fgsm.jsonl", "q_fgsm.jsonl"] and runs[0].startswith("ax_pareto_")
    assert (out / "transfer" / "transfer_matrix.csv").exists()
    assert (out / "detect" / "detection.csv").exists()


def test_mlperf_flow_file_loads() -> None:
    from flows.flow import load_flow

    flow = load_flow(ROOT / "flows" / "mlperf_resnet8.yaml")
    assert flow["train"]["path"].endswith("pretrainedResnet_quant.tflite")
    assert flow["dataset"].startswith("cifar10:")
    assert flow["luts"]["multipliers"].endswith("evoapprox/mul8s")
    assert flow["dse"]["attack"] == "square" and flow["dse"]["val_images"] > 0
    assert flow["export"]["verify"] and flow["export"]["images"] >= 5  # co-simulated export of the chosen design
