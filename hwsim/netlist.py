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

from hwsim.cells import INSTANCE_RE
from hwsim.errors import AxlabError, NetlistError
from hwsim.netlist_check import check_name, tool_text

VERILOG_SUFFIXES = (".v", ".sv")
MAX_NETLIST_BYTES = 64 * 2**20  # EvoApprox 8x8 netlists are about 10 KB; far above any gate-level multiplier

# header key -> our metric name (current EvoApproxLib headers: "// MAE% = 0.0018 %")
HEADER_KEYS = {
    "MAE%": "mae_pct", "MAE": "mae", "WCE%": "wce_pct", "WCE": "wce", "WCRE%": "wcre_pct",
    "EP%": "ep_pct", "MRE%": "mre_pct", "MSE": "mse",
    "PDK45_PWR": "power_mw", "PDK45_AREA": "area_um2", "PDK45_DELAY": "delay_ns",
}
# older headers (EvoApprox8b and its re-releases): "// MRE = 4.36 %", "// EP = 97.8 %",
# "// WCRE = 106 %", "// Power  (45) = 0.2114" (mW; some files print uW: 189.60),
# "// Area   (45) = 443", "// Delay  (45) = 1.47". The "(180)" figures are for 180 nm: not kept.
LEGACY_KEYS = {
    "MRE": "mre_pct", "EP": "ep_pct", "WCRE": "wcre_pct",
    "POWER(45)": "power_mw", "AREA(45)": "area_um2", "DELAY(45)": "delay_ns",
}
_HEADER_RE = re.compile(r"^\s*//\s*([A-Za-z0-9_]+%?)\s*(\(\s*\d+\s*\))?\s*=\s*([-+0-9.eE]+)\s*(%|[A-Za-z0-9]+)?")
_NAME_RE = re.compile(r"^(?:mul|add|sub)(\d+)(?:x(\d+))?([su])", re.IGNORECASE)
_LEGACY_NAME_RE = re.compile(r"^mul\d+(?:x\d+)?_", re.IGNORECASE)
_MODULE_RE = re.compile(r"^\s*module\s+([A-Za-z_][A-Za-z0-9_$]*)", re.MULTILINE)
# a power printed above this is in microwatts (8-bit multipliers draw well under 10 mW)
_UW_THRESHOLD = 10.0


@dataclass(frozen=True)
class Published:
    """One header figure: its value and the text it was printed as (for precision).

    ``legacy``: from an older-format header, whose figures were rounded once and then
    reprinted with ``%f`` ("4.360000" for 4.36): its precision is that of the text without
    trailing zeros, and its relative errors follow the older definitions (see hwsim.metrics).
    """

    value: float
    text: str
    legacy: bool = False

    def resolution(self) -> float:
        """Half a unit in the last printed digit: the rounding the header allows."""
        mant, _, exp = self.text.lower().partition("e")
        frac = mant.partition(".")[2]
        if self.legacy:
            frac = frac.rstrip("0")
        decimals = len(frac)
        return 0.5 * 10.0 ** (int(exp or 0) - decimals)


@dataclass
class NetlistInfo:
    """A netlist file as found on disk, before parsing its gates."""

    path: Path
    text: str  # the file's text as read (hashed, cached by, headers read from); never handed to a tool
    module: str
    published: dict[str, Published] = field(default_factory=dict)
    signed_from_name: bool | None = None
    _checked: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def tool_text(self) -> str:
        """The checked text (:func:`hwsim.netlist_check.tool_text`): comments and allowed directives
        blanked, everything else on the netlist allow-list. The parser and every tool get this text,
        never ``text`` or the file. Raises NetlistError ``FILE:LINE: refused ...``."""
        if self._checked is None or self._checked[0] is not self.text:
            self._checked = (self.text, tool_text(self.text, self.path))
        return self._checked[1]


def parse_header(text: str) -> dict[str, Published]:
    """The ``// KEY = value`` characterisation lines before the first module.

    Both the current keys (``MAE%``, ``MRE%``, ``PDK45_PWR`` ...) and the older ones
    (``MRE = 1.99 %``, ``EP``, ``WCRE``, ``Power (45)``, ``Area (45)``) are understood; when a
    header has any older key, all its figures are marked ``legacy``.
    """
    rows: list[tuple[str, str, str, str]] = []
    head = re.split(r"^\s*module\b", text, maxsplit=1, flags=re.MULTILINE)[0]
    for line in head.splitlines():
        m = _HEADER_RE.match(line)
        if m:
            key = m.group(1).upper() + (re.sub(r"\s+", "", m.group(2)) if m.group(2) else "")
            rows.append((key, m.group(3), (m.group(4) or "").strip(), line))
    legacy = any(k in LEGACY_KEYS for k, *_ in rows)
    out: dict[str, Published] = {}
    for key, num, unit, _ in rows:
        name = LEGACY_KEYS.get(key) or HEADER_KEYS.get(key)
        if name is None:
            continue
        if name in ("mre_pct", "ep_pct", "wcre_pct") and key in LEGACY_KEYS and unit not in ("%", ""):
            continue
        try:
            value = float(num)
        except ValueError:
            continue
        if key == "POWER(45)" and (unit.lower() == "uw" or (not unit and value >= _UW_THRESHOLD)):
            value /= 1000.0  # printed in microwatts
        out[name] = Published(value, num, legacy)
    return out


def signedness_from_name(module: str, text: str = "") -> bool | None:
    """True for ``mulNs``, False for ``mulNu`` (``addN``/``subN`` alike), None when the name says nothing.

    EvoApprox8b (``mul8_001`` ...) has no s/u in its names but holds unsigned circuits only:
    a ``mulN_`` module whose file names that library is taken as unsigned.
    """
    m = _NAME_RE.match(module)
    if m is not None:
        return m.group(3).lower() == "s"
    if _LEGACY_NAME_RE.match(module) and "evoapprox8b" in text[:4000].lower():
        return False
    return None


def read_netlist(path: str | Path) -> NetlistInfo:
    """Read one netlist file; raise NetlistError if it is not Verilog with a module, or if it holds
    anything but a gate-level netlist (see :mod:`hwsim.netlist_check`; the error names the line)."""
    path = Path(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in path.name):
        raise NetlistError(ascii(str(path)), "file name has control characters (newline, tab ...); rename it")
    try:
        size = path.stat().st_size
        if size > MAX_NETLIST_BYTES:  # checked before reading: a netlist is text, not gigabytes
            raise NetlistError(path, f"{size} bytes is more than a netlist may have "
                                     f"(at most {MAX_NETLIST_BYTES // 2**20} MiB)")
        raw = path.read_bytes()
    except OSError as exc:
        raise NetlistError(path, f"cannot read ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NetlistError(path, "not Verilog (binary or non-UTF-8 file)") from None
    if not _MODULE_RE.search(text):
        raise NetlistError(path, "not Verilog (no 'module' declaration found)")
    info = NetlistInfo(path, text, "")
    checked = info.tool_text  # refuses directives, system tasks, procedural blocks ... with the line
    modules = _MODULE_RE.findall(checked)  # from the checked text: a 'module' inside a comment is no module
    if not modules:
        raise NetlistError(path, "not Verilog (no 'module' declaration found)")
    top = path.stem if path.stem in modules else _top_module(checked, modules, path.stem)
    try:
        check_name(top)
    except AxlabError as exc:
        raise NetlistError(path, str(exc)) from None
    info.module, info.published, info.signed_from_name = top, parse_header(text), signedness_from_name(top, text)
    return info




def _top_module(text: str, modules: list[str], stem: str) -> str:
    """The module no other module instantiates (``mul8u_X`` of ``mul8u_X_pdk45.v``, whatever
    order its cells are defined in); among several, the one the file name starts with, then
    one named ``mul...``, else the first."""
    used = set(INSTANCE_RE.findall(text))
    roots = [m for m in dict.fromkeys(modules) if m not in used] or modules
    for pick in (lambda m: stem.startswith(m), lambda m: m.lower().startswith("mul")):
        hit = [m for m in roots if pick(m)]
        if hit:
            return hit[0]
    return roots[0]


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
