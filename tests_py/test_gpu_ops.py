"""GPU-only checks (the op tables of test_ops_*.py also run on "gpu"): the launch counter, the
device list, shapes at GPU sizes (flash attention at batch 2 x 32 heads x 4096 tokens; a
65,536-token causal attention whose score matrix could not fit in GPU memory; a decode query
against a long cache), quantized matmul at model sizes, out-of-memory and unsupported shapes,
device memory returning after use. Skipped where rocmforge finds no GPU.

References are float64 NumPy (sampled query rows where the full product would be too large).
ROCMFORGE_TEST_SMALL=1 skips the large shapes (for runs under compute-sanitizer)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from devices import HAS_GPU
from gguf_blocks import block_size, random_matrix
from numpy_ref import rel_err

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")
large = pytest.mark.skipif(
    os.environ.get("ROCMFORGE_TEST_SMALL") == "1", reason="large shapes skipped (ROCMFORGE_TEST_SMALL=1)"
)

f32 = np.float32
GPU_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
             "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ4_NL", "IQ4_XS"]


def test_devices_lists_the_gpu_first_then_the_cpu():
    devs = rf.devices()
    gpu = devs[0]
    assert gpu["device"] == "gpu:0" and "error" not in gpu, gpu
    assert gpu["backend"] in ("cuda", "hip")
    assert gpu["name"] and gpu["arch"]
    assert gpu["warp_size"] in (32, 64)
    assert 0 < gpu["memory_free"] <= gpu["memory_total"]
    assert devs[-1]["device"] == "cpu"


def _small_calls():
    x = np.linspace(-2, 2, 96, dtype=f32).reshape(8, 12)
    q = np.linspace(-1, 1, 2 * 5 * 4 * 16, dtype=f32).reshape(2, 5, 4, 16)
    kv = q[:, :, :2]
    cache = np.zeros((8, 12), f32)
    raw = rf.quantize(np.tile(x, (1, 32))[:, :128].copy(), "Q8_0")
    return {
        "rms_norm": lambda: rf.ops.rms_norm(x, x[0], device="gpu"),
        "rope": lambda: rf.ops.rope(q, np.arange(5), device="gpu"),
        "swiglu": lambda: rf.ops.swiglu(x, x, device="gpu"),
        "geglu": lambda: rf.ops.geglu(x, x, device="gpu"),
        "gelu": lambda: rf.ops.gelu(x, device="gpu"),
        "add": lambda: rf.ops.add(x, x, device="gpu"),
        "scale": lambda: rf.ops.scale(x, 2.0, device="gpu"),
        "softmax": lambda: rf.ops.softmax(x, device="gpu"),
        "causal_mask": lambda: rf.ops.causal_mask(x, device="gpu"),
        "qkt_matmul": lambda: rf.ops.qkt_matmul(q, kv, device="gpu"),
        "weighted_matmul": lambda: rf.ops.weighted_matmul(np.ones((2, 4, 5, 5), f32), kv, device="gpu"),
        "flash_attention": lambda: rf.ops.flash_attention(q, kv, kv, True, device="gpu"),
        "matmul": lambda: rf.ops.matmul(x, x, device="gpu"),
        "matmul Q8_0": lambda: rf.ops.matmul(np.ones((3, 128), f32), raw, "Q8_0", device="gpu"),
        "embedding": lambda: rf.ops.embedding(raw, np.array([0, 7, 3]), "Q8_0", device="gpu"),
        "kv_append": lambda: rf.ops.kv_append(cache, x[:2], 3, device="gpu"),
        "argmax": lambda: rf.ops.argmax(x[0], device="gpu"),
    }


@pytest.mark.parametrize("name", list(_small_calls()))
def test_a_gpu_call_launches_kernels_on_the_device(name):
    call = _small_calls()[name]
    before = rf.gpu_launch_count()
    call()
    assert rf.gpu_launch_count() > before, f"{name} on device='gpu' launched no kernel"


def sampled_attention(q, k, v, rows, causal, scale=None):
    """float64 attention of the query rows `rows` [(b, i, h)]: [len(rows), d]."""
    _, sq, heads, d = q.shape
    sk, kv_heads = k.shape[1], k.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out = np.empty((len(rows), d))
    for n, (b, i, h) in enumerate(rows):
        g = h // (heads // kv_heads)
        end = i + (sk - sq) + 1 if causal else sk
        kk = k[b, :end, g].astype(np.float64)
        s = kk @ q[b, i, h].astype(np.float64) * scale
        p = np.exp(s - s.max())
        out[n] = (p / p.sum()) @ v[b, :end, g].astype(np.float64)
    return out


def pick_rows(rng, b, sq, h, n):
    rows = {(0, 0, 0), (b - 1, sq - 1, h - 1), (0, sq - 1, 0)}
    while len(rows) < n:
        rows.add((int(rng.integers(b)), int(rng.integers(sq)), int(rng.integers(h))))
    return sorted(rows)


@large
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_batch2_32heads_4096_tokens(rng, causal):
    b, s, h, kvh, d = 2, 4096, 32, 8, 128
    q = rng.standard_normal((b, s, h, d), dtype=f32)
    k = rng.standard_normal((b, s, kvh, d), dtype=f32)
    v = rng.standard_normal((b, s, kvh, d), dtype=f32)
    out = rf.ops.flash_attention(q, k, v, causal, device="gpu")
    assert out.shape == q.shape and np.isfinite(out).all()
    rows = pick_rows(rng, b, s, h, 200)
    got = np.stack([out[bb, i, hh] for bb, i, hh in rows])
    assert rel_err(got, sampled_attention(q, k, v, rows, causal)) < 1e-5


@large
def test_flash_attention_65536_tokens_beyond_the_score_matrix(rng):
    """Causal, 8 heads sharing one kv head. The float32 score matrix alone is 8 x 65536^2 x 4
    bytes = 137 GB; the unfused path needs it twice (scores, then weights), more than any GPU
    this runs on holds. Flash attention never builds it."""
    b, s, h, kvh, d = 1, 65536, 8, 1, 64
    assert 2 * h * s * s * 4 > rf.devices()[0]["memory_total"]
    q = rng.standard_normal((b, s, h, d), dtype=f32)
    k = rng.standard_normal((b, s, kvh, d), dtype=f32)
    v = rng.standard_normal((b, s, kvh, d), dtype=f32)
    out = rf.ops.flash_attention(q, k, v, True, device="gpu")
    assert np.isfinite(out).all()
    rows = pick_rows(rng, b, s, h, 64)
    got = np.stack([out[bb, i, hh] for bb, i, hh in rows])
    # float32 accumulation over up to 65,536 keys: rounding grows like sqrt(n) * eps ~ 2e-5.
    assert rel_err(got, sampled_attention(q, k, v, rows, True)) < 5e-5


@large
@pytest.mark.parametrize("seq_k", [20_000, 65_537])
def test_decode_query_against_a_long_cache(rng, seq_k):
    b, h, kvh, d = 1, 32, 8, 128
    q = rng.standard_normal((b, 1, h, d), dtype=f32)
    k = rng.standard_normal((b, seq_k, kvh, d), dtype=f32)
    v = rng.standard_normal((b, seq_k, kvh, d), dtype=f32)
    for causal in (False, True):  # one query, bottom-right aligned: it sees every key
        out = rf.ops.flash_attention(q, k, v, causal, device="gpu")
        rows = [(0, 0, hh) for hh in range(h)]
        want = sampled_attention(q, k, v, rows, causal)
        assert rel_err(out[0, 0], want) < 3e-5


@large
@pytest.mark.parametrize("dtype", GPU_TYPES)
def test_matmul_at_model_sizes(rng, dtype):
    n, k = 1536, 2048
    raw, w64 = random_matrix(rng, dtype, n, k)
    for m in (1, 5, 300):
        x = rng.standard_normal((m, k), dtype=f32)
        out = rf.ops.matmul(x, raw, dtype, device="gpu")
        assert rel_err(out, x.astype(np.float64) @ w64.T) < 1e-5, (dtype, m)


@large
def test_attention_steps_at_4096_tokens(rng):
    b, s, h, kvh, d = 1, 4096, 4, 2, 64
    q = rng.standard_normal((b, s, h, d), dtype=f32)
    k = rng.standard_normal((b, s, kvh, d), dtype=f32)
    v = rng.standard_normal((b, s, kvh, d), dtype=f32)
    scores = rf.ops.qkt_matmul(q, k, device="gpu")
    assert rel_err(scores, ref.qkt_matmul(q, k)) < 1e-5
    masked = rf.ops.causal_mask(scores, device="gpu")
    weights = rf.ops.softmax(masked, device="gpu")
    want_w = ref.softmax(ref.causal_mask(ref.qkt_matmul(q, k)))
    assert rel_err(weights, want_w) < 1e-5
    out = rf.ops.weighted_matmul(weights, v, device="gpu")
    assert rel_err(out, ref.weighted_matmul(want_w, v)) < 1e-5


def test_out_of_memory_is_an_error_and_the_gpu_keeps_working():
    with pytest.raises(rf.OutOfMemoryError, match="needed"):
        rf._rocmforge.gpu_bench("copy", {"bytes": 2**50}, warmup=0, iters=1)
    x = np.arange(12, dtype=f32).reshape(3, 4)
    np.testing.assert_allclose(rf.ops.softmax(x, device="gpu"), ref.softmax(x), rtol=1e-6)


def test_head_dim_over_256_is_unsupported_on_the_gpu():
    q = np.ones((1, 2, 1, 320), f32)
    with pytest.raises(rf.UnsupportedError, match="head_dim"):
        rf.ops.flash_attention(q, q, q, device="gpu")


def test_gpu_and_cpu_agree_on_a_q4_k_embedding(rng):
    raw, w64 = random_matrix(rng, "Q4_K", 50, 2 * block_size("Q4_K"))
    ids = rng.integers(0, 50, size=17)
    gpu = rf.ops.embedding(raw, ids, "Q4_K", device="gpu")
    np.testing.assert_allclose(gpu, w64[ids], rtol=1e-6, atol=1e-6)


def test_device_memory_returns_after_repeated_calls(rng):
    q = rng.standard_normal((1, 300, 8, 64), dtype=f32)
    raw, _ = random_matrix(rng, "Q6_K", 256, 512)
    x = rng.standard_normal((7, 512), dtype=f32)

    def calls():
        rf.ops.flash_attention(q, q[:, :, :2], q[:, :, :2], True, device="gpu")
        rf.ops.flash_attention(q[:, :1], q[:, :, :2], q[:, :, :2], device="gpu")
        rf.ops.matmul(x, raw, "Q6_K", device="gpu")

    calls()  # kernels compiled and loaded, scratch sized
    free0 = rf.devices()[0]["memory_free"]
    for _ in range(20):
        calls()
    free1 = rf.devices()[0]["memory_free"]
    assert abs(free1 - free0) <= 8 << 20, (free0, free1)
