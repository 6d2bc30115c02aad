"""NSGA-II design-space exploration: one multiplier per approximable layer.

Genes: one integer per conv/dense layer, an index into the multiplier set. Objectives (all
minimised; choose any subset in the flow file):

* ``area``  -> ``area_um2``: MAC-weighted multiplier area (see :mod:`flows.costmodel`)
* ``power`` -> ``power_mw``: MAC-weighted multiplier power
* ``accuracy`` -> ``acc_loss``: QNN accuracy minus AxNN accuracy on a fixed validation subset,
  in percentage points
* ``robustness`` -> ``vulnerability``: 100 - robust accuracy (%) on a fixed probe set of
  validation images the QNN classifies correctly, under a seeded black-box attack run against
  the AxNN itself (an image the AxNN already gets wrong counts as not robust)

Constraint: ``max_acc_loss`` (percentage points). Every evaluation goes through
:class:`flows.evalstore.EvalStore`, so a killed run resumes where it stopped and replays the
same seeded search to the same Pareto front. A rerun into the same folder must ask for the same
search (:mod:`flows.dse_identity`, ``OUT/dse_run.json``), and the folder's outputs list only the
designs its own search visited, never other rows of a shared store.
Designs are evaluated by :mod:`flows.dse_executors`, in a local process pool or on a Dask cluster.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flows.dse_executors import DaskExecutor, LocalExecutor, probe_scheduler
from hwsim.errors import AxlabError

# initial population: random designs, or first every multiplier alone in every layer (as many
# as pop_size holds, in the multipliers' order), then random designs. On a deep network the
# random start can hold no design within max_acc_loss: one unusable multiplier in any of ~26
# layers ruins it (4 of the 13 mul8s do on CIFAR-10), while the uniform designs span the range.
INITS = ("random", "uniform")
OBJECTIVES = {"area": "area_um2", "power": "power_mw", "accuracy": "acc_loss", "robustness": "vulnerability"}
DEFAULTS: dict[str, Any] = {
    "objectives": ["area", "accuracy", "robustness"], "max_acc_loss": None, "val_images": 300,
    "probe_images": 16, "attack": "square", "attack_params": {"n_queries": 100, "eps": 16 / 255}, "pop_size": 16,
    "generations": 6, "seed": 0, "backend": "numba", "executor": "local", "workers": None, "init": "random",
    "scheduler": None, "data_seed": 0,
    # synthesis-backed hardware cost of the final front (flows.hwcost); not part of the search
    "hw_cost": "model", "hw_target": "ecp5-85k", "hw_lanes": 1, "hw_dsp": "never",
}


# ----------------------------------------------------------------------------- the search
@dataclass
class DseResult:
    out_dir: Path
    pareto: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    history: list[dict[str, Any]]
    computed: int
    hw: dict[str, Any] | None = None   # flows.hwcost.synth_front's result with hw_cost: synth


def expand_multipliers(spec: Any) -> list[str]:
    """Multiplier set from the flow file: a list of specs, 'builtin', or a folder of netlists."""
    from hwsim.builtin import builtin_names
    from hwsim.netlist import discover

    items = spec if isinstance(spec, list) else [spec]
    out: list[str] = []
    for item in items:
        if item == "builtin":
            out += builtin_names()
        elif Path(str(item)).is_dir():
            out += [str(p) for p in discover([item])]
        else:
            out.append(str(item))
    if len(out) < 2:
        raise AxlabError(f"the DSE needs at least 2 multipliers, got {out}")
    return out


def check_dse_config(cfg: dict[str, Any]) -> None:
    """Ranges and names of a DSE configuration (CLI or flow file) before anything runs;
    one AxlabError line naming the key and the allowed range."""
    from attacks.params import resolve_params

    def whole(key: str, lo: int) -> None:
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise AxlabError(f"DSE {key}: must be an integer >= {lo}, got {v!r}")

    objs = cfg["objectives"]
    unknown = [o for o in objs if o not in OBJECTIVES] if isinstance(objs, (list, tuple)) else objs
    if unknown or not objs:
        raise AxlabError(f"unknown DSE objective(s) {unknown or '(none)'}; choose from {', '.join(OBJECTIVES)}")
    if len(set(objs)) != len(objs):
        raise AxlabError(f"DSE objectives: {', '.join(objs)} repeats an objective")
    whole("pop_size", 2)
    whole("generations", 1)
    whole("val_images", 1)
    whole("probe_images", 1 if "robustness" in objs else 0)
    whole("seed", 0)
    whole("data_seed", 0)
    if cfg["workers"] is not None:
        whole("workers", 1)
    loss = cfg["max_acc_loss"]
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))
                             or not np.isfinite(loss) or not 0 <= loss <= 100):
        raise AxlabError(f"DSE max_acc_loss: must be a finite number of percentage points in [0, 100], got {loss!r}")
    if cfg["init"] not in INITS:
        raise AxlabError(f"DSE init: must be {' or '.join(INITS)}, got {cfg['init']!r}")
    if cfg["backend"] not in ("torch", "numba", "cuda"):
        raise AxlabError(f"DSE backend: must be torch, numba or cuda, got {cfg['backend']!r}")
    if cfg["executor"] not in ("local", "dask"):
        raise AxlabError(f"unknown executor {cfg['executor']!r} (local or dask)")
    if cfg["executor"] == "dask" and cfg["scheduler"] is None:
        raise AxlabError("--executor dask needs --scheduler ADDRESS")
    if cfg["executor"] != "dask" and cfg["scheduler"] is not None:
        raise AxlabError(f"--scheduler {cfg['scheduler']}: only used with --executor dask")
    if "robustness" in objs:
        resolve_params(cfg["attack"], cfg["attack_params"])
    from flows.hwcost import check_hw_config

    check_hw_config(cfg)


def _dominance_front(F: np.ndarray) -> np.ndarray:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return NonDominatedSorting().do(F, only_non_dominated_front=True)


def run_dse(cfg: dict[str, Any], out_dir: str | Path, progress: bool = True) -> DseResult:
    """Run (or resume) NSGA-II over per-layer multiplier choices; write the run folder.

    One process at a time writes a DSE folder, and an evaluation store given as ``store``: a
    second one is refused at once (lock files ``OUT/.dse.lock`` and ``STORE.lock``)."""
    from hwsim.fileio import exclusive
    from hwsim.store import resolve
    from nn.api import load_model

    cfg = {**DEFAULTS, **cfg}
    check_dse_config(cfg)
    if cfg["executor"] == "dask" and isinstance(cfg["scheduler"], str):
        probe_scheduler(cfg["scheduler"])
    out_dir = Path(out_dir)
    bundle = load_model(cfg["model"])
    mults = expand_multipliers(cfg["multipliers"])
    luts = [resolve(m) for m in mults]  # build every LUT here, before any worker starts
    # the folder is made by its lock, only once the inputs are known to be good; a new folder
    # that is still empty when the run is refused (e.g. a damaged --store) is removed again
    with contextlib.ExitStack() as locks:      # one writer per DSE folder and per evaluation store
        locks.enter_context(exclusive(out_dir / ".dse.lock", f"DSE folder {out_dir}"))
        if cfg.get("store"):
            locks.enter_context(exclusive(f"{cfg['store']}.lock", f"DSE evaluation store {cfg['store']}"))
        result = _search(cfg, out_dir, bundle, mults, luts, progress)
        if cfg["hw_cost"] == "synth":  # the final front through synthesis and place and route
            from flows.hwcost import synth_front

            result.hw = synth_front(cfg, out_dir, result.pareto, progress)
        return result


def _search(cfg: dict[str, Any], out_dir: Path, bundle: Any, mults: list[str], luts: list[Any],
            progress: bool) -> DseResult:
    """:func:`run_dse` once its inputs are checked and its folder (and store) locked."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.problems.static import StaticProblem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from tqdm import tqdm

    from flows.dse_identity import claim_folder, folder_identity
    from flows.evalstore import EvalStore, context_key, eval_key

    layers = bundle.layers()
    ctx = {"model": str(Path(cfg["model"]).resolve()), "model_sha256": bundle.sha256, "dataset": cfg["dataset"],
           "multipliers": mults, "lut_sha256": [lut.sha256 for lut in luts], "objectives": sorted(cfg["objectives"]),
           "val_images": int(cfg["val_images"]), "probe_images": int(cfg["probe_images"]),
           "attack": cfg["attack"], "attack_params": cfg["attack_params"], "seed": int(cfg["seed"]),
           "data_seed": int(cfg["data_seed"]), "backend": cfg["backend"]}
    # the key leaves out where files live: the same model and LUTs elsewhere hit the same rows
    ckey = context_key({k: v for k, v in ctx.items() if k not in ("model", "multipliers")}
                       | {"multipliers": [lut.name for lut in luts]})
    # a rerun into this folder must ask for the same search (refused before any evaluation)
    store_path = Path(cfg.get("store") or out_dir / "evals.sqlite")
    if store_path.exists():      # a damaged or foreign store is refused before the folder is claimed
        EvalStore(store_path).close()
    claim_folder(out_dir, folder_identity(cfg, bundle.sha256, luts), cfg)
    store = EvalStore(store_path)
    objs = [OBJECTIVES[o] for o in cfg["objectives"]]
    max_loss = cfg["max_acc_loss"]
    problem = Problem(n_var=len(layers), n_obj=len(objs), n_ieq_constr=1 if max_loss is not None else 0,
                      xl=0, xu=len(mults) - 1, vtype=int)
    algo = NSGA2(pop_size=int(cfg["pop_size"]), sampling=_initial(cfg, len(layers), len(mults)),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algo.setup(problem, termination=("n_gen", int(cfg["generations"])), seed=int(cfg["seed"]), verbose=False)
    if cfg["executor"] == "dask":
        executor: Any = DaskExecutor(cfg["scheduler"])
    elif cfg["executor"] == "local":
        executor = LocalExecutor(int(cfg["workers"] or 1))
    else:
        raise AxlabError(f"unknown executor {cfg['executor']!r} (local or dask)")
    computed = 0
    history: list[dict[str, Any]] = []
    # designs this search asked for, in first-asked order (the same on a resumed, replayed run):
    # the outputs list only these, never other rows of the context in a shared store
    visited: dict[tuple[int, ...], None] = {}

    def seen_rows() -> list[tuple[list[int], dict[str, Any]]]:
        return [(list(g), store.get(eval_key(ckey, g))) for g in visited]

    try:
        gen = 0
        while algo.has_next():
            pop = algo.ask()
            if pop is None or not len(pop):   # pymoo found no new (non-duplicate) design: stop early
                break
            X = np.rint(pop.get("X")).astype(int)
            genes = [tuple(map(int, x)) for x in X]
            visited.update(dict.fromkeys(genes))
            todo = sorted({g for g in genes if store.get(eval_key(ckey, g)) is None})
            bar = tqdm(total=len(genes), desc=f"DSE generation {gen + 1}/{cfg['generations']}",
                       disable=not progress, unit="design", leave=False)
            bar.update(len(genes) - sum(1 for g in genes if g in set(todo)))
            for g, (res, secs) in executor.map_unordered(ctx, [list(g) for g in todo]):
                store.put(eval_key(ckey, g), ckey, list(g), res, secs)
                computed += 1
                bar.update(sum(1 for x in genes if x == tuple(g)))
            bar.close()
            results = [store.get(eval_key(ckey, g)) for g in genes]
            F = np.array([[r[o] for o in objs] for r in results], dtype=float)
            kwargs = {"F": F}
            if max_loss is not None:
                kwargs["G"] = np.array([[r["acc_loss"] - max_loss] for r in results])
            Evaluator().eval(StaticProblem(problem, **kwargs), pop)
            algo.tell(infills=pop)
            gen += 1
            history.append({"generation": gen, "evaluated": len(visited),
                            "hypervolume": _hypervolume(seen_rows(), objs, luts, max_loss)})
    finally:
        executor.close()
    rows = seen_rows()
    keys = {eval_key(ckey, g) for g in visited}
    counts = {k: c for k, c in store.computations(ckey).items() if k in keys}
    store.close()
    result = _write_outputs(out_dir, cfg, bundle, mults, layers, rows, objs, max_loss, history, counts)
    result.computed = computed
    return result


def _initial(cfg: dict[str, Any], n_layers: int, n_mults: int) -> Any:
    """NSGA-II's initial population (``cfg['init']``): pymoo's seeded random sampling, or an
    array (pop_size, n_layers) of multiplier indices starting with the uniform designs."""
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    if cfg["init"] == "random":
        return IntegerRandomSampling()
    pop = int(cfg["pop_size"])
    uniform = np.repeat(np.arange(min(pop, n_mults))[:, None], n_layers, axis=1)
    rest = np.random.default_rng(int(cfg["seed"])).integers(0, n_mults, size=(pop - len(uniform), n_layers))
    return np.vstack([uniform, rest])


def _feasible(rows, max_loss):
    return [(g, r) for g, r in rows if max_loss is None or r["acc_loss"] <= max_loss]


def _hypervolume(rows, objs, luts, max_loss) -> float:
    """Hypervolume of the feasible evaluated designs, objectives scaled by fixed bounds
    (largest multiplier area/power, 100 points) with reference point 1.1 in every direction."""
    from pymoo.indicators.hv import HV

    feas = _feasible(rows, max_loss)
    if not feas:
        return 0.0
    bound = {"area_um2": max(lut.meta["cost"]["area_um2"] for lut in luts),
             "power_mw": max(lut.meta["cost"]["power_mw"] for lut in luts),
             "acc_loss": 100.0, "vulnerability": 100.0}
    F = np.array([[r[o] / bound[o] for o in objs] for _, r in feas])
    return float(HV(ref_point=np.full(len(objs), 1.1))(np.clip(F, -1.0, 1.1)))


def _write_outputs(out_dir, cfg, bundle, mults, layers, rows, objs, max_loss, history, counts) -> DseResult:
    import csv

    from nn.api import write_design

    evals = [{"genes": g, **r} for g, r in rows]
    feas = _feasible(rows, max_loss)
    pareto: list[dict[str, Any]] = []
    if feas:
        F = np.array([[r[o] for o in objs] for _, r in feas])
        idx = sorted(set(_dominance_front(F).tolist()), key=lambda i: tuple(F[i]))
        seen = set()
        for i in idx:  # identical objective vectors from different genes: keep each design
            g, r = feas[i]
            if tuple(g) in seen:
                continue
            seen.add(tuple(g))
            pareto.append({"genes": g, **r})
    designs = out_dir / "designs"
    designs.mkdir(exist_ok=True)
    for old in designs.glob("pareto_*.json"):
        old.unlink()
    for k, p in enumerate(pareto):
        path = designs / f"pareto_{k:02d}.json"
        write_design(bundle, [mults[g] for g in p["genes"]], path, name=f"pareto_{k:02d}")
        p["design"] = str(path.relative_to(out_dir))
    cols = ["genes", "multipliers", "area_um2", "power_mw", "accuracy", "acc_loss", "robust_acc", "vulnerability"]
    for name, data in (("evaluations.csv", evals), ("pareto.csv", pareto)):
        with open(out_dir / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols + (["design"] if name == "pareto.csv" else []))
            for e in data:
                w.writerow([" ".join(map(str, e["genes"])), " ".join(e["multipliers"])]
                           + [f"{e[c]:.6g}" if isinstance(e.get(c), float) else e.get(c, "") for c in cols[2:]]
                           + ([e["design"]] if name == "pareto.csv" else []))
    summary = {"objectives": objs, "layers": layers, "multipliers": mults, "max_acc_loss": max_loss,
               "pareto": pareto, "history": history, "n_evaluations": len(evals),
               "max_computations_per_design": max(counts.values()) if counts else 0}
    (out_dir / "pareto.json").write_text(json.dumps(summary, indent=1))
    from flows.plots import hypervolume_plot, pareto_scatter

    pareto_scatter(evals, pareto, objs, out_dir / "pareto_scatter.png")
    hypervolume_plot(history, out_dir / "hypervolume.png")
    return DseResult(out_dir, pareto, evals, history, 0)
