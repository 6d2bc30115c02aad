"""The lanes trade-off (``axlab export ... --target T --sweep-lanes 1,2,4,8``): one export,
placed and routed, per lanes value in ``DIR/lanes_L/``; then ``DIR/sweep.json``, a Markdown
report ``DIR/sweep.md`` with the Pareto points (fewest LUTs against lowest latency) and the plot
``DIR/sweep.png`` (latency per image against LUTs)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hwsim.errors import AxlabError


def parse_lanes(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]: distinct integers in [1, 256], at most 16 of them."""
    vals = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 256:
            raise AxlabError(f"--sweep-lanes must be comma-separated integers in [1, 256], got {part!r}")
        vals.append(int(part))
    if len(set(vals)) != len(vals) or not 1 <= len(vals) <= 16:
        raise AxlabError(f"--sweep-lanes must list 1 to 16 distinct values, got {text!r}")
    return vals


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points not dominated in (LUTs, latency), both minimised; in LUT order."""
    fit = [p for p in points if p.get("latency_us") is not None]
    front = [p for p in fit if not any(q["luts"] <= p["luts"] and q["latency_us"] <= p["latency_us"]
                                       and (q["luts"], q["latency_us"]) != (p["luts"], p["latency_us"]) for q in fit)]
    return sorted(front, key=lambda p: p["luts"])


def sweep_md(target: str, points: list[dict[str, Any]], front: list[dict[str, Any]]) -> str:
    """Markdown table of the sweep (every point; Pareto points in bold)."""
    rows = ["| lanes (busiest layer) | lanes per layer | LUTs | FFs | BRAM | DSP | Fmax (MHz) | cycles/image | "
            "latency/image (us) | images/s | Pareto |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        if p.get("error"):
            rows.append(f"| {p['lanes']} | {p.get('per_layer', '-')} | {p['error']} | | | | | | | | |")
            continue
        mark = "**yes**" if p in front else ""
        rows.append(f"| {p['lanes']} | {p['per_layer']} | {p['luts']} | {p['ffs']} | {p['bram']} | {p['dsp']} | "
                    f"{p['fmax_mhz']} | {p['cycles']:,} | {p['latency_us']:,} | {p['images_per_s']:,} | {mark} |")
    return (f"# Lanes sweep on {target}\n\nEach point: `axlab export --lanes L --target {target}` (folder lanes_L/). "
            "LUTs: logic cells after place and route; latency: cycles per image / Fmax (image load and "
            "read-back not included).\n\n" + "\n".join(rows) + "\n\n![latency against LUTs](sweep.png)\n")


def sweep_png(path: Path, target: str, points: list[dict[str, Any]], front: list[dict[str, Any]]) -> None:
    """Latency per image (log scale) against LUTs, Pareto points joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = [p for p in points if not p.get("error")]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([p["luts"] for p in fit], [p["latency_us"] for p in fit], color="tab:blue", zorder=3)
    for p in fit:
        ax.annotate(f"{p['lanes']}", (p["luts"], p["latency_us"]), textcoords="offset points", xytext=(4, 4))
    ax.plot([p["luts"] for p in front], [p["latency_us"] for p in front], color="tab:red", label="Pareto front")
    ax.set_yscale("log")
    ax.set_xlabel("LUTs (logic cells, placed and routed)")
    ax.set_ylabel("latency per image (us)")
    ax.set_title(f"lanes sweep, {target} (labels: lanes)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    """What a finished point must match to be reused: model sha256, each layer's LUT sha256,
    test images' dataset (``--dataset``, else the model's own), target, DSP choice, seed and clock
    constraint. AxlabError (before any folder is written) when neither names a dataset (an
    imported TFLite model names none)."""
    from flows.export.devices import get_device
    from flows.export.generate import bench_dataset
    from nn.bundle import load_model
    from nn.design import read_design

    bundle = load_model(args.model)  # a str: zoo:NAME resolves
    luts = read_design(args.design, bundle)
    dataset = bench_dataset(args.model, bundle, args.dataset)
    return {"model": bundle.sha256, "luts": [lut.sha256 for lut in luts], "dataset": dataset, "target": args.target,
            "dsp": args.dsp, "seed": int(args.seed), "freq": float(args.freq or get_device(args.target).freq_mhz)}


def _finished(folder: Path, ident: dict[str, Any], lanes: int) -> dict[str, Any] | None:
    """The manifest of an earlier export of this same point in ``folder`` (``ident``: model, LUTs,
    dataset, target, DSP, seed, clock, as :func:`_identity`; the sweep resumes, and
    points may be exported by separate ``axlab export --lanes L --target T --out DIR/lanes_L``
    runs), else None. Only the manifest's own record is compared; a changed or foreign folder is
    exported again (the export replaces it atomically)."""
    try:
        m = json.loads((folder / "manifest.json").read_text())
        q = m["pnr"]
        same = (m["model"]["sha256"] == ident["model"] and [ly["lut_sha256"] for ly in m["layers"]] == ident["luts"]
                and m["model"]["dataset"] == ident["dataset"] and m["rtl"]["lanes"] == lanes
                and q["target"] == ident["target"] and m["dsp"] == ident["dsp"]
                and q["seed"] == ident["seed"] and float(q["clock_constraint_mhz"]) == ident["freq"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return m if same else None


def run_sweep(args: argparse.Namespace) -> int:
    """The CLI's ``--sweep-lanes``: exit 0 when at least one point fits, 2 otherwise."""
    from flows.export import DEFAULT_IMAGES, export, verify

    lanes = parse_lanes(args.sweep_lanes)
    ident = _identity(args)  # model, design and dataset checked before DIR is made
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = args.images or DEFAULT_IMAGES
    points: list[dict[str, Any]] = []
    for L in lanes:
        m = _finished(out / f"lanes_{L}", ident, L)
        print(f"sweep: lanes {L}{' (done before: reused)' if m else ''}", file=sys.stderr, flush=True)
        try:
            if m is None:
                m = export(args.model, args.design, out / f"lanes_{L}", images=images, lanes=L, synth=False,
                           progress=not args.json, target=args.target, dsp=args.dsp, seed=args.seed, freq=args.freq,
                           dataset=ident["dataset"])
        except AxlabError as exc:
            if "does not fit" not in str(exc):
                raise
            points.append({"lanes": L, "error": str(exc).split(": ", 1)[-1]})
            continue
        q = m["pnr"]
        pt = {"lanes": L, "per_layer": "/".join(str(ly["lanes"]) for ly in m["layers"]), **q["resources"],
              "fmax_mhz": q["fmax"].get("clk", {}).get("achieved_mhz"), "cycles": m["cycles_per_image"],
              "latency_us": q.get("latency_us"), "images_per_s": q.get("images_per_s")}
        if args.verify:
            r = verify(out / f"lanes_{L}", images=images)
            pt["verify"] = f"{r['bit_exact']}/{r['images']}"
            if r["bit_exact"] != r["images"] or {row["cycles"] for row in r["rows"]} != {pt["cycles"]}:
                raise AxlabError(f"sweep: lanes {L}: the co-simulation differs (bit-exact {pt['verify']}, cycles "
                                 f"{sorted({row['cycles'] for row in r['rows']})} against {pt['cycles']})")
        points.append(pt)
    front = pareto(points)
    (out / "sweep.json").write_text(json.dumps({"target": args.target, "points": points,
                                                "pareto_lanes": [p["lanes"] for p in front]}, indent=2) + "\n")
    (out / "sweep.md").write_text(sweep_md(args.target, points, front))
    if any(not p.get("error") for p in points):
        sweep_png(out / "sweep.png", args.target, points, front)
    if args.json:
        print(json.dumps({"out": str(out), "points": points, "pareto_lanes": [p["lanes"] for p in front]}, indent=2))
    else:
        print((out / "sweep.md").read_text())
    if not front:
        print(f"axlab: no lanes value of {lanes} fits --target {args.target}", file=sys.stderr)
        return 2
    return 0
