"""rocmforge.ops.swiglu against a float64 NumPy reference. Bound: relative error 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5

SHAPES = [(1,), (5,), (3, 7), (17, 1536), (2, 3, 97), (257, 4099)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gate_scale", [1.0, 30.0])
def test_swiglu(rng, device, shape, gate_scale):
    gate = (rng.standard_normal(shape) * gate_scale).astype(np.float32)
    up = rng.standard_normal(shape).astype(np.float32)
    out = rf.ops.swiglu(gate, up, device=device)
    assert out.dtype == np.float32 and out.shape == gate.shape
    expected = ref.swiglu(gate, up)
    # Where every expected value is below float32's normal range (a lone gate of -90 gives
    # silu ~ 1e-37), a norm-wise relative error measures subnormal rounding, not the op:
    # there, values must agree to within float32's smallest normal number.
    tiny = np.finfo(np.float32).tiny
    assert rel_err(out, expected) < TOL or np.allclose(out, expected, rtol=TOL, atol=tiny)


def test_swiglu_extremes(device):
    gate = np.array([-1000.0, -88.0, 0.0, 88.0, 1000.0], dtype=np.float32)
    up = np.full(5, 2.0, dtype=np.float32)
    out = rf.ops.swiglu(gate, up, device=device)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref.swiglu(gate, up), rtol=1e-6, atol=1e-30)
