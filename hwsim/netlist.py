"""Finding multiplier netlists and reading what their headers publish.

An EvoApproxLib netlist is a gate-level Verilog file whose top module ``mulNs_ID`` /
``mulNu_ID`` has ports ``A``, ``B`` (operands) and ``O`` (product), preceded by comment
lines ``// MAE% = 0.0018 %`` ... ``// PDK45_AREA = 711.0 um2`` with the library's own
characterisation.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from hwsim.errors import NetlistError

VERILOG_SUFFIXES = (".v", ".sv")

# header key -> (our metric name, unit note); the numbers keep their printed text too
HEADER_KEYS = {
    "MAE%": "mae_pct", "MAE": "mae", "WCE%": "wce_pct", "WCE": "wce", "WCRE%": "wcre_pct",
    "EP%": "ep_pct", "MRE%": "mre_pct", "MSE": "mse",
    "PDK45_PWR": "power_mw", "PDK45_AREA": "area_um2", "PDK45_DELAY": "delay_ns",
}
_HEADER_RE = re.compile(r"^\s*//\s*([A-Z0-9_]+%?)\s*=\s*([-+0-9.eE]+)")
_NAME_RE = re.compile(r"^mul(\d+)(?:x(\d+))?([su])", re.IGNORECASE)
_MODULE_RE = re.compile(r"^\s*module\s+([A-Za-z_][A-Za-z0-9_$]*)", re.MULTILINE)


@dataclass(frozen=True)
class Published:
    """One header figure: its value and the text it was printed as (for precision)."""

    value: float
    text: str

    def resolution(self) -> float:
        """Half a unit in the last printed digit: the rounding the header allows."""
        mant, _, exp = self.text.lower().partition("e")
        decimals = len(mant.partition(".")[2])
        return 0.5 * 10.0 ** (int(exp or 0) - decimals)


@dataclass
class NetlistInfo:
    """A netlist file as found on disk, before parsing its gates."""

    path: Path
    text: str
    module: str
    published: dict[str, Published] = field(default_factory=dict)
    signed_from_name: bool | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def parse_header(text: str) -> dict[str, Published]:
    """The ``// KEY = value`` characterisation lines before the first module."""
    out: dict[str, Published] = {}
    head = text.split("module", 1)[0]
    for line in head.splitlines():
        m = _HEADER_RE.match(line)
        if m and m.group(1) in HEADER_KEYS:
            try:
                out[HEADER_KEYS[m.group(1)]] = Published(float(m.group(2)), m.group(2))
            except ValueError:
                continue
    return out


def signedness_from_name(module: str) -> bool | None:
    """True for ``mulNs``, False for ``mulNu``, None when the name says nothing."""
    m = _NAME_RE.match(module)
    return None if m is None else m.group(3).lower() == "s"


def read_netlist(path: str | Path) -> NetlistInfo:
    """Read one netlist file; raise NetlistError if it is not Verilog with a module."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NetlistError(path, f"cannot read ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NetlistError(path, "not Verilog (binary or non-UTF-8 file)") from None
    modules = _MODULE_RE.findall(text)
    if not modules:
        raise NetlistError(path, "not Verilog (no 'module' declaration found)")
    top = path.stem if path.stem in modules else modules[0]
    return NetlistInfo(path, text, top, parse_header(text), signedness_from_name(top))


def discover(paths: list[str | Path]) -> list[Path]:
    """Every Verilog file under the given files/folders, sorted, without duplicates."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix in VERILOG_SUFFIXES and f.is_file():
                    found[f.resolve()] = None
        elif p.is_file():
            found[p.resolve()] = None
        else:
            raise NetlistError(p, "no such file or folder")
    return list(found)
