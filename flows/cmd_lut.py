"""``axlab lut``: list, build, verify and fetch multiplier netlists and their LUTs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.cliargs import int_range, out_dir, positive_int, safe_name, seed_int

SIM_CHOICES = ["verilator", "icarus", "gates"]


def register(sub: argparse._SubParsersAction) -> None:
    lut = sub.add_parser("lut", help="multiplier netlists -> RTL-verified lookup tables")
    lsub = lut.add_subparsers(dest="lut_command", metavar="ACTION")

    def common(p: argparse.ArgumentParser, paths_required: bool) -> None:
        p.add_argument("paths", nargs="+" if paths_required else "*", metavar="PATH",
                       help="netlist files or folders searched recursively for *.v/*.sv")
        p.add_argument("--sim", choices=SIM_CHOICES, default="verilator",
                       help="simulator producing the LUT (default verilator; gates = Python gate evaluator)")
        sg = p.add_mutually_exclusive_group()
        sg.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                        help="override signedness (default: from the mulNs/mulNu module name)")
        sg.add_argument("--unsigned", dest="signed", action="store_const", const=False)
        p.add_argument("--jobs", type=positive_int, default=None, help="parallel simulations (default: CPU count)")
        p.add_argument("--allow-non-multiplier", action="store_true",
                       help="build LUTs of circuits that are not n x m -> n+m multipliers (e.g. adders)")

    p = lsub.add_parser("list", help="one row per multiplier: published and measured metrics and cost")
    common(p, False)
    p.add_argument("--builtin", action="store_true", help="include the built-in offline family")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = lsub.add_parser("build", help="build exhaustive LUTs (.npz) for every netlist found")
    common(p, True)
    p.add_argument("--out", type=lambda t: Path(out_dir(t)), default=None, help="also write DIR/<module>.npz for each netlist")
    p.add_argument("--sampled", type=positive_int, default=None, metavar="N",
                   help="sampled mode for wide multipliers: N random operand pairs (written as <module>.sampled.npz)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of sampled mode")
    p.add_argument("--max-pairs-log2", type=int_range(1, 32), default=24,
                   help="exhaustive mode limit: at most 2^K operand pairs (default 24)")
    p.add_argument("--no-cache", action="store_true", help="rebuild even when the store has the LUT")
    p.set_defaults(func=cmd_build)

    p = lsub.add_parser("verify", help="exit 0 only if RTL == gate evaluator on every pair and metrics match headers "
                                       "(--sim gates: header figures against the gate evaluator only)")
    common(p, True)
    p.set_defaults(func=cmd_verify)

    p = lsub.add_parser("fetch-evoapprox", help="download EvoApproxLib (needs network), check and index it")
    p.add_argument("--tag", type=safe_name, default="v2022", help="git tag of the library (default v2022)")
    p.add_argument("--dest", type=lambda t: Path(out_dir(t)), default=None, help="where to unpack (default: <cache>/evoapprox/<tag>)")
    p.set_defaults(func=cmd_fetch)

    lut.set_defaults(func=lambda args: (lut.print_help(), 2)[1])


def _fmt(v, nd: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def _row(lut) -> dict:
    m, pub, cost = lut.meta["metrics"], lut.meta.get("published", {}), lut.meta["cost"]
    est = cost.get("estimate", {})
    row = {"name": lut.name, "widths": f"{lut.bits_a}x{lut.bits_b}", "signed": lut.signed}
    for key in ("mae_pct", "wce_pct", "ep_pct", "mre_pct", "mse"):
        row[key] = m[key]
        row[key + "_published"] = pub.get(key, {}).get("value")
    if pub.get("mre_pct", {}).get("legacy") and "mre_all_pct" in m:
        row["mre_pct"] = m["mre_all_pct"]  # an older header's MRE: over all pairs, |e| / max(1, |exact|)
    row.update({"power_mw": cost.get("power_mw"), "power_mw_published": pub.get("power_mw", {}).get("value"),
                "power_mw_estimate": est.get("power_mw"), "area_um2": cost.get("area_um2"),
                "area_um2_published": pub.get("area_um2", {}).get("value"), "area_um2_estimate": est.get("area_um2"),
                "cost_source": cost.get("source"), "header_match": lut.meta.get("header_match"),
                "lut_sha256": lut.sha256, "netlist": lut.meta["provenance"]["netlist_path"]})
    return row


def print_table(rows: list[dict], cols: list[tuple[str, str]], out=sys.stdout) -> None:
    """A plain aligned text table; ``cols`` = [(key, header)]."""
    cells = [[h for _, h in cols]] + [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for n, line in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


LIST_COLS = [("name", "name"), ("widths", "bits"), ("signed", "signed"),
             ("mae_pct", "MAE%"), ("mae_pct_published", "MAE%pub"), ("wce_pct", "WCE%"),
             ("wce_pct_published", "WCE%pub"), ("ep_pct", "EP%"), ("ep_pct_published", "EP%pub"),
             ("mre_pct", "MRE%"), ("mre_pct_published", "MRE%pub"), ("mse", "MSE"), ("mse_published", "MSEpub"),
             ("power_mw_published", "P mW pub"), ("power_mw_estimate", "P mW est"),
             ("area_um2_published", "A um2 pub"), ("area_um2_estimate", "A um2 est")]


def _report_failures(failures) -> int:
    """One line per netlist that failed (stderr); 1 if any failed, else 0."""
    for f in failures:
        print(f"axlab: {f.message}", file=sys.stderr)
    return 1 if failures else 0


def cmd_list(args) -> int:
    from hwsim.builtin import builtin_names, builtin_path
    from hwsim.errors import AxlabError
    from hwsim.store import build_luts

    paths = list(args.paths)
    if args.builtin:
        paths += [builtin_path(n) for n in builtin_names()]
    if not paths:
        raise AxlabError("nothing to list: give netlist PATHs and/or --builtin")
    failures: list = []
    results = build_luts(paths, sim=args.sim, signed=args.signed, jobs=args.jobs, errors=failures,
                         allow_non_multiplier=args.allow_non_multiplier)
    rows = [_row(r.lut) for r in results]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif rows:
        print_table(rows, LIST_COLS)
    return _report_failures(failures)


def cmd_build(args) -> int:
    import numpy as np

    from hwsim.errors import AxlabError
    from hwsim.netlist import discover
    from hwsim.store import Failure, build_luts, failure_line, sample_netlist

    if args.sampled is not None:
        if args.sampled < 1:
            raise AxlabError(f"--sampled must be >= 1, got {args.sampled}")
        rows, failures = [], []
        files = []
        for path in args.paths:
            try:
                files += [f for f in discover([path]) if f not in files]
            except AxlabError as exc:
                failures.append(Failure(Path(path), failure_line(path, exc)))
        for f in files:
            try:
                s = sample_netlist(f, args.sampled, sim=args.sim, signed=args.signed, seed=args.seed,
                                   allow_non_multiplier=args.allow_non_multiplier)
                if s["mismatches"]:
                    raise AxlabError(f"{f}: RTL and gate evaluator disagree on {s['mismatches']} of {s['n']} sampled pairs")
            except AxlabError as exc:
                failures.append(Failure(f, failure_line(f, exc)))
                continue
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(args.out / f"{s['module']}.sampled.npz", a=s["a"], b=s["b"], product=s["product"],
                                    meta=np.array(json.dumps({k: s[k] for k in ("module", "bits_a", "bits_b",
                                                                                "signed", "metrics", "n", "seed")})))
            rows.append(dict(name=s["module"], widths=f"{s['bits_a']}x{s['bits_b']}", n=s["n"], **s["metrics"]))
        if rows:
            print_table(rows, [("name", "name"), ("widths", "bits"), ("n", "pairs"), ("mae_pct", "MAE%~"),
                               ("wce_pct", "WCE%>="), ("ep_pct", "EP%~"), ("mre_pct", "MRE%~"), ("mse", "MSE~")])
        return _report_failures(failures)
    failures = []
    results = build_luts(args.paths, sim=args.sim, signed=args.signed, max_pairs=2**args.max_pairs_log2,
                         use_cache=not args.no_cache, jobs=args.jobs, errors=failures,
                         allow_non_multiplier=args.allow_non_multiplier)
    rows = []
    for r in results:
        if args.out:
            r.lut.save(args.out / f"{r.lut.name}.npz")
        rows.append({"name": r.lut.name, "widths": f"{r.lut.bits_a}x{r.lut.bits_b}", "signed": r.lut.signed,
                     "source": "cache" if r.cached else args.sim, "header": r.lut.meta.get("header_match"),
                     "gates_s": r.seconds.get("gates"), "rtl_s": r.seconds.get("rtl"),
                     "char_s": r.seconds.get("characterise"), "total_s": r.seconds.get("total", sum(r.seconds.values())),
                     "sha": r.lut.sha256[:12]})
    if rows:
        print_table(rows, [("name", "name"), ("widths", "bits"), ("signed", "signed"), ("source", "from"),
                           ("header", "header ok"), ("gates_s", "gates s"), ("rtl_s", "rtl s"), ("char_s", "char s"),
                           ("total_s", "total s"), ("sha", "lut sha256")])
    if args.out and results:
        print(f"wrote {len(results)} LUT(s) to {args.out}")
    return _report_failures(failures)


def cmd_verify(args) -> int:
    from hwsim.metrics import compare_with_header, error_metrics
    from hwsim.netlist import read_netlist
    from hwsim.store import build_luts

    failures: list = []
    # always simulate afresh: a verification must not trust the LUT cache
    results = build_luts(args.paths, sim=args.sim, signed=args.signed, use_cache=False, jobs=args.jobs,
                         errors=failures, allow_non_multiplier=args.allow_non_multiplier)
    failed = 0
    for r in results:
        info = read_netlist(r.lut.meta["provenance"]["netlist_path"])
        checks = compare_with_header(error_metrics(r.lut), info.published, r.lut.bits_a + r.lut.bits_b)
        bad = [c for c in checks if not c.ok]
        failed += bool(bad)
        status = "FAIL" if bad else "ok"
        detail = "; ".join(f"{c.key} measured {c.compared:.6g} vs header {c.published_text}" for c in bad)
        hdr = f"{len(checks)} header figures match" if checks else "no header figures"
        how = (f"rtl==gates on {r.lut.table.size} pairs" if args.sim != "gates"
               else f"gate evaluator only (no RTL) on {r.lut.table.size} pairs")
        print(f"{status:4}  {r.lut.name:24} {how}; {hdr if not bad else detail}")
    for f in failures:
        print(f"FAIL  {f.path.name:24} {f.message}")
    _report_failures(failures)
    total = len(results) + len(failures)
    print(f"{len(results) - failed} of {total} netlists verified")
    return 1 if failed or failures else 0


def cmd_fetch(args) -> int:
    from hwsim.fetch import fetch_evoapprox

    dest, count = fetch_evoapprox(args.tag, args.dest)
    print(f"EvoApproxLib {args.tag}: {count} netlists indexed under {dest}")
    return 0
