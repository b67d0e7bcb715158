"""The real SmolLM2-135M-Instruct Q4_1 file, read by rocmforge and by the `gguf` package's
GGUFReader: every tensor, its bytes, its info, and all metadata must agree."""

from __future__ import annotations

import numpy as np
import pytest

import gguf
from gguf import GGUFValueType

import rocmforge as rf


@pytest.fixture(scope="module")
def reader(smollm2_path):
    return gguf.GGUFReader(smollm2_path)


@pytest.fixture(scope="module")
def gfile(smollm2_path):
    with rf.GGUFFile(smollm2_path) as g:
        yield g


def test_tensor_infos_match_reader(reader, gfile):
    ours = gfile.tensors
    assert [t.name for t in ours] == [t.name for t in reader.tensors]
    for info, t in zip(ours, reader.tensors):
        assert info.shape == tuple(int(d) for d in reversed(t.shape.tolist())), info.name
        assert info.dtype == t.tensor_type.name, info.name
        assert info.offset == t.data_offset - reader.data_offset, info.name
        assert info.nbytes == t.n_bytes, info.name
    assert {t.tensor_type.name for t in reader.tensors} >= {"Q4_1", "F32"}


def test_raw_bytes_match_reader(reader, gfile):
    for t in reader.tensors:
        raw = gfile.raw(t.name)
        assert raw.dtype == np.uint8
        want = np.ascontiguousarray(t.data).view(np.uint8)
        assert raw.shape == (want.size // raw.shape[1], raw.shape[1])
        assert raw.shape[0] == int(np.prod(t.shape[1:])), t.name
        assert np.array_equal(raw.reshape(-1), want.reshape(-1)), t.name


def test_tensors_dequantize_like_gguf(reader, gfile):
    for t in reader.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        want = want.reshape(tuple(reversed(t.shape.tolist())))
        got = gfile.tensor(t.name)
        assert got.dtype == np.float32 and got.shape == want.shape, t.name
        assert not np.isnan(want).any(), t.name
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), t.name


def reader_value(field):
    """A field's value as plain Python: str, int, float, bool, or a list of them."""
    value = field.contents()
    if field.types[0] == GGUFValueType.ARRAY and field.types[-1] == GGUFValueType.BOOL:
        value = [bool(v) for v in value]
    elif field.types[0] == GGUFValueType.BOOL:
        value = bool(value)
    return value


def test_metadata_matches_reader(reader, gfile):
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    meta = gfile.metadata
    assert list(meta) == list(fields)
    for key, field in fields.items():
        ours, want = meta[key], reader_value(field)
        assert type(ours) is type(want), (key, type(ours), type(want))
        if isinstance(want, list):
            assert len(ours) == len(want), key
            assert all(type(a) is type(b) for a, b in zip(ours, want)), key
        assert ours == want, key
    assert gfile.version == reader.fields["GGUF.version"].contents()
    assert meta["general.architecture"] == "llama"
    assert isinstance(meta["llama.rope.freq_base"], float)
    assert isinstance(meta["tokenizer.ggml.tokens"][0], str)
