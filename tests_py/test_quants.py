"""rocmforge.dequantize / rocmforge.quantize against the `gguf` package, bit for bit.

Every run draws fresh random blocks (seeded by the `rng` fixture). Block bytes are random with
their float scale fields forced finite, so every code path of the unpacking is exercised.
Q8_K, which the `gguf` package cannot (de)quantize, is checked against NumPy references written
here from ggml's block definition and llama.cpp's reference quantizer. IQ4_NL and IQ4_XS, which
it dequantizes but cannot quantize, are dequantized only (so are they by rocmforge).
"""

from __future__ import annotations

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as GT
from gguf.constants import GGML_QUANT_SIZES

import rocmforge as rf

DEQUANTIZED = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
               "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
QUANTIZED = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]

# Byte offsets of the f16 scale fields (d, dmin / m) in each block, from ggml-common.h.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0],
}

# (rows, blocks per row): single blocks, odd and prime counts, and one large enough to be
# dequantized over several threads.
LAYOUTS = [(1, 1), (3, 2), (7, 5), (2, 31), (1, 300)]


def sizes(name):
    return GGML_QUANT_SIZES[GT[name]]  # (block_size, type_size)


def random_finite_f16_bits(rng, shape):
    """Random f16 bit patterns of every sign and magnitude (subnormals too), never inf/NaN."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    special = (bits & 0x7C00) == 0x7C00
    bits[special] ^= 0x4000  # exponent 31 -> 15
    return bits


def random_blocks(rng, name, rows, blocks_per_row):
    """(rows, blocks_per_row * type_size) uint8: random bytes, finite scales."""
    _, ts = sizes(name)
    raw = rng.integers(0, 256, size=(rows, blocks_per_row, ts), dtype=np.uint8)
    for off in F16_FIELDS.get(name, []):
        bits = random_finite_f16_bits(rng, (rows, blocks_per_row))
        raw[..., off:off + 2] = bits.astype("<u2").view(np.uint8).reshape(rows, blocks_per_row, 2)
    if name == "Q8_K":
        d = (rng.standard_normal((rows, blocks_per_row)) * 10.0 ** rng.integers(-6, 6, (rows, blocks_per_row)))
        raw[..., 0:4] = d.astype("<f4").view(np.uint8).reshape(rows, blocks_per_row, 4)
    return raw.reshape(rows, blocks_per_row * ts)


def assert_same_floats(got, want, what=""):
    """Bit-identical float32 arrays (the sign of zero counts), NaNs anywhere matching NaNs."""
    assert got.dtype == np.float32 and want.dtype == np.float32, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    got_nan, want_nan = np.isnan(got), np.isnan(want)
    assert np.array_equal(got_nan, want_nan), f"{what}: NaN positions differ"
    differ = (got.view(np.uint32) != want.view(np.uint32)) & ~got_nan
    if differ.any():
        idx = np.argwhere(differ)[:5]
        detail = [(tuple(i), got[tuple(i)], want[tuple(i)]) for i in idx]
        pytest.fail(f"{what}: {differ.sum()} of {got.size} values differ, e.g. {detail}")


def gguf_dequantize(raw, name):
    with np.errstate(all="ignore"):
        return gguf.quants.dequantize(raw, GT[name]).astype(np.float32, copy=False)


def gguf_quantize(x, name):
    with np.errstate(all="ignore"):
        out = gguf.quants.quantize(x, GT[name])
    return np.ascontiguousarray(out).view(np.uint8)


# ---------------------------------------------------------------------------------------------
# Dequantization


@pytest.mark.parametrize("name", DEQUANTIZED)
@pytest.mark.parametrize("rows,blocks", LAYOUTS)
def test_dequantize_matches_gguf(rng, name, rows, blocks):
    bs, ts = sizes(name)
    if bs == 1:
        blocks *= 37  # plain types: rows of an odd number of elements
    raw = random_blocks(rng, name, rows, blocks)
    want = gguf_dequantize(raw, name)
    got = rf.dequantize(raw, name, (rows, blocks * bs))
    assert_same_floats(got, want, name)
    # Default shape: raw's leading axes, last axis in elements.
    assert_same_floats(rf.dequantize(raw, name), want, name)


@pytest.mark.parametrize("name", ["F32", "F16", "BF16"])
def test_plain_types_any_bits(rng, name):
    """Random bytes of the plain types include infinities, NaNs and subnormals."""
    _, ts = sizes(name)
    raw = rng.integers(0, 256, size=(5, 101 * ts), dtype=np.uint8)
    if name == "F32":
        # Make sure the special values are there.
        raw[0, :12] = np.array([np.inf, -np.nan, 1e-42], dtype="<f4").view(np.uint8)
    assert_same_floats(rf.dequantize(raw, name), gguf_dequantize(raw, name), name)


def q8_k_dequantize_reference(raw):
    """ggml's block_q8_K: {f32 d; int8 qs[256]; int16 bsums[16]}, weight = d * q."""
    rows = raw.shape[0]
    blocks = raw.reshape(-1, 292)
    d = np.ascontiguousarray(blocks[:, 0:4]).view("<f4").astype(np.float32)  # (n, 1)
    qs = np.ascontiguousarray(blocks[:, 4:260]).view(np.int8).astype(np.float32)  # (n, 256)
    return (d * qs).reshape(rows, -1)


@pytest.mark.parametrize("rows,blocks", LAYOUTS)
def test_dequantize_q8_k(rng, rows, blocks):
    raw = random_blocks(rng, "Q8_K", rows, blocks)
    assert_same_floats(rf.dequantize(raw, "Q8_K", (rows, blocks * 256)),
                       q8_k_dequantize_reference(raw), "Q8_K")


def test_dequantize_reshapes_and_copies(rng):
    raw = random_blocks(rng, "Q4_K", 6, 2)
    want = gguf_dequantize(raw, "Q4_K")
    assert_same_floats(rf.dequantize(raw, "Q4_K", (2, 3, 512)), want.reshape(2, 3, 512))
    assert_same_floats(rf.dequantize(raw, "q4_k", [3072]), want.reshape(-1))
    # Fortran order and strided views are read in logical order.
    assert_same_floats(rf.dequantize(np.asfortranarray(raw), "Q4_K"), want)
    wide = np.zeros((6, 2 * raw.shape[1]), dtype=np.uint8)
    wide[:, ::2] = raw
    assert_same_floats(rf.dequantize(wide[:, ::2], "Q4_K"), want)


# ---------------------------------------------------------------------------------------------
# Quantization


def awkward_rows(rng, name, rows, blocks):
    """float32 (rows, blocks * block_size) with the hard cases mixed into random data."""
    bs, _ = sizes(name)
    scale = 10.0 ** rng.integers(-3, 4, size=(rows, blocks, 1))
    x = (rng.standard_normal((rows, blocks, bs)) * scale).astype(np.float32)
    cases = [
        lambda b: np.zeros_like(b),                                 # all zeros
        lambda b: np.where(np.arange(b.size) == rng.integers(b.size), np.float32(3e4), b * 1e-3),
        lambda b: np.where(np.arange(b.size) == rng.integers(b.size), np.float32(1e30), b),
        lambda b: -np.abs(b) - np.float32(0.5),                      # all negative: negative max
        lambda b: np.where(np.arange(b.size) == 3, -np.abs(b).max() * 2, b),  # negative extremum
        lambda b: tie_block(rng, name, b.size),                       # values at rounding ties
        lambda b: np.full_like(b, np.float32(-2.5)),                  # constant block
        lambda b: (rng.integers(-3, 4, b.size) * np.float32(0.25)).astype(np.float32),
    ]
    flat = x.reshape(rows * blocks, bs)
    for i in range(flat.shape[0]):
        if rng.random() < 0.5:
            flat[i] = cases[rng.integers(len(cases))](flat[i]).astype(np.float32)
    return flat.reshape(rows, blocks * bs)


def tie_block(rng, name, n):
    """A block whose scaled values land exactly on rounding boundaries."""
    if name in ("F32", "F16"):
        # f16 ties: halfway between two f16 neighbours (exactly representable in f32).
        h = rng.integers(0x0400, 0x7B00, n).astype(np.uint16)
        lo = h.view(np.float16).astype(np.float32)
        hi = (h + 1).view(np.float16).astype(np.float32)
        return (lo + hi) / 2 * np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32)
    if name == "BF16":
        bits = (rng.integers(0x0080, 0x7F00, n).astype(np.uint32) << 16) | 0x8000
        return bits.view(np.float32)
    # Half-integers with an anchor making d exactly 1, so x * id + offset hits integers / .5.
    lo, hi, anchors = {
        "Q4_0": (-8, 7, {0: -8.0}),
        "Q5_0": (-16, 15, {0: -16.0}),
        "Q4_1": (0, 14, {0: 0.0, 1: 15.0}),
        "Q5_1": (0, 30, {0: 0.0, 1: 31.0}),
        "Q8_0": (-127, 126, {0: 127.0}),
        "Q8_K": (-127, 126, {0: -127.0}),
    }[name]
    b = (rng.integers(lo, hi + 1, n) + 0.5).astype(np.float32)
    for i, v in anchors.items():
        b[i] = v
    return b


@pytest.mark.parametrize("name", QUANTIZED)
@pytest.mark.parametrize("rows,blocks", [(1, 1), (3, 7), (5, 13), (4, 600)])
def test_quantize_matches_gguf(rng, name, rows, blocks):
    bs, ts = sizes(name)
    if bs == 1:
        blocks *= 32
    x = awkward_rows(rng, name, rows, blocks)
    want = gguf_quantize(x, name)
    got = rf.quantize(x, name)
    assert got.dtype == np.uint8 and got.shape == (rows, blocks * ts)
    if not np.array_equal(got, want.reshape(got.shape)):
        diff = np.argwhere(got.reshape(-1, ts) != want.reshape(-1, ts))
        block = diff[0][0]
        pytest.fail(f"{name}: {len(np.unique(diff[:, 0]))} blocks differ; first block {block}: "
                    f"x={x.reshape(-1, bs)[block].tolist()} got={got.reshape(-1, ts)[block].tolist()} "
                    f"want={want.reshape(-1, ts)[block].tolist()}")
    # Round trip: ours both ways equals gguf's both ways.
    assert_same_floats(rf.dequantize(got, name), gguf_dequantize(want.reshape(got.shape), name), name)


def test_quantize_input_layouts(rng):
    x = rng.standard_normal((4, 96)).astype(np.float32)
    want = gguf_quantize(x, "Q8_0")
    assert np.array_equal(rf.quantize(np.asfortranarray(x), "Q8_0"), want)
    assert np.array_equal(rf.quantize(x.reshape(2, 2, 96), "Q8_0"), want.reshape(2, 2, -1))
    assert np.array_equal(rf.quantize(x.reshape(-1), "q8_0"), want.reshape(-1))


def q8_k_quantize_reference(x):
    """llama.cpp's quantize_row_q8_K_ref, in NumPy: (n, 256) float32 -> (n, 292) uint8."""
    out = np.zeros((x.shape[0], 292), dtype=np.uint8)
    for i, b in enumerate(x):
        a = np.abs(b)
        if a.max() == 0:
            continue  # d = 0, quants and sums 0
        mx = b[np.argmax(a)]  # first element of largest magnitude
        iscale = np.float32(-127.0) / mx
        q = np.minimum(np.rint(iscale * b), 127).astype(np.int8)  # nearest, ties to even
        d = np.float32(1.0) / iscale
        out[i, 0:4] = np.array([d], dtype="<f4").view(np.uint8)
        out[i, 4:260] = q.view(np.uint8)
        out[i, 260:292] = q.reshape(16, 16).astype(np.int16).sum(axis=1).astype("<i2").view(np.uint8)
    return out


@pytest.mark.parametrize("rows,blocks", [(1, 1), (3, 5), (2, 130)])
def test_quantize_q8_k(rng, rows, blocks):
    x = awkward_rows(rng, "Q8_K", rows, blocks)
    got = rf.quantize(x, "Q8_K")
    assert got.shape == (rows, blocks * 292)
    with np.errstate(all="ignore"):
        want = q8_k_quantize_reference(x.reshape(-1, 256)).reshape(rows, -1)
    assert np.array_equal(got, want)
    assert_same_floats(rf.dequantize(got, "Q8_K"), q8_k_dequantize_reference(want))


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_unknown_type_names_are_value_errors():
    with pytest.raises(ValueError, match="Q4_7"):
        rf.dequantize(np.zeros(18, np.uint8), "Q4_7")
    with pytest.raises(ValueError):
        rf.quantize(np.zeros(32, np.float32), "")
    with pytest.raises(ValueError):
        rf.quantize(np.zeros(32, np.float32), "float32")


def test_partial_blocks_are_value_errors():
    with pytest.raises(ValueError):
        rf.dequantize(np.zeros(19, np.uint8), "Q4_0")
    with pytest.raises(ValueError):
        rf.dequantize(np.zeros((2, 145), np.uint8), "Q4_K")
    with pytest.raises(ValueError):
        rf.dequantize(np.zeros(3, np.uint8), "F32")
    with pytest.raises(ValueError):
        rf.quantize(np.zeros(33, np.float32), "Q4_0")
    with pytest.raises(ValueError):
        rf.quantize(np.zeros((3, 100), np.float32), "Q8_K")
    with pytest.raises(ValueError):  # shape disagreeing with the data
        rf.dequantize(np.zeros(36, np.uint8), "Q8_0", (33,))


@pytest.mark.parametrize("name", ["IQ2_XXS", "IQ3_S", "TQ1_0", "MXFP4", "Q8_1"])
def test_unsupported_types_raise_unsupported(name):
    bs, ts = sizes(name)
    if name == "Q8_1":
        ts = 36  # ggml writes two halves + 32 quants; the gguf package's table says 40
    with pytest.raises(rf.UnsupportedError, match=name):
        rf.dequantize(np.zeros(2 * ts, np.uint8), name)


@pytest.mark.parametrize("name", ["IQ2_XXS", "Q4_K", "Q6_K", "TQ2_0", "IQ4_XS"])
def test_quantize_to_unsupported_types(name):
    bs, _ = sizes(name)
    with pytest.raises(rf.UnsupportedError, match=name):
        rf.quantize(np.zeros(bs, np.float32), name)
