"""Random quantized blocks for model files, written directly as bytes (ggml's block layouts):
the K-quant packers and random Q4_K / Q6_K / Q8_0 / Q4_0 / Q5_0 / IQ4_NL / IQ4_XS blocks whose dequantized values
have a given spread and mean about 0, with finite f16 scales (llama.cpp's f16 paths overflow on
random scale bytes). The ``*_random_blocks`` makers fill the packed quants straight from
``rng.bytes`` (fast enough for 8B-parameter benchmark files); ``q4_k_blocks`` / ``q6_k_blocks``
draw every value (slower; the deterministic test models' bytes depend on them)."""

from __future__ import annotations

import math

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
    scales = _q4_k_scales(sc, m)
    # 4 chunks of 64 values: byte l of a chunk holds value l (low nibble) and value 32 + l (high)
    chunks = q.reshape(n, 4, 2, 32)
    qs = (chunks[:, :, 0, :] | (chunks[:, :, 1, :] << 4)).reshape(n, 128)
    out = np.empty((n, 144), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:4] = _f16_bytes(dmin)
    out[:, 4:16] = scales
    out[:, 16:144] = qs
    return out


def _q4_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The 12 packed scale bytes [n, 12] of Q4_K blocks: sc, m [n, 8] in 0..63."""
    sc, m = (np.asarray(a, dtype=np.uint8) for a in (sc, m))
    scales = np.empty((len(sc), 12), dtype=np.uint8)
    # sub-blocks 0..3: 6 bits in bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7: low
    # 4 bits in bytes 8..11 (scale low nibble, min high nibble), top 2 bits in bits 6..7 of 0..7
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return scales


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


def _random_bytes(rng: np.random.Generator, n_blocks: int, block_bytes: int) -> np.ndarray:
    raw = np.frombuffer(rng.bytes(n_blocks * block_bytes), dtype=np.uint8)
    return raw.reshape(n_blocks, block_bytes).copy()


def q8_0_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q8_0 blocks [n_blocks, 34] (f16 d, 32 int8): values ``d * q``, about this std."""
    out = _random_bytes(rng, n_blocks, 34)
    out[:, 0:2] = _f16_bytes((std / 73.9) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out


def q4_0_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q4_0 blocks [n_blocks, 18] (f16 d, 32 nibbles): values ``d * (q - 8)``."""
    out = _random_bytes(rng, n_blocks, 18)
    out[:, 0:2] = _f16_bytes((std / 4.62) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out


def q5_0_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q5_0 blocks [n_blocks, 22] (f16 d, u32 of fifth bits, 16 bytes of nibbles): values
    ``d * (q - 16)``, q uniform in 0..31 (std 9.23)."""
    out = _random_bytes(rng, n_blocks, 22)
    out[:, 0:2] = _f16_bytes((std / 9.23) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out


def q4_k_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q4_K blocks [n_blocks, 144], fast: the scales of :func:`q4_k_blocks` (dmin = 7.5 d,
    m close to sc), the 4-bit quants random bytes (uniform 0..15, so each sub-block is nearly
    centred)."""
    out = _random_bytes(rng, n_blocks, 144)
    sc = rng.integers(16, 64, size=(n_blocks, 8))
    m = np.clip(sc + rng.integers(-2, 3, size=(n_blocks, 8)), 0, 63)
    d = (std / (4.61 * 39.5)) * rng.uniform(0.75, 1.25, size=n_blocks)
    d16 = d.astype(np.float16).astype(np.float32)
    out[:, 0:2] = _f16_bytes(d16)
    out[:, 2:4] = _f16_bytes(7.5 * d16)
    out[:, 4:16] = _q4_k_scales(sc, m)
    return out


def q6_k_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random Q6_K blocks [n_blocks, 210], fast: the scales of :func:`q6_k_blocks` (int8 of
    random sign, magnitude 16..63, per 16 values), the 6-bit quants random bytes."""
    out = _random_bytes(rng, n_blocks, 210)
    magnitude = rng.integers(16, 64, size=(n_blocks, 16))
    sign = np.where(rng.integers(0, 2, size=(n_blocks, 16)) == 1, 1, -1)
    d = (std / (18.5 * 39.5)) * rng.uniform(0.75, 1.25, size=n_blocks)
    out[:, 192:208] = (magnitude * sign).astype(np.int8).view(np.uint8)
    out[:, 208:210] = _f16_bytes(d)
    return out


#: IQ4_NL / IQ4_XS's 16 non-linear levels.
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)


def _iq4_xs_scales(ls: np.ndarray) -> np.ndarray:
    """The 6 packed scale bytes [n, 6] (u16 scales_h, 4 bytes scales_l) of IQ4_XS blocks: ls
    [n, 8] in 0..63."""
    ls = np.asarray(ls, dtype=np.uint16)
    scales_h = np.zeros(len(ls), dtype="<u2")
    for j in range(8):
        scales_h |= (ls[:, j] >> 4) << (2 * j)
    low = (ls & 0xF).astype(np.uint8)
    out = np.empty((len(ls), 6), dtype=np.uint8)
    out[:, 0:2] = scales_h.view(np.uint8).reshape(-1, 2)
    out[:, 2:6] = low[:, 0::2] | (low[:, 1::2] << 4)
    return out


def pack_iq4_xs(d: np.ndarray, ls: np.ndarray, q: np.ndarray) -> np.ndarray:
    """IQ4_XS blocks [n, 136] holding ``d[b] * (ls[b, i // 32] - 32) * KVALUES_IQ4NL[q[b, i]]``.
    d: [n] (stored as f16); ls: [n, 8] in 0..63; q: [n, 256] in 0..15 (level indices).

    Layout: f16 d, u16 scales_h (2 high bits of sub-block j's scale at bits 2j..2j+1), 4 bytes
    scales_l (low 4 bits of sub-block j in byte j // 2, low nibble for even j), 128 bytes qs:
    sub-block j's 16 bytes hold value l in the low nibble and value 16 + l in the high one."""
    n = len(d)
    q = np.asarray(q, dtype=np.uint8).reshape(n, 8, 2, 16)
    out = np.empty((n, 136), dtype=np.uint8)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:8] = _iq4_xs_scales(ls)
    out[:, 8:136] = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return out


def iq4_nl_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random IQ4_NL blocks [n_blocks, 18] (f16 d, 16 bytes of level indices): ``d *
    kvalues[q]``, d of random sign (the levels' mean of -5.9 cancels over blocks) and such that
    the values have about this std."""
    out = _random_bytes(rng, n_blocks, 18)
    rms_level = math.sqrt(np.mean(KVALUES_IQ4NL.astype(np.float64) ** 2))
    sign = np.where(rng.integers(0, 2, size=n_blocks) == 1, 1.0, -1.0)
    out[:, 0:2] = _f16_bytes(sign * (std / rms_level) * rng.uniform(0.75, 1.25, size=n_blocks))
    return out


def iq4_xs_random_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """Random IQ4_XS blocks [n_blocks, 136]: ``d * (ls - 32) * kvalues[q]``, the level indices
    random bytes, the 6-bit sub-block scales ``32 +- 16..31`` (random sign, so the levels' mean
    of -5.9 cancels over sub-blocks), d such that the values have about this std."""
    out = _random_bytes(rng, n_blocks, 136)
    magnitude = rng.integers(16, 32, size=(n_blocks, 8))
    sign = np.where(rng.integers(0, 2, size=(n_blocks, 8)) == 1, 1, -1)
    ls = (32 + magnitude * sign).astype(np.uint16)  # 1..63
    rms_scale = math.sqrt(np.mean(np.arange(16, 32) ** 2.0))
    rms_level = math.sqrt(np.mean(KVALUES_IQ4NL.astype(np.float64) ** 2))
    d = (std / (rms_scale * rms_level)) * rng.uniform(0.75, 1.25, size=n_blocks)
    out[:, 0:2] = _f16_bytes(d)
    out[:, 2:8] = _iq4_xs_scales(ls)
    return out
