"""rocmforge.Model on tiny random-weight files of every family written here (through
tools/gguf_builder.py, over the `gguf` package's writer), checked against a NumPy float64 forward
pass written here (the independent reference); generation semantics (KV cache vs recompute,
sampling, stop strings, bad input); and the real SmolLM2 file answering "Paris"."""

from __future__ import annotations

import os
import subprocess
import sys
import _thread
import signal
import threading
import time

import gguf
import numpy as np
import pytest

import rocmforge as rf
from gguf_builder import Tensor, write_gguf
from models import bench_weight_type, longrope_attn_factor
from quant_blocks import q4_k_blocks, q6_k_blocks

VT = gguf.GGUFValueType

# ---------------------------------------------------------------------------------------------
# A tiny model: config, random weights, GGUF writer
# ---------------------------------------------------------------------------------------------


def byte_tokens():
    """GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocab."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n", "Ġ c"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vocabulary():
    tokens = byte_tokens() + ["".join(m.split()) for m in MERGES] + SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    return tokens, types


class Tiny:
    """Hyperparameters and float32 weights (NumPy order [rows, cols]) of a tiny decoder."""

    def __init__(self, rng, arch="llama", dim=36, heads=6, kv_heads=3, ffn=50, layers=2,
                 rope_freqs=False, tied=True, theta=10000.0, eps=1e-5, n_ctx=128, head_dim=None,
                 window=None, rope_original=None, qkv_apart=False):
        self.rng = rng  # (also draws the blocks of the types the gguf package cannot quantize)
        self.arch, self.dim, self.heads, self.kv_heads = arch, dim, heads, kv_heads
        # head_dim: written as attention.key_length (q may be wider or narrower than dim)
        self.key_length = head_dim
        self.head_dim = head_dim or dim // heads
        self.ffn, self.layers, self.theta, self.eps, self.n_ctx = ffn, layers, theta, eps, n_ctx
        # gemma3: attention.sliding_window (phi3 files may have one too, which llama.cpp ignores)
        self.window = window
        # phi3: LongRoPE factor sets made for `rope_original` positions (default n_ctx / 2: the
        # model's context of n_ctx takes the long set) and the converter's attention factor;
        # q/k/v in one attn_qkv matrix unless `qkv_apart`, gate/up in one ffn_up
        self.phi3 = arch == "phi3"
        self.rope_original = (rope_original or n_ctx // 2) if self.phi3 else None
        self.qkv_apart = qkv_apart
        self.tokens, self.types = vocabulary()
        self.vocab = len(self.tokens)
        self.eos = self.tokens.index("<|im_end|>")
        # the tokens generation ends on: eos and <|endoftext|> (llama.cpp's end-of-generation set)
        self.eog = {self.eos, self.tokens.index("<|endoftext|>")}
        q, kv = heads * self.head_dim, kv_heads * self.head_dim

        def w(*shape, scale=None):
            scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
            return (rng.standard_normal(shape) * scale).astype(np.float32)

        def norm(n):
            return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)

        self.w = {"token_embd.weight": w(self.vocab, dim, scale=1.0 if arch != "gemma3" else 0.1),
                  "output_norm.weight": norm(dim)}
        if not tied:
            self.w["output.weight"] = w(self.vocab, dim)
        if rope_freqs:
            self.w["rope_freqs.weight"] = rng.uniform(1.0, 8.0, self.head_dim // 2).astype(np.float32)
        if self.phi3:
            self.w["rope_factors_long.weight"] = rng.uniform(1.5, 6.0, self.head_dim // 2).astype(np.float32)
            self.w["rope_factors_short.weight"] = rng.uniform(0.9, 1.3, self.head_dim // 2).astype(np.float32)
        for i in range(layers):
            p = f"blk.{i}."
            self.w[p + "attn_norm.weight"] = norm(dim)
            self.w[p + "ffn_norm.weight"] = norm(dim)
            self.w[p + "attn_q.weight"] = w(q, dim)
            self.w[p + "attn_k.weight"] = w(kv, dim)
            self.w[p + "attn_v.weight"] = w(kv, dim)
            self.w[p + "attn_output.weight"] = w(dim, q)
            self.w[p + "ffn_gate.weight"] = w(ffn, dim)
            self.w[p + "ffn_up.weight"] = w(ffn, dim)
            self.w[p + "ffn_down.weight"] = w(dim, ffn)
            if arch == "qwen2":
                self.w[p + "attn_q.bias"] = w(q, scale=0.5)
                self.w[p + "attn_k.bias"] = w(kv, scale=0.5)
                self.w[p + "attn_v.bias"] = w(kv, scale=0.5)
            if arch in ("qwen3", "gemma3"):
                self.w[p + "attn_q_norm.weight"] = norm(self.head_dim)
                self.w[p + "attn_k_norm.weight"] = norm(self.head_dim)
            if arch == "gemma3":
                self.w[p + "post_attention_norm.weight"] = norm(dim)
                self.w[p + "post_ffw_norm.weight"] = norm(dim)

    def metadata(self, chat_template=CHAT_TEMPLATE) -> dict:
        """The file's metadata as `write_gguf` takes it: key -> (value, type[, item type])."""
        a = self.arch
        return {
            "general.architecture": (a, VT.STRING),
            f"{a}.block_count": (self.layers, VT.UINT32),
            f"{a}.context_length": (self.n_ctx, VT.UINT32),
            f"{a}.embedding_length": (self.dim, VT.UINT32),
            f"{a}.feed_forward_length": (self.ffn, VT.UINT32),
            f"{a}.attention.head_count": (self.heads, VT.UINT32),
            f"{a}.attention.head_count_kv": (self.kv_heads, VT.UINT32),
            f"{a}.attention.layer_norm_rms_epsilon": (self.eps, VT.FLOAT32),
            f"{a}.rope.freq_base": (self.theta, VT.FLOAT32),
            "tokenizer.ggml.model": ("gpt2", VT.STRING),
            "tokenizer.ggml.pre": ("qwen2" if a == "qwen2" else "gpt-2", VT.STRING),
            "tokenizer.ggml.tokens": (self.tokens, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.token_type": (self.types, VT.ARRAY, VT.INT32),
            "tokenizer.ggml.merges": (MERGES, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.bos_token_id": (self.tokens.index("<|endoftext|>"), VT.UINT32),
            "tokenizer.ggml.eos_token_id": (self.eos, VT.UINT32),
            "tokenizer.ggml.add_bos_token": (False, VT.BOOL),
            "tokenizer.chat_template": (chat_template, VT.STRING),
            **({f"{a}.attention.key_length": (self.key_length, VT.UINT32),
                f"{a}.attention.value_length": (self.key_length, VT.UINT32)} if self.key_length else {}),
            **({f"{a}.attention.sliding_window": (self.window, VT.UINT32)} if self.window else {}),
            **({f"{a}.rope.scaling.original_context_length": (self.rope_original, VT.UINT32),
                f"{a}.rope.scaling.attn_factor": (self.attn_factor(), VT.FLOAT32)} if self.phi3 else {}),
        }

    def attn_factor(self):
        """phi3: the magnitude of the rotated q and k (rope.scaling.attn_factor), 1 elsewhere."""
        return longrope_attn_factor(self.n_ctx, self.rope_original) if self.phi3 else 1.0

    def fused(self, weights):
        """phi3's layout of `weights`: q/k/v stacked into attn_qkv (unless qkv_apart) and gate/up
        into ffn_up, as {fused name: (the parts' names, stacked rows)}."""
        out = {}
        for i in range(self.layers):
            p = f"blk.{i}."
            groups = [("ffn_up", ("ffn_gate", "ffn_up"))]
            if not self.qkv_apart:
                groups.append(("attn_qkv", ("attn_q", "attn_k", "attn_v")))
            for name, parts in groups:
                names = [p + part + ".weight" for part in parts]
                out[p + name + ".weight"] = (names, np.concatenate([weights.pop(n) for n in names]))
        return out

    def write(self, path, dtype="F32", skip_keys=(), skip_tensors=(), set_meta=None, set_tensors=None,
              chat_template=CHAT_TEMPLATE):
        """Write a GGUF file; matrices in `dtype` (F32, a quant type, or Q4_K_M: each matrix the
        type llama.cpp's Q4_K_M mix gives it, tools/models.py bench_weight_type), vectors in F32. Metadata
        keys may be left out (`skip_keys`) or set (`set_meta`: key -> (value, type[, item type])),
        tensors left out (`skip_tensors`) or replaced (`set_tensors`: name -> float32 array), so
        that a file differs from a loadable one in just what a test is about.
        Returns the float32 weights the file holds (quantized matrices dequantized)."""
        meta = self.metadata(chat_template)
        meta.update(set_meta or {})
        for k in skip_keys:
            del meta[k]
        weights = dict(self.w)
        weights.update(set_tensors or {})
        fused = self.fused(weights) if self.phi3 else {}
        weights.update({name: rows for name, (_, rows) in fused.items()})
        tensors, stored = [], {}
        tied = "output.weight" not in weights
        for name, t in weights.items():
            if name in skip_tensors:
                continue
            if t.ndim == 2 and dtype != "F32":
                ty = dtype if dtype != "Q4_K_M" else mix_type(name, self.layers, t.shape[1], tied)
                qtype = gguf.GGMLQuantizationType[ty]
                raw = random_blocks(self.rng, t, ty) if ty in UNQUANTIZABLE else gguf.quants.quantize(t, qtype)
                tensors.append(Tensor.of(name, raw, ty))
                stored[name] = gguf.quants.dequantize(raw, qtype).reshape(t.shape)
            else:
                t = np.asarray(t, dtype=np.float32)
                tensors.append(Tensor.of(name, t))
                stored[name] = t
        # the reference reads the parts: rows of the fused matrix as stored
        for name, (parts, _) in fused.items():
            if name in stored:
                rows = np.split(stored.pop(name), np.cumsum([self.w[n].shape[0] for n in parts])[:-1])
                stored.update(zip(parts, rows))
        write_gguf(path, None, meta, tensors)  # the architecture key is one of `meta`'s
        return stored


# Types the `gguf` package can dequantize but not quantize: `Tiny.write` stores random blocks.
UNQUANTIZABLE = ("IQ4_NL", "IQ4_XS", "Q4_K", "Q6_K")


def mix_type(name, n_layer, cols, tied):
    """The type of matrix `name` ("blk.3.attn_v.weight", "output.weight") in a Q4_K_M file."""
    parts = name.split(".")
    layer, short = (int(parts[1]), parts[2]) if parts[0] == "blk" else (None, parts[0])
    return bench_weight_type("Q4_K_M", short, layer, n_layer, cols, tied)


def random_blocks(rng, t, dtype):
    """Blocks of `dtype` for the matrix `t`: random codes (and sub-block scales), and block
    scales d that give the values `t`'s spread, so that the model's activations keep their size.
    They hold other values than `t`: the reference takes the stored ones."""
    if dtype in ("Q4_K", "Q6_K"):  # d, dmin and the 6-bit scales drawn as tools/quant_blocks.py does
        make = q4_k_blocks if dtype == "Q4_K" else q6_k_blocks
        return make(rng, t.size // 256, float(t.std())).reshape(t.shape[0], -1)
    qtype = gguf.GGMLQuantizationType[dtype]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(t.size // block, type_size), dtype=np.uint8)
    raw[:, 0:2] = np.full((len(raw), 1), 1.0, np.float16).view(np.uint8)  # d = 1 (ggml: first)
    unit = gguf.quants.dequantize(raw, qtype)
    d = rng.uniform(0.5, 1.5, (len(raw), 1)) * t.std() / unit.std()
    raw[:, 0:2] = d.astype(np.float16).view(np.uint8)
    return raw.reshape(t.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# The NumPy float64 reference forward
# ---------------------------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, theta, neox, freq_factors=None):
    """x [T, H, D]: GGUF llama rotates pairs (2i, 2i+1), neox (qwen2) pairs (i, i + D/2)."""
    T, H, D = x.shape
    i = np.arange(D // 2)
    inv = theta ** (-2.0 * i / D)
    if freq_factors is not None:
        inv = inv / freq_factors
    ang = pos[:, None] * inv[None, :]                         # [T, D/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    a_idx, b_idx = (i, i + D // 2) if neox else (2 * i, 2 * i + 1)
    a, b = x[..., a_idx], x[..., b_idx]
    out[..., a_idx] = a * cos - b * sin
    out[..., b_idx] = a * sin + b * cos
    return out


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def q8_activations(x):
    """`x` rounded as llama.cpp's CPU backend rounds a matmul's input for 8-bit-block weights:
    to Q8_0 blocks of 32 along the last axis (through the `gguf` package's quantizer)."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    Q8 = gguf.GGMLQuantizationType.Q8_0
    return gguf.quants.dequantize(gguf.quants.quantize(x32, Q8), Q8).reshape(x.shape).astype(np.float64)


def q8k_activations(x):
    """`x` rounded as rocmforge's CPU backend rounds a matmul's input for weights of 256-value
    blocks (K-quants, IQ4_XS: llama.cpp's Q8_K, which the `gguf` package cannot quantize): blocks
    of 256 along the last axis, q = x * (127 / max|x|) in float32 to the nearest integer (ties to
    even), times d = max|x| / 127 (float32, unlike Q8_0's f16)."""
    x32 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)
    amax = np.abs(x32).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(x32 * inv)
    d = (amax / np.float32(127)).astype(np.float32)
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


def cpu_activations(dtype):
    """How the CPU rounds the matmul inputs for weights of `dtype` (None: float32 kept)."""
    if dtype in ("F32", "F16", "BF16"):
        return None
    if dtype == "Q4_K_M":  # Q4_K and Q6_K where every row holds whole 256-value blocks
        return q8k_activations
    return q8k_activations if gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[dtype]][0] == 256 else q8_activations


def reference_logits(m: Tiny, W, ids, act=None):
    """Logits [T, vocab] of `ids` at positions 0..T-1, in float64, as llama.cpp's graphs of
    each family compute them (gemma3: llm_build_gemma3_iswa; qwen3: llm_build_qwen3; phi3:
    llm_build_phi3, whose rope takes the long factor set when the context (n_ctx, the file's
    context_length here) exceeds rope.scaling.original_context_length, else the short one, and
    multiplies the rotated q and k by rope.scaling.attn_factor; its sliding_window is ignored).
    `act`, if given, rounds the input of every weight matmul (`cpu_activations`)."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    act = act or (lambda a: a)
    T, H, KV, D = len(ids), m.heads, m.kv_heads, m.head_dim
    pos = np.arange(T, dtype=np.float64)
    freqs = W.get("rope_freqs.weight")
    if m.phi3:
        freqs = W["rope_factors_long.weight" if m.n_ctx > m.rope_original else "rope_factors_short.weight"]
    neox = m.arch in ("qwen2", "qwen3", "gemma3", "phi3")
    gemma = m.arch == "gemma3"
    x = W["token_embd.weight"][ids]
    if gemma:
        x = x * np.sqrt(m.dim)
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(m.layers):
        p = f"blk.{l}."
        # gemma3: of every six layers the last is global, the others local (a sliding window
        # over the last `window` keys, rope base 10,000 and no frequency factors)
        local = gemma and m.window is not None and l % 6 < 5
        mask = causal.copy()
        if local:
            i, j = np.arange(T)[:, None], np.arange(T)[None, :]
            mask[i - j >= m.window] = -np.inf
        theta, ff = (10000.0, None) if local else (m.theta, freqs)
        h = act(rms_norm(x, W[p + "attn_norm.weight"], m.eps))
        q, k, v = (h @ W[p + f"attn_{n}.weight"].T + W.get(p + f"attn_{n}.bias", 0.0) for n in "qkv")
        q, k, v = q.reshape(T, H, D), k.reshape(T, KV, D), v.reshape(T, KV, D)
        if p + "attn_q_norm.weight" in W:
            q = rms_norm(q, W[p + "attn_q_norm.weight"], m.eps)
            k = rms_norm(k, W[p + "attn_k_norm.weight"], m.eps)
        q = rope(q, pos, theta, neox, ff) * m.attn_factor()
        k = rope(k, pos, theta, neox, ff) * m.attn_factor()
        att = np.zeros((T, H, D))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh] @ k[:, kh].T / np.sqrt(D) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kh]
        a = act(att.reshape(T, H * D)) @ W[p + "attn_output.weight"].T
        if gemma:
            a = rms_norm(a, W[p + "post_attention_norm.weight"], m.eps)
        x = x + a
        h = act(rms_norm(x, W[p + "ffn_norm.weight"], m.eps))
        g, u = h @ W[p + "ffn_gate.weight"].T, h @ W[p + "ffn_up.weight"].T
        f = act((gelu_tanh(g) if gemma else g / (1 + np.exp(-g))) * u) @ W[p + "ffn_down.weight"].T
        if gemma:
            f = rms_norm(f, W[p + "post_ffw_norm.weight"], m.eps)
        x = x + f
    head = W.get("output.weight", W["token_embd.weight"])
    return act(rms_norm(x, W["output_norm.weight"], m.eps)) @ head.T


def rel_err(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ---------------------------------------------------------------------------------------------
# Forward vs the reference
# ---------------------------------------------------------------------------------------------

# (arch, dtype, model kwargs, tolerance). Q8_0 needs widths that are multiples of 32. For
# quantized weights the CPU rounds each matmul's input to 8-bit blocks (as llama.cpp's CPU
# backend does) and its reference does the same, so the two mostly agree to float rounding; the
# bound is for the runs where a value near a rounding boundary lands on the other side (one step
# of one block, carried through the later layers) and for the GPU's own arithmetic.
CASES = [
    ("llama", "F32", dict(), 2e-4),
    ("llama", "F32", dict(rope_freqs=True, tied=False, heads=4, kv_heads=1, dim=40, ffn=23), 2e-4),
    ("qwen2", "F32", dict(heads=3, kv_heads=1, dim=42, ffn=41, layers=3), 2e-4),
    ("llama", "Q8_0", dict(dim=64, heads=4, kv_heads=2, ffn=96), 3e-2),
    ("qwen2", "Q8_0", dict(dim=64, heads=8, kv_heads=2, ffn=160, tied=False), 3e-2),
    # q wider than the residual (head_dim from attention.key_length), per-head q/k norms
    ("qwen3", "F32", dict(heads=4, kv_heads=2, dim=24, head_dim=10, ffn=30, layers=2), 2e-4),
    ("qwen3", "Q8_0", dict(heads=4, kv_heads=1, dim=64, head_dim=32, ffn=96, tied=False), 3e-2),
    # seven layers: local (window 5) 0-4, global 5, local 6; prompts up to 39 tokens pass the window
    ("gemma3", "F32", dict(heads=2, kv_heads=1, dim=32, head_dim=24, ffn=40, layers=7, window=5,
                           theta=1e6), 2e-4),
    # seven layers of 8-bit activations (and the post-norms rescaling each block's rounding)
    ("gemma3", "Q8_0", dict(heads=4, kv_heads=2, dim=64, head_dim=32, ffn=96, layers=7, window=7,
                            rope_freqs=False, tied=True, theta=1e6), 5e-2),
    # fused q/k/v and gate/up, the long LongRoPE factors (context 128 > 64) and the attention
    # factor; a sliding_window of 5 that phi3 ignores (prompts up to 39 tokens pass it)
    ("phi3", "F32", dict(heads=3, kv_heads=1, dim=36, ffn=40, layers=2, window=5), 2e-4),
    # the short factors (the context is the original one), q/k/v apart, an untied head
    ("phi3", "F32", dict(heads=4, kv_heads=4, dim=32, ffn=24, rope_original=128, qkv_apart=True,
                         tied=False), 2e-4),
    ("phi3", "Q8_0", dict(heads=2, kv_heads=1, dim=64, ffn=96, layers=3, tied=False), 3e-2),
    # random IQ blocks (the gguf package cannot quantize them); IQ4_XS takes rows of 256 values
    # (llama.cpp gives other rows other types) and 8-bit activations in blocks of 256 on the CPU
    # (q8k_activations). On the CPU over seeds 0..199 (IQ4_NL) and 0..999 (IQ4_XS) the median
    # error was 1e-7 and the largest 5.8e-3 (IQ4_NL) and 2.0e-2 (IQ4_XS: a flip moves one step
    # of a block of 256, whose step is coarser than a block of 32's); without the rounding in the
    # reference, the median is 8e-3 and 2e-2.
    ("llama", "IQ4_NL", dict(dim=64, heads=4, kv_heads=2, ffn=96), 3e-2),
    ("qwen2", "IQ4_XS", dict(dim=256, heads=4, kv_heads=2, ffn=256, tied=False), 4e-2),
    # llama.cpp's Q4_K_M mix (Q4_K; Q6_K for the head and for attn_v / ffn_down of layers 2 and
    # 3) and Q6_K, random blocks. On the CPU over seeds 0..119 the median error was 2e-7 and the
    # largest 2.6e-2 (Q4_K_M) and 1.5e-2 (Q6_K); against a reference without the 8-bit rounding
    # (the GPU's), 1.8e-2 to 3.6e-2.
    ("llama", "Q4_K_M", dict(dim=256, heads=4, kv_heads=2, ffn=512, layers=4, tied=False), 5e-2),
    ("qwen2", "Q6_K", dict(dim=256, heads=4, kv_heads=2, ffn=256, tied=False), 4e-2),
]


@pytest.mark.parametrize("arch,dtype,kw,tol", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_logits_match_numpy_reference(tmp_path, rng, device, arch, dtype, kw, tol):
    m = Tiny(rng, arch=arch, **kw)
    W = m.write(tmp_path / "m.gguf", dtype)
    T = int(rng.integers(1, 40))
    ids = rng.integers(0, m.vocab, T)
    with rf.Model(str(tmp_path / "m.gguf"), device=device, kv_dtype="f32") as model:
        assert model.config["vocab_size"] == m.vocab
        got = model.logits(ids.tolist())
    want = reference_logits(m, W, ids, act=cpu_activations(dtype) if device == "cpu" else None)
    assert got.shape == (T, m.vocab) and got.dtype == np.float32
    assert rel_err(got, want) < tol, f"T={T}: relative error {rel_err(got, want)}"


def test_prefill_longer_than_one_batch(tmp_path, rng, device):
    """Prompts longer than the forward's chunk of tokens (512) go through several chunks."""
    m = Tiny(rng, n_ctx=1200, layers=1)
    W = m.write(tmp_path / "m.gguf")
    ids = rng.integers(0, m.vocab, 1100)
    with rf.Model(str(tmp_path / "m.gguf"), device=device, kv_dtype="f32") as model:
        got = model.logits(ids.tolist())
    assert rel_err(got, reference_logits(m, W, ids)) < 2e-4


@pytest.mark.parametrize("dtype,kv_dtype", [("F32", "f32"), ("F32", "f16"), ("Q8_0", "f32")])
def test_kv_cache_greedy_equals_recompute(tmp_path, rng, device, dtype, kv_dtype):
    """Greedy generation with the KV cache picks, at every step, the argmax of logits
    recomputed from scratch over the whole sequence (and, for F32 weights with a clear winner,
    the argmax of the NumPy reference)."""
    arch = str(rng.choice(["llama", "qwen2", "qwen3", "gemma3", "phi3"]))
    # gemma3: seven layers, six of them over a window of 6 keys, which the 24 steps pass
    kw = dict(layers=7, window=6, head_dim=32) if arch == "gemma3" else {}
    m = Tiny(rng, arch=arch, dim=64, heads=4, kv_heads=2, ffn=96, **kw)
    W = m.write(tmp_path / "m.gguf", dtype)
    prompt = rng.integers(0, m.vocab, int(rng.integers(1, 12))).tolist()
    with rf.Model(str(tmp_path / "m.gguf"), device=device, kv_dtype=kv_dtype) as model:
        assert model.config["kv_dtype"] == kv_dtype
        out = model.generate_tokens(prompt, max_tokens=24, temperature=0)
        assert len(out) == 24 or out[-1] in m.eog
        seq = list(prompt)
        for tok in out:
            full = model.logits(seq)[-1]
            if device == "gpu" and dtype != "F32" and len(seq) > 8:
                # The recompute is a prefill, whose quantized matmuls run on tensor cores (f16
                # operands, ~1e-3 relative) while decode steps are float32: a near-tie may flip.
                gap = full.max() - full[tok]
                assert gap <= 2e-3 * np.abs(full).max(), f"step {len(seq) - len(prompt)}: {gap}"
            else:
                assert tok == int(np.argmax(full)), f"step {len(seq) - len(prompt)}"
            if dtype == "F32" and kv_dtype == "f32":
                want = reference_logits(m, W, np.array(seq))[-1]
                top2 = np.sort(want)[-2:]
                if top2[1] - top2[0] > 1e-2:  # a clear winner: the reference agrees
                    assert tok == int(np.argmax(want))
            seq.append(tok)


def test_ctrl_c_interrupts_and_model_stays_usable(tmp_path, rng):
    """Ctrl-C during a long call raises KeyboardInterrupt between chunks of tokens; the model
    keeps working afterwards."""
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=128, layers=4, n_ctx=4096)
    W = m.write(tmp_path / "m.gguf")
    ids = rng.integers(0, m.vocab, 4000).tolist()  # about 0.7 s of prefill on two cores
    # Python's Ctrl-C handler, even where this process inherited SIGINT ignored.
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    with rf.Model(str(tmp_path / "m.gguf"), device="cpu") as model:
        t0 = time.time()
        model.logits(ids)
        t_full = time.time() - t0
        timer = threading.Timer(0.15 * t_full, _thread.interrupt_main)
        timer.start()
        try:
            t0 = time.time()
            with pytest.raises(KeyboardInterrupt):
                model.logits(ids)
            # raised between chunks of positions (8 of them), not once the call has returned
            assert time.time() - t0 < 0.6 * t_full, (time.time() - t0, t_full)
        finally:
            timer.join()
            signal.signal(signal.SIGINT, old_handler)
        short = ids[:30]
        assert rel_err(model.logits(short), reference_logits(m, W, np.array(short))) < 2e-4
        assert isinstance(model.generate("the", max_tokens=5, temperature=0), str)


# ---------------------------------------------------------------------------------------------
# Generation semantics
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path, rng, device):
    # An untied, damped LM head: logits of about unit scale, so that sampling has real choices.
    m = Tiny(rng, n_ctx=64, tied=False)
    m.w["output.weight"] *= 0.5
    m.write(tmp_path / "tiny.gguf")
    model = rf.Model(str(tmp_path / "tiny.gguf"), device=device)
    yield m, model
    model.close()


def test_seed_reproducible_and_top_k_1_is_greedy(tiny):
    m, model = tiny
    kw = dict(max_tokens=30, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    a = model.generate("the cat", seed=123, **kw)
    b = model.generate("the cat", seed=123, **kw)
    c = model.generate("the cat", seed=124, **kw)
    assert a == b
    assert a != c  # 30 draws at temperature 1.5 from flat distributions: equal has ~0 probability
    greedy = model.generate("the cat", max_tokens=20, temperature=0)
    assert model.generate("the cat", max_tokens=20, temperature=1.0, top_k=1, seed=5) == greedy


@pytest.mark.parametrize("temperature", [0.0, 1.2])
def test_generate_logprobs_are_the_log_softmax_of_the_logits(tiny, temperature):
    """logprobs=n: each generated token with its log-probability and the n best, against the
    log-softmax (NumPy) of the logits `Model.logits` gives for the same sequence; the same
    text and tokens as without logprobs."""
    m, model = tiny
    n = 5
    kw = dict(max_tokens=12, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    r = model.generate("the cat", logprobs=n, **kw)
    assert r["text"] == model.generate("the cat", **kw)
    assert r["finish_reason"] == model.stats["finish_reason"]
    prompt = model.tokenize("the cat")
    ids = [t["id"] for t in r["tokens"]]
    assert ids == model.generate_tokens(prompt, **kw)
    logits = model.logits(prompt + ids).astype(np.float64)
    for i, t in enumerate(r["tokens"]):
        row = logits[len(prompt) - 1 + i]
        logp = row - row.max() - np.log(np.exp(row - row.max()).sum())
        assert t["logprob"] == pytest.approx(logp[t["id"]], abs=2e-4)
        assert t["text"] == model.detokenize([t["id"]])
        order = np.argsort(-logp, kind="stable")[:n]
        assert [u["id"] for u in t["top"]] == order.tolist()
        np.testing.assert_allclose([u["logprob"] for u in t["top"]], logp[order], atol=2e-4)
        if temperature == 0:
            assert t["id"] == t["top"][0]["id"]
    assert all(t["top"] == [] for t in model.generate("the cat", logprobs=0, **kw)["tokens"])
    for bad in (-1, 21):
        with pytest.raises(ValueError, match="logprobs"):
            model.generate("the cat", logprobs=bad)
    with pytest.raises(ValueError, match="stream"):
        model.generate("the cat", logprobs=2, stream=True)


def test_model_seed_repeats_calls(tmp_path, rng):
    m = Tiny(rng)
    m.write(tmp_path / "m.gguf")
    outs = []
    for _ in range(2):
        with rf.Model(str(tmp_path / "m.gguf"), device="cpu", seed=99) as model:
            outs.append([model.generate("in", max_tokens=10, temperature=2.0, top_k=0) for _ in range(2)])
    assert outs[0] == outs[1]


def test_stream_equals_text_and_stats(tiny):
    m, model = tiny
    # Random weights: a prompt's greedy text may end (EOS) at the prefill's own token, with no
    # decode step to time; the first of a few prompts that decodes checks the decode rate.
    for prompt in ["at the", "he", "the cat", "in a"]:
        text = model.generate(prompt, max_tokens=25, temperature=0)
        stats = model.stats
        pieces = list(model.generate(prompt, max_tokens=25, temperature=0, stream=True))
        assert "".join(pieces) == text
        assert model.stats["generated_tokens"] == stats["generated_tokens"]
        assert stats["prompt_tokens"] == len(model.tokenize(prompt))
        assert stats["finish_reason"] in ("eos", "length")
        if stats["finish_reason"] == "length":
            assert stats["generated_tokens"] == 25
        assert stats["prefill_tokens_per_s"] > 0
        if stats["generated_tokens"] >= 2:
            assert stats["decode_tokens_per_s"] > 0
            break
        assert stats["decode_tokens_per_s"] == 0
    else:
        pytest.skip("every prompt's greedy text ended at its first token")


def test_stop_strings(tiny):
    m, model = tiny
    # The first prompt whose greedy text (random weights) is long enough to cut.
    for prompt in ["he", "at the", "in", "a b", "the"]:
        text = model.generate(prompt, max_tokens=40, temperature=0)
        if len(text) >= 6:
            break
    else:
        pytest.skip(f"greedy text too short to cut: {text!r}")
    stop = text[3:5]
    cut = model.generate(prompt, max_tokens=40, temperature=0, stop=["\x00never", stop])
    assert cut == text[: text.index(stop)]
    assert model.stats["finish_reason"] == "stop"
    streamed = "".join(model.generate(prompt, max_tokens=40, temperature=0, stop=stop, stream=True))
    assert streamed == cut


def test_context_end_and_prompt_too_long(tmp_path, rng, device):
    m = Tiny(rng, n_ctx=32)
    m.write(tmp_path / "m.gguf")
    with rf.Model(str(tmp_path / "m.gguf"), device=device, n_ctx=20) as model:
        prompt = rng.integers(0, 256, 15).tolist()
        out = model.generate_tokens(prompt, max_tokens=100, temperature=0)
        if len(out) < 5:
            assert out[-1] in m.eog
        else:
            assert len(out) == 5 and model.stats["finish_reason"] == "length"
        with pytest.raises(ValueError, match=r"21.*20|20.*21"):
            model.generate_tokens(rng.integers(0, 256, 21).tolist())
        with pytest.raises(ValueError, match=r"21.*20|20.*21"):
            model.logits(rng.integers(0, 256, 21).tolist())


@pytest.mark.parametrize("kw", [
    dict(max_tokens=-1), dict(temperature=-0.5), dict(temperature=float("nan")), dict(top_p=0.0),
    dict(top_p=1.01), dict(top_k=-1), dict(min_p=2.0), dict(repeat_penalty=0.0),
])
def test_bad_sampling_parameters(tiny, kw):
    m, model = tiny
    with pytest.raises(ValueError):
        model.generate("x", **kw)
    with pytest.raises(ValueError):
        model.generate("x", stream=True, **kw)
    assert isinstance(model.generate("x", max_tokens=2), str)  # still usable


def test_bad_token_ids_and_max_tokens_zero(tiny):
    m, model = tiny
    for bad in ([m.vocab], [-1], [0, 10**12]):
        with pytest.raises(ValueError, match="vocabulary"):
            model.logits(bad)
        with pytest.raises(ValueError, match="vocabulary"):
            model.detokenize(bad)
        with pytest.raises(ValueError, match="vocabulary"):
            model.generate_tokens(bad)
    with pytest.raises(ValueError):
        model.logits([])
    assert model.generate("x", max_tokens=0) == ""
    assert model.stats["finish_reason"] == "length" and model.stats["generated_tokens"] == 0


def test_nan_logits_are_an_error(tmp_path, rng, device):
    m = Tiny(rng)
    m.w["output_norm.weight"][3] = np.nan
    m.write(tmp_path / "nan.gguf")
    with rf.Model(str(tmp_path / "nan.gguf"), device=device) as model:
        for kw in (dict(temperature=0), dict(temperature=0.7), dict(temperature=0, repeat_penalty=1.1)):
            with pytest.raises(rf.RocmForgeError, match="NaN"):
                model.generate("abc", max_tokens=3, **kw)


def test_close_and_context_manager(tiny):
    m, model = tiny
    stream = model.generate("the", max_tokens=20, stream=True)
    model.close()
    with pytest.raises(rf.RocmForgeError, match="closed"):
        next(stream)
    model.close()
    assert model.closed
    for call in (lambda: model.generate("x"), lambda: model.logits([1]), lambda: model.tokenize("x"),
                 lambda: model.stats):
        with pytest.raises(rf.RocmForgeError, match="closed"):
            call()


def test_stream_survives_other_calls_and_threads(tiny):
    """Interleaved streams and calls from several threads: each gets the text it would alone."""
    m, model = tiny
    want = {p: model.generate(p, max_tokens=15, temperature=0) for p in ("a", "the", "in on")}
    s1 = model.generate("a", max_tokens=15, temperature=0, stream=True)
    s2 = model.generate("the", max_tokens=15, temperature=0, stream=True)
    got1, got2 = [], []
    live = [(s1, got1), (s2, got2)]
    while live:  # alternate one piece each until both end
        for pair in list(live):
            piece = next(pair[0], None)
            if piece is None:
                live.remove(pair)
            else:
                pair[1].append(piece)
    assert "".join(got1) == want["a"] and "".join(got2) == want["the"]

    results, errors = {}, []

    def work(p, i):
        try:
            results[(p, i)] = model.generate(p, max_tokens=15, temperature=0)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p, i)) for i in range(3) for p in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[(p, i)] == want[p] for (p, i) in results)


def test_chat_renders_template(tiny):
    jinja2 = pytest.importorskip("jinja2")
    m, model = tiny
    messages = [{"role": "system", "content": " be brief "}, {"role": "user", "content": "the cat"}]
    prompt = jinja2.Template(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    want = model.generate(prompt, max_tokens=12, temperature=0)
    assert model.chat(messages, max_tokens=12, temperature=0) == want
    assert model.stats["prompt_tokens"] == len(model.tokenize(prompt))
    with pytest.raises(TypeError):
        model.chat("not a list")


# ---------------------------------------------------------------------------------------------
# Metadata checks
# ---------------------------------------------------------------------------------------------


def test_missing_key_tensor_shape_and_arch(tmp_path, rng):
    m = Tiny(rng)
    m.write(tmp_path / "a.gguf", skip_keys=("llama.block_count",))
    with pytest.raises(rf.GGUFError, match="llama.block_count"):
        rf.Model(str(tmp_path / "a.gguf"), device="cpu")
    m.write(tmp_path / "b.gguf", skip_tensors=("blk.1.ffn_up.weight",))
    with pytest.raises(rf.GGUFError, match="blk.1.ffn_up.weight"):
        rf.Model(str(tmp_path / "b.gguf"), device="cpu")
    m.write(tmp_path / "c.gguf", set_meta={"llama.feed_forward_length": (m.ffn + 1, VT.UINT32)})
    with pytest.raises(rf.GGUFError, match="shape"):
        rf.Model(str(tmp_path / "c.gguf"), device="cpu")
    m.write(tmp_path / "d.gguf", set_meta={"llama.attention.head_count_kv": (4, VT.UINT32)})
    with pytest.raises(rf.GGUFError, match="head_count"):
        rf.Model(str(tmp_path / "d.gguf"), device="cpu")
    m.arch = "gptj"
    m.write(tmp_path / "e.gguf")
    with pytest.raises(rf.UnsupportedError, match="gptj.*supported: llama, qwen2, qwen3, gemma3, phi3"):
        rf.Model(str(tmp_path / "e.gguf"), device="cpu")
    with pytest.raises(FileNotFoundError):
        rf.Model(str(tmp_path / "missing.gguf"), device="cpu")
    with pytest.raises(ValueError):
        rf.Model(str(tmp_path / "a.gguf"), device="tpu")


def test_vocab_size_from_embedding_and_config(tmp_path, rng):
    m = Tiny(rng)
    m.write(tmp_path / "m.gguf")  # the writer adds no llama.vocab_size
    assert "llama.vocab_size" not in rf.GGUFFile(str(tmp_path / "m.gguf")).metadata
    with rf.Model(str(tmp_path / "m.gguf"), device="cpu") as model:
        assert model.config["n_ctx"] == m.n_ctx and model.config["kv_dtype"] == "f32"
    with rf.Model(str(tmp_path / "m.gguf"), device="cpu", n_ctx=50) as model:
        c = model.config
        assert (c["vocab_size"], c["n_ctx"], c["heads"], c["kv_heads"]) == (m.vocab, 50, m.heads, m.kv_heads)
        assert c["tied_embeddings"] is True and model.device == "cpu"
        assert model.metadata["general.architecture"] == "llama"


# ---------------------------------------------------------------------------------------------
# The real model
# ---------------------------------------------------------------------------------------------


def test_smollm2_paris(smollm2_path, device):
    with rf.Model(smollm2_path, device=device) as model:
        text = model.generate("The capital of France is", max_tokens=12, temperature=0)
        assert "Paris" in text, text
        assert model.stats["finish_reason"] in ("length", "eos")
        # llama.cpp answers this one with the same sentence (some phrasings derail the 135M model,
        # or sit on near-ties of the two best tokens that 8-bit activation rounding can flip)
        reply = model.chat([{"role": "user", "content": "Name the capital of France."}],
                           max_tokens=30, temperature=0)
        assert "Paris" in reply and model.stats["finish_reason"] == "eos", reply
        if device == "cpu":
            assert reply == "The capital of France is Paris."


def test_cli_generate_paris(smollm2_path):
    env = dict(os.environ, ROCMFORGE_MODEL=smollm2_path)
    r = subprocess.run(
        [sys.executable, "-m", "rocmforge.cli", "generate", "The capital of France is",
         "--temperature", "0", "--max-tokens", "12", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_templates_of_real_vocabularies_render_as_jinja2_does(tmp_path, rng, vocab_dir):
    """The chat templates that llama.cpp's vocabulary files carry (Qwen2, Phi-3, Command-R,
    Gemma, ...) render as Hugging Face renders them (jinja2, trim_blocks, lstrip_blocks)."""
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    templates = {}
    for f in sorted(vocab_dir.glob("ggml-vocab-*.gguf")):
        with rf.GGUFFile(str(f)) as g:
            template = g.metadata.get("tokenizer.chat_template")
        if template is not None:
            templates[f.name] = template
    assert len(templates) >= 3, f"chat templates in {vocab_dir}: {sorted(templates)}"

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": " Hi there "},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 2+2?"}]
    m = Tiny(rng)
    rendered = 0
    for name, template in templates.items():
        path = tmp_path / f"{name}.gguf"
        m.write(path, chat_template=template)
        try:
            want = env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                    bos_token="<|endoftext|>", eos_token="<|im_end|>")
        except jinja2.TemplateError:
            continue  # e.g. a template that rejects a system message
        with rf.Model(str(path), device="cpu") as model:
            assert model.apply_chat_template(messages) == want, name
        rendered += 1
    print(f"{rendered} of {len(templates)} templates rendered identically")
    assert rendered > 0
