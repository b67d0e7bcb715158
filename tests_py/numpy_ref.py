"""Float64 NumPy references of the ops in `rocmforge.ops`, written from the math (independent of
rocmforge), and the error measure the op tests use."""

from __future__ import annotations

import numpy as np


def rel_err(out, ref) -> float:
    """Norm-wise relative error ||out - ref|| / ||ref||, in float64."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def _expand_kv(kv, heads):
    """[b, s, kv_heads, d] -> [b, s, heads, d]: query head h uses kv head h // (heads // kv_heads)."""
    return np.repeat(kv.astype(np.float64), heads // kv.shape[2], axis=2)


def qkt_matmul(q, k, scale=None):
    """scores [b, h, i, j] = q[b, i, h] . k[b, j, h // group] * scale."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    q64 = q.astype(np.float64).transpose(0, 2, 1, 3)  # [b, h, sq, d]
    k64 = _expand_kv(k, q.shape[2]).transpose(0, 2, 3, 1)  # [b, h, d, sk]
    return (q64 @ k64) * scale


def causal_mask(scores):
    """-inf where key j > query i + (seq_k - seq_q)."""
    seq_q, seq_k = scores.shape[-2:]
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    return np.where(j > i + (seq_k - seq_q), -np.inf, scores)


def softmax(x):
    """Softmax over the last axis; rows of all -inf give zeros."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def weighted_matmul(weights, v):
    """out [b, i, h, :] = sum_j weights[b, h, i, j] v[b, j, h // group, :]."""
    v64 = _expand_kv(v, weights.shape[1]).transpose(0, 2, 1, 3)  # [b, h, sk, d]
    return (weights.astype(np.float64) @ v64).transpose(0, 2, 1, 3)


def window_mask(scores, window):
    """-inf where key j is `window` or more positions before query i's, p = i + (seq_k - seq_q)."""
    seq_q, seq_k = scores.shape[-2:]
    i = np.arange(seq_q)[:, None]
    j = np.arange(seq_k)[None, :]
    return np.where(i + (seq_k - seq_q) - j >= window, -np.inf, scores)


def attention(q, k, v, causal=False, scale=None, window=None):
    scores = qkt_matmul(q, k, scale)
    if causal:
        scores = causal_mask(scores)
    if window is not None:
        scores = window_mask(scores, window)
    return weighted_matmul(softmax(scores), v)


def rope(x, positions, theta=10000.0, neox=False, freq_factors=None):
    """Rotate pairs (2i, 2i+1) or halves (i, i + d/2) of each head by pos * theta^(-2i/d) / ff[i]."""
    x = x.astype(np.float64)
    d = x.shape[-1]
    inv_freq = float(theta) ** (-2.0 * np.arange(d // 2) / d)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.astype(np.float64)
    angle = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [seq, d/2]
    cos = np.cos(angle)[None, :, None, :]
    sin = np.sin(angle)[None, :, None, :]
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2 :]
    else:
        a, b = x[..., 0::2], x[..., 1::2]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if neox:
        out[..., : d // 2], out[..., d // 2 :] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def swiglu(gate, up):
    """silu(gate) * up with silu(g) = g * sigmoid(g), in float64.

    sigmoid(g) = 1 / (1 + exp(-g)) for g >= 0 and exp(g) / (1 + exp(g)) for g < 0: neither
    form subtracts nearly equal numbers, so both keep full relative precision far into the
    tails (the tanh form (1 + tanh(g / 2)) / 2 cancels for g << 0: at g = -31 it is off by
    ~1e-4 relative, more than float32 kernels' error).
    """
    g = gate.astype(np.float64)
    e = np.exp(-np.abs(g))  # in (0, 1]: never overflows
    sigmoid = np.where(g >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return g * sigmoid * up.astype(np.float64)


def gelu(x):
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), the tanh form of GELU, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def geglu(gate, up):
    """gelu(gate) * up (tanh form), in float64."""
    return gelu(gate) * up.astype(np.float64)


def rms_norm(x, weight, eps=1e-6):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight.astype(np.float64)


def matmul(x, w):
    """x [..., k] @ w[n, k].T in float64."""
    return x.astype(np.float64) @ w.astype(np.float64).T
