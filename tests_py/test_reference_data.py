"""The committed llama.cpp reference data still matches the files it was made from.

`scripts/make_llamacpp_reference.py` wrote `tests_py/reference/llamacpp_*.json` from the real
SmolLM2 file and from the qwen2 test model that tools/models.py builds. If the SmolLM2 file
or the builder drifts, the data no longer describes the model the tests load: these tests say so.
They also check the data is self-consistent and the test model is numerically sound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import llamacpp_vocab
import models

REFERENCE_DIR = Path(__file__).parent / "reference"
DATA_FILES = ["llamacpp_smollm2.json", "llamacpp_qwen2_test.json"]
# The data of the other families, checked for consistency and against their files too.
FAMILY_DATA_FILES = ["llamacpp_qwen3_test.json", "llamacpp_gemma3_test.json", "llamacpp_gemma3_270m.json",
                     "llamacpp_phi3_test.json"]
# Synthetic models: (data file, fixture, family) made by tools/models.py.
SYNTHETIC = [("llamacpp_qwen2_test.json", "qwen2_test_model_path", "qwen2"),
             ("llamacpp_qwen3_test.json", "qwen3_test_model_path", "qwen3"),
             ("llamacpp_gemma3_test.json", "gemma3_test_model_path", "gemma3"),
             ("llamacpp_phi3_test.json", "phi3_test_model_path", "phi3")]


def load_reference(name: str) -> dict:
    with open(REFERENCE_DIR / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module", params=DATA_FILES + FAMILY_DATA_FILES)
def reference(request):
    return load_reference(request.param)


def test_smollm2_file_is_the_one_the_data_was_made_from(smollm2_path):
    ref = load_reference("llamacpp_smollm2.json")
    assert llamacpp_vocab.sha256_file(smollm2_path) == ref["model"]["sha256"]
    assert Path(smollm2_path).stat().st_size == ref["model"]["size"]


def test_gemma3_270m_file_is_the_one_the_data_was_made_from(gemma3_270m_path):
    ref = load_reference("llamacpp_gemma3_270m.json")
    assert ref["model"]["sha256"] == models.GEMMA3_270M_SHA256
    assert llamacpp_vocab.sha256_file(gemma3_270m_path) == ref["model"]["sha256"]


@pytest.mark.parametrize("name,fixture,family", SYNTHETIC, ids=[s[2] for s in SYNTHETIC])
def test_test_model_is_the_one_the_data_was_made_from(name, fixture, family, request):
    import gguf  # noqa: F401  (the builder's dependency; its version is in the message)
    from importlib.metadata import version

    path = request.getfixturevalue(fixture)
    ref = load_reference(name)
    got = llamacpp_vocab.sha256_file(path)
    assert got == ref["model"]["sha256"], (
        f"the {family} test model builder now writes different bytes (sha256 {got}); the data was "
        f"made with gguf {ref['model'].get('gguf_package')} / numpy {ref['model'].get('numpy')}, "
        f"this run has gguf {version('gguf')} / numpy {np.__version__}. If the change is intended, "
        f"rerun scripts/make_llamacpp_reference.py")
    assert Path(path).stat().st_size == ref["model"]["size"]


def test_qwen2_test_model_builds_identically_twice(qwen2_test_model_path, tmp_path):
    again = models.make_qwen2_test_model(tmp_path / "again.gguf",
                                         vocab_path=llamacpp_vocab.llamacpp_vocab_path("qwen2"))
    assert llamacpp_vocab.sha256_file(again) == llamacpp_vocab.sha256_file(qwen2_test_model_path)


def test_data_was_made_by_the_pinned_llama_cpp(reference):
    assert reference["llama_cpp_python"] == llamacpp_vocab.LLAMA_CPP_PYTHON_VERSION
    s = reference["settings"]
    assert s["type_k_name"] == "F16" and s["type_v_name"] == "F16"
    assert s["flash_attn"] is False and s["logits_all"] is True
    assert s["n_ctx"] >= max(len(q["top_ids"]) for q in reference["sequences"])


def test_sequences_are_self_consistent(reference):
    n_vocab = reference["vocab"]["n_vocab"]
    k = reference["top_k"]
    assert len(reference["sequences"]) >= 7
    for seq in reference["sequences"]:
        ids = seq["prompt_ids"] + seq["continuation_ids"]
        top_ids = np.array(seq["top_ids"])
        top_lp = np.array(seq["top_logprobs"])
        assert top_ids.shape == top_lp.shape == (len(ids), k)
        assert np.all((0 <= top_ids) & (top_ids < n_vocab))
        assert all(len(set(row)) == k for row in seq["top_ids"])
        assert np.all(np.isfinite(top_lp)) and np.all(top_lp <= 0)
        assert np.all(np.diff(top_lp, axis=1) <= 0), "top-k not sorted by log-prob"
        # probabilities of the top-k sum to at most 1
        assert np.all(np.log(np.exp(top_lp).sum(axis=1)) <= 1e-4)
        assert 1 <= len(seq["continuation_ids"]) <= 24
        # the greedy tokens were llama.cpp's argmax (one at a time); the teacher-forced batch
        # gives the same argmax except at near-ties
        assert seq["teacher_forced_top1_equals_greedy"] >= 0.9


# GPT-2 byte-level BPE: each byte is shown as one printable character (the inverse of the
# table every byte-level BPE vocabulary is written in)
def _byte_decoder() -> dict:
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in table.items()}


@pytest.fixture(scope="module")
def vocab_tokens(smollm2_path, qwen2_test_model_path, qwen3_test_model_path, gemma3_test_model_path):
    """name of the data file -> the model file's token strings and token types (the byte-level
    BPE vocabularies)."""
    out = {}
    for name, path in (("llamacpp_smollm2.json", smollm2_path),
                       ("llamacpp_qwen2_test.json", qwen2_test_model_path),
                       ("llamacpp_qwen3_test.json", qwen3_test_model_path),
                       ("llamacpp_gemma3_test.json", gemma3_test_model_path)):
        meta = llamacpp_vocab.read_gguf_metadata(path)
        out[name] = ([t.decode("utf-8") for t in meta["tokenizer.ggml.tokens"]],
                     meta["tokenizer.ggml.token_type"])
    return out


# (not phi3's: llama.cpp's tokenizer drops the whitespace after a special token in files named
# Phi-3, which the phi3 test model is, so its ids do not spell every string with one)
@pytest.mark.parametrize("name", DATA_FILES + FAMILY_DATA_FILES[:2])
def test_token_ids_spell_the_text(name, vocab_tokens):
    """Independently of llama.cpp: the recorded ids, read through the file's vocabulary, spell
    the string they came from (and special tokens appear only when parsed as special)."""
    ref = load_reference(name)
    tokens, token_type = vocab_tokens[name]
    decoder = _byte_decoder()
    control = 3
    bos = ref["vocab"]["bos"]
    for rec in ref["tokenizations"]:
        for key, ids in rec["ids"].items():
            add_special = "add_special=True" in key
            special = "special=True" in key.split(",")[1]
            if add_special and ref["vocab"]["add_bos"]:
                assert ids[:1] == [bos], (rec["text"], key, ids)
                ids = ids[1:]
            spelled = bytearray()
            for t in ids:
                if token_type[t] == control:
                    assert special, f"{rec['text']!r} {key}: control token {t} without special parsing"
                    spelled += tokens[t].encode("utf-8")
                else:
                    spelled += bytes(decoder[c] for c in tokens[t])
            assert spelled.decode("utf-8") == rec["text"], (rec["text"], key, ids)


def test_tricky_strings_cover_the_cases(reference):
    texts = [r["text"] for r in reference["tokenizations"]]
    assert len(texts) >= 25 and "" in texts
    marker = "<start_of_turn>" if reference["model"]["file"].startswith("gemma-3") else "<|im_start|>"
    assert any(marker in t for t in texts)
    assert any(any(ord(c) > 0xFFFF for c in t) for t in texts)          # emoji
    assert any(any(0x4E00 <= ord(c) <= 0x9FFF for c in t) for t in texts)  # CJK
    assert any("\u0301" in t for t in texts)                              # combining mark
    assert any("\t" in t for t in texts) and any("   " in t for t in texts)
    # the special-token strings really tokenize differently with and without special parsing
    im = next(r for r in reference["tokenizations"] if r["text"].startswith(marker))
    assert im["ids"]["add_special=False,special=True"] != im["ids"]["add_special=False,special=False"]


def test_qwen2_test_model_is_numerically_sound(qwen2_test_model_path):
    """The weights the reference rests on: finite f16 scales, small centred values, Q4_K dmin
    about 7.5 d, the intended types and shapes; and llama.cpp's logits had a healthy spread."""
    import gguf
    import rocmforge as rf

    c = models.QWEN2_TEST_CONFIG
    with rf.GGUFFile(qwen2_test_model_path) as g:
        meta = g.metadata
        assert meta["general.architecture"] == "qwen2"
        assert meta["qwen2.attention.head_count"] == c["n_head"]
        assert meta["qwen2.attention.head_count_kv"] == c["n_head_kv"]
        assert meta["tokenizer.ggml.pre"] == "qwen2"
        infos = {t.name: t for t in g.tensors}
        types = {t.dtype for t in g.tensors}
        assert {"Q4_K", "Q6_K", "Q8_0", "F32"} <= types
        for i in range(c["n_layer"]):
            for proj in ("attn_q", "attn_k", "attn_v"):
                assert f"blk.{i}.{proj}.bias" in infos
        assert "output.weight" in infos  # untied
        for t in g.tensors:
            if t.dtype == "F32" or t.name in ("token_embd.weight", "output.weight"):
                continue
            raw = g.raw(t.name)
            w = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.dtype])
            assert np.all(np.isfinite(w)), t.name
            expected_std = 1.0 / math.sqrt(w.shape[-1])
            assert 0.7 * expected_std < w.std() < 1.4 * expected_std, (t.name, w.std())
            assert abs(w.mean()) < 0.05 * w.std(), (t.name, w.mean(), w.std())
            if t.dtype == "Q4_K":
                blocks = raw.reshape(-1, 144)
                d = blocks[:, 0:2].copy().view("<f2").astype(np.float32).ravel()
                dmin = blocks[:, 2:4].copy().view("<f2").astype(np.float32).ravel()
                assert np.all(d > 0) and np.allclose(dmin / d, 7.5, rtol=2e-3), t.name
    ref = load_reference("llamacpp_qwen2_test.json")
    stds = np.concatenate([s["logit_std"] for s in ref["sequences"]])
    assert np.all((stds > 1.0) & (stds < 20.0)), "llama.cpp's logits for the test model are degenerate"


# --------------------------------------------------------------------------------------------
# An independent NumPy forward pass (float32) (weights dequantized by the `gguf` package) agrees
# with llama.cpp's logits: the reference is sound (no overflow in llama.cpp's f16 paths, the
# right model), and exact arithmetic meets the thresholds the model tests use. llama.cpp
# differs from exact arithmetic mainly because it quantizes activations to 8 bits in its
# quantized matmuls.
# --------------------------------------------------------------------------------------------

def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, theta, neox, freq_factors=None, attn_factor=1.0):
    """x: [seq, heads, head_dim] at positions 0..seq-1. neox: rotate halves (qwen2, phi3), else
    adjacent pairs (llama as stored in GGUF). freq_factors divide the pairs' frequencies;
    attn_factor multiplies the rotated values (ggml's rope multiplies its cos and sin by it)."""
    seq, _, head_dim = x.shape
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [head_dim/2]
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    angle = np.arange(seq, dtype=np.float64)[:, None] * inv_freq[None, :]          # [seq, head_dim/2]
    cos = (attn_factor * np.cos(angle))[:, None, :].astype(np.float32)
    sin = (attn_factor * np.sin(angle))[:, None, :].astype(np.float32)
    if neox:
        a, b = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def numpy_logits(path, sequences, n_ctx=None, phi3_short_factors=False):
    """Logits [len(ids), vocab] for each id list, computed in float32 (its rounding is far below
    llama.cpp's 8-bit activations) from the file's weights as dequantized by
    `gguf.quants.dequantize`. phi3 (llama.cpp's reading): q/k/v and gate/up split from the fused
    matrices, the LongRoPE factor set of a context of `n_ctx` positions (the long one past
    rope.scaling.original_context_length; `phi3_short_factors` forces the short one) and
    rope.scaling.attn_factor on the rotated q and k."""
    import gguf
    import rocmforge as rf

    with rf.GGUFFile(path) as g:
        meta = g.metadata
        infos = {t.name: t for t in g.tensors}

        def weight(name, rows=None):
            raw = g.raw(name)                   # [rows, bytes per row]
            if rows is not None:
                raw = raw[rows]
            qtype = gguf.GGMLQuantizationType[infos[name].dtype]
            return gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(raw.shape[0], -1).squeeze()

        arch = meta["general.architecture"]
        n_layer = meta[f"{arch}.block_count"]
        n_head = meta[f"{arch}.attention.head_count"]
        n_head_kv = meta[f"{arch}.attention.head_count_kv"]
        eps = meta[f"{arch}.attention.layer_norm_rms_epsilon"]
        theta = meta[f"{arch}.rope.freq_base"]
        neox = arch in ("qwen2", "phi3")
        names = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                 "ffn_gate", "ffn_up", "ffn_down")
        freq_factors, attn_factor = None, 1.0
        if arch == "phi3":
            original = meta.get(f"{arch}.rope.scaling.original_context_length", meta[f"{arch}.context_length"])
            long = n_ctx > original and not phi3_short_factors
            freq_factors = weight(f"rope_factors_{'long' if long else 'short'}.weight").astype(np.float64)
            attn_factor = meta.get(f"{arch}.rope.scaling.attn_factor", 1.0)
        layers = []
        for i in range(n_layer):
            if arch == "phi3":
                layer = {k: weight(f"blk.{i}.{k}.weight") for k in ("attn_norm", "attn_output", "ffn_norm",
                                                                      "ffn_down")}
                q_rows = meta[f"{arch}.embedding_length"]
                qkv = weight(f"blk.{i}.attn_qkv.weight")
                kv_rows = (qkv.shape[0] - q_rows) // 2
                layer["attn_q"], layer["attn_k"], layer["attn_v"] = np.split(qkv, [q_rows, q_rows + kv_rows])
                layer["ffn_gate"], layer["ffn_up"] = np.split(weight(f"blk.{i}.ffn_up.weight"), 2)
            else:
                layer = {k: weight(f"blk.{i}.{k}.weight") for k in names}
            for k in ("attn_q", "attn_k", "attn_v"):
                bias = f"blk.{i}.{k}.bias"
                layer[k + "_bias"] = weight(bias) if bias in infos else 0.0
            layers.append(layer)
        out_norm = weight("output_norm.weight")
        out_name = "output.weight" if "output.weight" in infos else "token_embd.weight"
        out_w = weight(out_name)                                     # [vocab, hidden]
        embeddings = [weight("token_embd.weight", rows=np.array(ids)) for ids in sequences]

    results = []
    for ids, x in zip(sequences, embeddings):                       # x: [seq, hidden]
        n = len(ids)
        mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)  # [seq_q, seq_k]
        for L in layers:
            h = _rms_norm(x, L["attn_norm"], eps)
            q = h @ L["attn_q"].T + L["attn_q_bias"]
            k = h @ L["attn_k"].T + L["attn_k_bias"]
            v = h @ L["attn_v"].T + L["attn_v_bias"]
            head_dim = q.shape[1] // n_head
            q = _rope(q.reshape(n, n_head, head_dim), theta, neox, freq_factors, attn_factor)
            k = np.repeat(_rope(k.reshape(n, n_head_kv, head_dim), theta, neox, freq_factors, attn_factor),
                          n_head // n_head_kv, axis=1)
            v = np.repeat(v.reshape(n, n_head_kv, head_dim), n_head // n_head_kv, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(head_dim)) + mask[None]
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", p, v).reshape(n, n_head * head_dim)
            x = x + attn @ L["attn_output"].T
            h = _rms_norm(x, L["ffn_norm"], eps)
            gate = h @ L["ffn_gate"].T
            x = x + ((gate / (1.0 + np.exp(-gate))) * (h @ L["ffn_up"].T)) @ L["ffn_down"].T
        results.append((_rms_norm(x, out_norm, eps) @ out_w.T).astype(np.float64))
    return results


def _log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _agreement(ref, all_logits):
    """(top-1 agreement, mean |log-prob diff| over llama.cpp's top-5) of logits with the data."""
    agree = total = 0
    diffs = []
    for seq, logits in zip(ref["sequences"], all_logits):
        lp = _log_softmax(logits)
        top_ids = np.array(seq["top_ids"])
        agree += int(np.sum(lp.argmax(axis=-1) == top_ids[:, 0]))
        total += len(top_ids)
        diffs.append(np.abs(np.take_along_axis(lp, top_ids[:, :5], axis=-1)
                            - np.array(seq["top_logprobs"])[:, :5]).ravel())
    return agree / total, float(np.mean(np.concatenate(diffs)))


@pytest.mark.parametrize("name", DATA_FILES + ["llamacpp_phi3_test.json"])
def test_llamacpp_logits_agree_with_numpy_forward(name, request):
    ref = load_reference(name)
    fixture = {"llamacpp_smollm2.json": "smollm2_path", "llamacpp_qwen2_test.json": "qwen2_test_model_path",
               "llamacpp_phi3_test.json": "phi3_test_model_path"}[name]
    path = request.getfixturevalue(fixture)
    sequences = [s["prompt_ids"] + s["continuation_ids"] for s in ref["sequences"]]
    n_ctx = ref["settings"]["n_ctx"]
    top1, mean_diff = _agreement(ref, numpy_logits(path, sequences, n_ctx))
    print(f"{name}: NumPy (float32) vs llama.cpp: top-1 agreement {top1:.4f}, "
          f"mean |log-prob diff| over llama.cpp's top-5 {mean_diff:.4f}")
    assert top1 >= 0.95
    assert mean_diff <= 0.15
    if "phi3" in name:
        # llama.cpp took the long LongRoPE set (its context is past the original one): the
        # short set, which the test model makes clearly different, is far from its logits
        _, short_diff = _agreement(ref, numpy_logits(path, sequences, n_ctx, phi3_short_factors=True))
        print(f"  with the short factor set instead: mean |log-prob diff| {short_diff:.4f}")
        assert short_diff > 3 * mean_diff
