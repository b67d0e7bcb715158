"""rocmforge.Tokenizer held to llama.cpp's reference data: identical token ids for tricky strings
(unicode, emoji, CJK, combining marks, whitespace runs, digits, code, special tokens) with every
combination of `add_bos` and `special`, the same detokenized text, the same prompt ids."""

from __future__ import annotations

import functools

import pytest

import rocmforge as rf
from llamacpp_reference import (CASES, case_fixture, check_add_bos_true, check_detokenize,
                                check_prompt_ids, check_tokenize)


@pytest.fixture(params=sorted(CASES))
def case(request):
    return case_fixture(request)


@functools.lru_cache(maxsize=None)
def tokenizer(path: str) -> rf.Tokenizer:
    return rf.Tokenizer(path)


def test_tokenize_matches_llamacpp(case):
    ref, path = case
    check_tokenize(ref, tokenizer(path))


def test_add_bos_true_prepends_bos(case):
    ref, path = case
    check_add_bos_true(ref, tokenizer(path))


def test_detokenize_matches_llamacpp(case):
    ref, path = case
    check_detokenize(ref, tokenizer(path))


def test_prompt_tokens_match_llamacpp(case):
    ref, path = case
    check_prompt_ids(ref, tokenizer(path))
