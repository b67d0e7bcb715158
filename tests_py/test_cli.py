"""The `rocmforge` command: `info` on the real SmolLM2 file and on small written files, checked
against what the `gguf` package reads; errors are one line on stderr and exit status 1."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict

import gguf
import numpy as np
import pytest

from gguf_builder import Tensor, write_gguf

Q = gguf.GGMLQuantizationType
T = gguf.GGUFValueType


def run_cli(*args: str, entry_point: bool = False) -> subprocess.CompletedProcess:
    cmd = [shutil.which("rocmforge")] if entry_point else [sys.executable, "-m", "rocmforge.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


@functools.lru_cache(maxsize=None)
def expected_facts(path) -> dict:
    """What `rocmforge info --json` must say, computed with the gguf package."""
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    arch = fields.get("general.architecture")
    types: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "bytes": 0, "parameters": 0})
    for t in reader.tensors:
        entry = types[Q(t.tensor_type).name]
        entry["tensors"] += 1
        entry["bytes"] += int(t.n_bytes)
        entry["parameters"] += int(t.n_elements)
    tokens = fields.get("tokenizer.ggml.tokens")
    return {
        "file_size": os.path.getsize(path),
        "gguf_version": fields["GGUF.version"],
        "architecture": arch,
        "parameters": sum(int(t.n_elements) for t in reader.tensors),
        "tensors": len(reader.tensors),
        "tensor_types": dict(types),
        "context_length": fields.get(f"{arch}.context_length"),
        "embedding_length": fields.get(f"{arch}.embedding_length"),
        "layers": fields.get(f"{arch}.block_count"),
        "heads": fields.get(f"{arch}.attention.head_count"),
        "kv_heads": fields.get(f"{arch}.attention.head_count_kv"),
        "tokenizer_model": fields.get("tokenizer.ggml.model"),
        "tokenizer_pre": fields.get("tokenizer.ggml.pre"),
        "vocab_size": len(tokens) if tokens is not None else fields.get(f"{arch}.vocab_size"),
    }


def human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def check_info(path, expect: dict) -> str:
    """Run `info --json` and `info` on `path`, compare with `expect`; returns the text output."""
    out = run_cli("info", "--json", str(path))
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    for key, value in expect.items():
        assert facts[key] == value, key
    assert list(facts["tensor_types"].values()) == sorted(
        facts["tensor_types"].values(), key=lambda e: -e["bytes"]
    )

    text = run_cli("info", str(path))
    assert text.returncode == 0, text.stderr
    lines = {line[:18].strip(): line[18:].strip() for line in text.stdout.splitlines() if line[:18].strip()}
    assert lines["parameters"] == f"{human(expect['parameters'])} ({expect['parameters']})"
    assert lines["gguf version"] == str(expect["gguf_version"])
    assert f"({expect['file_size']} bytes)" in lines["file size"]
    assert lines["architecture"] == str(expect["architecture"])
    for label, key in (("context length", "context_length"), ("embedding length", "embedding_length"),
                       ("layers", "layers"), ("vocab size", "vocab_size")):
        assert lines[label] == (str(expect[key]) if expect[key] is not None else "-"), label
    for dtype, entry in expect["tensor_types"].items():
        row = next(line for line in text.stdout.splitlines() if line[18:].startswith(f"{dtype} "))
        assert f"{entry['tensors']} tensor" in row and f"({entry['bytes']} bytes" in row, row
    assert text.stderr == ""
    return text.stdout


def test_info_on_smollm2(smollm2_path):
    expect = expected_facts(smollm2_path)
    # numbers known for SmolLM2-135M, as a check on the check
    assert expect["parameters"] == 134_515_008 and expect["layers"] == 30
    text = check_info(smollm2_path, expect)
    assert "134.5M" in text
    assert "9 (kv heads: 3)" in text
    assert "gpt2 (pre: smollm)" in text


@pytest.mark.skipif(shutil.which("rocmforge") is None, reason="the rocmforge entry point is not installed")
def test_entry_point(smollm2_path):
    out = run_cli("info", "--json", smollm2_path, entry_point=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["parameters"] == expected_facts(smollm2_path)["parameters"]
    bad = run_cli("info", os.devnull, entry_point=True)
    assert bad.returncode == 1 and bad.stderr.startswith("rocmforge: error:")


def write_model(path, rng, with_tokenizer: bool = True) -> None:
    meta = {
        "qwen2.context_length": (int(rng.integers(64, 100_000)), T.UINT32),
        "qwen2.embedding_length": (64, T.UINT32),
        "qwen2.block_count": (3, T.UINT32),
        "qwen2.attention.head_count": (int(rng.integers(1, 9)), T.UINT32),
        "qwen2.attention.head_count_kv": (1, T.UINT32),
    }
    if with_tokenizer:
        meta["tokenizer.ggml.model"] = ("gpt2", T.STRING)
        meta["tokenizer.ggml.pre"] = ("qwen2", T.STRING)
        tokens = [f"tok{i}" for i in range(int(rng.integers(5, 300)))]
        meta["tokenizer.ggml.tokens"] = (tokens, T.ARRAY, T.STRING)
    n = int(rng.integers(1, 6))
    tensors = [Tensor.of(f"blk.{i}.ffn_norm.weight",
                         rng.standard_normal(int(rng.integers(1, 50)), dtype=np.float32)) for i in range(n)]
    tensors.append(Tensor.of("token_embd.weight", rng.standard_normal((7, 13)).astype(np.float16)))
    x = rng.standard_normal((3, 64), dtype=np.float32)
    tensors.append(Tensor.of("output.weight", gguf.quants.quantize(x, Q.Q8_0), "Q8_0"))
    write_gguf(path, "qwen2", meta, tensors)


def test_info_on_written_file(tmp_path, rng):
    path = tmp_path / "small.gguf"
    write_model(path, rng)
    expect = expected_facts(path)
    assert expect["tokenizer_pre"] == "qwen2" and expect["kv_heads"] == 1
    check_info(path, expect)


def test_info_without_tokenizer_or_tensors(tmp_path, rng):
    path = tmp_path / "bare.gguf"
    write_model(path, rng, with_tokenizer=False)
    expect = expected_facts(path)
    assert expect["vocab_size"] is None and expect["tokenizer_model"] is None
    check_info(path, expect)
    empty = tmp_path / "empty_arch.gguf"
    write_gguf(empty, "llama", {}, [])
    check_info(empty, expected_facts(empty))


def test_help_lists_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "info" in out.stdout
    sub = run_cli("info", "--help")
    assert sub.returncode == 0 and "--json" in sub.stdout
    none = run_cli()
    assert none.returncode == 2 and "COMMAND" in none.stderr


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", ["empty"]),
        (b"GGML" + bytes(20), ["magic", "not a GGUF file"]),
        (b"GGUF" + (7).to_bytes(4, "little") + bytes(16), ["version", "7"]),
        (b"GGUF" + (3).to_bytes(4, "little") + bytes(8) + (2**62).to_bytes(8, "little"), ["n_kv"]),
    ],
)
def test_bad_file_is_one_line_on_stderr(tmp_path, content, words):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    out = run_cli("info", str(path))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("rocmforge: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert str(path) in out.stderr
    for word in words:
        assert word in out.stderr


def test_missing_and_directory(tmp_path):
    missing = run_cli("info", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("rocmforge: error: ") and "No such file" in missing.stderr
    directory = run_cli("info", str(tmp_path))
    assert directory.returncode == 1 and "directory" in directory.stderr
    assert "Traceback" not in missing.stderr + directory.stderr
