"""rocmforge.ops.rms_norm against a float64 NumPy reference. Bound: relative error 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5

SHAPES = [(1,), (7,), (1, 1), (3, 7), (17, 576), (2, 4099), (5, 3, 128), (64, 2048), (1, 2, 3, 896)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.1])
def test_rms_norm(rng, device, shape, eps):
    magnitude = 10.0 ** rng.uniform(-3, 3)
    x = (rng.standard_normal(shape) * magnitude).astype(np.float32)
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    out = rf.ops.rms_norm(x, w, eps, device=device)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert rel_err(out, ref.rms_norm(x, w, eps)) < TOL


def test_rms_norm_default_eps(rng, device):
    x = rng.standard_normal((3, 64), dtype=np.float32) * 1e-3
    w = np.ones(64, dtype=np.float32)
    assert rel_err(rf.ops.rms_norm(x, w, device=device), ref.rms_norm(x, w, 1e-6)) < TOL
