"""rocmforge: GGUF language models on AMD (ROCm) and NVIDIA GPUs, and on the CPU.

>>> import rocmforge as rf
>>> g = rf.GGUFFile("model.gguf")           # memory-mapped GGUF reader
>>> rf.ops.rms_norm(x, w)                    # any transformer op on NumPy arrays
>>> rf.Model("model.gguf").generate("The capital of France is")
>>> rf.serve("model.gguf", port=8000)        # an OpenAI-compatible HTTP server
"""

from . import _rocmforge, ops
from .errors import (
    DeviceError,
    GGUFError,
    OutOfMemoryError,
    RocmForgeError,
    UnsupportedError,
)
from ._rocmforge import GGUFFile, TensorInfo, dequantize, quantize
from ._rocmforge import Detokenizer, Tokenizer
from ._rocmforge import devices, gpu_launch_count
from ._rocmforge import GenerationStream, Model, Server
from ._serve import serve

__version__ = _rocmforge.__version__

__all__ = [
    "__version__",
    "GGUFFile",
    "TensorInfo",
    "dequantize",
    "quantize",
    "ops",
    "Tokenizer",
    "Detokenizer",
    "devices",
    "gpu_launch_count",
    "Model",
    "GenerationStream",
    "Server",
    "serve",
    "RocmForgeError",
    "GGUFError",
    "UnsupportedError",
    "DeviceError",
    "OutOfMemoryError",
]
