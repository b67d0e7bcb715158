"""The devices every op test runs on: the one list to extend when a backend lands.

"gpu" runs where rocmforge finds a GPU (CUDA, or HIP in a `rocm` build) and is skipped
elsewhere."""

import pytest

import rocmforge as rf

HAS_GPU = any(d["device"].startswith("gpu") and "error" not in d for d in rf.devices())

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not HAS_GPU, reason="no GPU found"))]
