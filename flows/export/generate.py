"""``export``: write the export folder of a design (RTL, provenance netlists, memories, test
bench, synthesis scripts and report, manifest), atomically."""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flows.export.cycles import cycles_per_image
from flows.export.folder import (DEFAULT_IMAGES, DEFAULT_LANES, FORMAT, RTL_DIR, RTL_FILES, TB_MODULE, TB_SOURCE,
                                 TFL_RTL_FILES, TOP, replace_dir, save_npy, sha256_file, write_file)
from flows.export.memh import params_memh, tfl_params_memh, weights_memh
from flows.export.multipliers import layer_netlists
from flows.export.plan import clog2, ident, plan_network
from flows.export.synth import resources_md, synthesize
from flows.export.verilog import blackbox_verilog, top_verilog
from hwsim.errors import AxlabError
from nn.graph_check import is_tflite_graph


def bench_dataset(model: Any, bundle: Any, dataset: str | None) -> str:
    """The dataset of the test bench's images: ``dataset`` if given, else the model's own;
    AxlabError naming ``model`` when neither names one (an imported TFLite model names none)."""
    dataset = dataset or bundle.dataset
    if not dataset:
        raise AxlabError(f"{model} names no dataset: give --dataset (the test images for the test bench)")
    return dataset


def _accuracy(bundle: Any, luts: list[Any], dataset: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Top-1 accuracy of the design on ``dataset``'s whole test split ``x``, ``y`` (bit-identical numba
    backend; an imported model: argmax of its own output, the SOFTMAX codes, as ``axlab eval``)."""
    from nn.engine import IntegerEngine

    pred = IntegerEngine(bundle, luts, "numba").logits(x).argmax(axis=1)
    return {"dataset": dataset, "split": "test", "images": int(len(y)),
            "accuracy": round(float((pred == y).mean()), 6)}


def export(model: str | Path, design: str | Path, out: str | Path, images: int = DEFAULT_IMAGES,
           lanes: int = DEFAULT_LANES, synth: bool = True, progress: bool = False, target: str | None = None,
           dsp: str = "never", seed: int = 1, freq: float | None = None,
           dataset: str | None = None) -> dict[str, Any]:
    """Write the export folder ``out``; return the manifest. ``images``: test images stored for
    the test bench (the first ``images`` of the model's test split); ``lanes``: multipliers per
    conv/dense layer (output channels computed in parallel); ``synth``: run yosys. ``target``:
    an FPGA of :mod:`.devices` to synthesize (ABC) and place and route for (``pnr/``, see
    :mod:`.pnr`; nextpnr ``seed``, clock constraint ``freq`` in MHz, default the device's);
    ``dsp``: ``auto`` puts exact layers on behavioural multipliers that synthesis maps to DSP
    blocks (and lets the requantiser use them), ``never`` keeps every multiplier in LUT logic.
    ``dataset``: where the test images come from (default the model's own; an imported TFLite
    model names none). An imported TFLite network is planned by :mod:`.plan_tflite` (TFLite's
    requantiser, ADD, pooling and int8 SOFTMAX in RTL; the node the RTL ends with is the
    manifest's ``output``)."""
    from nn.bundle import load_model
    from nn.data import load_dataset
    from nn.design import load_design_dict, read_design
    from nn.engine import IntegerEngine
    from nn.zoo import model_file
    from hwsim.rtlsim import _renamed

    def say(msg: str) -> None:
        if progress:
            print(f"export: {msg}", file=sys.stderr, flush=True)

    missing = [f for f in RTL_FILES if not (RTL_DIR / f).is_file()]
    if missing:
        raise AxlabError(f"axlab's RTL not found ({RTL_DIR}/{missing[0]}); run from a source checkout "
                         "(pip install -e .)")
    if lanes < 1:
        raise AxlabError(f"--lanes must be >= 1, got {lanes}")
    if images < 1:
        raise AxlabError(f"--images must be >= 1, got {images}")
    if dsp not in ("auto", "never"):
        raise AxlabError(f"--dsp must be auto or never, got {dsp!r}")
    device = None
    if target is not None:
        from flows.export.devices import get_device

        device = get_device(target)
    if freq is not None and not 0.1 <= float(freq) <= 1000:
        raise AxlabError(f"--freq must be in [0.1, 1000] MHz, got {freq}")
    out = Path(out)
    model_path = model_file(model)  # zoo:NAME too
    bundle = load_model(model_path)
    tfl = is_tflite_graph(bundle.graph.nodes)
    dataset = bench_dataset(model_path, bundle, dataset)
    d = load_design_dict(design)
    luts = read_design(d, bundle)
    layers = bundle.layers()
    muls = layer_netlists(d, luts, layers)
    for m, lut in zip(muls, luts):  # exact 8x8 layers may go to DSP blocks (a behavioural multiply)
        m["dsp"] = dsp == "auto" and lut.bits_a == lut.bits_b == 8 and m["bits_o"] >= 16 and lut.is_exact()
    # parent writable? (checked before any work that takes time)
    parent = out.resolve().parent
    if out.exists() and not out.is_dir():
        raise AxlabError(f"output folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise AxlabError(f"output folder {out} is not empty and not an axlab export; refusing to replace it")
    if not parent.is_dir():
        raise AxlabError(f"cannot write {out}: parent folder {parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise AxlabError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    try:
        say("simulating the design in Python")
        engine = IntegerEngine(bundle, luts, "torch")
        if tfl:
            from flows.export.plan_tflite import plan_tflite

            steps, regions, ram_words, out_node = plan_tflite(bundle, engine, lanes)
        else:
            steps, regions, ram_words = plan_network(bundle, engine, lanes)
            out_node = bundle.graph.output
        aw = clog2(ram_words)
        x_test, y_test = load_dataset(dataset, "test")
        x = np.ascontiguousarray(x_test[:images])
        if tfl:  # the codes of the node the RTL ends with, in the RAM's (CHW) order
            expected = engine.run_all(x)[out_node].reshape(len(x), -1).numpy().astype(np.int32)
        else:
            expected = engine.logits(x).astype(np.int32)
        acc = _accuracy(bundle, luts, dataset, x_test, y_test)

        # multipliers: one renamed module per distinct netlist, original copies for provenance
        engine_files = RTL_FILES + (TFL_RTL_FILES if tfl else ())
        rtl_sources = [f"rtl/{f}" for f in engine_files]
        for f in engine_files:
            write_file(tmp / "rtl" / f, (RTL_DIR / f).read_text())
        by_sha: dict[str, dict[str, Any]] = {}
        used_names: set[str] = set()
        for m in muls:
            if m["netlist_sha256"] not in by_sha:
                k = len(by_sha)
                # the user's file name, reduced to characters that are safe in paths and comments
                fname = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(m["netlist_path"]).name)
                if not re.match(r"[A-Za-z0-9_]", fname):
                    fname = f"n{fname}"
                if fname in used_names:
                    fname = f"{k}_{fname}"
                used_names.add(fname)
                write_file(tmp / "netlists" / fname, Path(m["netlist_path"]).read_bytes())
                rtl_name = f"rtl/mul_{k}_{m['module']}.v"
                write_file(tmp / rtl_name, f"// {m['module']} from netlists/{fname}, module names suffixed __m{k}\n"
                       + _renamed(m["text"], f"m{k}"))
                rtl_sources.append(rtl_name)
                by_sha[m["netlist_sha256"]] = {"copy": f"netlists/{fname}", "rtl": rtl_name,
                                               "rtl_module": f"{m['module']}__m{k}"}
            m.update(by_sha[m["netlist_sha256"]])

        # memories
        layer_info = []
        for s in steps:
            if s.kind != "conv":
                continue
            p, L, m = s.params, s.params["_L"], muls[s.layer]
            tag = ident(s.node)
            wtxt, _ = weights_memh(L, p["P"])
            qtxt, _ = (tfl_params_memh if tfl else params_memh)(L, p["_const"], p["P"])
            write_file(tmp / "mem" / f"{tag}_w.memh", wtxt)
            write_file(tmp / "mem" / f"{tag}_q.memh", qtxt)
            # the raw quantised biases (documentation: the RTL uses them folded into const)
            write_file(tmp / "mem" / f"{tag}_bias.memh", "".join(f"{int(v) & 0xFFFFFFFF:08x}\n" for v in L.bq))
            macs = p["CO"] * p["HO"] * p["WO"] * p["C"] * p["KH"] * p["KW"]
            cost = m["cost"]
            layer_info.append({
                "layer": s.node,
                "op": "linear" if bundle.graph.by_name[s.node]["op"] in ("linear", "tfl_fc") else "conv",
                "multiplier": m["multiplier"], "lut_sha256": m["lut_sha256"], "signed": m["signed"],
                "netlist": {"source_path": m["netlist_path"], "sha256": m["netlist_sha256"], "copy": m["copy"],
                            "module": m["module"], "rtl": m["rtl"], "rtl_module": m["rtl_module"],
                            "provenance": m["provenance"]},
                "lanes": p["P"], "macs_per_image": int(macs), "dsp": bool(m["dsp"]),
                "clocks_per_image": int(-(-p["CO"] // p["P"]) * p["HO"] * p["WO"]
                                        * (p["C"] * p["KH"] * p["KW"] + p["P"])),
                "weights": f"mem/{tag}_w.memh", "params": f"mem/{tag}_q.memh", "bias": f"mem/{tag}_bias.memh",
                "quant": {"za": L.za, "zo": L.zo, "lo": L.lo, "hi": L.hi, "stride": list(L.stride),
                          "padding": list(L.padding), "kernel": [int(v) for v in L.w.shape[2:]],
                          "in_channels": int(L.w.shape[1]), "out_channels": int(L.w.shape[0]),
                          "params_word": ("{shift[7:0], M[31:0], const[31:0]}: TFLite MultiplyByQuantizedMultiplier "
                                          f"({'single' if p.get('_SINGLE') else 'double'} rounding), "
                                          "const = bias_q - za * sum(w)") if tfl else
                                         "{rs[7:0], m0[31:0], const[31:0]}, const = bias_q - za * sum(w)",
                          "weights_word": "lane l (co = g*P + l) in bits [8l+7:8l] of word g*K + k, "
                                          "k = (ci*kh + ky)*kw + kx"},
                "multiplier_cost": cost,
                "est_area_um2": None if cost.get("area_um2") is None else round(cost["area_um2"] * p["P"], 3),
                "est_power_mw": None if cost.get("power_mw") is None else round(cost["power_mw"] * p["P"], 5),
            })

        tables = []
        for s in steps:  # SOFTMAX: the model's exp table (256 x int32, Q0.31)
            if s.kind == "softmax":
                rel = f"mem/{ident(s.node)}_exp.memh"
                write_file(tmp / rel, "".join(f"{int(v):08x}\n" for v in s.params["_table"]))
                tables.append({"node": s.node, "file": rel, "words": 256, "hex_digits": 8,
                               "content": "exp_on_negative_values(mbqm(-d, mult, left)) for d = max - code in "
                                          "0..255, 0 below diff_min (Q0.31)"})
        top = top_verilog(steps, ram_words, aw, muls)
        write_file(tmp / "rtl" / f"{TOP}.v", top)
        rtl_sources.append(f"rtl/{TOP}.v")

        # test bench
        write_file(tmp / "tb" / f"{TB_MODULE}.py", TB_SOURCE.read_text())
        save_npy(tmp / "tb" / "images.npy", x)
        save_npy(tmp / "tb" / "expected.npy", expected)
        out_t = regions[out_node]
        classes = int(expected.shape[1])
        cfg = {"in_base": regions["input"].base, "in_shape": list(bundle.input_shape), "out_base": out_t.base,
               "classes": classes, "images": int(len(x)), "top": TOP}
        write_file(tmp / "tb" / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        write_file(tmp / "rtl" / "sources.f", "\n".join(rtl_sources) + "\n")
        write_file(tmp / "synth" / "memories_blackbox.v", blackbox_verilog())

        synth_summary = None
        if synth:
            say("synthesizing with yosys (generic gates, iCE40)")
            synth_summary = synthesize(tmp, rtl_sources)
            synth_summary["resources_md"] = "synth/resources.md"
            write_file(tmp / "synth" / "resources.md", resources_md(synth_summary, layer_info))
            write_file(tmp / "synth" / "resources.json", json.dumps(synth_summary, indent=2, sort_keys=True) + "\n")
        cycles = cycles_per_image(steps)
        pnr_summary = None
        if device is not None:
            from flows.export.pnr import place_and_route

            pnr_summary = place_and_route(tmp, rtl_sources, aw, device, dsp == "auto", seed, freq, cycles,
                                          int(np.prod(bundle.input_shape)), int(bundle.num_classes), say)

        areas = [li["est_area_um2"] for li in layer_info]
        powers = [li["est_power_mw"] for li in layer_info]
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "model": {"file": model_path.name, "sha256": bundle.sha256, "arch": bundle.arch,
                      "dataset": dataset, "input_shape": list(bundle.input_shape),
                      "classes": classes},
            "output": _output_info(bundle, out_node, classes),
            "tables": tables,
            "design": {"name": d.get("name"), "model": d.get("model")},
            "layers": layer_info,
            "steps": [{"kind": s.kind, "node": s.node} for s in steps],
            "ram_bytes": int(ram_words),
            "estimate": {"multiplier_area_um2": None if None in areas else round(sum(areas), 3),
                         "multiplier_power_mw": None if None in powers else round(sum(powers), 5),
                         "note": "sum over layers of lanes x the multiplier's cost (PDK45 published or "
                                 "axlab 45 nm estimate); engines and memories not included"},
            "accuracy": acc,
            "rtl": {"top": TOP, "sources": rtl_sources, "lanes": int(lanes)},
            "testbench": {"module": f"tb/{TB_MODULE}.py", "images": int(len(x)),
                          "reference": "nn.engine.IntegerEngine backend torch (gather-torch)"
                                       + (f", codes of node {out_node}" if tfl else "")},
            "synthesis": synth_summary,
            "cycles_per_image": int(cycles),
            "dsp": dsp,
            "pnr": pnr_summary,
            "files": files,
        }
        write_file(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AxlabError(f"cannot write the export {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _output_info(bundle: Any, out_node: str, codes: int) -> dict[str, Any]:
    """What the RTL leaves in RAM: the graph's output, or (an imported model ending with SOFTMAX)
    SOFTMAX's input, said plainly."""
    info: dict[str, Any] = {"node": out_node, "codes": codes}
    if out_node != bundle.graph.output:
        info["note"] = (f"the RTL stops at {out_node} (int8 codes, co-simulated bit for bit); the model's last "
                        f"operator {bundle.graph.output} (SOFTMAX) is not in the RTL: its argmax is the same "
                        "class except where SOFTMAX's int8 codes tie")
    return info
