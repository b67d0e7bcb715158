"""Device memory on a GPU (skipped where none is found): a model that does not fit the free
memory, or a KV cache that does not, is an OutOfMemoryError saying needed vs free, before
anything is allocated, and the process goes on to load what fits; a generation allocates
nothing once the model is loaded (the KV cache and the scratch are reserved at load).

"Most of the GPU already taken" is made with a ballast allocation (the lent machines' disks
cannot hold a model larger than their GPU memory)."""

from __future__ import annotations

import re

import pytest

import rocmforge as rf
from devices import HAS_GPU
from test_model import Tiny

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")

MiB = 1 << 20


def gpu0() -> dict:
    return next(d for d in rf.devices() if d["device"] == "gpu:0")


def take_all_but(headroom: int):
    """A ballast that leaves about `headroom` bytes of the GPU free."""
    free = gpu0()["memory_free"]
    assert free > headroom + 64 * MiB, "the GPU is already nearly full"
    ballast = rf._rocmforge._GpuBallast(free - headroom)
    assert ballast.nbytes == free - headroom
    return ballast


def greedy(path: str, **kw) -> str:
    with rf.Model(path, device="gpu", **kw) as model:
        return model.generate("the cat", max_tokens=12, temperature=0)


@pytest.fixture
def models(tmp_path, rng):
    """(small, big): the big one's weights alone (~40 MiB) exceed the headroom left below."""
    small, big = tmp_path / "small.gguf", tmp_path / "big.gguf"
    Tiny(rng, n_ctx=1 << 20).write(small)
    Tiny(rng, dim=512, heads=8, kv_heads=4, ffn=1536, layers=4, n_ctx=256).write(big)
    return str(small), str(big)


def test_a_model_larger_than_free_memory_is_an_error_and_a_smaller_one_still_loads(models):
    small, big = models
    want_small, want_big = greedy(small, n_ctx=64), greedy(big)  # kernels loaded beforehand
    held0 = gpu0()["memory_held"]
    ballast = take_all_but(24 * MiB)
    try:
        with pytest.raises(rf.OutOfMemoryError) as err:
            rf.Model(big, device="gpu")
        msg = str(err.value)
        m = re.search(r"needed (\d+) bytes, (\d+) bytes free", msg)
        assert m and int(m.group(1)) > int(m.group(2)), msg
        assert "loading the model" in msg and "weights" in msg, msg
        assert gpu0()["memory_held"] == held0 + ballast.nbytes  # nothing left behind
        # the process goes on: a model that fits loads and answers as before
        assert greedy(small, n_ctx=64) == want_small
    finally:
        ballast.close()
    assert gpu0()["memory_held"] == held0
    assert greedy(big) == want_big


def test_a_kv_cache_larger_than_free_memory_is_an_error(models):
    small, _ = models
    want = greedy(small, n_ctx=64)
    ballast = take_all_but(24 * MiB)
    try:
        # 2 layers x (K + V) x 18 floats x 2 bytes = 144 bytes a position: 2^20 need 144 MiB
        with pytest.raises(rf.OutOfMemoryError, match=r"KV cache of \d+ bytes for 1048576 positions"):
            rf.Model(small, device="gpu", n_ctx=1 << 20)
        assert greedy(small, n_ctx=64) == want
    finally:
        ballast.close()


def test_a_generation_allocates_nothing_after_the_load(tmp_path, rng):
    """Up to the full context (decode attention splits its keys over blocks and needs
    scratch at long lengths): the memory held after loading does not change."""
    path = str(tmp_path / "m.gguf")
    Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96, n_ctx=4096).write(path, "Q8_0")
    with rf.Model(path, device="gpu") as model:
        held = gpu0()["memory_held"]
        prompt = "the cat sat on the mat. " * 400
        n = len(model.tokenize(prompt))
        if n > 4096 - 16:
            prompt = prompt[: len(prompt) * (4096 - 16) // n]
        assert len(model.tokenize(prompt)) > 3000
        for _ in range(3):  # prefill chunks against a long cache, then decode steps at its end
            model.generate(prompt, max_tokens=8, temperature=0)
            model.generate(prompt[:100], max_tokens=8, temperature=0.7, seed=1)
        assert gpu0()["memory_held"] == held


def test_too_large_a_ballast_is_out_of_memory():
    with pytest.raises(rf.OutOfMemoryError, match="needed"):
        rf._rocmforge._GpuBallast(gpu0()["memory_total"] * 2)
