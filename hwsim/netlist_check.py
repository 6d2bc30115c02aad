"""The one gate that user Verilog passes before any tool (pyverilog, Verilator, Icarus, yosys) sees it.

A gate-level multiplier netlist needs very little of Verilog, and Verilog tools can do a
lot: compiler directives (`` `define ``, `` `include ``, Verilator's `` `systemc_* `` verbatim
C++), system tasks (``$system``, ``$fopen``, ``$readmemh``, Verilator's ``$c`` C++ code),
procedural blocks, DPI imports, tool metacomments (``/*verilator ...*/``, ``// synopsys ...``),
attributes ``(* ... *)`` and hierarchical references. So instead of listing what is refused,
:func:`tool_text` keeps the netlist to an allow-list of tokens and returns the *only* text
any tool is ever given:

1. line ends are normalised to ``\\n``; every comment is blanked to spaces (newlines kept, so
   line numbers do not move), after refusing comments that are tool metacomments;
2. a line holding only `` `timescale <n><unit>/<n><unit> `` or `` `default_nettype none|wire ``
   is blanked; any other backtick (directive or macro use) is refused;
3. :func:`check_tool_text` lexes what is left and allows only: the keywords ``module``,
   ``endmodule``, ``input``, ``output``, ``wire``, ``supply0``/``supply1``, ``assign`` and
   the gate primitives; plain identifiers (no ``$``, no escaped ``\\names``, no other
   Verilog/SystemVerilog keyword); integer literals (``12``, ``4'b1010``, ``8'hff``);
   the operators ``~ & | ^ ~& ~| ~^ ^~ ! && || + - * / % ** << >> <<< >>> ? : = +: -:``;
   punctuation ``( ) [ ] { } , ;``; and ``.`` only where it starts a named port connection.

The first refused token is reported as one line ``FILE:LINE: refused <what> (netlists may
contain only ...)``. The returned text is what the parser elaborates and what is written
into a tool's build folder, so the text that was checked is the text that runs; callers
that assemble sources from several pieces (the cocotb wrapper, the built-in cell library,
a port adapter) pass the whole assembled text through :func:`check_tool_text` again right
before handing it to the tool.
"""
from __future__ import annotations

import re

from hwsim.errors import AxlabError, NetlistError

ALLOWED = ("netlists may contain only module/endmodule, input/output/wire/supply0/supply1 declarations, "
           "assign, gate primitives, cell instances, integer constants, bitwise/arithmetic operators "
           "and comments")

KEYWORDS_ALLOWED = frozenset({"module", "endmodule", "input", "output", "wire", "supply0", "supply1", "assign",
                              "and", "or", "nand", "nor", "xor", "xnor", "not", "buf"})

# Verilog-2005 and SystemVerilog-2017 reserved words (IEEE 1364/1800): any of these outside KEYWORDS_ALLOWED is refused, never read as a net or cell name.
_RESERVED = """
accept_on alias always always_comb always_ff always_latch and assert assign assume automatic before begin
bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle checker class clocking cmos
config const constraint context continue cover covergroup coverpoint cross deassign default defparam design
disable dist do edge else end endcase endchecker endclass endclocking endconfig endfunction endgenerate
endgroup endinterface endmodule endpackage endprimitive endprogram endproperty endspecify endsequence
endtable endtask enum event eventually expect export extends extern final first_match for force foreach
forever fork forkjoin function generate genvar global highz0 highz1 if iff ifnone ignore_bins illegal_bins
implements implies import incdir include initial inout input inside instance int integer interconnect
interface intersect join join_any join_none large let liblist library local localparam logic longint
macromodule matches medium modport module nand negedge nettype new nexttime nmos nor noshowcancelled not
notif0 notif1 null or output package packed parameter pmos posedge primitive priority program property
protected pull0 pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos rpmos rtran rtranif0
rtranif1 s_always s_eventually s_nexttime s_until s_until_with scalared sequence shortint shortreal
showcancelled signed small soft solve specify specparam static string strong strong0 strong1 struct super
supply0 supply1 sync_accept_on sync_reject_on table tagged task this throughout time timeprecision timeunit
tran tranif0 tranif1 tri tri0 tri1 triand trior trireg type typedef union unique unique0 unsigned until
until_with untyped use uwire var vectored virtual void wait wait_order wand weak weak0 weak1 while wildcard
wire with within wor xnor xor
""".split()
_RESERVED_SET = frozenset(_RESERVED)
KEYWORDS_REFUSED = _RESERVED_SET - KEYWORDS_ALLOWED

OPERATORS_ALLOWED = frozenset({"~", "&", "|", "^", "~&", "~|", "~^", "^~", "!", "&&", "||", "+", "-", "*", "/",
                               "%", "**", "<<", ">>", "<<<", ">>>", "?", ":", "=", "+:", "-:",
                               "(", ")", "[", "]", "{", "}", ",", ";", "."})
# every Verilog/SystemVerilog operator, longest first, so that e.g. '<=' is seen (and refused)
# as one token rather than read as '<' '='
_ALL_OPERATORS = sorted(OPERATORS_ALLOWED | {
    "<", ">", "<=", ">=", "==", "!=", "===", "!==", "==?", "!=?", "->", "->>", "<->", "|->", "|=>", "##",
    "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=", "<<<=", ">>>=", "::", ".*",
    "@", "@@", "#", "'", "&&&", "=>", "*>", "(*", "*)",
}, key=len, reverse=True)
_OPERATOR_RE = re.compile("|".join(re.escape(op) for op in _ALL_OPERATORS))

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# 12, 1_000, 4'b1010, 8 'h ff, 'd3, 4'sd3 (x/z digits are left to the parser, which refuses them)
_NUMBER_RE = re.compile(r"(?:[0-9][0-9_]*)?[ \t]*'[sS]?[bBoOdDhH][ \t]*[0-9a-fA-FxXzZ?][0-9a-fA-FxXzZ?_]*|[0-9][0-9_]*")
_SPACE = " \t\n\f"
_ATTRIBUTE_RE = re.compile(r"\(\s*\*|\*\s*\)")  # "(*", "( *", "*)", "* )": never an expression
_PORT_NAME_RE = re.compile(r"[ \t]*[A-Za-z_]")
_UNITS = r"(?:1|10|100)\s*(?:s|ms|us|ns|ps|fs)"
_ALLOWED_DIRECTIVE_RE = re.compile(rf"[ \t]*`(?:timescale[ \t]+{_UNITS}[ \t]*/[ \t]*{_UNITS}|"
                                   r"default_nettype[ \t]+(?:none|wire))[ \t]*")
# the first word of a comment that tools read as an instruction (Verilator, yosys, Design
# Compiler, Cadence; lowercase, as the tools read them); comments never reach a tool, but one that says what
# one of these words says is someone trying, so it is refused with its line
_METACOMMENT_RE = re.compile(
    r"\s*(?:verilator|synopsys|synthesis|pragma|cadence|ambit|rtl_synthesis|translate_o(?:n|ff)|lint_o(?:n|ff)|"
    r"coverage_o(?:n|ff)|tracing_o(?:n|ff)|parallel_case|full_case)(?=\s|\*|$)")
_MODULE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def refused(where: object, line: int, what: str) -> NetlistError:
    """The one-line error ``FILE:LINE: refused <what> (netlists may contain only ...)``."""
    return NetlistError(f"{where}:{line}", f"refused {what} ({ALLOWED})")


def _blank(text: str) -> str:
    """``text`` with every character but newlines turned into a space."""
    return re.sub(r"[^\n]", " ", text)


def _strip_comments(text: str, where: object) -> str:
    """Comments blanked (newlines kept); tool metacomments and unterminated comments refused."""
    out: list[str] = []
    i, n, line = 0, len(text), 1
    while i < n:
        j = min((k for k in (text.find("//", i), text.find("/*", i)) if k >= 0), default=-1)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        line += text.count("\n", i, j)
        if text.startswith("//", j):
            end = text.find("\n", j)
            end = n if end < 0 else end
            body = text[j + 2:end]
        else:
            close = text.find("*/", j + 2)
            if close < 0:
                raise refused(where, line, "an unterminated /* comment")
            end = close + 2
            body = text[j + 2:close]
        if _METACOMMENT_RE.match(body):
            word = body.split()[0] if body.split() else body
            raise refused(where, line, f"tool metacomment '{word[:40]}'")
        comment = text[j:end]
        out.append(_blank(comment))
        line += comment.count("\n")
        i = end
    return "".join(out)


def _strip_directives(text: str, where: object) -> str:
    """Allowed directive lines blanked; any other line with a backtick is refused."""
    lines = text.split("\n")
    for k, ln in enumerate(lines):
        if "`" not in ln:
            continue
        if _ALLOWED_DIRECTIVE_RE.fullmatch(ln):
            lines[k] = _blank(ln)
            continue
        m = re.search(r"`\s*([A-Za-z_][A-Za-z0-9_]*)?", ln)
        name = m.group(1) if m and m.group(1) else ""
        what = (f"compiler directive or macro use '`{name}'" if name else "a backtick (compiler directive)")
        raise refused(where, k + 1, what + (" with more than a time unit/precision" if name == "timescale" else ""))
    return "\n".join(lines)


def check_tool_text(text: str, where: object) -> None:
    """Refuse ``text`` unless every token is on the netlist allow-list (see the module doc).

    ``text`` is what a tool is about to read: no comments or directives are allowed any more
    (:func:`tool_text` has removed the harmless ones). Raises NetlistError ``FILE:LINE: refused ...``.
    """
    i, n, line = 0, len(text), 1
    prev = ""  # the previous significant token, for the '.' rule
    while i < n:
        c = text[i]
        if c in _SPACE:
            line += c == "\n"
            i += 1
            continue
        if c == "`":
            m = _IDENT_RE.match(text, i + 1)
            raise refused(where, line, f"compiler directive or macro use '`{m.group(0) if m else ''}'")
        if c == "$":
            m = re.compile(r"\$[A-Za-z0-9_$]*").match(text, i)
            raise refused(where, line, f"system task/function '{m.group(0)}'")
        if c == "\\":
            m = re.compile(r"\\\S*").match(text, i)
            raise refused(where, line, f"escaped identifier '{m.group(0)[:40]}'")
        if c == '"':
            raise refused(where, line, "a string literal")
        if text.startswith("//", i) or text.startswith("/*", i):
            raise refused(where, line, "a comment in text handed to a tool")
        m = _IDENT_RE.match(text, i)
        if m:
            word = m.group(0)
            end = m.end()
            if end < n and (text[end] == "$" or text[end] == "'"):
                raise refused(where, line, f"identifier '{word}{text[end]}' ($ in names, casts)")
            if word in KEYWORDS_REFUSED:
                raise refused(where, line, f"keyword '{word}'")
            prev, i = word, end
            continue
        m = _NUMBER_RE.match(text, i)
        if m and (m.group(0)[0].isdigit() or "'" in m.group(0)):
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_$.'"):
                raise refused(where, line, f"number '{text[i:end + 1]}' (only integer constants are allowed)")
            line += m.group(0).count("\n")
            prev, i = "0", end
            continue
        m = _OPERATOR_RE.match(text, i)
        if m:
            op = m.group(0)
            if op in ("(", "*", "(*", "*)") and _ATTRIBUTE_RE.match(text, i):
                raise refused(where, line, "attribute '(* ... *)'")
            if op not in OPERATORS_ALLOWED:
                raise refused(where, line, f"operator '{op}'")
            if op == "." and (prev not in ("(", ",") or not _PORT_NAME_RE.match(text, i + 1)):
                raise refused(where, line, "'.' outside a named port connection (hierarchical reference or real number)")
            prev, i = op, m.end()
            continue
        shown = repr(c) if not c.isprintable() or c.isspace() else f"'{c}'"
        raise refused(where, line, f"character {shown}")


def tool_text(text: str, where: object) -> str:
    """The checked text of a netlist: the only text any tool may be given (see the module doc).

    ``where`` names the file in errors. Line numbers are those of ``text``.
    """
    clean = text.replace("\r\n", "\n").replace("\r", "\n")
    clean = _strip_directives(_strip_comments(clean, where), where)
    check_tool_text(clean, where)
    return clean


def check_name(name: str, what: str = "module name") -> str:
    """``name`` if it is a plain Verilog identifier (safe in file names, yosys scripts and command
    lines: letters, digits, '_', not starting with a digit, at most 128 characters, not a Verilog
    keyword), else AxlabError."""
    if not isinstance(name, str) or not _MODULE_NAME_RE.fullmatch(name) or name in _RESERVED_SET:
        raise AxlabError(f"{what} {name!r} is not a plain identifier (letters, digits, '_', at most 128 characters)")
    return name
