"""The rocmforge exception hierarchy.

Every error raised by the native module is one of these (or a built-in ``ValueError``,
``TypeError``, ``FileNotFoundError``... for bad arguments and missing files).
"""


class RocmForgeError(Exception):
    """Base class of every rocmforge error."""


class GGUFError(RocmForgeError, ValueError):
    """A malformed GGUF file or malformed model metadata (names the field and byte offset)."""


class UnsupportedError(RocmForgeError, NotImplementedError):
    """A valid file or request rocmforge cannot run (names the architecture or tensor type)."""


class DeviceError(RocmForgeError, RuntimeError):
    """A GPU runtime failure (names the op and the runtime call)."""


class OutOfMemoryError(DeviceError, MemoryError):
    """Device memory exhausted (says how much was needed and how much was free)."""


__all__ = ["RocmForgeError", "GGUFError", "UnsupportedError", "DeviceError", "OutOfMemoryError"]
