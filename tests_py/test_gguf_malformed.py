"""Malformed GGUF files: every one must raise rocmforge.GGUFError naming the field and the byte
offset, never crash the interpreter and never allocate memory sized from an unchecked count.

The cases cover RELIABILITY.md 1-11 and every prefix of a small valid file. All files are opened
in one child interpreter whose address space is limited to what it needs after importing numpy and
rocmforge plus a small margin (RLIMIT_AS), so an allocation sized from a bad count kills the
child (or raises MemoryError) and fails the test instead of passing silently.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field, replace

import gguf
import numpy as np
import pytest

from gguf_builder import Tensor, write_gguf

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")

# Address space the child may use beyond what it holds after its imports. Every file here is a
# few KiB; a count trusted before it is checked asks for gigabytes or more.
HEADROOM = 256 << 20

# GGUF metadata value types.
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64 = range(13)
# ggml tensor types used below.
F32, F16, Q8_0, F64 = 0, 1, 8, 28


def gstr(x: str | bytes) -> bytes:
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def garray(elem_type: int, count: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IQ", elem_type, count) + payload


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


@dataclass
class Gguf:
    """A GGUF file written by hand, so that it can hold what no writer would write (valid files
    of the other tests come from tools/gguf_builder.py; this byte writer is for broken ones)."""

    kvs: list = field(default_factory=list)  # (key, value type, encoded value)
    tensors: list = field(default_factory=list)  # (name, ggml dims, ggml type, offset)
    data: bytes = b""
    version: int = 3
    alignment: int = 32

    def header(self) -> bytes:
        out = b"GGUF" + struct.pack("<IQQ", self.version, len(self.tensors), len(self.kvs))
        for key, vtype, value in self.kvs:
            out += gstr(key) + u32(vtype) + value
        for name, dims, ttype, offset in self.tensors:
            out += gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ttype) + u64(offset)
        return out

    def bytes(self) -> bytes:
        header = self.header()
        pad = -len(header) % self.alignment
        return header + b"\0" * pad + self.data

    def with_kv(self, key: str | bytes, vtype: int, value: bytes) -> Gguf:
        return replace(self, kvs=self.kvs + [(key, vtype, value)])

    def with_tensor(self, i: int, **changes) -> Gguf:
        tensors = list(self.tensors)
        name, dims, ttype, offset = tensors[i]
        tensors[i] = (
            changes.get("name", name),
            changes.get("dims", dims),
            changes.get("ttype", ttype),
            changes.get("offset", offset),
        )
        return replace(self, tensors=tensors)


def base() -> Gguf:
    """Valid: two tensors of 32 bytes each, the second ending exactly at the end of the file."""
    data = np.arange(8, dtype=np.float32).tobytes() + np.linspace(-1, 1, 16, dtype=np.float16).tobytes()
    return Gguf(
        kvs=[
            ("general.architecture", T_STRING, gstr("llama")),
            ("llama.block_count", T_U32, u32(1)),
            ("general.name", T_STRING, gstr("tiny")),
        ],
        tensors=[("token_embd.weight", [4, 2], F32, 0), ("blk.0.w", [16], F16, 32)],
        data=data,
    )


def patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def writer_file(path) -> bytes:
    """A small valid file written by the gguf package, its last tensor ending at the end of file."""
    T = gguf.GGUFValueType
    write_gguf(path, "llama",
               {"llama.context_length": (64, T.UINT32),
                "tokenizer.ggml.tokens": (["<s>", "a", "b"], T.ARRAY, T.STRING),
                "tokenizer.ggml.scores": ([0.0, -1.0, -2.0], T.ARRAY, T.FLOAT32),
                "tokenizer.ggml.add_bos_token": (True, T.BOOL)},
               [Tensor.of("output_norm.weight", np.ones(5, dtype=np.float32)),
                Tensor.of("output.weight", np.arange(16, dtype=np.float16).reshape(2, 8))])  # 32 bytes
    return path.read_bytes()


def malformed_cases() -> list[tuple[str, bytes, list[str]]]:
    """(case id, file bytes, words the error message must contain)."""
    b = base()
    good = b.bytes()
    n_tensor_offset, n_kv_offset = 8, 16
    cases: list[tuple[str, bytes, list[str]]] = []

    def add(name: str, data: bytes, *needles: str) -> None:
        cases.append((name, data, list(needles)))

    # 1. empty file (prefixes are generated separately)
    add("1-empty", b"", "empty")
    # 2. magic and version
    add("2-bad-magic", patched(good, 0, b"GGML"), "magic", "not a GGUF file")
    add("2-swapped-magic", patched(good, 0, b"FUGG"), "magic", "byte-swapped")
    add("2-version-1", patched(good, 4, u32(1)), "version", "byte offset 4")
    add("2-version-4", patched(good, 4, u32(4)), "version", "byte offset 4")
    add("2-version-big-endian", patched(good, 4, struct.pack(">I", 3)), "version", "byte-swapped")
    # 3. counts larger than the bytes left could hold
    add("3-n_tensors-max", patched(good, n_tensor_offset, u64(2**64 - 1)), "n_tensors", "byte offset 8")
    add("3-n_tensors-2^40", patched(good, n_tensor_offset, u64(1 << 40)), "n_tensors", "byte offset 8")
    add("3-n_tensors-just-too-many", patched(good, n_tensor_offset, u64(len(good) // 25 + 1)), "n_tensors")
    add("3-n_kv-max", patched(good, n_kv_offset, u64(2**64 - 1)), "n_kv", "byte offset 16")
    add("3-n_kv-2^40", patched(good, n_kv_offset, u64(1 << 40)), "n_kv", "byte offset 16")
    add("3-n_kv-just-too-many", patched(good, n_kv_offset, u64(len(good) // 14 + 1)), "n_kv")
    add("3-n_kv-one-more", patched(good, n_kv_offset, u64(len(b.kvs) + 1)))  # reads into the tensor infos
    add("3-n_kv-one-fewer", patched(good, n_kv_offset, u64(len(b.kvs) - 1)), '"general.name"', "n_dims")
    # 4. strings and keys
    add("4-string-len-max", b.with_kv("test.s", T_STRING, u64(2**64 - 1)).bytes(), '"test.s"', "string length")
    add("4-string-len-2^40", b.with_kv("test.s", T_STRING, u64(1 << 40)).bytes(), '"test.s"', "string length")
    add("4-string-past-eof", b.with_kv("test.s", T_STRING, u64(100_000) + b"abc").bytes(), '"test.s"', "100000")
    add("4-string-invalid-utf8", b.with_kv("test.s", T_STRING, gstr(b"ok\xff\xfe")).bytes(), '"test.s"', "UTF-8")
    add("4-key-len-max", patched(good, 24, u64(2**64 - 1)), "metadata key #0", "string length")
    add("4-key-invalid-utf8", b.with_kv(b"bad\xc3(key", T_U8, b"\1").bytes(), "metadata key #3", "UTF-8")
    add("4-key-empty", b.with_kv("", T_U8, b"\1").bytes(), "metadata key #3", "empty")
    add("4-key-duplicate", b.with_kv("general.name", T_STRING, gstr("x")).bytes(), '"general.name"', "twice")
    # 5. value types, array counts, nesting
    add("5-unknown-type-13", b.with_kv("test.t", 13, u64(0)).bytes(), '"test.t"', "unknown value type 13")
    add("5-unknown-type-max", b.with_kv("test.t", 2**32 - 1, u64(0)).bytes(), '"test.t"', "unknown value type")
    add("5-unknown-elem-type", b.with_kv("test.a", T_ARRAY, garray(77, 1, b"\0")).bytes(), '"test.a"', "element type 77")
    add("5-array-count-past-eof", b.with_kv("test.a", T_ARRAY, garray(T_U32, 1000, b"\0" * 8)).bytes(), '"test.a"', "array count 1000")
    add("5-array-count-2^61", b.with_kv("test.a", T_ARRAY, garray(T_U64, 1 << 61)).bytes(), '"test.a"', "array count")
    add("5-array-count-max", b.with_kv("test.a", T_ARRAY, garray(T_U8, 2**64 - 1)).bytes(), '"test.a"', "array count")
    add("5-string-array-count", b.with_kv("test.a", T_ARRAY, garray(T_STRING, 1 << 40)).bytes(), '"test.a"', "array count")
    add("5-nested-array-count", b.with_kv("test.a", T_ARRAY, garray(T_ARRAY, 1, garray(T_U16, 1 << 50))).bytes(), '"test.a"[0]', "array count")
    three_deep = garray(T_ARRAY, 1, garray(T_ARRAY, 1, garray(T_U8, 1, b"\1")))
    add("5-nested-three-deep", b.with_kv("test.a", T_ARRAY, three_deep).bytes(), '"test.a"[0][0]', "nested")
    # 6. bools
    add("6-bool-2", b.with_kv("test.b", T_BOOL, b"\2").bytes(), '"test.b"', "bool byte is 2")
    add("6-bool-array", b.with_kv("test.b", T_ARRAY, garray(T_BOOL, 3, b"\1\0\xff")).bytes(), '"test.b"[2]', "255")
    # 7. tensor names and dims
    add("7-name-empty", b.with_tensor(1, name="").bytes(), "tensor #1", "empty name")
    add("7-name-duplicate", b.with_tensor(1, name="token_embd.weight").bytes(), '"token_embd.weight"', "twice")
    add("7-name-65-bytes", b.with_tensor(1, name="n" * 65).bytes(), "tensor #1 name", "64")
    add("7-name-invalid-utf8", b.with_tensor(1, name=b"blk.\xff").bytes(), "tensor #1 name", "UTF-8")
    add("7-n_dims-5", b.with_tensor(1, dims=[16, 1, 1, 1, 1]).bytes(), '"blk.0.w"', "n_dims", "5")
    add("7-n_dims-max", patched(good, len(b.header()) - 8 - 4 - 8 - 4, u32(2**32 - 1)), '"blk.0.w"', "n_dims")
    add("7-dim-negative", b.with_tensor(1, dims=[16, 2**64 - 2]).bytes(), '"blk.0.w"', "dim 1", "negative")
    # 8. element count and byte size overflow
    add("8-elements-overflow", b.with_tensor(1, dims=[1 << 32, 1 << 32]).bytes(), '"blk.0.w"', "overflows")
    add("8-elements-overflow-zero-dim", b.with_tensor(1, dims=[0, 1 << 40, 1 << 40]).bytes(), '"blk.0.w"', "overflows")
    add("8-bytes-overflow", b.with_tensor(1, dims=[1 << 62], ttype=F64).bytes(), '"blk.0.w"', "byte size", "overflows")
    # found by fuzzing: no data (a zero dim) but a row size that overflows
    add("8-row-bytes-overflow-zero-dim", b.with_tensor(1, dims=[1 << 62, 0], ttype=F32).bytes(), '"blk.0.w"', "byte size", "overflows")
    add("8-huge-tensor", b.with_tensor(1, dims=[1 << 40, 1 << 20]).bytes(), '"blk.0.w"', "past the end")
    # 9. tensor types and block sizes
    add("9-type-unknown", b.with_tensor(1, ttype=1000).bytes(), '"blk.0.w"', "type id 1000")
    add("9-type-retired", b.with_tensor(1, ttype=4).bytes(), '"blk.0.w"', "retired")
    add("9-type-repacked", b.with_tensor(1, ttype=31).bytes(), '"blk.0.w"', "type id 31")
    add("9-row-not-whole-blocks", b.with_tensor(1, ttype=Q8_0).bytes(), '"blk.0.w"', "block size 32")
    # 10. general.alignment
    for bad in (0, 3, 48, 1 << 21, 2**32 - 1):
        add(f"10-alignment-{bad}", b.with_kv("general.alignment", T_U32, u32(bad)).bytes(), "general.alignment", str(bad))
    add("10-alignment-u64", b.with_kv("general.alignment", T_U64, u64(32)).bytes(), "general.alignment", "type u64")
    add("10-alignment-string", b.with_kv("general.alignment", T_STRING, gstr("32")).bytes(), "general.alignment", "type string")
    # 11. tensor offsets
    add("11-offset-misaligned", b.with_tensor(1, offset=40).bytes(), '"blk.0.w"', "alignment 32")
    add("11-offset-past-eof", b.with_tensor(1, offset=1 << 20).bytes(), '"blk.0.w"', "past the end")
    add("11-offset-overflows", b.with_tensor(1, offset=2**64 - 32).bytes(), '"blk.0.w"', "past the end")
    add("11-overlap", b.with_tensor(1, offset=0).bytes(), '"blk.0.w"', 'overlaps tensor "token_embd.weight"')
    gap = replace(b.with_tensor(1, offset=64), data=b.data[:32] + b"\0" * 32 + b.data[32:])
    add("11-gap", gap.bytes(), '"blk.0.w"', "32 unaccounted bytes")
    add("11-trailing-bytes", good + b"\0" * 40, "unexplained bytes", '"blk.0.w"')
    add("11-truncated-data", good[:-1], '"blk.0.w"', "past the end")
    return cases


# The child: limit the address space, then open each file and report one JSON line per file.
CHILD = r"""
import json, resource, sys
import numpy, rocmforge

def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

limit = vm_size() + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    big = bytearray(2 * int(sys.argv[1]))
    print(json.dumps({"control": "allocated"}), flush=True)
except MemoryError:
    print(json.dumps({"control": "MemoryError"}), flush=True)

for path in sys.argv[2:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        with rocmforge.GGUFFile(path) as g:
            g.metadata
            for t in g.tensors:
                g.raw(t.name)
        out = {"path": path, "result": "ok"}
    except rocmforge.GGUFError as e:
        out = {"path": path, "result": "GGUFError", "message": str(e)}
    except Exception as e:
        out = {"path": path, "result": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)
"""


def open_in_limited_child(paths: list[str]) -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(HEADROOM), *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    started = [d["start"] for d in lines if "start" in d]
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} while opening {started[-1] if started else None}\n"
        f"stderr: {proc.stderr[-2000:]}"
    )
    assert lines[0] == {"control": "MemoryError"}, "the address-space limit does not bite"
    return {d["path"]: d for d in lines if "path" in d}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Write every case, open them all in one limited child; path -> case id, bytes, needles."""
    root = tmp_path_factory.mktemp("malformed")
    files = {}
    good = root / "valid_handwritten.gguf"
    good.write_bytes(base().bytes())
    files["valid-handwritten"] = (good, [])
    writer_good = root / "valid_writer.gguf"
    writer_bytes = writer_file(writer_good)
    files["valid-writer"] = (writer_good, [])
    for i, (name, data, needles) in enumerate(malformed_cases()):
        p = root / f"case{i:03d}.gguf"
        p.write_bytes(data)
        files[name] = (p, needles)
    for source, data in (("writer", writer_bytes), ("handwritten", base().bytes())):
        for cut in range(len(data)):
            p = root / f"prefix-{source}-{cut:05d}.gguf"
            p.write_bytes(data[:cut])
            files[f"prefix-{source}-{cut}"] = (p, ["empty"] if cut == 0 else ["byte offset"])
    by_path = open_in_limited_child([str(p) for p, _ in files.values()])
    return {name: (by_path[str(p)], needles) for name, (p, needles) in files.items()}


def test_valid_files_open_under_the_limit(results, tmp_path):
    for name in ("valid-handwritten", "valid-writer"):
        assert results[name][0]["result"] == "ok", results[name][0]
    # the hand-written base is a real GGUF file for the gguf package too
    path = tmp_path / "base.gguf"
    path.write_bytes(base().bytes())
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == ["token_embd.weight", "blk.0.w"]
    assert reader.tensors[-1].data_offset + reader.tensors[-1].n_bytes == len(base().bytes())


def test_writer_file_ends_with_its_last_tensor(tmp_path):
    data = writer_file(tmp_path / "w.gguf")
    last = gguf.GGUFReader(tmp_path / "w.gguf").tensors[-1]
    assert last.data_offset + last.n_bytes == len(data)


def check(result: dict, needles: list[str]) -> None:
    assert result["result"] == "GGUFError", result
    message = result["message"]
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    if needles != ["empty"]:
        assert "byte offset" in message, message


@pytest.mark.parametrize("case", [c[0] for c in malformed_cases()])
def test_malformed(results, case):
    result, needles = results[case]
    check(result, needles)


def test_every_prefix_is_rejected(results):
    prefixes = [name for name in results if name.startswith("prefix-")]
    assert len(prefixes) > 300
    for name in prefixes:
        result, needles = results[name]
        check(result, needles)


def test_message_names_the_file(results):
    result, _ = results["2-bad-magic"]
    assert result["path"] in result["message"]


def test_gguferror_is_a_valueerror():
    import rocmforge

    assert issubclass(rocmforge.GGUFError, ValueError)
    assert issubclass(rocmforge.GGUFError, rocmforge.RocmForgeError)


def test_enough_cases():
    assert len(malformed_cases()) >= 30
