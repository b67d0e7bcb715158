"""Random GGUF-typed matrices for the matmul and embedding tests, and their float64 values
dequantized by the `gguf` package (independent of rocmforge)."""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np

# The types SPEC.md requires rocmforge to dequantize on the CPU.
CPU_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
             "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ4_NL", "IQ4_XS"]

# Byte offsets of each block's float scale fields (ggml's block layouts); every other byte of a
# block is quant bits, which may be anything.
_SCALE_FIELDS = {
    "Q2_K": [(80, np.float16), (82, np.float16)],    # scales[16] qs[64] d dmin
    "Q3_K": [(108, np.float16)],                     # hmask[32] qs[64] scales[12] d
    "Q4_K": [(0, np.float16), (2, np.float16)],      # d dmin scales[12] qs[128]
    "Q5_K": [(0, np.float16), (2, np.float16)],      # d dmin scales[12] qh[32] qs[128]
    "Q6_K": [(208, np.float16)],                     # ql[128] qh[64] scales[16] d
    "Q8_K": [(0, np.float32)],                       # d qs[256] bsums[16]
    "IQ4_NL": [(0, np.float16)],                     # d qs[16]
    "IQ4_XS": [(0, np.float16)],                     # d scales_h scales_l[4] qs[128]
}


def block_size(dtype: str) -> int:
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[dtype]][0]


def type_size(dtype: str) -> int:
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[dtype]][1]


def random_matrix(rng, dtype: str, rows: int, cols: int):
    """(uint8 blocks [rows, row_bytes], float64 values [rows, cols]) of a random `dtype` matrix."""
    qtype = gguf.GGMLQuantizationType[dtype]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    assert cols % block == 0
    values = rng.standard_normal((rows, cols)).astype(np.float32)
    if dtype == "F32":
        raw = values.view(np.uint8)
    elif dtype == "F16":
        raw = values.astype(np.float16).view(np.uint8)
    elif dtype in _SCALE_FIELDS:  # the gguf package cannot quantize these: random blocks
        n_blocks = rows * cols // block
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for offset, ftype in _SCALE_FIELDS[dtype]:
            width = np.dtype(ftype).itemsize
            scale = (rng.uniform(0.001, 0.1, size=n_blocks)).astype(ftype)
            blocks[:, offset : offset + width] = scale.view(np.uint8).reshape(n_blocks, width)
        raw = blocks.reshape(rows, -1)
    else:
        raw = gguf.quants.quantize(values, qtype)
    raw = np.ascontiguousarray(raw).reshape(rows, -1)
    return raw, dequantize(raw, dtype, cols)


def dequantize(raw, dtype: str, cols: int):
    """float64 values of GGUF blocks: the `gguf` package, or for Q8_K (which it lacks) d * qs."""
    if dtype == "Q8_K":
        blocks = raw.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32).astype(np.float64)  # [n_blocks, 1]
        qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float64)
        return (d * qs).reshape(raw.shape[0], cols)
    out = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[dtype])
    return np.asarray(out, dtype=np.float64).reshape(raw.shape[0], cols)
