"""Integer inference of imported TFLite models with TFLite's own arithmetic (``tfl_*`` ops).

Values travel as raw int8 codes in int64 torch tensors, feature maps NCHW. Each op is the
integer computation of LiteRT's reference kernel (``OpResolverType.BUILTIN_REF``), so every
tensor equals LiteRT's bit for bit:

* conv / depthwise / dense: ``acc = sum (a - za) * w + bias`` (exact: a float32
  convolution of the centred codes where sum|w| * max|a - za| < 2^24, else float64), then per output channel
  ``MultiplyByQuantizedMultiplier(acc, M, shift) + zo`` clamped to the fused activation's
  range (double rounding for conv and depthwise, single rounding for dense: see _Layer). M, shift come from ``s_in * s_w / s_out`` in double (conv, depthwise, per-channel
  dense) or ``float(s_in * s_w) / s_out`` (per-tensor dense), as in TFLite's Prepare.
* add: both inputs shifted left by 20, rescaled by their own multipliers, summed, rescaled.
* average pool: sum over the window clipped to the image, divided by the element count with
  rounding half away from zero; max pool: max over the clipped window; both on raw codes.
* mean over H, W: see :func:`nn.tflite_pool.mean`; softmax: :func:`nn.tflite_ops.softmax_int8`.
* pad: the zero point's code; reshape: in TFLite's (NHWC) element order.

Backends: ``torch`` runs the reference arithmetic in torch int64 (the AxNN: the engine's
torch LUT gathers, nn.mac); ``cuda`` the same with nn.mac's CUDA gathers and the numba
requantisation of nn.tflite_kernels; ``numba`` is the fast path of nn.tflite_fast (float32
codes in channels_last memory, exact float convolutions, low-rank LUT convolutions or gathers,
fused exact requantisation). All give the same tensors (checked by the tests).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.errors import AxlabError
from hwsim.lut import Lut
from nn.bundle import ModelBundle
from nn.tflite_ops import (ADD_LEFT_SHIFT, activation_range, add_int8, mbqm, quantize_multiplier, softmax_int8,
                           softmax_params)
from nn.tflite_pool import avgpool, maxpool, mean, mean_params, pool_fast

TFL_LAYERS = ("tfl_conv", "tfl_dwconv", "tfl_fc")


def _to_tfl(x: torch.Tensor) -> torch.Tensor:
    """Internal layout -> TFLite layout (NCHW -> NHWC; other ranks unchanged)."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _from_tfl(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _multipliers(real: np.ndarray, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    ms, ss = [], []
    for r in np.asarray(real, dtype=np.float64).reshape(-1):
        if not np.isfinite(r) or r < 0:
            raise AxlabError(f"{what}: requantisation multiplier {r} is not a finite number >= 0")
        m, s = quantize_multiplier(float(r))
        ms.append(m)
        ss.append(s)
    return torch.tensor(ms, dtype=torch.int64), torch.tensor(ss, dtype=torch.int64)


class _Layer:
    """Integer parameters of one conv / depthwise / dense layer."""

    def __init__(self, bundle: ModelBundle, node: dict[str, Any]) -> None:
        g, qp = bundle.graph, bundle.qparams
        name = node["name"]
        self.name, self.op = name, node["op"]
        s_in, self.za = qp.act[node["inputs"][0]]
        s_out, self.zo = qp.act[name]
        self.w = qp.wq[name].astype(np.int64)
        self.bq = torch.from_numpy(qp.bq[name].astype(np.int64))
        ws32 = qp.ws[name].astype(np.float32)
        if node["op"] == "tfl_fc" and not node["per_channel"]:
            real = np.float64(np.float32(s_in) * ws32) / np.float64(s_out)  # float product, as TFLite
        else:
            real = np.float64(s_in) * ws32.astype(np.float64) / np.float64(s_out)
        self.m, self.shift = _multipliers(real, f"layer {name}")
        self.lo, self.hi = activation_range(node["act"], s_out, self.zo)
        self.co = self.w.shape[0]
        # LiteRT's reference FULLY_CONNECTED rounds once (x * M + 2^(30 - shift)) >> (31 - shift);
        # CONV_2D / DEPTHWISE_CONV_2D round twice (gemmlowp). Measured against ai-edge-litert
        # 2.3.0 on every code of the MLPerf models: each of the two forms fails on the other op.
        self.single = node["op"] == "tfl_fc"
        if node["op"] == "tfl_fc":
            self.stride, self.pad4, self.groups = (1, 1), [0, 0, 0, 0], 1
            w4 = self.w.reshape(self.co, -1, 1, 1)
        else:
            self.stride, self.pad4 = tuple(node["stride"]), list(node["pad4"])
            self.groups = self.w.shape[0] // node["multiplier"] if node["op"] == "tfl_dwconv" else 1
            w4 = self.w
        # every partial sum is bounded by sum|w| * max|a - za|: float32 is exact below 2^24
        bound = int(np.abs(w4).reshape(self.co, -1).sum(1).max()) * max(127 - self.za, self.za + 128)
        self.dtype = torch.float32 if bound < 2**24 else torch.float64
        self.wt = torch.from_numpy(w4.astype(np.float64)).to(self.dtype)

    def mac(self, x: torch.Tensor) -> torch.Tensor:
        """Accumulators (N, Co, H', W') int64 of int64 codes (N, C, H, W), bias included:
        exact, or with each product through the layer's LUT (``set_lut``)."""
        xc = (x - self.za).to(torch.float64)
        t, b, l, r = self.pad4
        if t or b or l or r:
            xc = F.pad(xc, (l, r, t, b))  # centred zero = the zero-point code
        if self.dw is not None:
            return self.dw(xc, self.za)
        if self.gathers:
            return self._lut_mac(xc)
        acc = F.conv2d(xc.to(self.dtype), self.wt, None, self.stride, 0, 1, self.groups)
        return acc.round().to(torch.int64) + self.bq[None, :, None, None]

    gathers: list[Any] = []
    dw: Any = None

    def set_lut(self, lut: Lut, backend: str, lowrank: bool, max_rank: int) -> None:
        """Route every product a_code x w_code through ``lut`` (one gather per group:
        a depthwise layer's channels are separate groups). The engine's gather kernels add
        the exact zero-point and bias corrections, so an exact LUT gives the QNN's sums."""
        from nn.lut_forms import check_lut
        from nn.mac import CudaGather, TorchGather
        from nn.requant import LayerQ

        check_lut(lut, self.name)
        if backend not in ("torch", "cuda"):  # the numba backend runs nn.tflite_fast instead
            raise ValueError(backend)
        co = self.w.shape[0]
        per = co // self.groups
        w4 = self.w if self.w.ndim == 4 else self.w.reshape(co, -1, 1, 1)  # dense as a 1x1 conv
        self.gathers = []
        for gi in range(self.groups):
            w = w4[gi * per:(gi + 1) * per].astype(np.int32)
            L = LayerQ(f"{self.name}[{gi}]" if self.groups > 1 else self.name, w,
                       self.bq.numpy()[gi * per:(gi + 1) * per].copy(), np.zeros(per, np.int64),
                       np.zeros(per, np.int64), int(self.za), int(self.zo), -128, 127, tuple(self.stride), (0, 0),
                       False)
            mac: Any = TorchGather(L, lut) if backend == "torch" else CudaGather(L, lut)
            self.gathers.append(mac)

    def _lut_mac(self, xc: torch.Tensor) -> torch.Tensor:
        n = xc.shape[0]
        cin = xc.shape[1] // self.groups
        outs = []
        for gi, mac in enumerate(self.gathers):
            xg = xc[:, gi * cin:(gi + 1) * cin].to(torch.float32).contiguous()
            y, sidx = mac(xg)  # (N, G', Co_g, P) partial sums
            acc = y.to(torch.int64).sum(1)
            if sidx is not None and mac.zc:
                acc = acc + mac.zc * sidx.to(torch.int64)[:, None, :]
            outs.append(acc + torch.from_numpy(np.asarray(mac.const, dtype=np.int64))[None, :, None])
        acc = torch.cat(outs, 1)
        kh, kw = self.w.shape[2:] if self.w.ndim == 4 else (1, 1)
        ho = (xc.shape[2] - kh) // self.stride[0] + 1
        wo = (xc.shape[3] - kw) // self.stride[1] + 1
        return acc.reshape(n, -1, ho, wo)

    def requant(self, acc: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """Output codes of accumulators (N, Co, ...): torch reference, or the numba kernel."""
        if fast:
            from nn import tflite_kernels

            a = acc.contiguous().reshape(acc.shape[0], acc.shape[1], -1)
            out = torch.empty_like(a)
            tflite_kernels.requant(a.numpy(), self.m.numpy(), self.shift.numpy(), int(self.zo), int(self.lo),
                                   int(self.hi), bool(self.single), out.numpy())
            return out.reshape(acc.shape)
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        out = mbqm(acc, self.m.reshape(shape), self.shift.reshape(shape), single=self.single) + self.zo
        return out.clamp(self.lo, self.hi)


class TfliteEngine:
    """Runs a bundle imported from TFLite on int8 codes: the QNN (``luts`` None) or the AxNN
    (one LUT per conv / depthwise / dense layer, network order; each product of an
    activation code and a weight code goes through the LUT, the zero-point corrections and
    the bias stay exact, the requantisation is TFLite's)."""

    def __init__(self, bundle: ModelBundle, luts: list[Lut] | None = None, backend: str = "torch",
                 lowrank: bool = True, max_rank: int = 8, path: str | None = None) -> None:
        from nn.tflite_graph import check_tflite

        from nn.paths import check_path, default_path

        self.shapes = check_tflite(bundle)
        self.bundle, self.backend = bundle, backend
        self.path = check_path(path) if path is not None else default_path()
        if not lowrank:
            if path in ("lowrank", "fused"):
                raise AxlabError(f"--path {path} contradicts --no-lowrank (lowrank=False)")
            self.path = "gather"
        self.fast: dict[str, Any] = {}  # numba backend: layer -> its MAC (nn.tflite_fast)
        self.add_tab: dict[str, np.ndarray] = {}  # numba backend: ADD's (256 * 256,) table of output codes
        if backend == "numba":  # its lookup: by AVX2 gathers where the host has them
            from nn import kernels_avx2, tflite_kernels

            self._lookup2 = kernels_avx2.lookup2 if kernels_avx2.available() else tflite_kernels.lookup2
        self.meta = bundle.meta
        g, qp = bundle.graph, bundle.qparams
        self.layers: dict[str, _Layer] = {}
        self.add_q: dict[str, tuple] = {}
        self.misc: dict[str, Any] = {}
        layer_names = g.layers()
        if luts is not None and len(luts) != len(layer_names):
            raise AxlabError(f"{len(luts)} multipliers given but the model has {len(layer_names)} approximable "
                             f"layers ({', '.join(layer_names)})")
        for n in g.nodes:
            op, name = n["op"], n["name"]
            if op in TFL_LAYERS:
                self.layers[name] = _Layer(bundle, n)
                lut = luts[layer_names.index(name)] if luts is not None else None
                if backend == "numba":  # float32 codes, channels_last, fused epilogues (nn.tflite_fast)
                    from nn.lut_forms import check_lut
                    from nn.tflite_fast import build

                    if lut is not None:
                        check_lut(lut, name)
                    self.fast[name] = build(self.layers[name], lut, self.path, max_rank)
                elif lut is not None:
                    self.layers[name].set_lut(lut, backend, lowrank, max_rank)
            elif op == "tfl_add":
                (s1, z1), (s2, z2) = qp.act[n["inputs"][0]], qp.act[n["inputs"][1]]
                so, zo = qp.act[name]
                twice = 2.0 * float(max(np.float32(s1), np.float32(s2)))
                m1, sh1 = _multipliers(np.array([s1 / twice]), f"add {name}")
                m2, sh2 = _multipliers(np.array([s2 / twice]), f"add {name}")
                mo, sho = _multipliers(np.array([twice / ((1 << ADD_LEFT_SHIFT) * so)]), f"add {name}")
                if max(int(sh1), int(sh2), int(sho)) > 0:
                    raise AxlabError(f"add {name}: rescaling multipliers must be below one")
                self.add_q[name] = (z1, m1, sh1, z2, m2, sh2, zo, mo, sho, *activation_range(n["act"], so, zo))
                if backend == "numba":  # both operands are int8 codes: the whole op is a 256 x 256 table
                    codes = torch.arange(-128, 128, dtype=torch.int64)
                    tab = add_int8(codes[:, None].expand(256, 256), codes[None, :].expand(256, 256), self.add_q[name])
                    self.add_tab[name] = tab.reshape(-1).numpy().astype(np.float32)
            elif op in ("tfl_avgpool", "tfl_maxpool"):
                s, zp = qp.act[name]
                self.misc[name] = activation_range(n["act"], s, zp)
            elif op == "tfl_softmax":
                s_in = qp.act[n["inputs"][0]][0]
                try:
                    self.misc[name] = softmax_params(float(np.float32(s_in)), float(np.float32(n["beta"])))
                except ValueError as exc:
                    raise AxlabError(f"softmax {name}: {exc}") from None
            elif op == "tfl_quantize":
                (si, zi), (so, zo) = qp.act[n["inputs"][0]], qp.act[name]
                self.misc[name] = _multipliers(np.array([si / so]), f"quantize {name}")
            elif op == "tfl_mean":
                self.misc[name] = mean_params(bundle, n)
            elif op not in ("input", "tfl_pad", "tfl_reshape"):
                raise AxlabError(f"node {name}: op {op} is not a TFLite-import op")
        self.fused = self._fuse_plan() if backend == "numba" else {}

    def _fuse_plan(self) -> dict[str, tuple[str, str, np.ndarray]]:
        """numba backend: layer -> (ADD, the ADD's other input, table) for each ADD whose one
        input is a layer read by nothing else and able to fuse it (nn.tflite_intconv.IntConv), the
        other input computed before that layer, both of one shape: the layer then writes the
        ADD's codes directly (used by ``logits``; ``tensors`` needs every node and runs unfused)."""
        g = self.bundle.graph
        order = {n["name"]: k for k, n in enumerate(g.nodes)}
        readers: dict[str, int] = {}
        for n in g.nodes:
            for i in n["inputs"]:
                readers[i] = readers.get(i, 0) + 1
        plan: dict[str, tuple[str, str, np.ndarray]] = {}
        for n in g.nodes:
            if n["op"] != "tfl_add" or len(n["inputs"]) != 2:
                continue
            for j, (mine, other) in enumerate((n["inputs"], n["inputs"][::-1])):
                if (getattr(self.fast.get(mine), "fuses_add", False) and readers.get(mine) == 1
                        and order[other] < order[mine] and self.shapes[mine] == self.shapes[other]):
                    tab = self.add_tab[n["name"]].reshape(256, 256)
                    plan[mine] = (n["name"], other, np.ascontiguousarray(tab if j == 0 else tab.T).reshape(-1))
                    break
        return plan

    @staticmethod
    def check(bundle: ModelBundle) -> None:
        """Raise AxlabError (one line, naming the node) unless the bundle can be run:
        attributes, shapes and integer parameters (nn.tflite_graph), then the multipliers."""
        TfliteEngine(bundle)

    def describe(self) -> dict[str, str]:
        """Layer -> how its MAC runs (exact convolution dtype, or the LUT gather kind)."""
        out = {}
        for k, v in self.layers.items():
            f = self.fast.get(k)
            if f is not None:
                cur = f.current() if hasattr(f, "current") else None
                how = f.desc[cur[0]] if cur else (f.kind if hasattr(f, "kind") else " | ".join(f.desc.values()))
            elif v.dw is not None:
                how = v.dw.kind
            elif v.gathers:
                how = v.gathers[0].kind + (f" x{len(v.gathers)} groups" if len(v.gathers) > 1 else "")
            else:
                how = f"exact {str(v.dtype)[6:]} conv"
            out[k] = f"tflite-{v.op[4:]}({how})"
        return out

    # ------------------------------------------------------------------ running
    def input_codes(self, x: np.ndarray) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> int8 codes of the input node (pixel - 128)."""
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.int64) - 128

    @torch.no_grad()
    def run_all(self, x: np.ndarray, fuse: bool = False) -> dict[str, torch.Tensor]:
        """Every node's codes (int64, internal layout) for uint8 images (N, C, H, W); ``fuse``
        (numba backend): layers may write the ADD that follows them directly (_fuse_plan), their
        own outputs then missing from the result."""
        if self.backend == "numba":
            return self._run_fast(x, fuse)
        g, qp = self.bundle.graph, self.bundle.qparams
        vals: dict[str, torch.Tensor] = {}
        for n in g.nodes:
            op, name = n["op"], n["name"]
            ins = [vals[i] for i in n["inputs"]]
            if op == "input":
                y = self.input_codes(x)
            elif op in TFL_LAYERS:
                L = self.layers[name]
                xi = ins[0]
                if op == "tfl_fc":
                    xi = _to_tfl(xi).reshape(xi.shape[0], -1, 1, 1)
                y = L.requant(L.mac(xi), fast=self.backend != "torch")
                if op == "tfl_fc":
                    y = y.reshape(y.shape[0], -1)
            elif op == "tfl_add":
                z1, m1, sh1, z2, m2, sh2, zo, mo, sho, lo, hi = self.add_q[name]
                if self.backend != "torch":
                    from nn import tflite_kernels

                    a, b = ins[0].contiguous(), ins[1].contiguous()
                    y = torch.empty_like(a)
                    tflite_kernels.add_requant(a.view(-1).numpy(), b.view(-1).numpy(), int(z1), int(m1), int(sh1),
                                               int(z2), int(m2), int(sh2), int(zo), int(mo), int(sho), int(lo),
                                               int(hi), ADD_LEFT_SHIFT, y.view(-1).numpy())
                else:
                    y = add_int8(ins[0], ins[1], self.add_q[name])
            elif op == "tfl_avgpool":
                y = avgpool(ins[0], n).clamp(*self.misc[name])
            elif op == "tfl_maxpool":
                y = maxpool(ins[0], n).clamp(*self.misc[name])
            elif op == "tfl_mean":
                y = mean(ins[0], n, self.misc[name])
            elif op == "tfl_pad":
                t, b, l, r = n["pad4"]
                y = F.pad(ins[0], (l, r, t, b), value=int(qp.act[name][1]))
            elif op == "tfl_reshape":
                y = _from_tfl(_to_tfl(ins[0]).reshape((ins[0].shape[0], *n["shape"])))
            elif op == "tfl_softmax":
                y = _from_tfl(softmax_int8(_to_tfl(ins[0]), *self.misc[name]))
            elif op == "tfl_quantize":
                y = self._quantize(ins[0], n)
            else:  # pragma: no cover - rejected in __init__
                raise RuntimeError(op)
            vals[name] = y
        return vals

    def _run_fast(self, x: np.ndarray, fuse: bool) -> dict[str, torch.Tensor]:
        """run_all of the numba backend: codes as float32 (4-D: channels_last memory), conv /
        depthwise / dense through nn.tflite_fast (with ``fuse``, _fuse_plan's ADDs inside them),
        ADD by a table lookup, pooling in numba; the other (small or rare) ops run the torch
        reference on int64 copies. Same values as the torch backend."""
        from nn import tflite_kernels
        from nn.tflite_fast import as_cl, flat

        g, qp = self.bundle.graph, self.bundle.qparams
        vals: dict[str, torch.Tensor] = {}
        for n in g.nodes:
            op, name = n["op"], n["name"]
            if name in vals:  # an ADD already written by the fused layer before it
                continue
            ins = [vals[i] for i in n["inputs"]]
            if op == "input":
                xu = np.ascontiguousarray(x, dtype=np.uint8)
                xi = np.empty((xu.shape[0], xu.shape[2], xu.shape[3], xu.shape[1]), dtype=np.float32)
                tflite_kernels.input_codes(xu, xi)
                y = torch.from_numpy(xi).permute(0, 3, 1, 2)
            elif op in TFL_LAYERS:
                xi = ins[0]
                if op == "tfl_fc":
                    xi = _to_tfl(xi).reshape(xi.shape[0], -1, 1, 1)
                plan = self.fused.get(name) if fuse else None
                if plan is not None:  # this layer's codes go straight into the ADD that reads them
                    add, other, tab = plan
                    vals[add] = self.fast[name](xi, add=(tab, as_cl(vals[other])))
                    continue
                y = self.fast[name](xi)
            elif op == "tfl_add":
                a, b = as_cl(ins[0]), as_cl(ins[1])
                y = torch.empty_like(a)
                self._lookup2(flat(a), flat(b), self.add_tab[name], flat(y))
            elif op in ("tfl_avgpool", "tfl_maxpool") and n["kernel"][0] * n["kernel"][1] < 2**17:
                y = pool_fast(ins[0], n, self.misc[name])  # (larger windows: the reference, below)
            elif op == "tfl_reshape":
                y = _from_tfl(_to_tfl(ins[0]).reshape((ins[0].shape[0], *n["shape"])))
            else:
                y = self._run_ref(n, [v.to(torch.int64) for v in ins], x).to(torch.float32)
                y = as_cl(y)
            vals[name] = y
        return vals

    def _run_ref(self, n: dict[str, Any], ins: list[torch.Tensor], x: np.ndarray) -> torch.Tensor:
        """The torch reference of one non-MAC op on int64 codes (pooling, mean, pad, softmax,
        quantize)."""
        op, name = n["op"], n["name"]
        if op == "tfl_avgpool":
            return avgpool(ins[0], n).clamp(*self.misc[name])
        if op == "tfl_maxpool":
            return maxpool(ins[0], n).clamp(*self.misc[name])
        if op == "tfl_mean":
            return mean(ins[0], n, self.misc[name])
        if op == "tfl_pad":
            t, b, l, r = n["pad4"]
            return F.pad(ins[0], (l, r, t, b), value=int(self.bundle.qparams.act[name][1]))
        if op == "tfl_softmax":
            return _from_tfl(softmax_int8(_to_tfl(ins[0]), *self.misc[name]))
        if op == "tfl_quantize":
            return self._quantize(ins[0], n)
        raise RuntimeError(op)  # pragma: no cover - rejected in __init__

    def _quantize(self, x: torch.Tensor, n: dict[str, Any]) -> torch.Tensor:
        qp = self.bundle.qparams
        so, zo = qp.act[n["name"]]
        if n["inputs"][0] == "input" and self.meta.get("input_dtype") == "float32":
            # the model takes floats: p / 255 in float32, quantised as TFLite does (float32 divide)
            v = (x + 128).numpy().astype(np.float32) / np.float32(255.0)
            q = v / np.float32(so)
            q = np.where(q >= 0, np.floor(np.abs(q) + np.float32(0.5)), -np.floor(np.abs(q) + np.float32(0.5)))
            return torch.from_numpy(q.astype(np.int64) + zo).clamp(-128, 127)
        m, s = self.misc[n["name"]]
        zi = qp.act[n["inputs"][0]][1]
        return (mbqm(x - zi, m, s) + zo).clamp(-128, 127)

    def run_codes(self, x: np.ndarray) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> output codes (float32 tensor of int8 values)."""
        return self.run_all(x)[self.bundle.graph.output].to(torch.float32)

    def logits(self, x: np.ndarray, batch: int = 256, progress: bool = False) -> np.ndarray:
        """Output int8 codes as int32 (N, classes)."""
        from tqdm import tqdm

        outs = []
        rng = range(0, len(x), batch)
        for i in tqdm(rng, desc="eval", unit="batch", leave=False, disable=not progress or len(rng) < 2):
            outs.append(self.run_all(x[i:i + batch], fuse=True)[self.bundle.graph.output].numpy().astype(np.int32))
        if not outs:
            return np.zeros((0, self.bundle.num_classes), dtype=np.int32)
        return np.concatenate(outs).reshape(len(x), -1)

    def tensors(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """TFLite tensor index -> int8 codes in TFLite layout (N, *shape[1:]) for every node."""
        out = {}
        tmap = self.meta.get("tensors", {})
        for name, v in self.run_all(x).items():
            if name in tmap:
                out[int(tmap[name])] = _to_tfl(v).numpy().astype(np.int8)
        return out
