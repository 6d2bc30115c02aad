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
from nn.graph_check import check_graph, check_graph_json, check_quant, is_tflite_graph
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
        """Parse and fully validate a model file's bytes (see :mod:`nn.graph_check`): any
        problem raises one AxlabError line naming ``where`` and the node/tensor/key."""
        from safetensors.numpy import load

        try:
            (hlen,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + hlen])
            meta = json.loads(header["__metadata__"]["axlab"])
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else meta!r}")
            t = load(data)
        except Exception as exc:  # any parse failure means a corrupt or foreign file
            raise AxlabError(f"{where}: not a valid axlab model file ({exc.__class__.__name__}: {exc})") from None
        for key in ("arch", "dataset"):
            if not isinstance(meta.get(key), str):
                raise AxlabError(f"{where}: metadata key {key!r} must be a string, got {meta.get(key)!r}")
        if not isinstance(meta.get("meta", {}), dict):
            raise AxlabError(f"{where}: metadata key 'meta' must be a JSON object")
        check_graph_json(meta.get("graph"), where)
        fp, qat, qp = _split_tensors(t, where)
        graph = Graph.from_json(meta["graph"], fp)
        b = cls(meta["arch"], graph, qat, qp, meta["dataset"], meta.get("meta", {}))
        validate_bundle(b, where)
        b._sha = hashlib.sha256(data).hexdigest()
        return b


def validate_bundle(bundle: ModelBundle, where: str) -> None:
    """Graph, tensors and quantisation of a bundle (nn.graph_check; TFLite-op graphs also
    through nn.tflite_engine, which knows their attributes); AxlabError names ``where``."""
    check_graph(bundle.graph, where)
    check_quant(bundle.graph, bundle.qparams, bundle.qat_params, where)
    if is_tflite_graph(bundle.graph.nodes):
        from nn.tflite_engine import TfliteEngine

        try:
            TfliteEngine.check(bundle)
        except AxlabError as exc:
            raise AxlabError(f"{where}: {exc}") from None


def _split_tensors(t: dict[str, np.ndarray], where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                  QuantParams]:
    """Stored tensors -> (float params, QAT params, QuantParams), refusing unknown names and
    stored dtypes that would need a lossy cast (e.g. float weight codes)."""
    fp: dict[str, np.ndarray] = {}
    qat: dict[str, np.ndarray] = {}
    qp = QuantParams()
    kinds = {"fp.": "f", "qat.": "f", "q.act.": "f", "q.wq.": "iu", "q.ws.": "f", "q.bq.": "iu"}
    for k, v in t.items():
        prefix = next((p for p in kinds if k.startswith(p) and len(k) > len(p)), None)
        if prefix is None:
            raise AxlabError(f"{where}: unexpected tensor {k!r} (allowed prefixes: {', '.join(kinds)})")
        if v.dtype.kind not in kinds[prefix]:
            want = "a float" if kinds[prefix] == "f" else "an integer"
            raise AxlabError(f"{where}: tensor {k} must have {want} dtype, got {v.dtype}")
        name = k[len(prefix):]
        if prefix == "fp.":
            fp[name] = v
        elif prefix == "qat.":
            qat[name] = v
        elif prefix == "q.act.":
            if v.shape != (2,) or not np.isfinite(v).all() or v[1] != np.round(v[1]):
                raise AxlabError(f"{where}: tensor {k} must be [scale, integer zero point] (finite), got {v.tolist()}")
            qp.act[name] = (float(v[0]), int(v[1]))
        elif prefix == "q.wq.":
            qp.wq[name] = v.astype(np.int32) if v.size == 0 or (v.min() >= -2**31 and v.max() < 2**31) else v
        elif prefix == "q.ws.":
            qp.ws[name] = v.astype(np.float64)
        else:
            qp.bq[name] = v.astype(np.int64) if v.dtype.kind == "i" or v.size == 0 or v.max() < 2**63 else v
    return fp, qat, qp


def save_model(bundle: ModelBundle, path: str | Path) -> Path:
    """Write the model file atomically (after validating it); its sha256 is ``bundle.sha256``."""
    validate_bundle(bundle, str(path))
    data = bundle.to_bytes()
    path = atomic_write(path, data)
    bundle._sha = hashlib.sha256(data).hexdigest()
    return path


def load_model(path: str | Path) -> ModelBundle:
    """Read a model file (safetensors; no code execution), or import a TFLite flatbuffer
    (recognised by its "TFL3" identifier; see nn.tflite_import). Corrupt files raise AxlabError.
    ``zoo:NAME`` names a model of the repository's zoo (nn.zoo; sha256 checked)."""
    from nn.zoo import model_file

    path = model_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AxlabError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if data[4:8] == b"TFL3" or path.suffix.lower() == ".tflite":
        from nn.tflite_import import import_tflite_bytes

        return import_tflite_bytes(data, str(path))
    return ModelBundle.from_bytes(data, str(path))
