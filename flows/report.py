"""``axlab report RUN_DIR``: report.md and report.html from what a flow run left in its folder.

The report is built as a list of blocks (heading, text, table, image) rendered twice, to
Markdown and to a self-contained HTML page that links the PNG plots next to it. Sections
appear only for stages the run has outputs for.
"""
from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path
from typing import Any

Block = tuple[str, Any]


def _short(label: str) -> str:
    """Drop folders from implementation labels: /r/models/minnet.axm:ax:/lib/m.v@numba -> minnet.axm:ax:m.v@numba."""
    return re.sub(r"[^\s:@,]*/", "", label)


def _cell(c: str) -> str:
    """A CSV cell for display: folders dropped from labels, floats to 4 significant digits."""
    if c.lower() == "nan":
        return "-"
    try:
        return c if c.lstrip("-").isdigit() else f"{float(c):.4g}"
    except ValueError:
        return _short(c)


def _table_from_csv(path: Path, limit: int = 40) -> list[list[str]]:
    with open(path, newline="") as fh:
        rows = [[_cell(c) for c in r] for r in csv.reader(fh)]
    return rows[: limit + 1]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def _blocks(run: Path, title: str) -> list[Block]:
    b: list[Block] = [("h1", title)]
    if (run / "thesis.json").exists():
        from flows.report_thesis import thesis_blocks

        return b + _stage_times(run) + thesis_blocks(run)
    b += _stage_times(run)
    return b + _pipeline_blocks(run)


def _stage_times(run: Path) -> list[Block]:
    b: list[Block] = []
    state = json.loads((run / "flow_state.json").read_text()) if (run / "flow_state.json").exists() else {}
    secs = state.get("seconds", {})
    if secs:
        b.append(("p", "Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
                  + (f"; total {state['total_seconds']:.0f} s." if "total_seconds" in state else ".")))
    if (run / "commands.sh").exists():
        b.append(("p", "Every stage ran as an `axlab` command; they are listed in `commands.sh`."))
    return b


def _pipeline_blocks(run: Path) -> list[Block]:
    b: list[Block] = []
    luts = run / "luts.json"
    if luts.exists():
        rows = json.loads(luts.read_text())
        b.append(("h2", "Multipliers"))
        head = ["name", "MAE %", "WCE %", "EP %", "MRE %", "power mW", "area um2", "cost source"]
        b.append(("table", [head] + [[r["name"], _fmt(r["mae_pct"]), _fmt(r["wce_pct"]), _fmt(r["ep_pct"]),
                                     _fmt(r["mre_pct"]), _fmt(r["power_mw"]), _fmt(r["area_um2"]),
                                     r["cost_source"]] for r in rows]))

    ev = run / "eval"
    if ev.is_dir():
        rows = []
        for f in sorted(ev.glob("*.json"), key=lambda p: (p.stem not in ("fp", "q"), p.stem != "fp", p.stem)):
            d = json.loads(f.read_text())
            rows.append([f.stem.replace("ax_", "ax: "), f"{100 * d['accuracy']:.2f}", str(d["n"]), d.get("backend", "")])
        b.append(("h2", "Accuracy (test set)"))
        b.append(("table", [["implementation", "accuracy %", "images", "backend"]] + rows))

    pj = run / "dse" / "pareto.json"
    if pj.exists():
        d = json.loads(pj.read_text())
        b.append(("h2", "Design-space exploration (NSGA-II)"))
        b.append(("p", f"Objectives (minimised): {', '.join(d['objectives'])}; {d['n_evaluations']} designs "
                       f"evaluated; {len(d['pareto'])} on the Pareto front; no design computed more than "
                       f"{d['max_computations_per_design']} time(s). Layers: {', '.join(d['layers'])}."))
        head = ["#", "multipliers (per layer)", "area um2", "power mW", "accuracy %", "acc. loss pp", "attack success %"]
        b.append(("table", [head] + [[str(k), " ".join(p["multipliers"]), _fmt(p["area_um2"]), _fmt(p["power_mw"]),
                                     _fmt(p["accuracy"]), _fmt(p["acc_loss"]), _fmt(p.get("vulnerability"))]
                                    for k, p in enumerate(d["pareto"])]))
        b.append(("img", "dse/pareto_scatter.png"))
        b.append(("img", "dse/hypervolume.png"))
    hw = run / "dse" / "hw_synth.json"
    if hw.exists():  # dse hw_cost: synth
        from flows.hwcost import correlation_text, hw_table

        d = json.loads(hw.read_text())
        b.append(("h3", "Pareto front after synthesis and place and route"))
        b.append(("p", correlation_text(d)))
        b.append(("table", hw_table(d)))

    att = run / "attacks"
    if att.is_dir():
        rows = []
        for f in sorted(att.glob("*.summary.json")):
            s = json.loads(f.read_text())
            s = s.get("summary", s)
            rows.append([f.name.removesuffix(".summary.json"), str(s["n"]), f"{100 * s['success_rate']:.1f}",
                         _fmt(s.get("median_queries")), _fmt(s.get("median_psnr")), _fmt(s.get("median_ssim"))])
        if rows:
            b.append(("h2", "Attacks"))
            b.append(("table", [["run (implementation_attack)", "images", "success %", "median queries",
                                 "median PSNR dB", "median SSIM"]] + rows))

    tm = run / "transfer" / "transfer_matrix.csv"
    if tm.exists():
        b.append(("h2", "Transferability"))
        b.append(("p", "Rate at which adversarial examples crafted on the row's implementation fool the column's."))
        b.append(("table", _table_from_csv(tm)))
        b.append(("img", "transfer/transfer.png"))

    det = run / "detect" / "detection.csv"
    if (run / "detect.skipped").exists():
        b.append(("h2", "Detection (KL divergence under input transformations)"))
        b.append(("p", f"Not run: {(run / 'detect.skipped').read_text().strip()}."))
    if det.exists():
        b.append(("h2", "Detection (KL divergence under input transformations)"))
        b.append(("table", _table_from_csv(det)))
        b.append(("img", "detect/boxplot.png"))
    b += _export_blocks(run)
    return b


def _export_blocks(run: Path) -> list[Block]:
    manifest = run / "export" / "manifest.json"
    if not manifest.exists():
        return []
    m = json.loads(manifest.read_text())
    b: list[Block] = [("h2", f"Export: {m['design']['name']} to Verilog")]
    acc = m.get("accuracy") or {}
    b.append(("table", [["layer", "multiplier", "lanes", "clocks per image", "netlist sha256"]] + [
        [ly["layer"], ly["multiplier"], str(ly["lanes"]), str(ly["clocks_per_image"]), ly["netlist"]["sha256"][:16]]
        for ly in m["layers"]]))
    est = m.get("estimate") or {}
    b.append(("p", f"Design accuracy {100 * acc.get('accuracy', 0):.2f} % on {acc.get('images')} {acc.get('dataset')} "
                   f"test images; multipliers {est.get('multiplier_area_um2', 0):.0f} um2, "
                   f"{est.get('multiplier_power_mw', 0):.2f} mW (estimate: {est.get('note', '')})."))
    res = run / "export" / "synth" / "resources.md"
    if res.exists():
        b.append(("p", res.read_text().split("\n\n")[0].strip()))
        rows = [line.strip("|").split("|") for line in res.read_text().splitlines()
                if line.startswith("|") and "---" not in line]
        b.append(("table", [[c.strip() for c in r] for r in rows]))
    log = run / "export.log"
    if log.exists():
        sim = [line.strip() for line in log.read_text().splitlines() if "co-simulation" in line]
        if sim:
            b.append(("p", sim[0]))
    return b


def _md(blocks: list[Block]) -> str:
    out = []
    for kind, v in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {v}\n")
        elif kind == "p":
            out.append(f"{v}\n")
        elif kind == "img":
            out.append(f"![{Path(v).stem}]({v})\n")
        elif kind == "table":
            head, *rows = v
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
    return "\n".join(out) + "\n"


def _html(blocks: list[Block], title: str) -> str:
    e = html.escape
    body = []
    for kind, v in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(v)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{e(v)}</p>")
        elif kind == "img":
            body.append(f'<p><img src="{e(v)}" alt="{e(Path(v).stem)}" style="max-width:100%"></p>')
        elif kind == "table":
            head, *rows = v
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_report(run: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html into ``run``; returns their paths."""
    from hwsim.errors import AxlabError

    run = Path(run)
    if not run.is_dir():
        raise AxlabError(f"run folder {run} not found")
    title = title or f"axlab report: {run.name}"
    blocks = _blocks(run, title)
    if len(blocks) <= 1:
        raise AxlabError(f"{run}: nothing to report (no outputs of axlab run/dse found)")
    md, page = run / "report.md", run / "report.html"
    md.write_text(_md(blocks))
    page.write_text(_html(blocks, title))
    return md, page
