"""AVX2 kernels of the numba backend, written in LLVM IR through numba intrinsics (numba has no
vector types): the exact integer convolution of int8 codes on the pairwise multiply-add
(``vpmaddwd``), and the table lookup of a two-operand op of int8 codes on ``vgatherdps``.

Convolution.
``vpmaddwd`` multiplies sixteen int16 pairs and adds adjacent products into eight int32 lanes
without saturation for our operands (|activation - zero point| <= 255, |weight| <= 128), so
every accumulator is the exact int32 sum that TFLite's reference kernel forms. One output row
of one image at a time: the image is centred into a per-thread int16 buffer (padding = the zero
point's 0, channels paired), a 4-pixel x 16-channel micro-kernel written in LLVM IR
(``_mk4x16``; numba has no vector types) runs over every (tap, channel pair) with its
accumulators in registers and stores the row's int32 sums; then a fused TFLite epilogue
(bias, MultiplyByQuantizedMultiplier, zero point, clamp) writes float32 codes. Used by
nn.tflite_fast.IntConv where the host has AVX2 (``available``).

Lookup. ``lookup2`` is nn.tflite_kernels.lookup2 (out = tab[(a + 128) * 256 + b + 128]) with
eight table reads per gather instruction: LLVM does not vectorise such lookups for this CPU.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nn.tflite_kernels import mbqm1, mbqm_f64

ROWS = 4  # pixels per micro-kernel call
COLS = 16  # output channels per micro-kernel call (two 8-lane int32 vectors)

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_I32, 8)
_V16 = ir.VectorType(ir.IntType(16), 16)
_F32, _I8 = ir.FloatType(), ir.IntType(8)
_VF = ir.VectorType(_F32, 8)


def available() -> bool:
    """True where numba compiles for this host and the host has AVX2."""
    import numba
    from llvmlite import binding

    if numba.config.CPU_NAME not in (None, "host") or numba.config.CPU_FEATURES:
        return False  # a portable target (e.g. NUMBA_CPU_NAME=generic) has no AVX2 to rely on
    return bool(binding.get_host_cpu_features().get("avx2", False))


def _loop_open(builder: Any, n: Any, name: str) -> tuple[Any, Any, Any, Any]:
    """Start ``for i in range(n)`` (n > 0 checked) in IR: (entry block, loop block, exit block, i)."""
    pre = builder.block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(_I64, 0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(ir.Constant(_I64, 0), pre)
    return pre, loop, done, i


def _loop_close(builder: Any, i: Any, n: Any, loop: Any, done: Any) -> Any:
    """End the loop of _loop_open; returns its last block (for the phis of values it carries)."""
    i_next = builder.add(i, ir.Constant(_I64, 1))
    last = builder.block
    i.add_incoming(i_next, last)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)
    return last


def _splat(builder: Any, v: Any) -> Any:
    """An i32 broadcast to <8 x i32>."""
    und = ir.Constant(_V8, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(und, v, ir.Constant(_I32, 0)), und, ir.Constant(_V8, [0] * 8))


def _gather(builder: Any, tab: Any, idx: Any) -> Any:
    """<8 x float> tab[idx] (vgatherdps; tab an i8* base, idx <8 x i32> element indices)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF, [_VF, _I8.as_pointer(), _V8, _VF, _I8]),
                                        "llvm.x86.avx2.gather.d.ps.256")
    every = builder.bitcast(ir.Constant(_V8, [-1] * 8), _VF)  # mask: all lanes
    return builder.call(fn, [ir.Constant(_VF, None), tab, idx, every, ir.Constant(_I8, 4)])


@intrinsic
def _mk4x16(typingctx, a_ptr, lda, offs_ptr, w_ptr, k2, out_ptr, ldo):  # pragma: no cover - compiled by numba
    """out[q*ldo + c] = sum_i pmaddwd(a[q*lda + offs[i]], w[i*16 + c]) for q < 4, c < 16, i < k2:
    a, w int32 words holding int16 pairs (a: 4 rows ``lda`` words apart, offs int64 word offsets
    of the taps' channel pairs; w: k2 x 16 words), out int32 (4 rows ``ldo`` apart); the
    accumulators stay in registers over all i."""
    sig = types.void(types.uintp, types.intp, types.uintp, types.uintp, types.intp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a_i, lda_v, f_i, w_i, k2_v, o_i, ldo_v = args
        pmadd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V16, _V16]),
                                               "llvm.x86.avx2.pmadd.wd")
        a_p = builder.inttoptr(a_i, _I32.as_pointer())
        f_p = builder.inttoptr(f_i, _I64.as_pointer())
        w_p = builder.inttoptr(w_i, _I32.as_pointer())
        o_p = builder.inttoptr(o_i, _I32.as_pointer())
        rows = [builder.gep(a_p, [builder.mul(ir.Constant(_I64, q), lda_v)]) for q in range(ROWS)]
        zero = ir.Constant(_V8, None)
        pre, loop, done, i = _loop_open(builder, k2_v, "mk")
        accs = []
        for _ in range(2 * ROWS):
            p = builder.phi(_V8)
            p.add_incoming(zero, pre)
            accs.append(p)
        off = builder.load(builder.gep(f_p, [i]), align=8)
        wb = builder.gep(w_p, [builder.mul(i, ir.Constant(_I64, COLS))])
        w0 = builder.bitcast(builder.load(builder.bitcast(wb, _V8.as_pointer()), align=4), _V16)
        w1 = builder.bitcast(builder.load(builder.bitcast(builder.gep(wb, [ir.Constant(_I64, 8)]),
                                                          _V8.as_pointer()), align=4), _V16)
        new = []
        for q in range(ROWS):
            av = builder.bitcast(_splat(builder, builder.load(builder.gep(rows[q], [off]), align=4)), _V16)
            new.append(builder.add(accs[2 * q], builder.call(pmadd, [av, w0])))
            new.append(builder.add(accs[2 * q + 1], builder.call(pmadd, [av, w1])))
        last = _loop_close(builder, i, k2_v, loop, done)
        for p, v in zip(accs, new):
            p.add_incoming(v, last)
        fin = []
        for v in new:  # every phi first: LLVM wants them at the top of the block
            p = builder.phi(_V8)
            p.add_incoming(zero, pre)
            p.add_incoming(v, last)
            fin.append(p)
        for k, p in enumerate(fin):
            dst = builder.gep(o_p, [builder.add(builder.mul(ir.Constant(_I64, k // 2), ldo_v),
                                                ir.Constant(_I64, (k % 2) * 8))])
            builder.store(p, builder.bitcast(dst, _V8.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _lookup8(typingctx, a_ptr, b_ptr, tab_ptr, out_ptr, n8):  # pragma: no cover - compiled by numba
    """out[i] = tab[(a[i] + 128) * 256 + b[i] + 128] for i < 8 * n8: a, b float32 int8 codes, tab
    float32 (65536,), eight at a time (vcvttps2dq, index arithmetic, vgatherdps)."""
    sig = types.void(types.uintp, types.uintp, types.uintp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a_i, b_i, t_i, o_i, n_v = args
        a_p, b_p = builder.inttoptr(a_i, _VF.as_pointer()), builder.inttoptr(b_i, _VF.as_pointer())
        o_p, t_p = builder.inttoptr(o_i, _VF.as_pointer()), builder.inttoptr(t_i, _I8.as_pointer())
        pre, loop, done, i = _loop_open(builder, n_v, "lk")
        c128 = ir.Constant(_V8, [128] * 8)
        a = builder.add(builder.fptosi(builder.load(builder.gep(a_p, [i]), align=4), _V8), c128)
        b = builder.add(builder.fptosi(builder.load(builder.gep(b_p, [i]), align=4), _V8), c128)
        v = _gather(builder, t_p, builder.add(builder.mul(a, ir.Constant(_V8, [256] * 8)), b))
        builder.store(v, builder.gep(o_p, [i]), align=4)
        _loop_close(builder, i, n_v, loop, done)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def lookup2(a, b, tab, out):  # pragma: no cover - jitted
    """nn.tflite_kernels.lookup2 (flat float32 codes a, b -> out, tab (65536,) float32) by
    gathers, in blocks of 4096 codes over the threads."""
    blocks = -(-a.size // 4096)
    a0, b0, t0, o0 = a.ctypes.data, b.ctypes.data, tab.ctypes.data, out.ctypes.data
    for blk in prange(blocks):
        lo = blk * 4096
        hi = min(lo + 4096, a.size)
        n8 = (hi - lo) // 8
        _lookup8(a0 + lo * 4, b0 + lo * 4, t0, o0 + lo * 4, n8)
        for i in range(lo + n8 * 8, hi):
            out[i] = tab[(np.int32(a[i]) + 128) * 256 + np.int32(b[i]) + 128]


def _make_requant8(fused_add: bool) -> Any:
    """The int32 vector epilogue; ``fused_add``: followed by a two-operand table op (ADD) of the
    output code and another tensor's code (see _requant8 / _requant8_add)."""

    @intrinsic
    def requant8(typingctx, acc_ptr, q_ptr, n, out_ptr, n8, zo, lo, hi, tab_ptr, s_ptr):  # pragma: no cover
        """out[i] = float(clamp(RDivByPOT(SRDHM(acc[i] + bias[i], m[i]), e[i]) + zo, lo, hi)) for
        i < 8 * n8: TFLite's double-rounding MultiplyByQuantizedMultiplier (shift <= 0) in int32 /
        int64 vector arithmetic, eight at a time. acc int32; q int32 (3, n): bias, m, e = -shift
        rows; out float32. SRDHM(x, m) = floor((x*m + 2^30) / 2^31) (TFLite's truncating form with
        its sign-dependent nudge, rewritten); RoundingDivideByPOT rounds half away from zero.
        With the fused ADD: out[i] = tab[(code + 128) * 256 + s[i] + 128] (s float32 codes, tab
        float32 (65536,)), the code itself never stored."""
        sig = types.void(types.uintp, types.uintp, types.intp, types.uintp, types.intp, types.int32, types.int32,
                         types.int32, types.uintp, types.uintp)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            a_i, q_i, n_v, o_i, n8_v, zo_v, lo_v, hi_v, t_i, s_i = args
            v8p = _V8.as_pointer()
            v64 = ir.VectorType(_I64, 8)
            a_p, o_p = builder.inttoptr(a_i, v8p), builder.inttoptr(o_i, _VF.as_pointer())
            q_p = builder.inttoptr(q_i, _I32.as_pointer())
            s_p, t_p = builder.inttoptr(s_i, _VF.as_pointer()), builder.inttoptr(t_i, _I8.as_pointer())
            rows = [builder.bitcast(builder.gep(q_p, [builder.mul(n_v, ir.Constant(_I64, k))]), v8p) for k in range(3)]
            zo8, lo8, hi8 = _splat(builder, zo_v), _splat(builder, lo_v), _splat(builder, hi_v)
            one, zero = ir.Constant(_V8, [1] * 8), ir.Constant(_V8, [0] * 8)
            c128 = ir.Constant(_V8, [128] * 8)
            _, loop, done, i = _loop_open(builder, n8_v, "rq")
            bias, m, e = (builder.load(builder.gep(r, [i]), align=4) for r in rows)
            x = builder.add(builder.load(builder.gep(a_p, [i]), align=4), bias)
            p = builder.mul(builder.sext(x, v64), builder.sext(m, v64))  # vpmuldq
            p = builder.add(p, ir.Constant(v64, [1 << 30] * 8))
            r = builder.trunc(builder.lshr(p, ir.Constant(v64, [31] * 8)), _V8)  # bits 31..62: the floor
            mask = builder.sub(builder.shl(one, e), one)
            neg = builder.zext(builder.icmp_signed("<", r, zero), _V8)
            thr = builder.add(builder.lshr(mask, one), neg)
            up = builder.zext(builder.icmp_signed(">", builder.and_(r, mask), thr), _V8)
            v = builder.add(builder.add(builder.ashr(r, e), up), zo8)
            v = builder.select(builder.icmp_signed("<", v, lo8), lo8, v)
            v = builder.select(builder.icmp_signed(">", v, hi8), hi8, v)
            if fused_add:
                other = builder.add(builder.fptosi(builder.load(builder.gep(s_p, [i]), align=4), _V8), c128)
                row = builder.mul(builder.add(v, c128), ir.Constant(_V8, [256] * 8))
                f = _gather(builder, t_p, builder.add(row, other))
            else:
                f = builder.sitofp(v, _VF)
            builder.store(f, builder.gep(o_p, [i]), align=4)
            _loop_close(builder, i, n8_v, loop, done)
            return context.get_dummy_value()

        return sig, codegen

    return requant8


_requant8, _requant8_add = _make_requant8(False), _make_requant8(True)


def int_requant_rows(bias: np.ndarray, m: np.ndarray, shift: np.ndarray, wo: int) -> np.ndarray | None:
    """_requant8's constants (3, wo*C) int32 (bias, m, -shift, repeated over wo pixels), or None
    where its form does not apply (a left shift, a multiplier or bias outside int32)."""
    if len(shift) == 0 or shift.max() > 0 or shift.min() < -31 or m.min() < 0 or m.max() >= 2**31:
        return None
    if np.abs(bias).max() >= 2**31:
        return None
    return np.ascontiguousarray(np.stack([np.tile(v, wo) for v in (bias, m, -shift)]).astype(np.int32))


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Weights (Co, C, kh, kw) ints -> the micro-kernel's (ceil(Co/16), kh*kw, C2, 16) int32
    words: per tap (ky, kx), the int16 pair of channels (2i, 2i+1) of one output channel in one
    word; C padded to 2*C2 and Co to a multiple of 16 with zeros."""
    co, c, kh, kw = w.shape
    c2, nb = (c + 1) // 2, -(-co // COLS)
    wk = np.zeros((kh * kw, 2 * c2, nb * COLS), dtype=np.int16)
    wk[:, :c, :co] = np.asarray(w).transpose(2, 3, 1, 0).reshape(kh * kw, c, co)
    pairs = wk.reshape(kh * kw, c2, 2, nb, COLS).transpose(3, 0, 1, 4, 2)  # (NB, taps, C2, 16, 2)
    return np.ascontiguousarray(pairs).view(np.int32).reshape(nb, kh * kw, c2, COLS)


def tap_offsets(kh: int, kw: int, c2: int, width: int) -> np.ndarray:
    """int64 (kh*kw*c2,): word offset of every (tap, channel pair) from a window's top-left pixel
    in an int16 input of ``width`` pixels per row and 2*c2 channels, in pack_weights' order."""
    dy, dx, j = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(c2), indexing="ij")
    return ((dy * width + dx) * c2 + j).reshape(-1).astype(np.int64)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def conv_rows(x, za, tabs, top, left, kh, sh, sw, width, cpad, wp, offs, co_n, bias, bias_f, m, s, mh, ml, hh, n2, sc,
              tiles, qi, use_f64, zo, lo, hi, single, tab, other, out):  # pragma: no cover - jitted
    """out (N, Ho, Wo, Co) float32 codes of the convolution of the codes x (N, H, W, C) float32
    (zero point ``za``, padded by ``top`` / ``left`` and the zero point's 0 up to Ho, Wo; operand
    ``code - za``, or with ``tabs`` (S, 256) int16: S operands tabs[s, code + 128], channel s*C + c) with
    pack_weights' wp (``offs``: tap_offsets for ``width`` pixels of ``cpad`` channels, width >=
    (ceil(Wo/4)*4 - 1)*sw + kw); each accumulator + bias[c] (int64; bias_f: the same as float64)
    requantised by TFLite's MultiplyByQuantizedMultiplier (exact float64 form with
    nn.tflite_kernels.mbqm_f64_params' (mh, ml, hh, n2, sc) when ``use_f64``, else int64 with m,
    s), + zo, clamped to [lo, hi]. ``tiles`` (6, Wo*Co): bias_f, mh, ml, hh, n2, sc repeated over a
    row's pixels (one vectorised epilogue loop per output row; short channel loops cost more in
    set-up than in work), or (6, 0) for the per-pixel loop. ``qi`` (3, Wo*Co): int_requant_rows'
    constants, the int32 vector epilogue (_requant8) used instead where given (else (3, 0)).
    ``other`` (N, Ho, Wo, Co) float32 codes (else empty) with ``tab`` (65536,): the ADD that
    consumes this layer's output, fused into the vector epilogue (out = the ADD's codes).

    Each image's input is centred once into a per-thread int16 buffer (zero-point padding = 0,
    channels paired) that the micro-kernel then reads from cache for all its output rows."""
    n_img, h, w, c = x.shape
    ho, wo = out.shape[1], out.shape[2]
    nb = wp.shape[0]
    co_pad = nb * COLS
    wo_pad = -(-wo // ROWS) * ROWS
    c2 = cpad // 2  # int32 words (channel pairs) per pixel
    rows = n_img * ho
    chunks = min(rows, 64)
    k2 = offs.shape[0]
    # raw addresses: slicing arrays in the inner loops costs reference counting per call
    w0, f0 = wp.ctypes.data, offs.ctypes.data
    flat = use_f64 and co_n == co_pad and tiles.shape[1] == wo * co_n
    vec = (not single) and co_n == co_pad and qi.shape[1] == wo * co_n
    q0, o0, t0, s0 = qi.ctypes.data, out.ctypes.data, tab.ctypes.data, other.ctypes.data
    fused = other.size > 0
    hb = (ho - 1) * sh + kh  # padded input rows the output rows read
    ntab = tabs.shape[0]
    for ch in prange(chunks):
        acc = np.empty((wo_pad, co_pad), dtype=np.int32)
        buf = np.zeros((hb, width, cpad), dtype=np.int16)  # padding rows, columns and channel stay 0
        a0, b0 = acc.ctypes.data, buf.ctypes.data
        cur = -1
        for t in range(ch * rows // chunks, (ch + 1) * rows // chunks):
            n = t // ho
            oy = t - n * ho
            if n != cur:  # this image's rows, centred into the buffer once for all its output rows
                cur = n
                for iy in range(max(0, -top), min(h, hb - top)):
                    brow = buf[iy + top]
                    if ntab > 0:  # operand sets through their tables: channel s*C + c
                        for ix in range(w):
                            for cc in range(c):
                                k = np.int64(x[n, iy, ix, cc]) + 128
                                for st in range(ntab):
                                    brow[left + ix, st * c + cc] = tabs[st, k]
                    elif cpad == c:
                        dst = brow.reshape(-1)[left * c:(left + w) * c]
                        src = x[n, iy].reshape(-1)
                        for i in range(w * c):
                            dst[i] = np.int16(src[i] - za)
                    else:
                        for ix in range(w):
                            for cc in range(c):
                                brow[left + ix, cc] = np.int16(x[n, iy, ix, cc] - za)
            base = b0 + oy * sh * width * c2 * 4
            for m0 in range(0, wo, ROWS):
                for b in range(nb):
                    _mk4x16(base + m0 * sw * c2 * 4, sw * c2, f0, w0 + b * k2 * COLS * 4, k2,
                            a0 + (m0 * co_pad + b * COLS) * 4, co_pad)
            if vec:
                row = t * wo * co_n * 4
                if fused:
                    _requant8_add(a0, q0, wo * co_n, o0 + row, wo * co_n // 8, np.int32(zo), np.int32(lo),
                                  np.int32(hi), t0, s0 + row)
                else:
                    _requant8(a0, q0, wo * co_n, o0 + row, wo * co_n // 8, np.int32(zo), np.int32(lo), np.int32(hi),
                              t0, s0)
                continue
            orow = out[n, oy]
            if flat:  # one loop over the row's (pixel, channel) pairs, per-channel constants tiled
                _requant_f64(acc.reshape(-1)[:wo * co_n], orow.reshape(-1), tiles[0], tiles[1], tiles[2], tiles[3],
                             tiles[4], tiles[5], zo, lo, hi, single)
            else:
                for ox in range(wo):
                    if use_f64:
                        _requant_f64(acc[ox], orow[ox], bias_f, mh, ml, hh, n2, sc, zo, lo, hi, single)
                    else:
                        _requant_i64(acc[ox], orow[ox], bias, m, s, zo, lo, hi, single)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _requant_f64(a, o, bias, mh, ml, hh, n2, sc, zo, lo, hi, single):  # pragma: no cover - jitted
    for c in range(o.shape[0]):
        v = mbqm_f64(np.float64(a[c]) + bias[c], mh[c], ml[c], hh[c], n2[c], sc[c], single) + zo
        o[c] = min(max(v, lo), hi)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _requant_i64(a, o, bias, m, s, zo, lo, hi, single):  # pragma: no cover - jitted
    for c in range(o.shape[0]):
        v = mbqm1(np.int64(a[c]) + bias[c], m[c], s[c], single) + zo
        o[c] = min(max(v, lo), hi)
