"""Datasets, graph tracing, model files."""
from __future__ import annotations

import pickle
import urllib.request

import numpy as np
import pytest
import torch
from torch import nn as tnn

from hwsim.errors import AxlabError
from nn.api import approximable_layers, load_dataset, load_model, save_model
from nn.data import fetch_cifar10
from nn.graph import from_torch
from nn.models import build_model
from nn.quant import GraphModule
from nn.train import quantize_module
from tests.nn_fixtures import minnet_qat


def test_digits_splits():
    parts = {s: load_dataset("digits", s) for s in ("train", "val", "test")}
    assert sum(len(p[0]) for p in parts.values()) == 1797
    x, y = parts["test"]
    assert x.dtype == np.uint8 and x.shape[1:] == (1, 32, 32) and y.dtype == np.int64
    assert x.max() > 200 and set(np.unique(y)) == set(range(10))
    x2, _ = load_dataset("digits", "test", seed=0)
    assert np.array_equal(x, x2)
    x3, _ = load_dataset("digits", "test", seed=1)
    assert not np.array_equal(x, x3)


def _fake_cifar(root, n_batches=2, per=20):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_batches):
        data = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, per))}
        (d / f"data_batch_{i + 1}").write_bytes(pickle.dumps(data))
    data = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, per))}
    (d / "test_batch").write_bytes(pickle.dumps(data))
    return d


def test_cifar_local_batches(tmp_path):
    _fake_cifar(tmp_path)
    x, y = load_dataset(f"cifar10:{tmp_path}", "test")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    tr, va = load_dataset(f"cifar10:{tmp_path}", "train")[0], load_dataset(f"cifar10:{tmp_path}", "val")[0]
    assert len(tr) + len(va) == 40
    th = [load_dataset(f"cifar10-thesis:{tmp_path / 'cifar-10-batches-py'}", s)[0] for s in ("train", "val", "test")]
    assert [len(t) for t in th] == [36, 12, 12]


def test_cifar_errors(tmp_path):
    with pytest.raises(AxlabError, match="CIFAR-10 not found"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
    d = tmp_path / "evil" / "cifar-10-batches-py"
    d.mkdir(parents=True)

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Boom()}))
    with pytest.raises(AxlabError, match="refusing"):
        load_dataset(f"cifar10:{d}")
    with pytest.raises(AxlabError, match="unknown dataset"):
        load_dataset("mnist")


def test_fetch_offline_error(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(AxlabError, match="cannot download CIFAR-10") as e:
        fetch_cifar10(tmp_path)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob("*.part"))


def test_minnet_structure():
    g = from_torch(build_model("minnet", 3, 10), (3, 32, 32))
    assert g.layers() == ["conv1", "conv2", "fc1", "fc2"]
    assert g.params["conv1.weight"].shape == (32, 3, 3, 3)
    assert g.params["conv2.weight"].shape == (64, 32, 3, 3)
    assert g.params["fc1.weight"].shape == (64, 64 * 6 * 6)
    assert g.params["fc2.weight"].shape == (10, 64)
    assert [n["op"] for n in g.nodes] == ["input", "conv", "maxpool", "conv", "maxpool", "flatten", "linear", "linear"]
    assert all(g.by_name[n]["padding"] == [0, 0] for n in ("conv1", "conv2"))


@pytest.mark.parametrize("arch,n_layers", [("resnet8", 10), ("resnet24", 26)])
def test_resnet_bn_folding_matches_torch(arch, n_layers):
    torch.manual_seed(0)
    m = build_model(arch, 3, 10)
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, tnn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    m.eval()
    g = from_torch(m, (3, 32, 32))
    assert len(g.layers()) == n_layers
    assert sum(n["op"] == "add" for n in g.nodes) == (3 if arch == "resnet8" else 11)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(GraphModule(g, "float")(x), m(x), atol=1e-4)


def test_user_module_and_unsupported_op():
    class User(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = tnn.Conv2d(1, 4, 3, padding=1)
            self.b = tnn.Conv2d(4, 4, 1)
            self.pool = tnn.AvgPool2d(2)
            self.fc = tnn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            y = torch.relu(self.a(x))
            y = y + self.b(y)
            y = self.pool(torch.relu(y))
            return self.fc(y.view(y.size(0), -1))

    u = User().eval()
    g = from_torch(u, (1, 8, 8))
    assert g.layers() == ["a", "b", "fc"]
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(GraphModule(g, "float")(x), u(x), atol=1e-5)

    class Bad(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c = tnn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.sigmoid(self.c(x))
    with pytest.raises(AxlabError, match="unsupported operation"):
        from_torch(Bad(), (1, 8, 8))


def test_model_file_roundtrip_and_corruption(tmp_path):
    b = minnet_qat()
    p = save_model(b, tmp_path / "m.safetensors")
    import hashlib
    assert hashlib.sha256(p.read_bytes()).hexdigest() == b.sha256
    b2 = load_model(p)
    assert b2.sha256 == b.sha256 and approximable_layers(b2) == ["conv1", "conv2", "fc1", "fc2"]
    assert b2.qparams.act == b.qparams.act and all(np.array_equal(b2.qparams.wq[k], b.qparams.wq[k])
                                                   for k in b.qparams.wq)
    assert b2.to_bytes() == b.to_bytes()
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AxlabError, match="not a valid axlab model file"):
        load_model(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AxlabError, match="not a valid axlab model file"):
        load_model(tmp_path / "junk.safetensors")
    torch.save({"x": 1}, tmp_path / "pickle.pt")
    with pytest.raises(AxlabError, match="not a valid axlab model file"):
        load_model(tmp_path / "pickle.pt")
    with pytest.raises(AxlabError, match="cannot read model file"):
        load_model(tmp_path / "missing.safetensors")


def test_ptq_bundle_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 1, 32, 32), dtype=np.uint8)
    torch.manual_seed(3)
    a = quantize_module(build_model("minnet", 1, 10).eval(), x)
    torch.manual_seed(3)
    b = quantize_module(build_model("minnet", 1, 10).eval(), x)
    assert a.sha256 == b.sha256


class _FakeResponse:
    """Stands in for urllib's response (no network in tests)."""

    def __init__(self, data: bytes) -> None:
        import io

        self._f = io.BytesIO(data)
        self.headers = {"Content-Length": str(len(data))}

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_fetch_md5_mismatch_and_cli_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _FakeResponse(b"not the cifar archive"))
    with pytest.raises(AxlabError, match="md5") as e:
        fetch_cifar10(tmp_path)
    assert "\n" not in str(e.value) and not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.tar.gz"))

    def fail(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", fail)
    from flows.cli import main

    capsys.readouterr()  # drop the progress output of the first download

    assert main(["data", "fetch", "cifar10", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("axlab: cannot download CIFAR-10") and "offline" in err and len(err.splitlines()) == 1
