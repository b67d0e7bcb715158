"""Model metadata checks (RELIABILITY.md, reader item 13): a file whose metadata or tensors do
not describe a runnable model is a GGUFError naming the problem (missing keys, head counts that
are 0 or do not divide, tensor shapes that disagree with the hyperparameters, missing tensors,
special token ids outside the vocabulary), an unknown architecture is an UnsupportedError naming
it. Each case is a small file written by `Tiny.write` (test_model.py); each starts from a file
that loads, so that the one change made is what the error is about."""

from __future__ import annotations

import re

import gguf
import numpy as np
import pytest

import rocmforge as rf
from test_model import Tiny

T = gguf.GGUFValueType


def write(path, m: Tiny, set_meta=None, drop_meta=(), set_tensors=None, drop_tensors=()) -> str:
    """Write `m` with metadata keys changed (`set_meta`: key -> (value, type[, item type])) or
    left out, and tensors replaced (`set_tensors`: name -> float32 array) or left out."""
    m.write(path, skip_keys=drop_meta, skip_tensors=drop_tensors, set_meta=set_meta, set_tensors=set_tensors)
    return str(path)


@pytest.fixture
def tiny(rng):
    heads = int(rng.choice([2, 4]))
    ffn = int(rng.integers(5, 30))
    ffn += ffn == 8 * heads  # never square: a transposed ffn_down must change the shape
    return Tiny(rng, dim=8 * heads, heads=heads, kv_heads=heads // 2, ffn=ffn, layers=2,
                n_ctx=32, tied=bool(rng.integers(0, 2)))


def load(path):
    with rf.Model(path, device="cpu") as model:
        return model.config


def test_the_unchanged_file_loads(tmp_path, tiny):
    config = load(write(tmp_path / "ok.gguf", tiny))
    assert (config["dim"], config["heads"], config["kv_heads"], config["vocab_size"]) == (
        tiny.dim, tiny.heads, tiny.kv_heads, tiny.vocab)


# ---- missing required keys -------------------------------------------------------------------

REQUIRED = ["general.architecture", "{a}.block_count", "{a}.context_length", "{a}.embedding_length",
            "{a}.feed_forward_length", "{a}.attention.head_count", "{a}.attention.layer_norm_rms_epsilon",
            "tokenizer.ggml.model", "tokenizer.ggml.tokens"]


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_required_key_is_named(tmp_path, tiny, key):
    key = key.format(a=tiny.arch)
    path = write(tmp_path / "m.gguf", tiny, drop_meta=[key])
    with pytest.raises(rf.GGUFError, match=re.escape(key)):
        load(path)


@pytest.mark.parametrize("key,value", [
    ("{a}.block_count", ("two", T.STRING)),
    ("{a}.attention.head_count", (4.0, T.FLOAT32)),
    ("{a}.embedding_length", (-32, T.INT32)),
    ("{a}.feed_forward_length", (0, T.UINT32)),
    ("{a}.context_length", (2**40, T.UINT64)),
    ("{a}.attention.layer_norm_rms_epsilon", ("small", T.STRING)),
    ("{a}.attention.layer_norm_rms_epsilon", (float("nan"), T.FLOAT32)),
    ("{a}.rope.freq_base", (-1.0, T.FLOAT32)),
    ("general.architecture", (7, T.UINT32)),
], ids=lambda v: str(v[0]) if isinstance(v, tuple) else v)
def test_malformed_key_is_named(tmp_path, tiny, key, value):
    key = key.format(a=tiny.arch)
    path = write(tmp_path / "m.gguf", tiny, set_meta={key: value})
    with pytest.raises(rf.GGUFError, match=re.escape(key)):
        load(path)


# ---- head counts -----------------------------------------------------------------------------

def test_head_count_zero(tmp_path, tiny):
    for key in ("attention.head_count", "attention.head_count_kv"):
        full = f"{tiny.arch}.{key}"
        path = write(tmp_path / "m.gguf", tiny, set_meta={full: (0, T.UINT32)})
        with pytest.raises(rf.GGUFError, match=re.escape(full)):
            load(path)


def test_kv_heads_not_dividing_heads(tmp_path, rng):
    m = Tiny(rng, dim=30, heads=6, kv_heads=4, ffn=12, layers=1)  # 6 % 4 != 0
    with pytest.raises(rf.GGUFError, match=r"head_count.*6.*head_count_kv.*4"):
        load(write(tmp_path / "m.gguf", m))
    m = Tiny(rng, dim=30, heads=5, kv_heads=5, ffn=12, layers=1)
    path = write(tmp_path / "m.gguf", m, set_meta={"llama.attention.head_count_kv": (7, T.UINT32)})
    with pytest.raises(rf.GGUFError, match=r"head_count_kv.*7"):
        load(path)


def test_dim_not_divisible_by_heads(tmp_path, rng):
    m = Tiny(rng, dim=30, heads=5, kv_heads=5, ffn=12, layers=1)  # head_dim 6
    path = write(tmp_path / "m.gguf", m, set_meta={"llama.attention.head_count": (4, T.UINT32),
                                                  "llama.attention.head_count_kv": (4, T.UINT32)})
    with pytest.raises(rf.GGUFError, match=r"embedding_length.*30.*head_count.*4"):
        load(path)


def test_odd_rope_dimension_count(tmp_path, tiny):
    key = f"{tiny.arch}.rope.dimension_count"
    path = write(tmp_path / "m.gguf", tiny, set_meta={key: (tiny.head_dim - 1, T.UINT32)})
    with pytest.raises(rf.GGUFError, match=re.escape(key)):
        load(path)


# ---- tensor shapes that disagree with the hyperparameters ------------------------------------

def _reshaped(rng, m: Tiny, name: str) -> np.ndarray:
    """A tensor of `name` whose shape is off in one dimension."""
    t = m.w[name]
    shape = list(t.shape)
    axis = int(rng.integers(0, len(shape)))
    shape[axis] += int(rng.choice([-1, 1, 3]))
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight",
                                  "blk.1.attn_k.weight", "blk.0.attn_v.weight", "blk.1.attn_output.weight",
                                  "blk.0.ffn_gate.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"])
def test_tensor_shape_disagrees(tmp_path, rng, tiny, name):
    path = write(tmp_path / "m.gguf", tiny, set_meta={f"{tiny.arch}.vocab_size": (tiny.vocab, T.UINT32)},
                 set_tensors={name: _reshaped(rng, tiny, name)})
    with pytest.raises(rf.GGUFError, match=re.escape(name) if name != "token_embd.weight" else "token_embd"):
        load(path)


def test_transposed_matrix_is_a_shape_error(tmp_path, tiny):
    name = "blk.0.ffn_down.weight"
    path = write(tmp_path / "m.gguf", tiny, set_tensors={name: tiny.w[name].T})
    with pytest.raises(rf.GGUFError, match=re.escape(name) + ".*shape"):
        load(path)


def test_vocab_size_disagrees_with_embedding(tmp_path, tiny):
    key = f"{tiny.arch}.vocab_size"
    path = write(tmp_path / "m.gguf", tiny, set_meta={key: (tiny.vocab + 1, T.UINT32)})
    with pytest.raises(rf.GGUFError, match=re.escape(key)):
        load(path)


def test_lm_head_rows_disagree(tmp_path, rng):
    m = Tiny(rng, dim=16, heads=2, kv_heads=1, ffn=8, layers=1, tied=False)
    path = write(tmp_path / "m.gguf", m, set_tensors={"output.weight": m.w["output.weight"][:-2]})
    with pytest.raises(rf.GGUFError, match="output.weight"):
        load(path)


def test_more_tokens_than_embedding_rows(tmp_path, tiny):
    """Every token the tokenizer can produce needs an embedding row."""
    extra = tiny.tokens + ["zz", "zzz"]
    path = write(tmp_path / "m.gguf", tiny, set_meta={
        "tokenizer.ggml.tokens": (extra, T.ARRAY, T.STRING),
        "tokenizer.ggml.token_type": (tiny.types + [1, 1], T.ARRAY, T.INT32)})
    with pytest.raises(rf.GGUFError, match=rf"{len(extra)}.*{tiny.vocab}|{tiny.vocab}.*{len(extra)}"):
        load(path)


# ---- missing tensors -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight",
                                  "blk.1.attn_q.weight", "blk.0.attn_output.weight", "blk.1.ffn_up.weight",
                                  "blk.1.ffn_norm.weight"])
def test_missing_tensor_is_named(tmp_path, tiny, name):
    path = write(tmp_path / "m.gguf", tiny, drop_tensors=[name])
    with pytest.raises(rf.GGUFError, match=re.escape(name)):
        load(path)


def test_more_layers_than_tensors(tmp_path, tiny):
    key = f"{tiny.arch}.block_count"
    path = write(tmp_path / "m.gguf", tiny, set_meta={key: (tiny.layers + 1, T.UINT32)})
    with pytest.raises(rf.GGUFError, match=rf"blk\.{tiny.layers}\."):
        load(path)


def test_missing_qwen2_bias(tmp_path, rng):
    m = Tiny(rng, arch="qwen2", dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    path = write(tmp_path / "m.gguf", m, drop_tensors=["blk.0.attn_k.bias"])
    with pytest.raises(rf.GGUFError, match=re.escape("blk.0.attn_k.bias")):
        load(path)


# ---- special token ids outside the vocabulary ------------------------------------------------

@pytest.mark.parametrize("key", ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                 "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                                 "tokenizer.ggml.eot_token_id"])
def test_special_token_id_outside_vocabulary(tmp_path, rng, tiny, key):
    for bad, vtype in ((tiny.vocab, T.UINT32), (tiny.vocab + int(rng.integers(1, 10**6)), T.UINT32),
                       (-1, T.INT32), (2**40, T.UINT64)):
        path = write(tmp_path / "m.gguf", tiny, set_meta={key: (bad, vtype)})
        with pytest.raises(rf.GGUFError, match=re.escape(key) + r".*" + re.escape(str(bad))):
            load(path)
    path = write(tmp_path / "m.gguf", tiny, set_meta={key: ("</s>", T.STRING)})
    with pytest.raises(rf.GGUFError, match=re.escape(key)):
        load(path)


# ---- unknown architecture --------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gptj", "mamba", "LLAMA", ""])
def test_unknown_architecture_names_it(tmp_path, tiny, arch):
    path = write(tmp_path / "m.gguf", tiny, set_meta={"general.architecture": (arch, T.STRING)})
    with pytest.raises(rf.UnsupportedError, match=re.escape(repr(arch).replace("'", '"'))):
        load(path)


def test_mixture_of_experts_is_unsupported(tmp_path, tiny):
    path = write(tmp_path / "m.gguf", tiny, set_meta={f"{tiny.arch}.expert_count": (8, T.UINT32)})
    with pytest.raises(rf.UnsupportedError, match="experts"):
        load(path)
