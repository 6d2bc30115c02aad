"""Exact integer low-rank factorisation of a multiplier's error table.

For a LUT with error ``E = LUT - a*b`` of (integer) rank R we find integer matrices
``U`` (2^bits_a, R) and ``V`` (R, 2^bits_b) with ``E == U @ V`` exactly, so that

    LUT(a, b) = a*b + sum_r U[a, r] * V[r, b]        (indices = operand codes)

and an approximate layer is one exact convolution plus R convolutions on transformed
operands. Because U and V are integers, every term is an integer and float32/float64
convolutions are exact as long as the magnitude bound of their partial sums stays below
2^24 / 2^53 (the engine checks that bound per layer and splits channels when needed).

Method: the rows of E span an integer lattice of rank R. We build an echelon basis of that
lattice with unimodular (extended-gcd) row operations, i.e. a Hermite-style form, so every
row of E is an *integer* combination of the basis rows; those coefficients form U. The
result is verified entry by entry (``U @ V == E`` in int64/Python ints) before it is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LowRank:
    """``E = U @ V`` exactly; U int64 (rows, R), V int64 (R, cols)."""

    U: np.ndarray
    V: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])


def _ext_gcd(a: int, b: int) -> tuple[int, int, int]:
    """(g, x, y) with a*x + b*y == g == gcd(a, b) >= 0."""
    x0, y0, x1, y1 = 1, 0, 0, 1
    while b:
        q, a, b = a // b, b, a % b
        x0, x1 = x1, x0 - q * x1
        y0, y1 = y1, y0 - q * y1
    if a < 0:
        a, x0, y0 = -a, -x0, -y0
    return a, x0, y0


def _first_nonzero(v: list[int]) -> int:
    for i, x in enumerate(v):
        if x:
            return i
    return -1


def integer_factor(E: np.ndarray, max_rank: int = 16) -> LowRank | None:
    """Exact integer factorisation of ``E``, or None when its rank exceeds ``max_rank``.

    ``E``: integer matrix (rows, cols). Returns U (rows, R) and V (R, cols), int64, with
    ``U @ V == E`` verified exactly. R equals the rank of E.
    """
    E = np.asarray(E, dtype=np.int64)
    rows, cols = E.shape
    uniq, inverse = np.unique(E, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    # basis: echelon rows (Python ints, unbounded) keyed by pivot column
    basis: dict[int, list[int]] = {}
    for r in uniq:
        v = [int(x) for x in r]
        while True:
            p = _first_nonzero(v)
            if p < 0:
                break
            b = basis.get(p)
            if b is None:
                if v[p] < 0:
                    v = [-x for x in v]
                basis[p] = v
                if len(basis) > max_rank:
                    return None
                break
            if v[p] % b[p] == 0:
                q = v[p] // b[p]
                v = [x - q * y for x, y in zip(v, b)]
                continue
            # unimodular 2x2 step: new basis row has pivot gcd, v gets a zero there
            g, s, t = _ext_gcd(b[p], v[p])
            bp, vp = b[p] // g, v[p] // g
            nb = [s * y + t * x for x, y in zip(v, b)]
            v = [bp * x - vp * y for x, y in zip(v, b)]
            basis[p] = nb
    pivots = sorted(basis)
    R = len(pivots)
    V = [basis[p] for p in pivots]
    # size reduction: make entries above each pivot small (keeps U and V magnitudes low)
    for j in range(R):
        pj = pivots[j]
        for i in range(j):
            q = _round_div(V[i][pj], V[j][pj])
            if q:
                V[i] = [x - q * y for x, y in zip(V[i], V[j])]
    # coefficients of every distinct row in the basis (integer by the lattice property)
    Uu = []
    for r in uniq:
        v = [int(x) for x in r]
        coef = [0] * R
        for j, p in enumerate(pivots):
            if v[p]:
                q, rem = divmod(v[p], V[j][p])
                if rem:
                    raise AssertionError("lattice reduction failed")  # cannot happen
                coef[j] = q
                v = [x - q * y for x, y in zip(v, V[j])]
        if any(v):
            raise AssertionError("row not in basis span")  # cannot happen
        Uu.append(coef)
    big = max([abs(x) for row in V for x in row] + [abs(x) for row in Uu for x in row] + [0])
    if big >= 2**31:
        return None  # too large to be useful in float convolutions
    Vn = np.array(V, dtype=np.int64).reshape(R, cols)
    Un = np.array(Uu, dtype=np.int64).reshape(len(uniq), R)[inverse]
    if not np.array_equal(Un @ Vn, E):
        return None
    return LowRank(Un, Vn)


def _round_div(a: int, b: int) -> int:
    """Nearest integer to a / b for Python ints, b > 0 (pivots are kept positive)."""
    return (2 * a + b) // (2 * b)


def _cost(U: np.ndarray, V: np.ndarray) -> float:
    """sum_r range(U[:, r]) * mean|V[r]|: the magnitude bound of a convolution over the terms
    (the engine's float-exactness bound is sum_r max|U_r - U_r(zero point)| * sum_k |V_r(w_k)|)."""
    return float(sum((U[:, r].max() - U[:, r].min()) * np.abs(V[r]).mean() for r in range(U.shape[1])))


def balance(f: LowRank, max_passes: int = 50) -> LowRank:
    """An equivalent factorisation with smaller magnitudes: greedy unimodular steps
    U_i -= q U_j, V_j += q V_i (which keep U @ V) while they lower ``_cost``, q from the
    nearest-integer projection of U_i on U_j and small neighbours. A lattice basis from
    ``integer_factor`` can hold near-parallel columns (e.g. 2032 a/127 and 2016 a/127) whose
    difference is small: fewer float32 channel groups, or none, in the engine's convolutions."""
    U, V = f.U.copy(), f.V.copy()
    R = U.shape[1]
    best = _cost(U, V)
    for _ in range(max_passes):
        improved = False
        for i in range(R):
            for j in range(R):
                if i == j:
                    continue
                den = float(U[:, j] @ U[:, j])
                q0 = int(round(float(U[:, i] @ U[:, j]) / den)) if den else 0
                for q in sorted({q0, q0 - 1, q0 + 1, 1, -1, 2, -2} - {0}):
                    Ui = U[:, i] - q * U[:, j]
                    Vj = V[j] + q * V[i]
                    if max(np.abs(Ui).max(), np.abs(Vj).max()) >= 2**31:
                        continue
                    U2, V2 = U.copy(), V.copy()
                    U2[:, i], V2[j] = Ui, Vj
                    c = _cost(U2, V2)
                    if c < best * 0.999:
                        U, V, best, improved = U2, V2, c, True
        if not improved:
            break
    if not np.array_equal(U @ V, f.U @ f.V):  # cannot happen: every step is unimodular
        return f
    return LowRank(U, V)
