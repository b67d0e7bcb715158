"""The package's public surface: version, exception hierarchy per SPEC.md, and the modules it ships."""

import importlib.metadata
import pkgutil

import pytest

import rocmforge as rf


def test_version_matches_distribution():
    assert rf.__version__ == importlib.metadata.version("rocmforge")


@pytest.mark.parametrize(
    "cls, bases",
    [
        (rf.GGUFError, (rf.RocmForgeError, ValueError)),
        (rf.UnsupportedError, (rf.RocmForgeError, NotImplementedError)),
        (rf.DeviceError, (rf.RocmForgeError, RuntimeError)),
        (rf.OutOfMemoryError, (rf.DeviceError, MemoryError)),
    ],
)
def test_exception_hierarchy(cls, bases):
    for base in bases:
        assert issubclass(cls, base)


def test_native_errors_are_the_python_classes(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x07\x00\x00\x00" + b"\x00" * 16)
    with pytest.raises(rf.GGUFError) as exc:
        rf.GGUFFile(str(bad))
    assert "version" in str(exc.value) and isinstance(exc.value, ValueError)
    with pytest.raises(FileNotFoundError):
        rf.GGUFFile(str(tmp_path / "missing.gguf"))
    with pytest.raises(IsADirectoryError):
        rf.GGUFFile(str(tmp_path))


# Every module the installed package holds; test helpers and model builders live in tests_py/
# and tools/, outside it.
SHIPPED_MODULES = {"_models", "_rocmforge", "_serve", "cli", "errors", "ops"}


def test_package_holds_only_its_shipped_modules():
    found = {m.name for m in pkgutil.iter_modules(rf.__path__)}
    assert "testing" not in found
    assert found == SHIPPED_MODULES, (f"unexpected: {sorted(found - SHIPPED_MODULES)}, "
                                      f"missing: {sorted(SHIPPED_MODULES - found)}")
