"""The GPU model against the CPU model, logits position by position, on the qwen2 test model
(Q4_K/Q6_K/Q8_0, GQA, q/k/v biases) and on a random-weight model of SmolLM2's shape (Q8_0,
embedding scaled so logits are of unit scale: with unit-variance embeddings the logits reach
~170 and the top-5 tail sits 30-80 nats down, where any rounding difference is amplified),
both built in the test. Skipped where no GPU is found.

Measure: at each position, llama.cpp-style top-5 of the CPU's distribution; the mean over
positions and those 5 tokens of |log p_gpu - log p_cpu|. The GPU keeps activations in float32;
the CPU quantizes activations to 8 bits for its integer dot products (Q8_0 and friends), so the
bound is the issue's 0.15 for "one side quantizes activations"; the measured value is printed.
Both sides use the same kv_dtype (f32 here, and f16 for the second pass)."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from devices import HAS_GPU

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")

BOUND = 0.15


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def top5_logprob_diff(ref_logits: np.ndarray, got_logits: np.ndarray) -> float:
    a, b = log_softmax(ref_logits), log_softmax(got_logits)
    top = np.argsort(-a, axis=-1)[:, :5]
    return float(np.abs(np.take_along_axis(a, top, -1) - np.take_along_axis(b, top, -1)).mean())


@pytest.fixture(scope="module")
def smollm2_shaped_path(tmp_path_factory):
    """Built once for the module with the benchmark models' fixed seed (make_model's default), so
    that every run compares the same weights against BOUND."""
    from llamacpp_vocab import llamacpp_vocab_path
    from models import make_model

    try:
        vocab = llamacpp_vocab_path("llama-bpe")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama.cpp llama-bpe vocabulary unavailable: {e}")
    out = tmp_path_factory.mktemp("smollm2-shape") / "smollm2-shape-q8_0.gguf"
    return str(make_model("smollm2-135m", "Q8_0", out, vocab_path=vocab, embedding_std=576 ** -0.5))


@pytest.mark.parametrize("which", ["qwen2-test", "smollm2-shape"])
@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_gpu_logits_agree_with_cpu(request, rng, which, kv_dtype):
    path = request.getfixturevalue(
        "qwen2_test_model_path" if which == "qwen2-test" else "smollm2_shaped_path")
    with rf.Model(path, device="cpu", kv_dtype=kv_dtype) as cpu:
        vocab = cpu.config["vocab_size"]
        ids = rng.integers(0, vocab, 48).tolist()
        want = cpu.logits(ids)
    launches = rf.gpu_launch_count()
    with rf.Model(path, device="gpu", kv_dtype=kv_dtype) as gpu:
        got = gpu.logits(ids)
    assert rf.gpu_launch_count() > launches  # it really ran on the device
    assert np.isfinite(got).all() and np.isfinite(want).all()
    diff = top5_logprob_diff(want, got)
    top1 = float((want.argmax(-1) == got.argmax(-1)).mean())
    print(f"{which} kv={kv_dtype}: mean |log-prob diff| over the CPU's top-5 {diff:.4f}, "
          f"top-1 agreement {top1:.3f}")
    assert diff <= BOUND
