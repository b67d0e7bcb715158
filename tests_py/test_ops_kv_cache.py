"""rocmforge.ops.kv_append: rows written in place into float32 and float16 caches, against NumPy
slice assignment (float16: NumPy's round-to-nearest-even conversion, exactly)."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n_ctx,kv_heads,head_dim", [(1, 1, 64), (17, 3, 80), (2048, 8, 128)])
def test_kv_append(rng, device, cache_dtype, n_ctx, kv_heads, head_dim):
    cache = np.zeros((n_ctx, kv_heads, head_dim), dtype=cache_dtype)
    want = cache.copy()
    pos = 0
    while pos < n_ctx:  # a prefill chunk, then tokens one or a few at a time
        n = int(min(n_ctx - pos, rng.integers(1, max(2, n_ctx // 3))))
        src = (rng.standard_normal((n, kv_heads, head_dim)) * 100).astype(np.float32)
        assert rf.ops.kv_append(cache, src, pos, device=device) is None
        want[pos : pos + n] = src.astype(cache_dtype)
        np.testing.assert_array_equal(cache, want)
        pos += n


def test_kv_append_bounds_and_layout(rng, device):
    cache = np.zeros((4, 2, 8), dtype=np.float32)
    src = rng.standard_normal((2, 2, 8), dtype=np.float32)
    for pos in (3, 4, -1, 2**62):
        with pytest.raises(ValueError, match="cache"):
            rf.ops.kv_append(cache, src, pos, device=device)
    with pytest.raises(ValueError, match="shape"):
        rf.ops.kv_append(cache, src.reshape(2, 16), 0, device=device)
    with pytest.raises(ValueError, match="contiguous"):
        rf.ops.kv_append(np.zeros((4, 8, 2), np.float32).transpose(0, 2, 1), src, 0, device=device)
    with pytest.raises(TypeError, match="cache"):
        rf.ops.kv_append(cache.astype(np.float64), src, 0, device=device)
    with pytest.raises(ValueError, match="cache"):
        rf.ops.kv_append(cache, cache[:2], 0, device=device)  # cache also read as src
    readonly = cache.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        rf.ops.kv_append(readonly, src, 0, device=device)
    assert (cache == 0).all()
