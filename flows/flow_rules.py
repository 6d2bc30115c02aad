"""Value rules of flow files (:mod:`flows.flow`): per-key checks of what a file gives and the
cross-stage rules of a pipeline flow. Each rule raises one AxlabError line naming the file
and the dotted key, e.g. ``f.yaml: dse.pop_size: must be an integer >= 2, got 0``."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from flows.export.devices import DEVICES
from hwsim.errors import AxlabError


# dotted key -> check(value, where, key) for values the file gives (defaults are trusted);
# the same keys in a thesis flow get the same rules.
def _int_at_least(lo: int):
    def check(v: Any, where: str, key: str) -> None:
        if v < lo:
            raise AxlabError(f"{where}: {key}: must be an integer >= {lo}, got {v}")
    return check


def _percent(v: Any, where: str, key: str) -> None:
    if not math.isfinite(v) or not 0 <= v <= 100:
        raise AxlabError(f"{where}: {key}: must be a finite number of percentage points in [0, 100], got {v}")


def _choice(*allowed: str):
    def check(v: Any, where: str, key: str) -> None:
        if v not in allowed:
            raise AxlabError(f"{where}: {key}: must be one of {', '.join(allowed)}, got {v!r}")
    return check


def _flow_name(v: Any, where: str, key: str) -> None:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", v):
        raise AxlabError(f"{where}: {key}: must be a folder name of letters, digits and ._- (it names runs/<name>), "
                         f"got {v!r}")


def _nonempty(v: Any, where: str, key: str) -> None:
    if not v.strip():
        raise AxlabError(f"{where}: {key}: must not be empty")


def _names(v: Any, where: str, key: str) -> None:
    """A name or path, or a non-empty list of them (no null, number or empty item)."""
    items = v if isinstance(v, list) else [v]
    if not items:
        raise AxlabError(f"{where}: {key}: must not be an empty list")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise AxlabError(f"{where}: {key}[{i}]: expected a multiplier name or path (string), got {item!r}")


def _attack_name(v: Any, where: str, key: str) -> None:
    from attacks.params import ATTACK_NAMES

    if not isinstance(v, str) or v.lower() not in ATTACK_NAMES:
        raise AxlabError(f"{where}: {key}: unknown attack {v!r} (known: {', '.join(ATTACK_NAMES)})")


def _attack_list(v: Any, where: str, key: str) -> None:
    """Attack names, or mappings ``{attack: NAME, n: N, <param>: value...}`` (parameters checked)."""
    from attacks.params import resolve_params

    if not v:
        raise AxlabError(f"{where}: {key}: must not be an empty list")
    for i, item in enumerate(v):
        at = f"{key}[{i}]"
        if isinstance(item, dict):
            _attack_name(item.get("attack"), where, f"{at}.attack")
            params = {k: p for k, p in item.items() if k not in ("attack", "n")}
            if "n" in item and (not isinstance(item["n"], int) or isinstance(item["n"], bool) or item["n"] < 1):
                raise AxlabError(f"{where}: {at}.n: must be an integer >= 1, got {item['n']!r}")
            try:
                resolve_params(item["attack"], params)
            except AxlabError as exc:
                raise AxlabError(f"{where}: {at}: {exc}") from None
        else:
            _attack_name(item, where, at)


def _attack_names(v: Any, where: str, key: str) -> None:
    for i, item in enumerate(v):
        _attack_name(item, where, f"{key}[{i}]")


def _objectives(v: Any, where: str, key: str) -> None:
    from flows.dse import OBJECTIVES

    if not v or len(set(map(str, v))) != len(v):
        raise AxlabError(f"{where}: {key}: must be a non-empty list without repeats, got {v!r}")
    for i, item in enumerate(v):
        if item not in OBJECTIVES:
            raise AxlabError(f"{where}: {key}[{i}]: unknown objective {item!r} (known: {', '.join(OBJECTIVES)})")


def _networks(v: Any, where: str, key: str) -> None:
    """Thesis networks: ``minnet``, ``{model: minnet, epochs: N}`` or ``{name: N, path: MODEL, ...}``
    items, at least one (:mod:`flows.thesis_networks`)."""
    from flows.thesis_networks import check_networks

    check_networks(v, where, key)


def _attack_params_by_name(v: Any, where: str, key: str) -> None:
    """Thesis ``attacks.params``: ``{ATTACK.PARAM: value}``, each attack and parameter known
    and in range (values are checked per attack, all of its parameters together)."""
    from attacks.params import resolve_params

    by: dict[str, dict[str, Any]] = {}
    for k, value in v.items():
        attack, dot, param = str(k).partition(".")
        if not dot or not param:
            raise AxlabError(f"{where}: {key}: key {k!r} must be ATTACK.PARAM, e.g. pgd.eps")
        _attack_name(attack, where, f"{key}.{k}")
        by.setdefault(attack, {})[param] = value
    for attack, given in by.items():
        try:
            resolve_params(attack, given)
        except AxlabError as exc:
            raise AxlabError(f"{where}: {key}: {attack}: {exc}") from None


RULES: dict[str, Any] = {
    "name": _flow_name, "seed": _int_at_least(0), "dataset": _nonempty,
    "backend": _choice("torch", "numba", "cuda"),
    "multipliers": _names, "luts.multipliers": _names, "networks": _networks,
    "train.epochs": _int_at_least(1), "train.path": _nonempty,
    "eval.images": _int_at_least(0),
    "dse.objectives": _objectives, "dse.max_acc_loss": _percent, "dse.pop_size": _int_at_least(2),
    "dse.generations": _int_at_least(1), "dse.val_images": _int_at_least(1), "dse.probe_images": _int_at_least(0),
    "dse.attack": _attack_name, "dse.workers": _int_at_least(1), "dse.executor": _choice("local", "dask"),
    "dse.init": _choice("random", "uniform"),
    "dse.scheduler": _nonempty, "dse.hw_cost": _choice("model", "synth"), "dse.hw_target": _choice(*DEVICES),
    "dse.hw_lanes": _int_at_least(1), "dse.hw_dsp": _choice("auto", "never"),
    "attacks.designs": _int_at_least(0), "attacks.n": _int_at_least(1), "attacks.batch": _int_at_least(1),
    "attacks.list": _attack_list, "attacks.ax": _names, "attacks.params": _attack_params_by_name,
    "transfer.attack": _attack_name, "transfer.attacks": _attack_names, "cross.attack": _attack_name,
    "detect.attack": _attack_name, "detect.attacks": _attack_names, "detect.n_clean": _int_at_least(2),
    "export.images": _int_at_least(1), "export.max_acc_loss": _percent,
}


def check_pipeline(flow: dict[str, Any], where: str) -> None:
    """Cross-key rules of a pipeline flow: every enabled stage has what it needs from the
    others (a stage switched off with ``false`` must not be needed by an enabled one)."""
    on = {s for s in ("luts", "train", "eval", "dse", "attacks", "transfer", "detect", "export") if flow.get(s)}
    need = {"luts": [s for s in ("dse",) if s in on] + (["eval"] if "eval" in on and flow["eval"]["multipliers"] else []),
            "dse": [s for s in ("export",) if s in on] + (["attacks"] if "attacks" in on and flow["attacks"]["designs"] else []),
            "attacks": [s for s in ("transfer", "detect") if s in on]}
    hint = {"luts": "switch the stage on",
            "dse": "switch the stage on (or set attacks.designs: 0 and export: false)",
            "attacks": "switch the stage on (or set transfer: false and detect: false)"}
    for stage, users in need.items():
        if stage not in on and users:
            raise AxlabError(f"{where}: {stage}: switched off, but {' and '.join(users)} need{'s' if len(users) == 1 else ''} "
                             f"it; {hint[stage]}")
    if "train" not in on and on & {"eval", "dse", "attacks", "transfer", "detect", "export"}:
        raise AxlabError(f"{where}: train: switched off, but the other stages need a model; to skip training give "
                         "train: {path: MODEL_FILE} instead")
    path = (flow.get("train") or {}).get("path")
    if path and not path.startswith("zoo:") and not Path(path).is_file():
        raise AxlabError(f"{where}: train.path: model file {path} not found (or give zoo:NAME)")
    if "dse" in on:
        from attacks.params import resolve_params

        if flow["dse"]["executor"] == "dask" and not flow["dse"]["scheduler"]:
            raise AxlabError(f"{where}: dse.scheduler: needed with dse.executor: dask (a tcp://HOST:PORT address)")
        if flow["dse"]["executor"] != "dask" and flow["dse"]["scheduler"]:
            raise AxlabError(f"{where}: dse.scheduler: only used with dse.executor: dask")
        try:
            resolve_params(flow["dse"]["attack"], flow["dse"]["attack_params"])
        except AxlabError as exc:
            raise AxlabError(f"{where}: dse.attack_params: {exc}") from None
    if "attacks" in on:
        names = {(i["attack"] if isinstance(i, dict) else i).lower() for i in flow["attacks"]["list"]}
        for stage in ("transfer", "detect"):
            if stage in on and flow[stage]["attack"].lower() not in names:
                raise AxlabError(f"{where}: {stage}.attack: {flow[stage]['attack']!r} is not run by the attacks stage "
                                 f"(attacks.list: {', '.join(sorted(names))})")
        if any(not isinstance(i, dict) for i in flow["attacks"]["list"]):
            raise AxlabError(f"{where}: attacks.list: pipeline items are mappings like {{attack: pgd, eps: 0.03}}")
