"""The committed llama.cpp reference data still matches the files it was made from.

`scripts/make_llamacpp_reference.py` wrote `tests_py/reference/llamacpp_*.json` from the real
SmolLM2 file and from the qwen2 test model that `rocmforge.testing` builds. If the SmolLM2 file
or the builder drifts, the data no longer describes the model the tests load: these tests say so.
They also check the data is self-consistent and the test model is numerically sound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rocmforge import testing

REFERENCE_DIR = Path(__file__).parent / "reference"
DATA_FILES = ["llamacpp_smollm2.json", "llamacpp_qwen2_test.json"]


def load_reference(name: str) -> dict:
    with open(REFERENCE_DIR / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module", params=DATA_FILES)
def reference(request):
    return load_reference(request.param)


def test_smollm2_file_is_the_one_the_data_was_made_from(smollm2_path):
    ref = load_reference("llamacpp_smollm2.json")
    assert testing.sha256_file(smollm2_path) == ref["model"]["sha256"]
    assert Path(smollm2_path).stat().st_size == ref["model"]["size"]


def test_qwen2_test_model_is_the_one_the_data_was_made_from(qwen2_test_model_path):
    import gguf  # noqa: F401  (the builder's dependency; its version is in the message)
    from importlib.metadata import version

    ref = load_reference("llamacpp_qwen2_test.json")
    got = testing.sha256_file(qwen2_test_model_path)
    assert got == ref["model"]["sha256"], (
        f"make_qwen2_test_model now writes different bytes (sha256 {got}); the data was made with "
        f"gguf {ref['model'].get('gguf_package')} / numpy {ref['model'].get('numpy')}, this run has "
        f"gguf {version('gguf')} / numpy {np.__version__}. If the change is intended, rerun "
        f"scripts/make_llamacpp_reference.py")
    assert Path(qwen2_test_model_path).stat().st_size == ref["model"]["size"]


def test_qwen2_test_model_builds_identically_twice(qwen2_test_model_path, tmp_path):
    again = testing.make_qwen2_test_model(tmp_path / "again.gguf",
                                          vocab_path=testing.llamacpp_vocab_path("qwen2"))
    assert testing.sha256_file(again) == testing.sha256_file(qwen2_test_model_path)


def test_data_was_made_by_the_pinned_llama_cpp(reference):
    assert reference["llama_cpp_python"] == testing.LLAMA_CPP_PYTHON_VERSION
    s = reference["settings"]
    assert s["type_k_name"] == "F16" and s["type_v_name"] == "F16"
    assert s["flash_attn"] is False and s["logits_all"] is True
    assert s["n_ctx"] >= max(len(q["top_ids"]) for q in reference["sequences"])


def test_sequences_are_self_consistent(reference):
    n_vocab = reference["vocab"]["n_vocab"]
    k = reference["top_k"]
    assert len(reference["sequences"]) >= 8
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
def vocab_tokens(smollm2_path, qwen2_test_model_path):
    """name of the data file -> the model file's token strings and token types."""
    out = {}
    for name, path in (("llamacpp_smollm2.json", smollm2_path),
                       ("llamacpp_qwen2_test.json", qwen2_test_model_path)):
        meta = testing.read_gguf_metadata(path)
        out[name] = ([t.decode("utf-8") for t in meta["tokenizer.ggml.tokens"]],
                     meta["tokenizer.ggml.token_type"])
    return out


@pytest.mark.parametrize("name", DATA_FILES)
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
    assert any("<|im_start|>" in t for t in texts)
    assert any(any(ord(c) > 0xFFFF for c in t) for t in texts)          # emoji
    assert any(any(0x4E00 <= ord(c) <= 0x9FFF for c in t) for t in texts)  # CJK
    assert any("\u0301" in t for t in texts)                              # combining mark
    assert any("\t" in t for t in texts) and any("   " in t for t in texts)
    # the special-token strings really tokenize differently with and without special parsing
    im = next(r for r in reference["tokenizations"] if r["text"].startswith("<|im_start|>"))
    assert im["ids"]["add_special=False,special=True"] != im["ids"]["add_special=False,special=False"]


def test_qwen2_test_model_is_numerically_sound(qwen2_test_model_path):
    """The weights the reference rests on: finite f16 scales, small centred values, Q4_K dmin
    about 7.5 d, the intended types and shapes; and llama.cpp's logits had a healthy spread."""
    import gguf
    import rocmforge as rf

    c = testing.QWEN2_TEST_CONFIG
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
