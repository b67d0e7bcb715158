"""`Model.generate_batch`: several prompts at once, each in a KV cache of its own, one batched
step for all running generations. Each text must be the one `Model.generate` gives for that
prompt alone (greedy, and sampled with the same seed), whatever else is in the batch and
however the prompts queue for slots; bad arguments fail cleanly and leave the model usable."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from test_model import Tiny

WORDS = ["the", "cat", "sat", "on", "a", "mat", "in", "he", "at", "and", "x", "zq"]


def prompts(rng, n):
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 9)))) for _ in range(n)]


def tiny_model(tmp_path, rng, dtype):
    arch = str(rng.choice(["llama", "qwen2", "qwen3", "gemma3", "phi3"]))
    kw = dict(layers=7, window=6, head_dim=32) if arch == "gemma3" else {}
    m = Tiny(rng, arch=arch, dim=64, heads=4, kv_heads=2, ffn=96, **kw)
    m.write(tmp_path / "m.gguf", dtype)
    return arch, str(tmp_path / "m.gguf")


@pytest.mark.parametrize("dtype", ["F32", "Q8_0"])
def test_batch_equals_each_prompt_alone(tmp_path, rng, device, dtype):
    arch, path = tiny_model(tmp_path, rng, dtype)
    ps = prompts(rng, int(rng.integers(3, 8)))
    max_batch = int(rng.integers(1, len(ps) + 2))  # fewer slots than prompts, or more
    n = int(rng.integers(4, 24))
    with rf.Model(path, device=device) as model:
        alone = [model.generate(p, max_tokens=n, temperature=0) for p in ps]
        batch = model.generate_batch(ps, max_tokens=n, temperature=0, max_batch=max_batch)
        assert batch == alone, (arch, max_batch)
        kw = dict(max_tokens=n, temperature=1.1, top_k=0, top_p=1.0, min_p=0.0, seed=int(rng.integers(1 << 30)))
        alone = [model.generate(p, **kw) for p in ps]
        assert model.generate_batch(ps, max_batch=max_batch, **kw) == alone, (arch, max_batch)
        # the model is left as it was: a single generation still gives what it gave
        assert model.generate(ps[0], max_tokens=n, temperature=0) == batch[0]


def test_batch_with_penalties_and_stop_strings(tmp_path, rng, device):
    arch, path = tiny_model(tmp_path, rng, "Q8_0")
    ps = prompts(rng, 5)
    with rf.Model(path, device=device) as model:
        texts = [model.generate(p, max_tokens=30, temperature=0) for p in ps]
        long = max(texts, key=len)
        stop = [long[2:4]] if len(long) >= 4 else ["\x00"]
        kw = dict(max_tokens=30, temperature=0.7, repeat_penalty=1.3, seed=5, stop=stop)
        alone = [model.generate(p, **kw) for p in ps]
        assert model.generate_batch(ps, max_batch=3, **kw) == alone, arch
        assert all(stop[0] not in t for t in model.generate_batch(ps, **kw))


def test_batch_bad_arguments_leave_the_model_usable(tmp_path, rng, device):
    m = Tiny(rng, n_ctx=64)
    m.write(tmp_path / "m.gguf")
    with rf.Model(str(tmp_path / "m.gguf"), device=device) as model:
        want = model.generate("the cat", max_tokens=8, temperature=0)
        with pytest.raises(ValueError, match="max_batch"):
            model.generate_batch(["a"], max_batch=0)
        with pytest.raises(TypeError):
            model.generate_batch("the cat")  # a string, not a list of them
        with pytest.raises(ValueError, match="context"):
            model.generate_batch(["a", "the " * 200], temperature=0)
        with pytest.raises(ValueError, match="temperature"):
            model.generate_batch(["a"], temperature=-1)
        with pytest.raises(ValueError, match="rows"):
            model.generate_batch(["a b"] * 70, max_tokens=2, max_batch=70)  # more rows than n_ctx
        assert model.generate_batch([], max_tokens=3) == []
        assert model.generate_batch(["the cat"], max_tokens=0) == [""]
        assert model.generate("the cat", max_tokens=8, temperature=0) == want
        assert model.generate_batch(["the cat"] * 3, max_tokens=8, temperature=0) == [want] * 3


def test_long_prompts_prefill_in_chunks_beside_running_generations(tmp_path, rng, device):
    """Prompts longer than one prefill chunk (512 tokens) are evaluated over several steps while
    the others generate; every text still equals the prompt's alone."""
    m = Tiny(rng, n_ctx=2000, dim=64, heads=4, kv_heads=2, ffn=96, layers=1)
    m.write(tmp_path / "m.gguf", "Q8_0")
    ps = prompts(rng, 3)
    ps.insert(1, " ".join(rng.choice(WORDS, 700)))
    ps.append(" ".join(rng.choice(WORDS, 800)))
    with rf.Model(str(tmp_path / "m.gguf"), device=device) as model:
        assert len(model.tokenize(ps[-1])) > 2 * 512
        alone = [model.generate(p, max_tokens=12, temperature=0) for p in ps]
        assert model.generate_batch(ps, max_tokens=12, temperature=0, max_batch=3) == alone
