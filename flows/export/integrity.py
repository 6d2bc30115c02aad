"""An export folder read back as untrusted input, for ``axlab export verify DIR``.

Everything in ``DIR`` may have been edited after the export, the manifest included, so:

1. ``manifest.json`` must be a JSON object of this export format; every path it names must be
   a plain relative path to a regular file inside ``DIR`` (no ``..``, no symbolic links);
2. every file's sha256 must equal the one the manifest recorded at export time (the first
   changed file is named);
3. what a tool or the test bench will read is checked by content as well, since the manifest
   itself can be rewritten: the engine RTL must be byte-identical to this axlab's ``rtl/``; the
   multiplier sources and the provenance netlists pass :func:`hwsim.netlist_check.tool_text`
   (the checked text is what Verilator compiles); the generated top may use only the keywords
   and the one Verilator metacomment the generator writes, and its ROM file names must be the
   layers' memories; every ``$readmemh`` line is a hex word of the layer's width and the count
   of words its depth; the test images and expected outputs have the dtype and shape of the model.

:func:`check_export` returns the checked texts and arrays; :mod:`flows.export.verify` stages
exactly those for Verilator and the test bench, so the text that was checked is the text that runs.
"""
from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from flows.export.folder import FORMAT, RTL_DIR, RTL_FILES, TFL_RTL_FILES, TOP
from hwsim.errors import AxlabError

MAX_FILE_BYTES = 256 * 2**20  # larger than any export file axlab writes for an 8-bit CNN
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REL_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
# the only string literals the generated top contains: its ROM files
_ROM_FILE = re.compile(r'"(mem/[A-Za-z0-9_]+_(?:w|q|exp)\.memh)"')
# keywords the generator writes into the top level; any other Verilog keyword is refused
TOP_KEYWORDS = frozenset({"module", "endmodule", "input", "output", "wire", "reg", "localparam", "integer",
                          "always", "begin", "end", "case", "endcase", "default", "if", "else", "assign", "posedge"})
_PUB = "/*verilator public_flat_rw*/"
_TOOL_WORDS = ("verilator", "synopsys", "synthesis", "pragma", "lint_", "cadence", "ambit", "coverage", "tracing",
               "translate_", "parallel_case", "full_case", "yosys")


@dataclass
class CheckedExport:
    """What :func:`check_export` accepted: texts keyed by their path relative to ``root``."""

    root: Path
    manifest: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)   # Verilog, in compile order
    memories: dict[str, str] = field(default_factory=dict)  # mem/*.memh read by the ROMs
    config: dict[str, Any] = field(default_factory=dict)    # tb/config.json
    images: np.ndarray | None = None                         # uint8 (N, C, H, W)
    expected: np.ndarray | None = None                       # int32 (N, classes)


def _fail(root: Path, msg: str) -> AxlabError:
    return AxlabError(f"export {root}: {msg}")


def _rel(root: Path, rel: Any, key: str) -> str:
    """``rel`` if it is a plain relative POSIX path (letters, digits, ``_.+-``), else an error."""
    if not isinstance(rel, str) or not _REL_PATH.fullmatch(rel) or ".." in PurePosixPath(rel).parts:
        raise _fail(root, f"manifest.json {key}: {str(rel)[:80]!r} is not a relative path inside the folder")
    return rel


def _read(root: Path, rel: str, key: str) -> bytes:
    """Bytes of the regular file ``root/rel``; no component may be a symbolic link."""
    p = root
    for part in PurePosixPath(rel).parts:
        p = p / part
        try:
            st = p.lstat()
        except OSError:
            raise _fail(root, f"{rel} ({key}) is missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise _fail(root, f"{rel} ({key}) is a symbolic link; an export holds plain files only")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(root, f"{rel} ({key}) is not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise _fail(root, f"{rel} ({key}) has {st.st_size} bytes, more than {MAX_FILE_BYTES}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise _fail(root, f"{rel} ({key}) is unreadable ({exc.strerror or exc})") from None


def _text(root: Path, rel: str, data: bytes) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise _fail(root, f"{rel}: byte {exc.start} is not ASCII") from None


def load_manifest(root: Path) -> dict[str, Any]:
    """``root/manifest.json`` as a dict with the keys :func:`check_export` needs, else AxlabError."""
    if not root.is_dir():
        raise AxlabError(f"export folder {root} does not exist or is not a folder")
    data = _read(root, "manifest.json", "the export's manifest")
    try:
        m = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(root, f"manifest.json is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(m, dict):
        raise _fail(root, "manifest.json is not a JSON object")
    if m.get("format") != FORMAT:
        raise _fail(root, f"manifest.json format {m.get('format')!r} is not {FORMAT} (not an axlab export, "
                          "or one from another axlab version)")
    for key, typ in (("files", dict), ("layers", list), ("rtl", dict), ("model", dict), ("testbench", dict)):
        if not isinstance(m.get(key), typ):
            raise _fail(root, f"manifest.json key {key!r} is missing or not a JSON {typ.__name__}")
    return m


def check_hashes(root: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Read every file the manifest lists (sorted) and compare its sha256 with the recorded one;
    the first missing or changed file raises AxlabError. Returns {path: bytes}."""
    out: dict[str, bytes] = {}
    for rel in sorted(manifest["files"]):
        want = manifest["files"][rel]
        _rel(root, rel, f"files[{rel!r}]")
        if not isinstance(want, str) or not _HEX64.fullmatch(want):
            raise _fail(root, f"manifest.json files[{rel!r}] is not a sha256 (64 lowercase hex digits)")
        data = _read(root, rel, "listed in manifest.json")
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise _fail(root, f"{rel} changed after the export (sha256 {got[:16]}... now, {want[:16]}... recorded "
                              "in manifest.json)")
        out[rel] = data
    return out


def _int(root: Path, v: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(root, f"{key} = {str(v)[:40]!r} is not an integer in [{lo}, {hi}]")
    return v


def check_memh(root: Path, rel: str, text: str, width: int, depth: int) -> str:
    """``text`` if it is exactly ``depth`` lines of ``width`` lowercase hex digits (what the
    generator writes; no ``@address``, comments or blank lines), else AxlabError naming the line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    pat = re.compile(rf"[0-9a-f]{{{width}}}")
    for i, line in enumerate(lines):
        if not pat.fullmatch(line):
            raise _fail(root, f"{rel}:{i + 1}: {line[:40]!r} is not a word of {width} hex digits")
    if len(lines) != depth:
        raise _fail(root, f"{rel}: {len(lines)} words, the layer's ROM has {depth}")
    return text


def check_top(root: Path, rel: str, text: str, roms: set[str]) -> str:
    """The generated top: only the generator's keywords, its one metacomment, plain ``//``
    comments, no directives, system tasks, escaped names or attributes, and string literals only
    as ROM files of the layers (``roms``). Returns ``text``."""
    from hwsim.netlist_check import KEYWORDS_ALLOWED, KEYWORDS_REFUSED

    keywords = KEYWORDS_ALLOWED | KEYWORDS_REFUSED
    for n, line in enumerate(text.split("\n"), 1):
        code, _, comment = line.replace(_PUB, "").partition("//")
        # tools read line comments that start with their name (// verilator ..., // synopsys ...);
        # the generator's comments start with plain words, and the model's names never come first
        if comment.strip().lower().startswith(_TOOL_WORDS):
            raise _fail(root, f"{rel}:{n}: refused tool metacomment '//{comment.strip()[:40]}'")
        for m in _ROM_FILE.finditer(code):
            if m.group(1) not in roms:
                raise _fail(root, f"{rel}:{n}: ROM file {m.group(1)!r} is not a memory of the manifest's layers")
        code = _ROM_FILE.sub("0", code)
        bad = re.search(r"[`$\\\"]|/\*|\*/|\(\s*\*", code)
        if bad:
            raise _fail(root, f"{rel}:{n}: refused {bad.group(0)!r} (directives, system tasks, strings, "
                              "attributes and comments other than the generator's are not allowed)")
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code):
            if word in keywords and word not in TOP_KEYWORDS:
                raise _fail(root, f"{rel}:{n}: refused keyword {word!r} (the generated top uses only "
                                  f"{', '.join(sorted(TOP_KEYWORDS))})")
    return text


def _npy(root: Path, rel: str, data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A .npy without pickles whose dtype and shape are exactly ``dtype`` and ``shape``."""
    import io

    fh = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(fh)
        hdr = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        got_shape, fortran, got_dtype = hdr(fh)
        if got_dtype != np.dtype(dtype) or tuple(got_shape) != shape or fortran:
            raise _fail(root, f"{rel}: {got_dtype} {tuple(got_shape)}, expected {dtype} {shape} (C order)")
        fh.seek(0)
        return np.load(fh, allow_pickle=False)
    except AxlabError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise _fail(root, f"{rel}: not a readable .npy file ({str(exc).splitlines()[0][:80]})") from None


def check_export(root: str | Path) -> CheckedExport:
    """Validate the export folder ``root`` (see the module doc); AxlabError names the first problem."""
    from hwsim.netlist_check import tool_text

    try:
        root = Path(root).resolve()
    except (OSError, RuntimeError) as exc:      # e.g. a symbolic link loop (RuntimeError before 3.13)
        raise AxlabError(f"export folder {root} cannot be resolved ({exc})") from None
    m = load_manifest(root)
    files = check_hashes(root, m)
    ck = CheckedExport(root, m)

    def listed(rel: Any, key: str) -> bytes:
        rel = _rel(root, rel, key)
        if rel not in files:
            raise _fail(root, f"{rel} ({key}) is not among the hashed files of manifest.json")
        return files[rel]

    # layers: memories and multiplier sources
    roms: set[str] = set()
    mul_rtl: set[str] = set()
    if not m["layers"]:
        raise _fail(root, "manifest.json has no layers")
    for i, ly in enumerate(m["layers"]):
        key = f"layers[{i}]"
        if not isinstance(ly, dict) or not isinstance(ly.get("quant"), dict) or not isinstance(ly.get("netlist"), dict):
            raise _fail(root, f"manifest.json {key} is not an object with 'quant' and 'netlist'")
        q = ly["quant"]
        p = _int(root, ly.get("lanes"), f"{key}.lanes", 1, 4096)
        co = _int(root, q.get("out_channels"), f"{key}.quant.out_channels", 1, 2**16)
        ci = _int(root, q.get("in_channels"), f"{key}.quant.in_channels", 1, 2**24)
        kern = q.get("kernel")
        if not isinstance(kern, list) or len(kern) != 2:
            raise _fail(root, f"manifest.json {key}.quant.kernel is not a list of two integers")
        kh, kw = (_int(root, v, f"{key}.quant.kernel", 1, 64) for v in kern)
        ng = -(-co // p)
        for what, width, depth in (("weights", 2 * p, ng * ci * kh * kw), ("params", 18, ng * p), ("bias", 8, co)):
            rel = _rel(root, ly.get(what), f"{key}.{what}")
            text = check_memh(root, rel, _text(root, rel, listed(rel, f"{key}.{what}")), width, depth)
            if what != "bias":  # the bias file documents the folded constants; the RTL does not read it
                ck.memories[rel] = text
                roms.add(rel)
        net = ly["netlist"]
        copy = _rel(root, net.get("copy"), f"{key}.netlist.copy")
        data = listed(copy, f"{key}.netlist.copy")
        if hashlib.sha256(data).hexdigest() != net.get("sha256"):
            raise _fail(root, f"{copy} is not the netlist {key}.netlist.sha256 names")
        tool_text(_text(root, copy, data), root / copy)  # provenance copy: must still pass the netlist check
        mul_rtl.add(_rel(root, net.get("rtl"), f"{key}.netlist.rtl"))

    # tables of an imported TFLite network's SOFTMAX (256 int32 words each)
    tables = m.get("tables", [])
    if not isinstance(tables, list):
        raise _fail(root, "manifest.json tables is not a list")
    for i, tb_ in enumerate(tables):
        rel = _rel(root, tb_.get("file") if isinstance(tb_, dict) else None, f"tables[{i}].file")
        ck.memories[rel] = check_memh(root, rel, _text(root, rel, listed(rel, f"tables[{i}].file")), 8, 256)
        roms.add(rel)

    # Verilog, in the order the manifest lists it: axlab's engines, the multipliers, the top
    srcs = m["rtl"].get("sources")
    engines = [f"rtl/{f}" for f in RTL_FILES]
    top = f"rtl/{TOP}.v"
    if not isinstance(srcs, list):
        raise _fail(root, "manifest.json rtl.sources is not a list")
    for i, rel in enumerate(srcs):
        _rel(root, rel, f"rtl.sources[{i}]")
    tfl = [f"rtl/{f}" for f in TFL_RTL_FILES]
    if any(rel in tfl for rel in srcs):  # an imported TFLite network: TFLite's engines, all of them
        engines += tfl
    if set(srcs) != set(engines) | mul_rtl | {top} or len(srcs) != len(set(srcs)):
        raise _fail(root, "manifest.json rtl.sources is not axlab's engine RTL, the layers' multiplier "
                          f"sources and {top}")
    if m["rtl"].get("top") != TOP:
        raise _fail(root, f"manifest.json rtl.top is not {TOP}")
    for rel in srcs:
        text = _text(root, rel, listed(rel, "rtl.sources"))
        if rel in engines:
            ours = (RTL_DIR / PurePosixPath(rel).name).read_text()
            if text != ours:
                raise _fail(root, f"{rel} differs from this axlab's {RTL_DIR / PurePosixPath(rel).name} "
                                  "(edited, or exported by another axlab version: export again)")
            ck.sources[rel] = ours
        elif rel == top:
            ck.sources[rel] = check_top(root, rel, text, roms)
        else:
            ck.sources[rel] = tool_text(text, root / rel)

    # test bench data
    tb = m["testbench"]
    n = _int(root, tb.get("images"), "manifest.json testbench.images", 1, 10**6)
    shape = m["model"].get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise _fail(root, "manifest.json model.input_shape is not [C, H, W]")
    c, h, w = (_int(root, v, "manifest.json model.input_shape", 1, 4096) for v in shape)
    classes = _int(root, m["model"].get("classes"), "manifest.json model.classes", 1, 2**16)
    try:
        cfg = json.loads(_text(root, "tb/config.json", listed("tb/config.json", "test bench configuration")))
    except json.JSONDecodeError as exc:
        raise _fail(root, f"tb/config.json is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("top") != TOP or cfg.get("in_shape") != [c, h, w] \
            or cfg.get("classes") != classes or cfg.get("images") != n:
        raise _fail(root, "tb/config.json does not match manifest.json (top, in_shape, classes, images)")
    ram = _int(root, m.get("ram_bytes"), "manifest.json ram_bytes", 1, 2**31)
    _int(root, cfg.get("in_base"), "tb/config.json in_base", 0, ram - c * h * w)
    _int(root, cfg.get("out_base"), "tb/config.json out_base", 0, ram - classes)
    ck.config = cfg
    ck.images = _npy(root, "tb/images.npy", listed("tb/images.npy", "test images"), "uint8", (n, c, h, w))
    ck.expected = _npy(root, "tb/expected.npy", listed("tb/expected.npy", "expected outputs"), "int32", (n, classes))
    if ck.expected.min() < -128 or ck.expected.max() > 127:
        raise _fail(root, "tb/expected.npy holds values outside the int8 output codes [-128, 127]")
    return ck
