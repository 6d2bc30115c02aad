"""Resume identity of a flow run folder (``axlab run FLOW --out DIR``).

A flow folder's ``flow_state.json`` lists the finished stages, and a rerun skips them (the
thesis runner also skips every command whose output file exists). A rerun with a changed flow
file or other ``--set`` overrides would therefore mix stages of two experiments, so the state
records the flow's identity (key ``flow``) before the first stage runs, and a rerun that asks for
anything else is refused, naming the first differing key (dotted, e.g. ``dse.generations``) and
both values (:mod:`attacks.resume`). Refusal, not invalidation: which outputs a changed key
makes stale runs across stages (a model feeds the DSE, whose designs feed attacks, transfer,
detection and export), so a partial rerun is not safe to infer.

Identity: the validated flow (defaults filled in, ``--set`` overrides applied) except the keys
of :data:`METADATA`, plus ``inputs``: the sha256 of each user file the flow reads by path
(``train.path``, the multiplier list or folder, ``reference``), so a file changed in place is
caught too. Metadata (may change between reruns): the flow file's own path, ``name``, the
``report`` section (the report is rebuilt on every run), and how work is spread, which does not
change results: ``dse.workers``, ``dse.executor``, ``dse.scheduler``, ``attacks.batch``.
A folder whose state has no identity (written by an older axlab) is refused.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from attacks.resume import HINT, canonical, check_identity
from hwsim.errors import AxlabError

METADATA = ("_path", "name", "report", "dse.workers", "dse.executor", "dse.scheduler", "attacks.batch")
STATE_KEY = "flow"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _input_hashes(flow: dict[str, Any]) -> dict[str, Any]:
    """{path as written in the flow: sha256} of the existing files it names; a folder maps to
    {file name: sha256} of its files. Names (built-in multipliers) are part of the flow itself."""
    named: list[Any] = []
    mults = (flow.get("luts") or {}).get("multipliers") if "luts" in flow else flow.get("multipliers")
    named += mults if isinstance(mults, list) else [mults]
    named += [(flow.get("train") or {}).get("path"), flow.get("reference")]
    out: dict[str, Any] = {}
    for item in named:
        if not isinstance(item, str) or not item:
            continue
        p = Path(item)
        if p.is_file():
            out[item] = _file_sha256(p)
        elif p.is_dir():
            out[item] = {f.name: _file_sha256(f) for f in sorted(p.iterdir()) if f.is_file()}
    return out


def flow_identity(flow: dict[str, Any]) -> dict[str, Any]:
    """The identity of a validated flow (see the module docstring)."""
    ident = {k: v for k, v in flow.items() if k not in METADATA}
    for dotted in METADATA:
        section, _, key = dotted.partition(".")
        if key and isinstance(ident.get(section), dict):
            ident[section] = {k: v for k, v in ident[section].items() if k != key}
    ident["inputs"] = _input_hashes(flow)
    return canonical(ident)


def check_flow_state(out: Path, state: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse a folder whose state records stages of another flow (or of an unknown one)."""
    if not state:
        return
    recorded = state.get(STATE_KEY)
    if not isinstance(recorded, dict):
        raise AxlabError(f"{out / 'flow_state.json'} records finished stages but not the flow that ran them "
                         f"(an older axlab or an edited file), so a rerun cannot be checked; {HINT}")
    check_identity(out, recorded, identity, list(dict.fromkeys([*recorded, *identity])))
