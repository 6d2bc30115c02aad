"""The model zoo: trained model files kept in the repository's ``zoo/`` folder, named in
``zoo/index.json``, loadable anywhere a model file is accepted as ``zoo:NAME``.

Index format (``{"models": [...]}``), one object per entry:

* ``name`` (``[a-z0-9][a-z0-9._-]*``), ``arch``, ``dataset``;
* ``status``: ``trained`` (then ``file``, a name inside ``zoo/``, and its ``sha256`` are
  required; the file is checked against it on every load) or ``training`` (no model file yet;
  ``checkpoint`` names the resumable training state);
* ``command``: the exact ``axlab train`` command that trains it (run from the repository root);
* ``accuracy``: optional ``{figure: fraction}``, e.g. ``q_cifar10_exact_test``.

``$AXLAB_ZOO`` points at another zoo folder (tests).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
STATUSES = ("trained", "training")


def zoo_dir() -> Path:
    return Path(os.environ.get("AXLAB_ZOO", Path(__file__).resolve().parents[1] / "zoo"))


def read_index(folder: Path | None = None) -> list[dict[str, Any]]:
    """The validated entries of ``zoo/index.json`` (empty when there is no index)."""
    folder = folder or zoo_dir()
    f = folder / "index.json"
    if not f.exists():
        return []
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise AxlabError(f"{f}: not a readable JSON zoo index ({exc})") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise AxlabError(f"{f}: expected an object with a 'models' list")
    seen: set[str] = set()
    for i, e in enumerate(models):
        where = f"{f}: models[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not NAME_RE.match(e["name"]):
            raise AxlabError(f"{where}: needs a 'name' matching {NAME_RE.pattern}")
        if e["name"] in seen:
            raise AxlabError(f"{where}: duplicate name {e['name']!r}")
        seen.add(e["name"])
        if e.get("status") not in STATUSES:
            raise AxlabError(f"{where} ({e['name']}): 'status' must be one of {', '.join(STATUSES)}")
        if not isinstance(e.get("command"), str):
            raise AxlabError(f"{where} ({e['name']}): needs the 'command' that trains it")
        if e["status"] == "trained":
            file = e.get("file")
            if not isinstance(file, str) or not NAME_RE.match(file):
                raise AxlabError(f"{where} ({e['name']}): 'file' must be a plain file name inside {folder}")
            if not isinstance(e.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
                raise AxlabError(f"{where} ({e['name']}): 'sha256' must be 64 lower-case hex digits")
        acc = e.get("accuracy", {})
        if not isinstance(acc, dict) or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in acc.values()):
            raise AxlabError(f"{where} ({e['name']}): 'accuracy' must map names to fractions in [0, 1]")
    return models


def resolve(spec: str) -> Path:
    """``zoo:NAME`` -> the verified model file path (sha256 checked against the index)."""
    name = spec[4:] if spec.startswith("zoo:") else spec
    folder = zoo_dir()
    entries = {e["name"]: e for e in read_index(folder)}
    if name not in entries:
        known = ", ".join(n for n, e in entries.items() if e["status"] == "trained") or "none trained yet"
        raise AxlabError(f"zoo:{name}: no such zoo model (trained: {known}; see `axlab zoo list`)")
    e = entries[name]
    if e["status"] != "trained":
        raise AxlabError(f"zoo:{name}: still training, no model file yet (resume with: {e['command']} --resume)")
    path = folder / e["file"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise AxlabError(f"zoo:{name}: cannot read {path}: {exc.strerror or exc}") from None
    if digest != e["sha256"]:
        raise AxlabError(f"zoo:{name}: {path} has sha256 {digest[:16]}..., the index says {e['sha256'][:16]}... "
                         "(file changed or index stale)")
    return path


def model_file(spec: str | Path) -> Path:
    """The file a ``--model`` value names: ``zoo:NAME`` resolved (sha256 checked), else the path."""
    if isinstance(spec, str) and spec.startswith("zoo:"):
        return resolve(spec)
    return Path(spec)


def format_list(entries: list[dict[str, Any]]) -> str:
    """A plain-text table of the entries (``axlab zoo list``)."""
    if not entries:
        return "no zoo models (zoo/index.json is empty or absent)"
    lines = []
    for e in entries:
        acc = ", ".join(f"{k} {v:.4f}" for k, v in sorted(e.get("accuracy", {}).items())) or "-"
        state = f"sha256 {e['sha256'][:16]}" if e["status"] == "trained" else "training in progress"
        lines.append(f"zoo:{e['name']}  {e.get('arch', '?')} on {e.get('dataset', '?')}  [{state}]  accuracy: {acc}")
        lines.append(f"    command: {e['command']}")
    return "\n".join(lines)


def write_index(entries: list[dict[str, Any]], folder: Path | None = None) -> Path:
    from hwsim.fileio import atomic_write

    folder = folder or zoo_dir()
    return atomic_write(folder / "index.json", json.dumps({"models": entries}, indent=1) + "\n")


def add_entry(name: str, file: str | Path, command: str | None = None, evals: dict[str, str] | None = None,
              backend: str = "numba") -> dict[str, Any]:
    """Record a trained model file (inside the zoo folder) as ``zoo:NAME``: its sha256, the command
    (default: the command of an existing ``training`` entry of that name) and the float and QNN
    test accuracy on each ``evals`` label -> dataset spec (keys ``fp_<label>``, ``q_<label>``).
    Replaces an entry of the same name; returns the new entry."""
    from nn.api import load_implementation
    from nn.bundle import load_model
    from nn.data import load_dataset

    folder = zoo_dir()
    if not NAME_RE.match(name):
        raise AxlabError(f"zoo name {name!r} must match {NAME_RE.pattern}")
    path = Path(file)
    if path.resolve().parent != folder.resolve():
        raise AxlabError(f"{path}: a zoo model file must lie directly in {folder}")
    entries = read_index(folder)
    old = next((e for e in entries if e["name"] == name), None)
    command = command or (old or {}).get("command")
    if not command:
        raise AxlabError(f"zoo:{name}: give the command that trained it (--command)")
    bundle = load_model(path)
    acc: dict[str, float] = {}
    for label, spec in (evals or {}).items():
        if not re.fullmatch(r"[a-z0-9_]+", label):
            raise AxlabError(f"evaluation label {label!r} must be lower-case letters, digits, underscores")
        x, y = load_dataset(spec, "test")
        for impl in ("fp", "q"):
            pred = load_implementation(bundle, impl, backend=backend).logits(x).argmax(1)
            acc[f"{impl}_{label}"] = round(float((pred == y).mean()), 6)
    entry = {"name": name, "arch": bundle.arch, "dataset": bundle.dataset, "status": "trained", "file": path.name,
             "sha256": bundle.sha256, "command": command, "accuracy": acc,
             "evaluated_on": {k: v for k, v in (evals or {}).items()}}
    entries = [entry if e["name"] == name else e for e in entries] if old else entries + [entry]
    write_index(entries, folder)
    return entry
