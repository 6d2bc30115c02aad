"""``verify``: co-simulate an export folder's RTL in Verilator with its cocotb test bench."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flows.export.folder import TB_MODULE, TOP, VERILATOR_ARGS
from hwsim.errors import AxlabError


def verify(out: str | Path, images: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Build the export's RTL with Verilator (cached by source content), run the cocotb test
    bench on ``images`` stored images (default all) and return its result
    ({'images', 'bit_exact', 'rows': [{'image', 'rtl', 'sim', 'match', 'cycles'}], 'seconds'})."""
    from cocotb_tools.runner import get_runner

    from hwsim.rtlsim import _ensure, _quiet_runner, _tail
    from hwsim.tools import cache_dir, setup_verilator, simulator_version

    out = Path(out).resolve()
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AxlabError(f"{out}: not an axlab export (manifest.json unreadable: {exc})") from None
    setup_verilator()
    version = simulator_version("verilator")
    sources = [out / s for s in manifest["rtl"]["sources"]]
    key = hashlib.sha256((version + "\0" + " ".join(VERILATOR_ARGS)).encode())
    for s in sources:
        key.update(s.name.encode() + b"\0" + s.read_bytes() + b"\0")
    build_dir = cache_dir() / "sims" / f"export-{key.hexdigest()[:24]}"
    runner = get_runner("verilator")
    t0 = time.perf_counter()
    if not (build_dir / TOP).exists():
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=_ensure(cache_dir() / "sims")))
        try:
            with _quiet_runner(quiet):
                runner.build(sources=sources, hdl_toplevel=TOP, build_dir=tmp, build_args=list(VERILATOR_ARGS),
                             always=True, log_file=tmp / "build.log")
        except (SystemExit, Exception) as exc:
            detail = _tail(tmp / "build.log")
            shutil.rmtree(tmp, ignore_errors=True)
            raise AxlabError(f"verilator build of {out} failed: {exc}\n{detail}") from None
        if build_dir.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(build_dir)
    t_build = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="run-", dir=_ensure(cache_dir() / "sims")))
    tb_dir = str(out / "tb")
    added = tb_dir not in sys.path
    if added:
        sys.path.insert(0, tb_dir)
    try:
        result_path = work / "result.json"
        env = {"AXLAB_EXPORT_RESULT": str(result_path)}
        if images is not None:
            env["AXLAB_EXPORT_IMAGES"] = str(images)
        t1 = time.perf_counter()
        try:
            with _quiet_runner(quiet):
                runner.test(test_module=TB_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=out, results_xml=str(work / "results.xml"),
                            extra_env=env, log_file=work / "sim.log")
        except SystemExit:  # the runner exits when the test fails; the result file says why
            pass
        if not result_path.exists():
            raise AxlabError(f"RTL simulation of {out} produced no result:\n{_tail(work / 'sim.log', 2000)}")
        res = json.loads(result_path.read_text())
        res["seconds"] = {"build": round(t_build, 2), "simulate": round(time.perf_counter() - t1, 2)}
        return res
    finally:
        if added and tb_dir in sys.path:
            sys.path.remove(tb_dir)
        shutil.rmtree(work, ignore_errors=True)

