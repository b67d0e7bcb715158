"""The model's GPU matmul on tensor cores (`_rocmforge.gpu_matmul`, what `Backend::matmul`
runs in prefill) against float64 NumPy with W dequantized by the `gguf` package.

Bound: x and W are rounded to f16 (each within 2^-11 relative, after the kernel's per-row
power-of-two scale of x) and products are accumulated in float32, so every output may be off
by about 2^-10 of sum_c |x[r, c]| |W[j, c]|; the tests allow 1.05 * 2^-10 of it, plus float32
accumulation (k * 2^-24 of the same sum). A wrong fragment, tile or scale gives errors of the
size of the outputs themselves. Skipped without a GPU with tensor cores.
"""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from devices import HAS_GPU
from gguf_blocks import block_size, random_matrix

native = rf._rocmforge

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")


def has_mma() -> bool:
    try:
        native.gpu_matmul(np.ones((16, 32), np.float32), np.ones((8, 32), np.float32), "F32", "mma")
        return True
    except rf.UnsupportedError:
        return False


@pytest.fixture(scope="module")
def mma():
    if not HAS_GPU or not has_mma():
        pytest.skip("no tensor-core matmul on this GPU")


def check(out, x, w64, what):
    x64 = x.astype(np.float64)
    want = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T
    k = x.shape[1]
    bound = mag * (1.05 * 2.0**-10 + k * 2.0**-24) + 1e-30
    err = np.abs(out.astype(np.float64) - want)
    assert np.all(np.isfinite(out)), f"{what}: non-finite outputs"
    worst = float(np.max(err / bound))
    assert worst <= 1.0, f"{what}: error {worst:.3f} x the f16 bound"
    return worst


TYPES = ["F16", "Q4_0", "Q8_0", "Q4_K", "Q6_K", "F32", "BF16", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K",
         "IQ4_NL", "IQ4_XS"]


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("m,n,k_blocks", [(9, 131, 3), (77, 257, 7), (300, 129, 9)], ids=str)
def test_mma_matmul_types(rng, mma, dtype, m, n, k_blocks):
    k = k_blocks * max(block_size(dtype), 32)
    try:
        raw, w64 = random_matrix(rng, dtype, n, k)
    except (KeyError, NotImplementedError) as e:
        pytest.skip(f"no reference for {dtype}: {e}")
    x = rng.standard_normal((m, k), dtype=np.float32)
    x[1] *= 1e6  # beyond f16's 65504: the per-row scale must keep it finite
    x[2] *= 1e-6
    out = native.gpu_matmul(x, raw, dtype, "mma")
    assert out.shape == (m, n) and out.dtype == np.float32
    check(out, x, w64, f"{dtype} m={m} n={n} k={k}")


@pytest.mark.parametrize("dtype", ["Q4_0", "Q8_0", "Q4_K"])
def test_mma_matmul_large(rng, mma, dtype):
    m, n, k = 512, 4096, 4096
    raw, w64 = random_matrix(rng, dtype, n, k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    x[0] *= 1e5  # a row with values > 65504
    x[0, 17] = 70000.0
    out = native.gpu_matmul(x, raw, dtype, "mma")
    check(out, x, w64, f"{dtype} {m}x{n}x{k}")
    # the model path takes the same kernel at this size
    model = native.gpu_matmul(x, raw, dtype, "model")
    assert np.array_equal(model, out)


def test_mma_matmul_f16_overflow_row(rng, mma):
    """A row whose values all exceed f16's range, one of zeros, and a NaN row that stays NaN."""
    m, n, k = 40, 64, 128
    raw, w64 = random_matrix(rng, "Q8_0", n, k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    x[3] = np.sign(x[3]) * (1e5 + np.abs(x[3]) * 1e5)
    x[4] = 0.0
    x[5, 7] = np.nan
    out = native.gpu_matmul(x, raw, "Q8_0", "mma")
    assert np.all(np.isnan(out[5]))
    assert np.all(out[4] == 0.0)
    rows = [r for r in range(m) if r != 5]
    check(out[rows], x[rows], w64, "overflow rows")
    assert np.abs(out[3]).max() > 65504


def test_model_path_threshold(rng):
    """Below MMA_MIN_M rows (m = 2 to 8) the model's matmul is the exact op path (1e-5); m = 1
    takes the 8-bit x matvec (test_gpu_matvec_q8x.py)."""
    n, k = 96, 256
    raw, w64 = random_matrix(rng, "Q4_0", n, k)
    for m in (2, 8):
        x = rng.standard_normal((m, k), dtype=np.float32)
        out = native.gpu_matmul(x, raw, "Q4_0", "model")
        exact = native.gpu_matmul(x, raw, "Q4_0", "exact")
        assert np.array_equal(out, exact)
        want = x.astype(np.float64) @ w64.T
        assert np.linalg.norm(out - want) <= 1e-5 * np.linalg.norm(want)


def test_f32_weights_keep_the_exact_kernels_in_the_model(rng):
    """An F32 file asks for float32 arithmetic: the model's matmul does not round it to f16."""
    m, n, k = 64, 96, 256
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = native.gpu_matmul(x, w, "F32", "model")
    assert np.array_equal(out, native.gpu_matmul(x, w, "F32", "exact"))
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.linalg.norm(out - want) <= 1e-5 * np.linalg.norm(want)


def test_exact_op_is_untouched(rng, mma):
    """rf.ops.matmul stays on the float32 kernels at every m (its 1e-5 contract)."""
    m, n, k = 300, 129, 512
    raw, w64 = random_matrix(rng, "Q4_0", n, k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = rf.ops.matmul(x, raw, "Q4_0", device="gpu")
    want = x.astype(np.float64) @ w64.T
    assert np.linalg.norm(out - want) <= 1e-5 * np.linalg.norm(want)
