"""numba-cuda kernels of the AxNN gather (LUT in GPU global memory).

Without a GPU, set ``NUMBA_ENABLE_CUDASIM=1`` *before* importing numba.cuda to run the same
kernels in numba's CUDA simulator (slow: tests use tiny inputs).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from hwsim.errors import AxlabError


def _check() -> None:
    if not cuda.is_available():
        raise AxlabError("backend cuda: no CUDA GPU available (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)")


def to_device(a: np.ndarray):  # noqa: ANN201 - numba device array
    _check()
    return cuda.to_device(np.ascontiguousarray(a))


@cuda.jit
def _gather_kernel(xi, w, lut, kh, kw, sh, sw, ho, wo, acc, sidx):  # pragma: no cover - device code
    """One thread per (image, output channel, output pixel): acc = sum_k lut[x_idx, w_idx].

    xi uint8 (N, C, Hp, Wp); w uint8 (Co, K) with k = (ci, ky, kx); lut int32 (256, 256);
    acc int32 (N, Co, ho*wo); sidx int32 (N, ho*wo) (written by the co == 0 threads).
    """
    t = cuda.grid(1)
    n_img, c_in = xi.shape[0], xi.shape[1]
    co_n = w.shape[0]
    pn = ho * wo
    if t >= n_img * co_n * pn:
        return
    p = t % pn
    co = (t // pn) % co_n
    n = t // (pn * co_n)
    oy = p // wo
    ox = p - oy * wo
    a = 0
    s = 0
    k = 0
    for ci in range(c_in):
        for ky in range(kh):
            for kx in range(kw):
                v = np.int32(xi[n, ci, oy * sh + ky, ox * sw + kx])  # widen: uint8 sums would wrap
                a += lut[v, w[co, k]]
                s += v
                k += 1
    acc[n, co, p] = a
    if co == 0:
        sidx[n, p] = s


def gather_conv(xi: np.ndarray, d_w, d_lut, kh: int, kw: int, stride: tuple[int, int], ho: int,
                wo: int) -> tuple[np.ndarray, np.ndarray]:
    """Host wrapper: copies ``xi`` to the GPU, runs the kernel, returns (acc, sidx) on the host."""
    n = xi.shape[0]
    co = d_w.shape[0]
    d_x = cuda.to_device(xi)
    d_acc = cuda.device_array((n, co, ho * wo), dtype=np.int32)
    d_s = cuda.device_array((n, ho * wo), dtype=np.int32)
    total = n * co * ho * wo
    threads = 128
    blocks = (total + threads - 1) // threads
    _gather_kernel[blocks, threads](d_x, d_w, d_lut, kh, kw, stride[0], stride[1], ho, wo, d_acc, d_s)
    return d_acc.copy_to_host(), d_s.copy_to_host()
