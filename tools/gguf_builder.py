"""The one writer of GGUF files for tests and benchmarks, over the `gguf` package's GGUFWriter
(llama.cpp's own Python writer: independent of the reader under test).

A file is an architecture name, its metadata and its tensors:

- ``metadata``: key -> ``(value, GGUFValueType)``, or ``(value, GGUFValueType.ARRAY, item type)``
  for an array (item type None: taken from the first item), written in this order after
  ``general.architecture``;
- ``tensors``: :class:`Tensor` items, in file order. A tensor's data may be a maker called only
  when that tensor is written, so that benchmark models of several GB stream to disk.

Example::

    T = gguf.GGUFValueType
    write_gguf(path, "llama", {"llama.context_length": (64, T.UINT32)},
               [Tensor.of("output_norm.weight", np.ones(5, dtype=np.float32))])

Tests that need bytes no writer would produce (tests_py/test_gguf_malformed.py) write them by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Union

import gguf
import numpy as np

# GGML types stored as plain NumPy arrays (one value an element); every other type is stored as
# bytes of blocks (uint8 [rows, bytes per row]).
PLAIN_TYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
               "I16": np.int16, "I32": np.int32, "I64": np.int64}


def tensor_nbytes(ggml_type: str, shape: tuple) -> int:
    """Bytes a tensor of this type and shape (NumPy order) takes in the file."""
    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    if shape and shape[-1] % block:
        raise ValueError(f"row length {shape[-1]} is not a multiple of the {ggml_type} block {block}")
    return int(np.prod(shape, dtype=np.int64)) // block * type_size


@dataclass(frozen=True)
class Tensor:
    """One tensor of a file: its name, GGML type, the shape of its values (NumPy order: (rows,
    cols), (n,) or ()) and its stored data, or a maker of that data called when it is written."""

    name: str
    ggml_type: str
    shape: tuple
    data: Union[np.ndarray, Callable[[], np.ndarray]]

    @classmethod
    def of(cls, name: str, stored: np.ndarray, ggml_type: Optional[str] = None) -> "Tensor":
        """A tensor from its stored array: values of a plain type (the type read from the
        array's dtype), or, with ``ggml_type``, its blocks (uint8 [rows, bytes per row])."""
        if ggml_type is None:
            names = {np.dtype(v): k for k, v in PLAIN_TYPES.items()}
            if stored.dtype not in names:
                raise ValueError(f"{name}: no GGML type for dtype {stored.dtype}; name the type")
            return cls(name, names[stored.dtype], tuple(stored.shape), stored)
        qtype = gguf.GGMLQuantizationType[ggml_type]
        shape = stored.shape
        if stored.dtype == np.uint8 and ggml_type not in PLAIN_TYPES:
            shape = gguf.quant_shape_from_byte_shape(shape, qtype)
        return cls(name, ggml_type, tuple(shape), stored)


def write_gguf(path: Union[os.PathLike, str], arch: Optional[str], metadata: Mapping[str, tuple],
               tensors: Iterable[Tensor], alignment: Optional[int] = None) -> Path:
    """Write a GGUF file (version 3) and return its path. ``arch`` None writes no architecture
    key of its own: ``metadata`` then says whether there is one and what it holds (for files
    about that key). ``alignment`` sets ``general.alignment`` and pads the data to it.

    The file is written under a temporary name and renamed when complete, so that an
    interrupted run leaves no partial file under ``path``."""
    path = Path(path)
    tensors = list(tensors)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch if arch is not None else "none")
    if arch is None:
        del writer.kv_data[0][gguf.Keys.General.ARCHITECTURE]
    try:
        if alignment is not None:
            writer.add_custom_alignment(alignment)
        for key, (value, vtype, *item_type) in metadata.items():
            writer.add_key_value(key, value, vtype, *item_type)
        for t in tensors:
            nbytes = tensor_nbytes(t.ggml_type, t.shape)
            if t.ggml_type in PLAIN_TYPES:
                writer.add_tensor_info(t.name, t.shape, np.dtype(PLAIN_TYPES[t.ggml_type]), nbytes)
            else:
                # the writer takes a block type's shape in bytes and turns it back into values
                qtype = gguf.GGMLQuantizationType[t.ggml_type]
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                byte_shape = (*t.shape[:-1], t.shape[-1] // block * type_size)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            data = np.ascontiguousarray(t.data() if callable(t.data) else t.data)
            expected = tensor_nbytes(t.ggml_type, t.shape)
            if data.nbytes != expected:
                raise ValueError(f"{t.name}: {data.nbytes} bytes of data, expected {expected}")
            writer.write_tensor_data(data)
        writer.close()
        os.replace(partial, path)
    finally:
        writer.close()
        if partial.exists():
            partial.unlink()
    return path
