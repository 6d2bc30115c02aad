"""CLI command ``axlab export``: a design -> synthesizable Verilog + memories + test bench +
yosys report, optionally verified bit-exactly against the Python simulator in Verilator."""
from __future__ import annotations

import argparse
import json
import sys
import time

from flows.cliargs import in_dir, int_range, out_dir
from flows.export.devices import DEVICES
from hwsim.errors import AxlabError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a design to synthesizable Verilog (+ RTL co-simulation)",
                       description="axlab export --model M --design D --out DIR [--verify]: write the export folder. "
                                   "axlab export verify DIR [--images N] [--model M --design D]: re-verify an existing "
                                   "export folder on its own (file hashes, content checks, then the RTL co-simulation "
                                   "against the outputs recorded at export time; with --model/--design those outputs "
                                   "are first recomputed from the model and design); exit 0 on pass, 1 when the RTL "
                                   "differs, 2 on a bad or changed folder.")
    p.add_argument("action", nargs="?", choices=["verify"], metavar="verify",
                   help="re-verify the existing export folder DIR instead of exporting")
    p.add_argument("dir", nargs="?", type=in_dir, metavar="DIR", help="export folder to re-verify (with verify)")
    p.add_argument("--model", help="model file (required to export; with verify: the reference model)")
    p.add_argument("--design", help="design.json (one multiplier netlist per layer; required to export; "
                                    "with verify: the reference design)")
    p.add_argument("--out", type=out_dir, help="output folder (written atomically; an older export is replaced; "
                                               "required to export)")
    p.add_argument("--dataset", default=None,
                   help="test images for the test bench (default: the model's dataset; an imported .tflite model "
                        "names none, e.g. cifar10:../shared/data/cifar-10-subset)")
    p.add_argument("--images", type=int_range(1, 10000), default=None,
                   help="test images stored for the test bench and simulated by --verify (default 20); "
                        "with verify: how many of the stored images to simulate (default all)")
    p.add_argument("--lanes", type=int_range(1, 256), default=8,
                   help="multipliers of the busiest layer (others get as many as keep pace; default 8)")
    p.add_argument("--verify", action="store_true",
                   help="run the cocotb/Verilator test bench: RTL logits must equal the simulator's bit for bit")
    p.add_argument("--no-synth", action="store_true", help="skip the yosys synthesis run (scripts still written)")
    p.add_argument("--target", choices=list(DEVICES), default=None,
                   help="FPGA to synthesize (yosys with ABC) and place and route (nextpnr) for; writes DIR/pnr/ "
                        "(utilisation, Fmax, latency per image): " + "; ".join(f"{d.name} = {d.part}"
                                                                                 for d in DEVICES.values()))
    p.add_argument("--dsp", choices=["auto", "never"], default="never",
                   help="auto: layers whose multiplier is exact use a behavioural multiply that synthesis maps to "
                        "the device's DSP blocks (the requantiser may use them too); approximate ones stay in LUT "
                        "logic. never (default): no DSP blocks")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--freq", type=float, default=None,
                   help="clock constraint for nextpnr in MHz (default: the target's; the achieved Fmax is reported)")
    p.add_argument("--sweep-lanes", default=None, metavar="L1,L2,...",
                   help="with --target: export, place and route once per lanes value into DIR/lanes_L/ and write "
                        "DIR/sweep.md and DIR/sweep.png (latency against LUTs, Pareto points)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from flows.export import DEFAULT_IMAGES, export, verify
    from flows.export.verify import mismatch_message

    if args.action == "verify":
        return _verify_dir(args)
    if args.dir is not None:
        raise AxlabError(f"export: unexpected argument {args.dir!r} (to re-verify a folder: axlab export verify DIR)")
    missing = [o for o in ("model", "design", "out") if getattr(args, o) is None]
    if missing:
        raise AxlabError(f"export: --{', --'.join(missing)} required to export (or: axlab export verify DIR)")
    if args.images is None:
        args.images = DEFAULT_IMAGES
    if args.freq is not None and not 0.1 <= args.freq <= 1000:
        raise AxlabError(f"--freq must be in [0.1, 1000] MHz, got {args.freq}")
    if args.target is None and (args.freq is not None or args.sweep_lanes is not None):
        raise AxlabError(f"export: --{'freq' if args.freq is not None else 'sweep-lanes'} needs --target")
    if args.sweep_lanes is not None:
        from flows.export.sweep import run_sweep

        return run_sweep(args)
    t0 = time.perf_counter()
    m = export(args.model, args.design, args.out, images=args.images, lanes=args.lanes,
               synth=not args.no_synth, progress=not args.json, target=args.target, dsp=args.dsp,
               seed=args.seed, freq=args.freq, dataset=args.dataset)
    summary: dict = {"out": args.out, "seconds_export": round(time.perf_counter() - t0, 1),
                     "accuracy": m["accuracy"]["accuracy"],
                     "layers": [(l["layer"], l["multiplier"], l["lanes"]) for l in m["layers"]]}
    summary["cycles_per_image"] = m["cycles_per_image"]
    if m["pnr"]:
        summary["pnr"] = {k: m["pnr"].get(k) for k in ("target", "resources", "fmax", "latency_us", "images_per_s")}
    if m["synthesis"]:
        summary["synthesis"] = {"generic_cells": m["synthesis"]["generic"].get("cells"),
                                "ice40_SB_LUT4": m["synthesis"]["ice40"].get("SB_LUT4")}
    rc = 0
    if args.verify:
        t1 = time.perf_counter()
        r = verify(args.out, images=args.images)
        summary["verify"] = {"images": r["images"], "bit_exact": r["bit_exact"],
                             "seconds": round(time.perf_counter() - t1, 1),
                             "mismatched_images": [row["image"] for row in r["rows"] if not row["match"]]}
        rc = 0 if r["bit_exact"] == r["images"] else 1
        if rc:
            summary["verify"]["first_mismatch"] = r["first_mismatch"]
            print(f"axlab: {mismatch_message(args.out, r)}", file=sys.stderr)
        # the cycles the latency is computed from: the plan's count must be the co-simulation's
        counted = sorted({int(row["cycles"]) for row in r["rows"]})
        summary["verify"]["cycles_per_image"] = counted
        if counted != [m["cycles_per_image"]]:
            rc = 1
            print(f"axlab: export {args.out}: the co-simulation counted {counted} clocks per image, the plan "
                  f"{m['cycles_per_image']} (manifest.json cycles_per_image)", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return rc
    print(f"exported {len(m['layers'])} layers to {args.out} in {summary['seconds_export']} s "
          f"(design accuracy {m['accuracy']['accuracy']:.4f} on {m['accuracy']['images']} {m['accuracy']['dataset']} "
          "test images)")
    for layer, mul, lanes in summary["layers"]:
        print(f"  {layer}: {mul} x{lanes}")
    if "synthesis" in summary:
        print(f"  yosys: {summary['synthesis']['generic_cells']} generic cells, "
              f"{summary['synthesis']['ice40_SB_LUT4']} iCE40 LUT4s (see {args.out}/synth/resources.md)")
    if "pnr" in summary:
        q = m["pnr"]
        r_ = q["resources"]
        print(f"  {q['target']}: {r_['luts']} LUTs, {r_['ffs']} FFs, {r_['bram']} block RAM, {r_['dsp']} DSP, "
              f"{r_['io']} I/O; Fmax {q['fmax'].get('clk', {}).get('achieved_mhz')} MHz; "
              f"{m['cycles_per_image']:,} clocks = {q.get('latency_us')} us per image (see {args.out}/pnr/)")
    if "verify" in summary:
        v = summary["verify"]
        state = "" if rc == 0 else f"; MISMATCH on images {v['mismatched_images']}"
        print(f"  RTL co-simulation: {v['bit_exact']}/{v['images']} images bit-exact{state}, {v['seconds']} s")
    return rc


def _verify_dir(args: argparse.Namespace) -> int:
    """``axlab export verify DIR``: 0 when every simulated image is bit-exact, 1 (one line on
    stderr naming the image, output and values) when the RTL differs; a bad or changed folder
    is an AxlabError (exit 2)."""
    from flows.export import verify
    from flows.export.verify import mismatch_message

    if args.dir is None:
        raise AxlabError("export verify: the export folder is missing (axlab export verify DIR)")
    given = [o for o in ("out", "lanes", "no_synth", "verify", "target", "freq", "sweep_lanes", "dataset")
             if getattr(args, o) not in (None, False, 8)]
    if given:
        raise AxlabError(f"export verify: --{given[0].replace('_', '-')} applies to exporting, not to verify DIR")
    t0 = time.perf_counter()
    r = verify(args.dir, images=args.images, model=args.model, design=args.design)
    summary = {"dir": args.dir, "reference_checked": args.model is not None, "images": r["images"],
               "bit_exact": r["bit_exact"], "first_mismatch": r["first_mismatch"],
               "seconds": round(time.perf_counter() - t0, 1),
               # per image: the output indices whose RTL code differs, with the RTL and recorded codes
               "differing": {str(row["image"]): {"outputs": [k for k, (a, b) in enumerate(zip(row["rtl"], row["sim"]))
                                                             if a != b], "rtl": row["rtl"], "expected": row["sim"]}
                             for row in r["rows"] if not row["match"]}}
    rc = 0 if r["bit_exact"] == r["images"] else 1
    if rc:
        print(f"axlab: {mismatch_message(args.dir, r)}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif not rc:
        print(f"{args.dir}: files match manifest.json; RTL co-simulation {r['bit_exact']}/{r['images']} images "
              f"bit-exact against the outputs recorded at export time ({summary['seconds']} s)")
    return rc
