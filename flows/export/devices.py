"""FPGA targets of ``axlab export --target``: the device and package each name maps to, its
nextpnr arguments, and which nextpnr resource counts as LUTs, flip-flops, block RAM, DSP and I/O."""
from __future__ import annotations

from dataclasses import dataclass

from hwsim.errors import AxlabError


@dataclass(frozen=True)
class Device:
    """One place-and-route target."""

    name: str            # axlab's name (--target)
    family: str          # ecp5 | ice40
    part: str            # the vendor part number it stands for
    nextpnr_args: tuple[str, ...]
    freq_mhz: float      # default clock constraint (steers placement; the achieved Fmax is reported)
    dsp_cell: str | None  # hard multiplier cell yosys maps to, None when the device has none
    # nextpnr utilisation keys: what the report tables call LUTs, FFs, BRAM, DSP, I/O
    lut_key: str
    ff_key: str | None   # None: counted from the synthesized netlist (iCE40 LCs hold LUT and FF)
    bram_keys: tuple[str, ...]
    dsp_key: str
    io_key: str
    # block RAM for the check before synthesis (flows.export.pnr.memory_budget): blocks on the
    # device and bits per block (ECP5 DP16KD: 18 kbit with the 9/18/36-bit widths; iCE40
    # SB_RAM40_4K: 4 kbit; SPRAM is not inferred)
    bram_blocks: int = 0
    bram_bits: int = 1


DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("ecp5-25k", "ecp5", "LFE5U-25F-6BG256C (ECP5, 24k LUTs, CABGA256, speed 6)",
           ("--25k", "--package", "CABGA256", "--speed", "6"), 50.0, "MULT18X18D",
           "TRELLIS_COMB", "TRELLIS_FF", ("DP16KD",), "MULT18X18D", "TRELLIS_IO", 56, 18432),
    Device("ecp5-45k", "ecp5", "LFE5U-45F-6BG256C (ECP5, 44k LUTs, CABGA256, speed 6)",
           ("--45k", "--package", "CABGA256", "--speed", "6"), 50.0, "MULT18X18D",
           "TRELLIS_COMB", "TRELLIS_FF", ("DP16KD",), "MULT18X18D", "TRELLIS_IO", 108, 18432),
    Device("ecp5-85k", "ecp5", "LFE5U-85F-6BG381C (ECP5, 84k LUTs, CABGA381, speed 6)",
           ("--85k", "--package", "CABGA381", "--speed", "6"), 50.0, "MULT18X18D",
           "TRELLIS_COMB", "TRELLIS_FF", ("DP16KD",), "MULT18X18D", "TRELLIS_IO", 208, 18432),
    Device("ice40-up5k", "ice40", "iCE40UP5K-SG48 (5.3k LCs, 30 x 4 kbit BRAM, 8 SB_MAC16, QFN48)",
           ("--up5k", "--package", "sg48"), 20.0, "SB_MAC16",
           "ICESTORM_LC", None, ("ICESTORM_RAM", "ICESTORM_SPRAM"), "ICESTORM_DSP", "SB_IO", 30, 4096),
    Device("ice40-hx8k", "ice40", "iCE40HX8K-CT256 (7.7k LCs, 32 x 4 kbit BRAM, no DSP, caBGA256)",
           ("--hx8k", "--package", "ct256"), 30.0, None,
           "ICESTORM_LC", None, ("ICESTORM_RAM",), "ICESTORM_DSP", "SB_IO", 32, 4096),
)}

# what each nextpnr resource is, for the "does not fit" message
RESOURCE_NAMES = {"TRELLIS_COMB": "logic cells (LUT4 + carry)", "TRELLIS_FF": "flip-flops",
                  "DP16KD": "block RAM (EBR, 18 kbit)", "MULT18X18D": "DSP multipliers (18x18)",
                  "TRELLIS_IO": "I/O pins", "TRELLIS_RAMW": "distributed RAM write ports",
                  "ICESTORM_LC": "logic cells (LUT4 + FF)", "ICESTORM_RAM": "block RAM (4 kbit)",
                  "ICESTORM_SPRAM": "SPRAM (256 kbit)", "ICESTORM_DSP": "DSP multipliers (SB_MAC16)",
                  "SB_IO": "I/O pins"}


def get_device(name: str) -> Device:
    """The target called ``name``; AxlabError listing the allowed names otherwise."""
    if name not in DEVICES:
        raise AxlabError(f"--target must be one of {', '.join(DEVICES)}, got {name!r}")
    return DEVICES[name]
