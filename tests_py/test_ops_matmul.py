"""rocmforge.ops.matmul: `x @ W.T` with W float32 or GGUF blocks of every type rocmforge
dequantizes, against float64 NumPy with W dequantized by the `gguf` package.

Bounds (norm-wise relative error): float32 weights 1e-5; quantized weights against the
dequantized weights 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from gguf_blocks import CPU_TYPES, block_size, dequantize, random_matrix, type_size
from numpy_ref import rel_err

TOL = 1e-5

# (m, n, k_blocks): m = 1 is decoding; sizes 1, odd, prime. Every case has at least 8 outputs:
# the norm-wise relative error of a single dot product is ill-conditioned (random terms can
# cancel to almost nothing), that of several is not.
SIZES = [(9, 1, 1), (1, 37, 3), (3, 17, 2), (7, 97, 5), (64, 13, 1), (129, 64, 4)]
F32_SIZES = [(1, 1, 1), (2, 3, 5), (1, 4099, 64), (17, 31, 96), (67, 129, 257), (1024, 1024, 1024)]


def rocmforge_dequantizes(dtype: str) -> bool:
    """Whether this build of rocmforge dequantizes `dtype` at all (matmul must agree)."""
    try:
        rf.dequantize(np.zeros((1, type_size(dtype)), np.uint8), dtype)
        return True
    except rf.UnsupportedError:
        return False


@pytest.mark.parametrize("m,n,k", F32_SIZES, ids=lambda v: str(v))
def test_matmul_float32(rng, device, m, n, k):
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    out = rf.ops.matmul(x, w, device=device)
    assert out.dtype == np.float32 and out.shape == (m, n)
    assert rel_err(out, ref.matmul(x, w)) < TOL


def test_matmul_batched_x(rng, device):
    x = rng.standard_normal((2, 5, 48), dtype=np.float32)
    w = rng.standard_normal((11, 48), dtype=np.float32)
    out = rf.ops.matmul(x, w, device=device)
    assert out.shape == (2, 5, 11)
    assert rel_err(out, ref.matmul(x, w)) < TOL
    out1 = rf.ops.matmul(x[0, 0], w, device=device)  # a vector x gives a vector
    assert out1.shape == (11,) and rel_err(out1, ref.matmul(x[0, 0], w)) < TOL


@pytest.mark.parametrize("dtype", CPU_TYPES)
@pytest.mark.parametrize("m,n,k_blocks", SIZES, ids=lambda v: str(v))
def test_matmul_gguf_types(rng, device, dtype, m, n, k_blocks):
    if not rocmforge_dequantizes(dtype):
        pytest.skip(f"this build of rocmforge does not dequantize {dtype}")
    k = k_blocks * block_size(dtype)
    raw, w64 = random_matrix(rng, dtype, n, k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = rf.ops.matmul(x, raw, dtype, device=device)
    assert out.dtype == np.float32 and out.shape == (m, n)
    assert rel_err(out, x.astype(np.float64) @ w64.T) < TOL


def test_matmul_of_a_type_rocmforge_cannot_dequantize_is_unsupported(rng, device):
    for dtype in ["IQ2_XXS", "IQ3_S", "TQ1_0", "MXFP4", "Q4_0", "Q8_K"]:
        if rocmforge_dequantizes(dtype):
            continue
        raw = np.zeros((3, 2 * type_size(dtype)), dtype=np.uint8)
        with pytest.raises(rf.UnsupportedError, match=dtype):
            rf.ops.matmul(np.ones((1, 2 * block_size(dtype)), np.float32), raw, dtype, device=device)


def test_matmul_real_file_weight(rng, device, smollm2_path):
    """A weight of the real SmolLM2 file, as stored (Q4_1 or other), against the gguf package."""
    name = "blk.0.ffn_down.weight"
    with rf.GGUFFile(smollm2_path) as g:
        info = next(t for t in g.tensors if t.name == name)
        raw = g.raw(name)
    dtype, (n, k) = info.dtype, info.shape
    if not rocmforge_dequantizes(dtype):
        pytest.skip(f"this build of rocmforge does not dequantize {dtype}")
    w64 = dequantize(raw, dtype, k)
    x = rng.standard_normal((5, k), dtype=np.float32)
    assert rel_err(rf.ops.matmul(x, raw, dtype, device=device), x.astype(np.float64) @ w64.T) < TOL
