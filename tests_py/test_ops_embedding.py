"""rocmforge.ops.embedding: rows of a float32 or GGUF-typed table, against the rows of the table
dequantized by the `gguf` package. Bound: relative error 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from gguf_blocks import CPU_TYPES, block_size, random_matrix, type_size
from numpy_ref import rel_err

TOL = 1e-5


def rocmforge_dequantizes(dtype):
    try:
        rf.dequantize(np.zeros((1, type_size(dtype)), np.uint8), dtype)
        return True
    except rf.UnsupportedError:
        return False


@pytest.mark.parametrize("dtype", CPU_TYPES)
@pytest.mark.parametrize("vocab,dim_blocks,ids_shape", [(1, 1, (1,)), (97, 3, (13,)), (1031, 2, (4, 7))])
def test_embedding(rng, device, dtype, vocab, dim_blocks, ids_shape):
    if not rocmforge_dequantizes(dtype):
        pytest.skip(f"this build of rocmforge does not dequantize {dtype}")
    dim = dim_blocks * block_size(dtype) * (64 if block_size(dtype) == 1 else 1)
    raw, table64 = random_matrix(rng, dtype, vocab, dim)
    ids = rng.integers(0, vocab, size=ids_shape)
    ids.flat[0], ids.flat[-1] = 0, vocab - 1  # both ends of the vocabulary
    table = raw.view(np.float32) if dtype == "F32" else raw
    out = rf.ops.embedding(table, ids, dtype, device=device)
    assert out.dtype == np.float32 and out.shape == ids_shape + (dim,)
    assert rel_err(out, table64[ids]) < TOL


def test_embedding_ids_outside_the_vocabulary(rng, device):
    table = rng.standard_normal((10, 8), dtype=np.float32)
    for bad in ([10], [-1], [3, 2**40]):
        with pytest.raises(ValueError, match="ids"):
            rf.ops.embedding(table, np.array(bad), device=device)
    with pytest.raises(TypeError, match="ids"):
        rf.ops.embedding(table, np.array([1.0, 2.0]), device=device)
