"""What a person sees at the prompt: reprs that say what a Model and a GGUFFile hold (checked
against the `gguf` package's reading of the same file), a docstring on every public name,
`help()` that documents arguments and errors, load progress only on a terminal, and `stats`."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import Counter

import gguf
import pytest

import rocmforge as rf


def public_callables():
    """(qualified name, object) of every public class, function, method and property."""
    for name in rf.__all__:
        obj = getattr(rf, name)
        if name.startswith("_") or isinstance(obj, str):
            continue
        if inspect.ismodule(obj):
            for fname in obj.__all__:
                yield f"{name}.{fname}", getattr(obj, fname)
            continue
        yield name, obj
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if not attr.startswith("_"):
                    yield f"{name}.{attr}", member


@pytest.mark.parametrize("name,obj", list(public_callables()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_public_name_has_a_docstring(name, obj):
    doc = getattr(obj, "__doc__", None)
    assert doc and len(doc.strip()) > 10, f"{name} has no docstring"


def test_help_of_generate_documents_arguments_defaults_and_errors():
    doc = rf.Model.generate.__doc__
    for word in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed",
                 "stop", "stream", "finish_reason", "Raises", "KeyboardInterrupt", "ValueError"):
        assert word in doc, word
    sig = inspect.signature(rf.Model.generate)
    assert sig.parameters["max_tokens"].default == 128 and sig.parameters["temperature"].default == 0.8
    model_doc = rf.Model.__doc__
    for word in ("device", "n_ctx", "kv_dtype", "verbose", "FileNotFoundError", "GGUFError", "threads"):
        assert word in model_doc, word
    assert "[len(ids), vocab_size]" in rf.Model.logits.__doc__


def test_model_repr_says_what_it_holds(smollm2_path):
    reader = gguf.GGUFReader(smollm2_path)
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    n_layers = int(reader.fields["llama.block_count"].contents())
    with rf.Model(smollm2_path, device="cpu", n_ctx=333) as model:
        r = repr(model)
        assert model.config["n_params"] == n_params
        assert f"parameters={n_params / 1e6:.1f}M" in r, r
        for t, n in types.items():
            assert f"{t}: {n}" in r, (t, n, r)
        assert "architecture=llama" in r and f"layers={n_layers}" in r, r
        assert 'device="cpu"' in r and "n_ctx=333" in r and "kv_dtype=f32" in r, r
        assert smollm2_path in r and "closed" not in r
    assert repr(model).endswith(", closed)")


def test_gguf_file_repr(smollm2_path):
    reader = gguf.GGUFReader(smollm2_path)
    with rf.GGUFFile(smollm2_path) as g:
        r = repr(g)
        assert f"tensors={len(reader.tensors)}" in r and "architecture=\"llama\"" in r, r
        assert f"size={os.path.getsize(smollm2_path)} bytes" in r, r
    assert "closed" in repr(g)


LOAD = "import rocmforge as rf, sys; m = rf.Model(sys.argv[1], device='cpu', verbose={v}); print('loaded')"


def test_load_is_silent_off_a_terminal(smollm2_path):
    r = subprocess.run([sys.executable, "-c", LOAD.format(v=False), smollm2_path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "loaded\n" and r.stderr == "", r.stderr
    r = subprocess.run([sys.executable, "-c", LOAD.format(v=True), smollm2_path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # verbose off a terminal: one summary line, no progress bar
    assert r.stderr.startswith("rocmforge: loaded") and "\r" not in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_load_progress_bar_on_a_terminal(smollm2_path):
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: stdout and stderr are the terminal
        os.execv(sys.executable, [sys.executable, "-c", LOAD.format(v=True), smollm2_path])
    out = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    text = out.decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    # the bar counts the tensor data section
    size_mib = round((os.path.getsize(smollm2_path) - gguf.GGUFReader(smollm2_path).data_offset) / 2**20)
    assert "100%" in text and "[" + "#" * 30 + "]" in text, text
    assert abs(int(text.split(" MiB")[0].rsplit("/", 1)[1]) - size_mib) <= 1, text
    assert "\x1b[K" in text and "rocmforge: loaded" in text and text.rstrip().endswith("loaded")


def test_stream_in_a_for_loop_and_stats(smollm2_path):
    with rf.Model(smollm2_path, device="cpu") as model:
        whole = model.generate("The capital of France is", max_tokens=10, temperature=0)
        stream = model.generate("The capital of France is", max_tokens=10, temperature=0, stream=True)
        assert iter(stream) is stream and stream.finish_reason is None
        pieces = []
        for piece in stream:
            assert isinstance(piece, str) and piece
            pieces.append(piece)
        assert "".join(pieces) == whole and len(pieces) > 1
        s = model.stats
        assert s["finish_reason"] == stream.finish_reason
        n_prompt = len(model.tokenize("The capital of France is"))
        assert s["prompt_tokens"] == n_prompt
        assert s["finish_reason"] == "length" and s["generated_tokens"] == 10
        assert s["prefill_tokens_per_s"] > 0 and s["decode_tokens_per_s"] > 0
        model.generate("The capital of France is", max_tokens=10, temperature=0, stop=" Paris")
        assert model.stats["finish_reason"] == "stop"


def test_readme_quickstart_runs(smollm2_path, monkeypatch, capsys):
    """The README's Quickstart Python block runs as written (on the CPU, with the default model)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("ROCMFORGE_MODEL", smollm2_path)
    exec(compile(code.replace('device="auto"', 'device="cpu"'), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Paris" in printed and "finish_reason" in printed and "architecture=llama" in printed


def test_api_reference_is_current():
    """docs/API.md is what scripts/api_docs.py writes from the docstrings."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "api_docs.py"
    api = runpy.run_path(str(script))
    assert api["OUT"].read_text() == api["render"](), "run python scripts/api_docs.py"
