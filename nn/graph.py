"""A small dataflow IR of a CNN, built from any torch module by ``torch.fx`` tracing.

Ops (node["op"]):
  input                          the image, float [0, 1] NCHW
  conv   (stride, padding, relu) Conv2d, BatchNorm folded, ReLU fused; params W (Co,Ci,kh,kw), b
  linear (relu)                  Linear (stored as a 1x1 conv on (N, C, 1, 1)); params W (Co,Ci), b
  add    (relu)                  residual add of two tensors
  relu                           stand-alone ReLU (not fusable into the producer)
  maxpool (kernel, stride, padding), avgpool (kernel, stride), gap (global average pool)
  flatten                        NCHW -> (N, C*H*W)
The IR is self-contained (JSON + named float arrays): a model file needs no Python class.
Conv/linear node names are the module's qualified names (e.g. ``conv1``, ``layers.0.conv2``).
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn as tnn
from torch.fx.passes.shape_prop import ShapeProp

from hwsim.errors import AxlabError

LAYER_OPS = ("conv", "linear", "tfl_conv", "tfl_dwconv", "tfl_fc")  # tfl_*: imported TFLite (nn/tflite_import.py)
# ops whose output carries its own quantisation parameters (others inherit from input 0)
QUANT_OPS = ("input", "conv", "linear", "add")


class Graph:
    """Nodes in topological order; ``params`` maps ``<node>.weight``/``<node>.bias`` to float32."""

    def __init__(self, nodes: list[dict[str, Any]], input_shape: tuple[int, int, int],
                 params: dict[str, np.ndarray]) -> None:
        self.nodes = nodes
        self.input_shape = tuple(int(v) for v in input_shape)
        self.params = params
        self.by_name = {n["name"]: n for n in nodes}

    @property
    def output(self) -> str:
        return self.nodes[-1]["name"]

    def layers(self) -> list[str]:
        """Conv/dense layer names in network order."""
        return [n["name"] for n in self.nodes if n["op"] in LAYER_OPS]

    def quant_source(self, name: str) -> str:
        """The node whose quantisation parameters a node's output uses."""
        n = self.by_name[name]
        while n["op"] not in QUANT_OPS and not n["op"].startswith("tfl_"):  # tfl_*: every tensor has its own
            n = self.by_name[n["inputs"][0]]
        return n["name"]

    def to_json(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "nodes": self.nodes}

    @classmethod
    def from_json(cls, d: dict[str, Any], params: dict[str, np.ndarray]) -> "Graph":
        return cls(list(d["nodes"]), tuple(d["input_shape"]), params)

    def copy(self, params: dict[str, np.ndarray] | None = None) -> "Graph":
        return Graph([dict(n) for n in self.nodes], self.input_shape,
                     dict(self.params if params is None else params))


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _unsupported(what: str) -> AxlabError:
    return AxlabError(f"unsupported operation in model: {what} (supported: Conv2d, Linear, ReLU, "
                      "BatchNorm after conv/linear, max/avg pooling, residual add, flatten)")


def from_torch(module: tnn.Module, input_shape: tuple[int, int, int]) -> Graph:
    """Trace ``module`` (eval mode) into a Graph with BatchNorm folded and ReLUs fused."""
    was_training = module.training
    module.eval()
    try:
        gm = torch.fx.symbolic_trace(module)
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except AxlabError:
        raise
    except Exception as exc:  # tracing errors of arbitrary user code
        raise AxlabError(f"cannot trace model {type(module).__name__}: {exc}") from exc
    finally:
        module.train(was_training)
    mods = dict(gm.named_modules())
    nodes: list[dict[str, Any]] = []
    params: dict[str, np.ndarray] = {}
    alias: dict[str, str] = {}  # fx node name -> IR node name
    bn_of: dict[str, tnn.Module] = {}
    out_name = None
    taken: set[str] = {"input"}

    def src(a: Any) -> str:
        if not isinstance(a, torch.fx.Node) or a.name not in alias:
            raise _unsupported(f"argument {a!r}")
        return alias[a.name]

    def add(name: str, op: str, inputs: list[str], **attrs: Any) -> None:
        nodes.append({"name": name, "op": op, "inputs": inputs, **attrs})

    for fx in gm.graph.nodes:
        shape = tuple(fx.meta["tensor_meta"].shape) if "tensor_meta" in fx.meta and hasattr(
            fx.meta["tensor_meta"], "shape") else None
        if fx.op == "placeholder":
            if nodes:
                raise _unsupported("more than one input")
            add("input", "input", [])
            alias[fx.name] = "input"
            continue
        if fx.op == "output":
            out_name = src(fx.args[0])
            continue
        if fx.op == "get_attr":
            raise _unsupported(f"parameter access {fx.target}")
        name = fx.target if fx.op == "call_module" else fx.name
        name = str(name)
        if name in taken:  # a module used twice (e.g. one pooling module) gets distinct nodes
            k = 1
            while f"{name}_{k}" in taken:
                k += 1
            name = f"{name}_{k}"
        taken.add(name)
        kind, mod = None, None
        if fx.op == "call_module":
            mod = mods[fx.target]
            if isinstance(mod, tnn.Conv2d):
                if mod.groups != 1 or _pair(mod.dilation) != [1, 1] or mod.padding_mode != "zeros" \
                        or isinstance(mod.padding, str):
                    raise _unsupported(f"Conv2d {name} with groups/dilation/padding mode/string padding")
                add(name, "conv", [src(fx.args[0])], stride=_pair(mod.stride), padding=_pair(mod.padding),
                    kernel=_pair(mod.kernel_size), relu=False)
                params[f"{name}.weight"] = mod.weight.detach().double().numpy()
                params[f"{name}.bias"] = (mod.bias.detach().double().numpy() if mod.bias is not None
                                          else np.zeros(mod.out_channels))
            elif isinstance(mod, tnn.Linear):
                add(name, "linear", [src(fx.args[0])], relu=False)
                params[f"{name}.weight"] = mod.weight.detach().double().numpy()
                params[f"{name}.bias"] = (mod.bias.detach().double().numpy() if mod.bias is not None
                                          else np.zeros(mod.out_features))
            elif isinstance(mod, (tnn.BatchNorm2d, tnn.BatchNorm1d)):
                kind = "bn"
            elif isinstance(mod, tnn.ReLU):
                kind = "relu"
            elif isinstance(mod, tnn.MaxPool2d):
                if _pair(mod.dilation) != [1, 1] or mod.ceil_mode:
                    raise _unsupported(f"MaxPool2d {name} with dilation/ceil_mode")
                stride = mod.stride if mod.stride is not None else mod.kernel_size
                add(name, "maxpool", [src(fx.args[0])], kernel=_pair(mod.kernel_size), stride=_pair(stride),
                    padding=_pair(mod.padding))
            elif isinstance(mod, tnn.AvgPool2d):
                if _pair(mod.padding) != [0, 0] or mod.ceil_mode:
                    raise _unsupported(f"AvgPool2d {name} with padding/ceil_mode")
                stride = mod.stride if mod.stride is not None else mod.kernel_size
                add(name, "avgpool", [src(fx.args[0])], kernel=_pair(mod.kernel_size), stride=_pair(stride))
            elif isinstance(mod, tnn.AdaptiveAvgPool2d):
                if _pair(mod.output_size) != [1, 1]:
                    raise _unsupported(f"AdaptiveAvgPool2d {name} with output size {mod.output_size}")
                add(name, "gap", [src(fx.args[0])])
            elif isinstance(mod, tnn.Flatten):
                kind = "flatten"
            elif isinstance(mod, (tnn.Identity, tnn.Dropout)):
                alias[fx.name] = src(fx.args[0])
                continue
            else:
                raise _unsupported(f"module {type(mod).__name__} ({name})")
        elif fx.op == "call_function":
            t = fx.target
            if t in (F.relu, torch.relu):
                kind = "relu"
            elif t in (operator.add, operator.iadd, torch.add):
                kind = "add"
            elif t is torch.flatten:
                kind = "flatten"
            elif t is F.max_pool2d:
                k = fx.args[1] if len(fx.args) > 1 else fx.kwargs["kernel_size"]
                s = fx.args[2] if len(fx.args) > 2 else fx.kwargs.get("stride") or k
                p = fx.args[3] if len(fx.args) > 3 else fx.kwargs.get("padding", 0)
                add(name, "maxpool", [src(fx.args[0])], kernel=_pair(k), stride=_pair(s), padding=_pair(p))
            elif t is F.avg_pool2d:
                k = fx.args[1] if len(fx.args) > 1 else fx.kwargs["kernel_size"]
                s = fx.args[2] if len(fx.args) > 2 else fx.kwargs.get("stride") or k
                add(name, "avgpool", [src(fx.args[0])], kernel=_pair(k), stride=_pair(s))
            elif t is F.adaptive_avg_pool2d:
                add(name, "gap", [src(fx.args[0])])
            elif t is getattr:
                continue  # e.g. x.shape, only feeds view/reshape arguments
            elif t is operator.getitem and not isinstance(fx.args[0], torch.fx.Node):
                continue
            else:
                raise _unsupported(f"function {getattr(t, '__name__', t)}")
        elif fx.op == "call_method":
            m = fx.target
            if m == "relu":
                kind = "relu"
            elif m in ("add", "add_"):
                kind = "add"
            elif m in ("flatten", "view", "reshape"):
                kind = "flatten"
            elif m in ("size", "dim"):
                continue
            else:
                raise _unsupported(f"tensor method .{m}()")
        if kind == "relu":
            add(name, "relu", [src(fx.args[0])])
        elif kind == "add":
            a, b = fx.args[0], fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("other")
            if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)) or \
                    fx.kwargs.get("alpha", 1) != 1:
                raise _unsupported("add of a constant (only tensor + tensor residual adds)")
            add(name, "add", [src(a), src(b)], relu=False)
        elif kind == "flatten":
            if shape is None or len(shape) != 2:
                raise _unsupported(f"reshape {name} to {shape} (only flattening to (N, features))")
            add(name, "flatten", [src(fx.args[0])])
        elif kind == "bn":
            prev = src(fx.args[0])
            bn_of[name] = mod
            add(name, "bn", [prev])
        alias[fx.name] = name
    if out_name is None:
        raise _unsupported("model without output")
    nodes = _prune(nodes, out_name)
    nodes, params = _fold_bn(nodes, params, bn_of)
    nodes = _fuse_relu(nodes)
    for n in nodes:
        if n["op"] in LAYER_OPS:
            for k in ("weight", "bias"):
                params[f"{n['name']}.{k}"] = params[f"{n['name']}.{k}"].astype(np.float32)
    params = {k: v for k, v in params.items() if k.rsplit(".", 1)[0] in {n["name"] for n in nodes}}
    g = Graph(nodes, input_shape, params)
    check(g)
    return g


def _users(nodes: list[dict[str, Any]]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {n["name"]: [] for n in nodes}
    for n in nodes:
        for i in n["inputs"]:
            users[i].append(n["name"])
    return users


def _prune(nodes: list[dict[str, Any]], out: str) -> list[dict[str, Any]]:
    """Drop nodes the output does not depend on; make the output node last."""
    by = {n["name"]: n for n in nodes}
    need, stack = set(), [out]
    while stack:
        k = stack.pop()
        if k not in need:
            need.add(k)
            stack.extend(by[k]["inputs"])
    kept = [n for n in nodes if n["name"] in need]
    if kept[-1]["name"] != out:
        raise _unsupported("output that is not the last operation")
    return kept


def _replace_input(nodes: list[dict[str, Any]], old: str, new: str) -> None:
    for n in nodes:
        n["inputs"] = [new if i == old else i for i in n["inputs"]]


def _fold_bn(nodes: list[dict[str, Any]], params: dict[str, np.ndarray],
             bn_of: dict[str, tnn.Module]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    users = _users(nodes)
    by = {n["name"]: n for n in nodes}
    out = []
    for n in nodes:
        if n["op"] != "bn":
            out.append(n)
            continue
        prev = by[n["inputs"][0]]
        if prev["op"] not in LAYER_OPS or len(users[prev["name"]]) != 1 or prev.get("relu"):
            raise _unsupported(f"BatchNorm {n['name']} not directly after a conv/linear")
        bn = bn_of[n["name"]]
        gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(bn.num_features)
        beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(bn.num_features)
        mean = bn.running_mean.double().numpy()
        var = bn.running_var.double().numpy()
        k = gamma / np.sqrt(var + bn.eps)
        w = params[f"{prev['name']}.weight"]
        params[f"{prev['name']}.weight"] = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
        params[f"{prev['name']}.bias"] = (params[f"{prev['name']}.bias"] - mean) * k + beta
        _replace_input(nodes, n["name"], prev["name"])
    return out, params


def _fuse_relu(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    users = _users(nodes)
    by = {n["name"]: n for n in nodes}
    out = []
    for n in nodes:
        if n["op"] == "relu":
            prev = by[n["inputs"][0]]
            if prev["op"] in ("conv", "linear", "add") and len(users[prev["name"]]) == 1:
                prev["relu"] = True
                _replace_input(nodes, n["name"], prev["name"])
                continue
            if prev["op"] == "relu" or (prev["op"] in ("conv", "linear", "add") and prev.get("relu")):
                _replace_input(nodes, n["name"], prev["name"])  # relu of relu
                continue
        out.append(n)
    return out


def check(g: Graph, where: str = "model") -> None:
    """Validate the whole graph (ops, attributes, tensor shapes, finite weights): see
    :mod:`nn.graph_check`, whose op table is the one place to extend for a new op."""
    from nn.graph_check import check_graph

    check_graph(g, where)
