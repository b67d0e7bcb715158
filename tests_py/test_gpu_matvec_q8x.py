"""The model's GPU decode matvec (m = 1, Q4_0 and Q8_0 weights: `_rocmforge.gpu_matmul(...,
"model")`, what `Backend::matmul` and the fused decode projections run) against float64 NumPy
with W dequantized by the `gguf` package.

That path quantizes x to 8 bits in registers, as llama.cpp and the CPU backend do: each piece
of x (32 values for Q4_0, 16 for Q8_0, aligned from the row's start) becomes d * q with
d = max|x| / 127 (float32) and q = x * (127 / max|x|) rounded to the nearest integer, ties to
even. The reference does the same in NumPy, so the only difference left is float32
accumulation: the test allows k * 2^-23 of sum |x_q| |W|. A wrong nibble, scale or piece gives
errors of the size of the outputs. It also checks the 8-bit error against the exact product
(about 1/254 of max|x| per piece) and that `rocmforge.ops.matmul` keeps float32 x.
"""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from devices import HAS_GPU
from gguf_blocks import random_matrix

native = rf._rocmforge

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")

PIECE = {"Q4_0": 32, "Q8_0": 16}


def quantize_x(x: np.ndarray, piece: int) -> np.ndarray:
    """x as the kernels see it (float64 values d * q)."""
    xs = x.astype(np.float32).reshape(-1, piece)
    amax = np.abs(xs).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    d = (amax / np.float32(127)).astype(np.float32)
    q = np.rint(xs.astype(np.float64) * inv.astype(np.float64))
    assert np.abs(q).max() <= 127
    return (q * d.astype(np.float64)).reshape(-1)


@pytest.mark.parametrize("dtype", ["Q4_0", "Q8_0"])
@pytest.mark.parametrize("n,k", [(37, 192), (131, 896), (300, 2112), (64, 4096), (5, 5120), (4099, 4096)], ids=str)
def test_model_matvec_q8x(rng, dtype, n, k):
    raw, w64 = random_matrix(rng, dtype, n, k)
    x = rng.standard_normal((1, k), dtype=np.float32)
    x[0, :32] *= 1e3  # pieces of very different scales
    x[0, 32:64] = 0.0  # a piece of zeros (scale 0)
    xq = quantize_x(x[0], PIECE[dtype])
    want = w64 @ xq
    bound = k * 2.0**-23 * (np.abs(w64) @ np.abs(xq)) + 1e-30
    got = native.gpu_matmul(x, raw, dtype, "model")
    assert got.shape == (1, n) and np.all(np.isfinite(got))
    worst = float(np.max(np.abs(got[0] - want) / bound))
    assert worst <= 1.0, f"{dtype} {n}x{k}: error {worst:.3f} x the float32 bound"
    # the 8-bit error itself: at most half a step (max|x| / 254) per value of each piece
    step = np.repeat(np.abs(x[0].reshape(-1, PIECE[dtype])).max(axis=1) / 254.0, PIECE[dtype])
    exact = w64 @ x[0].astype(np.float64)
    assert np.all(np.abs(got[0] - exact) <= np.abs(w64) @ step * 1.001 + bound)
    # the op keeps float32 activations
    op = native.gpu_matmul(x, raw, dtype, "exact")
    assert np.max(np.abs(op[0] - exact)) <= 1e-5 * max(1.0, np.abs(exact).max())


@pytest.mark.parametrize("dtype", ["Q4_0", "Q8_0"])
def test_model_matvec_q8x_non_finite(rng, dtype):
    """A NaN or an infinity in x gives non-finite outputs, never a finite guess."""
    n, k = 40, 256
    raw, _ = random_matrix(rng, dtype, n, k)
    for bad in (np.nan, np.inf):
        x = rng.standard_normal((1, k), dtype=np.float32)
        x[0, 100] = bad
        got = native.gpu_matmul(x, raw, dtype, "model")
        assert not np.any(np.isfinite(got)), f"{dtype} x with {bad}"


def test_model_matvec_odd_q4_0_rows_keep_float_x(rng):
    """Q4_0 rows of an odd number of blocks (not a whole number of 4-byte words) have no m = 1
    kernel: the model takes the general float32 one, equal to the op's."""
    n, k = 37, 96
    raw, w64 = random_matrix(rng, "Q4_0", n, k)
    x = rng.standard_normal((1, k), dtype=np.float32)
    model = native.gpu_matmul(x, raw, "Q4_0", "model")
    assert np.array_equal(model, native.gpu_matmul(x, raw, "Q4_0", "exact"))
    exact = w64 @ x[0].astype(np.float64)
    assert np.max(np.abs(model[0] - exact)) <= 1e-5 * max(1.0, np.abs(exact).max())


@pytest.mark.parametrize("dtype", ["Q4_0", "Q8_0"])
@pytest.mark.parametrize("n,k", [(131, 896), (77, 2112), (157, 4096), (300, 4160), (64, 5120)],
                         ids=str)
def test_model_gate_up_swiglu_q8x(rng, dtype, n, k):
    """The decode step's fused gate/up + SwiGLU (the streaming kernel for rows of 2048 values
    or more, two row groups in flight from 4096) against float64 NumPy on the same 8-bit x:
    silu(g) * u with the float32 errors of g and u carried through silu and the product."""
    raw_g, wg = random_matrix(rng, dtype, n, k)
    raw_u, wu = random_matrix(rng, dtype, n, k)
    # g and u of a few units (silu neither linear nor flat), pieces of different scales
    x = rng.standard_normal(k).astype(np.float32)
    x *= np.float32(2.0 / (np.sqrt(k) * np.std(wg)))
    x[:32] *= 4.0
    x[32:64] = 0.0
    xq = quantize_x(x, PIECE[dtype])
    g, u = wg @ xq, wu @ xq
    # Each piece's dot product is exact (integers), then a float product and at most ~25
    # float additions of the pieces' sums (a thread's passes, the butterfly across 32 lanes,
    # the block's groups): 32 roundings of sum |W| |xq| bound each sum.
    bg = 32 * 2.0**-23 * (np.abs(wg) @ np.abs(xq))
    bu = 32 * 2.0**-23 * (np.abs(wu) @ np.abs(xq))
    silu = g / (1.0 + np.exp(-g))
    want = silu * u
    # d silu / dg <= 1.1; float32 exp and division: a few ulps of the result
    bound = 1.1 * bg * (np.abs(u) + bu) + np.abs(silu) * bu + 1e-6 * np.abs(want) + 1e-30
    got = native.gpu_matvec_swiglu(x, raw_g, raw_u, dtype)
    assert got.shape == (n,) and np.all(np.isfinite(got))
    worst = float(np.max(np.abs(got - want) / bound))
    assert worst <= 1.0, f"{dtype} {n}x{k}: error {worst:.3f} x the bound"
    # the bound is a small part of the outputs: a wrong row, piece or scale shows
    assert np.median(bound / np.abs(want)) < 0.01
