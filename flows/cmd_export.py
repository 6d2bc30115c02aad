"""CLI command ``axlab export``: a design -> synthesizable Verilog + memories + test bench +
yosys report, optionally verified bit-exactly against the Python simulator in Verilator."""
from __future__ import annotations

import argparse
import json
import time

from flows.cliargs import int_range, out_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a design to synthesizable Verilog (+ RTL co-simulation)")
    p.add_argument("--model", required=True, help="model file")
    p.add_argument("--design", required=True, help="design.json (one multiplier netlist per layer)")
    p.add_argument("--out", type=out_dir, required=True, help="output folder (written atomically; an older export is replaced)")
    p.add_argument("--images", type=int_range(1, 10000), default=20,
                   help="test images stored for the test bench and simulated by --verify (default 20)")
    p.add_argument("--lanes", type=int_range(1, 256), default=8,
                   help="multipliers of the busiest layer (others get as many as keep pace; default 8)")
    p.add_argument("--verify", action="store_true",
                   help="run the cocotb/Verilator test bench: RTL logits must equal the simulator's bit for bit")
    p.add_argument("--no-synth", action="store_true", help="skip the yosys synthesis run (scripts still written)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from flows.export import export, verify

    t0 = time.perf_counter()
    m = export(args.model, args.design, args.out, images=args.images, lanes=args.lanes,
               synth=not args.no_synth, progress=not args.json)
    summary: dict = {"out": args.out, "seconds_export": round(time.perf_counter() - t0, 1),
                     "accuracy": m["accuracy"]["accuracy"],
                     "layers": [(l["layer"], l["multiplier"], l["lanes"]) for l in m["layers"]]}
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
    if "verify" in summary:
        v = summary["verify"]
        state = "" if rc == 0 else f"; MISMATCH on images {v['mismatched_images']}"
        print(f"  RTL co-simulation: {v['bit_exact']}/{v['images']} images bit-exact{state}, {v['seconds']} s")
    return rc
