"""llama.cpp's reference data (`tests_py/reference/llamacpp_*.json`, written by
`scripts/make_llamacpp_reference.py` with llama-cpp-python 0.3.36) and the checks that hold a
tokenizer to it. Used by test_tokenizer_vs_llamacpp.py (rf.Tokenizer) and
test_model_vs_llamacpp.py (rf.Model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).parent / "reference"

# case name -> (data file, the fixture giving the model file the data was made from)
CASES = {
    "smollm2": ("llamacpp_smollm2.json", "smollm2_path"),
    "qwen2_test": ("llamacpp_qwen2_test.json", "qwen2_test_model_path"),
    "qwen3_test": ("llamacpp_qwen3_test.json", "qwen3_test_model_path"),
    "gemma3_test": ("llamacpp_gemma3_test.json", "gemma3_test_model_path"),
    "phi3_test": ("llamacpp_phi3_test.json", "phi3_test_model_path"),
    "gemma3_270m": ("llamacpp_gemma3_270m.json", "gemma3_270m_path"),
}


def load_reference(name: str) -> dict:
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference data {path.name} missing (run scripts/make_llamacpp_reference.py)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def case_fixture(request) -> tuple:
    """(reference data, model file path) for the case named by request.param."""
    data_file, path_fixture = CASES[request.param]
    ref = load_reference(data_file)
    return ref, request.getfixturevalue(path_fixture)


def check_tokenize(ref: dict, tok) -> None:
    """tok.tokenize gives llama.cpp's ids for every string and flag combination. llama.cpp's
    add_special=True adds BOS only if the file says so: that is our add_bos=None."""
    mismatches = []
    n = 0
    for rec in ref["tokenizations"]:
        for key, expected in rec["ids"].items():
            add_special = key.startswith("add_special=True")
            special = key.endswith("special=True")
            got = list(tok.tokenize(rec["text"], add_bos=None if add_special else False, special=special))
            n += 1
            if got != expected:
                mismatches.append(f"{rec['text']!r} [{key}]: llama.cpp {expected}, rocmforge {got}")
    print(f"{ref['model']['file']}: {n - len(mismatches)}/{n} tokenizations identical to llama.cpp")
    assert not mismatches, "\n".join(mismatches)


def check_add_bos_true(ref: dict, tok) -> None:
    """add_bos=True puts the file's BOS first, whatever the file's default."""
    bos = ref["vocab"]["bos"]
    for rec in ref["tokenizations"]:
        plain = rec["ids"]["add_special=False,special=True"]
        assert list(tok.tokenize(rec["text"], add_bos=True, special=True)) == [bos] + plain, rec["text"]


def check_detokenize(ref: dict, tok) -> None:
    """tok.detokenize gives llama.cpp's text (ids without control tokens: how those render is
    not fixed by the API)."""
    checked = 0
    for rec in ref["tokenizations"]:
        if rec["has_control_token"]:
            continue
        ids = rec["ids"]["add_special=False,special=True"]
        assert tok.detokenize(ids) == rec["detokenized"], rec["text"]
        checked += 1
    assert checked >= 20


def check_prompt_ids(ref: dict, tok) -> None:
    for seq in ref["sequences"]:
        assert list(tok.tokenize(seq["prompt"], add_bos=None, special=True)) == seq["prompt_ids"], seq["prompt"]
