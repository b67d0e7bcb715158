"""rocmforge.Tokenizer against llama.cpp.

The independent reference is llama.cpp's own tokenizer test suite: vocabulary-only GGUF files
with `.inp` texts and the `.out` ids llama.cpp produced for them (`tests/test-tokenizer-0.cpp`:
no BOS, special tokens not parsed). They ship inside the llama-cpp-python sdist, fetched once
with pip into the user cache. The real SmolLM2 file is checked for round trips and properties
(its exact llama.cpp ids come from separate reference data), and malformed files written with
the `gguf` package must give clear errors.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import gguf
import pytest

import rocmforge as rf
from gguf_builder import write_gguf

T = gguf.GGUFValueType

# llama.cpp vocabularies with .inp/.out pairs whose tokenizer rocmforge implements
VOCABS = [
    "llama-spm", "llama-bpe", "qwen2", "gpt-2", "phi-3",
    "starcoder", "refact", "mpt", "command-r", "falcon", "qwen35", "gemma-4", "deepseek-coder", "deepseek-llm",
]
# vocabularies of a tokenizer model rocmforge does not implement (BERT's WordPiece): UnsupportedError
UNSUPPORTED = ["bert-bge"]
# vocabularies without test pairs that must still load (no `tokenizer.ggml.pre`: the default one)
LOAD_ONLY = ["gpt-neox", "baichuan"]
# small vocabularies whose metadata is also read with the (pure Python, slow) gguf package
GGUF_PACKAGE_CHECKED = ["llama-spm", "gpt-2"]
# vocabularies for which llama.cpp's detokenizer cleans spaces (" ?" -> "?", ...)
CLEAN_SPACES = {"llama-bpe", "gpt-2", "starcoder", "refact", "mpt", "falcon", "gemma-4"}


@functools.lru_cache(maxsize=None)
def _load(path: str) -> rf.Tokenizer:
    return rf.Tokenizer(path)


@pytest.fixture(scope="session")
def vocab(vocab_dir):
    """vocab(name) -> (tokenizer, path); each file is loaded once per session."""
    def get(name: str):
        path = vocab_dir / f"ggml-vocab-{name}.gguf"
        return _load(str(path)), path
    return get


def read_cases(path: Path) -> list[tuple[str, list[int]]]:
    """The (text, ids) pairs of a vocab file, split the way test-tokenizer-0.cpp splits them."""
    raw = Path(str(path) + ".inp").read_bytes().decode("utf-8")
    texts = raw.split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":  # the file ends with a separator
        texts.pop()
    outs = Path(str(path) + ".out").read_text(encoding="utf-8").splitlines()
    assert len(texts) == len(outs), f"{path.name}: {len(texts)} texts, {len(outs)} id lines"
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


def clean_spaces(text: str) -> str:
    """llama.cpp's detokenizer clean-up, from its three rules (independent of rocmforge)."""
    text = re.sub(r" (?=[?!.,])", "", text)
    text = text.replace(" ' ", "'")
    return re.sub(r" (?='s|'m|'re|'ve)", "", text)


def stream(tok, ids, special=True) -> list[str]:
    d = tok.detokenizer(special)
    chunks = [d.push(i) for i in ids]
    chunks.append(d.finish())
    return chunks


# ---------------------------------------------------------------- llama.cpp's vocab test suite


@pytest.mark.parametrize("name", VOCABS)
def test_ids_equal_llama_cpp(vocab, name):
    tok, path = vocab(name)
    cases = read_cases(path)
    failed = [(text, want, tok.tokenize(text, add_bos=False, special=False)) for text, want in cases]
    failed = [f for f in failed if f[1] != f[2]]
    print(f"{name}: {len(cases) - len(failed)}/{len(cases)} texts tokenize to llama.cpp's ids")
    assert not failed, "\n".join(f"{t!r}\n  llama.cpp {w}\n  rocmforge {g}" for t, w, g in failed[:5])


@pytest.mark.parametrize("name", VOCABS)
def test_detokenize_round_trip(vocab, name):
    tok, path = vocab(name)
    for text, ids in read_cases(path):
        want = clean_spaces(text) if name in CLEAN_SPACES else text
        assert tok.detokenize(ids) == want, repr(text)
        # streaming: whole characters only, and the same text
        chunks = stream(tok, ids)
        assert "".join(chunks) == want, repr(text)
        assert not any("\ufffd" in c for c in chunks), repr(text)


@pytest.mark.parametrize("name", GGUF_PACKAGE_CHECKED)
def test_metadata_matches_gguf_package(vocab, name):
    tok, path = vocab(name)
    fields = gguf.GGUFReader(path).fields

    def value(key):
        f = fields.get(key)
        return None if f is None or key == "tokenizer.ggml.tokens" else f.contents()

    tokens = fields["tokenizer.ggml.tokens"]
    assert tok.vocab_size == len(tokens.data) == len(tok)
    assert tok.model == value("tokenizer.ggml.model")
    assert tok.pre == (value("tokenizer.ggml.pre") or ("gemma4" if tok.model == "gemma4" else ""))
    for attr, key in [("bos_id", "tokenizer.ggml.bos_token_id"), ("eos_id", "tokenizer.ggml.eos_token_id")]:
        if value(key) is not None:
            assert getattr(tok, attr) == value(key), attr
    if value("tokenizer.ggml.add_bos_token") is not None:
        assert tok.add_bos == value("tokenizer.ggml.add_bos_token")
    for i in (0, len(tokens.data) // 2, len(tokens.data) - 1):
        text = bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
        assert tok.token_text(i) == (text or f"[EMPTY_{i}]")
    if tok.eos_id is not None:
        assert tok.is_eog(tok.eos_id)


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_vocab(vocab_dir, name):
    with pytest.raises(rf.UnsupportedError, match="tokenizer.ggml"):
        rf.Tokenizer(vocab_dir / f"ggml-vocab-{name}.gguf")


@pytest.mark.parametrize("name", LOAD_ONLY)
def test_vocab_without_pre_type_loads(vocab, name):
    tok, _ = vocab(name)
    for text in ["Hello world", "  spaces\tand\nlines ", "数字 12345 ünïcödé 🦙"]:
        assert tok.detokenize(tok.tokenize(text, add_bos=False, special=False)) in (text, clean_spaces(text))


def test_bos_defaults(vocab):
    spm, _ = vocab("llama-spm")  # add_bos_token = true
    assert spm.tokenize("Hi")[0] == spm.bos_id == 1
    assert spm.tokenize("Hi", add_bos=False)[0] != 1
    llama3, _ = vocab("llama-bpe")  # no add_bos_token key: llama.cpp's Llama 3 default is true
    assert llama3.tokenize("Hi")[0] == llama3.bos_id == 128000
    qwen, _ = vocab("qwen2")  # no key, default false
    assert qwen.tokenize("Hi") == qwen.tokenize("Hi", add_bos=False)
    assert qwen.tokenize("Hi", add_bos=True)[0] == qwen.bos_id
    assert spm.tokenize("") == [1] and spm.tokenize("", add_bos=False) == []


def test_special_tokens(vocab):
    llama3, _ = vocab("llama-bpe")
    begin, eot = 128000, 128009  # Llama 3's <|begin_of_text|>, <|eot_id|>
    assert (llama3.token_text(begin), llama3.token_text(eot)) == ("<|begin_of_text|>", "<|eot_id|>")
    text = "<|begin_of_text|>Hi there<|eot_id|>"
    ids = llama3.tokenize(text, add_bos=False, special=True)
    assert ids[0] == begin and ids[-1] == eot
    assert ids[1:-1] == llama3.tokenize("Hi there", add_bos=False)
    plain = llama3.tokenize(text, add_bos=False, special=False)
    assert begin not in plain and eot not in plain
    assert llama3.detokenize(plain) == llama3.detokenize(ids) == text
    assert llama3.detokenize(ids, special=False) == "Hi there"
    assert llama3.is_eog(eot) and llama3.eot_id == eot and not llama3.is_eog(begin)
    # Phi-3's special tokens swallow the spaces after them (llama.cpp's rstrip for phi3 models)
    phi3, _ = vocab("phi-3")
    assert phi3.tokenize("<|user|>  Hi", special=True) == phi3.tokenize("<|user|>Hi", special=True)


# ---------------------------------------------------------------- the real SmolLM2 file

TRICKY = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "    indented code:\n\tdef f(x):\n\t\treturn x ** 2  # square\n",
    "digits 0 12 345 6789 3.14159 -42 1e10 ١٢٣",
    "ünïcödé çåfé naïve Ωμέγα Привет мир",
    "中文字符，日本語のテキスト、한국어 텍스트",
    "emoji 🦙🚀 😶‍🌫️ 👩🏽‍💻 ✅ family 👨‍👩‍👧‍👦",
    "मराठी हिन्दी ภาษาไทย ខ្មែរ العربية עברית",
    "mixed'quotes \"double\" 'single' it's we're I'll they've",
    "symbols ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
    "\u00a0non-breaking\u2003em space\u3000ideographic\u200bzero width",
    "",
    " ",
    "\n",
    "a" * 300,
]


@pytest.fixture(scope="module")
def smol(smollm2_path):
    return _load(smollm2_path)


def test_smollm2_properties(smol):
    assert smol.model == "gpt2" and smol.pre == "smollm"
    assert smol.vocab_size == 49152
    assert (smol.bos_id, smol.eos_id, smol.eot_id) == (1, 2, 2)
    assert smol.add_bos is False
    assert smol.is_eog(2) and smol.is_eog(0) and not smol.is_eog(1) and not smol.is_eog(100)
    assert smol.token_text(1) == "<|im_start|>" and smol.token_to_piece(1) == b"<|im_start|>"
    assert smol.token_to_piece(1, special=False) == b""


@pytest.mark.parametrize("special", [True, False])
@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_smollm2_round_trip(smol, text, special):
    ids = smol.tokenize(text, special=special)
    assert all(0 <= i < smol.vocab_size for i in ids)
    assert smol.detokenize(ids) == text
    assert "".join(stream(smol, ids)) == text
    assert (ids == []) == (text == "")


def test_smollm2_digits_are_single_tokens(smol):
    digits = smol.tokenize("2024")
    assert digits == [smol.tokenize(d)[0] for d in "2024"]
    assert smol.tokenize("in 2024") == smol.tokenize("in") + smol.tokenize(" ") + digits


def test_smollm2_chat_special_tokens(smol):
    text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = smol.tokenize(text, special=True)
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1
    assert ids[1:ids.index(2)] == smol.tokenize("user\nWhat is 2+2?", special=True)
    plain = smol.tokenize(text, special=False)
    assert 1 not in plain and 2 not in plain and len(plain) > len(ids)
    assert smol.detokenize(ids) == smol.detokenize(plain) == text
    assert smol.detokenize(ids, special=False) == "user\nWhat is 2+2?\nassistant\n"


def test_smollm2_random_text_round_trips(smol, vocab, rng):
    qwen2, _ = vocab("qwen2")
    spm, _ = vocab("llama-spm")
    alphabet = list("aeiou xyzXYZ 0123456789 .,;:!?'\"()[]{}<>|/\\-_+=*&^%$#@~`\t\n\r") + list(
        "éüñßøΩπЖжЯ中文日本語한국어ไทยअआ١٢🦙🚀😀👍🏽‍\u00a0\u3000\u0301\u200d")
    for _ in range(60):
        n = int(rng.integers(0, 40))
        text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))
        for tok in (smol, qwen2, spm):
            for special in (True, False):
                ids = tok.tokenize(text, add_bos=False, special=special)
                assert tok.detokenize(ids) == text, (tok, repr(text))
                chunks = stream(tok, ids)
                assert "".join(chunks) == text and not any("\ufffd" in c for c in chunks), repr(text)


def test_streaming_never_splits_a_character(smol, vocab):
    text = "🦙 naïve 中文 😶‍🌫️ ๑๒๓ 👩🏽‍💻"
    for tok in (smol, vocab("llama-spm")[0], vocab("gemma-4")[0]):
        ids = tok.tokenize(text, add_bos=False)
        chunks = stream(tok, ids)
        assert "".join(chunks) == tok.detokenize(ids) == text
        assert not any("\ufffd" in c for c in chunks)
        # some ids carry part of a character only: their chunk is held back, never broken
        pieces = [tok.token_to_piece(i) for i in ids]
        partial = [p for p in pieces if p and not _is_utf8(p)]
        assert partial, "the text should need byte-level pieces"


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------- bad input


def test_bad_ids(smol):
    n = smol.vocab_size
    for bad in ([n], [-1], [0, 2**40], [10**30]):
        with pytest.raises((ValueError, OverflowError)):
            smol.detokenize(bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smol.detokenize([n])
    with pytest.raises(ValueError):
        smol.token_to_piece(n)
    d = smol.detokenizer()
    with pytest.raises(ValueError):
        d.push(-5)
    assert d.push(smol.tokenize("ok")[0]) + d.finish() == "ok"  # still usable
    with pytest.raises(TypeError):
        smol.tokenize(123)
    with pytest.raises(TypeError):
        smol.detokenize("abc")


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        rf.Tokenizer(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        rf.Tokenizer(tmp_path)


# A tiny byte-level BPE vocabulary: ids 0..2 are the letters, then merges build "ab", "abc".
TINY_TOKENS = ["a", "b", "c", "ab", "abc", "Ġ", "Ġa", "<|end|>"]
TINY_MERGES = ["a b", "ab c", "Ġ a"]


# write_vocab's kinds of value: the stored type (an array's item type: that of its first item).
_KINDS = {"str": (T.STRING,), "arr": (T.ARRAY, None), "u32": (T.UINT32,), "i32": (T.INT32,),
          "bool": (T.BOOL,)}


def write_vocab(path: Path, model="gpt2", pre="gpt-2", tokens=TINY_TOKENS, merges=TINY_MERGES,
                types=None, extra=(), drop=()) -> Path:
    """A vocabulary-only file: the tiny vocabulary's keys less `drop`, then `extra` (key, (kind,
    value)). An empty array leaves its key out, as the gguf package's add_array does (its writer
    refuses empty arrays)."""
    kv = {
        "tokenizer.ggml.model": ("str", model),
        "tokenizer.ggml.pre": ("str", pre),
        "tokenizer.ggml.tokens": ("arr", tokens),
        "tokenizer.ggml.merges": ("arr", merges),
        "tokenizer.ggml.token_type": ("arr", types if types is not None else [1] * (len(tokens) - 1) + [3]),
    }
    for key in drop:
        del kv[key]
    kv.update(extra)
    meta = {key: (value, *_KINDS[kind]) for key, (kind, value) in kv.items()
            if not (kind == "arr" and len(value) == 0)}
    return write_gguf(path, "llama", meta, [])


def test_tiny_vocab(tmp_path):
    tok = rf.Tokenizer(write_vocab(tmp_path / "tiny.gguf"))
    assert tok.vocab_size == len(TINY_TOKENS)
    assert tok.tokenize("abc") == [4]
    assert tok.tokenize("abcab") == [4, 3]
    assert tok.tokenize("ba a") == [1, 0, 6]
    assert tok.tokenize("<|end|>", special=True) == [7] and tok.is_eog(7)
    assert tok.bos_id is None  # no key, and llama.cpp's default id 11 is outside the vocabulary
    with pytest.raises(ValueError, match="no BOS"):
        tok.tokenize("a", add_bos=True)
    assert tok.detokenize([4, 3, 6]) == "abcab a"


BAD_VOCABS = [
    # (what, write_vocab arguments, error class, text the message must hold)
    ("tokens are not strings", dict(tokens=[1, 2, 3]), rf.GGUFError, "tokenizer.ggml.tokens"),
    ("scores are ints", dict(extra=[("tokenizer.ggml.scores", ("arr", list(range(8))))]), rf.GGUFError,
     "tokenizer.ggml.scores"),
    ("too few scores", dict(extra=[("tokenizer.ggml.scores", ("arr", [0.5] * 3))]), rf.GGUFError,
     "tokenizer.ggml.scores"),
    ("token types are floats", dict(types=[1.0] * 8), rf.GGUFError, "tokenizer.ggml.token_type"),
    ("too few token types", dict(types=[1, 1]), rf.GGUFError, "tokenizer.ggml.token_type"),
    ("merge without a space", dict(merges=["a b", "abc"]), rf.GGUFError, "tokenizer.ggml.merges[1]"),
    ("merges are not strings", dict(merges=[1, 2]), rf.GGUFError, "tokenizer.ggml.merges"),
    ("no merges", dict(drop=["tokenizer.ggml.merges"]), rf.GGUFError, "tokenizer.ggml.merges"),
    ("no tokens", dict(drop=["tokenizer.ggml.tokens"]), rf.GGUFError, "tokenizer.ggml.tokens"),
    ("no tokenizer model", dict(drop=["tokenizer.ggml.model"]), rf.GGUFError, "tokenizer.ggml.model"),
    ("model is not a string", dict(drop=["tokenizer.ggml.model"], extra=[("tokenizer.ggml.model", ("u32", 1))]),
     rf.GGUFError, "tokenizer.ggml.model"),
    ("bos outside the vocabulary", dict(extra=[("tokenizer.ggml.bos_token_id", ("u32", 8))]), rf.GGUFError,
     "tokenizer.ggml.bos_token_id"),
    ("eos negative", dict(extra=[("tokenizer.ggml.eos_token_id", ("i32", -1))]), rf.GGUFError,
     "tokenizer.ggml.eos_token_id"),
    ("eot is a string", dict(extra=[("tokenizer.ggml.eot_token_id", ("str", "2"))]), rf.GGUFError,
     "tokenizer.ggml.eot_token_id"),
    ("add_bos_token is an int", dict(extra=[("tokenizer.ggml.add_bos_token", ("u32", 1))]), rf.GGUFError,
     "tokenizer.ggml.add_bos_token"),
    ("empty vocabulary", dict(tokens=[], types=[]), rf.GGUFError, "tokenizer.ggml.tokens"),
    ("unknown pre-tokenizer", dict(pre="no-such-pre"), rf.UnsupportedError, "no-such-pre"),
    ("unsupported model", dict(model="bert"), rf.UnsupportedError, "bert"),
]


@pytest.mark.parametrize("what,kwargs,error,needle", BAD_VOCABS, ids=[b[0] for b in BAD_VOCABS])
def test_malformed_tokenizer_metadata(tmp_path, what, kwargs, error, needle):
    path = write_vocab(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(error) as info:
        rf.Tokenizer(path)
    assert needle in str(info.value)
