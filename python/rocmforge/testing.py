"""Test and benchmark model files, written with the `gguf` package.

The `gguf` package is a test/benchmark-time dependency, not a runtime one: it is imported only
inside the functions that write files.

- :func:`make_qwen2_test_model`: a small random-weight ``qwen2`` GGUF with a real tokenizer (the
  Qwen2 vocabulary of llama.cpp's ``models/ggml-vocab-qwen2.gguf``). GQA, q/k/v biases, Q4_K /
  Q6_K / Q8_0 weights. Deterministic: the same bytes on every run (the llama.cpp reference data
  in ``tests_py/reference/`` records the file's sha256).
- :func:`make_model`: a random-weight model of a real model's shape (Qwen2.5-0.5B, Llama-3.2-1B,
  Llama-3-8B) in Q8_0 or Q4_0, for benchmarks. Fast to write: the quantized blocks are random
  bytes with finite scales.
- :func:`llamacpp_vocab_path`: llama.cpp's vocabulary files, taken from the pinned
  llama-cpp-python sdist and kept in ``~/.cache/rocmforge/test-data/``.

Command line::

    python -m rocmforge.testing make-model --shape qwen2-0.5b --dtype Q8_0 OUT.gguf
    python -m rocmforge.testing make-model --shape qwen2-test OUT.gguf
    python -m rocmforge.testing fetch-vocab [qwen2|llama-bpe]

With no network, pass ``--vocab FILE`` (a ``ggml-vocab-*.gguf`` file) or put the vocabulary
files into the test-data folder.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ._models import cache_dir

# --------------------------------------------------------------------------------------------
# llama.cpp's vocabulary files, from the pinned llama-cpp-python sdist
# --------------------------------------------------------------------------------------------

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
LLAMA_CPP_PYTHON_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

#: name -> (file name under vendor/llama.cpp/models/ in the sdist, sha256)
VOCAB_FILES = {
    "qwen2": ("ggml-vocab-qwen2.gguf",
              "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c"),
    "llama-bpe": ("ggml-vocab-llama-bpe.gguf",
                  "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"),
}


def test_data_dir() -> Path:
    """Where test data files are kept: ``~/.cache/rocmforge/test-data`` (honours XDG_CACHE_HOME)."""
    return cache_dir() / "test-data"


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def llamacpp_vocab_path(name: str = "qwen2", fetch: bool = True) -> Path:
    """Path of llama.cpp's ``ggml-vocab-<name>.gguf`` (``qwen2`` or ``llama-bpe``).

    On first use the llama-cpp-python sdist (pinned version and sha256) is fetched with pip,
    and its vocabulary files are extracted into :func:`test_data_dir`.
    """
    if name not in VOCAB_FILES:
        raise ValueError(f"unknown vocabulary {name!r}; known: {sorted(VOCAB_FILES)}")
    filename, expected = VOCAB_FILES[name]
    target = test_data_dir() / filename
    # the tokenizer tests keep the sdist's whole models/ folder here: reuse it when present
    whole_folder = test_data_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}" / filename
    for candidate in (target, whole_folder):
        if candidate.is_file():
            got = sha256_file(candidate)
            if got != expected:
                raise ValueError(f"{candidate} has sha256 {got}, expected {expected}: delete it to refetch")
            return candidate
    if not fetch:
        raise FileNotFoundError(f"{filename} not in {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rocmforge: fetching llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sdist for its "
          f"vocabulary files into {target.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--no-binary", "llama-cpp-python", "-d", tmp,
             f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            check=True,
        )
        sdist = Path(tmp) / LLAMA_CPP_PYTHON_SDIST
        if not sdist.is_file():
            raise FileNotFoundError(f"pip download gave no {LLAMA_CPP_PYTHON_SDIST}")
        got = sha256_file(sdist)
        if got != LLAMA_CPP_PYTHON_SDIST_SHA256:
            raise ValueError(f"{sdist.name} has sha256 {got}, expected {LLAMA_CPP_PYTHON_SDIST_SHA256}")
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/models/"
        with tarfile.open(sdist) as tar:
            for member_file, member_sha in VOCAB_FILES.values():
                src = tar.extractfile(prefix + member_file)
                if src is None:
                    raise FileNotFoundError(f"{member_file} missing from {sdist.name}")
                data = src.read()
                if hashlib.sha256(data).hexdigest() != member_sha:
                    raise ValueError(f"{member_file} in {sdist.name} does not match its pinned sha256")
                partial = target.parent / (member_file + ".partial")
                partial.write_bytes(data)
                os.replace(partial, target.parent / member_file)
    return target


# --------------------------------------------------------------------------------------------
# A small GGUF metadata reader (the vocabulary files only hold metadata; gguf.GGUFReader takes
# about a minute on a 150k-token vocabulary)
# --------------------------------------------------------------------------------------------

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
                10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


def read_gguf_metadata(path: os.PathLike | str) -> dict:
    """The key/value metadata of a GGUF file. Strings stay ``bytes`` (as stored); numeric arrays
    are NumPy arrays, string arrays lists of ``bytes``."""
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    pos = 24

    def read_string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        s = data[pos:pos + n]
        pos += n
        return s

    def read_value(vtype: int):
        nonlocal pos
        if vtype == _STRING:
            return read_string()
        if vtype == _ARRAY:
            item_type, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item_type == _STRING:
                return [read_string() for _ in range(n)]
            if item_type in _NUMPY_TYPES:
                arr = np.frombuffer(data, dtype=_NUMPY_TYPES[item_type], count=n, offset=pos)
                pos += arr.nbytes
                return arr.copy()
            return [read_value(item_type) for _ in range(n)]
        fmt = _SCALAR_FORMATS[vtype]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(n_kv):
        key = read_string().decode("utf-8")
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = read_value(vtype)
    return meta


# --------------------------------------------------------------------------------------------
# Quantized blocks written directly as bytes
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Streaming GGUF writer: tensor infos first, then each tensor's bytes made and written in turn
# --------------------------------------------------------------------------------------------

@dataclass
class _TensorSpec:
    name: str
    dtype: str                          # "F32", "Q4_K", ...
    shape: tuple                        # NumPy order: (rows, cols) or (n,)
    make: Callable[[], np.ndarray]      # -> float32 array (F32) or uint8 blocks [rows, bytes/row]


def _tensor_nbytes(dtype: str, shape: Sequence[int]) -> int:
    import gguf

    qtype = gguf.GGMLQuantizationType[dtype]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    if shape[-1] % block:
        raise ValueError(f"row length {shape[-1]} is not a multiple of the {dtype} block {block}")
    return n // block * type_size


def _write_gguf(path: os.PathLike | str, arch: str, metadata: list, tensors: list) -> Path:
    """Write ``metadata`` (a list of (key, value, GGUFValueType[, sub type])) and ``tensors``
    (a list of _TensorSpec), generating each tensor's data only when it is written."""
    import gguf

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch)
    try:
        for item in metadata:
            writer.add_key_value(*item)
        for t in tensors:
            nbytes = _tensor_nbytes(t.dtype, t.shape)
            if t.dtype == "F32":
                writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes)
            else:
                qtype = gguf.GGMLQuantizationType[t.dtype]
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                rows = int(np.prod(t.shape[:-1]))
                byte_shape = (rows, t.shape[-1] // block * type_size)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            data = np.ascontiguousarray(t.make())
            expected = _tensor_nbytes(t.dtype, t.shape)
            if data.nbytes != expected:
                raise AssertionError(f"{t.name}: made {data.nbytes} bytes, expected {expected}")
            writer.write_tensor_data(data)
        writer.close()
        os.replace(partial, path)
    finally:
        writer.close()
        if partial.exists():
            partial.unlink()
    return path


def _vocab_metadata(vocab_path: os.PathLike | str, n_vocab: Optional[int], add_bos: bool) -> list:
    """The tokenizer metadata of a llama.cpp vocabulary file, its token list padded with
    ``[PAD<i>]`` tokens or truncated (with the merges that make dropped tokens) to ``n_vocab``."""
    import gguf

    T = gguf.GGUFValueType
    src = read_gguf_metadata(vocab_path)
    tokens = list(src["tokenizer.ggml.tokens"])
    token_type = [int(x) for x in src["tokenizer.ggml.token_type"]]
    merges = list(src.get("tokenizer.ggml.merges", []))
    if n_vocab is not None and n_vocab > len(tokens):
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            token_type.append(int(gguf.TokenType.USER_DEFINED))
    elif n_vocab is not None and n_vocab < len(tokens):
        tokens, token_type = tokens[:n_vocab], token_type[:n_vocab]
        kept = set(tokens)
        merges = [mg for mg in merges if mg.replace(b" ", b"", 1) in kept
                  and all(part in kept for part in mg.split(b" ", 1))]
    n = len(tokens)

    meta = [
        ("tokenizer.ggml.model", src["tokenizer.ggml.model"], T.STRING),
        ("tokenizer.ggml.pre", src["tokenizer.ggml.pre"], T.STRING),
        ("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        ("tokenizer.ggml.token_type", token_type, T.ARRAY, T.INT32),
    ]
    if merges:
        meta.append(("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING))
    for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"):
        full = f"tokenizer.ggml.{key}"
        if full in src and int(src[full]) < n:
            meta.append((full, int(src[full]), T.UINT32))
    meta.append(("tokenizer.ggml.add_bos_token", add_bos, T.BOOL))
    if "tokenizer.chat_template" in src:
        meta.append(("tokenizer.chat_template", src["tokenizer.chat_template"], T.STRING))
    return meta


# --------------------------------------------------------------------------------------------
# The deterministic qwen2 test model
# --------------------------------------------------------------------------------------------

#: The qwen2 test model's shape. head_dim = 256 / 8 = 32; 4 query heads share each kv head.
QWEN2_TEST_CONFIG = {
    "n_layer": 3,
    "hidden": 256,
    "n_head": 8,
    "n_head_kv": 2,
    "ffn": 768,
    "context_length": 512,
    "rope_theta": 1000000.0,
    "rms_eps": 1e-6,
    "seed": 20250601,
}

# Per layer, the type of each projection: every one of Q4_K, Q6_K, Q8_0 appears in every role.
_QWEN2_TEST_TYPES = [
    {"attn_q": "Q4_K", "attn_k": "Q4_K", "attn_v": "Q6_K", "attn_output": "Q8_0",
     "ffn_gate": "Q4_K", "ffn_up": "Q4_K", "ffn_down": "Q6_K"},
    {"attn_q": "Q8_0", "attn_k": "Q6_K", "attn_v": "Q8_0", "attn_output": "Q4_K",
     "ffn_gate": "Q6_K", "ffn_up": "Q8_0", "ffn_down": "Q4_K"},
    {"attn_q": "Q6_K", "attn_k": "Q8_0", "attn_v": "Q4_K", "attn_output": "Q6_K",
     "ffn_gate": "Q8_0", "ffn_up": "Q6_K", "ffn_down": "Q8_0"},
]


def _random_weight(rng: np.random.Generator, dtype: str, rows: int, cols: int,
                   std: float) -> Callable[[], np.ndarray]:
    """A maker of a [rows, cols] weight of GGUF type ``dtype`` (blocks along cols), values of
    about this std and mean 0. Q8_0 quantizes Gaussian floats with ``gguf.quants.quantize``."""

    def make() -> np.ndarray:
        import gguf

        if dtype == "Q4_K":
            return q4_k_blocks(rng, rows * cols // QK_K, std).reshape(rows, -1)
        if dtype == "Q6_K":
            return q6_k_blocks(rng, rows * cols // QK_K, std).reshape(rows, -1)
        if dtype == "Q8_0":
            w = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)
            return gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
        raise ValueError(f"no random weight maker for {dtype}")

    return make


def make_qwen2_test_model(path: os.PathLike | str, vocab_path: os.PathLike | str | None = None) -> Path:
    """Write the deterministic random-weight ``qwen2`` test model to ``path``.

    3 layers, hidden 256, 8 heads over 2 kv heads (head_dim 32), FFN 768, context 512, q/k/v
    biases, projections in Q4_K / Q6_K / Q8_0 (see ``_QWEN2_TEST_TYPES``), F32 norms, token
    embedding Q4_K, untied ``output.weight`` Q6_K, and llama.cpp's Qwen2 tokenizer (151936
    tokens; ``add_bos_token`` true, unlike real Qwen2 files, so that BOS handling is tested). The weights are small and centred so that activations stay in range (llama.cpp
    keeps the KV cache in f16). The same bytes on every run, given the same `gguf` package.
    """
    import gguf

    T = gguf.GGUFValueType
    c = QWEN2_TEST_CONFIG
    vocab_path = vocab_path or llamacpp_vocab_path("qwen2")
    rng = np.random.default_rng(c["seed"])
    hidden, ffn, n_head, n_head_kv = c["hidden"], c["ffn"], c["n_head"], c["n_head_kv"]
    head_dim = hidden // n_head
    kv_dim = n_head_kv * head_dim
    # add_bos_token True (real Qwen2 files say False) so that the BOS path is exercised too
    vocab_meta = _vocab_metadata(vocab_path, None, add_bos=True)
    n_vocab = len(next(v for k, v, *_ in vocab_meta if k == "tokenizer.ggml.tokens"))

    metadata = [
        ("general.name", "rocmforge qwen2 test model (random weights)", T.STRING),
        ("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q4_K_M), T.UINT32),
        ("general.quantization_version", 2, T.UINT32),
        ("qwen2.context_length", c["context_length"], T.UINT32),
        ("qwen2.embedding_length", hidden, T.UINT32),
        ("qwen2.block_count", c["n_layer"], T.UINT32),
        ("qwen2.feed_forward_length", ffn, T.UINT32),
        ("qwen2.attention.head_count", n_head, T.UINT32),
        ("qwen2.attention.head_count_kv", n_head_kv, T.UINT32),
        ("qwen2.rope.freq_base", c["rope_theta"], T.FLOAT32),
        ("qwen2.attention.layer_norm_rms_epsilon", c["rms_eps"], T.FLOAT32),
    ] + vocab_meta

    def vector(n: int, mean: float, std: float) -> Callable[[], np.ndarray]:
        return lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)

    # projection std ~ 1/sqrt(hidden): unit-scale activations; output logits std about 4
    w_std = 1.0 / math.sqrt(hidden)
    tensors = [
        _TensorSpec("token_embd.weight", "Q4_K", (n_vocab, hidden),
                    lambda: q4_k_blocks(rng, n_vocab * hidden // QK_K, 1.0).reshape(n_vocab, -1)),
    ]
    for i, types in enumerate(_QWEN2_TEST_TYPES[: c["n_layer"]]):
        b = f"blk.{i}."
        shapes = {"attn_q": (hidden, hidden), "attn_k": (kv_dim, hidden), "attn_v": (kv_dim, hidden),
                  "attn_output": (hidden, hidden), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
                  "ffn_down": (hidden, ffn)}
        tensors.append(_TensorSpec(b + "attn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for proj in ("attn_q", "attn_k", "attn_v"):
            rows, cols = shapes[proj]
            tensors.append(_TensorSpec(b + proj + ".weight", types[proj], (rows, cols),
                                       _random_weight(rng, types[proj], rows, cols, w_std)))
            tensors.append(_TensorSpec(b + proj + ".bias", "F32", (rows,), vector(rows, 0.0, 0.3)))
        rows, cols = shapes["attn_output"]
        tensors.append(_TensorSpec(b + "attn_output.weight", types["attn_output"], (rows, cols),
                                   _random_weight(rng, types["attn_output"], rows, cols, w_std)))
        tensors.append(_TensorSpec(b + "ffn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for proj in ("ffn_gate", "ffn_up", "ffn_down"):
            rows, cols = shapes[proj]
            tensors.append(_TensorSpec(b + proj + ".weight", types[proj], (rows, cols),
                                       _random_weight(rng, types[proj], rows, cols,
                                                      1.0 / math.sqrt(cols))))
    tensors.append(_TensorSpec("output_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
    tensors.append(_TensorSpec("output.weight", "Q6_K", (n_vocab, hidden),
                               lambda: q6_k_blocks(rng, n_vocab * hidden // QK_K, 4.0 * w_std)
                               .reshape(n_vocab, -1)))
    return _write_gguf(path, "qwen2", metadata, tensors)


# --------------------------------------------------------------------------------------------
# Benchmark models: real shapes, random Q8_0 / Q4_0 weights
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    arch: str                 # "qwen2" | "llama"
    hidden: int
    n_layer: int
    n_head: int
    n_head_kv: int
    ffn: int
    n_vocab: int
    tied: bool
    context_length: int
    rope_theta: float
    rms_eps: float
    vocab: str                # llama.cpp vocabulary file to take the tokenizer from
    add_bos: bool
    llama3_rope_scaling: Optional[tuple] = None  # (factor, low_freq_factor, high_freq_factor, original_ctx)


SHAPES = {
    # Qwen2.5-0.5B
    "qwen2-0.5b": ModelShape("qwen2", 896, 24, 14, 2, 4864, 151936, True, 32768, 1000000.0, 1e-6,
                             "qwen2", False),
    # Llama-3.2-1B
    "llama-1b": ModelShape("llama", 2048, 16, 32, 8, 8192, 128256, True, 131072, 500000.0, 1e-5,
                           "llama-bpe", True, llama3_rope_scaling=(32.0, 1.0, 4.0, 8192)),
    # SmolLM2-135M (the default model's shape)
    "smollm2-135m": ModelShape("llama", 576, 30, 9, 3, 1536, 49152, True, 8192, 100000.0, 1e-5,
                               "llama-bpe", False),
    # Llama-3-8B
    "llama-8b": ModelShape("llama", 4096, 32, 32, 8, 14336, 128256, False, 8192, 500000.0, 1e-5,
                           "llama-bpe", True),
}

_BENCH_DTYPES = {"Q8_0": q8_0_random_blocks, "Q4_0": q4_0_random_blocks}


def llama3_rope_freq_factors(head_dim: int, theta: float, factor: float, low_freq_factor: float,
                             high_freq_factor: float, original_ctx: int) -> np.ndarray:
    """Llama 3.1+ ``rope_freqs``: per rotary pair, the divisor of its frequency."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    low_wavelen = original_ctx / low_freq_factor
    high_wavelen = original_ctx / high_freq_factor
    smooth = (original_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, mid))
    return out.astype(np.float32)


def make_model(shape: "str | ModelShape", dtype: str, path: os.PathLike | str,
               vocab_path: os.PathLike | str | None = None, seed: int = 0,
               embedding_std: float = 1.0) -> Path:
    """Write a random-weight model of a real model's ``shape`` (a key of :data:`SHAPES`, or a
    :class:`ModelShape`) with its 2-D weights in ``dtype`` (``Q8_0`` or ``Q4_0``), for benchmarks.
    The tokenizer is llama.cpp's vocabulary for that family (``vocab_path``, else fetched),
    padded or truncated to the shape's vocabulary size. ``embedding_std`` scales the (tied)
    embedding: 1.0 gives very peaked logits (fine for speed); ~1/sqrt(hidden) gives logits of
    unit scale, for comparing numerics."""
    import gguf

    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
        s, shape_name = SHAPES[shape], shape
    else:
        s, shape_name = shape, f"{shape.arch}-custom"
    if dtype not in _BENCH_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; known: {sorted(_BENCH_DTYPES)}")
    T = gguf.GGUFValueType
    blocks = _BENCH_DTYPES[dtype]
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[dtype]][0]
    rng = np.random.default_rng(seed)
    head_dim = s.hidden // s.n_head
    kv_dim = s.n_head_kv * head_dim
    vocab_path = vocab_path or llamacpp_vocab_path(s.vocab)
    a = s.arch

    metadata = [
        ("general.name", f"rocmforge random {shape_name} {dtype}", T.STRING),
        ("general.file_type", int(gguf.LlamaFileType[f"MOSTLY_{dtype}"]), T.UINT32),
        ("general.quantization_version", 2, T.UINT32),
        (f"{a}.context_length", s.context_length, T.UINT32),
        (f"{a}.embedding_length", s.hidden, T.UINT32),
        (f"{a}.block_count", s.n_layer, T.UINT32),
        (f"{a}.feed_forward_length", s.ffn, T.UINT32),
        (f"{a}.attention.head_count", s.n_head, T.UINT32),
        (f"{a}.attention.head_count_kv", s.n_head_kv, T.UINT32),
        (f"{a}.rope.freq_base", s.rope_theta, T.FLOAT32),
        (f"{a}.attention.layer_norm_rms_epsilon", s.rms_eps, T.FLOAT32),
    ]
    if a == "llama":
        metadata += [
            (f"{a}.vocab_size", s.n_vocab, T.UINT32),
            (f"{a}.rope.dimension_count", head_dim, T.UINT32),
            (f"{a}.attention.key_length", head_dim, T.UINT32),
            (f"{a}.attention.value_length", head_dim, T.UINT32),
        ]
    metadata += _vocab_metadata(vocab_path, s.n_vocab, add_bos=s.add_bos)

    def weight(rows: int, cols: int, std: float) -> Callable[[], np.ndarray]:
        return lambda: blocks(rng, rows * cols // block, std).reshape(rows, -1)

    def vector(n: int, mean: float, std: float) -> Callable[[], np.ndarray]:
        return lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)

    tensors = [_TensorSpec("token_embd.weight", dtype, (s.n_vocab, s.hidden),
                           weight(s.n_vocab, s.hidden, embedding_std))]
    if s.llama3_rope_scaling is not None:
        factors = llama3_rope_freq_factors(head_dim, s.rope_theta, *s.llama3_rope_scaling)
        tensors.append(_TensorSpec("rope_freqs.weight", "F32", (head_dim // 2,), lambda: factors))
    for i in range(s.n_layer):
        b = f"blk.{i}."
        tensors.append(_TensorSpec(b + "attn_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
        for proj, rows in (("attn_q", s.hidden), ("attn_k", kv_dim), ("attn_v", kv_dim)):
            tensors.append(_TensorSpec(b + proj + ".weight", dtype, (rows, s.hidden),
                                       weight(rows, s.hidden, 1.0 / math.sqrt(s.hidden))))
            if a == "qwen2":
                tensors.append(_TensorSpec(b + proj + ".bias", "F32", (rows,), vector(rows, 0.0, 0.3)))
        tensors.append(_TensorSpec(b + "attn_output.weight", dtype, (s.hidden, s.hidden),
                                   weight(s.hidden, s.hidden, 1.0 / math.sqrt(s.hidden))))
        tensors.append(_TensorSpec(b + "ffn_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
        tensors.append(_TensorSpec(b + "ffn_gate.weight", dtype, (s.ffn, s.hidden),
                                   weight(s.ffn, s.hidden, 1.0 / math.sqrt(s.hidden))))
        tensors.append(_TensorSpec(b + "ffn_up.weight", dtype, (s.ffn, s.hidden),
                                   weight(s.ffn, s.hidden, 1.0 / math.sqrt(s.hidden))))
        tensors.append(_TensorSpec(b + "ffn_down.weight", dtype, (s.hidden, s.ffn),
                                   weight(s.hidden, s.ffn, 1.0 / math.sqrt(s.ffn))))
    tensors.append(_TensorSpec("output_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
    if not s.tied:
        tensors.append(_TensorSpec("output.weight", dtype, (s.n_vocab, s.hidden),
                                   weight(s.n_vocab, s.hidden, 4.0 / math.sqrt(s.hidden))))
    return _write_gguf(path, a, metadata, tensors)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rocmforge.testing",
                                     description="Write test and benchmark GGUF models.")
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-model", help="write a random-weight model")
    mk.add_argument("--shape", required=True, choices=sorted(SHAPES) + ["qwen2-test"],
                    help="a real model's shape, or qwen2-test (the deterministic test model)")
    mk.add_argument("--dtype", choices=sorted(_BENCH_DTYPES),
                    help="type of the 2-D weights (not for qwen2-test, whose types are fixed)")
    mk.add_argument("--vocab", help="llama.cpp ggml-vocab-*.gguf file (default: fetched and cached)")
    mk.add_argument("--seed", type=int, default=0, help="random seed (not for qwen2-test)")
    mk.add_argument("out", help="output .gguf path")
    fv = sub.add_parser("fetch-vocab", help="fetch llama.cpp's vocabulary files into the cache")
    fv.add_argument("name", nargs="?", default="qwen2", choices=sorted(VOCAB_FILES))
    args = parser.parse_args(argv)

    if args.command == "fetch-vocab":
        print(llamacpp_vocab_path(args.name))
        return 0
    if args.shape == "qwen2-test":
        if args.dtype is not None:
            parser.error("qwen2-test has fixed weight types: leave out --dtype")
        out = make_qwen2_test_model(args.out, vocab_path=args.vocab)
    else:
        if args.dtype is None:
            parser.error(f"--dtype is required for --shape {args.shape}")
        out = make_model(args.shape, args.dtype, args.out, vocab_path=args.vocab, seed=args.seed)
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
