"""rocmforge.ops.argmax against NumPy: lowest index on ties, NaN never picked over a number."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf


@pytest.mark.parametrize("n", [1, 2, 7, 97, 49152, 151936])
def test_argmax(rng, device, n):
    x = rng.standard_normal(n, dtype=np.float32)
    assert rf.ops.argmax(x, device=device) == int(np.argmax(x))


def test_argmax_ties_infinities_and_nan(rng, device):
    x = np.array([1.0, 5.0, 5.0, -2.0], dtype=np.float32)
    assert rf.ops.argmax(x, device=device) == 1
    x = np.full(11, -np.inf, dtype=np.float32)
    assert rf.ops.argmax(x, device=device) == 0
    x[7] = np.inf
    assert rf.ops.argmax(x, device=device) == 7
    x = rng.standard_normal(50, dtype=np.float32)
    x[[0, 13, 40]] = np.nan
    assert rf.ops.argmax(x, device=device) == int(np.nanargmax(x))
    q = rng.integers(0, 4, size=1000).astype(np.float32)  # many ties
    assert rf.ops.argmax(q, device=device) == int(np.argmax(q))
