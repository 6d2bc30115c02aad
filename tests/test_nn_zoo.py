"""The model zoo: zoo:NAME resolution (sha256 checked), `axlab zoo list/add`, index validation,
and the repository's own index."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwsim.errors import AxlabError
from nn import zoo
from nn.bundle import load_model, save_model
from nn.models import build_model
from nn.train import quantize_module
from tests.test_nn_folder_data import make_folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained, calibrated 2-class ResNet8 on 16x16 images (file bytes)."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    bundle = quantize_module(build_model("resnet8", 3, 2, 16), x, dataset="folder:data", arch="resnet8")
    return bundle.to_bytes()


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch, tiny_model):
    d = tmp_path / "zoo"
    d.mkdir()
    monkeypatch.setenv("AXLAB_ZOO", str(d))
    monkeypatch.setenv("AXLAB_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data", {"a": 4, "b": 4}, n_test=3, size=16)
    (d / "tiny.axm").write_bytes(tiny_model)
    return d


def test_add_then_load_by_name_and_list(zoo_dir, tmp_path, capsys):
    e = zoo.add_entry("tiny-r8", zoo_dir / "tiny.axm", command="axlab train --arch resnet8 ...",
                      evals={"jpeg": f"folder:{tmp_path / 'data'}"}, backend="torch")
    assert e["status"] == "trained" and set(e["accuracy"]) == {"fp_jpeg", "q_jpeg"}
    assert load_model("zoo:tiny-r8").sha256 == load_model(zoo_dir / "tiny.axm").sha256 == e["sha256"]
    text = zoo.format_list(zoo.read_index())
    assert "zoo:tiny-r8" in text and "axlab train --arch resnet8" in text and "q_jpeg" in text


def test_changed_file_unknown_name_and_training_entry_are_refused(zoo_dir):
    zoo.add_entry("tiny-r8", zoo_dir / "tiny.axm", command="cmd")
    with pytest.raises(AxlabError, match="no such zoo model"):
        load_model("zoo:other")
    data = bytearray((zoo_dir / "tiny.axm").read_bytes())
    data[-1] ^= 1
    (zoo_dir / "tiny.axm").write_bytes(bytes(data))
    with pytest.raises(AxlabError, match="sha256"):
        load_model("zoo:tiny-r8")
    zoo.write_index([{"name": "big", "status": "training", "command": "axlab train X"}])
    with pytest.raises(AxlabError, match="still training.*axlab train X --resume"):
        load_model("zoo:big")
    assert "training in progress" in zoo.format_list(zoo.read_index())


def test_export_takes_zoo_names(zoo_dir, tmp_path):
    """`axlab export --model zoo:NAME` resolves the zoo like every other command (it used to
    read a file literally named "zoo:NAME")."""
    from flows.export.generate import export

    zoo.add_entry("tiny-r8", zoo_dir / "tiny.axm", command="cmd")
    with pytest.raises(AxlabError, match="no such zoo model"):
        export("zoo:other", tmp_path / "d.json", tmp_path / "out", synth=False)
    with pytest.raises(AxlabError, match="d.json"):  # the model loaded; the (missing) design is next
        export("zoo:tiny-r8", tmp_path / "d.json", tmp_path / "out", synth=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("entry, message", [
    ({"name": "../x", "status": "trained", "command": "c"}, "name"),
    ({"name": "x", "status": "done", "command": "c"}, "status"),
    ({"name": "x", "status": "trained", "command": "c", "file": "../../etc/passwd", "sha256": "0" * 64}, "file"),
    ({"name": "x", "status": "trained", "command": "c", "file": "x.axm", "sha256": "abc"}, "sha256"),
    ({"name": "x", "status": "training", "command": "c", "accuracy": {"q": 3}}, "accuracy"),
    ({"name": "x", "status": "training"}, "command"),
])
def test_bad_index_entries_fail_in_one_line(zoo_dir, entry, message):
    (zoo_dir / "index.json").write_text(json.dumps({"models": [entry]}))
    with pytest.raises(AxlabError, match=message) as exc:
        zoo.read_index()
    assert "\n" not in str(exc.value)


def test_add_refuses_a_file_outside_the_zoo(zoo_dir, tmp_path):
    save_model(load_model(zoo_dir / "tiny.axm"), tmp_path / "elsewhere.axm")
    with pytest.raises(AxlabError, match="directly in"):
        zoo.add_entry("x", tmp_path / "elsewhere.axm", command="c")


def test_cli_zoo_list_and_add(zoo_dir, tmp_path, capsys):
    from flows.cli import main

    assert main(["zoo", "list"]) == 0
    assert "no zoo models" in capsys.readouterr().out
    assert main(["zoo", "add", "tiny-r8", "--file", str(zoo_dir / "tiny.axm"), "--command", "axlab train ...",
                 "--eval", f"jpeg=folder:{tmp_path / 'data'}", "--backend", "torch"]) == 0
    capsys.readouterr()
    assert main(["zoo", "list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == ["tiny-r8"] and entries[0]["accuracy"]["q_jpeg"] >= 0
    assert main(["zoo", "add", "x", "--file", str(zoo_dir / "tiny.axm"), "--command", "c", "--eval", "nolabel"]) == 2
    assert "LABEL=DATASET" in capsys.readouterr().err


def test_repository_index_is_valid_and_trained_entries_verify(monkeypatch):
    monkeypatch.delenv("AXLAB_ZOO", raising=False)
    for e in zoo.read_index():
        assert e["command"].split()[-1] != "--resume"
        if e["status"] == "trained":
            assert zoo.resolve(f"zoo:{e['name']}").is_file()
