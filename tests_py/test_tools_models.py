"""The model builders of tools/ (tools/models.py, quant_blocks.py, llamacpp_vocab.py): the blocks
they write dequantize (by the `gguf` package, an independent implementation) to the values
intended, and the files hold what they claim."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

import llamacpp_vocab
import models
import quant_blocks
import rocmforge as rf

QT = gguf.GGMLQuantizationType
TOOLS = Path(__file__).resolve().parent.parent / "tools"


def dequantize(blocks: np.ndarray, dtype: str) -> np.ndarray:
    return gguf.quants.dequantize(blocks, QT[dtype]).reshape(len(blocks), -1)


@pytest.fixture(scope="module")
def llama_bpe_vocab():
    try:
        return llamacpp_vocab.llamacpp_vocab_path("llama-bpe")
    except Exception as e:
        pytest.skip(f"llama.cpp llama-bpe vocabulary unavailable: {e}")


@pytest.fixture(scope="module")
def qwen2_vocab():
    try:
        return llamacpp_vocab.llamacpp_vocab_path("qwen2")
    except Exception as e:
        pytest.skip(f"llama.cpp qwen2 vocabulary unavailable: {e}")


def random_f16_scales(rng, n):
    """Positive scales exactly representable in f16."""
    return rng.uniform(1e-3, 2.0, size=n).astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_pack_q4_k_matches_gguf(rng, n):
    d, dmin = random_f16_scales(rng, n), random_f16_scales(rng, n)
    sc = rng.integers(0, 64, size=(n, 8))
    m = rng.integers(0, 64, size=(n, 8))
    q = rng.integers(0, 16, size=(n, 256))
    expected = (d[:, None] * np.repeat(sc, 32, axis=1) * q
                - dmin[:, None] * np.repeat(m, 32, axis=1))
    got = dequantize(quant_blocks.pack_q4_k(d, dmin, sc, m, q), "Q4_K")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 13])
def test_pack_q6_k_matches_gguf(rng, n):
    d = random_f16_scales(rng, n)
    scales = rng.integers(-128, 128, size=(n, 16))
    q = rng.integers(0, 64, size=(n, 256))
    expected = d[:, None] * np.repeat(scales, 16, axis=1) * (q - 32)
    got = dequantize(quant_blocks.pack_q6_k(d, scales, q), "Q6_K")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype, make, max_mean", [
    ("Q4_K", quant_blocks.q4_k_blocks, 0.03),
    ("Q6_K", quant_blocks.q6_k_blocks, 0.03),
    ("Q8_0", quant_blocks.q8_0_random_blocks, 0.03),
    ("Q4_0", quant_blocks.q4_0_random_blocks, 0.15),  # nibbles 0..15 around 8: mean -0.5 d
    ("Q5_0", quant_blocks.q5_0_random_blocks, 0.1),  # 5-bit 0..31 around 16: mean -0.5 d
    ("IQ4_NL", quant_blocks.iq4_nl_random_blocks, 0.03),
    ("Q4_K", quant_blocks.q4_k_random_blocks, 0.03),
    ("Q6_K", quant_blocks.q6_k_random_blocks, 0.03),
    ("IQ4_XS", quant_blocks.iq4_xs_random_blocks, 0.03),
])
def test_random_blocks_are_finite_small_and_centred(rng, dtype, make, max_mean):
    std = float(rng.uniform(0.05, 2.0))
    w = dequantize(make(rng, 997, std), dtype)
    assert np.all(np.isfinite(w))
    assert 0.8 * std < w.std() < 1.25 * std, (w.std(), std)
    assert abs(w.mean()) < max_mean * std, (w.mean(), std)


@pytest.mark.parametrize("n", [1, 2, 11])
def test_pack_iq4_xs_matches_gguf(rng, n):
    d = random_f16_scales(rng, n)
    ls = rng.integers(0, 64, size=(n, 8))
    q = rng.integers(0, 16, size=(n, 256))
    levels = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113])
    expected = d[:, None] * np.repeat(ls - 32, 32, axis=1) * levels[q]
    got = dequantize(quant_blocks.pack_iq4_xs(d, ls, q), "IQ4_XS")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_random_blocks_refuse_scales_f16_cannot_hold(rng):
    with pytest.raises(ValueError, match="f16"):
        quant_blocks.q8_0_random_blocks(rng, 4, 1e9)
    with pytest.raises(ValueError, match="f16"):
        quant_blocks.q4_0_random_blocks(rng, 4, 0.0)


def test_llama3_rope_freq_factors_follow_the_llama3_rule():
    f = models.llama3_rope_freq_factors(64, 500000.0, 32.0, 1.0, 4.0, 8192)
    assert f.shape == (32,) and f.dtype == np.float32
    wavelen = 2 * math.pi * 500000.0 ** (np.arange(0, 64, 2) / 64)
    assert np.all(f[wavelen < 8192 / 4] == 1.0)            # high frequencies untouched
    assert np.all(f[wavelen > 8192 / 1] == 32.0)           # low frequencies slowed by the factor
    assert np.all(np.diff(f) >= 0)                         # smooth in between
    assert f[0] == 1.0 and f[-1] == 32.0


def test_tiny_llama_file_holds_what_it_claims(tmp_path, rng, llama_bpe_vocab):
    shape = models.ModelShape("llama", hidden=128, n_layer=2, n_head=4, n_head_kv=2, ffn=96,
                               n_vocab=1000, tied=False, context_length=256, rope_theta=500000.0,
                               rms_eps=1e-5, vocab="llama-bpe", add_bos=True,
                               llama3_rope_scaling=(8.0, 1.0, 4.0, 8192))
    path = models.make_model(shape, "Q8_0", tmp_path / "tiny.gguf", vocab_path=llama_bpe_vocab, rng=rng)
    with rf.GGUFFile(path) as g:
        meta = g.metadata
        infos = {t.name: t for t in g.tensors}
        assert meta["general.architecture"] == "llama"
        assert meta["llama.block_count"] == 2 and meta["llama.attention.head_count_kv"] == 2
        assert meta["tokenizer.ggml.add_bos_token"] is True
        tokens = meta["tokenizer.ggml.tokens"]
        assert len(tokens) == 1000 == len(meta["tokenizer.ggml.token_type"])
        kept = set(tokens)
        for merge in meta["tokenizer.ggml.merges"]:          # truncation kept merges consistent
            left, right = merge.split(" ", 1)
            assert left in kept and right in kept and left + right in kept
        assert tuple(infos["token_embd.weight"].shape) == (1000, 128)
        assert tuple(infos["output.weight"].shape) == (1000, 128)
        assert tuple(infos["blk.1.attn_k.weight"].shape) == (64, 128)
        assert tuple(infos["blk.1.ffn_down.weight"].shape) == (128, 96)
        assert infos["blk.0.attn_q.weight"].dtype == "Q8_0"
        assert infos["blk.0.attn_norm.weight"].dtype == "F32"
        assert "blk.0.attn_q.bias" not in infos
        freqs = g.tensor("rope_freqs.weight")
        np.testing.assert_array_equal(freqs, models.llama3_rope_freq_factors(32, 500000.0, 8.0, 1.0, 4.0, 8192))
        w = gguf.quants.dequantize(g.raw("blk.0.ffn_down.weight"), QT.Q8_0)
        assert np.all(np.isfinite(w)) and 0.7 / math.sqrt(96) < w.std() < 1.4 / math.sqrt(96)


def test_vocabulary_is_padded_to_the_shape(tmp_path, rng, qwen2_vocab):
    n_src = len(llamacpp_vocab.read_gguf_metadata(qwen2_vocab)["tokenizer.ggml.tokens"])
    shape = models.ModelShape("qwen2", hidden=64, n_layer=1, n_head=2, n_head_kv=1, ffn=64,
                               n_vocab=n_src + 7, tied=True, context_length=128, rope_theta=1e6,
                               rms_eps=1e-6, vocab="qwen2", add_bos=False)
    path = models.make_model(shape, "Q4_0", tmp_path / "padded.gguf", vocab_path=qwen2_vocab, rng=rng)
    with rf.GGUFFile(path) as g:
        tokens = g.metadata["tokenizer.ggml.tokens"]
        infos = {t.name: t for t in g.tensors}
    assert len(tokens) == n_src + 7 and tokens[-1] == f"[PAD{n_src + 6}]"
    assert "output.weight" not in infos and "blk.0.attn_v.bias" in infos
    assert tuple(infos["token_embd.weight"].shape) == (n_src + 7, 64)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown shape"):
        models.make_model("llama-70b", "Q8_0", tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="unsupported dtype"):
        models.make_model("llama-1b", "Q5_K", tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="unknown vocabulary"):
        llamacpp_vocab.llamacpp_vocab_path("gpt-5")
    for argv in (["make-model", "--shape", "llama-1b", str(tmp_path / "x.gguf")],
                 ["make-model", "--shape", "qwen2-test", "--dtype", "Q8_0", str(tmp_path / "x.gguf")]):
        with pytest.raises(SystemExit):
            models.main(argv)
    assert not (tmp_path / "x.gguf").exists()


def test_command_line_writes_the_test_model(tmp_path, qwen2_test_model_path):
    out = tmp_path / "cli.gguf"
    subprocess.run([sys.executable, str(TOOLS / "models.py"), "make-model", "--shape", "qwen2-test",
                    str(out)], check=True, capture_output=True)
    assert llamacpp_vocab.sha256_file(out) == llamacpp_vocab.sha256_file(qwen2_test_model_path)


def test_longrope_attn_factor_is_the_converters():
    # sqrt(1 + ln(s) / ln(original)): Phi-3-mini-128k's 131072 over 4096 positions
    assert models.longrope_attn_factor(131072, 4096) == pytest.approx(1.1902380714238083)
    assert models.longrope_attn_factor(4096, 4096) == 1.0 == models.longrope_attn_factor(2048, 4096)


def test_phi3_test_model_holds_what_it_claims(phi3_test_model_path):
    """llama.cpp's phi3 layout: q/k/v and gate/up fused (gate rows first), every projection type
    in every role, the two LongRoPE factor sets, an original context below the file's."""
    c = models.FAMILY_TEST_CONFIGS["phi3"]
    hidden, ffn, hd = c["hidden"], c["ffn"], c["head_dim"]
    with rf.GGUFFile(phi3_test_model_path) as g:
        meta = g.metadata
        infos = {t.name: t for t in g.tensors}
        assert meta["general.architecture"] == "phi3"
        assert c["n_head"] * hd == hidden  # llama.cpp's phi3 takes q as wide as the residual
        orig = meta["phi3.rope.scaling.original_context_length"]
        assert orig == c["rope_original_context"] < meta["phi3.context_length"]
        assert meta["phi3.rope.scaling.attn_factor"] == pytest.approx(
            models.longrope_attn_factor(meta["phi3.context_length"], orig))
        for name in ("rope_factors_long.weight", "rope_factors_short.weight"):
            assert infos[name].dtype == "F32" and tuple(infos[name].shape) == (hd // 2,)
        assert np.all(g.tensor("rope_factors_long.weight") > g.tensor("rope_factors_short.weight"))
        kinds = {"attn_qkv": set(), "ffn_up": set(), "attn_output": set(), "ffn_down": set()}
        for i in range(c["n_layer"]):
            qkv = infos[f"blk.{i}.attn_qkv.weight"]
            assert tuple(qkv.shape) == ((c["n_head"] + 2 * c["n_head_kv"]) * hd, hidden)
            assert tuple(infos[f"blk.{i}.ffn_up.weight"].shape) == (2 * ffn, hidden)
            assert f"blk.{i}.attn_q.weight" not in infos and f"blk.{i}.ffn_gate.weight" not in infos
            for k in kinds:
                kinds[k].add(infos[f"blk.{i}.{k}.weight"].dtype)
        assert all(v == set(c["types"]) for v in kinds.values()), kinds
        assert "output.weight" in infos


def _q4_k_m_expected_types(n_layer, narrow_ffn_down=False):
    """llama.cpp's Q4_K_M mix, written out: output Q6_K; attn_v / ffn_down Q6_K in the layers
    where use_more_bits holds; everything else Q4_K. narrow_ffn_down: ffn_down's rows hold no
    whole 256-value blocks, so llama.cpp takes Q8_0 for its Q6_K and Q5_0 for its Q4_K."""
    more_bits = {i for i in range(n_layer)
                 if i < n_layer // 8 or i >= 7 * n_layer // 8 or (i - n_layer // 8) % 3 == 2}
    types = {"token_embd.weight": "Q4_K", "output.weight": "Q6_K"}
    for i in range(n_layer):
        for proj in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            types[f"blk.{i}.{proj}.weight"] = "Q4_K"
        types[f"blk.{i}.attn_v.weight"] = "Q6_K" if i in more_bits else "Q4_K"
        if narrow_ffn_down:
            types[f"blk.{i}.ffn_down.weight"] = "Q8_0" if i in more_bits else "Q5_0"
        else:
            types[f"blk.{i}.ffn_down.weight"] = "Q6_K" if i in more_bits else "Q4_K"
    return types


def test_q4_k_m_model_has_llama_cpps_mix(tmp_path, rng, qwen2_vocab):
    # 10 layers: n // 8 = 1, 7n // 8 = 8, so layers 0, 3, 6, 8, 9 take more bits
    expected = _q4_k_m_expected_types(10)
    assert {i for i in range(10) if expected[f"blk.{i}.attn_v.weight"] == "Q6_K"} == {0, 3, 6, 8, 9}
    for ffn, narrow in ((512, False), (288, True)):  # 288 columns: no whole 256-blocks
        shape = models.ModelShape("qwen2", hidden=256, n_layer=10, n_head=4, n_head_kv=2, ffn=ffn,
                                   n_vocab=600, tied=False, context_length=128, rope_theta=1e4,
                                   rms_eps=1e-6, vocab="qwen2", add_bos=False)
        path = models.make_model(shape, "Q4_K_M", tmp_path / f"mix{ffn}.gguf", vocab_path=qwen2_vocab, rng=rng)
        reader = gguf.GGUFReader(path)
        got = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
        assert got == _q4_k_m_expected_types(10, narrow)
        file_type = reader.get_field("general.file_type")
        assert file_type.contents() == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
        for t in reader.tensors:
            if len(t.shape) == 2:
                w = gguf.quants.dequantize(t.data, t.tensor_type)
                assert np.all(np.isfinite(w)), t.name


@pytest.mark.parametrize("dtype", ["Q6_K", "IQ4_XS"])
def test_single_type_models_use_that_type(tmp_path, rng, qwen2_vocab, dtype):
    shape = models.ModelShape("qwen2", hidden=256, n_layer=2, n_head=4, n_head_kv=2, ffn=512,
                               n_vocab=600, tied=True, context_length=128, rope_theta=1e4,
                               rms_eps=1e-6, vocab="qwen2", add_bos=False)
    path = models.make_model(shape, dtype, tmp_path / "x.gguf", vocab_path=qwen2_vocab, rng=rng)
    reader = gguf.GGUFReader(path)
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2} == {dtype}
    assert reader.get_field("general.file_type").contents() == int(gguf.LlamaFileType[f"MOSTLY_{dtype}"])


def test_qwen2_7b_shape_is_deepseek_r1_distill_qwen_7b():
    s = models.SHAPES["qwen2-7b"]
    assert (s.arch, s.hidden, s.n_layer, s.n_head, s.n_head_kv, s.ffn, s.n_vocab, s.tied) == (
        "qwen2", 3584, 28, 28, 4, 18944, 152064, False)
    assert (s.context_length, s.rope_theta, s.rms_eps, s.vocab, s.add_bos) == (131072, 10000.0, 1e-6, "qwen2", False)


def test_gemma3_270m_shape_has_the_real_files_tensors(tmp_path, qwen2_vocab, gemma3_270m_path):
    # llama.cpp's Q4_K_M of a tied embedding and of 640-wide rows (Q5_0 / Q8_0 stand-ins), as in
    # Google's file: every tensor's name, type and shape, and the architecture's metadata
    path = models.make_model("gemma3-270m", "Q4_K_M", tmp_path / "g.gguf", vocab_path=qwen2_vocab)
    real, ours = gguf.GGUFReader(gemma3_270m_path), gguf.GGUFReader(path)

    def tensors(r):
        return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in r.tensors}

    def arch_fields(r):
        return {k: r.fields[k].contents() for k in r.fields if k.startswith("gemma3.")}

    assert tensors(ours) == tensors(real)
    assert arch_fields(ours) == pytest.approx(arch_fields(real))
    assert len(ours.fields["tokenizer.ggml.tokens"].data) == 262144


def test_qwen3_shape_is_qwen3_8b_with_q_and_k_norms(tmp_path, rng, qwen2_vocab):
    s = models.SHAPES["qwen3-8b"]
    assert (s.arch, s.hidden, s.n_layer, s.n_head, s.n_head_kv, s.head_dim, s.ffn, s.n_vocab, s.tied) == (
        "qwen3", 4096, 36, 32, 8, 128, 12288, 151936, False)
    # a small qwen3 whose q (8 heads of 64) is wider than the residual: llama.cpp's layout
    shape = models.ModelShape("qwen3", hidden=256, n_layer=2, n_head=8, n_head_kv=2, ffn=512,
                               n_vocab=600, tied=False, context_length=128, rope_theta=1e6,
                               rms_eps=1e-6, vocab="qwen2", add_bos=False, head_dim=64)
    path = models.make_model(shape, "Q4_K_M", tmp_path / "q3.gguf", vocab_path=qwen2_vocab, rng=rng)
    r = gguf.GGUFReader(path)
    t = {x.name: tuple(int(n) for n in x.shape) for x in r.tensors}  # gguf's order: (cols, rows)
    assert t["blk.1.attn_q.weight"] == (256, 512) and t["blk.1.attn_output.weight"] == (512, 256)
    assert t["blk.0.attn_q_norm.weight"] == (64,) and t["blk.0.attn_k_norm.weight"] == (64,)
    assert not any(name.endswith(".bias") for name in t)
    assert r.fields["qwen3.attention.key_length"].contents() == 64
    m = rf.Model(str(path), device="cpu")
    assert m.config["head_dim"] == 64 and m.config["architecture"] == "qwen3"
