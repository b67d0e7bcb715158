# Type stubs of rocmforge.ops (the functions are native; see their docstrings for semantics).
from typing import Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_Device = Literal["cpu", "gpu", "auto"]
_Ints = Union[npt.NDArray[np.integer], Sequence[int]]
# sample's parameters: one value for every row, or one per row.
_RowFloats = Union[float, npt.NDArray[np.floating], Sequence[float]]
_RowInts = Union[int, npt.NDArray[np.integer], Sequence[int]]
_History = Union[_Ints, npt.NDArray[np.integer], Sequence[_Ints]]
_I64 = npt.NDArray[np.int64]
# ids; with logprobs > 0: (ids, their log-probabilities, top-n ids, top-n log-probabilities).
_Samples = Union[int, _I64, Tuple[int, float, _I64, _F32], Tuple[_I64, _F32, _I64, _F32]]

def qkt_matmul(q: _F32, k: _F32, scale: Optional[float] = None, *, device: _Device = "auto") -> _F32: ...
def scale(x: _F32, factor: float, *, device: _Device = "auto") -> _F32: ...
def causal_mask(scores: _F32, *, device: _Device = "auto") -> _F32: ...
def softmax(x: _F32, *, device: _Device = "auto") -> _F32: ...
def weighted_matmul(weights: _F32, v: _F32, *, device: _Device = "auto") -> _F32: ...
def flash_attention(
    q: _F32,
    k: _F32,
    v: _F32,
    causal: bool = False,
    scale: Optional[float] = None,
    window: Optional[int] = None,
    *,
    device: _Device = "auto",
) -> _F32: ...
def rope(
    x: _F32,
    positions: _Ints,
    theta: float = 10000.0,
    neox: bool = False,
    freq_factors: Optional[_F32] = None,
    *,
    device: _Device = "auto",
) -> _F32: ...
def swiglu(gate: _F32, up: _F32, *, device: _Device = "auto") -> _F32: ...
def geglu(gate: _F32, up: _F32, *, device: _Device = "auto") -> _F32: ...
def gelu(x: _F32, *, device: _Device = "auto") -> _F32: ...
def rms_norm(x: _F32, weight: _F32, eps: float = 1e-6, *, device: _Device = "auto") -> _F32: ...
def matmul(
    x: _F32, w: Union[_F32, npt.NDArray[np.uint8]], dtype: str = "F32", *, device: _Device = "auto"
) -> _F32: ...
def embedding(
    table: Union[_F32, npt.NDArray[np.uint8]], ids: _Ints, dtype: str = "F32", *, device: _Device = "auto"
) -> _F32: ...
def add(a: _F32, b: _F32, *, device: _Device = "auto") -> _F32: ...
def kv_append(
    cache: Union[_F32, npt.NDArray[np.float16]], src: _F32, pos: int, *, device: _Device = "auto"
) -> None: ...
def argmax(x: _F32, *, device: _Device = "auto") -> int: ...
def sample(
    logits: _F32,
    *,
    temperature: _RowFloats = 0.8,
    top_k: _RowInts = 40,
    top_p: _RowFloats = 0.95,
    min_p: _RowFloats = 0.05,
    repeat_penalty: _RowFloats = 1.0,
    presence_penalty: _RowFloats = 0.0,
    frequency_penalty: _RowFloats = 0.0,
    penalty_last_n: _RowInts = 64,
    history: Optional[_History] = None,
    seed: _RowInts = 0,
    sequence: Optional[_RowInts] = None,
    position: Optional[_RowInts] = None,
    logprobs: int = 0,
    device: _Device = "auto",
) -> _Samples: ...

__all__ = [
    "qkt_matmul",
    "scale",
    "causal_mask",
    "softmax",
    "weighted_matmul",
    "flash_attention",
    "rope",
    "swiglu",
    "geglu",
    "gelu",
    "rms_norm",
    "matmul",
    "embedding",
    "add",
    "kv_append",
    "argmax",
    "sample",
]
