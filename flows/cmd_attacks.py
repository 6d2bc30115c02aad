"""``axlab attack``, ``axlab transfer`` and ``axlab detect`` (issue 4: attacks).

Heavy dependencies (numpy, torch, nn) are imported inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from attacks.params import ATTACK_NAMES, params_help
from flows.cliargs import int_range, out_dir, out_file, positive_int, seed_int
from hwsim.errors import AxlabError
from nn.paths import add_path_option, apply_path_option

SPEC_HELP = """\
implementation SPEC syntax:
  MODEL:fp                FpNN          MODEL:q                 QNN
  MODEL:ax:DESIGN.json    AxNN (design) MODEL:ax:MULTIPLIER     AxNN, MULTIPLIER in every layer
  optional suffix @torch|@numba|@cuda selects the backend, e.g. m.pt:ax:d.json@numba
"""


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "attack", help="attack an FpNN/QNN/AxNN and write per-image results (JSONL)",
        formatter_class=fmt,
        description="Attack the images of DATASET that every implementation under study "
                    "classifies correctly (thesis Eq. 4.5), append one JSON line per image to "
                    "RUN.jsonl (adversarial images beside it: RUN.adv/, RUN.npz), then print a "
                    "summary. A rerun with the same --out resumes.",
        epilog="attacks and parameters (--param k=v; pixel units in [0,1], 8/255 allowed):\n"
               + params_help() + "\n\n" + SPEC_HELP)
    p.add_argument("--model", required=True, help="model file (axlab train)")
    p.add_argument("--impl", choices=["fp", "q", "ax"], default="fp")
    p.add_argument("--design", help="design.json (with --impl ax)")
    p.add_argument("--multiplier", help="multiplier in every layer (with --impl ax)")
    p.add_argument("--backend", choices=["torch", "numba", "cuda"], default="torch")
    add_path_option(p)
    p.add_argument("--attack", required=True, metavar="NAME",
                   help="one of: " + " ".join(ATTACK_NAMES))
    p.add_argument("--param", action="append", nargs="+", default=[], metavar="K=V",
                   help="attack parameter (repeatable)")
    p.add_argument("--dataset", default="digits", help="digits (default) or cifar10[:PATH]")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data-seed", type=seed_int, default=0, help="dataset split seed (default 0)")
    p.add_argument("--n", type=positive_int, default=100, help="number of images to attack (default 100)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", type=out_file, required=True, help="RUN.jsonl")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="images attacked together (default 1: a kill loses at most 1 image)")
    p.add_argument("--study", nargs="+", metavar="SPEC",
                   help="implementations under study for the evasion protocol (default: the "
                        "model's fp and q plus the attacked one); 'none': only the attacked one")
    p.add_argument("--ensemble", nargs="+", metavar="SPEC",
                   help="multi-source attack: attack the mean of these implementations instead "
                        "of --impl (e.g. several AxNNs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_attack)

    t = sub.add_parser("transfer", help="transfer rates of adversarial examples to other "
                       "implementations (CSV + heatmap)", formatter_class=fmt,
                       description="Feed the successful adversarial examples of each RUN.jsonl to "
                                   "every target SPEC; write transfer.csv, transfer_matrix.csv "
                                   "and transfer.png into DIR.", epilog=SPEC_HELP)
    t.add_argument("runs", nargs="+", metavar="RUN.jsonl")
    t.add_argument("--to", nargs="+", required=True, metavar="SPEC")
    t.add_argument("--out", type=out_dir, required=True, metavar="DIR")
    t.add_argument("--no-progress", action="store_true")
    add_path_option(t)
    t.set_defaults(func=cmd_transfer)

    d = sub.add_parser("detect", help="KL-divergence input-transformation detection report",
                       formatter_class=fmt,
                       description="Score clean and adversarial images with D = max of both KL "
                                   "directions between f(x) and f(T x) for six transforms; write "
                                   "detection.csv (AUC, TPR at 5%% FPR), vote.csv (majority vote), "
                                   "scores.csv and boxplot.png into DIR.", epilog=SPEC_HELP)
    d.add_argument("--model", required=True)
    d.add_argument("--impl", nargs="+", choices=["fp", "q", "ax"], default=["fp"],
                   help="implementations to score with (ax needs --design/--multiplier)")
    d.add_argument("--design")
    d.add_argument("--multiplier")
    d.add_argument("--backend", choices=["torch", "numba", "cuda"], default="torch")
    add_path_option(d)
    d.add_argument("--spec", nargs="+", default=[], metavar="SPEC",
                   help="further implementations by SPEC")
    d.add_argument("--clean", default="run",
                   help="clean images: 'run' (the originals of --adv's images, default) or a "
                        "dataset spec (its test images not in the run)")
    d.add_argument("--n-clean", type=int_range(2), default=200, help="clean images from a dataset")
    d.add_argument("--adv", required=True, metavar="RUN.jsonl")
    d.add_argument("--out", type=out_dir, required=True, metavar="DIR")
    d.add_argument("--seed", type=seed_int, default=0)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_detect)


# ------------------------------------------------------------------------------------------
def _target_spec(args: argparse.Namespace, impl: str | None = None):
    from attacks.implspec import ImplSpec

    strict = impl is None
    impl = impl or args.impl
    if impl == "ax" and not (args.design or args.multiplier):
        raise AxlabError("--impl ax needs --design DESIGN.json or --multiplier M")
    if strict and impl != "ax" and (args.design or args.multiplier):
        raise AxlabError("--design/--multiplier only apply to --impl ax")
    return ImplSpec(args.model, impl, args.design if impl == "ax" else None,
                    args.multiplier if impl == "ax" and not args.design else None, args.backend)


def cmd_attack(args: argparse.Namespace) -> int:
    from attacks.implspec import Ensemble, load_impl, parse_spec
    from attacks.params import parse_kv
    from attacks.registry import make_attack
    from attacks.runner import (check_resume, format_summary, impl_identity, run_attack,
                                select_evasion_set, summarize)
    from nn.api import load_dataset, load_model

    apply_path_option(args)
    kv = parse_kv([item for group in args.param for item in group])
    attack = make_attack(args.attack, kv)            # bad names/params fail before any loading
    if args.n < 1:
        raise AxlabError(f"--n {args.n} out of range; allowed: n >= 1")
    if args.batch < 1:
        raise AxlabError(f"--batch {args.batch} out of range; allowed: batch >= 1")
    # resume identity (attacks.runner): what is known now is checked before anything is loaded,
    # the implementation once it is loaded, the image selection in run_attack
    asked = {"attack": attack.name, "params": attack.params, "seed": args.seed, "dataset": args.dataset,
             "split": args.split, "data_seed": args.data_seed}
    check_resume(args.out, asked, list(asked))
    bundle = load_model(args.model)
    if args.ensemble:
        specs = [parse_spec(s) for s in args.ensemble]
        target = Ensemble([load_impl(s) for s in specs])
        source = target.name
    else:
        spec = _target_spec(args)
        target = load_impl(spec, bundle)
        source = target.name
    asked = impl_identity(target)
    asked["model_sha256"] = asked["model_sha256"] or bundle.sha256
    check_resume(args.out, asked, ["model_sha256", "impl", "impl_kind", "backend", "luts", "members"])
    study: list[Any] = [target]
    if args.study and args.study != ["none"]:
        study += [load_impl(parse_spec(s)) for s in args.study]
    elif not args.study:
        for impl in ("fp", "q"):
            if args.ensemble or impl != args.impl:
                try:
                    study.append(load_impl(_target_spec(argparse.Namespace(
                        **{**vars(args), "design": None, "multiplier": None}), impl), bundle))
                except AxlabError as exc:
                    print(f"axlab: note: {impl} not used for the evasion set ({exc})",
                          file=sys.stderr)
    x, y = load_dataset(args.dataset, args.split, args.data_seed)
    idx = select_evasion_set(study, x, y, args.n)
    meta = {"model": str(args.model), "model_sha256": getattr(bundle, "sha256", None),
            "dataset": args.dataset, "split": args.split, "data_seed": args.data_seed, "source": source,
            "study": [getattr(s, "name", "?") for s in study],
            "ensemble": list(args.ensemble or [])}
    records = run_attack(attack, target, x, y, idx, args.out, seed=args.seed, batch=args.batch,
                         meta=meta, progress=not args.no_progress)
    summ = summarize(records)
    if args.json:
        print(json.dumps({"attack": args.attack, "impl": source, **summ}))
    else:
        print(format_summary(summ, f"{args.attack} on {source} ({args.dataset}, "
                                   f"{len(idx)} of the images correct on: "
                                   f"{', '.join(meta['study'])})"))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from attacks.implspec import load_impl, parse_spec
    from attacks.runner import load_run
    from attacks.transfer import format_matrix, transfer_rates, write_transfer

    apply_path_option(args)
    specs = [parse_spec(s) for s in args.to]
    runs = [load_run(r) for r in args.runs]
    targets = [(str(s), load_impl(s)) for s in specs]
    rows = transfer_rates(runs, targets, progress=not args.no_progress)
    paths = write_transfer(rows, args.out)
    print(format_matrix(rows))
    print(f"wrote {paths['matrix']}, {paths['csv']}, {paths['png']}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    import numpy as np

    from attacks.detect import evaluate, format_table, write_report
    from attacks.implspec import load_impl, parse_spec
    from attacks.runner import load_run
    from nn.api import load_dataset, load_model

    apply_path_option(args)
    run = load_run(args.adv)
    ok = run.success
    if not ok.any():
        raise AxlabError(f"{args.adv}: no successful adversarial example to detect")
    adv = run.adv[ok]
    if args.clean == "run":
        clean = run.clean
    else:
        x, y = load_dataset(args.clean, "test", 0)
        used = {int(r["index"]) for r in run.records}
        pick = [i for i in range(len(x)) if i not in used][: args.n_clean]
        clean = x[np.asarray(pick, dtype=np.int64)]
    bundle = load_model(args.model)
    impls = [(str(_target_spec(args, i)), load_impl(_target_spec(args, i), bundle))
             for i in dict.fromkeys(args.impl)]
    impls += [(s, load_impl(parse_spec(s))) for s in args.spec]
    impls = [(getattr(im, "name", n), im) for n, im in impls]
    res = evaluate(impls, clean, adv, seed=args.seed, progress=not args.no_progress,
                   sources=(f"{args.adv} (clean)" if args.clean == "run" else f"--clean {args.clean}", str(args.adv)))
    paths = write_report(res, args.out)
    print(format_table(res))
    print(f"wrote {paths['csv']}, {paths['vote']}, {paths['scores']}, {paths['png']}")
    return 0
