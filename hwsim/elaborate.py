"""pyverilog AST of a gate-level netlist -> :class:`hwsim.gates.GateGraph` (elaboration).

The elaborator understands what gate-level netlists use: ``assign`` with bitwise, reduction,
logical and conditional operators, concatenation/replication, bit and part selects,
constants, the Verilog gate primitives (and, or, nand, nor, xor, xnor, not, buf) and
instances of cell modules defined in the same file (flattened) or taken from the built-in
standard-cell library (:mod:`hwsim.cells`: ``AND2X1``, ``HAX1``, ``MUX2X1`` ... of the
``*_pdk45.v`` files). Widths and indices may be constant expressions (``[2*8-1:0]``).
Anything else (multiplication, comparisons, cells defined nowhere) is refused with a message
naming the file and line: a LUT must never be built from a guess. The AST comes from
:mod:`hwsim.verilog_ast`; :func:`hwsim.parse.parse_netlist` drives the elaboration of a top module.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyverilog.vparser.ast as va

from hwsim.errors import NetlistError
from hwsim.gates import AND, IN_A, IN_B, MUX, NOT, OR, XOR, GateGraph
from hwsim.verilog_ast import library_module, port_dirs, port_order

PRIMITIVES = {"and", "or", "nand", "nor", "xor", "xnor", "not", "buf"}


@dataclass
class Port:
    name: str
    direction: str  # input/output/wire
    msb: int
    lsb: int

    @property
    def width(self) -> int:
        return abs(self.msb - self.lsb) + 1

    def offset(self, index: int) -> int:
        """Bit offset (0 = LSB) of a declared index."""
        return index - self.lsb if self.msb >= self.lsb else self.lsb - index


class Scope:
    """One module instance being elaborated; resolves (net, bit) to graph nodes lazily."""

    def __init__(self, elab: "Elaborator", mod: va.ModuleDef, path: str, inputs: dict[str, list[int]] | None):
        self.elab, self.mod, self.path = elab, mod, path
        self.inputs = inputs  # port name -> node ids (None for the top module)
        self.nets: dict[str, Port] = {}
        self.drivers: dict[tuple[str, int], tuple] = {}
        self.cache: dict[tuple[str, int], int] = {}
        self.vectors: dict[int, list[int]] = {}
        self.children: list[tuple[str, va.ModuleDef, str, dict[str, va.Node]]] = []
        self._collect()

    # -------------------------------------------------------------- declarations
    def _const(self, node: va.Node) -> int:
        """Value of a constant expression (widths, indices, replication counts)."""
        if isinstance(node, va.IntConst):
            return _int_value(node.value, self.elab.where, node.lineno)[0]
        if isinstance(node, va.Uminus):
            return -self._const(node.right)
        if isinstance(node, va.Uplus):
            return self._const(node.right)
        op = _CONST_OPS.get(type(node))
        if op is not None:
            l, r = self._const(node.left), self._const(node.right)
            try:
                return op(l, r)
            except (ZeroDivisionError, ValueError, OverflowError):
                raise self.elab.error(node, f"constant expression {_op_name(node)} of {l} and {r} is undefined") from None
        raise self.elab.error(node, f"width or index is not a constant ({node.__class__.__name__})")

    def _declare(self, decl: va.Node) -> None:
        direction = {va.Input: "input", va.Output: "output", va.Inout: "inout"}.get(type(decl), "wire")
        if direction == "inout":
            raise self.elab.error(decl, f"inout port '{decl.name}' is not supported")
        msb = lsb = 0
        if getattr(decl, "width", None) is not None:
            msb, lsb = self._const(decl.width.msb), self._const(decl.width.lsb)
            if abs(msb - lsb) + 1 > MAX_BITS:     # a multiplier netlist never needs more; bounds memory and time
                w = abs(msb - lsb) + 1
                raise self.elab.error(decl, f"net '{decl.name}' is {w if w < 10**12 else f'~2^{w.bit_length()}'} "
                                            f"bits wide; allowed: at most {MAX_BITS}")
        old = self.nets.get(decl.name)
        if old is not None and old.direction != "wire":
            if decl.width is not None and direction == "wire":
                old.msb, old.lsb = msb, lsb
            return  # "output [7:0] O; wire [7:0] O;" style redeclaration
        if old is not None and direction == "wire" and decl.width is None:
            return
        self.nets[decl.name] = Port(decl.name, direction, msb, lsb)

    def _collect(self) -> None:
        if self.mod.portlist is not None:
            for port in self.mod.portlist.ports:
                if isinstance(port, va.Ioport):
                    self._declare(port.first)
        for item in self.mod.items:
            if isinstance(item, va.Decl):
                for d in item.list:
                    if isinstance(d, (va.Input, va.Output, va.Inout, va.Wire, va.Reg, va.Supply)):
                        if isinstance(d, va.Supply):
                            self.nets[d.name] = Port(d.name, "wire", 0, 0)
                            self.drivers[(d.name, 0)] = ("const", self.elab.graph.const(self._const(d.value.var)), 0, 1)
                        else:
                            self._declare(d)
                    elif isinstance(d, (va.Parameter, va.Localparam)):
                        raise self.elab.error(d, "parameters are not supported in gate-level netlists")
        for item in self.mod.items:
            if isinstance(item, va.Decl):
                continue
            if isinstance(item, va.Assign):
                self._drive(item.left.var, ("expr", item.right.var), item.lineno)
            elif isinstance(item, va.InstanceList):
                for inst in item.instances:
                    self._instance(inst)
            elif isinstance(item, (va.Always, va.AlwaysComb, va.AlwaysFF, va.AlwaysLatch, va.Initial)):
                raise self.elab.error(item, "procedural blocks (always/initial) are not supported; "
                                            "expected a gate-level netlist")
            else:
                raise self.elab.error(item, f"unsupported construct {item.__class__.__name__}")

    def _selected(self, node: va.Node, assign: bool) -> list[int]:
        """Bit offsets (LSB-relative, in select order) of a bit or part select, range-checked; the
        message says whether the select is assigned to (``assign``) or read."""
        name = node.var.name
        port = self._net(name, node)
        if isinstance(node, va.Pointer):
            k = port.offset(self._const(node.ptr))
            if not 0 <= k < port.width:
                raise self.elab.error(node, f"assignment to bit {k} of {name} out of range (it has bits "
                                            f"[{port.msb}:{port.lsb}])" if assign else
                                      f"bit select {name}[{self._const(node.ptr)}] out of range")
            return [k]
        hi, lo = port.offset(self._const(node.msb)), port.offset(self._const(node.lsb))
        if not (0 <= hi < port.width and 0 <= lo < port.width):
            raise self.elab.error(node, f"{'assignment to a part select' if assign else 'part select'} of {name} "
                                        f"out of range (it has bits [{port.msb}:{port.lsb}])")
        step = 1 if hi >= lo else -1
        return list(range(lo, hi + step, step))

    def _targets(self, lhs: va.Node, line: int) -> list[tuple[str, int]]:
        """(net, bit offset) of an assignment target, LSB first."""
        if isinstance(lhs, va.Identifier):
            port = self._net(lhs.name, lhs)
            return [(lhs.name, k) for k in range(port.width)]
        if isinstance(lhs, (va.Pointer, va.Partselect)):
            return [(lhs.var.name, k) for k in self._selected(lhs, assign=True)]
        if isinstance(lhs, (va.LConcat, va.Concat)):
            out: list[tuple[str, int]] = []
            for part in reversed(lhs.list):
                out += self._targets(part, line)
            return out
        raise self.elab.error(lhs, f"unsupported assignment target {lhs.__class__.__name__}")

    def _drive(self, lhs: va.Node, source: tuple, line: int) -> None:
        targets = self._targets(lhs, line)
        for k, t in enumerate(targets):
            if t in self.drivers:
                raise NetlistError(self.elab.where, f"line {line}: net {t[0]}[{t[1]}] has more than one driver")
            if self.nets[t[0]].direction == "input":
                raise NetlistError(self.elab.where, f"line {line}: input {t[0]} is driven inside the module")
            self.drivers[t] = (source[0], source[1], k, len(targets))

    def _instance(self, inst: va.Instance) -> None:
        name = inst.module
        if name in PRIMITIVES:
            args = [p.argname for p in inst.portlist]
            for arg in args:  # implicit 1-bit wires, as for cell instances below
                if isinstance(arg, va.Identifier) and arg.name not in self.nets:
                    self.nets[arg.name] = Port(arg.name, "wire", 0, 0)
            if len(args) < 2:
                raise self.elab.error(inst, f"gate primitive {name} needs an output and inputs")
            self._drive(args[0], ("prim", (name, args[1:])), inst.lineno)
            return
        mod = self.elab.modules.get(name)
        if mod is None:
            mod = library_module(name)
            if mod is None:
                raise self.elab.error(inst, f"unknown cell '{name}' (instance {inst.name}); "
                                            "its module is not defined in the file nor a built-in library cell")
            self.elab.library_cells.add(name)
        child_ports = port_order(mod)
        conns: dict[str, va.Node] = {}
        for pos, parg in enumerate(inst.portlist):
            pname = parg.portname
            if pname is None:
                if pos >= len(child_ports):
                    raise self.elab.error(inst, f"instance {inst.name} of {name} has too many connections")
                pname = child_ports[pos]
            if parg.argname is not None:
                conns[pname] = parg.argname
        for arg in conns.values():  # Verilog: an undeclared name in a port connection is an implicit 1-bit wire
            if isinstance(arg, va.Identifier) and arg.name not in self.nets:
                self.nets[arg.name] = Port(arg.name, "wire", 0, 0)
        cid = len(self.children)
        self.children.append((inst.name, mod, f"{self.path}.{inst.name}", conns))
        child_dirs = port_dirs(mod)
        for pname, arg in conns.items():
            if pname not in child_dirs:
                raise self.elab.error(inst, f"cell {name} has no port '{pname}'")
            if child_dirs[pname] == "output":
                self._drive(arg, ("child", (cid, pname)), inst.lineno)

    def _net(self, name: str, node: va.Node) -> Port:
        port = self.nets.get(name)
        if port is None:
            raise self.elab.error(node, f"undeclared net '{name}'")
        return port

    # -------------------------------------------------------------- resolution
    def bit(self, name: str, k: int) -> int:
        """Node id of bit ``k`` (offset from LSB) of net ``name``."""
        key = (name, k)
        hit = self.cache.get(key)
        if hit is not None:
            if hit < 0:
                raise NetlistError(self.elab.where, f"combinational loop through {self.path}.{name}[{k}]")
            return hit
        port = self.nets[name]
        if port.direction == "input":
            if self.inputs is None:
                nid = self.elab.graph.add(IN_A if name == self.elab.a_name else IN_B, k) \
                    if name in (self.elab.a_name, self.elab.b_name) else None
                if nid is None:
                    raise NetlistError(self.elab.where, f"input '{name}' is not an operand port (A/B)")
            else:
                vec = self.inputs.get(name)
                if vec is None:
                    raise NetlistError(self.elab.where, f"input {self.path}.{name} is not connected")
                nid = vec[k] if k < len(vec) else self.elab.graph.const(0)
            self.cache[key] = nid
            return nid
        drv = self.drivers.get(key)
        if drv is None:
            raise NetlistError(self.elab.where, f"undriven net {self.path}.{name}[{k}]")
        self.cache[key] = -1  # in progress: seeing it again means a loop
        kind, payload, offset, width = drv
        if kind == "const":
            nid = payload
        elif kind == "expr":
            vec = self.vectors.get(id(payload))
            if vec is None:  # evaluate a multi-bit assignment once, in its target's width
                vec = self.vectors[id(payload)] = self.expr(payload, width)
            nid = vec[offset] if offset < len(vec) else self.elab.graph.const(0)
        elif kind == "prim":
            nid = self._primitive(*payload)
        else:
            cid, pname = payload
            nid = self.elab.child_output(self, cid, pname, offset)
        self.cache[key] = nid
        return nid

    def _primitive(self, kind: str, args: list[va.Node]) -> int:
        g = self.elab.graph
        ins = [self.expr(a)[0] for a in args]
        if kind in ("not", "buf"):
            return g.add(NOT, ins[0]) if kind == "not" else ins[0]
        op = {"and": AND, "nand": AND, "or": OR, "nor": OR, "xor": XOR, "xnor": XOR}[kind]
        acc = ins[0]
        for x in ins[1:]:
            acc = g.add(op, acc, x)
        return g.add(NOT, acc) if kind in ("nand", "nor", "xnor") else acc

    def expr(self, node: va.Node, ctx: int = 0) -> list[int]:
        """Node ids of an expression's bits, LSB first.

        ``ctx`` is the Verilog context width (the assignment target's): context-determined
        operands (bitwise, arithmetic, ?:) are zero-extended to it, as the standard says.
        """
        g = self.elab.graph
        if isinstance(node, va.Identifier):
            port = self._net(node.name, node)
            return [self.bit(node.name, k) for k in range(port.width)]
        if isinstance(node, va.IntConst):
            value, width = _int_value(node.value, self.elab.where, node.lineno)
            return [g.const((value >> k) & 1) for k in range(width)]
        if isinstance(node, (va.Pointer, va.Partselect)):
            return [self.bit(node.var.name, k) for k in self._selected(node, assign=False)]
        if isinstance(node, va.Concat):
            out: list[int] = []
            for part in reversed(node.list):
                out += self.expr(part)
            return out
        if isinstance(node, va.Repeat):
            value, times = self.expr(node.value), self._const(node.times)
            if not 0 <= times * len(value) <= MAX_BITS:
                raise self.elab.error(node, f"replication of {times} copies of {len(value)} bits; allowed: at most "
                                            f"{MAX_BITS} bits")
            return value * times
        if isinstance(node, va.Unot):
            return [g.add(NOT, x) for x in _extend(self.expr(node.right, ctx), ctx)]
        if isinstance(node, (va.Uand, va.Unand, va.Uor, va.Unor, va.Uxor, va.Uxnor, va.Ulnot)):
            bits = self.expr(node.right)
            op = AND if isinstance(node, (va.Uand, va.Unand)) else XOR if isinstance(node, (va.Uxor, va.Uxnor)) else OR
            acc = bits[0]
            for x in bits[1:]:
                acc = g.add(op, acc, x)
            if isinstance(node, (va.Unand, va.Unor, va.Uxnor, va.Ulnot)):
                acc = g.add(NOT, acc)
            return [acc]
        if isinstance(node, (va.Plus, va.Minus)):
            l, r = self.expr(node.left, ctx), self.expr(node.right, ctx)
            width = max(ctx, len(l), len(r))
            l, r = _extend(l, width), _extend(r, width)
            if isinstance(node, va.Minus):  # a - b = a + ~b + 1 (mod 2^width)
                return self._add(l, [g.add(NOT, x) for x in r], 1)
            return self._add(l, r, 0)
        if isinstance(node, va.Uminus):
            x = _extend(self.expr(node.right, ctx), ctx)
            return self._add([0] * len(x), [g.add(NOT, b) for b in x], 1)
        if isinstance(node, (va.And, va.Or, va.Xor, va.Xnor)):
            l, r = self.expr(node.left, ctx), self.expr(node.right, ctx)
            width = max(ctx, len(l), len(r))
            l, r = _extend(l, width), _extend(r, width)
            op = {va.And: AND, va.Or: OR, va.Xor: XOR, va.Xnor: XOR}[type(node)]
            out = [g.add(op, x, y) for x, y in zip(l, r)]
            return [g.add(NOT, x) for x in out] if isinstance(node, va.Xnor) else out
        if isinstance(node, (va.Land, va.Lor)):
            l, r = self._truth(node.left), self._truth(node.right)
            return [g.add(AND if isinstance(node, va.Land) else OR, l, r)]
        if isinstance(node, va.Cond):
            s = self._truth(node.cond)
            t, f = self.expr(node.true_value, ctx), self.expr(node.false_value, ctx)
            width = max(ctx, len(t), len(f))
            t, f = _extend(t, width), _extend(f, width)
            return [g.add(MUX, x, y, s) for x, y in zip(f, t)]
        raise self.elab.error(node, f"unknown operator {_op_name(node)}")

    def _add(self, l: list[int], r: list[int], carry: int) -> list[int]:
        """Ripple-carry sum of two equal-width vectors, modulo 2^width."""
        g = self.elab.graph
        out = []
        c = g.const(carry)
        for x, y in zip(l, r):
            xy = g.add(XOR, x, y)
            out.append(g.add(XOR, xy, c))
            c = g.add(OR, g.add(AND, x, y), g.add(AND, xy, c))
        return out

    def _truth(self, node: va.Node) -> int:
        bits = self.expr(node)
        acc = bits[0]
        for x in bits[1:]:
            acc = self.elab.graph.add(OR, acc, x)
        return acc


class Elaborator:
    def __init__(self, where: str, modules: dict[str, va.ModuleDef], a_name: str, b_name: str):
        self.where, self.modules = where, modules
        self.a_name, self.b_name = a_name, b_name
        self.graph: GateGraph | None = None
        self.child_scopes: dict[tuple[int, int], Scope] = {}
        self.library_cells: set[str] = set()

    def error(self, node: va.Node, problem: str) -> NetlistError:
        line = getattr(node, "lineno", None)
        return NetlistError(self.where, f"line {line}: {problem}" if line else problem)

    def child_output(self, parent: Scope, cid: int, pname: str, offset: int) -> int:
        key = (id(parent), cid)
        scope = self.child_scopes.get(key)
        if scope is None:
            inst_name, mod, path, conns = parent.children[cid]
            dirs = port_dirs(mod)
            if path.count(".") > 64:
                raise NetlistError(self.where, f"cell hierarchy too deep at {path} (recursive cells?)")
            inputs = {p: parent.expr(arg) for p, arg in conns.items() if dirs[p] == "input"}
            scope = Scope(self, mod, path, inputs)
            self.child_scopes[key] = scope
        port = scope.nets[pname]
        return scope.bit(pname, offset) if offset < port.width else self.graph.const(0)


MAX_BITS = 4096      # widest net, constant or replication a netlist may declare


def _cdiv(a: int, b: int) -> int:
    """Verilog integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cmod(a: int, b: int) -> int:
    return a - b * _cdiv(a, b)


def _cpow(a: int, b: int) -> int:
    if b < 0 or b > 4096:
        raise ValueError("exponent out of range")
    return a**b


_CONST_OPS = {
    va.Plus: lambda a, b: a + b, va.Minus: lambda a, b: a - b, va.Times: lambda a, b: a * b,
    va.Divide: _cdiv, va.Mod: _cmod, va.Power: _cpow,
    va.Sll: lambda a, b: _cpow(2, b) * a, va.Sla: lambda a, b: _cpow(2, b) * a,
    va.Srl: lambda a, b: a >> b, va.Sra: lambda a, b: a >> b,
}


def _extend(bits: list[int], width: int) -> list[int]:
    """Zero-extend a bit vector (node 0 is the constant 0) to at least ``width`` bits."""
    return bits + [0] * (width - len(bits))


def _int_value(text: str, where: str, line: int) -> tuple[int, int]:
    """(value, width) of a Verilog integer literal; x/z digits are refused."""
    t = text.replace("_", "").lower()
    if len(t) > MAX_BITS + 16:      # no constant of at most MAX_BITS bits is written longer
        raise NetlistError(where, f"line {line}: constant of {len(t)} characters; allowed: at most {MAX_BITS} bits")
    if "'" not in t:
        return int(t), max(int(t).bit_length(), 32)
    size, _, rest = t.partition("'")
    rest = rest.lstrip("s")
    base = {"b": 2, "o": 8, "d": 10, "h": 16}.get(rest[:1])
    digits = rest[1:]
    if base is None or any(c in "xz?" for c in digits):
        raise NetlistError(where, f"line {line}: constant {text} has x/z bits or no base")
    value = int(digits, base)
    if size and not 0 < int(size) <= MAX_BITS:
        raise NetlistError(where, f"line {line}: constant {text[:40]} is {int(size)} bits wide; allowed: 1 to {MAX_BITS}")
    return value, int(size) if size else 32


def _op_name(node: va.Node) -> str:
    symbols = {"Times": "*", "Divide": "/", "Mod": "%", "Power": "**",
               "Eq": "==", "NotEq": "!=", "Eql": "===", "NotEql": "!==", "LessThan": "<",
               "GreaterThan": ">", "LessEq": "<=", "GreaterEq": ">=", "Sll": "<<", "Srl": ">>",
               "Sla": "<<<", "Sra": ">>>", "Uplus": "unary +"}
    n = node.__class__.__name__
    return f"'{symbols[n]}'" if n in symbols else n
