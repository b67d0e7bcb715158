"""Random quantized blocks for model files, written directly as bytes (ggml's block layouts):
the K-quant packers and random Q4_K / Q6_K / Q8_0 / Q4_0 blocks whose dequantized values have
a given spread and mean about 0, with finite f16 scales (llama.cpp's f16 paths overflow on
random scale bytes)."""

from __future__ import annotations

import numpy as np

QK_K = 256


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    """[n] float -> [n, 2] uint8 (little-endian f16), checking the scales are finite and nonzero."""
    with np.errstate(over="ignore"):
        h = np.asarray(values, dtype=np.float32).astype("<f2")
    if not np.all(np.isfinite(h)) or np.any(h == 0):
        raise ValueError("block scale not finite or zero in f16")
    return h.view(np.uint8).reshape(-1, 2)


def pack_q4_k(d: np.ndarray, dmin: np.ndarray, sc: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K blocks [n, 144] holding ``d[b] * sc[b, j] * q[b, i] - dmin[b] * m[b, j]`` for value i
    of block b, j = i // 32. d, dmin: [n] (stored as f16); sc, m: [n, 8] in 0..63; q: [n, 256] in
    0..15."""
    n = len(d)
    sc, m, q = (np.asarray(a, dtype=np.uint8) for a in (sc, m, q))
    scales = np.empty((n, 12), dtype=np.uint8)
    # sub-blocks 0..3: 6 bits in bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7: low
    # 4 bits in bytes 8..11 (scale low nibble, min high nibble), top 2 bits in bits 6..7 of 0..7
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    # 4 chunks of 64 values: byte l of a chunk holds value l (low nibble) and value 32 + l (high)
    chunks = q.reshape(n, 4, 2, 32)
    qs = (chunks[:, :, 0, :] | (chunks[:, :, 1, :] << 4)).reshape(n, 128)
    out = np.empty((n, 144), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(dmin)
    out[:, 4:16] = scales
    out[:, 16:144] = qs
    return out


def pack_q6_k(d: np.ndarray, scales: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q6_K blocks [n, 210] holding ``d[b] * scales[b, i // 16] * (q[b, i] - 32)``. d: [n]
    (stored as f16); scales: [n, 16] int8; q: [n, 256] in 0..63."""
    n = len(d)
    q = np.asarray(q, dtype=np.uint8).reshape(n, 2, 4, 32)  # 2 halves of 128 = 4 rows of 32
    lo, hi = q & 0xF, q >> 4
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)
    out = np.empty((n, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(n, 128)
    out[:, 128:192] = qh.reshape(n, 64)
    out[:, 192:208] = np.asarray(scales, dtype=np.int8).view(np.uint8)
    out[:, 208:210] = _f16_bytes(d)
    return out


def q4_k_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q4_K blocks [n_blocks, 144] whose dequantized values have about this std and mean 0.

    A Q4_K value is ``d * sc * q - dmin * m`` (q in 0..15, sc and m 6-bit per 32-value sub-block).
    With dmin = 7.5 d and m close to sc (but not equal: a scale/min mix-up must show), each
    sub-block is nearly centred: its mean is 7.5 d (sc - m), its spread d * sc * 4.6.
    """
    sc = rng.integers(16, 64, size=(n_blocks, 8))
    m = np.clip(sc + rng.integers(-2, 3, size=(n_blocks, 8)), 0, 63)
    d = (std / (4.61 * 39.5)) * rng.uniform(0.75, 1.25, size=n_blocks)
    d16 = d.astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, size=(n_blocks, QK_K), dtype=np.uint8)
    return pack_q4_k(d16, 7.5 * d16, sc, m, q)


def q6_k_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q6_K blocks [n_blocks, 210]: ``d * scale * (q - 32)``, q 6-bit, scale int8 per 16
    values (random sign, magnitude 16..63), so the values have about this std and mean ~0."""
    q = rng.integers(0, 64, size=(n_blocks, QK_K), dtype=np.uint8)
    magnitude = rng.integers(16, 64, size=(n_blocks, 16))
    sign = np.where(rng.integers(0, 2, size=(n_blocks, 16)) == 1, 1, -1)
    d = (std / (18.5 * 39.5)) * rng.uniform(0.75, 1.25, size=n_blocks)
    return pack_q6_k(d, magnitude * sign, q)


def q8_0_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q8_0 blocks [n_blocks, 34] (f16 d, 32 int8): values ``d * q``, about this std."""
    out = np.frombuffer(rng.bytes(n_blocks * 34), dtype=np.uint8).reshape(n_blocks, 34).copy()
    out[:, 0:2] = _f16_bytes((std / 73.9) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out


def q4_0_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q4_0 blocks [n_blocks, 18] (f16 d, 32 nibbles): values ``d * (q - 8)``."""
    out = np.frombuffer(rng.bytes(n_blocks * 18), dtype=np.uint8).reshape(n_blocks, 18).copy()
    out[:, 0:2] = _f16_bytes((std / 4.62) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out

