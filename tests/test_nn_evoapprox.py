"""The real EvoApprox mul8s circuits (../shared/evoapprox, skipped when absent) and the
built-in family: exact low-rank factorisation and bit-identical backends."""
from __future__ import annotations

import numpy as np
import pytest

from nn.engine import IntegerEngine
from nn.lut_forms import lut_factor
from nn.mac import ConvMac
from tests.nn_fixtures import EVO_DIR, builtin_luts, digits_test, evo_luts, minnet_qat

@pytest.fixture(scope="module")
def nn_evo():
    if not EVO_DIR.is_dir():
        pytest.skip("../shared/evoapprox not present")
    luts = evo_luts()
    if not luts:
        pytest.skip("hwsim.store not available")
    return luts


def test_evoapprox_error_rank_at_most_4(nn_evo):
    assert len(nn_evo) == 13
    for lut in nn_evo:
        f = lut_factor(lut)
        assert f is not None and f.rank <= 4, lut.name
        assert f.rank == np.linalg.matrix_rank(lut.error_table().astype(float))
        assert np.array_equal(np.multiply.outer(lut.values_a(), lut.values_b()) + f.U @ f.V, lut.table)


def test_evoapprox_backends_bit_identical(nn_evo):
    b = minnet_qat()
    x, _ = digits_test()
    x = x[:4]
    for lut in nn_evo:
        luts = [lut] * 4
        ref = IntegerEngine(b, luts, "torch").logits(x)
        fast = IntegerEngine(b, luts, "numba")
        assert all(isinstance(m, ConvMac) for m in fast.macs.values())
        assert np.array_equal(fast.logits(x), ref), lut.name
        assert np.array_equal(IntegerEngine(b, luts, "numba", lowrank=False).logits(x), ref), lut.name
    exact = [l for l in nn_evo if l.is_exact()]
    assert exact and np.array_equal(IntegerEngine(b, exact * 4, "torch").logits(x), IntegerEngine(b).logits(x))


def test_builtin_family_backends_bit_identical():
    luts = builtin_luts()
    if not luts:
        pytest.skip("hwsim.store not available")
    b = minnet_qat()
    x, _ = digits_test()
    x = x[:4]
    for lut in luts:
        name = lut.name
        ref = IntegerEngine(b, [lut] * 4, "torch").logits(x)
        assert np.array_equal(IntegerEngine(b, [lut] * 4, "numba").logits(x), ref), name
        assert np.array_equal(IntegerEngine(b, [lut] * 4, "numba", lowrank=False).logits(x), ref), name
