"""llama.cpp's vocabulary files (``models/ggml-vocab-*.gguf``), the tokenizers of test and
benchmark models: fetched once from the pinned llama-cpp-python sdist into the test-data cache,
read with a small GGUF metadata reader, and turned into a model file's tokenizer metadata.

- :func:`llamacpp_vocab_path`: the path of a vocabulary file, fetched with pip on first use and
  kept in ``~/.cache/rocmforge/test-data/`` (honours XDG_CACHE_HOME).
- :func:`read_gguf_metadata`: the key/value metadata of a GGUF file (the vocabulary files hold
  nothing else; gguf.GGUFReader takes about a minute on a 150k-token vocabulary).
- :func:`vocab_metadata`: a vocabulary's tokenizer keys, padded or cut to a model's size.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import gguf
import numpy as np

from rocmforge._models import cache_dir

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
LLAMA_CPP_PYTHON_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

#: name -> (file name under vendor/llama.cpp/models/ in the sdist, sha256)
VOCAB_FILES = {
    "qwen2": ("ggml-vocab-qwen2.gguf",
              "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c"),
    "llama-bpe": ("ggml-vocab-llama-bpe.gguf",
                  "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"),
}


def data_cache_dir() -> Path:
    """Where test data files are kept: ``~/.cache/rocmforge/test-data`` (honours XDG_CACHE_HOME)."""
    return cache_dir() / "test-data"


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def llamacpp_vocab_path(name: str = "qwen2", fetch: bool = True) -> Path:
    """Path of llama.cpp's ``ggml-vocab-<name>.gguf`` (``qwen2`` or ``llama-bpe``).

    On first use the llama-cpp-python sdist (pinned version and sha256) is fetched with pip,
    and its vocabulary files are extracted into :func:`data_cache_dir`.
    """
    if name not in VOCAB_FILES:
        raise ValueError(f"unknown vocabulary {name!r}; known: {sorted(VOCAB_FILES)}")
    filename, expected = VOCAB_FILES[name]
    target = data_cache_dir() / filename
    # the tokenizer tests keep the sdist's whole models/ folder here: reuse it when present
    whole_folder = data_cache_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}" / filename
    for candidate in (target, whole_folder):
        if candidate.is_file():
            got = sha256_file(candidate)
            if got != expected:
                raise ValueError(f"{candidate} has sha256 {got}, expected {expected}: delete it to refetch")
            return candidate
    if not fetch:
        raise FileNotFoundError(f"{filename} not in {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"rocmforge: fetching llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} sdist for its "
          f"vocabulary files into {target.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--no-binary", "llama-cpp-python", "-d", tmp,
             f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            check=True,
        )
        sdist = Path(tmp) / LLAMA_CPP_PYTHON_SDIST
        if not sdist.is_file():
            raise FileNotFoundError(f"pip download gave no {LLAMA_CPP_PYTHON_SDIST}")
        got = sha256_file(sdist)
        if got != LLAMA_CPP_PYTHON_SDIST_SHA256:
            raise ValueError(f"{sdist.name} has sha256 {got}, expected {LLAMA_CPP_PYTHON_SDIST_SHA256}")
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/models/"
        with tarfile.open(sdist) as tar:
            for member_file, member_sha in VOCAB_FILES.values():
                src = tar.extractfile(prefix + member_file)
                if src is None:
                    raise FileNotFoundError(f"{member_file} missing from {sdist.name}")
                data = src.read()
                if hashlib.sha256(data).hexdigest() != member_sha:
                    raise ValueError(f"{member_file} in {sdist.name} does not match its pinned sha256")
                partial = target.parent / (member_file + ".partial")
                partial.write_bytes(data)
                os.replace(partial, target.parent / member_file)
    return target


# GGUF metadata value types: scalars by struct format and NumPy item type; 8 is a string, 9 an array.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
                10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


def read_gguf_metadata(path: os.PathLike | str) -> dict:
    """The key/value metadata of a GGUF file. Strings stay ``bytes`` (as stored); numeric arrays
    are NumPy arrays, string arrays lists of ``bytes``."""
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    pos = 24

    def read_string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        s = data[pos:pos + n]
        pos += n
        return s

    def read_value(vtype: int):
        nonlocal pos
        if vtype == _STRING:
            return read_string()
        if vtype == _ARRAY:
            item_type, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item_type == _STRING:
                return [read_string() for _ in range(n)]
            if item_type in _NUMPY_TYPES:
                arr = np.frombuffer(data, dtype=_NUMPY_TYPES[item_type], count=n, offset=pos)
                pos += arr.nbytes
                return arr.copy()
            return [read_value(item_type) for _ in range(n)]
        fmt = _SCALAR_FORMATS[vtype]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(n_kv):
        key = read_string().decode("utf-8")
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = read_value(vtype)
    return meta


def vocab_metadata(vocab_path: os.PathLike | str, n_vocab: Optional[int], add_bos: bool) -> dict:
    """The tokenizer metadata of a llama.cpp vocabulary file, as `gguf_builder.write_gguf` takes
    it (key -> (value, type[, item type])), its token list padded with ``[PAD<i>]`` tokens or
    truncated (with the merges that make dropped tokens) to ``n_vocab``."""
    T = gguf.GGUFValueType
    src = read_gguf_metadata(vocab_path)
    tokens = list(src["tokenizer.ggml.tokens"])
    token_type = [int(x) for x in src["tokenizer.ggml.token_type"]]
    merges = list(src.get("tokenizer.ggml.merges", []))
    if n_vocab is not None and n_vocab > len(tokens):
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            token_type.append(int(gguf.TokenType.USER_DEFINED))
    elif n_vocab is not None and n_vocab < len(tokens):
        tokens, token_type = tokens[:n_vocab], token_type[:n_vocab]
        kept = set(tokens)
        merges = [mg for mg in merges if mg.replace(b" ", b"", 1) in kept
                  and all(part in kept for part in mg.split(b" ", 1))]
    n = len(tokens)

    meta = {
        "tokenizer.ggml.model": (src["tokenizer.ggml.model"], T.STRING),
        "tokenizer.ggml.pre": (src["tokenizer.ggml.pre"], T.STRING),
        "tokenizer.ggml.tokens": (tokens, T.ARRAY, T.STRING),
        "tokenizer.ggml.token_type": (token_type, T.ARRAY, T.INT32),
    }
    if merges:
        meta["tokenizer.ggml.merges"] = (merges, T.ARRAY, T.STRING)
    for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"):
        full = f"tokenizer.ggml.{key}"
        if full in src and int(src[full]) < n:
            meta[full] = (int(src[full]), T.UINT32)
    meta["tokenizer.ggml.add_bos_token"] = (add_bos, T.BOOL)
    if "tokenizer.chat_template" in src:
        meta["tokenizer.chat_template"] = (src["tokenizer.chat_template"], T.STRING)
    return meta
