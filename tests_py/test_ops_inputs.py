"""rocmforge.ops input checking and array handling: bad arguments raise TypeError/ValueError
naming the argument (never a crash), devices are checked, any memory layout is read correctly,
the GIL is released while an op computes, and every op is documented."""

from __future__ import annotations

import inspect
import threading
import time

import numpy as np
import pytest

import rocmforge as rf
import rocmforge.ops as ops
from devices import HAS_GPU

f32 = np.float32


def z(*shape, dtype=f32):
    return np.ones(shape, dtype=dtype)


q4, k4 = z(1, 3, 4, 8), z(1, 5, 2, 8)

BAD_CALLS = [
    # (id, call, exception, a regex the message must contain)
    ("q float64", lambda: ops.qkt_matmul(z(1, 3, 4, 8, dtype=np.float64), k4), TypeError, "q .*float32.*float64"),
    ("q list", lambda: ops.qkt_matmul([[1.0]], k4), TypeError, "q must be a numpy.ndarray"),
    ("q rank 3", lambda: ops.qkt_matmul(z(3, 4, 8), k4), ValueError, "q must be 4-D"),
    ("k batch", lambda: ops.qkt_matmul(q4, z(2, 5, 2, 8)), ValueError, "batch"),
    ("k head_dim", lambda: ops.qkt_matmul(q4, z(1, 5, 2, 16)), ValueError, "head_dim"),
    ("GQA", lambda: ops.qkt_matmul(z(1, 3, 6, 8), z(1, 5, 4, 8)), ValueError, "kv_heads"),
    ("q empty", lambda: ops.qkt_matmul(z(1, 0, 4, 8), k4), ValueError, "q is empty"),
    ("k uint8", lambda: ops.qkt_matmul(q4, z(1, 5, 2, 8, dtype=np.uint8)), TypeError, "k must have dtype float32"),
    ("scale factor str", lambda: ops.scale(z(3), "two"), TypeError, "factor"),
    ("scale x int", lambda: ops.scale(z(3, dtype=np.int32), 2.0), TypeError, "x must have dtype float32"),
    ("mask rank 1", lambda: ops.causal_mask(z(5)), ValueError, "scores must have at least 2"),
    ("softmax 0-d", lambda: ops.softmax(np.array(1.0, dtype=f32)), ValueError, "x must have at least 1"),
    ("softmax None", lambda: ops.softmax(None), TypeError, "x must be a numpy.ndarray"),
    ("softmax scalar", lambda: ops.softmax(np.float32(1.0)), TypeError, "numpy.float32"),
    ("weighted seq_k", lambda: ops.weighted_matmul(z(1, 4, 3, 6), k4), ValueError, "seq_k"),
    ("weighted GQA", lambda: ops.weighted_matmul(z(1, 3, 3, 5), k4), ValueError, "kv_heads"),
    ("flash v shape", lambda: ops.flash_attention(q4, k4, z(1, 6, 2, 8)), ValueError, "v has shape"),
    ("flash scale nan", lambda: ops.flash_attention(q4, k4, k4, scale=float("nan")), ValueError, "scale"),
    ("rope odd head_dim", lambda: ops.rope(z(1, 3, 2, 7), np.arange(3)), ValueError, "even"),
    ("rope rank 3", lambda: ops.rope(z(3, 2, 8), np.arange(3)), ValueError, "x must be 4-D"),
    ("rope positions length", lambda: ops.rope(z(1, 3, 2, 8), np.arange(4)), ValueError, "positions"),
    ("rope positions float", lambda: ops.rope(z(1, 3, 2, 8), np.arange(3.0)), TypeError, "positions"),
    ("rope freq_factors", lambda: ops.rope(z(1, 3, 2, 8), np.arange(3), freq_factors=z(8)), ValueError, "freq_factors"),
    ("rope theta", lambda: ops.rope(z(1, 3, 2, 8), np.arange(3), theta=0.0), ValueError, "theta"),
    ("swiglu shapes", lambda: ops.swiglu(z(3, 4), z(4, 3)), ValueError, "up"),
    ("geglu shapes", lambda: ops.geglu(z(3, 4), z(4, 3)), ValueError, "up"),
    ("geglu gate float64", lambda: ops.geglu(z(3, dtype=np.float64), z(3)), TypeError, "gate must have dtype float32"),
    ("gelu x float16", lambda: ops.gelu(z(3, dtype=np.float16)), TypeError, "x must have dtype float32"),
    ("gelu empty", lambda: ops.gelu(z(0, 4)), ValueError, "x is empty"),
    ("rms_norm weight", lambda: ops.rms_norm(z(3, 4), z(5)), ValueError, "weight"),
    ("rms_norm weight 2-D", lambda: ops.rms_norm(z(3, 4), z(1, 4)), ValueError, "weight must be 1-D"),
    ("rms_norm eps", lambda: ops.rms_norm(z(3, 4), z(4), -1.0), ValueError, "eps"),
    ("matmul k", lambda: ops.matmul(z(2, 5), z(3, 4)), ValueError, "k"),
    ("matmul w rank", lambda: ops.matmul(z(2, 4), z(4)), ValueError, "w must be 2-D"),
    ("matmul w float64", lambda: ops.matmul(z(2, 4), z(3, 4, dtype=np.float64)), TypeError, "w must have dtype"),
    ("matmul float w quant dtype", lambda: ops.matmul(z(2, 32), z(3, 32), "Q4_0"), TypeError, "uint8"),
    ("matmul unknown dtype", lambda: ops.matmul(z(2, 32), z(3, 18, dtype=np.uint8), "Q9_9"), ValueError, "Q9_9"),
    ("matmul partial block", lambda: ops.matmul(z(2, 32), z(3, 17, dtype=np.uint8), "Q4_0"), ValueError, "blocks"),
    ("add shapes", lambda: ops.add(z(3, 4), z(3)), ValueError, "b must have"),
    ("argmax rank", lambda: ops.argmax(z(2, 3)), ValueError, "x must be 1-D"),
    ("embedding table", lambda: ops.embedding(z(4), np.arange(2)), ValueError, "table must be 2-D"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_devices():
    x = z(2, 3)
    if HAS_GPU:  # "auto" takes the GPU
        np.testing.assert_array_equal(ops.softmax(x, device="gpu"), ops.softmax(x, device="auto"))
    else:
        np.testing.assert_array_equal(ops.softmax(x, device="cpu"), ops.softmax(x, device="auto"))
        with pytest.raises(rf.DeviceError, match="no GPU"):
            ops.softmax(x, device="gpu")
    with pytest.raises(ValueError, match="device"):
        ops.softmax(x, device="tpu")
    with pytest.raises(TypeError):
        ops.softmax(x, "cpu")  # device is keyword-only


def layouts(rng, shape):
    """The same float32 values as a C array, a Fortran array, a strided view and a misaligned one."""
    c = rng.standard_normal(shape, dtype=f32)
    fortran = np.asfortranarray(c)
    big = np.zeros(tuple(2 * s for s in shape), dtype=f32)
    strided = big[tuple(slice(None, None, 2) for _ in shape)]
    strided[...] = c
    buf = bytearray(c.nbytes + 1)
    misaligned = np.frombuffer(buf, dtype=f32, count=c.size, offset=1).reshape(shape)
    misaligned[...] = c
    assert not strided.flags.c_contiguous and not misaligned.flags.aligned
    return c, [fortran, strided, misaligned]


LAYOUT_CASES = [
    ("qkt_matmul", [(2, 5, 6, 16), (2, 7, 3, 16)], lambda d, a, b: ops.qkt_matmul(a, b, device=d)),
    ("weighted_matmul", [(2, 6, 5, 7), (2, 7, 3, 16)], lambda d, a, b: ops.weighted_matmul(a, b, device=d)),
    ("flash_attention", [(2, 5, 6, 16), (2, 7, 3, 16)], lambda d, a, b: ops.flash_attention(a, b, b, True, device=d)),
    ("rope", [(2, 5, 3, 16), (8,)], lambda d, a, b: ops.rope(a, np.arange(5), freq_factors=np.abs(b) + 1, device=d)),
    ("rms_norm", [(7, 12), (12,)], lambda d, a, b: ops.rms_norm(a, b, device=d)),
    ("matmul", [(7, 12), (5, 12)], lambda d, a, b: ops.matmul(a, b, device=d)),
    ("swiglu", [(7, 12), (7, 12)], lambda d, a, b: ops.swiglu(a, b, device=d)),
    ("geglu", [(7, 12), (7, 12)], lambda d, a, b: ops.geglu(a, b, device=d)),
    ("gelu", [(3, 7, 12), (3,)], lambda d, a, b: ops.gelu(a, device=d)),
    ("add", [(7, 12), (7, 12)], lambda d, a, b: ops.add(a, b, device=d)),
    ("softmax", [(7, 12), (3,)], lambda d, a, b: ops.softmax(a, device=d)),
    ("causal_mask", [(3, 7, 12), (3,)], lambda d, a, b: ops.causal_mask(a, device=d)),
    ("scale", [(3, 7, 12), (3,)], lambda d, a, b: ops.scale(a, 0.5, device=d)),
    ("embedding", [(9, 12), (3,)], lambda d, a, b: ops.embedding(a, np.array([8, 0, 3]), device=d)),
]


@pytest.mark.parametrize("name,shapes,call", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_any_memory_layout_is_read_correctly(rng, device, name, shapes, call):
    a, a_layouts = layouts(rng, shapes[0])
    b, b_layouts = layouts(rng, shapes[1])
    want = call(device, a, b)
    for a_other, b_other in zip(a_layouts, b_layouts):
        np.testing.assert_array_equal(call(device, a_other, b_other), want)
        np.testing.assert_array_equal(call(device, a, b_other), want)


def test_gil_is_released_while_an_op_computes(rng, device):
    # An attention long enough to see (at least 0.2 s alone on this machine).
    seq = 512
    while True:
        q = rng.standard_normal((1, seq, 2, 64), dtype=f32)
        started = time.perf_counter()
        ops.flash_attention(q, q, q, device=device)
        alone = time.perf_counter() - started
        if alone >= 0.2 or seq >= 16384:
            break
        seq *= 2
    done = threading.Event()

    def worker():
        ops.flash_attention(q, q, q, device=device)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    gaps, last = [], time.perf_counter()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    t.join()
    # With the GIL held, the main thread would stall for the whole op in one gap.
    assert max(gaps) < 0.5 * alone, (max(gaps), alone)


def test_every_op_is_documented_with_its_signature():
    for name in ops.__all__:
        fn = getattr(ops, name)
        doc = fn.__doc__ or ""
        assert len(doc) > 80 and "[" in doc, f"{name} needs a docstring giving shapes"
        params = inspect.signature(fn).parameters
        assert params["device"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["device"].default == "auto"


def test_spec_signatures():
    sig = {name: list(inspect.signature(getattr(ops, name)).parameters) for name in ops.__all__}
    assert sig["qkt_matmul"] == ["q", "k", "scale", "device"]
    assert sig["scale"] == ["x", "factor", "device"]
    assert sig["causal_mask"] == ["scores", "device"]
    assert sig["softmax"] == ["x", "device"]
    assert sig["weighted_matmul"] == ["weights", "v", "device"]
    assert sig["flash_attention"] == ["q", "k", "v", "causal", "scale", "window", "device"]
    assert sig["rope"] == ["x", "positions", "theta", "neox", "freq_factors", "device"]
    assert sig["swiglu"] == ["gate", "up", "device"]
    assert sig["geglu"] == ["gate", "up", "device"]
    assert sig["gelu"] == ["x", "device"]
    assert sig["rms_norm"] == ["x", "weight", "eps", "device"]
    assert sig["matmul"] == ["x", "w", "dtype", "device"]
    p = inspect.signature(ops.rope).parameters
    assert (p["theta"].default, p["neox"].default, p["freq_factors"].default) == (10000.0, False, None)
    assert inspect.signature(ops.rms_norm).parameters["eps"].default == 1e-6
    assert inspect.signature(ops.matmul).parameters["dtype"].default == "F32"
    assert inspect.signature(ops.flash_attention).parameters["causal"].default is False
    window = inspect.signature(ops.flash_attention).parameters["window"]
    # SPEC: flash_attention(q, k, v, causal=False, scale=None, window=None)
    assert window.default is None and window.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
