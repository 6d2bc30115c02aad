"""Synthesis-backed hardware cost of a DSE's final front (``axlab dse --hw-cost synth``,
flow files ``dse.hw_cost: synth``).

The DSE ranks designs by the MAC-weighted sum of per-multiplier areas (:mod:`flows.costmodel`).
For the designs on the final Pareto front this module measures what that sum stands for: each
design is exported (:func:`flows.export.export`, ``hw_lanes`` multipliers in the busiest layer),
synthesized with ABC and placed and routed on ``hw_target`` (:mod:`flows.export.pnr`). It writes
``OUT/hw_synth.json`` and ``OUT/hw_synth.md``: per design the model's area beside the LUT count,
flip-flops, block RAM, Fmax and latency per image, and Spearman's rank correlation between the
model's area and the measured LUTs / Fmax (does the cheap objective order designs as synthesis
does?). Export folders stay in ``OUT/hw/pareto_NN/`` with their ``pnr/`` reports; a rerun reuses
those whose model, multipliers, dataset, target, lanes, DSP choice and seed match. A design that
does not fit the target is listed with the overflowing resource, not an error. The test bench's
images come from the DSE's ``dataset`` (an imported TFLite model names none of its own)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from hwsim.errors import AxlabError

HW_SEED = 1  # nextpnr placement seed of every measured design


def check_hw_config(cfg: dict[str, Any]) -> None:
    """One AxlabError line naming the bad ``hw_*`` key and the allowed values."""
    from flows.export.devices import DEVICES

    if cfg["hw_cost"] not in ("model", "synth"):
        raise AxlabError(f"DSE hw_cost: must be model or synth, got {cfg['hw_cost']!r}")
    if cfg["hw_target"] not in DEVICES:
        raise AxlabError(f"DSE hw_target: must be one of {', '.join(DEVICES)}, got {cfg['hw_target']!r}")
    lanes = cfg["hw_lanes"]
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 256:
        raise AxlabError(f"DSE hw_lanes: must be an integer in [1, 256], got {lanes!r}")
    if cfg["hw_dsp"] not in ("auto", "never"):
        raise AxlabError(f"DSE hw_dsp: must be auto or never, got {cfg['hw_dsp']!r}")


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long sequences (ties get mean ranks); None
    when fewer than 3 pairs or either side is constant (undefined)."""
    from scipy.stats import spearmanr

    if len(a) != len(b) or len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    rho = float(spearmanr(a, b).statistic)
    return None if math.isnan(rho) else round(rho, 4)


def synth_front(cfg: dict[str, Any], out_dir: Path, pareto: list[dict[str, Any]],
                progress: bool = True) -> dict[str, Any]:
    """Export, synthesize and place and route every design of ``pareto`` (rows of the DSE's
    ``pareto.json``, each with ``design`` relative to ``out_dir``); write ``hw_synth.json`` and
    ``hw_synth.md`` into ``out_dir`` and return the JSON's content."""
    from flows.export import export
    from flows.export.devices import get_device
    from flows.export.generate import bench_dataset
    from flows.export.sweep import _finished
    from nn.bundle import load_model

    dev = get_device(cfg["hw_target"])
    lanes, dsp = int(cfg["hw_lanes"]), cfg["hw_dsp"]
    bundle = load_model(cfg["model"])
    dataset = bench_dataset(cfg["model"], bundle, cfg.get("dataset"))  # the DSE's, else the model's own
    rows: list[dict[str, Any]] = []
    for k, p in enumerate(pareto):
        design = out_dir / p["design"]
        folder = out_dir / "hw" / f"pareto_{k:02d}"
        luts = [ly["lut_sha256"] for ly in json.loads(design.read_text())["layers"]]
        ident = {"model": bundle.sha256, "luts": luts, "dataset": dataset, "target": dev.name, "dsp": dsp,
                 "seed": HW_SEED, "freq": float(dev.freq_mhz)}
        row: dict[str, Any] = {"design": p["design"], "multipliers": p["multipliers"],
                               "area_um2": p.get("area_um2"), "power_mw": p.get("power_mw"),
                               "acc_loss": p.get("acc_loss"), "export": str(folder.relative_to(out_dir))}
        m = _finished(folder, ident, lanes)
        if progress:
            print(f"dse: hardware cost of {p['design']} on {dev.name}"
                  f"{' (done before: reused)' if m else ' (synthesis, place and route)'}", file=sys.stderr, flush=True)
        try:
            if m is None:
                folder.parent.mkdir(parents=True, exist_ok=True)
                m = export(cfg["model"], design, folder, images=1, lanes=lanes, synth=False, target=dev.name,
                           dsp=dsp, seed=HW_SEED, dataset=dataset)
        except AxlabError as exc:
            if "does not fit" not in str(exc):
                raise
            row["error"] = str(exc).split(": ", 1)[-1]
            rows.append(row)
            continue
        q = m["pnr"]
        row.update({**q["resources"], "fmax_mhz": q["fmax"].get("clk", {}).get("achieved_mhz"),
                    "latency_us": q.get("latency_us"), "cycles": m["cycles_per_image"],
                    "multiplier_area_sum_um2": m["estimate"]["multiplier_area_um2"]})
        rows.append(row)
    ok = [r for r in rows if not r.get("error") and r.get("area_um2") is not None]
    fm = [r for r in ok if r.get("fmax_mhz")]
    result = {"target": dev.name, "part": dev.part, "lanes": lanes, "dsp": dsp, "seed": HW_SEED, "designs": rows,
              "spearman": {"area_vs_luts": spearman([r["area_um2"] for r in ok], [r["luts"] for r in ok]),
                           "area_vs_fmax": spearman([r["area_um2"] for r in fm], [r["fmax_mhz"] for r in fm]),
                           "pairs": len(ok)}}
    (out_dir / "hw_synth.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "hw_synth.md").write_text(hw_synth_md(result))
    return result


def _f(v: Any, fmt: str = "{:,.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def hw_table(result: dict[str, Any]) -> list[list[str]]:
    """Header and one row per design (a report table)."""
    rows = [["design", "multipliers (per layer)", "model area um2", "LUTs", "FFs", "BRAM", "DSP", "Fmax MHz",
             "latency/image us"]]
    for r in result["designs"]:
        if r.get("error"):
            rows.append([r["design"], " ".join(r["multipliers"]), _f(r["area_um2"]), f"does not fit: {r['error']}",
                         "", "", "", "", ""])
        else:
            rows.append([r["design"], " ".join(r["multipliers"]), _f(r["area_um2"]), str(r["luts"]), str(r["ffs"]),
                         str(r["bram"]), str(r["dsp"]), _f(r["fmax_mhz"]), _f(r["latency_us"], "{:,.1f}")])
    return rows


def correlation_text(result: dict[str, Any]) -> str:
    """One sentence with both rank correlations (or why they are undefined)."""
    s = result["spearman"]

    def rho(v: float | None) -> str:
        return "undefined (fewer than 3 fitting designs or a constant column)" if v is None else f"{v:+.3f}"

    return (f"Spearman rank correlation over {s['pairs']} placed designs: model area against LUTs "
            f"{rho(s['area_vs_luts'])}; model area against Fmax {rho(s['area_vs_fmax'])}. Measured on "
            f"{result['target']} ({result['part']}), {result['lanes']} lane(s) in the busiest layer, DSP "
            f"{result['dsp']}, nextpnr seed {result['seed']}.")


def hw_synth_md(result: dict[str, Any]) -> str:
    """``hw_synth.md``: the table and the correlations."""
    head, *rows = hw_table(result)
    lines = ["# Pareto front: model area against synthesis and place and route", "",
             correlation_text(result), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
