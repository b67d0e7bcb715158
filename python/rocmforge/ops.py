"""Every atomic op of a transformer layer, on float32 NumPy arrays.

Layouts (NumPy order, last axis contiguous)::

    q                [batch, seq_q, heads, head_dim]
    k, v             [batch, seq_k, kv_heads, head_dim]     heads % kv_heads == 0 (GQA)
    scores, weights  [batch, heads, seq_q, seq_k]
    attention out    [batch, seq_q, heads, head_dim]

Each function takes ``device="cpu" | "gpu" | "auto"`` (keyword-only, default ``"auto"``: the
first GPU found, else the CPU) and returns new float32 arrays (``kv_append`` writes in place).
Arrays of any memory layout are accepted (non-contiguous ones are copied); a wrong dtype is a
``TypeError`` and a wrong rank, an empty array or disagreeing shapes a ``ValueError``, each
naming the argument. The GIL is released while the op computes.

>>> import numpy as np, rocmforge as rf
>>> q = np.random.randn(1, 5, 4, 64).astype(np.float32)
>>> k = v = np.random.randn(1, 5, 2, 64).astype(np.float32)
>>> out = rf.ops.flash_attention(q, k, v, causal=True)       # [1, 5, 4, 64]
>>> ids = rf.ops.sample(np.random.randn(8, 1000).astype(np.float32), seed=1)   # [8] token ids
"""

from __future__ import annotations

from ._rocmforge import ops as _native

qkt_matmul = _native.qkt_matmul
scale = _native.scale
causal_mask = _native.causal_mask
softmax = _native.softmax
weighted_matmul = _native.weighted_matmul
flash_attention = _native.flash_attention
rope = _native.rope
swiglu = _native.swiglu
geglu = _native.geglu
gelu = _native.gelu
rms_norm = _native.rms_norm
matmul = _native.matmul
embedding = _native.embedding
add = _native.add
kv_append = _native.kv_append
argmax = _native.argmax
sample = _native.sample

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
