"""rocmforge.ops attention ops (qkt_matmul, causal_mask, softmax, weighted_matmul,
flash_attention) against float64 NumPy references.

Bounds (norm-wise relative error, float32 inputs): 1e-5 for every op.
"""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5

# (batch, seq_q, seq_k, heads, kv_heads, head_dim): sizes 1, odd, prime; GQA ratios 1, 3, 8;
# head_dim 64/80/96/128; prefill (seq_q == seq_k), decode (seq_q = 1), chunked prefill against
# a cache (seq_q < seq_k) and seq_q > seq_k (the first queries see no key when causal).
SHAPES = [
    (1, 1, 1, 1, 1, 64),
    (2, 7, 7, 3, 1, 80),
    (1, 13, 29, 8, 1, 96),
    (1, 1, 37, 8, 8, 128),
    (3, 17, 5, 6, 2, 64),
    (1, 97, 97, 24, 8, 128),
    (2, 31, 64, 9, 3, 96),
    (1, 256, 256, 4, 4, 80),
]
# Long sequences, few heads.
LONG_SHAPES = [
    (1, 2048, 2048, 2, 1, 64),
    (1, 509, 1999, 3, 1, 128),
]
# One query token (decode) at the head sizes of the GPU's decode kernel for float32 keys (32, 64):
# one key, keys across several 32-key rounds and key splits, GQA 4 and 7 (Llama, Qwen2), a
# batch of 3, and G = 16 (past the decode kernel's 8: the flash path).
DECODE_SHAPES = [
    (1, 1, 1, 4, 1, 32),
    (1, 1, 1000, 32, 8, 64),
    (1, 1, 777, 14, 2, 64),
    (3, 1, 45, 6, 3, 32),
    (1, 1, 300, 16, 1, 64),
    # up to 512 keys a block per query head (attn_decode_head), past them a block per kv
    # head and key range, then the combine (attn_decode)
    (1, 1, 2500, 8, 2, 64),
    (2, 1, 1100, 4, 4, 32),
]
FLASH_ONLY_SHAPES = [(1, 4099, 4099, 1, 1, 64)] + DECODE_SHAPES


def shape_id(s):
    b, sq, sk, h, kvh, d = s
    return f"b{b}-q{sq}-k{sk}-h{h}/{kvh}-d{d}"


def make_qkv(rng, shape):
    b, sq, sk, h, kvh, d = shape
    q = rng.standard_normal((b, sq, h, d), dtype=np.float32)
    k = rng.standard_normal((b, sk, kvh, d), dtype=np.float32)
    v = rng.standard_normal((b, sk, kvh, d), dtype=np.float32)
    return q, k, v


# Scores are dot products: cases with a single score would make the norm-wise relative error
# ill-conditioned (the terms of one dot product can cancel), so this table has at least 9 scores.
QKT_SHAPES = [(1, 1, 9, 1, 1, 64)] + [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] >= 8]


@pytest.mark.parametrize("shape", QKT_SHAPES + LONG_SHAPES, ids=shape_id)
@pytest.mark.parametrize("scale", [None, 0.3])
def test_qkt_matmul(rng, device, shape, scale):
    q, k, _ = make_qkv(rng, shape)
    out = rf.ops.qkt_matmul(q, k, scale, device=device)
    assert out.dtype == np.float32
    want = ref.qkt_matmul(q, k, scale)
    assert out.shape == want.shape == (shape[0], shape[3], shape[1], shape[2])
    assert rel_err(out, want) < TOL


@pytest.mark.parametrize(
    "scores_shape", [(1, 1), (5, 5), (3, 9), (9, 3), (2, 3, 17, 17), (1, 4, 7, 40), (2, 1, 33, 12)]
)
def test_causal_mask(rng, device, scores_shape):
    scores = rng.standard_normal(scores_shape, dtype=np.float32)
    out = rf.ops.causal_mask(scores, device=device)
    want = ref.causal_mask(scores)
    np.testing.assert_array_equal(out, want.astype(np.float32))  # exact: -inf or the input
    seq_q, seq_k = scores_shape[-2:]
    assert np.isfinite(out[..., -1, :]).all()  # the last query sees every key


@pytest.mark.parametrize(
    "x_shape", [(1,), (7,), (3, 1), (4, 97), (2, 3, 5, 128), (1, 2, 2048), (3, 4099)]
)
@pytest.mark.parametrize("magnitude", [1.0, 80.0])
def test_softmax(rng, device, x_shape, magnitude):
    x = (rng.standard_normal(x_shape) * magnitude).astype(np.float32)
    out = rf.ops.softmax(x, device=device)
    want = ref.softmax(x)
    assert rel_err(out, want) < TOL
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_softmax_rows_of_minus_inf(rng, device):
    x = rng.standard_normal((6, 11), dtype=np.float32)
    x[0, :] = -np.inf  # no allowed entry: zeros, not NaN
    x[3, ::2] = -np.inf
    x[5, 1:] = -np.inf  # one entry left: probability 1
    out = rf.ops.softmax(x, device=device)
    assert np.isfinite(out).all()
    assert (out[0] == 0).all()
    assert (out[3, ::2] == 0).all()
    np.testing.assert_array_equal(out[5], np.eye(11, dtype=np.float32)[0])
    assert rel_err(out, ref.softmax(x)) < TOL


@pytest.mark.parametrize("shape", SHAPES + LONG_SHAPES, ids=shape_id)
@pytest.mark.parametrize("causal", [False, True])
def test_weighted_matmul(rng, device, shape, causal):
    q, k, v = make_qkv(rng, shape)
    scores = ref.qkt_matmul(q, k)
    if causal:
        scores = ref.causal_mask(scores)
    weights = ref.softmax(scores).astype(np.float32)
    out = rf.ops.weighted_matmul(weights, v, device=device)
    want = ref.weighted_matmul(weights, v)
    assert out.shape == want.shape == q.shape
    assert rel_err(out, want) < TOL


@pytest.mark.parametrize("shape", SHAPES + LONG_SHAPES + FLASH_ONLY_SHAPES, ids=shape_id)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention(rng, device, shape, causal):
    q, k, v = make_qkv(rng, shape)
    scale = None if shape[1] % 2 else float(rng.uniform(0.05, 0.3))
    out = rf.ops.flash_attention(q, k, v, causal=causal, scale=scale, device=device)
    want = ref.attention(q, k, v, causal=causal, scale=scale)
    assert out.dtype == np.float32 and out.shape == q.shape
    assert rel_err(out, want) < TOL
    if causal and shape[1] > shape[2]:
        blind = shape[1] - shape[2]  # queries before the first key get zeros
        assert (out[:, :blind] == 0).all()


# Sliding windows (causal): odd query counts, one query (decode) to a chunk of 33 against a
# cache of up to 300 keys, GQA 1, 3 and 8, head sizes of the GPU's decode kernels (32, 64, 128)
# and others (40, 80). Each runs with windows of 1, 5 and 64 keys and of every key.
WINDOW_SHAPES = [
    (1, 1, 1, 2, 1, 64),
    (1, 1, 300, 8, 1, 64),
    (2, 1, 77, 6, 2, 32),
    (1, 1, 257, 4, 4, 128),
    (1, 7, 7, 3, 1, 80),
    (2, 7, 130, 4, 2, 40),
    (1, 33, 33, 8, 8, 64),
    (1, 33, 300, 6, 2, 128),
    (1, 33, 20, 2, 1, 32),  # seq_q > seq_k: the first queries see no key
]


@pytest.mark.parametrize("shape", WINDOW_SHAPES, ids=shape_id)
@pytest.mark.parametrize("window", [1, 5, 64, "all"])
def test_flash_attention_over_a_sliding_window(rng, device, shape, window):
    q, k, v = make_qkv(rng, shape)
    seq_q, seq_k = shape[1], shape[2]
    window = seq_k + int(rng.integers(0, 3)) if window == "all" else window
    out = rf.ops.flash_attention(q, k, v, causal=True, window=window, device=device)
    want = ref.attention(q, k, v, causal=True, window=window)
    assert out.dtype == np.float32 and out.shape == q.shape
    assert rel_err(out, want) < TOL
    if window >= seq_k:  # a window of every key is the causal mask alone
        causal = rf.ops.flash_attention(q, k, v, causal=True, device=device)
        np.testing.assert_array_equal(out, causal)
    if window == 1 and seq_q <= seq_k:  # each query sees only its own key: out is that key's v
        group = shape[3] // shape[4]
        own = np.repeat(v[:, seq_k - seq_q :], group, axis=2)
        np.testing.assert_allclose(out, own, rtol=1e-6, atol=1e-6)


def test_flash_attention_window_reads_only_the_window(rng, device):
    """The keys before every query's window do not count: NaN there changes nothing."""
    q, k, v = make_qkv(rng, (1, 5, 200, 4, 2, 64))
    window = 40
    first = 200 - 5 + 1 - window  # the first query's first key
    k[:, :first], v[:, :first] = np.nan, np.nan
    out = rf.ops.flash_attention(q, k, v, causal=True, window=window, device=device)
    want = ref.attention(q, k[:, first:], v[:, first:], causal=True, window=window)
    assert rel_err(out, want) < TOL


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"causal": False, "window": 4}, "window needs causal=True"),
        ({"causal": True, "window": 0}, "window must be at least 1"),
        ({"causal": True, "window": -3}, "window must be at least 1"),
    ],
)
def test_flash_attention_window_arguments(device, kwargs, match):
    q, k = np.ones((1, 3, 2, 8), np.float32), np.ones((1, 5, 1, 8), np.float32)
    with pytest.raises(ValueError, match=f"flash_attention: {match}"):
        rf.ops.flash_attention(q, k, k, device=device, **kwargs)


@pytest.mark.parametrize("shape", SHAPES + LONG_SHAPES[:1], ids=shape_id)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_equals_the_unfused_ops(rng, device, shape, causal):
    q, k, v = make_qkv(rng, shape)
    ops = rf.ops
    scores = ops.qkt_matmul(q, k, device=device)
    if causal:
        scores = ops.causal_mask(scores, device=device)
    unfused = ops.weighted_matmul(ops.softmax(scores, device=device), v, device=device)
    fused = ops.flash_attention(q, k, v, causal=causal, device=device)
    assert rel_err(fused, unfused) < TOL


def test_scale_default_is_one_over_sqrt_head_dim(rng, device):
    q, k, _ = make_qkv(rng, (1, 3, 4, 2, 1, 80))
    a = rf.ops.qkt_matmul(q, k, device=device)
    b = rf.ops.qkt_matmul(q, k, 1 / np.sqrt(80), device=device)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("x_shape", [(1,), (3, 7), (2, 4, 97, 97)])
def test_scale(rng, device, x_shape):
    x = rng.standard_normal(x_shape, dtype=np.float32)
    factor = float(rng.uniform(-3, 3))
    out = rf.ops.scale(x, factor, device=device)
    assert rel_err(out, x.astype(np.float64) * factor) < TOL
