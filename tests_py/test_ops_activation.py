"""rocmforge.ops.swiglu, geglu and gelu against float64 NumPy references.

swiglu: relative error 1e-5. gelu and geglu (tanh form): each element within 1e-5 relative
plus 1e-6 * |up| absolute (up = 1 for gelu): for x < ~-3, 1 + tanh(...) cancels in float32,
which costs relative precision but never more than ~1e-7 * |up| absolute."""

from __future__ import annotations

import numpy as np
import pytest

import numpy_ref as ref
import rocmforge as rf
from numpy_ref import rel_err

TOL = 1e-5
ATOL = 1e-6

SHAPES = [(1,), (5,), (3, 7), (17, 1536), (2, 3, 97), (257, 4099)]
shape_ids = lambda s: "x".join(map(str, s)) or "0d"  # noqa: E731


@pytest.mark.parametrize("shape", SHAPES, ids=shape_ids)
@pytest.mark.parametrize("gate_scale", [1.0, 30.0])
def test_swiglu(rng, device, shape, gate_scale):
    gate = (rng.standard_normal(shape) * gate_scale).astype(np.float32)
    up = rng.standard_normal(shape).astype(np.float32)
    out = rf.ops.swiglu(gate, up, device=device)
    assert out.dtype == np.float32 and out.shape == gate.shape
    expected = ref.swiglu(gate, up)
    # Where every expected value is below float32's normal range (a lone gate of -90 gives
    # silu ~ 1e-37), a norm-wise relative error measures subnormal rounding, not the op:
    # there, values must agree to within float32's smallest normal number.
    tiny = np.finfo(np.float32).tiny
    assert rel_err(out, expected) < TOL or np.allclose(out, expected, rtol=TOL, atol=tiny)


def test_swiglu_extremes(device):
    gate = np.array([-1000.0, -88.0, 0.0, 88.0, 1000.0], dtype=np.float32)
    up = np.full(5, 2.0, dtype=np.float32)
    out = rf.ops.swiglu(gate, up, device=device)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref.swiglu(gate, up), rtol=1e-6, atol=1e-30)


def assert_gelu_close(out, expected, up=None):
    """|out - expected| <= TOL |expected| + ATOL |up| element-wise (up = 1 for gelu)."""
    assert out.dtype == np.float32 and out.shape == expected.shape
    scale = 1.0 if up is None else np.abs(up.astype(np.float64))
    err = np.abs(out.astype(np.float64) - expected)
    bound = TOL * np.abs(expected) + ATOL * scale
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert (err <= bound).all(), (worst, out[worst], expected[worst])


@pytest.mark.parametrize("shape", [()] + SHAPES, ids=shape_ids)
@pytest.mark.parametrize("gate_scale", [1.0, 30.0])
def test_geglu(rng, device, shape, gate_scale):
    # (np.asarray: for shape (), NumPy draws scalars, and the ops take arrays only)
    gate = np.asarray(rng.standard_normal(shape) * gate_scale, dtype=np.float32)
    up = np.asarray(rng.standard_normal(shape), dtype=np.float32)
    out = rf.ops.geglu(gate, up, device=device)
    assert_gelu_close(out, ref.geglu(gate, up), up)


@pytest.mark.parametrize("shape", [()] + SHAPES, ids=shape_ids)
@pytest.mark.parametrize("x_scale", [1.0, 30.0])
def test_gelu(rng, device, shape, x_scale):
    x = np.asarray(rng.standard_normal(shape) * x_scale, dtype=np.float32)
    out = rf.ops.gelu(x, device=device)
    assert_gelu_close(out, ref.gelu(x))


def test_gelu_over_the_range_where_tanh_saturates(device):
    # every step of 0.01 from -30 to 30 (6001 values: not a multiple of any block size)
    x = np.linspace(-30.0, 30.0, 6001).astype(np.float32)
    out = rf.ops.gelu(x, device=device)
    assert_gelu_close(out, ref.gelu(x))
    # saturated: gelu(x) = x for large x, 0 for very negative x
    assert out[-1] == np.float32(30.0) and out[0] == 0.0
    up = np.linspace(-2.0, 2.0, 6001).astype(np.float32)
    assert_gelu_close(rf.ops.geglu(x, up, device=device), ref.geglu(x, up), up)


def test_gelu_extremes(device):
    big = np.finfo(np.float32).max
    x = np.array([-big, -1e4, -88.0, -5.0, -1e-30, 0.0, 1e-30, 5.0, 88.0, 1e4, big], dtype=np.float32)
    out = rf.ops.gelu(x, device=device)
    assert not np.isnan(out).any()
    # float32's max cubed overflows float64 too: the limits by hand there
    np.testing.assert_array_equal(out[[0, -1]], [0.0, big])
    assert_gelu_close(out[1:-1], ref.gelu(x[1:-1]))
    gate = np.array([-1000.0, -88.0, 0.0, 88.0, 1000.0], dtype=np.float32)
    up = np.full(5, 2.0, dtype=np.float32)
    out = rf.ops.geglu(gate, up, device=device)
    np.testing.assert_allclose(out, ref.geglu(gate, up), rtol=1e-6, atol=1e-30)


def test_geglu_is_gelu_times_up(rng, device):
    """Both ops round gelu the same way: geglu(g, u) == gelu(g) * u bit for bit."""
    gate = (rng.standard_normal(4099) * 10).astype(np.float32)
    up = rng.standard_normal(4099).astype(np.float32)
    np.testing.assert_array_equal(
        rf.ops.geglu(gate, up, device=device), rf.ops.gelu(gate, device=device) * up
    )


def test_gelu_and_geglu_read_non_contiguous_input(rng, device):
    base = (rng.standard_normal((9, 40)) * 8).astype(np.float32)
    x = base[::2, 1::3]  # strided
    up = np.asfortranarray(rng.standard_normal(x.shape).astype(np.float32))
    assert not x.flags.c_contiguous and not up.flags.c_contiguous
    assert_gelu_close(rf.ops.gelu(x, device=device), ref.gelu(x))
    assert_gelu_close(rf.ops.geglu(x, up, device=device), ref.geglu(x, up), up)
    assert_gelu_close(rf.ops.gelu(x.T, device=device), ref.gelu(x.T))


def f32(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


BAD_GLU_ARGS = [
    # (id, gate, up, device)
    ("gate float64", f32(3, 4, dtype=np.float64), f32(3, 4), "cpu"),
    ("up int32", f32(3, 4), f32(3, 4, dtype=np.int32), "cpu"),
    ("gate list", [[1.0]], f32(1, 1), "cpu"),
    ("up None", f32(3), None, "cpu"),
    ("shapes", f32(3, 4), f32(4, 3), "cpu"),
    ("rank", f32(12), f32(3, 4), "cpu"),
    ("gate empty", f32(0, 4), f32(0, 4), "cpu"),
    ("device", f32(3), f32(3), "tpu"),
]


@pytest.mark.parametrize("gate,up,dev", [c[1:] for c in BAD_GLU_ARGS], ids=[c[0] for c in BAD_GLU_ARGS])
def test_geglu_raises_what_swiglu_raises(gate, up, dev):
    with pytest.raises((TypeError, ValueError)) as want:
        rf.ops.swiglu(gate, up, device=dev)
    with pytest.raises((TypeError, ValueError)) as got:
        rf.ops.geglu(gate, up, device=dev)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value).replace("swiglu", "geglu")


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (f32(3, dtype=np.float64), TypeError, "gelu: x must have dtype float32, got float64"),
        (f32(3, dtype=np.int8), TypeError, "gelu: x must have dtype float32"),
        ([1.0, 2.0], TypeError, "gelu: x must be a numpy.ndarray of float32, got list"),
        (np.float32(1.0), TypeError, "numpy.float32"),
        (f32(2, 0), ValueError, r"gelu: x is empty \(shape \(2, 0\)\)"),
    ],
    ids=["float64", "int8", "list", "numpy scalar", "empty"],
)
def test_gelu_bad_arguments(x, exc, match):
    with pytest.raises(exc, match=match):
        rf.ops.gelu(x, device="cpu")
