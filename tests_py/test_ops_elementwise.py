"""rocmforge.ops.add (residuals and biases) and scale against NumPy. Bound: relative error 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5

SHAPES = [(1,), (7,), (3, 1), (17, 576), (2, 3, 97), (1000, 1031)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_add_same_shape(rng, device, shape):
    a = rng.standard_normal(shape, dtype=np.float32)
    b = rng.standard_normal(shape, dtype=np.float32)
    out = rf.ops.add(a, b, device=device)
    assert rel_err(out, a.astype(np.float64) + b) < TOL


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_add_bias(rng, device, shape):
    a = rng.standard_normal(shape, dtype=np.float32)
    bias = rng.standard_normal(shape[-1], dtype=np.float32)
    out = rf.ops.add(a, bias, device=device)
    assert rel_err(out, a.astype(np.float64) + bias) < TOL


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_scale(rng, device, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    factor = float(rng.uniform(-5, 5))
    assert rel_err(rf.ops.scale(x, factor, device=device), x.astype(np.float64) * factor) < TOL


def test_inputs_are_not_modified(rng, device):
    a = rng.standard_normal((4, 5), dtype=np.float32)
    b = rng.standard_normal((4, 5), dtype=np.float32)
    a0, b0 = a.copy(), b.copy()
    rf.ops.add(a, b, device=device)
    rf.ops.scale(a, 3.0, device=device)
    rf.ops.softmax(a, device=device)
    rf.ops.causal_mask(a, device=device)
    rf.ops.rope(a.reshape(1, 4, 1, 5)[..., :4].copy(), np.arange(4), device=device)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
