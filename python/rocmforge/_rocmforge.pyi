# Type stubs of the native module rocmforge._rocmforge (see the docstrings for semantics).
# rocmforge.ops has its own stubs (ops.pyi); the native `ops` submodule holds the same functions.
import os
from types import ModuleType, TracebackType
from typing import final, Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

__version__: str
__all__ = [
    "__version__",
    "TensorInfo",
    "GGUFFile",
    "dequantize",
    "quantize",
    "Model",
    "GenerationStream",
    "Server",
    "ops",
    "Tokenizer",
    "Detokenizer",
    "devices",
    "gpu_launch_count",
    "gpu_bench",
    "gpu_matmul",
    "gpu_matvec",
    "bench_model",
    "_GpuBallast",
]
ops: ModuleType

_Device = Literal["cpu", "gpu", "auto"]
_MetaValue = Union[bool, int, float, str, List[Any]]
_Ints = Union[npt.NDArray[np.integer], Sequence[int]]
_Stop = Union[None, str, Sequence[str]]

@final
class TensorInfo:
    """One tensor's entry in a GGUF file."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def n_elements(self) -> int: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...

@final
class GGUFFile:
    """A memory-mapped GGUF file; a context manager."""

    def __new__(cls, path: Union[str, os.PathLike[str]]) -> Self: ...
    @property
    def version(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def file_size(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def metadata(self) -> Dict[str, _MetaValue]: ...
    @property
    def tensors(self) -> List[TensorInfo]: ...
    def tensor(self, name: str) -> npt.NDArray[np.float32]: ...
    def raw(self, name: str) -> npt.NDArray[np.uint8]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "GGUFFile": ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]],
        _exc: Optional[BaseException],
        _tb: Optional[TracebackType],
    ) -> bool: ...

def dequantize(
    raw: npt.NDArray[np.uint8], dtype: str, shape: Optional[Sequence[int]] = None
) -> npt.NDArray[np.float32]: ...
def quantize(x: npt.NDArray[np.float32], dtype: str) -> npt.NDArray[np.uint8]: ...

@final
class Detokenizer:
    """Incremental detokenizer of one sequence (from `Tokenizer.detokenizer()`)."""

    def push(self, id: int) -> str: ...
    def finish(self) -> str: ...

@final
class Tokenizer:
    """The tokenizer of a GGUF file (works on vocabulary-only files)."""

    def __new__(cls, path: Union[str, os.PathLike[str]]) -> Self: ...
    def tokenize(self, text: str, add_bos: Optional[bool] = None, special: bool = True) -> List[int]: ...
    def detokenize(self, ids: _Ints, special: bool = True) -> str: ...
    def token_to_piece(self, id: int, special: bool = True) -> bytes: ...
    def token_text(self, id: int) -> str: ...
    def is_eog(self, id: int) -> bool: ...
    def detokenizer(self, special: bool = True) -> Detokenizer: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> Optional[int]: ...
    @property
    def eos_id(self) -> Optional[int]: ...
    @property
    def eot_id(self) -> Optional[int]: ...
    @property
    def eog_ids(self) -> List[int]: ...
    @property
    def add_bos(self) -> bool: ...
    @property
    def model(self) -> str: ...
    @property
    def pre(self) -> str: ...
    def __len__(self) -> int: ...

def devices() -> List[Dict[str, Any]]: ...
@final
class _GpuBallast:
    """Test support: device memory held until `close()`."""

    def __new__(cls, nbytes: int, index: int = 0) -> "_GpuBallast": ...
    @property
    def nbytes(self) -> int: ...
    def close(self) -> None: ...

def gpu_launch_count(index: int = 0) -> int: ...
def gpu_bench(
    op: str, params: Dict[str, float], dtype: str = "F32", warmup: int = 5, iters: int = 20
) -> List[float]: ...
def gpu_matmul(
    x: npt.NDArray[np.float32], w: npt.NDArray[Any], dtype: str = "F32", path: str = "model"
) -> npt.NDArray[np.float32]: ...
def gpu_matvec(
    x: npt.NDArray[np.float32],
    weights: Sequence[npt.NDArray[Any]],
    dtype: str,
    epilogue: str = "store",
    *,
    biases: Optional[Sequence[Optional[npt.NDArray[np.float32]]]] = None,
    out: Optional[npt.NDArray[np.float32]] = None,
    norm_weight: Optional[npt.NDArray[np.float32]] = None,
    norm_parts: Optional[npt.NDArray[np.float32]] = None,
    eps: float = 1e-6,
    next_norm: Optional[npt.NDArray[np.float32]] = None,
    act: str = "silu",
    rope: Optional[Dict[str, Any]] = None,
    tuning: Optional[Dict[str, Union[str, int, bool]]] = None,
) -> Dict[str, Any]: ...
def bench_model(
    path: str,
    device: str = "gpu",
    n_prompt: Union[int, Sequence[int]] = 512,
    n_gen: Union[int, Sequence[int]] = 128,
    repeats: int = 3,
    tuning: Optional[Dict[str, Any]] = None,
    sampled: bool = False,
    depth: Union[int, Sequence[int]] = 0,
) -> Dict[str, Any]: ...

@final
class GenerationStream(Iterator[str]):
    """The iterator `Model.generate(..., stream=True)` returns: text pieces as they come."""

    def __iter__(self) -> "GenerationStream": ...
    def __next__(self) -> str: ...
    @property
    def finish_reason(self) -> Optional[Literal["stop", "eos", "length"]]: ...

@final
class Server:
    """An OpenAI-compatible HTTP server for one model; a context manager."""

    def __new__(
        cls,
        path: Union[str, os.PathLike[str], None] = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        device: str = "auto",
        n_ctx: Optional[int] = None,
        api_key: Optional[str] = None,
        queue_size: int = 16,
        seed: Optional[int] = None,
        kv_dtype: Optional[Literal["f32", "f16"]] = None,
        tuning: Optional[Dict[str, Any]] = None,
        model_name: Optional[str] = None,
        verbose: bool = False,
        max_batch: int = 8,
    ) -> Self: ...
    def start(self) -> Self: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def wait(self, timeout: Optional[float] = None) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def model(self) -> Optional[str]: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]],
        _exc: Optional[BaseException],
        _tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Model:
    """A GGUF language model on a device; a context manager."""

    def __new__(
        cls,
        path: Union[str, os.PathLike[str], None] = None,
        device: str = "auto",
        n_ctx: Optional[int] = None,
        seed: Optional[int] = None,
        verbose: bool = False,
        kv_dtype: Optional[Literal["f32", "f16"]] = None,
        tuning: Optional[Dict[str, Any]] = None,
    ) -> Self: ...
    @overload
    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stream: Literal[False] = False,
        logprobs: None = None,
    ) -> str: ...
    @overload
    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stream: Literal[False] = False,
        *,
        logprobs: int,
    ) -> Dict[str, Any]: ...
    @overload
    def generate(
        self,
        prompt: str,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        *,
        stream: Literal[True],
        logprobs: None = None,
    ) -> GenerationStream: ...
    @overload
    def chat(
        self,
        messages: Sequence[Dict[str, str]],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stream: Literal[False] = False,
        logprobs: None = None,
    ) -> str: ...
    @overload
    def chat(
        self,
        messages: Sequence[Dict[str, str]],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stream: Literal[False] = False,
        *,
        logprobs: int,
    ) -> Dict[str, Any]: ...
    @overload
    def chat(
        self,
        messages: Sequence[Dict[str, str]],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        *,
        stream: Literal[True],
        logprobs: None = None,
    ) -> GenerationStream: ...
    def apply_chat_template(self, messages: Sequence[Dict[str, str]]) -> str: ...
    def generate_tokens(
        self,
        ids: _Ints,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
    ) -> List[int]: ...
    def generate_batch(
        self,
        prompts: Sequence[str],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: _Stop = None,
        max_batch: int = 8,
    ) -> List[str]: ...
    def tokenize(self, text: str, add_bos: Optional[bool] = None, special: bool = True) -> List[int]: ...
    def detokenize(self, ids: _Ints, special: bool = True) -> str: ...
    def logits(self, ids: _Ints) -> npt.NDArray[np.float32]: ...
    @property
    def metadata(self) -> Dict[str, _MetaValue]: ...
    @property
    def config(self) -> Dict[str, Any]: ...
    @property
    def device(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def stats(self) -> Dict[str, Any]: ...
    @property
    def tuning(self) -> Optional[Dict[str, Any]]: ...
    @property
    def plan(self) -> List[str]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "Model": ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]],
        _exc: Optional[BaseException],
        _tb: Optional[TracebackType],
    ) -> bool: ...

