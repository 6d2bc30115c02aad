"""``axlab export verify DIR``: an export folder re-verified on its own. A fresh export passes; a
flipped weight bit is caught by the hash check and, when the manifest's hash is rewritten too,
by the RTL co-simulation itself (naming image and output); a folder that is not a clean export
is refused in one line before any tool runs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.nn_fixtures import EVO_DIR

pytestmark = pytest.mark.skipif(not EVO_DIR.is_dir(), reason="../shared/evoapprox not present")


def _tiny_bundle(seed: int = 3):
    """conv 1->4 (3x3, stride 2) + ReLU + maxpool 2 + dense 196->10, random weights (``seed``)
    calibrated on 200 digits images: about 10 k clocks per image in the RTL."""
    import torch
    from torch import nn as tnn

    from nn.data import load_dataset
    from nn.train import quantize_module

    class Tiny(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tnn.Conv2d(1, 4, 3, stride=2)
            self.pool = tnn.MaxPool2d(2)
            self.fc = tnn.Linear(4 * 7 * 7, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    torch.manual_seed(seed)
    x, _ = load_dataset("digits", "train")
    return quantize_module(Tiny().eval(), x[:200], "digits", "tiny")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A fresh export of the tiny network (2 test images, no synthesis); tests work on copies."""
    from flows.export import export
    from nn.bundle import save_model
    from nn.design import write_design

    root = tmp_path_factory.mktemp("export_verify")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AXLAB_SIM", "gates")
        b = _tiny_bundle()
        model = save_model(b, root / "tiny.axm")
        write_design(b, [str(EVO_DIR / "mul8s_1KV8.v"), "mul8s_bi_exact"], root / "design.json")
        export(model, root / "design.json", root / "hw", images=2, lanes=2, synth=False)
    return root / "hw"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rehash(folder: Path, rel: str) -> None:
    """Rewrite the manifest's sha256 of ``rel`` as a tamperer covering their tracks would."""
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _flip_weight_bit(folder: Path, rel: str, bit: int = 7) -> None:
    """Flip ``bit`` of lane 0 (the lowest byte) of the first weight word: output channel 0."""
    lines = (folder / rel).read_text().split("\n")
    word = int(lines[0], 16) ^ (1 << bit)
    lines[0] = f"{word:0{len(lines[0])}x}"
    (folder / rel).write_text("\n".join(lines))


def _run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    from flows.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, [ln for ln in cap.err.splitlines() if ln.strip()]


def test_verify_passes_then_catches_one_flipped_weight_bit(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AXLAB_SIM", "gates")  # --model/--design resolve the LUTs as they were built
    d = _copy(exported, tmp_path / "hw")
    model, design = exported.parent / "tiny.axm", exported.parent / "design.json"
    rc, out, err = _run(["export", "verify", str(d), "--model", str(model), "--design", str(design), "--json"], capsys)
    summary = json.loads(out)
    assert rc == 0 and err == [] and summary["bit_exact"] == summary["images"] == 2, (summary, err)
    assert summary["reference_checked"] and summary["first_mismatch"] is None and summary["differing"] == {}

    weights = json.loads((d / "manifest.json").read_text())["layers"][-1]["weights"]  # the dense layer
    _flip_weight_bit(d, weights)
    # 1. the hash check names the changed file
    rc, out, err = _run(["export", "verify", str(d)], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("axlab: export ") \
        and f"{weights} changed after the export" in err[0], err
    # 2. with the manifest's hash rewritten, the co-simulation itself fails on output 0
    _rehash(d, weights)
    rc, out, err = _run(["export", "verify", str(d), "--json"], capsys)
    summary = json.loads(out)
    expected = np.load(d / "tb" / "expected.npy")
    f = summary["first_mismatch"]
    assert rc == 1 and len(err) == 1 and "RTL co-simulation differs" in err[0], err
    assert f is not None and f["output"] == 0 and f["expected"] == expected[f["image"]][0] != f["rtl"]
    assert f"first at image {f['image']} output 0: RTL code {f['rtl']}, expected {f['expected']}" in err[0]
    # only output channel 0's weight changed: every other output of every image still matches
    assert summary["bit_exact"] < summary["images"] == 2 and summary["differing"]
    for image, diff in summary["differing"].items():
        assert diff["outputs"] == [0] and diff["expected"] == expected[int(image)].tolist()


def _tamper_cases():
    """(name, edit(folder), part of the one-line error). Edits that rewrite the manifest's hash
    show the content checks working on their own."""

    def append(rel: str, text: str, rehash: bool = True):
        def edit(d: Path) -> None:
            with open(d / rel, "a") as fh:
                fh.write(text)
            if rehash:
                _rehash(d, rel)
        return edit

    def manifest(fn):
        def edit(d: Path) -> None:
            m = json.loads((d / "manifest.json").read_text())
            fn(m)
            (d / "manifest.json").write_text(json.dumps(m))
        return edit

    def replace_line(rel: str, k: int, text: str):
        def edit(d: Path) -> None:
            lines = (d / rel).read_text().split("\n")
            lines[k] = text
            (d / rel).write_text("\n".join(lines))
            _rehash(d, rel)
        return edit

    def sub(rel: str, old: str, new: str):
        def edit(d: Path) -> None:
            text = (d / rel).read_text()
            assert old in text
            (d / rel).write_text(text.replace(old, new))
            _rehash(d, rel)
        return edit

    def netlist_copy(text: str):
        """Append to the first layer's provenance netlist; rewrite both hashes the manifest keeps of it."""
        def edit(d: Path) -> None:
            m = json.loads((d / "manifest.json").read_text())
            rel = m["layers"][0]["netlist"]["copy"]
            with open(d / rel, "a") as fh:
                fh.write(text)
            m["files"][rel] = m["layers"][0]["netlist"]["sha256"] = hashlib.sha256((d / rel).read_bytes()).hexdigest()
            (d / "manifest.json").write_text(json.dumps(m))
        return edit

    def symlink(rel: str):
        def edit(d: Path) -> None:
            target = d.parent / "elsewhere.memh"
            shutil.copy(d / rel, target)
            (d / rel).unlink()
            os.symlink(target, d / rel)
        return edit

    def npy(rel: str, arr_fn):
        def edit(d: Path) -> None:
            np.save(d / rel, arr_fn(np.load(d / rel)), allow_pickle=False)
            _rehash(d, rel)
        return edit

    def first_rtl_mul(m: dict) -> str:
        return m["layers"][0]["netlist"]["rtl"]

    return [
        ("no manifest", lambda d: (d / "manifest.json").unlink(),
         r"manifest\.json \(the export's manifest\) is missing"),
        ("manifest not JSON", lambda d: (d / "manifest.json").write_text("{not json"),
         r"manifest\.json is not valid JSON"),
        ("manifest a list", lambda d: (d / "manifest.json").write_text("[]"), r"manifest\.json is not a JSON object"),
        ("path escapes", manifest(lambda m: m["files"].update({"../x.v": "0" * 64})),
         r"files\['\.\./x\.v'\]: '\.\./x\.v' is not a relative path inside the folder"),
        ("absolute source", manifest(lambda m: m["rtl"]["sources"].append("/etc/passwd")),
         r"rtl\.sources\[\d+\]: '/etc/passwd' is not a relative path"),
        ("weight edited", append("mem/fc_w.memh", "00\n", rehash=False), r"mem/fc_w\.memh changed after the export"),
        ("non-hex memh", replace_line("mem/fc_w.memh", 0, "zz"), r"mem/fc_w\.memh:1: 'zz' is not a word of 2 hex"),
        ("memh address", replace_line("mem/conv_q.memh", 1, "@0"), r"mem/conv_q\.memh:2: '@0' is not a word"),
        ("memh too long", append("mem/fc_q.memh", "00" * 9 + "\n"),
         r"mem/fc_q\.memh: 11 words, the layer's ROM has 10"),
        ("symlink", symlink("mem/fc_q.memh"), r"mem/fc_q\.memh \(listed in manifest\.json\) is a symbolic link"),
        ("netlist copy injected", netlist_copy('\n`define P initial $system("id > pwned");\n'),
         r"mul8s_1KV8\.v:\d+: refused compiler directive"),
        ("multiplier source injected", lambda d: append(first_rtl_mul(json.loads((d / "manifest.json").read_text())),
                                                        "\nmodule x; initial $system(\"id\"); endmodule\n")(d),
         r"rtl/mul_0_mul8s_1KV8\.v:\d+: refused keyword 'initial'"),
        ("top with a system task", append("rtl/axlab_net_top.v", '\nmodule y; initial $system("id"); endmodule\n'),
         r"rtl/axlab_net_top\.v:\d+: refused '\$'"),
        ("top reads another file", sub("rtl/axlab_net_top.v", '"mem/fc_w.memh"', '"mem/xx_w.memh"'),
         r"ROM file 'mem/xx_w\.memh' is not a memory of the manifest's layers"),
        ("top metacomment", append("rtl/axlab_net_top.v", "\n// verilator public\n"), r"refused tool metacomment"),
        ("engine RTL edited", append("rtl/axlab_rom.v", "\n// edited\n"), r"rtl/axlab_rom\.v differs from this axlab's"),
        ("expected wrong dtype", npy("tb/expected.npy", lambda a: a.astype(np.int64)),
         r"tb/expected\.npy: int64 \(2, 10\), expected int32 \(2, 10\)"),
        ("images wrong shape", npy("tb/images.npy", lambda a: a[:1]),
         r"tb/images\.npy: uint8 \(1, 1, 32, 32\), expected"),
    ]


@pytest.mark.parametrize("name,edit,pattern", _tamper_cases(), ids=[c[0] for c in _tamper_cases()])
def test_verify_refuses_bad_folder_before_any_tool(exported, tmp_path, capsys, monkeypatch, name, edit, pattern):
    import re

    import hwsim.tools

    def no_tools(*a, **k):
        raise AssertionError("a tool ran on a folder that should have been refused")

    monkeypatch.setattr(hwsim.tools, "setup_verilator", no_tools)
    d = _copy(exported, tmp_path / "hw")
    edit(d)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    rc, out, err = _run(["export", "verify", str(d)], capsys)
    assert rc == 2 and out == "" and len(err) == 1 and err[0].startswith("axlab: "), (name, err)
    assert re.search(pattern, err[0]), (name, err[0])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing written


def test_verify_cli_arguments(exported, capsys):
    rc, out, err = _run(["export", "verify"], capsys)
    assert rc == 2 and len(err) == 1 and "export folder is missing" in err[0]
    rc, out, err = _run(["export", "verify", str(exported), "--lanes", "3"], capsys)
    assert rc == 2 and len(err) == 1 and "--lanes applies to exporting" in err[0]
    rc, out, err = _run(["export", "verify", str(exported), "--model", "m.axm"], capsys)
    assert rc == 2 and len(err) == 1 and "give both --model and --design" in err[0]
    rc, out, err = _run(["export", "--model", "m.axm"], capsys)
    assert rc == 2 and len(err) == 1 and "--design, --out required" in err[0]
    rc, out, err = _run(["export", "verify", str(exported / "nope")], capsys)
    assert rc == 2 and len(err) == 1 and "no such folder" in err[0]


def test_verify_reference_catches_rewritten_expected_outputs(exported, tmp_path, capsys, monkeypatch):
    """A tamperer who rewrites tb/expected.npy and its hash defeats the folder's own reference;
    --model/--design recompute it from the model and design and name the first difference."""
    import hwsim.tools

    monkeypatch.setattr(hwsim.tools, "setup_verilator", lambda *a, **k: pytest.fail("a tool ran"))
    monkeypatch.setenv("AXLAB_SIM", "gates")  # as the design's LUTs were built
    model, design = exported.parent / "tiny.axm", exported.parent / "design.json"
    d = _copy(exported, tmp_path / "hw")
    exp = np.load(d / "tb" / "expected.npy")
    exp[1, 3] = exp[1, 3] + 1 if exp[1, 3] < 127 else 126
    np.save(d / "tb" / "expected.npy", exp, allow_pickle=False)
    _rehash(d, "tb/expected.npy")
    argv = ["export", "verify", str(d), "--model", str(model), "--design", str(design)]
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and len(err) == 1 and "tb/expected.npy is not the simulator's output" in err[0], err
    assert f"first at image 1 output 3: recorded {exp[1, 3]}, simulator" in err[0]
    # a different model is refused by its hash
    from nn.bundle import save_model

    other = save_model(_tiny_bundle(seed=4), tmp_path / "other.axm")
    rc, out, err = _run(["export", "verify", str(exported), "--model", str(other), "--design", str(design)], capsys)
    assert rc == 2 and len(err) == 1 and "is not the exported model" in err[0], err
