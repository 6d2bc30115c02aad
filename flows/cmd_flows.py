"""``axlab dse``, ``axlab run`` and ``axlab report``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cliargs import finite_float, in_dir, int_range, nonneg_int, out_dir, out_file, positive_int, seed_int
from nn.paths import add_path_option, apply_path_option


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dse", help="NSGA-II design-space exploration over per-layer multipliers")
    d.add_argument("--model", required=True, help="model file (axlab train)")
    d.add_argument("--dataset", default="digits")
    d.add_argument("--multipliers", default="builtin",
                   help="'builtin', a folder of netlists, or comma-separated specs (default builtin)")
    d.add_argument("--objectives", default="area,accuracy,robustness",
                   help="comma-separated subset of area,power,accuracy,robustness")
    d.add_argument("--max-acc-loss", type=finite_float(0, 100), default=None, help="constraint, percentage points")
    d.add_argument("--pop", type=int_range(2), default=16, help="population size")
    d.add_argument("--gens", type=positive_int, default=6, help="generations")
    d.add_argument("--val-images", type=positive_int, default=300)
    d.add_argument("--probe-images", type=nonneg_int, default=12)
    d.add_argument("--attack", default="square", help="fast black-box attack of the robustness objective")
    d.add_argument("--param", nargs="+", default=[], metavar="K=V", help="attack parameters")
    d.add_argument("--backend", default="numba", choices=["torch", "numba", "cuda"])
    add_path_option(d)
    d.add_argument("--seed", type=seed_int, default=0)
    d.add_argument("--executor", default="local", choices=["local", "dask"])
    d.add_argument("--scheduler", default=None, help="Dask scheduler address (with --executor dask)")
    d.add_argument("--workers", type=positive_int, default=2, help="local worker processes")
    d.add_argument("--store", type=out_file, default=None, help="evaluation store (default OUT/evals.sqlite)")
    d.add_argument("--out", type=out_dir, required=True, help="run folder")
    d.add_argument("--hw-cost", default="model", choices=["model", "synth"],
                   help="synth: after the search, export, synthesize and place and route every design of the final "
                        "front on --hw-target (OUT/hw_synth.md: LUTs and Fmax beside the model's area, Spearman rank "
                        "correlation; minutes to an hour per design); model (default): the area model only")
    d.add_argument("--hw-target", default="ecp5-85k", help="FPGA for --hw-cost synth (axlab export --target names)")
    d.add_argument("--hw-lanes", type=int_range(1, 256), default=1, help="lanes of the busiest layer for --hw-cost synth")
    d.add_argument("--hw-dsp", default="never", choices=["auto", "never"], help="DSP blocks for --hw-cost synth")
    d.add_argument("--init", default="random", choices=["random", "uniform"],
                   help="initial population: random designs (default), or first each multiplier in every "
                        "layer, then random (finds designs within --max-acc-loss on deep networks)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_dse)

    r = sub.add_parser("run", help="run a flow file (YAML): LUTs -> train -> DSE -> attacks -> report")
    r.add_argument("flow", help="flow file, e.g. flows/quickstart.yaml")
    r.add_argument("--out", type=out_dir, default=None, help="run folder (default runs/<flow name>)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a flow-file key (dotted path, YAML value), e.g. dse.generations=2; repeatable")
    r.add_argument("--no-progress", action="store_true")
    add_path_option(r)
    r.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md and report.html for a run folder")
    p.add_argument("run_dir", type=in_dir)
    p.add_argument("--title", default=None)
    p.set_defaults(func=cmd_report)


def cmd_dse(args) -> int:
    from attacks.params import parse_kv
    from flows.dse import run_dse

    apply_path_option(args)  # inherited by the DSE worker processes ($AXLAB_NN_PATH)
    mults = args.multipliers if "," not in args.multipliers else args.multipliers.split(",")
    params = parse_kv(args.param) if args.param else None
    cfg = {"model": args.model, "dataset": args.dataset, "multipliers": mults,
           "objectives": args.objectives.split(","), "max_acc_loss": args.max_acc_loss, "pop_size": args.pop,
           "generations": args.gens, "val_images": args.val_images, "probe_images": args.probe_images,
           "attack": args.attack, "backend": args.backend, "seed": args.seed, "executor": args.executor,
           "scheduler": args.scheduler, "workers": args.workers, "store": args.store, "hw_cost": args.hw_cost,
           "hw_target": args.hw_target, "hw_lanes": args.hw_lanes, "hw_dsp": args.hw_dsp, "init": args.init}
    if params is not None:
        cfg["attack_params"] = params
    res = run_dse(cfg, args.out, progress=not args.no_progress)
    print(f"{len(res.evaluations)} designs evaluated ({res.computed} computed now), "
          f"{len(res.pareto)} on the Pareto front -> {Path(args.out) / 'pareto.csv'}")
    for p in res.pareto:
        print("  " + " ".join(p["multipliers"]) + "  " + json.dumps({k: round(p[k], 4) for k in
              ("area_um2", "power_mw", "acc_loss", "vulnerability") if k in p}))
    if res.hw is not None:
        from flows.hwcost import correlation_text

        print(f"{correlation_text(res.hw)} -> {Path(args.out) / 'hw_synth.md'}")
    return 0


def cmd_run(args) -> int:
    from flows.flow import load_flow, make_runner

    apply_path_option(args)  # inherited by every stage the flow runs ($AXLAB_NN_PATH)
    flow = load_flow(args.flow, args.sets)
    out = Path(args.out) if args.out else Path("runs") / flow["name"]
    make_runner(flow, out, progress=not args.no_progress).run()
    print(f"flow {flow['name']} done: {out / 'report.md'}")
    return 0


def cmd_report(args) -> int:
    from flows.report import write_report

    md, page = write_report(args.run_dir, args.title)
    print(f"wrote {md} and {page}")
    return 0
