"""The Python API table of RELIABILITY.md ("The Python API must answer"), one test per row, on
tiny random-weight models written here with the `gguf` package (the builder of test_model.py).

Rows that need a GPU (out of memory) are in the GPU tests; Ctrl-C is tested in test_model.py.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import rocmforge as rf
import rocmforge.ops as ops
from test_model import Tiny

BAD_SAMPLING = [
    dict(max_tokens=-1), dict(max_tokens=-(10**6)),
    dict(temperature=-0.5), dict(temperature=float("nan")), dict(temperature=float("-inf")),
    dict(top_p=0.0), dict(top_p=-0.1), dict(top_p=1.0001), dict(top_p=float("nan")),
    dict(top_k=-1),
]


def write_tiny(tmp_path, rng, name="m.gguf", dtype="F32", **kw) -> tuple[Tiny, str]:
    m = Tiny(rng, **kw)
    path = tmp_path / name
    m.write(path, dtype)
    return m, str(path)


@pytest.fixture
def model(tmp_path, rng, device):
    m, path = write_tiny(tmp_path, rng, n_ctx=48, dim=32, heads=4, kv_heads=2, ffn=40)
    with rf.Model(path, device=device) as model:
        yield m, model


# ---- missing path, a directory, no permission ----------------------------------------------

@pytest.mark.parametrize("opener", [rf.Model, rf.GGUFFile], ids=["Model", "GGUFFile"])
def test_missing_path_directory_permission(tmp_path, rng, opener):
    with pytest.raises(FileNotFoundError):
        opener(str(tmp_path / "no such file.gguf"))
    with pytest.raises(FileNotFoundError):
        opener(str(tmp_path / "no-dir" / "m.gguf"))
    with pytest.raises(IsADirectoryError):
        opener(str(tmp_path))
    _, path = write_tiny(tmp_path, rng, dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    if os.geteuid() == 0:
        return  # root reads any file: the permission case cannot happen
    os.chmod(path, 0)
    try:
        with pytest.raises(PermissionError):
            opener(path)
    finally:
        os.chmod(path, 0o644)
    opener(path)  # readable again: it opens


# ---- arrays of wrong dtype, wrong rank, mismatched shapes, empty ----------------------------

def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_bad_arrays_name_the_argument(rng):
    x, w = f32(rng, 3, 8), f32(rng, 5, 8)
    cases = [
        (lambda: ops.matmul(x.astype(np.float64), w), TypeError, r"x .*float32"),
        (lambda: ops.matmul(x, w.astype(np.int32)), TypeError, r"w .*float32"),
        (lambda: ops.matmul(x, f32(rng, 8)), ValueError, r"w must be 2-D"),
        (lambda: ops.matmul(x, f32(rng, 5, 7)), ValueError, r"k|8|7"),
        (lambda: ops.rms_norm(x, f32(rng, 7)), ValueError, r"weight"),
        (lambda: ops.rms_norm(x, f32(rng, 8).astype(np.float16)), TypeError, r"weight .*float32"),
        (lambda: ops.softmax(np.zeros((0, 4), np.float32)), ValueError, r"x .*empty"),
        (lambda: ops.add(x, f32(rng, 3, 7)), ValueError, r"b must have"),
        (lambda: ops.embedding(w, np.array([0.5, 1.5])), TypeError, r"ids|int"),
        (lambda: ops.argmax(np.zeros(0, np.float32)), ValueError, r"x .*empty"),
        (lambda: ops.swiglu(x, f32(rng, 3, 9)), ValueError, r"up"),
        (lambda: ops.softmax("not an array"), TypeError, r"x must be a numpy.ndarray"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_bad_token_id_arrays(model):
    m, model = model
    with pytest.raises(TypeError):
        model.logits([0.5, 1.0])
    with pytest.raises(TypeError):
        model.logits([[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        model.generate_tokens("1 2 3")
    with pytest.raises(ValueError):
        model.logits([])
    with pytest.raises(ValueError):
        model.generate_tokens([])
    # NumPy integer arrays are sequences of ints: accepted, same answer as a list
    ids = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    np.testing.assert_array_equal(model.logits(ids), model.logits(ids.tolist()))


# ---- non-contiguous or Fortran-order arrays --------------------------------------------------

def test_non_contiguous_and_fortran_arrays_are_read_correctly(rng, device):
    m, n, k = 7, 11, 13
    x = f32(rng, m, k)
    w = f32(rng, n, k)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    layouts = {
        "fortran": (np.asfortranarray(x), np.asfortranarray(w)),
        "strided": (f32(rng, m, 2 * k)[:, ::2], f32(rng, 3 * n, k)[::3]),
        "negative strides": (x[::-1], w[:, ::-1]),
        "transposed view": (np.ascontiguousarray(x.T).T, np.ascontiguousarray(w.T).T),
    }
    for name, (xa, wa) in layouts.items():
        assert not (xa.flags["C_CONTIGUOUS"] and wa.flags["C_CONTIGUOUS"]), name
        ref = xa.astype(np.float64) @ wa.astype(np.float64).T
        got = ops.matmul(xa, wa, device=device)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)
    np.testing.assert_allclose(ops.matmul(*layouts["fortran"], device=device), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())
    # a negative-stride row view and a column slice through rms_norm
    big = f32(rng, 5, 2 * k + 1)
    xs, wt = big[::-1, 1::2], f32(rng, 2 * k)[::2]
    ref = xs.astype(np.float64) / np.sqrt((xs.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * wt
    np.testing.assert_allclose(ops.rms_norm(xs, wt, 1e-6, device=device), ref, rtol=1e-4, atol=1e-5)
    # and the arrays given were not changed
    assert not np.shares_memory(ops.softmax(xs, device=device), big)


# ---- prompt longer than the context ----------------------------------------------------------

def test_prompt_longer_than_context_names_both_numbers(tmp_path, rng, device):
    m, path = write_tiny(tmp_path, rng, n_ctx=64, dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    n_ctx = int(rng.integers(5, 30))
    with rf.Model(path, device=device, n_ctx=n_ctx) as model:
        too_long = rng.integers(0, 256, n_ctx + int(rng.integers(1, 20))).tolist()
        text = "a" * int(rng.integers(n_ctx + 1, 3 * n_ctx))
        n_text = len(model.tokenize(text))
        assert n_text > n_ctx

        def both(n):
            return rf"(?s)(\b{n}\b.*\b{n_ctx}\b|\b{n_ctx}\b.*\b{n}\b)"

        calls = {
            "generate_tokens": (lambda: model.generate_tokens(too_long), both(len(too_long))),
            "logits": (lambda: model.logits(too_long), both(len(too_long))),
            "generate": (lambda: model.generate(text), both(n_text)),
            "stream": (lambda: next(iter(model.generate(text, stream=True))), both(n_text)),
            "chat": (lambda: model.chat([{"role": "user", "content": text}]), rf"\b{n_ctx}\b"),
        }
        for name, (call, match) in calls.items():
            with pytest.raises(ValueError, match=match):
                call()
        # a prompt of exactly n_ctx tokens is fine for logits; the model keeps working
        assert model.logits(too_long[:n_ctx]).shape == (n_ctx, m.vocab)
        assert isinstance(model.generate("the", max_tokens=2), str)


# ---- generation reaching the context end -----------------------------------------------------

def test_generation_reaching_context_end_stops_with_length(tmp_path, rng, device):
    # A zero LM head: every logit 0, greedy takes the lowest id (token 0, never EOS) forever.
    m = Tiny(rng, tied=False, n_ctx=64, dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    m.w["output.weight"][:] = 0.0
    path = str(tmp_path / "m.gguf")
    m.write(path)
    n_ctx = int(rng.integers(8, 40))
    with rf.Model(path, device=device, n_ctx=n_ctx) as model:
        prompt = rng.integers(0, 256, int(rng.integers(1, n_ctx))).tolist()
        out = model.generate_tokens(prompt, max_tokens=10 * n_ctx, temperature=0)
        assert out == [0] * (n_ctx - len(prompt))
        assert model.stats["finish_reason"] == "length"
        # text and streaming: same end
        text = model.generate("ab", max_tokens=10 * n_ctx, temperature=0)
        assert model.stats["finish_reason"] == "length"
        n_prompt = model.stats["prompt_tokens"]
        assert model.stats["generated_tokens"] == n_ctx - n_prompt
        assert text == "\x00" * (n_ctx - n_prompt)  # token 0 is the byte 0
        stream = model.generate("ab", max_tokens=10 * n_ctx, temperature=0, stream=True)
        assert "".join(stream) == text
        assert stream.finish_reason == "length" and model.stats["finish_reason"] == "length"
        # a prompt filling the context exactly: nothing generated, "length"
        full = rng.integers(0, 256, n_ctx).tolist()
        assert model.generate_tokens(full, max_tokens=5) == []
        assert model.stats["finish_reason"] == "length"


# ---- bad sampling parameters and token ids ---------------------------------------------------

@pytest.mark.parametrize("kw", BAD_SAMPLING, ids=[f"{k}={v}" for d in BAD_SAMPLING for k, v in d.items()])
def test_bad_sampling_parameters_are_value_errors(model, kw):
    m, model = model
    calls = [
        lambda: model.generate("the", **kw),
        lambda: model.generate("the", stream=True, **kw),
        lambda: model.generate_tokens([1, 2, 3], **kw),
        lambda: model.chat([{"role": "user", "content": "hi"}], **kw),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert len(model.generate_tokens([1, 2], max_tokens=2, temperature=0)) <= 2  # still usable


def test_token_ids_outside_the_vocabulary(model, rng):
    m, model = model
    v = m.vocab
    for bad in ([v], [-1], [0, v + int(rng.integers(0, 1000))], [-(2**40)], [2**40], [2**63 - 1],
                [2**64], [-(2**70)]):
        for call in (model.logits, model.detokenize, model.generate_tokens):
            with pytest.raises(ValueError):
                call(bad)
    # the edges of the vocabulary are fine
    assert model.logits([0, v - 1]).shape == (2, v)


# ---- NaN in the logits -----------------------------------------------------------------------

@pytest.mark.parametrize("where", ["hidden state", "one logit"])
def test_nan_logits_are_an_error_not_a_token(tmp_path, rng, device, where):
    m = Tiny(rng, tied=False, n_ctx=32, dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    if where == "hidden state":
        m.w["output_norm.weight"][int(rng.integers(0, m.dim))] = np.nan
    else:  # one LM head row: only that token's logit is NaN, it must not be skipped silently
        m.w["output.weight"][int(rng.integers(0, m.vocab))] = np.nan
    path = str(tmp_path / "nan.gguf")
    m.write(path)
    with rf.Model(path, device=device) as model:
        assert np.isnan(model.logits([1, 2, 3])).any()  # logits() hands out what the model computes
        for kw in (dict(temperature=0), dict(temperature=0.8), dict(temperature=0.8, top_k=1),
                   dict(temperature=0, repeat_penalty=1.2), dict(temperature=1.0, top_p=0.5, seed=1)):
            with pytest.raises(rf.RocmForgeError, match="NaN"):
                model.generate("abc", max_tokens=3, **kw)
            with pytest.raises(rf.RocmForgeError, match="NaN"):
                model.generate_tokens([1, 2], max_tokens=3, **kw)
            with pytest.raises(rf.RocmForgeError, match="NaN"):
                list(model.generate("abc", max_tokens=3, stream=True, **kw))
        assert model.logits([4]).shape == (1, m.vocab)  # still usable


# ---- one Model used from many Python threads -------------------------------------------------

def test_many_threads_one_model_serialized(model, rng):
    m, model = model
    prompts = [rng.integers(0, 256, int(rng.integers(1, 10))).tolist() for _ in range(6)]
    want = [model.generate_tokens(p, max_tokens=8, temperature=0) for p in prompts]
    got: dict[int, list] = {}
    errors = []

    def work(i):
        try:
            for _ in range(3):
                out = model.generate_tokens(prompts[i], max_tokens=8, temperature=0)
                assert out == want[i], f"thread {i}: {out} != {want[i]}"
                assert model.tokenize(model.detokenize(prompts[i])) is not None
            got[i] = out
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [got[i] for i in range(len(prompts))] == want


# ---- close() twice, use after close ----------------------------------------------------------

def test_close_twice_and_use_after_close(tmp_path, rng, device):
    m, path = write_tiny(tmp_path, rng, dim=16, heads=2, kv_heads=1, ffn=8, layers=1)
    model = rf.Model(path, device=device)
    stream = model.generate("the", max_tokens=10, stream=True)
    model.close()
    model.close()
    assert model.closed
    calls = {
        "generate": lambda: model.generate("x"),
        "stream": lambda: model.generate("x", stream=True),
        "next(stream)": lambda: next(stream),
        "chat": lambda: model.chat([{"role": "user", "content": "hi"}]),
        "generate_tokens": lambda: model.generate_tokens([1]),
        "tokenize": lambda: model.tokenize("x"),
        "detokenize": lambda: model.detokenize([1]),
        "logits": lambda: model.logits([1]),
        "stats": lambda: model.stats,
    }
    for name, call in calls.items():
        with pytest.raises(rf.RocmForgeError, match="closed"):
            call()
    # what was read at load stays readable; repr says closed
    assert model.config["vocab_size"] == m.vocab and "closed" in repr(model)
    with model:  # a context manager on a closed model closes it again: fine
        pass
    # another model of the same file still loads and runs
    with rf.Model(path, device=device) as again:
        assert again.logits([1, 2]).shape == (2, m.vocab)
