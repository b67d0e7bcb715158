"""Shared fixtures. Tests draw fresh random inputs every run from the one test generator, `rng`
(seeded from the clock; the seed is printed and recorded with the test, and
ROCMFORGE_TEST_SEED=<seed> replays it). Files that must be the same on every run (the qwen2 test
model, whose llama.cpp reference data is checked in) draw from a generator of the same type with
a fixed seed.

The GGUF writer and the model builders are in the repository's tools/ (shared with the benchmark
scripts, not shipped in the package): it is put on the import path here."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

# NumPy references run on one BLAS thread: the cores belong to the op under test, and a threaded
# BLAS on small float64 matmuls is slower (thread spin-up) on a 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

from devices import DEVICES


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("ROCMFORGE_TEST_SEED") or time.time_ns() % (2**32))  # empty: unset
    request.node.user_properties.append(("seed", seed))
    print(f"[rng seed {seed}: rerun with ROCMFORGE_TEST_SEED={seed}]")
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def smollm2_path():
    """The real SmolLM2-135M-Instruct Q4_1 file (fetched from PyPI on first use)."""
    from rocmforge._models import default_model_path

    try:
        return str(default_model_path())
    except Exception as e:  # no network and no cache: the real-file tests cannot run
        pytest.skip(f"SmolLM2 file unavailable: {e}")


@pytest.fixture(params=DEVICES)
def device(request):
    """Each op test runs once per device of `tests_py/devices.py`."""
    return request.param


@pytest.fixture(scope="session")
def qwen2_test_model_path(tmp_path_factory):
    """The deterministic random-weight qwen2 test model (tools/models.py), built once per
    session (its tokenizer comes from llama.cpp's vocabulary file, fetched on first use)."""
    from llamacpp_vocab import llamacpp_vocab_path
    from models import make_qwen2_test_model

    try:
        vocab = llamacpp_vocab_path("qwen2")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama.cpp qwen2 vocabulary unavailable: {e}")
    out = tmp_path_factory.mktemp("qwen2-test") / "qwen2-test.gguf"
    return str(make_qwen2_test_model(out, vocab_path=vocab))


def _family_test_model(tmp_path_factory, arch):
    from llamacpp_vocab import llamacpp_vocab_path
    from models import make_family_test_model

    try:
        vocab = llamacpp_vocab_path("qwen2")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama.cpp qwen2 vocabulary unavailable: {e}")
    out = tmp_path_factory.mktemp(f"{arch}-test") / f"{arch}-test.gguf"
    return str(make_family_test_model(arch, out, vocab_path=vocab))


@pytest.fixture(scope="session")
def qwen3_test_model_path(tmp_path_factory):
    """The deterministic random-weight qwen3 test model (tools/models.py), built once."""
    return _family_test_model(tmp_path_factory, "qwen3")


@pytest.fixture(scope="session")
def gemma3_test_model_path(tmp_path_factory):
    """The deterministic random-weight gemma3 test model (tools/models.py), built once."""
    return _family_test_model(tmp_path_factory, "gemma3")


@pytest.fixture(scope="session")
def phi3_test_model_path(tmp_path_factory):
    """The deterministic random-weight phi3 test model (tools/models.py), built once."""
    return _family_test_model(tmp_path_factory, "phi3")


@pytest.fixture(scope="session")
def gemma3_270m_path():
    """Google's gemma-3-270m Q4_K_M (fetched from PyPI into the test-data cache on first use)."""
    from models import gemma3_270m_path as fetch

    try:
        return str(fetch())
    except Exception as e:  # no network and no cache
        pytest.skip(f"gemma-3-270m file unavailable: {e}")


def _fetch_vocab_files(target: Path, version: str) -> None:
    """pip-download the pinned llama-cpp-python sdist and extract llama.cpp's vocab tests."""
    import socket
    import subprocess
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--no-binary",
               "llama-cpp-python", "-d", tmp, f"llama-cpp-python=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            try:
                socket.create_connection(("pypi.org", 443), timeout=10).close()
            except OSError as e:
                pytest.skip(f"PyPI unreachable ({e}); llama.cpp vocab tests need the sdist")
            pytest.fail(f"pip download llama-cpp-python failed:\n{done.stdout}\n{done.stderr}")
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        partial = Path(tempfile.mkdtemp(dir=target.parent))
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and "/vendor/llama.cpp/models/" in member.name and name.startswith("ggml-vocab-"):
                    with tar.extractfile(member) as src:
                        (partial / name).write_bytes(src.read())
        os.replace(partial, target)


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """llama.cpp's vocabulary files with their tokenizer test pairs (`models/ggml-vocab-*` of the
    pinned llama-cpp-python sdist), fetched with pip into the test-data cache on first use."""
    from llamacpp_vocab import LLAMA_CPP_PYTHON_VERSION, data_cache_dir

    target = data_cache_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"fetching llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} (sdist) for llama.cpp's vocab tests into {target}",
              file=sys.stderr)
        _fetch_vocab_files(target, LLAMA_CPP_PYTHON_VERSION)
    return target
