"""Model files: a self-contained safetensors file (no pickle) holding the graph (JSON
metadata), float and QAT weights and the frozen 8-bit quantisation."""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError
from hwsim.fileio import atomic_write
from nn.graph import LAYER_OPS, Graph
from nn.quant import QuantParams

FORMAT = "axlab-model/1"


@dataclass
class ModelBundle:
    """A trained model. ``graph.params`` are the float weights (BatchNorm folded);
    ``qat_params`` the weights the quantisation was derived from (== float weights without
    QAT); ``qparams`` the frozen int8 quantisation used by the QNN/AxNN."""

    arch: str
    graph: Graph
    qat_params: dict[str, np.ndarray]
    qparams: QuantParams
    dataset: str
    meta: dict[str, Any] = field(default_factory=dict)
    _sha: str | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        last = [n for n in self.graph.nodes if n["op"] in LAYER_OPS][-1]
        return int(self.graph.params[f"{last['name']}.weight"].shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.graph.input_shape

    def layers(self) -> list[str]:
        return self.graph.layers()

    @property
    def sha256(self) -> str:
        """sha256 of the model file bytes (what design.json records)."""
        if self._sha is None:
            self._sha = hashlib.sha256(self.to_bytes()).hexdigest()
        return self._sha

    def qat_graph(self) -> Graph:
        return self.graph.copy(self.qat_params)

    # -- serialisation ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        t: dict[str, np.ndarray] = {}
        for k, v in self.graph.params.items():
            t[f"fp.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
        for k, v in self.qat_params.items():
            t[f"qat.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
        for k, (s, zp) in self.qparams.act.items():
            t[f"q.act.{k}"] = np.array([s, zp], dtype=np.float64)
        for k in self.qparams.wq:
            t[f"q.wq.{k}"] = self.qparams.wq[k].astype(np.int8)
            t[f"q.ws.{k}"] = self.qparams.ws[k].astype(np.float64)
            t[f"q.bq.{k}"] = self.qparams.bq[k].astype(np.int64)
        meta = {"format": FORMAT, "arch": self.arch, "dataset": self.dataset,
                "graph": self.graph.to_json(), "meta": self.meta}
        return save(t, metadata={"axlab": json.dumps(meta, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "<bytes>") -> "ModelBundle":
        from safetensors.numpy import load

        try:
            (hlen,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + hlen])
            meta = json.loads(header["__metadata__"]["axlab"])
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            t = load(data)
            graph_json = meta["graph"]
            fp = {k[3:]: v for k, v in t.items() if k.startswith("fp.")}
            qat = {k[4:]: v for k, v in t.items() if k.startswith("qat.")}
            graph = Graph.from_json(graph_json, fp)
            qp = QuantParams()
            for k, v in t.items():
                if k.startswith("q.act."):
                    qp.act[k[6:]] = (float(v[0]), int(v[1]))
                elif k.startswith("q.wq."):
                    name = k[5:]
                    qp.wq[name] = v.astype(np.int32)
                    qp.ws[name] = t[f"q.ws.{name}"].astype(np.float64)
                    qp.bq[name] = t[f"q.bq.{name}"].astype(np.int64)
            for name in graph.layers():
                for d in (fp, qat):
                    if f"{name}.weight" not in d or f"{name}.bias" not in d:
                        raise KeyError(f"weights of layer {name}")
                if name not in qp.wq:
                    raise KeyError(f"quantisation of layer {name}")
        except Exception as exc:  # any parse failure means a corrupt or foreign file
            raise AxlabError(f"{where}: not a valid axlab model file ({exc.__class__.__name__}: {exc})") from None
        b = cls(meta["arch"], graph, qat, qp, meta["dataset"], meta.get("meta", {}))
        b._sha = hashlib.sha256(data).hexdigest()
        return b


def save_model(bundle: ModelBundle, path: str | Path) -> Path:
    """Write the model file atomically; its sha256 is ``bundle.sha256``."""
    data = bundle.to_bytes()
    path = atomic_write(path, data)
    bundle._sha = hashlib.sha256(data).hexdigest()
    return path


def load_model(path: str | Path) -> ModelBundle:
    """Read a model file (safetensors; no code execution). Corrupt files raise AxlabError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AxlabError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return ModelBundle.from_bytes(data, str(path))
