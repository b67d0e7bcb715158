"""rocmforge.ops.rope against a float64 NumPy reference: both conventions (pairs and halves),
any theta, arbitrary positions, optional per-dimension freq_factors (Llama 3 `rope_freqs`).

Bound: norm-wise relative error 1e-5 (angles are computed in float64, so large positions keep
full float32 accuracy).
"""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5

# (batch, seq, heads, head_dim)
SHAPES = [(1, 1, 1, 2), (1, 1, 1, 64), (2, 7, 3, 80), (1, 13, 8, 96), (3, 5, 9, 128), (1, 257, 2, 64), (1, 2048, 1, 128)]


def positions_for(rng, kind, seq):
    if kind == "arange":
        return np.arange(seq)
    if kind == "offset":  # decoding: the tokens sit after a cache
        return np.arange(seq) + int(rng.integers(1, 5000))
    return rng.integers(0, 100_000, size=seq)  # arbitrary, unsorted, large


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("neox", [False, True], ids=["pairs", "halves"])
@pytest.mark.parametrize("positions_kind", ["arange", "offset", "random"])
def test_rope(rng, device, shape, neox, positions_kind):
    x = rng.standard_normal(shape, dtype=np.float32)
    pos = positions_for(rng, positions_kind, shape[1])
    out = rf.ops.rope(x, pos, neox=neox, device=device)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert rel_err(out, ref.rope(x, pos, 10000.0, neox)) < TOL


@pytest.mark.parametrize("shape", SHAPES[1:5], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("neox", [False, True], ids=["pairs", "halves"])
@pytest.mark.parametrize("theta", [500000.0, 1e6, "random"])
def test_rope_theta_and_freq_factors(rng, device, shape, neox, theta):
    x = rng.standard_normal(shape, dtype=np.float32)
    pos = positions_for(rng, "random", shape[1])
    if theta == "random":
        theta = float(np.float32(rng.uniform(100.0, 2e6)))  # theta is taken as float32
    ff = rng.uniform(1.0, 40.0, size=shape[3] // 2).astype(np.float32)
    out = rf.ops.rope(x, pos, theta=theta, neox=neox, freq_factors=ff, device=device)
    assert rel_err(out, ref.rope(x, pos, theta, neox, ff)) < TOL
    # freq_factors of ones are no factors
    ones = np.ones(shape[3] // 2, dtype=np.float32)
    np.testing.assert_array_equal(
        rf.ops.rope(x, pos, theta=theta, neox=neox, freq_factors=ones, device=device),
        rf.ops.rope(x, pos, theta=theta, neox=neox, device=device),
    )


def test_rope_position_zero_is_identity_and_norms_are_kept(rng, device):
    x = rng.standard_normal((2, 6, 3, 64), dtype=np.float32)
    out = rf.ops.rope(x, np.zeros(6, dtype=np.int32), device=device)
    np.testing.assert_array_equal(out, x)
    out = rf.ops.rope(x, np.arange(6, dtype=np.uint16) * 1000, neox=True, device=device)
    # a rotation keeps the norm of every rotated pair, hence of every head
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_negative_positions(rng, device):
    x = rng.standard_normal((1, 4, 2, 32), dtype=np.float32)
    pos = np.array([-3, -1, 0, 7])
    assert rel_err(rf.ops.rope(x, pos, device=device), ref.rope(x, pos)) < TOL
