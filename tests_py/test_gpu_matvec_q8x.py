"""The model's GPU decode matvecs (m = 1, kernels/matvec.hip: one family for Q4_0 Q4_1 Q5_0
Q5_1 Q8_0 Q4_K Q5_K Q6_K IQ4_NL IQ4_XS) against float64 NumPy with W dequantized by the `gguf`
package.

`_rocmforge.gpu_matmul(..., "model")` is what `Backend::matmul` runs at m = 1;
`_rocmforge.gpu_matvec` runs one launch of the family with a chosen epilogue (projections with
bias, residual add and the next norm's input; gate/up with SiLU or GELU; q/k/v with the rope and
the KV-cache append) and tuning record, and says which kernel ran.

The kernels quantize x to 8 bits in registers, as llama.cpp and the CPU backend do: each piece
of x (32 values, Q8_0 16, aligned from the row's start) becomes d * q with d = max|x| / 127
(float32) and q = x * (127 / max|x|) rounded to the nearest integer, ties to even. The
reference does the same in NumPy, so the only difference left is float32 accumulation: the tests
allow 2 k 2^-23 of sum |W| |x_q| (each piece's integer dot product is exact; then a few float
products and the sums over pieces, lanes and groups). A wrong nibble, scale or piece gives
errors of the size of the outputs. One test also checks the 8-bit error against the exact
product (at most half a step, max|x| / 254, per value).
"""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from devices import HAS_GPU
from gguf_blocks import block_size, dequantize, type_size
from gguf_blocks import random_matrix as random_blocks

native = rf._rocmforge

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
# rows a group of each type's streaming gate/up kernels takes (src/device/matvec_table.rs
# `stream_rows`): 8 where a piece's scales are one register, else 4
STREAM_ROWS = {"Q4_0": 8, "Q8_0": 8, "IQ4_NL": 8, "IQ4_XS": 8}


def random_matrix(rng, dtype: str, rows: int, cols: int):
    """`gguf_blocks.random_matrix`, with Q4_K / Q5_K blocks of near zero mean (dmin = 7.5 d /
    15.5 d against the quants' means; random bytes would give every weight a large positive
    mean, outputs far larger than their parts)."""
    raw, w64 = random_blocks(rng, dtype, rows, cols)
    if dtype in ("Q4_K", "Q5_K"):
        blocks = raw.reshape(-1, type_size(dtype)).copy()
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        dmin = (d * (7.5 if dtype == "Q4_K" else 15.5)).astype(np.float16)
        blocks[:, 2:4] = dmin.view(np.uint8).reshape(-1, 2)
        raw = blocks.reshape(rows, -1)
        w64 = dequantize(raw, dtype, cols)
    return raw, w64


def piece(dtype: str) -> int:
    return 16 if dtype == "Q8_0" else 32


def suffix(dtype: str) -> str:
    return dtype.lower().replace("_k", "_K")


def family_takes(dtype: str, k: int) -> bool:
    """Whether the decode family takes rows of k values (whole blocks, 4-byte aligned rows)."""
    return k % block_size(dtype) == 0 and (k // block_size(dtype) * type_size(dtype)) % 4 == 0


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


def input_x(rng, k: int, scale: float = 1.0) -> np.ndarray:
    """x with a piece 8 times larger than the rest and a piece of zeros (scale 0)."""
    x = rng.standard_normal(k).astype(np.float32) * np.float32(scale)
    x[:32] *= 8.0
    x[32:64] = 0.0
    return x


def check(got: np.ndarray, want: np.ndarray, w64: np.ndarray, xq: np.ndarray, what: str, slack=None):
    """|got - want| within 2 k 2^-23 sum |W| |xq| (+ `slack`), and that bound small against the
    outputs (a wrong row, piece or scale shows): its median under 5% of the outputs' RMS (not of
    each row's |want|, which a row whose products cancel makes near zero: with 5 rows of 5120
    values that median passed 5% about once in a thousand draws)."""
    k = w64.shape[1]
    bound = 2 * k * 2.0**-23 * (np.abs(w64) @ np.abs(xq)) + 1e-30
    if slack is not None:
        bound = bound + slack
    assert got.shape == want.shape and np.all(np.isfinite(got)), what
    worst = float(np.max(np.abs(got - want) / bound))
    assert worst <= 1.0, f"{what}: error {worst:.3f} x the bound"
    assert np.median(bound) < 0.05 * np.sqrt(np.mean(want**2)), f"{what}: bound too loose to mean anything"


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("n,k", [(37, 256), (131, 1024), (300, 2048), (64, 4096), (5, 5120), (4099, 4096)],
                         ids=str)
def test_model_matvec_q8x(rng, dtype, n, k):
    raw, w64 = random_matrix(rng, dtype, n, k)
    x = input_x(rng, k)[None, :]
    x[0, :32] *= 1e2  # pieces of very different scales
    got = native.gpu_matmul(x, raw, dtype, "model")
    exact = w64 @ x[0].astype(np.float64)
    if not family_takes(dtype, k):
        # (Q6_K rows of an odd number of super-blocks are 2-byte aligned: the exact kernel)
        assert np.array_equal(got, native.gpu_matmul(x, raw, dtype, "exact"))
        return
    xq = quantize_x(x[0], piece(dtype))
    check(got[0], w64 @ xq, w64, xq, f"{dtype} {n}x{k}")
    # the 8-bit error itself: at most half a step (max|x| / 254) per value of each piece
    step = np.repeat(np.abs(x[0].reshape(-1, piece(dtype))).max(axis=1) / 254.0, piece(dtype))
    bound = 2 * k * 2.0**-23 * (np.abs(w64) @ np.abs(xq))
    assert np.all(np.abs(got[0] - exact) <= np.abs(w64) @ step * 1.001 + bound)
    # the op keeps float32 activations
    op = native.gpu_matmul(x, raw, dtype, "exact")
    assert np.max(np.abs(op[0] - exact)) <= 1e-5 * max(1.0, np.abs(exact).max())


@pytest.mark.parametrize("dtype", TYPES)
def test_model_matvec_q8x_non_finite(rng, dtype):
    """A NaN or an infinity in x gives non-finite outputs, never a finite guess."""
    n, k = 40, 512
    raw, _ = random_matrix(rng, dtype, n, k)
    for bad in (np.nan, np.inf):
        x = rng.standard_normal((1, k), dtype=np.float32)
        x[0, 100] = bad
        got = native.gpu_matmul(x, raw, dtype, "model")
        assert not np.any(np.isfinite(got)), f"{dtype} x with {bad}"


def test_model_matvec_odd_q4_0_rows_keep_float_x(rng):
    """Q4_0 rows of an odd number of blocks (not a whole number of 4-byte words) have no decode
    kernel: the model takes the general float32 one, equal to the op's."""
    n, k = 37, 96
    raw, w64 = random_matrix(rng, "Q4_0", n, k)
    x = rng.standard_normal((1, k), dtype=np.float32)
    model = native.gpu_matmul(x, raw, "Q4_0", "model")
    assert np.array_equal(model, native.gpu_matmul(x, raw, "Q4_0", "exact"))
    exact = w64 @ x[0].astype(np.float64)
    assert np.max(np.abs(model[0] - exact)) <= 1e-5 * max(1.0, np.abs(exact).max())


def normed(x: np.ndarray, mode: str, rng, eps: float, w_scale: float = 1.0):
    """(the x the launch takes, its keyword arguments, the x the reference quantizes, the scale
    of the sums): no norm, the RMS norm folded in by weight (of size `w_scale`), or handed over
    (x already times the weight, sum(x^2) as partial sums)."""
    k = x.size
    if mode == "none":
        return x, {}, x, 1.0
    w = (rng.standard_normal(k) * w_scale).astype(np.float32)
    xw = (x * w).astype(np.float32)
    scale = 1.0 / np.sqrt(np.sum(x.astype(np.float64) ** 2) / k + eps)
    if mode == "weight":
        return x, {"norm_weight": w, "eps": eps}, xw, scale
    parts = np.array([np.sum(c.astype(np.float32) ** 2) for c in np.array_split(x, 7)], np.float32)
    return xw, {"norm_parts": parts, "eps": eps}, xw, scale


def act64(act: str, g: np.ndarray) -> np.ndarray:
    if act == "silu":
        return g / (1.0 + np.exp(-g))
    return 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g**3)))


# (tuning fields, the kernel they select as name parts) per epilogue: every shape of the table
# in src/device/matvec_table.rs
PROJ = [({"matvec_rows": 4}, "_r4"), ({"matvec_rows": 8}, "_r8"),
        ({"matvec_rows": 16, "matvec_capped": False}, "_r16"), ({"matvec_rows": 16, "matvec_capped": True}, "_r16_capped")]


def proj_rows(dtype: str, tuning: dict, name: str) -> str:
    """The name part of PROJ's kernel for `dtype`: Q8_0's blocks take at most 8 rows
    (matvec_table.rs, `row_block_max`), so 16 rows select its 8-row form there."""
    return "_r8" if dtype == "Q8_0" and tuning["matvec_rows"] == 16 else name


GLU = [({"glu_rows": 4, "matvec_stream": False}, "glu", "_r4"), ({"glu_rows": 8, "matvec_stream": False}, "glu", "_r8"),
       ({"stream_stages": 2}, "glu_stream", None), ({"stream_stages": 3}, "glu_stream", None)]  # (rows: STREAM_ROWS)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("variant", range(len(PROJ)))
@pytest.mark.parametrize("norm", ["none", "weight", "parts"])
def test_matvec_store_three_matrices(rng, dtype, variant, norm):
    """q/k/v-like projections in one launch (rows not a multiple of the block's), with biases."""
    tuning, name = PROJ[variant]
    k = 512 if variant == 3 else 1536  # the capped form: a row in one pass of the block
    rows = [45, 13, 13]
    mats = [random_matrix(rng, dtype, n, k) for n in rows]
    biases = [rng.standard_normal(n).astype(np.float32) for n in rows]
    x = input_x(rng, k)
    xin, kw, z, scale = normed(x, norm, rng, 1e-5)
    res = native.gpu_matvec(xin, [m[0] for m in mats], dtype, "store", biases=biases, tuning=tuning, **kw)
    assert res["kernel"] == f"matvec_proj_{suffix(dtype)}{proj_rows(dtype, tuning, name)}"
    xq = quantize_x(z, piece(dtype))
    for i, ((_, w64), b) in enumerate(zip(mats, biases)):
        want = (w64 @ xq) * scale + b
        check(res["out"][i], want, w64, xq * scale, f"{dtype} store {i} {tuning} {norm}", np.abs(b) * 1e-6)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("early", [False, True])
def test_matvec_add_and_next_norm(rng, dtype, early):
    """out += W x into a residual (loaded before the wait or not); with the next norm's input:
    xw = out * w_next and the launch's per-block sums of out^2."""
    n, k = 301, 2048
    raw, w64 = random_matrix(rng, dtype, n, k)
    x = input_x(rng, k)
    resid = rng.standard_normal(n).astype(np.float32)
    w_next = rng.standard_normal(n).astype(np.float32)
    res = native.gpu_matvec(x, [raw], dtype, "add_early" if early else "add", out=resid,
                            next_norm=w_next if early else None)
    xq = quantize_x(x, piece(dtype))
    out = res["out"][0]
    check(out, resid + w64 @ xq, w64, xq, f"{dtype} add", np.abs(resid) * 2.0**-23)
    if early:
        assert np.array_equal(res["xw"], (out * w_next).astype(np.float32))
        parts = res["parts"].astype(np.float64)
        ss = np.sum(out.astype(np.float64) ** 2)
        assert abs(parts.sum() - ss) <= 1e-5 * ss and parts.size >= 301 // 16


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("variant", range(len(GLU)))
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("norm", ["none", "weight", "parts"])
def test_matvec_gate_up(rng, dtype, variant, act, norm):
    """act(gate x) * (up x): the row-block kernel at rows of 4 or 8 of each matrix, or the streaming
    kernel (rows of 2048 values or more) with two or three row groups in flight; odd rows."""
    tuning, epi, name = GLU[variant]
    stream = epi == "glu_stream"
    n, k = (403, 4096) if stream and variant == 3 else ((77, 2048) if stream else (131, 1024))
    (raw_g, wg), (raw_u, wu) = random_matrix(rng, dtype, n, k), random_matrix(rng, dtype, n, k)
    # g and u of a few units (the activation neither linear nor flat), normalized or not
    size = 2.0 / (np.sqrt(k) * np.std(wg) * 4.0)
    x = input_x(rng, k, size)
    xin, kw, z, scale = normed(x, norm, rng, 1e-5, size)
    res = native.gpu_matvec(xin, [raw_g, raw_u], dtype, "glu", act=act, tuning=tuning, **kw)
    if stream:
        name = f"_r{STREAM_ROWS.get(dtype, 4)}_s{tuning['stream_stages']}"
    assert res["kernel"] == f"matvec_{epi}_{suffix(dtype)}{name}"
    xq = quantize_x(z, piece(dtype))
    g, u = (wg @ xq) * scale, (wu @ xq) * scale
    want = act64(act, g) * u
    # Each piece's dot product is exact (integers), then a few float products and at most ~25
    # float additions of the pieces' sums (a thread's passes, the butterflies across 32 lanes,
    # the block's groups): 32 roundings of sum |W| |xq| bound g and u, carried through act and
    # the product: |d act / dg| <= 1.13; float32 exp / tanh and the product: a few ulps.
    bg = 32 * 2.0**-23 * (np.abs(wg) @ np.abs(xq)) * scale
    bu = 32 * 2.0**-23 * (np.abs(wu) @ np.abs(xq)) * scale
    bound = 1.13 * bg * (np.abs(u) + bu) + np.abs(act64(act, g)) * bu + 1e-6 * np.abs(want) + 1e-30
    got = res["out"][0]
    assert got.shape == (n,) and np.all(np.isfinite(got))
    worst = float(np.max(np.abs(got - want) / bound))
    assert worst <= 1.0, f"{dtype} {act} {tuning} {norm}: error {worst:.3f} x the bound"
    assert np.median(bound / np.abs(want)) < 0.01


def rope64(v: np.ndarray, head_dim: int, pos: int, theta: float, neox: bool, ff) -> np.ndarray:
    out = v.astype(np.float64).reshape(-1, head_dim).copy()
    for i in range(head_dim // 2):
        i0, i1 = (i, i + head_dim // 2) if neox else (2 * i, 2 * i + 1)
        angle = pos * theta ** (-2.0 * i / head_dim) / (ff[i] if ff is not None else 1.0)
        c, s = np.cos(angle), np.sin(angle)
        x0, x1 = out[:, i0].copy(), out[:, i1].copy()
        out[:, i0], out[:, i1] = x0 * c - x1 * s, x0 * s + x1 * c
    return out.reshape(-1)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("variant", range(len(PROJ)))
@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_matvec_qkv_rope(rng, dtype, variant, kv_dtype):
    """q/k/v, the rope of q and k and the append of k and v to the cache row at a position the
    device holds, in one launch: neox (qwen2) and adjacent pairs (llama), frequency factors,
    biases, the norm by weight or handed over."""
    tuning, name = PROJ[variant]
    heads, kv_heads, head_dim, n_ctx, pos, theta = 5, 1, 64, 9, 7, 10000.0
    neox, with_ff, norm = variant % 2 == 0, variant >= 2, ["weight", "parts", "none", "weight"][variant]
    k = 512 if variant == 3 else 1024
    nq, nkv = heads * head_dim, kv_heads * head_dim
    mats = [random_matrix(rng, dtype, n, k) for n in (nq, nkv, nkv)]
    biases = [rng.standard_normal(n).astype(np.float32) for n in (nq, nkv, nkv)]
    ff = (1.0 + 4.0 * rng.random(head_dim // 2)).astype(np.float32) if with_ff else None
    x = input_x(rng, k)
    xin, kw, z, scale = normed(x, norm, rng, 1e-6)
    rope = {"heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "pos": pos, "n_ctx": n_ctx,
            "theta": theta, "neox": neox, "freq_factors": ff, "kv_dtype": kv_dtype}
    res = native.gpu_matvec(xin, [m[0] for m in mats], dtype, "qkv_rope", biases=biases, rope=rope,
                            tuning=tuning, **kw)
    assert res["kernel"] == f"matvec_qkv_rope_{kv_dtype}_{suffix(dtype)}{proj_rows(dtype, tuning, name)}"
    xq = quantize_x(z, piece(dtype))
    y = [(w64 @ xq) * scale + b for (_, w64), b in zip(mats, biases)]
    want_q = rope64(y[0], head_dim, pos, theta, neox, ff)
    want_k = rope64(y[1], head_dim, pos, theta, neox, ff)
    # a rotation mixes two values: each output's bound is its pair's (1e-6 of the values for the
    # angle's float32 cos and sin, f16 caches their rounding, 2^-11)
    pair_bound = lambda w64: 2 * (2 * k * 2.0**-23 * (np.abs(w64) @ np.abs(xq)) * scale).max() + 1e-5 * max(
        1.0, np.abs(y[0]).max())
    f16 = 2.0**-11 if kv_dtype == "f16" else 0.0
    assert np.max(np.abs(res["out"][0] - want_q)) <= pair_bound(mats[0][1])
    for cache, want, w64 in ((res["k_cache"], want_k, mats[1][1]), (res["v_cache"], y[2], mats[2][1])):
        assert np.max(np.abs(cache[pos] - want)) <= pair_bound(w64) + f16 * np.abs(want).max()
        assert not np.any(np.delete(cache, pos, axis=0)), "cache rows besides the step's"


def test_matvec_rejects_what_the_family_does_not_take(rng):
    """Types without a decode kernel and rows it cannot read are UnsupportedError, not a wrong
    answer; a missing rope or mismatched weights are ValueError."""
    x = rng.standard_normal(256).astype(np.float32)
    raw, _ = random_matrix(rng, "Q2_K", 8, 256)
    with pytest.raises(rf.UnsupportedError):
        native.gpu_matvec(x, [raw], "Q2_K")
    raw, _ = random_matrix(rng, "Q6_K", 8, 256)  # 210-byte rows: 2-byte aligned
    with pytest.raises(rf.UnsupportedError):
        native.gpu_matvec(x, [raw], "Q6_K")
    raw, _ = random_matrix(rng, "Q4_0", 8, 256)
    with pytest.raises(ValueError):
        native.gpu_matvec(x, [raw, raw, raw], "Q4_0", "qkv_rope")
    with pytest.raises(ValueError):
        native.gpu_matvec(x[:128], [raw], "Q4_0")
