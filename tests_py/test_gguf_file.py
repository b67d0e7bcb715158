"""rocmforge.GGUFFile on valid files: files written with the `gguf` package's GGUFWriter (through
tools/gguf_builder.py), read back and compared with what was written and with `gguf.GGUFReader`;
version 2 files, custom alignments, the context manager, and the errors for bad paths. (The real
SmolLM2 file against GGUFReader is test_gguf_real.py.)"""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest

import rocmforge as rf
from gguf_blocks import random_matrix
from gguf_builder import Tensor, write_gguf

Q = gguf.GGMLQuantizationType
T = gguf.GGUFValueType

# (key, stored type, value, Python type rocmforge must return)
SCALARS = [
    ("test.u8", T.UINT8, 255, int),
    ("test.i8", T.INT8, -128, int),
    ("test.u16", T.UINT16, 65535, int),
    ("test.i16", T.INT16, -32768, int),
    ("test.u32", T.UINT32, 4_000_000_000, int),
    ("test.i32", T.INT32, -2_000_000_000, int),
    ("test.u64", T.UINT64, 2**64 - 1, int),
    ("test.i64", T.INT64, -(2**63), int),
    ("test.f32", T.FLOAT32, 0.1, float),
    ("test.f64", T.FLOAT64, -1e300, float),
    ("test.true", T.BOOL, True, bool),
    ("test.false", T.BOOL, False, bool),
    ("test.str", T.STRING, "héllo wörld ✓", str),
]

ARRAYS = {
    "test.ints": [3, -1, 7, 0, 2**31 - 1],
    "test.floats": [0.5, -2.25, 1e-3],
    "test.strings": ["a", "", "ünïcode", "line\nbreak"],
    "test.bools": [True, False, True],
    "test.nested": [[1, 2], [3, 4, 5]],
}


def f32(v: float) -> float:
    """What a value stored as float32 reads back as."""
    return float(np.float32(v))


def expected_metadata() -> dict:
    want = {"general.architecture": "llama"}
    for key, _, value, _ in SCALARS:
        want[key] = f32(value) if key == "test.f32" else value
    for key, value in ARRAYS.items():
        want[key] = [f32(v) for v in value] if key == "test.floats" else value
    return want


def make_tensors(rng) -> dict[str, tuple[np.ndarray, Q, np.ndarray]]:
    """name -> (float32 values in NumPy order, stored type, stored array for the writer)."""
    out = {}
    x = rng.standard_normal((3, 5), dtype=np.float32)
    out["odd.f32"] = (x, Q.F32, x)
    x = rng.standard_normal((7,), dtype=np.float32).astype(np.float16)
    out["odd.f16"] = (x.astype(np.float32), Q.F16, x)
    for name, ty, shape in [
        ("q8_0", Q.Q8_0, (3, 64)),
        ("q4_0", Q.Q4_0, (2, 32)),
        ("q4_1", Q.Q4_1, (1, 96)),
        ("q5_0", Q.Q5_0, (5, 32)),
        ("bf16", Q.BF16, (2, 3)),
    ]:
        x = rng.standard_normal(shape, dtype=np.float32)
        raw = gguf.quants.quantize(x, ty)
        out[name] = (gguf.quants.dequantize(raw, ty).reshape(shape), ty, raw)
    # types the gguf package decodes but cannot encode: random blocks with finite scales
    for name, ty, shape in [("iq4_nl", Q.IQ4_NL, (3, 64)), ("iq4_xs", Q.IQ4_XS, (2, 512))]:
        raw, values = random_matrix(rng, ty.name, *shape)
        out[name] = (values.astype(np.float32), ty, raw)
    ints = rng.integers(-100, 100, size=(2, 9), dtype=np.int32)
    out["ints.i32"] = (ints.astype(np.float32), Q.I32, ints)
    return out


def write_file(path, tensors, alignment=None, metadata=True) -> None:
    meta = {}
    if metadata:
        for key, vtype, value, _ in SCALARS:
            meta[key] = (value, vtype)
        for key, value in ARRAYS.items():  # item types as the writer infers them from the values
            meta[key] = (value, T.ARRAY, None)
    stored_tensors = []
    for name, (_, ty, stored) in tensors.items():
        if stored.dtype in (np.float32, np.float16, np.int32):
            stored_tensors.append(Tensor.of(name, stored))
        else:
            stored_tensors.append(Tensor.of(name, stored, ty.name))
    write_gguf(path, "llama", meta, stored_tensors, alignment=alignment)


@pytest.fixture
def written(tmp_path, rng):
    tensors = make_tensors(rng)
    path = tmp_path / "small.gguf"
    write_file(path, tensors)
    return path, tensors


def test_metadata_values_and_types(written):
    path, _ = written
    with rf.GGUFFile(path) as g:
        md = g.metadata
    want = expected_metadata()
    assert md == want
    assert list(md) == list(want)  # file order
    for key, _, _, pytype in SCALARS:
        assert type(md[key]) is pytype, key
    assert all(type(v) is bool for v in md["test.bools"])
    assert all(type(v) is float for v in md["test.floats"])


def test_metadata_matches_gguf_reader(written):
    path, _ = written
    reader = gguf.GGUFReader(path)
    theirs = {
        name: field.contents()
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.") and name != "test.nested"
    }
    ours = rf.GGUFFile(path).metadata
    del ours["test.nested"]  # GGUFReader flattens nested arrays
    assert ours == theirs


def test_tensor_infos_match_gguf_reader(written):
    path, tensors = written
    g = rf.GGUFFile(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in g.tensors] == [t.name for t in reader.tensors] == list(tensors)
    for ours, theirs in zip(g.tensors, reader.tensors):
        assert isinstance(ours.shape, tuple)
        assert ours.shape == tuple(int(d) for d in reversed(theirs.shape)) == tensors[ours.name][0].shape
        assert ours.dtype == Q(theirs.tensor_type).name == tensors[ours.name][1].name
        assert ours.nbytes == int(theirs.n_bytes)
        assert ours.n_elements == int(theirs.n_elements)
        # offsets are relative to the data section, GGUFReader's are absolute
        assert ours.offset + reader.data_offset == theirs.data_offset
        assert ours.offset % 32 == 0
        assert ours.name in repr(ours) and repr(ours.shape) in repr(ours)


def test_raw_bytes_match_gguf_reader(written):
    path, tensors = written
    g = rf.GGUFFile(path)
    for theirs in gguf.GGUFReader(path).tensors:
        raw = g.raw(theirs.name)
        assert raw.dtype == np.uint8
        expected = np.ascontiguousarray(theirs.data).view(np.uint8)
        rows = int(np.prod(theirs.shape[1:]))
        assert raw.shape == (rows, raw.size // max(rows, 1))
        assert raw.tobytes() == expected.tobytes()
        stored = tensors[theirs.name][2]
        assert raw.tobytes() == np.ascontiguousarray(stored).tobytes()


def test_dequantized_tensors(written):
    path, tensors = written
    g = rf.GGUFFile(path)
    checked = 0
    for name, (values, ty, _) in tensors.items():
        try:
            got = g.tensor(name)
        except rf.UnsupportedError as e:
            assert name in str(e) and ty.name in str(e)
            continue
        assert got.dtype == np.float32 and got.shape == values.shape, name
        np.testing.assert_array_equal(got, values, err_msg=name)
        checked += 1
    assert checked >= 2  # F32 and F16 at least
    with pytest.raises(KeyError):
        g.tensor("no.such.tensor")
    with pytest.raises(KeyError):
        g.raw("no.such.tensor")


def test_version_2(tmp_path, written):
    path, tensors = written
    data = bytearray(path.read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(bytes(data))
    g2, g3 = rf.GGUFFile(v2), rf.GGUFFile(path)
    assert (g2.version, g3.version) == (2, 3)
    assert g2.metadata == g3.metadata
    assert [repr(t) for t in g2.tensors] == [repr(t) for t in g3.tensors]
    np.testing.assert_array_equal(g2.tensor("odd.f32"), tensors["odd.f32"][0])


@pytest.mark.parametrize("alignment", [1, 8, 64, 128, 4096])
def test_custom_alignment(tmp_path, rng, alignment):
    tensors = make_tensors(rng)
    path = tmp_path / f"align{alignment}.gguf"
    write_file(path, tensors, alignment=alignment, metadata=False)
    g = rf.GGUFFile(path)
    reader = gguf.GGUFReader(path)
    assert g.alignment == alignment
    assert g.metadata["general.alignment"] == alignment
    for ours, theirs in zip(g.tensors, reader.tensors):
        assert ours.offset % alignment == 0
        assert ours.offset + reader.data_offset == theirs.data_offset
        assert g.raw(ours.name).tobytes() == np.ascontiguousarray(theirs.data).view(np.uint8).tobytes()
    np.testing.assert_array_equal(g.tensor("odd.f16"), tensors["odd.f16"][0])


def test_metadata_only_file(tmp_path):
    path = tmp_path / "vocab_only.gguf"
    write_file(path, {}, metadata=True)
    g = rf.GGUFFile(path)
    assert g.tensors == []
    assert g.metadata == expected_metadata()


def test_scalar_and_empty_tensors(tmp_path, rng):
    path = tmp_path / "odd_shapes.gguf"
    value = np.float32(rng.standard_normal())
    write_gguf(path, "llama", {}, [Tensor.of("scalar", np.array(value, dtype=np.float32)),
                                   Tensor.of("empty", np.zeros((0, 5), dtype=np.float32)),
                                   Tensor.of("after", np.arange(3, dtype=np.float16))])
    g = rf.GGUFFile(path)
    reader = gguf.GGUFReader(path)
    assert [t.shape for t in g.tensors] == [(), (0, 5), (3,)]
    assert [t.nbytes for t in g.tensors] == [int(t.n_bytes) for t in reader.tensors] == [4, 0, 6]
    assert g.tensor("scalar").shape == () and g.tensor("scalar") == value
    assert g.tensor("empty").shape == (0, 5)
    assert g.raw("empty").size == 0
    np.testing.assert_array_equal(g.tensor("after"), np.arange(3, dtype=np.float32))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(rf.GGUFError, match="not a regular file"):
        rf.GGUFFile(fifo)  # must not block waiting for a writer


def test_context_manager_close_and_repr(written):
    path, tensors = written
    g = rf.GGUFFile(path)
    text = repr(g)
    assert str(path) in text and "version=3" in text and f"tensors={len(tensors)}" in text
    assert "llama" in text
    assert g.file_size == os.path.getsize(path)
    assert not g.closed
    with g as same:
        assert same is g
        assert same.version == 3
    assert g.closed
    assert "closed" in repr(g)
    g.close()  # twice is fine
    for use in (
        lambda: g.version,
        lambda: g.metadata,
        lambda: g.tensors,
        lambda: g.tensor("odd.f32"),
        lambda: g.raw("odd.f32"),
        lambda: g.file_size,
    ):
        with pytest.raises(rf.RocmForgeError, match="closed"):
            use()
    with pytest.raises(rf.RocmForgeError):
        with g:
            pass
    assert g.path == str(path)


def test_arrays_outlive_the_file(written):
    path, tensors = written
    g = rf.GGUFFile(path)
    raw, values = g.raw("odd.f32"), g.tensor("odd.f32")
    md = g.metadata
    md["general.architecture"] = "changed"
    assert g.metadata["general.architecture"] == "llama"
    g.close()
    del g
    assert raw.tobytes() == tensors["odd.f32"][2].tobytes()
    np.testing.assert_array_equal(values, tensors["odd.f32"][0])


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        rf.GGUFFile(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        rf.GGUFFile(tmp_path)
    with pytest.raises(TypeError):
        rf.GGUFFile(42)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_error(tmp_path, rng):
    path = tmp_path / "secret.gguf"
    write_file(path, make_tensors(rng))
    path.chmod(0)
    try:
        with pytest.raises(PermissionError):
            rf.GGUFFile(path)
    finally:
        path.chmod(0o600)
