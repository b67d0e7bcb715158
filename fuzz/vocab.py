"""Write the small vocabulary-only GGUF files the `tokenizer` fuzz target embeds
(fuzz/vocab/*.gguf): byte-level BPE vocabularies (GPT-2 and Qwen2 pre-tokenizers) and a SentencePiece one
with byte fallback, each with control tokens. Standard library only; the output is the same on
every run.

    python3 fuzz/vocab.py
"""

from __future__ import annotations

from pathlib import Path

from seeds import T_ARRAY, T_BOOL, T_F32, T_I32, T_STRING, T_U32, arr, gguf, gstr
import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: token i is the character standing for byte i."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def strings(items: list[str]) -> bytes:
    return arr(T_STRING, [gstr(s) for s in items])


def ints(items: list[int]) -> bytes:
    return arr(T_I32, [struct.pack("<i", v) for v in items])


def bpe(pre: str) -> bytes:
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n", "Ġ c",
              "Ġ Ġ", "ĠĠ ĠĠ", "Ċ Ċ", "Ã ©", "in g", "Ġ in", "Ġs at"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    user = ["<tool>"]
    tokens = byte_tokens() + ["".join(m.split()) for m in merges] + specials + user
    types = [NORMAL] * (len(tokens) - len(specials) - len(user)) + [CONTROL] * len(specials) + [USER_DEFINED]
    kvs = [
        ("general.architecture", T_STRING, gstr("llama")),
        ("tokenizer.ggml.model", T_STRING, gstr("gpt2")),
        ("tokenizer.ggml.pre", T_STRING, gstr(pre)),
        ("tokenizer.ggml.tokens", T_ARRAY, strings(tokens)),
        ("tokenizer.ggml.token_type", T_ARRAY, ints(types)),
        ("tokenizer.ggml.merges", T_ARRAY, strings(merges)),
        ("tokenizer.ggml.bos_token_id", T_U32, struct.pack("<I", tokens.index("<|endoftext|>"))),
        ("tokenizer.ggml.eos_token_id", T_U32, struct.pack("<I", tokens.index("<|im_end|>"))),
        ("tokenizer.ggml.add_bos_token", T_BOOL, b"\x00"),
    ]
    return gguf(kvs, [])


def spm() -> bytes:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    pieces = ["▁", "e", "t", "a", "h", "▁t", "he", "▁the", "▁a", "at", "▁c", "▁cat", "s", "▁s", "▁sat",
              "é", "▁▁", "▁▁▁▁", "in", "ing", "日本", "語"]
    tokens += pieces
    types += [NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    kvs = [
        ("general.architecture", T_STRING, gstr("llama")),
        ("tokenizer.ggml.model", T_STRING, gstr("llama")),
        ("tokenizer.ggml.tokens", T_ARRAY, strings(tokens)),
        ("tokenizer.ggml.scores", T_ARRAY, arr(T_F32, [struct.pack("<f", s) for s in scores])),
        ("tokenizer.ggml.token_type", T_ARRAY, ints(types)),
    ]
    return gguf(kvs, [])


def main() -> None:
    out = Path(__file__).parent / "vocab"
    out.mkdir(exist_ok=True)
    (out / "bpe.gguf").write_bytes(bpe("gpt-2"))  # cleans spaces before punctuation when decoding
    (out / "bpe-qwen2.gguf").write_bytes(bpe("qwen2"))  # decodes to exactly the text encoded
    (out / "spm.gguf").write_bytes(spm())


if __name__ == "__main__":
    main()
