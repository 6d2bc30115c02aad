"""The report of a thesis flow run (``thesis.json`` in the run folder): the study's tables as
regenerated, each followed, when the flow names the study's folder as ``reference:``, by the
study's published table beside ours (:mod:`flows.reference_tables`) and a one-line note.

``reference`` may also be a CSV (table,row,column,value), shown as given under each table.
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from flows import reference_tables as rt
from flows.report import Block, _fmt, _table_from_csv


def _legacy_reference(cfg: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Figures per table from a ``reference`` CSV (table,row,column,value)."""
    path = cfg.get("reference")
    if not path or not Path(path).is_file():
        return {}
    out: dict[str, list[list[str]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["table"], []).append([r["row"], r["column"], r["value"]])
    return out


def _with_legacy(b: list[Block], ref: dict[str, list[list[str]]], table: str) -> None:
    if table in ref:
        b.append(("p", f"The thesis' own figures ({table}):"))
        b.append(("table", [["row", "column", "thesis"]] + ref[table]))


def _side(b: list[Block], title: str, table: tuple[list[list[str]], str], have: bool) -> None:
    rows, note = table
    if len(rows) <= 1:
        return
    b += [("h3", title + (" beside the study's" if have else "")), ("table", rows), ("p", f"Note: {note}")]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _nets(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    nets = cfg.get("nets") or [{"name": n, "study": {"minnet": "MinNet", "resnet8": "ResNet8",
                                                      "resnet24": "ResNet24"}.get(n), "float": True}
                               for n in cfg["networks"]]
    return nets


def _mean_var(vals: list[float], fmt: str) -> str:
    if not vals:
        return "-"
    var = statistics.pvariance(vals) if len(vals) > 1 else 0.0
    return f"{format(statistics.mean(vals), fmt)}±{format(var, fmt)}"


def _run_stats(jsonl: Path) -> dict[str, Any]:
    """Success % and mean±variance of L0, Linf, PSNR, queries over the successful images."""
    from attacks.runner import read_records

    recs = read_records(jsonl)
    ok = [r for r in recs if r.get("success")]

    def mv(key: str, fmt: str) -> str:
        return _mean_var([float(r[key]) for r in ok if r.get(key) is not None], fmt)

    return {"n": len(recs), "success": 100.0 * len(ok) / len(recs) if recs else None, "l0": mv("l0", ".2f"),
            "linf": mv("linf", ".2f"), "psnr": mv("psnr", ".2f"), "queries": mv("queries", ".1f")}


def _transfer_rates(folder: Path) -> list[tuple[Any, Any, float]]:
    """(source, target, rate %) of a transfer folder, named by its layout.json."""
    lay, tcsv = _json(folder / "layout.json"), folder / "transfer.csv"
    if not lay or not tcsv.exists():
        return []
    with open(tcsv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    srcs = list(dict.fromkeys(r["source"] for r in rows))
    tgts = list(dict.fromkeys(r["target"] for r in rows))
    if len(srcs) != len(lay["sources"]) or len(tgts) != len(lay["targets"]):
        return []
    out = []
    for r in rows:
        rate = float(r["rate"])
        if rate == rate:                                  # nan: no valid image
            out.append((lay["sources"][srcs.index(r["source"])], lay["targets"][tgts.index(r["target"])],
                        100.0 * rate))
    return out


def thesis_blocks(run: Path) -> list[Block]:
    cfg = json.loads((run / "thesis.json").read_text())
    nets = _nets(cfg)
    names = [n["name"] for n in nets]
    legacy = _legacy_reference(cfg)
    ref = cfg.get("reference")
    study = rt.load_study(ref)
    have = bool(study)
    b: list[Block] = []
    if ref and Path(ref).is_dir() and not study:
        b.append(("p", f"The reference folder {ref} holds none of the study's tables; study columns left out."))
    elif ref and not Path(ref).exists():
        b.append(("p", f"The reference {ref} is absent here; the study's columns are left out."))
    elif not ref:
        b.append(("p", "No `reference:` given: the study's tables are not shown (point it at the folder of the "
                       "study's CSV tables, e.g. ../shared/thesis)."))
    for net, text in (cfg.get("notes") or {}).items():
        b.append(("p", f"{net}: {text}"))

    ax_labels = [f"ax_{Path(m).stem}" for m in cfg["ax"]]
    ev = run / "eval"
    if ev.is_dir():
        b += _table_4_3(run, cfg, nets, study, have)
        _with_legacy(b, legacy, "4.3")

    att = run / "attacks"
    n_max = 0
    if att.is_dir():
        b.append(("h2", "Table 4.4: attack success rate per implementation"))
        b.append(("p", "Success rate (%) over the images every implementation under study classifies correctly "
                       "(thesis Eq. 4.5); white-box attacks on QNN/AxNN use the straight-through (BPDA) surrogate."))
        success: dict[tuple[str, str, str], float] = {}
        for n in names:
            labels = ["fp", "q", "ax_v1"] + ax_labels
            rows, used = [], set()
            for a in cfg["attacks"]:
                row = [a]
                for label in labels:
                    d = _json(att / f"{n}__{label}__{a}.summary.json")
                    if d:
                        used.add(label)
                        success[(n, label, a)] = 100 * d["success_rate"]
                        n_max = max(n_max, d["n"])
                        row.append(f"{100 * d['success_rate']:.1f} (n={d['n']})")
                    elif (att / f"{n}__{label}__{a}.skipped").exists():
                        used.add(label)
                        row.append("n/a")
                    else:
                        row.append("-")
                rows.append(row)
            keep = [i for i, lb in enumerate(labels) if lb in used]
            if keep:
                b += [("h3", n), ("table", [["attack"] + [labels[i] for i in keep]]
                                  + [[r[0]] + [r[i + 1] for i in keep] for r in rows])]
        _side(b, "Table 4.4", rt.side_4_4(study, nets, success, n_max), have)
        _with_legacy(b, legacy, "4.4")

    mats = [(n, run / "transfer" / n / "transfer_matrix.csv") for n in names]
    mats = [(n, tm) for n, tm in mats if tm.exists()]
    if mats:
        b += [("h2", "Table 4.5: transferability FpNN -> QNN/AxNN"),
              ("p", "Share of the FpNN's successful adversarial examples (row: attack run) that also "
                    "fool the column's implementation.")]
        rates: dict[tuple[str, str, str], float] = {}
        for n, tm in mats:
            b += [("h3", n), ("table", _table_from_csv(tm)), ("img", f"transfer/{n}/transfer.png")]
            for a, label, r in _transfer_rates(run / "transfer" / n):
                rates[(n, label, a)] = r
        _side(b, "Table 4.5", rt.side_4_5(study, nets, rates), have)
    _with_legacy(b, legacy, "4.5")

    b += _pixels_blocks(run, cfg, study, have)

    cm = run / "cross" / "transfer_matrix.csv"
    if cm.exists():
        b += [("h2", f"Tables 4.6/4.7: transfer from AxNNs across networks ({cfg['cross_attack']})"),
              ("p", "Rows: AxNN the examples were crafted on; columns: implementation they are fed to."),
              ("table", _table_from_csv(cm)), ("img", "cross/transfer.png")]
        by_net = {n["name"]: n for n in nets}
        lay = _json(run / "cross" / "layout.json") or {}
        order = {}                                        # (net, label) -> AxNN index in its network
        for net, label in (lay.get("targets", []) + lay.get("sources", [])):
            if label.startswith("ax_") and (net, label) not in order:
                order[(net, label)] = sum(1 for k in order if k[0] == net)

        def key(t: list[str]) -> tuple:
            return (t[0], t[1], by_net.get(t[0], {}).get("study"), order.get(tuple(t)))
        cross = [{"source": key(s), "target": key(t), "rate": r} for s, t, r in _transfer_rates(run / "cross")]
        _side(b, "Table 4.7", rt.side_4_7(study, cross), have)
        _with_legacy(b, legacy, "4.7")

    det = sorted((run / "detect").glob("*/detection.csv")) if (run / "detect").is_dir() else []
    skipped = sorted((run / "detect").glob("*.skipped")) if (run / "detect").is_dir() else []
    if det or skipped:
        b.append(("h2", "Figures 4.23/4.24: KL-divergence detection"))
        for f in det:
            b += [("h3", f.parent.name.replace("__", ", ")), ("table", _table_from_csv(f)),
                  ("img", f"detect/{f.parent.name}/boxplot.png")]
        for f in skipped:
            b.append(("p", f"{f.stem.replace('__', ', ')}: not run ({f.read_text().strip()})"))
        b.append(("p", f"Note: {rt.DETECT_NOTE}"))
    return b


def _table_4_3(run: Path, cfg: dict[str, Any], nets: list[dict[str, Any]], study: dict, have: bool) -> list[Block]:
    ev = run / "eval"
    names = [n["name"] for n in nets]
    luts = {r["name"]: r for r in json.loads((run / "luts.json").read_text())} if (run / "luts.json").exists() else {}
    labels = ["fp", "q", "ax_v1"] + [f"ax_{Path(m).stem}" for m in cfg["multipliers"]]
    head = ["implementation", "MAE %", "power mW", "area um2"] + [f"{n} accuracy %" for n in names]
    rows = []
    acc: dict[tuple[str, str], float] = {}
    for label in labels:
        name = label[3:] if label.startswith("ax_") and label != "ax_v1" else ""
        lut = luts.get(name, {})
        cells = []
        for n in names:
            d = _json(ev / f"{n}__{label}.json")
            if d:
                acc[(n, label)] = 100 * d["accuracy"]
            cells.append(f"{100 * d['accuracy']:.2f}" if d else "-")
        if label == "ax_v1" and all(c == "-" for c in cells):
            continue
        rows.append([{"fp": "FpNN", "q": "QNN", "ax_v1": "AxNN v1 (DSE)"}.get(label, f"AxNN {name}"),
                     _fmt(lut.get("mae_pct")), _fmt(lut.get("power_mw")), _fmt(lut.get("area_um2"))] + cells)
    b: list[Block] = [("h2", "Table 4.3: accuracy and cost of FpNN, QNN and AxNNs"),
                      ("p", "Test accuracy with the multiplier in every conv/dense layer (AxNN v1: the DSE's "
                            "lowest-power design within the accuracy budget of the QNN); power and area of one "
                            "multiplier (published PDK45 figures, or axlab's estimate where the netlist has none)."),
                      ("table", [head] + rows)]
    # cost per implementation: the QNN with the exact multiplier, AxNN v1 from the DSE's cost model
    exact = next((r for r in luts.values() if r.get("mae_pct") == 0), None)
    cost: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for n in names:
        if exact:
            cost[(n, "q")] = (exact.get("power_mw"), exact.get("area_um2"))
        if (run / "dse" / f"{n}.skipped").exists():
            b.append(("p", (run / "dse" / f"{n}.skipped").read_text().strip() + "."))
        ch = _json(run / "dse" / n / "v1.choice.json")
        if ch:
            cost[(n, "ax_v1")] = (ch.get("power_mw"), ch.get("area_um2"))
            loss = ch.get("acc_loss")
            gap = "" if loss is None else \
                f", {_fmt(abs(loss))} points {'below' if loss >= 0 else 'above'} the QNN"
            b.append(("p", f"{n}: AxNN v1 = {' '.join(ch.get('multipliers') or [])} (DSE validation accuracy "
                           f"{_fmt(ch.get('accuracy'))} %{gap}"
                           + ("" if ch.get("within_budget") else f"; no design within {ch.get('max_acc_loss')} "
                              "points, the most accurate taken") + ")."))
    _side(b, "Table 4.3", rt.side_4_3(study, nets, acc, cost), have)
    return b


def _pixels_blocks(run: Path, cfg: dict[str, Any], study: dict, have: bool) -> list[Block]:
    px = cfg.get("pixels")
    d = run / "pixels"
    if not px or not d.is_dir():
        return []
    from flows.thesis_networks import slug

    stats, success, n_max, skipped = {}, {}, 0, []
    for r in px["runs"]:
        f = d / f"{slug(r['label'])}.jsonl"
        if f.exists():
            st = _run_stats(f)
            stats[r["label"]], success[r["label"]] = st, st["success"]
            n_max = max(n_max, st["n"])
        elif (d / f"{slug(r['label'])}.skipped").exists():
            skipped.append(r["label"])
    b: list[Block] = [("h2", f"Tables 3.4/3.7: N-Pixels and Incremental Pixels vs baselines "
                             f"({px['network']}, {px['impl']})")]
    head = ["run", "attack", "images", "success %", "L0", "Linf", "PSNR dB", "queries"]
    rows = [[r["label"], r["attack"], str(stats[r["label"]]["n"]), _fmt(stats[r["label"]]["success"]),
             *(stats[r["label"]][k] for k in ("l0", "linf", "psnr", "queries"))]
            for r in px["runs"] if r["label"] in stats]
    b.append(("table", [head] + rows))
    if skipped:
        b.append(("p", f"Not run: {', '.join(skipped)} (see the .skipped notes in pixels/)."))
    row_study = next((n.get("study") for n in _nets(cfg) if n["name"] == px["network"]), None)
    _side(b, "Table 3.4", rt.side_3_4(study, px["network"], success, n_max, row_study), have)
    t37 = {k: v for k, v in stats.items() if k in ("IP", "OP1", "OP1%", "SQ", "PX")}
    if t37:
        _side(b, "Table 3.7", rt.side_3_7(study, t37, n_max, px["network"], row_study), have)
    return b
