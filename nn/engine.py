"""Integer-only inference (the QNN) and approximate inference (the AxNN) of a bundle's graph.

Activations travel *centred*, as ``q - zp`` (int8 code minus the zero point of the tensor's
quantisation) held in float32 torch tensors: exact small integers in [-255, 255], so max
pooling, ReLU (clamp at 0) and flattening run as ordinary torch ops, a convolution's zero
padding is the zero-point code, and the QNN feeds them to the float convolution without a
shift. ``run_codes`` adds the output zero point back.

Each conv/dense layer runs a MAC (nn.mac: exact float convolutions of the QNN, of the LUT's
low-rank or fused form (nn.lut_forms) or LUT gathers), chosen per layer among its exact paths
by nn.paths, then its requantisation (nn.requant):

    out = clamp(zo + round(acc * M[co]), lo, 127),  M = M0 * 2^-rs (fixed point)

Residual adds requantise in fixed point with ``ADD_SHIFT`` fractional bits; pooling rounds
half up, exactly.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.errors import AxlabError
from hwsim.lut import Lut
from nn import requant
from nn.bundle import ModelBundle
from nn.graph_check import is_tflite_graph
from nn.lut_forms import check_lut, fused_factor, lut_factor
from nn.mac import F32_EXACT, ConvMac, CudaGather, NumbaGather, TorchGather, describe_mac
from nn.paths import LayerPaths, check_path, default_path
from nn.requant import LayerQ, epilogue_numba, epilogue_torch, layer_q

ADD_SHIFT = 20
BACKENDS = ("torch", "numba", "cuda")


class IntegerEngine:
    """Runs a bundle's graph on int8 codes. ``luts`` None: the QNN; else one Lut per layer.

    A bundle imported from TFLite (``tfl_*`` ops) gets a :class:`nn.tflite_engine.TfliteEngine`
    instead (TFLite's own rounding; same interface)."""

    def __new__(cls, bundle: ModelBundle, *args: Any, **kwargs: Any) -> Any:
        if cls is IntegerEngine and is_tflite_graph(bundle.graph.nodes):
            from nn.tflite_engine import TfliteEngine

            return TfliteEngine(bundle, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, bundle: ModelBundle, luts: list[Lut] | None = None, backend: str = "torch",
                 lowrank: bool = True, max_rank: int = 8, path: str | None = None) -> None:
        """``path`` (numba backend; see nn.paths): ``auto`` times the exact paths of each layer on
        its first batch of each shape and keeps the fastest, ``lowrank`` uses the low-rank
        convolution where the LUT's error has one (else the gather kernels), ``fused`` the
        convolution over the factorised product table where it has fewer terms (else as
        ``lowrank``), ``gather`` always the gather kernels; None: ``$AXLAB_NN_PATH`` or auto.
        ``lowrank=False`` means ``gather``.
        The torch and cuda backends have one (gather) path. Every path gives the same logits."""
        if backend not in BACKENDS:
            raise AxlabError(f"unknown backend {backend!r} (torch, numba or cuda)")
        path = check_path(path) if path is not None else default_path()
        if not lowrank:
            if path in ("lowrank", "fused"):
                raise AxlabError(f"--path {path} contradicts --no-lowrank (lowrank=False)")
            path = "gather"
        if backend != "numba" and path in ("lowrank", "fused") and luts is not None:
            raise AxlabError(f"--path {path} needs --backend numba (backend {backend} has only the gather path)")
        self.bundle, self.backend, self.path = bundle, backend, path
        g = bundle.graph
        layers = g.layers()
        if luts is not None and len(luts) != len(layers):
            raise AxlabError(f"{len(luts)} multipliers given but the model has {len(layers)} approximable layers "
                             f"({', '.join(layers)})")
        # macs: each layer's primary MAC (the low-rank one where it exists); paths: every exact
        # path of the layer and the choice among them, which is what run_codes uses
        self.macs: dict[str, Any] = {}
        self.paths: dict[str, LayerPaths] = {}
        self.lq: dict[str, LayerQ] = {}
        self.epi = epilogue_torch if backend == "torch" else epilogue_numba
        for i, name in enumerate(layers):
            node = g.by_name[name]
            L = self.lq[name] = layer_q(bundle, node)
            lut = luts[i] if luts is not None else None
            cands: dict[str, Any] = {}
            mode = "only"
            if lut is None:
                cands["exact"] = ConvMac(L, None, use_numba=backend != "torch")
            else:
                check_lut(lut, name)
                if backend == "torch":
                    cands["gather"] = TorchGather(L, lut)
                elif backend == "cuda":
                    cands["gather"] = CudaGather(L, lut)
                else:
                    if path in ("auto", "fused"):
                        pf = fused_factor(lut, max_rank)
                        if pf is not None:
                            try:
                                cands["fused"] = ConvMac(L, pf, bool(lut.signed), use_numba=True, whole=True)
                            except AxlabError:
                                pass
                    if path in ("auto", "lowrank") or (path == "fused" and not cands):
                        f = lut_factor(lut, max_rank)
                        if f is not None:
                            # an unsigned LUT's error is E(a_op, w_op); the int8-centred exact part
                            # is unchanged, so the same expansion applies with the LUT's own U, V
                            try:
                                cands["lowrank"] = ConvMac(L, f, use_numba=True)
                            except AxlabError:
                                pass
                    if path == "auto" or not cands:
                        cands["gather"] = NumbaGather(L, lut)
                    mode = "auto" if len(cands) > 1 else ("forced" if path != "auto" else "only")
            self.macs[name] = next(iter(cands.values()))
            shape = {"C": int(L.w.shape[1]), "Co": int(L.w.shape[0]), "k": list(L.w.shape[2:]),
                     "stride": list(L.stride), "padding": list(L.padding), "dense": L.dense}
            self.paths[name] = LayerPaths(name, cands, functools.partial(self._run_mac, L), mode, shape,
                                          lut.sha256 if lut is not None else "", describe_mac)
        # index of the last node reading each value (the output: never freed), for in-place adds
        self.last_use: dict[str, int] = {g.output: len(g.nodes)}
        for i, n in enumerate(g.nodes):
            for inp in n["inputs"]:
                self.last_use[inp] = max(self.last_use.get(inp, -1), i)
        for n in reversed(g.nodes):  # a flatten output is a view: its input lives as long as it does
            if n["op"] == "flatten":
                src = n["inputs"][0]
                self.last_use[src] = max(self.last_use[src], self.last_use.get(n["name"], -1))
        self.add_q: dict[str, tuple[int, int, int, int, int, int]] = {}
        qp = bundle.qparams
        for n in g.nodes:
            if n["op"] == "add":
                sa, za = qp.act[g.quant_source(n["inputs"][0])]
                sb, zb = qp.act[g.quant_source(n["inputs"][1])]
                so, zo = qp.act[n["name"]]
                ma = int(round(sa / so * 2**ADD_SHIFT))
                mb = int(round(sb / so * 2**ADD_SHIFT))
                self.add_q[n["name"]] = (za, ma, zb, mb, zo, zo if n["relu"] else -128)

    def _run_mac(self, L: LayerQ, mac: Any, x: torch.Tensor) -> torch.Tensor:
        """One layer through one MAC and the epilogue: centred output codes (N, Co, P) float32."""
        acc, sidx = mac(x)
        return self.epi(acc, sidx, mac.zc, L, mac.const)

    def _dead_after(self, name: str, i: int, g: Any) -> bool:
        """Whether value ``name`` is read by no node after node ``i`` and owns its storage (made
        by a conv, linear or add node: fresh tensors, never views of another value)."""
        return self.last_use.get(name, -1) <= i and g.by_name[name]["op"] in ("conv", "linear", "add")

    def describe(self) -> dict[str, str]:
        """Layer -> the MAC that ran last (before any run: the primary MAC, marked ``auto:``
        when the choice is still to be measured)."""
        out = {}
        for k, lp in self.paths.items():
            cur = lp.current()
            if cur is not None:
                out[k] = lp.desc[cur[0]]
            else:
                out[k] = ("auto:" if lp.mode == "auto" else "") + describe_mac(self.macs[k])
        return out

    def path_report(self) -> dict[str, dict[str, Any]]:
        """Layer -> chosen path, how it was chosen (measured, cache, forced, only) and the
        candidates' times (ms) where measured; see nn.paths.LayerPaths.report."""
        return {k: lp.report() for k, lp in self.paths.items()}

    @torch.no_grad()
    def run_codes(self, x: np.ndarray) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> output codes (float32 tensor of int8 values)."""
        g = self.bundle.graph
        acts = self.bundle.qparams.act
        vals: dict[str, torch.Tensor] = {}
        for i, n in enumerate(g.nodes):
            op = n["op"]
            if op == "input":
                # code = pixel - 128 with zero point -128: the centred value is the pixel
                y = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
            elif op in ("conv", "linear"):
                xi = vals[n["inputs"][0]]
                dense = op == "linear"
                if dense:
                    xi = xi.reshape(xi.shape[0], -1, 1, 1)
                L = self.lq[n["name"]]
                out = self.paths[n["name"]](xi.contiguous())
                if dense:
                    y = out.reshape(out.shape[0], -1)
                else:
                    ho, wo = _conv_out(xi.shape[2:], L)
                    y = out.reshape(out.shape[0], -1, ho, wo)
            elif op == "add":
                za, ma, zb, mb, zo, lo = self.add_q[n["name"]]
                # inputs are centred (a - za, b - zb); so is the output (code - zo)
                if self.backend == "torch":
                    a = vals[n["inputs"][0]].to(torch.int64)
                    b = vals[n["inputs"][1]].to(torch.int64)
                    v = (a * ma + b * mb + (1 << (ADD_SHIFT - 1))) >> ADD_SHIFT
                    y = v.clamp_(lo - zo, 127 - zo).to(torch.float32)
                else:
                    from nn import kernels_cpu

                    ia, ib = n["inputs"]
                    a = vals[ia].contiguous()
                    b = vals[ib].contiguous()
                    f64 = requant.EPILOGUE_F64 and 255 * (abs(ma) + abs(mb)) < 2**52  # exact in float64
                    own = self._dead_after(ia, i, g) if ia != ib else False
                    if f64 and (own or self._dead_after(ib, i, g)) and ia != ib:
                        # an operand nothing reads later, made by a conv or add here: overwrite it
                        if not own:
                            a, b, ma, mb = b, a, mb, ma
                        kernels_cpu.add_requant_f64_inplace(a.view(-1).numpy(), b.view(-1).numpy(), float(ma),
                                                            float(mb), float(1 << (ADD_SHIFT - 1)), 2.0**-ADD_SHIFT,
                                                            float(lo - zo), float(127 - zo))
                        y = a
                    elif f64:
                        y = torch.empty_like(a)
                        kernels_cpu.add_requant_f64(a.view(-1).numpy(), b.view(-1).numpy(), float(ma), float(mb),
                                                    float(1 << (ADD_SHIFT - 1)), 2.0**-ADD_SHIFT, float(lo - zo),
                                                    float(127 - zo), y.view(-1).numpy())
                    else:
                        y = torch.empty_like(a)
                        kernels_cpu.add_requant(a.view(-1).numpy(), b.view(-1).numpy(), np.int64(0), np.int64(ma),
                                                np.int64(0), np.int64(mb), np.int64(ADD_SHIFT), np.int64(0),
                                                np.int64(lo - zo), np.int64(127 - zo), y.view(-1).numpy())
            elif op == "relu":
                y = vals[n["inputs"][0]].clamp_min(0.0)  # centred: the zero point is 0
            elif op == "maxpool":
                y = F.max_pool2d(vals[n["inputs"][0]], tuple(n["kernel"]), tuple(n["stride"]), tuple(n["padding"]))
            elif op in ("avgpool", "gap"):
                xi = vals[n["inputs"][0]]
                cnt = xi.shape[2] * xi.shape[3] if op == "gap" else int(np.prod(n["kernel"]))
                # float32 is exact while |2*sum + cnt| < 2^24 (|values| <= 255); see below
                xi = xi if 511 * cnt < F32_EXACT else xi.to(torch.float64)
                if op == "gap":
                    s, cnt = xi.sum(dim=(2, 3), keepdim=True), xi.shape[2] * xi.shape[3]
                else:
                    k = tuple(n["kernel"])
                    s, cnt = F.avg_pool2d(xi, k, tuple(n["stride"]), divisor_override=1), k[0] * k[1]
                # round half up of sum/cnt, exact; on centred values it equals the code
                # formula shifted by the (integer) zero point. The float division is correctly
                # rounded: a non-integer quotient is >= 1/(2 cnt) from an integer, more than
                # its rounding error (|2 sum + cnt| / (2 cnt) * 2^-24), so floor is exact
                y = torch.floor((2 * s + cnt) / (2 * cnt)).to(torch.float32)
            elif op == "flatten":
                y = vals[n["inputs"][0]].reshape(vals[n["inputs"][0]].shape[0], -1)
            else:  # pragma: no cover
                raise RuntimeError(op)
            vals[n["name"]] = y
        return vals[g.output] + float(acts[g.quant_source(g.output)][1])

    def logits(self, x: np.ndarray, batch: int = 256, progress: bool = False) -> np.ndarray:
        """Output int8 codes as int32 (N, classes)."""
        from tqdm import tqdm

        outs = []
        rng = range(0, len(x), batch)
        for i in tqdm(rng, desc="eval", unit="batch", leave=False, disable=not progress or len(rng) < 2):
            outs.append(self.run_codes(x[i:i + batch]).numpy().astype(np.int32))
        if not outs:
            return np.zeros((0, self.bundle.num_classes), dtype=np.int32)
        return np.concatenate(outs)


def _conv_out(hw: tuple[int, int], L: LayerQ) -> tuple[int, int]:
    kh, kw = L.w.shape[2:]
    return ((hw[0] + 2 * L.padding[0] - kh) // L.stride[0] + 1, (hw[1] + 2 * L.padding[1] - kw) // L.stride[1] + 1)
