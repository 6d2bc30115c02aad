"""The reference study's published tables (``../shared/thesis/*.csv``, read at report time,
never copied) beside the figures a thesis flow regenerated, with a one-line note per table.

:func:`load_study` reads the study folder (``{}`` when it is absent, so the report leaves the
study column out). The ``side_*`` functions take what the run measured (plain dicts, built
by :mod:`flows.report_thesis`) and return a table (list of rows, first row the header) whose
cells read ``ours / study`` and a note: the measured gap followed by the known methodological
differences that explain it. No figure of the study is hard-coded here.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

FILES = {"3.4": "table_3_4_nps_vs_sota.csv", "3.7": "table_3_7_ips_resnet24_cifar10.csv",
         "4.1": "table_4_1_multipliers.csv", "4.3": "table_4_3_accuracy_cost.csv",
         "4.4": "table_4_4_attack_success.csv", "4.5": "table_4_5_transfer_from_fp.csv",
         "4.7": "table_4_7_transfer_between_axnns.csv"}
# the study's attack columns -> axlab attack names
ATTACK_COLS = {"BIM": "bim", "PGD": "pgd", "CW": "cw", "DeepFool": "deepfool", "OP": "onepixel"}
ABBREV = {"MinNet": "M", "ResNet8": "R8", "ResNet24": "R24"}

# known methodological differences, quoted in the notes
DATA = ("ours: the zoo models trained on the 50,000 JPEG (quality ~75) CIFAR-10 training images (the MLPerf "
        "ResNet8: MLPerf Tiny's own training), tested on the 1,017 exact official test images; the study: the "
        "60,000 images pooled and split 60/20/20")
QAT = "axlab's own QAT (per-channel int8, float64 requantisation) vs the study's TFLite QAT"
MULS = ("the 13 EvoApprox mul8s of ../shared/evoapprox in axlab's LUTs vs the study's EvoApprox8b library "
        "in TensorFlow")
SMALL = "ours on {n} attacked images per cell"


def load_study(folder: str | Path | None) -> dict[str, list[dict[str, str]]]:
    """Rows of each study table found in ``folder`` keyed by table id ("4.3"); {} if absent."""
    if not folder or not Path(folder).is_dir():
        return {}
    out: dict[str, list[dict[str, str]]] = {}
    for table, name in FILES.items():
        f = Path(folder) / name
        if f.is_file():
            with open(f, newline="", encoding="utf-8") as fh:
                out[table] = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(fh)]
    return out


def _num(v: Any) -> float | None:
    """A float from a study cell ("86.36", "19.26±4.48" -> 19.26) or None (empty)."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).split("±")[0].strip()
    try:
        return float(s)
    except ValueError:
        return None


def _pair(ours: float | None, study: Any, fmt: str = ".1f", have_study: bool = True) -> str:
    o = "-" if ours is None else format(ours, fmt)
    if not have_study:
        return o
    s = "-" if study in (None, "") else str(study)
    return f"{o} / {s}"


def _gap(pairs: list[tuple[float | None, float | None]]) -> str:
    """Mean signed gap ours - study over the cells where both exist, in points."""
    d = [o - s for o, s in pairs if o is not None and s is not None]
    if not d:
        return "no cell with both figures"
    return f"mean gap ours - study {statistics.mean(d):+.1f} points over {len(d)} cell(s)"


def side_4_3(study: dict, nets: list[dict], acc: dict, cost: dict) -> tuple[list[list[str]], str]:
    """Table 4.3: accuracy %, power, area of FpNN / QNN / AxNN v1 per network.
    ``acc[(net, label)]`` = accuracy %, ``cost[(net, label)]`` = (power mW, area um2)."""
    rows_s = {(r["model"], r["implementation"]): r for r in study.get("4.3", [])}
    have = bool(rows_s)
    sep = " (ours / study)" if have else ""
    head = ["network", "implementation", f"accuracy %{sep}", f"power mW{sep}", f"area um2{sep}"]
    rows, pairs = [head], []
    for n in nets:
        for label in ("fp", "q", "ax_v1"):
            if (n["name"], label) not in acc:
                continue
            r = rows_s.get((n["study"], label), {})
            a = acc[(n["name"], label)]
            p, ar = cost.get((n["name"], label), (None, None))
            pairs.append((a, _num(r.get("accuracy_pct"))))
            rows.append([n["name"], label, _pair(a, r.get("accuracy_pct"), ".2f", have),
                         _pair(p, r.get("power_mW"), ".3g", have), _pair(ar, r.get("area_um2"), ".4g", have)])
    note = (f"Accuracy: {_gap(pairs)}; {DATA}; {QAT}; {MULS}. Power/area: ours is the MAC-weighted power/area of "
            "one multiplier (axlab's cost model, the QNN with the exact mul8s_1KV6), the study's a whole-network "
            "estimate, so only the ratios between implementations compare.")
    return rows, note


def side_4_4(study: dict, nets: list[dict], success: dict, n_max: int) -> tuple[list[list[str]], str]:
    """Table 4.4: attack success % per (network, implementation); ``success[(net, label, attack)]``."""
    rows_s = {(r["model"], r["implementation"]): r for r in study.get("4.4", [])}
    have = bool(rows_s)
    head = ["network", "implementation"] + [c + (" (ours / study)" if have else "") for c in ATTACK_COLS]
    rows, pairs = [head], []
    for n in nets:
        for label in ("fp", "q", "ax_v1"):
            cells = [success.get((n["name"], label, a)) for a in ATTACK_COLS.values()]
            if all(c is None for c in cells):
                continue
            r = rows_s.get((n["study"], label), {})
            pairs += [(c, _num(r.get(col))) for c, col in zip(cells, ATTACK_COLS)]
            rows.append([n["name"], label] + [_pair(c, r.get(col), ".1f", have) for c, col in zip(cells, ATTACK_COLS)])
    note = (f"{_gap(pairs)}; {SMALL.format(n=n_max)}. The study reports no white-box figure on QNN/AxNN "
            "('not applicable'); ours there are BPDA (straight-through) attacks. White-box steps 1/255 as in the "
            "study but with an 8/255 Linf budget (the study states none); images: Eq. 4.5 over every "
            f"implementation of the network. {DATA}.")
    return rows, note


def side_4_5(study: dict, nets: list[dict], rate: dict) -> tuple[list[list[str]], str]:
    """Table 4.5: transfer % FpNN -> target; ``rate[(net, target_label, attack)]``."""
    rows_s = {(r["model"], r["target"]): r for r in study.get("4.5", [])}
    have = bool(rows_s)
    head = ["network", "fp ->"] + [c + (" (ours / study)" if have else "") for c in ATTACK_COLS]
    rows, pairs = [head], []
    for n in nets:
        for label in ("q", "ax_v1"):
            cells = [rate.get((n["name"], label, a)) for a in ATTACK_COLS.values()]
            if all(c is None for c in cells):
                continue
            r = rows_s.get((n["study"], label), {})
            pairs += [(c, _num(r.get(col))) for c, col in zip(cells, ATTACK_COLS)]
            rows.append([n["name"], label] + [_pair(c, r.get(col), ".1f", have) for c, col in zip(cells, ATTACK_COLS)])
    note = (f"{_gap(pairs)}. Rate = share of the FpNN's successful examples that the target misclassifies, among "
            "images the target classifies correctly. Our QNN/AxNN are closer to the FpNN than TFLite's (same "
            f"weights, {QAT}), which raises transfer; {MULS}.")
    return rows, note


def side_4_7(study: dict, cross: list[dict]) -> tuple[list[list[str]], str]:
    """Tables 4.6/4.7: ``cross`` rows {source: (net, label, study_net, k), target: (net, label,
    study_net, k), rate %}; k = index of the AxNN within its network (AxC0, AxC1), None for fp/q."""
    rows_s = {r["source"]: r for r in study.get("4.7", [])}
    have = bool(rows_s)

    def code(net_study: str | None, label: str, k: int | None) -> str | None:
        if not net_study:
            return None
        kind = "Fp" if label == "fp" else "Q" if label == "q" else f"AxC{k}" if k is not None and k < 2 else None
        return f"{kind}{ABBREV[net_study]}" if kind else None

    sources = list(dict.fromkeys(c["source"] for c in cross))
    targets = list(dict.fromkeys(c["target"] for c in cross))
    by = {(c["source"], c["target"]): c["rate"] for c in cross}
    head = ["source \\ target" + (" (ours / study)" if have else "")] + \
        [f"{t[0]}:{t[1]}" + (f" [{code(t[2], t[1], t[3])}]" if code(t[2], t[1], t[3]) else "") for t in targets]
    rows, pairs = [head], []
    for s in sources:
        sc = code(s[2], s[1], s[3])
        r = rows_s.get(sc or "", {})
        row = [f"{s[0]}:{s[1]}" + (f" [{sc}]" if sc else "")]
        for t in targets:
            tc = code(t[2], t[1], t[3])
            o = by.get((s, t))
            pairs.append((o, _num(r.get(tc or ""))))
            row.append(_pair(o, r.get(tc or "") if r else None, ".1f", have))
        rows.append(row)
    note = (f"{_gap(pairs)}. Incremental One-Pixel crafted on each AxNN (rows) fed to every implementation "
            "(columns); [codes] are the study's names (AxC0/AxC1: our first and second AxNN of the network, "
            "AxNN v1 first). The study crafted on 2,254-2,646 images per source, ours on far fewer; "
            f"{MULS}.")
    return rows, note


def stand_in(row_net: str, row_study: str | None) -> str:
    """A note that ``row_net`` stands in for the study's ResNet24 ('' when it is a ResNet24)."""
    if row_study == "ResNet24":
        return ""
    return (f" Ours on {row_net}{f' ({row_study})' if row_study else ''} as a STAND-IN for the study's ResNet24 "
            "(not trained here), so the rows compare different networks.")


def side_3_4(study: dict, row_net: str, success: dict, n_max: int,
             row_study: str | None = "ResNet24") -> tuple[list[list[str]], str]:
    """Table 3.4: success % of ``success[label]`` (NPs, OP, SimBA, BIM, PGD) on one network
    (``row_study``: the study network it is; anything but ResNet24 is noted as a stand-in)."""
    r = next((x for x in study.get("3.4", []) if x.get("network") == "ResNet24"), {})
    have = bool(r)
    cols = ["NPs", "OP", "SimBA", "BIM", "PGD"]
    success = {**success, "OP": success.get("OP", success.get("OP1"))}   # OP: the 1-pixel run
    rows = [["network"] + [c + (" (ours / study)" if have else "") for c in cols],
            [row_net] + [_pair(success.get(c), r.get(c), ".1f", have) for c in cols]]
    note = (f"{_gap([(success.get(c), _num(r.get(c))) for c in cols])}; {SMALL.format(n=n_max)}. NPs successes "
            f"count only with PSNR >= 30 dB (omega_w = 70) as in the study. {DATA}; the study's ResNet24 "
            "row only (its other rows are other data sets)." + stand_in(row_net, row_study))
    return rows, note


def side_3_7(study: dict, stats: dict, n_max: int, row_net: str = "",
             row_study: str | None = "ResNet24") -> tuple[list[list[str]], str]:
    """Table 3.7: per run label (IP, OP1, OP1%, SQ, PX) success %, L0, Linf, PSNR, queries
    (``stats[label]`` = {success, l0, linf, psnr, queries}; each metric a 'mean±var' string)."""
    rows_s = {r["attack"]: r for r in study.get("3.7", [])}
    have = bool(rows_s)
    keys = [("success", "success_rate"), ("l0", "l0"), ("linf", "linf"), ("psnr", "psnr"), ("queries", "queries")]
    head = ["attack"] + [k + (" (ours / study)" if have else "") for k, _ in keys]
    rows, pairs = [head], []
    for label, st in stats.items():
        r = rows_s.get(label, {})
        pairs.append((st.get("success"), _num(r.get("success_rate"))))
        row = [label, _pair(st.get("success"), r.get("success_rate"), ".1f", have)]
        for k, sk in keys[1:]:
            o = st.get(k) or "-"
            row.append(f"{o} / {r.get(sk) or '-'}" if have else o)
        rows.append(row)
    note = (f"Success: {_gap(pairs)}; {SMALL.format(n=n_max)}. Metrics mean±variance over successful images; "
            "our L0 counts changed channel values (the study's unit is not stated), Linf in [0, 1]; the study's "
            f"SQ row is printed shifted. {DATA}." + stand_in(row_net, row_study))
    return rows, note


DETECT_NOTE = ("The study shows these as box plots without a number; ours add ROC AUC (clean vs adversarial) per "
               "transformation and implementation, so there is no study column to set beside them.")
