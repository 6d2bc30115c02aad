"""Networks of a thesis flow (:mod:`flows.thesis_flow`): what each ``networks:`` item means.

Two forms of item:

``minnet`` / ``{model: minnet, epochs: 12}``
    an architecture the flow trains itself (``train`` stage) on the flow's dataset; its files
    are named after the architecture.
``{name: r8, path: MODEL, study: ResNet8, dataset: SPEC, params: {ATTACK.PARAM: v}}``
    a model the flow does not train: ``zoo:NAME`` (the repository's model zoo), an axlab model
    file or an int8 ``.tflite`` file. ``name`` names its output files; ``study`` is the row of
    the reference study it stands beside (MinNet, ResNet8 or ResNet24); ``dataset`` overrides
    the flow's dataset for this network; ``params`` override ``attacks.params`` for it (the
    study ran One-Pixel with a different population per network).

An imported int8 TFLite network has no float twin: it has no FpNN, and the white-box attacks and
N-Pixels (which need the float surrogate) are skipped on it with a note.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError

ARCHS = ("minnet", "resnet8", "resnet24")
STUDY_NETS = ("MinNet", "ResNet8", "ResNet24")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ITEM_KEYS = ("model", "epochs", "name", "path", "study", "dataset", "params")
# attacks that need the float network (gradients, or N-Pixels' feature maps)
NEEDS_FLOAT = ("fgsm", "bim", "pgd", "mifgsm", "cw", "deepfool", "npixels")


def check_item(item: Any, where: str, at: str) -> dict[str, Any]:
    """One ``networks`` item as a dict with every key (raises one line naming ``at``)."""
    d = {"model": item} if isinstance(item, str) else item
    if not isinstance(d, dict):
        raise AxlabError(f"{where}: {at}: expected an architecture name or a mapping, got {item!r}")
    extra = sorted(set(d) - set(ITEM_KEYS), key=str)
    if extra:
        raise AxlabError(f"{where}: {at}: unknown key {extra[0]!r} (allowed: {', '.join(ITEM_KEYS)})")
    if d.get("path") is None:
        if d.get("model") not in ARCHS:
            raise AxlabError(f"{where}: {at}: needs model: {', '.join(ARCHS)} (or path: MODEL), got {item!r}")
        ep = d.get("epochs", 10)
        if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
            raise AxlabError(f"{where}: {at}.epochs: must be an integer >= 1, got {ep!r}")
    else:
        if not isinstance(d["path"], str) or not d["path"].strip():
            raise AxlabError(f"{where}: {at}.path: expected zoo:NAME or a model file, got {d['path']!r}")
        if "epochs" in d or "model" in d:
            raise AxlabError(f"{where}: {at}: a network given by path is not trained by the flow "
                             f"(leave out model and epochs)")
        if not d["path"].startswith("zoo:") and not Path(d["path"]).is_file():
            raise AxlabError(f"{where}: {at}.path: model file {d['path']} not found")
    name = d.get("name", d.get("model"))
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AxlabError(f"{where}: {at}.name: must be letters, digits and ._- (it names the output "
                         f"files), got {name!r}")
    if d.get("study") is not None and d["study"] not in STUDY_NETS:
        raise AxlabError(f"{where}: {at}.study: must be one of {', '.join(STUDY_NETS)}, got {d['study']!r}")
    if d.get("dataset") is not None and (not isinstance(d["dataset"], str) or not d["dataset"].strip()):
        raise AxlabError(f"{where}: {at}.dataset: expected a dataset spec, got {d['dataset']!r}")
    params = d.get("params") or {}
    if not isinstance(params, dict):
        raise AxlabError(f"{where}: {at}.params: expected a mapping ATTACK.PARAM: value, got {params!r}")
    from flows.flow_rules import _attack_params_by_name

    _attack_params_by_name(params, where, f"{at}.params")
    study = d.get("study") or {"minnet": "MinNet", "resnet8": "ResNet8", "resnet24": "ResNet24"}.get(d.get("model"))
    return {"name": name, "model": d.get("model"), "epochs": int(d.get("epochs", 10)) if d.get("model") else None,
            "path": d.get("path"), "study": study, "dataset": d.get("dataset"), "params": params}


def check_networks(v: Any, where: str, key: str = "networks") -> list[dict[str, Any]]:
    """Every item checked, names unique, at least one."""
    if not isinstance(v, list) or not v:
        raise AxlabError(f"{where}: {key}: at least one network is needed")
    nets = [check_item(item, where, f"{key}[{i}]") for i, item in enumerate(v)]
    names = [n["name"] for n in nets]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise AxlabError(f"{where}: {key}[{i}].name: {n!r} is used twice (give each network its own name)")
    return nets


def slug(label: str) -> str:
    """A file-name stem for a run label (``OP1%`` -> ``OP1pct``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label.replace("%", "pct"))


def has_float(path: str) -> bool:
    """Whether the model at ``path`` has a float network (an imported TFLite model has none)."""
    from nn.bundle import load_model
    from nn.graph_check import is_tflite_graph

    return not is_tflite_graph(load_model(path).graph.nodes)


def resolve_path(path: str) -> str:
    """``zoo:NAME`` -> the verified zoo file (refused while the zoo model is still training)."""
    if path.startswith("zoo:"):
        from nn.zoo import resolve

        return str(resolve(path))
    return path
