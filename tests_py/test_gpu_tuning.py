"""Every field of the tuning record on the GPU: a model decodes the same greedy tokens with each
non-default value as with the defaults (they choose kernels and launch shapes, never what is
computed beyond float rounding), and its decode plan says what changed. Together with the
matvec tests (test_gpu_matvec_q8x.py), these reach every kernel a field selects. The models
are random-weight Llama shapes of 2048-wide rows (so that the streaming gate/up kernel, the
16-row register-capped matvecs and the decode attention kernels of head size 128 apply), in
Q4_0 and Q8_0, built in the test; their logits are peaked (unit-variance embeddings), so a
flipped pick would be a real difference, not a near-tie. Skipped where no GPU is found."""

from __future__ import annotations

import pytest

import rocmforge as rf
from devices import HAS_GPU

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")

N_GEN = 24

# Every field, each non-default value a test sets (the defaults are the first run).
VARIANTS = [
    {"graphs": False},
    {"decode_ahead": False},
    {"fuse_norm": False},
    {"fuse_rope": False},
    {"matvec_rows": 4},
    {"matvec_rows": 8},
    {"matvec_rows": 16},
    {"glu_rows": 4},
    {"glu_rows": 8},
    {"matvec_capped": False},
    {"matvec_stream": False},
    {"stream_stages": 2},
    {"stream_stages": 3},
    {"mma": False},
    {"mma_min_rows": 64},
    {"mma_tile_rows": 64},
    {"mma_tile_rows": 128},
    {"decode_attention": "head"},
    {"decode_attention": "kv"},
    {"decode_attention": "flash"},
]
# Fields of the sampled step (the greedy runs above never launch the sampler).
SAMPLED_VARIANTS = [{"sample_block": b} for b in (128, 256, 512, 1024)]


@pytest.fixture(scope="module", params=["Q4_0", "Q8_0"])
def wide_model(request, tmp_path_factory):
    from llamacpp_vocab import llamacpp_vocab_path
    from models import ModelShape, make_model

    try:
        vocab = llamacpp_vocab_path("llama-bpe")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama.cpp llama-bpe vocabulary unavailable: {e}")
    shape = ModelShape("llama", 2048, 2, 16, 4, 5632, 32000, True, 4096, 500000.0, 1e-5,
                       "llama-bpe", True)
    out = tmp_path_factory.mktemp("wide") / f"llama-wide-{request.param}.gguf"
    return str(make_model(shape, request.param, out, vocab_path=vocab))


def greedy(path, tuning, prompt):
    with rf.Model(path, device="gpu", n_ctx=256, tuning=tuning) as model:
        # a prefill of 40 tokens (tensor cores from 9 rows), then one-token steps
        out = model.generate_tokens(prompt, max_tokens=N_GEN, temperature=0)
        return out, model.plan, model.tuning, repr(model)


def test_every_tuning_value_decodes_the_same_tokens(wide_model, rng):
    prompt = rng.integers(0, 32000, 40).tolist()
    want, plan, tuning, text = greedy(wide_model, None, prompt)
    assert len(want) == N_GEN
    assert tuning == rf.devices()[0]["tuning"]
    assert "tuning=default" in text or "tuning={" in text
    # the defaults fuse what the 2048-wide Llama block has
    assert any(line.startswith("fused q/k/v matvecs + rope + KV append") for line in plan), plan
    assert any("RMS norm handed over" in line for line in plan), plan
    assert any(line.startswith("fused gate/up matvecs + silu") for line in plan), plan
    # what runs as its own op: the embedding and the attention only
    ops = sorted(line.split()[1] for line in plan if line.startswith("op "))
    assert ops == ["attention", "embedding"], plan
    for variant in VARIANTS:
        got, plan, tuning, text = greedy(wide_model, variant, prompt)
        (key, value), = variant.items()
        assert tuning[key] == value, (variant, tuning)
        assert f"{key}=" in text, text
        assert got == want, (variant, got, want)
        if key == "fuse_rope":
            assert any(line.startswith("fused rope of q and k + KV append") for line in plan), plan
        if key == "fuse_norm":
            assert any(line.startswith("op rms_norm") for line in plan), plan
            assert not any("RMS norm" in line for line in plan), plan


def sampled(path, tuning, prompt, **kw):
    with rf.Model(path, device="gpu", n_ctx=256, tuning=tuning) as model:
        return model.generate_tokens(prompt, max_tokens=N_GEN, seed=11, **kw), model.tuning


@pytest.mark.parametrize("filters", [
    dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),  # the sampler's candidate prefix
    dict(temperature=2.0, top_k=0, top_p=1.0, min_p=0.0),  # no filter: the whole row's draw
])
def test_every_sampler_block_draws_the_same_tokens(wide_model, rng, filters):
    # The block sets how the sampler splits a row into slices (and so its candidates per
    # slice), not the distribution nor the draw: the same seed gives the same tokens.
    prompt = rng.integers(0, 32000, 12).tolist()
    want, _ = sampled(wide_model, None, prompt, **filters)
    assert want
    for variant in SAMPLED_VARIANTS:
        got, tuning = sampled(wide_model, variant, prompt, **filters)
        (key, value), = variant.items()
        assert tuning[key] == value, (variant, tuning)
        assert got == want, (variant, got, want)


def test_bad_tuning_is_a_value_error(wide_model):
    with pytest.raises(ValueError, match="matvec_rows"):
        rf.Model(wide_model, device="gpu", n_ctx=64, tuning={"matvec_rows": 3})
    with pytest.raises(ValueError, match="sample_block"):
        rf.Model(wide_model, device="gpu", n_ctx=64, tuning={"sample_block": 100})
    with pytest.raises(ValueError, match="no_such_field"):
        rf.Model(wide_model, device="gpu", n_ctx=64, tuning={"no_such_field": 1})
    # a launch attribute of the device: ROCMFORGE_TUNING sets it, a model cannot
    overlap = not rf.devices()[0]["tuning"]["overlap"]
    with pytest.raises(ValueError, match="overlap"):
        rf.Model(wide_model, device="gpu", n_ctx=64, tuning={"overlap": overlap})
