"""Write the seed corpus of the gguf_reader fuzz target: small valid GGUF files covering every
metadata value type, nested arrays, versions 2 and 3, custom alignments, scalars, zero-size
tensors and several tensor types. Standard library only.

    python3 fuzz/seeds.py DIR
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64 = range(13)
# ggml type id -> (elements per block, bytes per block)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22),
        "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110),
        "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210), "Q8_K": (15, 256, 292),
        "IQ4_NL": (20, 32, 18), "I8": (24, 1, 1), "I32": (26, 1, 4), "BF16": (30, 1, 2)}


def gstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def arr(elem_type: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", elem_type, len(items)) + b"".join(items)


def gguf(kvs, tensors, version=3, alignment=32) -> bytes:
    """kvs: (key, type, encoded value); tensors: (name, ggml dims, type name). Data is a byte ramp."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, value in kvs:
        out += gstr(key) + struct.pack("<I", t) + value
    offset, data = 0, b""
    for name, dims, tname in tensors:
        tid, block, size = GGML[tname]
        n = 1
        for d in dims:
            n *= d
        nbytes = n // block * size
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", tid, offset)
        data += bytes((offset + i) % 251 for i in range(nbytes))
        pad = -nbytes % alignment
        data += b"\0" * pad
        offset += nbytes + pad
    out += b"\0" * (-len(out) % alignment)
    return out + data


def seeds() -> dict[str, bytes]:
    every_type = [
        ("general.architecture", T_STRING, gstr("llama")),
        ("t.u8", T_U8, b"\xff"), ("t.i8", T_I8, b"\x80"), ("t.u16", T_U16, struct.pack("<H", 7)),
        ("t.i16", T_I16, struct.pack("<h", -7)), ("t.u32", T_U32, struct.pack("<I", 4096)),
        ("t.i32", T_I32, struct.pack("<i", -1)), ("t.f32", T_F32, struct.pack("<f", 1e-5)),
        ("t.bool", T_BOOL, b"\x01"), ("t.u64", T_U64, struct.pack("<Q", 1 << 40)),
        ("t.i64", T_I64, struct.pack("<q", -(1 << 40))), ("t.f64", T_F64, struct.pack("<d", 0.5)),
        ("t.strings", T_ARRAY, arr(T_STRING, [gstr("<s>"), gstr("a"), gstr("")])),
        ("t.floats", T_ARRAY, arr(T_F32, [struct.pack("<f", x) for x in (0.0, -1.0)])),
        ("t.bools", T_ARRAY, arr(T_BOOL, [b"\x00", b"\x01"])),
        ("t.nested", T_ARRAY, arr(T_ARRAY, [arr(T_I32, [struct.pack("<i", 3)]), arr(T_U8, [])])),
    ]
    llama = [
        ("general.architecture", T_STRING, gstr("llama")),
        ("llama.context_length", T_U32, struct.pack("<I", 2048)),
        ("llama.embedding_length", T_U32, struct.pack("<I", 64)),
        ("llama.block_count", T_U32, struct.pack("<I", 1)),
        ("tokenizer.ggml.model", T_STRING, gstr("gpt2")),
    ]
    quant_tensors = [(f"blk.0.{name.lower()}", [256, 2], name) for name in GGML if GGML[name][1] > 1]
    return {
        "every_value_type": gguf(every_type, [("a", [8], "F32"), ("b", [4, 3], "F16")]),
        "every_value_type_v2": gguf(every_type, [("a", [8], "F32")], version=2),
        "llama_small": gguf(llama, [("token_embd.weight", [64, 5], "Q8_0"), ("output_norm.weight", [64], "F32"),
                                    ("blk.0.attn_q.weight", [64, 64], "Q4_0")]),
        "quant_types": gguf(llama, quant_tensors),
        "plain_types": gguf(llama, [(n.lower(), [3, 2], n) for n in ("F32", "F16", "BF16", "I8", "I32")]),
        "align_64": gguf(llama + [("general.alignment", T_U32, struct.pack("<I", 64))],
                         [("x", [32], "Q8_0"), ("y", [5], "F32")], alignment=64),
        "align_1": gguf([("general.alignment", T_U32, struct.pack("<I", 1))], [("x", [3], "F16"), ("y", [1], "I8")],
                        alignment=1),
        "scalar_and_empty": gguf(llama, [("s", [], "F32"), ("z", [0, 4], "F32"), ("w", [2, 2, 2, 2], "F16")]),
        "metadata_only": gguf(every_type, []),
        "header_only": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
    }


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (out / f"seed_{name}.gguf").write_bytes(data)


if __name__ == "__main__":
    main()
