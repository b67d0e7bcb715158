"""The devices every op test runs on: the one list to extend when a backend lands.

"gpu" runs where rocmforge finds a GPU (CUDA, or HIP in a `rocm` build) and is skipped
elsewhere. ROCMFORGE_TEST_DEVICES (e.g. "gpu") narrows the list, as scripts/gpu-check.sh does."""

import os

import pytest

import rocmforge as rf

HAS_GPU = any(d["device"].startswith("gpu") and "error" not in d for d in rf.devices())

_ALL = {"cpu": "cpu", "gpu": pytest.param("gpu", marks=pytest.mark.skipif(not HAS_GPU, reason="no GPU found"))}
DEVICES = [_ALL[d] for d in os.environ.get("ROCMFORGE_TEST_DEVICES", "cpu,gpu").split(",") if d in _ALL]
