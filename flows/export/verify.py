"""``verify``: re-verify an export folder on its own (``axlab export verify DIR``).

The folder is first checked as untrusted input (:func:`flows.export.integrity.check_export`:
manifest, paths, sha256 of every file, content of everything a tool reads). Then exactly the
checked texts are staged in a private work folder (Verilog, ``$readmemh`` memories, test images,
the expected outputs recorded at export time) with this axlab's own copy of the cocotb test
bench (the ``tb/*.py`` in the folder is never run), Verilator builds the RTL (cached by source
content) and the bench compares the RTL's output codes with the recorded ones, image by image.

The reference is the Python simulator's output computed from the model and design at export
time, not anything recomputed from the folder, so a changed weight, parameter or netlist that
changes an output makes the bench fail even when the manifest's hashes were rewritten too.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flows.export.folder import TB_MODULE, TB_SOURCE, TOP, VERILATOR_ARGS, save_npy, write_file
from flows.export.integrity import CheckedExport, check_export
from hwsim.errors import AxlabError
from nn.graph_check import is_tflite_graph


def _stage(ck: CheckedExport, work: Path, images: int) -> list[Path]:
    """Write the checked texts and arrays into ``work`` (same relative layout as the export);
    return the Verilog source paths in compile order."""
    sources = []
    for rel, text in ck.sources.items():
        write_file(work / rel, text)
        sources.append(work / rel)
    for rel, text in ck.memories.items():
        write_file(work / rel, text)
    cfg = dict(ck.config, images=images)
    write_file(work / "tb" / "config.json", json.dumps(cfg, sort_keys=True) + "\n")
    save_npy(work / "tb" / "images.npy", ck.images[:images])
    save_npy(work / "tb" / "expected.npy", ck.expected[:images])
    write_file(work / "bench" / f"{TB_MODULE}.py", TB_SOURCE.read_text())
    return sources


def first_mismatch(rows: list[dict[str, Any]], expected: np.ndarray) -> dict[str, Any] | None:
    """The first (image, output index) where the RTL's code differs from the recorded one, or None."""
    for r in rows:
        want = [int(v) for v in expected[r["image"]]]
        for k, (got, exp) in enumerate(zip(r["rtl"], want)):
            if got != exp:
                return {"image": r["image"], "output": k, "rtl": got, "expected": exp}
        if len(r["rtl"]) != len(want):
            return {"image": r["image"], "output": min(len(r["rtl"]), len(want)), "rtl": None, "expected": None}
    return None


def mismatch_message(out: str | Path, res: dict[str, Any]) -> str:
    """One line describing a failed co-simulation result of :func:`verify`."""
    f = res["first_mismatch"]
    bad = res["images"] - res["bit_exact"]
    return (f"export {out}: RTL co-simulation differs from the outputs recorded at export time on {bad} of "
            f"{res['images']} images; first at image {f['image']} output {f['output']}: RTL code {f['rtl']}, "
            f"expected {f['expected']}")


def check_reference(ck: CheckedExport, model: str | Path, design: str | Path) -> None:
    """Tie the folder to a model and design the user holds: the model's sha256, each layer's
    LUT and netlist sha256 must be the manifest's, and the Python simulator's output codes on
    the stored images must equal ``tb/expected.npy`` over the whole (N, classes) array. So even a
    folder whose expected outputs and manifest were rewritten together is caught."""
    from nn.bundle import load_model
    from nn.design import read_design
    from nn.engine import IntegerEngine

    bundle = load_model(model)
    if bundle.sha256 != ck.manifest["model"].get("sha256"):
        raise AxlabError(f"export {ck.root}: model {model} (sha256 {bundle.sha256[:16]}...) is not the exported "
                         f"model ({str(ck.manifest['model'].get('sha256'))[:16]}... in manifest.json)")
    luts = read_design(design, bundle)
    if len(luts) != len(ck.manifest["layers"]):
        raise AxlabError(f"export {ck.root}: design {design} has {len(luts)} layers, the export "
                         f"{len(ck.manifest['layers'])}")
    for i, (lut, ly) in enumerate(zip(luts, ck.manifest["layers"])):
        net = (lut.meta.get("provenance") or {}).get("netlist_sha256")
        if lut.sha256 != ly.get("lut_sha256") or net != ly["netlist"].get("sha256"):
            raise AxlabError(f"export {ck.root}: layers[{i}] ({ly.get('layer')}): the design's multiplier {lut.name} "
                             "is not the exported one (LUT or netlist sha256 differs from manifest.json)")
    eng = IntegerEngine(bundle, luts, "torch")
    node = (ck.manifest.get("output") or {}).get("node")
    if is_tflite_graph(bundle.graph.nodes) and node is not None:
        if node not in bundle.graph.by_name:
            raise AxlabError(f"export {ck.root}: manifest.json output.node {str(node)[:60]!r} is not a node of {model}")
        # an imported model's RTL may stop before its last operator (SOFTMAX): that node's codes
        ref = eng.run_all(ck.images)[node].reshape(len(ck.images), -1).numpy().astype(np.int32)
    else:
        ref = eng.logits(ck.images).astype(np.int32)
    if ref.shape != ck.expected.shape:
        raise AxlabError(f"export {ck.root}: tb/expected.npy has shape {ck.expected.shape}, the simulator's output of "
                         f"{model} {ref.shape}")
    bad = np.argwhere(ref != ck.expected)
    if len(bad):
        i, k = (int(v) for v in bad[0])
        raise AxlabError(f"export {ck.root}: tb/expected.npy is not the simulator's output of {model} with {design}: "
                         f"first at image {i} output {k}: recorded {int(ck.expected[i, k])}, "
                         f"simulator {int(ref[i, k])}")


def verify(out: str | Path, images: int | None = None, quiet: bool = True, model: str | Path | None = None,
           design: str | Path | None = None) -> dict[str, Any]:
    """Check the export folder ``out`` (AxlabError names the first problem), build its RTL with
    Verilator, run the cocotb test bench on the first ``images`` stored images (default all) and
    return {'images', 'bit_exact', 'rows': [{'image', 'rtl', 'sim', 'match', 'cycles'}],
    'first_mismatch': None or {'image', 'output', 'rtl', 'expected'}, 'seconds'}; outputs are
    int8 codes. A mismatch is a result (bit_exact < images), not an exception. With ``model``
    and ``design`` the recorded outputs are first checked against them (:func:`check_reference`)."""
    from cocotb_tools.runner import get_runner

    from hwsim.rtlsim import _ensure, _quiet_runner, _tail
    from hwsim.tools import cache_dir, setup_verilator, simulator_version

    t0 = time.perf_counter()
    ck = check_export(out)
    stored = len(ck.images)
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise AxlabError(f"--images must be an integer >= 1, got {images!r}")
    n = stored if images is None else min(images, stored)
    if (model is None) != (design is None):
        raise AxlabError("export verify: give both --model and --design (the reference to check against), or neither")
    if model is not None:
        check_reference(ck, model, design)
    t_check = time.perf_counter() - t0
    setup_verilator()
    version = simulator_version("verilator")
    work = Path(tempfile.mkdtemp(prefix="run-", dir=_ensure(cache_dir() / "sims")))
    bench = str(work / "bench")
    try:
        sources = _stage(ck, work, n)
        key = hashlib.sha256((version + "\0" + " ".join(VERILATOR_ARGS)).encode())
        for s in sources:
            key.update(s.name.encode() + b"\0" + s.read_bytes() + b"\0")
        build_dir = cache_dir() / "sims" / f"export-{key.hexdigest()[:24]}"
        runner = get_runner("verilator")
        t1 = time.perf_counter()
        if not (build_dir / TOP).exists():
            tmp = Path(tempfile.mkdtemp(prefix="build-", dir=_ensure(cache_dir() / "sims")))
            try:
                with _quiet_runner(quiet):
                    runner.build(sources=sources, hdl_toplevel=TOP, build_dir=tmp, build_args=list(VERILATOR_ARGS),
                                 always=True, log_file=tmp / "build.log")
            except (SystemExit, Exception) as exc:
                detail = " | ".join(_tail(tmp / "build.log", 400).strip().splitlines()[-3:])
                shutil.rmtree(tmp, ignore_errors=True)
                raise AxlabError(f"verilator build of {ck.root} failed: {exc} ({detail})") from None
            if build_dir.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(build_dir)
        t_build = time.perf_counter() - t1
        sys.path.insert(0, bench)
        result_path = work / "result.json"
        env = {"AXLAB_EXPORT_RESULT": str(result_path), "AXLAB_EXPORT_IMAGES": str(n)}
        t2 = time.perf_counter()
        try:
            with _quiet_runner(quiet):
                runner.test(test_module=TB_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=work, results_xml=str(work / "results.xml"),
                            extra_env=env, log_file=work / "sim.log")
        except SystemExit:  # the runner exits when the test fails; the result file says why
            pass
        if not result_path.exists():
            tail = " | ".join(_tail(work / "sim.log", 600).strip().splitlines()[-3:])
            raise AxlabError(f"RTL simulation of {ck.root} produced no result ({tail})")
        res = json.loads(result_path.read_text())
        # judged here against the checked reference, not by the bench's own verdict
        res["first_mismatch"] = first_mismatch(res["rows"], ck.expected)
        for r in res["rows"]:
            r["sim"] = [int(v) for v in ck.expected[r["image"]]]
            r["match"] = r["rtl"] == r["sim"]
        res["bit_exact"] = sum(r["match"] for r in res["rows"])
        if res["images"] != n or len(res["rows"]) != n:
            raise AxlabError(f"RTL simulation of {ck.root} ran {len(res['rows'])} of {n} images")
        res["seconds"] = {"check": round(t_check, 2), "build": round(t_build, 2),
                          "simulate": round(time.perf_counter() - t2, 2)}
        return res
    finally:
        if bench in sys.path:
            sys.path.remove(bench)
        shutil.rmtree(work, ignore_errors=True)
