"""Resume identity of a DSE run folder (``OUT/dse_run.json``).

A DSE folder holds the outputs of one search (``pareto.json``, ``pareto.csv``,
``evaluations.csv``, ``designs/``, plots); attack runs and exports of a flow point at its
designs. A rerun of ``axlab dse`` into the same folder resumes only when it asks for the same
search; otherwise it is refused, naming the first differing key and both values
(:mod:`attacks.resume`), before any evaluation and before anything in the folder is written.

Identity (:data:`DSE_IDENTITY_KEYS`): the model by content (``model_sha256``), ``dataset``,
``data_seed``, the multiplier set by name and LUT content (``multipliers``, ``lut_sha256``),
``objectives`` (in the given order: it orders the outputs), ``max_acc_loss``, ``val_images``,
``probe_images``, ``attack``, ``attack_params``, ``seed``, ``pop_size``, ``generations``,
``backend`` and ``init`` (the initial population; a folder written before it existed counts as
``random``). Metadata, recorded on the first run and not compared: paths (model file, multiplier
specs, ``store``), ``executor``, ``workers``, ``scheduler``, ``created`` (UTC): they change where
and how fast evaluations run, not their results.

The evaluation store (:mod:`flows.evalstore`) needs no such check: its rows are keyed by the
evaluation context and the genes, so a store shared by different searches never hands one of
them another's result, and a folder's outputs list only the designs its own search visited.
A folder written by an older axlab (outputs but no ``dse_run.json``) is adopted: its outputs
are rewritten entirely from this search.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from attacks.resume import canonical, check_identity, read_identity
from hwsim.fileio import atomic_write

IDENTITY_FILE = "dse_run.json"
DSE_IDENTITY_KEYS = ("model_sha256", "dataset", "data_seed", "multipliers", "lut_sha256", "objectives",
                     "max_acc_loss", "val_images", "probe_images", "attack", "attack_params", "seed", "pop_size",
                     "generations", "backend", "init")


def folder_identity(cfg: dict[str, Any], model_sha256: str, luts: Sequence[Any]) -> dict[str, Any]:
    """The identity of the search ``cfg`` (defaults filled in) over ``luts`` on the model."""
    loss = cfg["max_acc_loss"]
    return canonical({
        "model_sha256": model_sha256, "dataset": cfg["dataset"], "data_seed": int(cfg["data_seed"]),
        "multipliers": [lut.name for lut in luts], "lut_sha256": [lut.sha256 for lut in luts],
        "objectives": list(cfg["objectives"]), "max_acc_loss": None if loss is None else float(loss),
        "val_images": int(cfg["val_images"]), "probe_images": int(cfg["probe_images"]), "attack": cfg["attack"],
        "attack_params": cfg["attack_params"], "seed": int(cfg["seed"]), "pop_size": int(cfg["pop_size"]),
        "generations": int(cfg["generations"]), "backend": cfg["backend"], "init": cfg["init"]})


def claim_folder(out_dir: Path, identity: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Refuse ``out_dir`` when it records another search; record ``identity`` in a new folder."""
    path = Path(out_dir) / IDENTITY_FILE
    if path.exists():
        # a folder written before the init option existed started from random designs
        recorded = {"init": "random", **read_identity(path, "DSE run identity")}
        check_identity(out_dir, recorded, identity, DSE_IDENTITY_KEYS)
        return
    meta = {"model": str(cfg["model"]), "multiplier_specs": cfg["multipliers"], "store": cfg.get("store"),
            "executor": cfg["executor"], "workers": cfg.get("workers"), "scheduler": cfg.get("scheduler"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write(path, json.dumps({**meta, **identity}, indent=1, sort_keys=True, default=str) + "\n")
