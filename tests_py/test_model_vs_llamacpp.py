"""rocmforge.Model held to llama.cpp: identical token ids, and the same next-token distributions.

The reference is `tests_py/reference/llamacpp_*.json`, written by
`scripts/make_llamacpp_reference.py` with llama-cpp-python 0.3.36 (CPU, f16 KV cache) for the
real SmolLM2-135M-Instruct Q4_1 and gemma-3-270m files and for the deterministic random-weight
test models of tools/models.py (qwen2: GQA, q/k/v biases; qwen3; gemma3; phi3: fused matrices,
LongRoPE; Q4_K/Q6_K/Q8_0). `test_reference_data.py` checks the data still matches
those files, and that exact arithmetic (a NumPy forward pass) meets the thresholds below.

Held to, on every device of `tests_py/devices.py` (the `device` fixture):
- tokenization: the same ids as llama.cpp for every tricky string, for both values of
  `add_bos` and `special` (llama.cpp's add_special=True is our add_bos=None: the file decides),
  and the same detokenized text;
- logits along each prompt + greedy continuation (teacher forced, one fresh context):
  top-1 agreement with llama.cpp >= 95% of positions, and mean |log-prob difference| over
  llama.cpp's top-5 tokens at each position <= 0.15.
"""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from llamacpp_reference import (CASES, case_fixture, check_add_bos_true, check_detokenize,
                                check_prompt_ids, check_tokenize)

MIN_TOP1_AGREEMENT = 0.95
MAX_MEAN_TOP5_LOGPROB_DIFF = 0.15

_models: dict = {}


@pytest.fixture(params=sorted(CASES))
def case(request):
    return case_fixture(request)


def model_for(path: str, device: str, ref: dict) -> "rf.Model":
    """One model per (file, device) for the whole module: loading is the slow part."""
    key = (path, device)
    if key not in _models:
        # llama.cpp's reference ran with an f16 KV cache and a context of n_ctx positions (the
        # data's settings say so): the same here on every device, so that the comparison is of
        # like with like (the context also picks phi3's LongRoPE factor set).
        n_ctx = ref["settings"]["n_ctx"]
        _models[key] = rf.Model(path, device=device, kv_dtype="f16", n_ctx=n_ctx)
    assert _models[key].config["n_ctx"] == ref["settings"]["n_ctx"]
    return _models[key]


def teardown_module(module):
    for m in _models.values():
        m.close()
    _models.clear()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def test_tokenize_matches_llamacpp(case):
    ref, path = case
    check_tokenize(ref, model_for(path, "cpu", ref))


def test_add_bos_true_prepends_bos(case):
    ref, path = case
    check_add_bos_true(ref, model_for(path, "cpu", ref))


def test_detokenize_matches_llamacpp(case):
    ref, path = case
    check_detokenize(ref, model_for(path, "cpu", ref))


def test_prompt_tokens_match_llamacpp(case):
    ref, path = case
    check_prompt_ids(ref, model_for(path, "cpu", ref))


def test_logits_match_llamacpp(case, device):
    ref, path = case
    m = model_for(path, device, ref)
    n_vocab = ref["vocab"]["n_vocab"]
    agree = total = 0
    diffs = []
    worst = (0.0, None)
    for seq in ref["sequences"]:
        ids = seq["prompt_ids"] + seq["continuation_ids"]
        logits = m.logits(ids)
        assert logits.dtype == np.float32
        assert logits.shape == (len(ids), n_vocab)
        assert np.all(np.isfinite(logits)), seq["prompt"]
        ours = log_softmax(logits)
        ref_ids = np.array(seq["top_ids"])                  # [positions, top_k]
        ref_lp = np.array(seq["top_logprobs"])              # [positions, top_k]
        agree += int(np.sum(np.argmax(ours, axis=-1) == ref_ids[:, 0]))
        total += len(ids)
        d = np.abs(np.take_along_axis(ours, ref_ids[:, :5], axis=-1) - ref_lp[:, :5])
        diffs.append(d.ravel())
        if d.max() > worst[0]:
            worst = (float(d.max()), seq["prompt"][:40])
    top1 = agree / total
    mean_diff = float(np.mean(np.concatenate(diffs)))
    print(f"{ref['model']['file']} on {device}: top-1 agreement {top1:.4f} ({agree}/{total}), "
          f"mean |log-prob diff| over llama.cpp's top-5 {mean_diff:.4f}, "
          f"max {worst[0]:.4f} (prompt {worst[1]!r})")
    assert top1 >= MIN_TOP1_AGREEMENT
    assert mean_diff <= MAX_MEAN_TOP5_LOGPROB_DIFF
