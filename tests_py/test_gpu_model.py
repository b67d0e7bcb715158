"""rocmforge.Model on a GPU (skipped where none is found; `scripts/gpu-check.sh model` runs it).
The numerics are held by test_model.py, whose model tests also run on device="gpu"; here:
the defaults, device memory, and agreement with the CPU model."""

from __future__ import annotations

import numpy as np
import pytest

import rocmforge as rf
from devices import HAS_GPU
from test_model import Tiny, reference_logits, rel_err

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="no GPU found")


def gpu_memory_free() -> int:
    return next(d for d in rf.devices() if d["device"] == "gpu:0")["memory_free"]


def test_gpu_defaults_and_device_name(tmp_path, rng):
    m = Tiny(rng)
    m.write(tmp_path / "m.gguf")
    with rf.Model(str(tmp_path / "m.gguf"), device="gpu") as model:
        assert model.config["kv_dtype"] == "f16"
        assert model.device == next(d for d in rf.devices() if d["device"] == "gpu:0")["name"]
    with rf.Model(str(tmp_path / "m.gguf"), device="auto") as model:
        assert model.device != "cpu"


def test_device_memory_returns_after_models_are_closed(tmp_path, rng):
    m = Tiny(rng, dim=64, heads=4, kv_heads=2, ffn=96, n_ctx=2048)
    m.write(tmp_path / "m.gguf", "Q8_0")
    path = str(tmp_path / "m.gguf")
    with rf.Model(path, device="gpu") as model:  # kernels compiled and loaded
        model.generate("the", max_tokens=4, temperature=0)
    free0 = gpu_memory_free()
    for _ in range(5):
        model = rf.Model(path, device="gpu")
        model.generate("the cat", max_tokens=8, temperature=0)
        assert gpu_memory_free() < free0  # the weights and the cache are on the device
        model.close()
    assert abs(gpu_memory_free() - free0) <= 8 << 20


def test_gpu_and_cpu_logits_agree_on_a_quantized_model(tmp_path, rng):
    """The GPU and the CPU are both close to exact arithmetic on the same Q8_0 file. The CPU
    takes 8-bit activations everywhere; the GPU f16 ones on tensor cores (m >= 9) and 8-bit
    ones in its m = 1 matvecs (a chunk of one row, the LM head), float32 elsewhere."""
    m = Tiny(rng, arch="qwen2", dim=64, heads=4, kv_heads=2, ffn=96)
    W = m.write(tmp_path / "m.gguf", "Q8_0")
    ids = rng.integers(0, m.vocab, 33)
    want = reference_logits(m, W, ids)
    for device, tol in (("gpu", 5e-3), ("cpu", 3e-2)):
        with rf.Model(str(tmp_path / "m.gguf"), device=device, kv_dtype="f32") as model:
            got = model.logits(ids.tolist())
        assert rel_err(got, want) < tol, (device, rel_err(got, want))


def test_smollm2_greedy_text_on_gpu(smollm2_path):
    with rf.Model(smollm2_path, device="gpu") as model:
        text = model.generate("The capital of France is", max_tokens=12, temperature=0)
        assert "Paris" in text, text
        ids = model.tokenize("Once upon a time")
        out = model.generate_tokens(ids, max_tokens=32, temperature=0)
        logits = model.logits(ids + out[:-1])
        # each greedy pick is the argmax of the recomputed logits at its position, up to the
        # rounding of the recompute (a prefill: tensor-core matmuls with f16 operands)
        rows = logits[len(ids) - 1:]
        gap = rows.max(axis=-1) - rows[np.arange(len(out)), out]
        assert np.all(gap <= 2e-3 * np.abs(rows).max()), gap
        assert np.mean(np.argmax(rows, axis=-1) == np.array(out)) >= 0.9
