"""Soak: many generate calls of every kind (prompts that reuse or reset the context, stop
strings, streams abandoned halfway, chat, errors) and many loads and drops of a model, then host
RSS (and, on a GPU, free device memory) back where it was after a warm-up.

The short form runs in CI (a few thousand tokens on a tiny model). For the long form:

    ROCMFORGE_SOAK_TOKENS=20000 ROCMFORGE_SOAK_LOADS=50 pytest tests_py/test_soak.py
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import rocmforge as rf
from test_model import Tiny

SOAK_TOKENS = int(os.environ.get("ROCMFORGE_SOAK_TOKENS", "3000"))
SOAK_LOADS = int(os.environ.get("ROCMFORGE_SOAK_LOADS", "30"))
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


def rss() -> int:
    """Resident bytes of this process (after a garbage collection)."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def device_held(device: str) -> int | None:
    """Bytes rocmforge holds on the GPU the tests use (exact: its own count), None on the CPU."""
    if device != "gpu":
        return None
    gpus = [d for d in rf.devices() if d["device"].startswith("gpu") and "error" not in d]
    return int(gpus[0]["memory_held"])


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.2f} MiB"


def assert_flat(what: str, before: int, after: int, slack: int):
    grew = after - before
    assert grew <= slack, f"{what} grew by {grew / MiB:.2f} MiB (allowed {slack / MiB:.2f} MiB)"


@pytest.fixture
def soak_model_path(tmp_path, rng):
    m = Tiny(rng, dim=32, heads=4, kv_heads=2, ffn=48, layers=2, n_ctx=96, tied=False)
    m.w["output.weight"] *= 0.3  # logits of about unit scale: sampling has real choices
    path = tmp_path / "soak.gguf"
    m.write(path)
    return m, str(path)


def one_round(model, rng, n_ctx: int) -> int:
    """Calls of every kind; returns the tokens generated."""
    generated = 0
    words = ["the", " cat", " sat", " on", " a", " mat", "\n", " in", " heat"]

    def prompt(n):
        return "".join(rng.choice(words, n))

    # 1. text generation with stop strings, sampled and greedy, growing and fresh prompts
    base = prompt(int(rng.integers(3, 10)))
    for i in range(4):
        p = base + prompt(i) if i % 2 else prompt(int(rng.integers(1, 12)))  # reuse, then reset
        model.generate(p, max_tokens=int(rng.integers(1, 30)), temperature=float(rng.choice([0.0, 0.9])),
                       stop=[str(rng.choice(words)).strip() or "t", "zz"], seed=int(rng.integers(0, 1 << 30)))
        generated += model.stats["generated_tokens"]
    # 2. a stream abandoned halfway (the iterator dropped), then one read to the end
    stream = model.generate(prompt(5), max_tokens=40, temperature=0.8, stream=True)
    for _, _piece in zip(range(int(rng.integers(1, 10))), stream):
        pass
    generated += model.stats["generated_tokens"]
    del stream
    stream = model.generate(prompt(4), max_tokens=int(rng.integers(1, 20)), stream=True, stop="mat")
    "".join(stream)
    generated += model.stats["generated_tokens"]
    # 3. chat and token-level generation running into the context end
    model.chat([{"role": "user", "content": prompt(6)}], max_tokens=20, temperature=0.7)
    generated += model.stats["generated_tokens"]
    ids = rng.integers(0, 256, int(rng.integers(n_ctx - 20, n_ctx - 1))).tolist()
    generated += len(model.generate_tokens(ids, max_tokens=100, temperature=1.0))
    # 4. errors on the way (nothing kept from them) and logits
    with pytest.raises(ValueError):
        model.generate("x", top_p=2.0)
    with pytest.raises(ValueError):
        model.logits(rng.integers(0, 256, n_ctx + 1).tolist())
    model.logits(rng.integers(0, 256, int(rng.integers(1, 30))).tolist())
    return generated


def test_soak_generate_memory_flat(soak_model_path, rng, device):
    m, path = soak_model_path
    n_ctx = 96
    with rf.Model(path, device=device, n_ctx=n_ctx) as model:
        for _ in range(3):  # warm-up: allocator pools, lazily built kernels and buffers
            one_round(model, rng, n_ctx)
        rss0, dev0 = rss(), device_held(device)
        total, rounds = 0, 0
        while total < SOAK_TOKENS:
            total += one_round(model, rng, n_ctx)
            rounds += 1
        rss1, dev1 = rss(), device_held(device)
    print(f"soak on {device}: {total} tokens in {rounds} rounds, RSS {rss0 / MiB:.1f} -> "
          f"{rss1 / MiB:.1f} MiB, device memory held {mib(dev0)} -> {mib(dev1)}")
    assert total >= SOAK_TOKENS
    # a leak of even a few hundred bytes per token or per call would show over the run
    assert_flat("host RSS", rss0, rss1, slack=4 * MiB)
    if dev0 is not None:
        assert dev1 == dev0, f"device memory held went from {dev0} to {dev1} bytes"


def test_load_and_drop_memory_flat(soak_model_path, device):
    m, path = soak_model_path

    def load_use_drop(i):
        model = rf.Model(path, device=device, n_ctx=64)
        model.generate_tokens([1, 2, 3], max_tokens=2, temperature=0)
        if i % 3 == 0:
            model.close()  # closed explicitly, or only dropped
        elif i % 3 == 1:
            _ = model.generate("the", max_tokens=30, stream=True)  # a stream left alive until the drop
        del model

    for i in range(3):
        load_use_drop(i)
    rss0, dev0 = rss(), device_held(device)
    for i in range(SOAK_LOADS):
        load_use_drop(i)
    rss1, dev1 = rss(), device_held(device)
    print(f"loads on {device}: {SOAK_LOADS}, RSS {rss0 / MiB:.1f} -> {rss1 / MiB:.1f} MiB, "
          f"device memory held {mib(dev0)} -> {mib(dev1)}")
    assert_flat("host RSS", rss0, rss1, slack=4 * MiB)
    if dev0 is not None:
        assert dev1 == dev0, f"device memory held went from {dev0} to {dev1} bytes"


def test_failed_loads_leak_nothing(tmp_path, soak_model_path, device):
    """Loads that fail half way (a missing tensor after many were loaded, a bad special token)
    free what they had built."""
    m, path = soak_model_path
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) - 100])
    missing = tmp_path / "missing.gguf"
    del m.w["blk.1.ffn_down.weight"]
    m.write(missing)
    bad = [str(truncated), str(missing), str(tmp_path / "absent.gguf")]
    errors = (rf.GGUFError, FileNotFoundError)
    for p in bad:
        with pytest.raises(errors):
            rf.Model(p, device=device)
    rss0, dev0 = rss(), device_held(device)
    for _ in range(SOAK_LOADS):
        for p in bad:
            with pytest.raises(errors):
                rf.Model(p, device=device)
    assert_flat("host RSS", rss0, rss(), slack=2 * MiB)
    assert device_held(device) == dev0
