//! Backends: where the model's ops run.
//!
//! `Backend` is the interface the model (`crate::model`) is written against: flat f32
//! activation buffers, weights kept in their GGUF type, and a KV cache, all living on the
//! backend's device. Implementations: `cpu::CpuBackend` (always there) and the GPU backend
//! (CUDA through cudarc, HIP through hip-runtime-sys with feature `rocm`).
//!
//! Conventions shared by every method:
//! - Buffers may be larger than a call needs (scratch is sized for the largest batch once);
//!   each method reads/writes only the prefix its size arguments describe.
//! - Shapes are written in NumPy order, row-major, last axis contiguous.
//! - Errors are `Error::Device` / `Error::OutOfMemory` naming the op and the sizes.
//!
//! Decode steps on the device: a backend may keep a decode step's token id and position in
//! device memory (`Step`), with `*_step` variants of the ops that depend on them; the model's
//! one-token step is then the same work at every position, which a GPU backend records once
//! as a graph (`capture`) and replays for every token (`replay`). Backends without it (the
//! CPU) keep the defaults: `new_step` gives `None` and the model runs decode steps through
//! the ordinary ops.

pub mod cpu;
pub mod gpu;

use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::rope::RopeParams;

pub trait Backend: Send + Sync {
    /// A flat f32 buffer on the device.
    type Buf: Send + Sync;
    /// A GGUF tensor as stored in the file (quantized types stay quantized), on the device.
    type Weight: Send + Sync;
    /// One layer's K or V cache: `[n_ctx, kv_heads * head_dim]` of `KvDtype`.
    type Kv: Send + Sync;
    /// A decode step's state in device memory: the token id and position the `*_step` ops
    /// read, and the (id, value) `argmax_step` writes.
    type Step: Send + Sync;
    /// A recorded decode step (a CUDA/HIP graph).
    type Graph: Send + Sync;

    /// Human-readable device name ("cpu", "NVIDIA H100 80GB HBM3", ...).
    fn name(&self) -> String;

    /// Free bytes of the backend's device memory, where it has a memory of its own (GPUs);
    /// `None` on the CPU.
    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// A zero-filled buffer of `n` floats.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A buffer holding `host`.
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// Copy the first `out.len()` floats of `buf` to the host (synchronizes).
    fn download(&self, buf: &Self::Buf, out: &mut [f32]) -> Result<()>;
    /// A weight of GGUF type `ty` and NumPy shape `[rows, cols]` (vectors: rows = 1) from the
    /// file's bytes.
    fn weight(&self, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self::Weight>;
    /// A KV cache buffer of `n` elements.
    fn kv_cache(&self, n: usize, dtype: KvDtype) -> Result<Self::Kv>;

    /// `out[t, :] = dequant(table)[ids[t], :]`; table `[vocab, dim]`, out `[ids.len(), dim]`.
    /// Ids are checked against the vocabulary by the caller.
    fn embedding(&self, table: &Self::Weight, ids: &[u32], out: &mut Self::Buf) -> Result<()>;

    /// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w` for `r < rows`;
    /// x, out `[rows, dim]`, w F32 `[dim]` (dim = w's cols).
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        eps: f32,
        rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`; w `[n, k]`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight, m: usize, out: &mut Self::Buf) -> Result<()>;

    /// The attention's three projections of `x [m, k]`: `q = x @ wq^T (+ bq)`,
    /// `k = x @ wk^T (+ bk)`, `v = x @ wv^T (+ bv)` (biases F32, all three or none). Backends
    /// may fuse them (the GPU does for m = 1); the result is that of the unfused ops.
    #[allow(clippy::too_many_arguments)]
    fn matmul_qkv(
        &self,
        x: &Self::Buf,
        w: [&Self::Weight; 3],
        biases: Option<[&Self::Weight; 3]>,
        m: usize,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &mut Self::Buf,
    ) -> Result<()> {
        unfused::matmul_qkv(self, x, w, biases, m, q, k, v)
    }

    /// `matmul_qkv` of `rms_norm(x, norm, eps)` (x `[m, k]`): the attention's projections of
    /// the normalized rows. `xb` (`[m, k]`) is scratch that receives the normalized rows where
    /// a backend runs the two apart (the GPU fuses them for m = 1).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_qkv(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        w: [&Self::Weight; 3],
        biases: Option<[&Self::Weight; 3]>,
        m: usize,
        xb: &mut Self::Buf,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &mut Self::Buf,
    ) -> Result<()> {
        self.rms_norm(x, norm, eps, m, xb)?;
        self.matmul_qkv(xb, w, biases, m, q, k, v)
    }

    /// `out[m, n] += x[m, k] @ w^T` (w `[n, k]`): a projection added into the residual stream.
    /// `tmp` (`[m, n]`) is scratch for backends that do not add in place.
    fn matmul_add(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        m: usize,
        n: usize,
        tmp: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()> {
        unfused::matmul_add(self, x, w, m, n, tmp, out)
    }

    /// `matmul_add` followed, in the caller, by an `rms_norm_qkv` / `rms_norm_swiglu` of `out`
    /// with `norm` and `eps`, with this same `xb`: backends may prepare that norm's input here
    /// (the GPU does for m = 1, in the projection's own launch) and hand it over through `xb`,
    /// so `xb` must reach that call unchanged. `xb` (`[m, n]`) is also `matmul_add`'s scratch.
    /// `out` is the residual stream: no launch since the one before the launch just before
    /// has written it (the GPU reads it early: `Residual::AddEarly`).
    #[allow(clippy::too_many_arguments)]
    fn matmul_add_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        m: usize,
        n: usize,
        norm: &Self::Weight,
        eps: f32,
        xb: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (norm, eps);
        self.matmul_add(x, w, m, n, xb, out)
    }

    /// `out[m, n] = silu(x @ w_gate^T) * (x @ w_up^T)` (weights `[n, k]`): the feed-forward's
    /// input to its down projection. `gate` and `up` (`[m, n]`) are scratch.
    #[allow(clippy::too_many_arguments)]
    fn matmul_swiglu(
        &self,
        x: &Self::Buf,
        w_gate: &Self::Weight,
        w_up: &Self::Weight,
        m: usize,
        n: usize,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()> {
        unfused::matmul_swiglu(self, x, w_gate, w_up, m, n, gate, up, out)
    }

    /// `matmul_swiglu` of `rms_norm(x, norm, eps)`; `xb` as in `rms_norm_qkv`.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_swiglu(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        w_gate: &Self::Weight,
        w_up: &Self::Weight,
        m: usize,
        n: usize,
        xb: &mut Self::Buf,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.rms_norm(x, norm, eps, m, xb)?;
        self.matmul_swiglu(xb, w_gate, w_up, m, n, gate, up, out)
    }

    /// `matmul(rms_norm(x, norm, eps), w)` (x `[m, k]`, out `[m, n]`): the LM head of the final
    /// norm; `xb` as in `rms_norm_qkv` (the GPU takes the norm `matmul_add_norm` handed over).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_matmul(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        w: &Self::Weight,
        m: usize,
        xb: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.rms_norm(x, norm, eps, m, xb)?;
        self.matmul(xb, w, m, out)
    }

    /// `x[r, :] += bias` for `r < rows`; bias F32 `[n]`, x `[rows, n]`.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Weight, rows: usize) -> Result<()>;

    /// `a[i] += b[i]` for `i < n`.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf, n: usize) -> Result<()>;

    /// `out[i] = silu(gate[i]) * up[i]` for `i < n`.
    fn swiglu(&self, gate: &Self::Buf, up: &Self::Buf, n: usize, out: &mut Self::Buf)
        -> Result<()>;

    /// Rotate `x [seq, heads, head_dim]` in place; token t sits at position `pos0 + t`.
    /// angle(i) = pos * theta^(-2i/n_rot) / freq_factors[i] (freq_factors F32 `[n_rot/2]`).
    fn rope(
        &self,
        x: &mut Self::Buf,
        seq: usize,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: &RopeParams,
        freq_factors: Option<&Self::Weight>,
    ) -> Result<()>;

    /// `cache[pos0 + t, :] = src[t, :]` for `t < n`; rows of `row_len` floats (converted to
    /// the cache's dtype).
    fn kv_append(
        &self,
        cache: &mut Self::Kv,
        src: &Self::Buf,
        pos0: usize,
        n: usize,
        row_len: usize,
    ) -> Result<()>;

    /// One attention block's rope and KV-cache append: `q [t, heads, head_dim]` and
    /// `k [t, kv_heads, head_dim]` rotated in place at positions `pos0..` (as `rope`), then
    /// rows `pos0..pos0 + t` of `k_cache` and `v_cache` set to k (rotated) and v (as
    /// `kv_append`, rows of `kv_heads * head_dim`). Backends may fuse it (the GPU does, in one
    /// launch); the result is that of the unfused ops.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_append(
        &self,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &Self::Buf,
        k_cache: &mut Self::Kv,
        v_cache: &mut Self::Kv,
        t: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: &RopeParams,
        freq_factors: Option<&Self::Weight>,
    ) -> Result<()> {
        unfused::rope_kv_append(
            self,
            q,
            k,
            v,
            k_cache,
            v_cache,
            t,
            heads,
            kv_heads,
            head_dim,
            pos0,
            rope,
            freq_factors,
        )
    }

    /// Causal attention (bottom-right aligned) of `q [seq_q, heads, head_dim]` against cache
    /// rows `[0, seq_k)` of `k`, `v` (`[*, kv_heads, head_dim]`), GQA (heads % kv_heads == 0):
    /// `out [seq_q, heads, head_dim] = softmax(q k^T * scale + mask) v`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Kv,
        v: &Self::Kv,
        seq_q: usize,
        seq_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `dst[0.., :] = src[src_row .. src_row + n_rows, :]` (rows of `row_len` floats).
    fn copy_rows(
        &self,
        src: &Self::Buf,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut Self::Buf,
    ) -> Result<()>;

    /// Bytes of working memory `reserve_workspace` takes for these sizes, where the longest
    /// weight row is `max_weight_cols` (the load-time memory check counts it before any weight
    /// is uploaded). Backends without such memory: 0.
    #[allow(clippy::too_many_arguments)]
    fn workspace_bytes(
        &self,
        _max_seq_q: usize,
        _max_seq_k: usize,
        _heads: usize,
        _kv_heads: usize,
        _head_dim: usize,
        _vocab: usize,
        _max_weight_cols: usize,
    ) -> Result<u64> {
        Ok(0)
    }

    /// Reserve now whatever working memory `attention` will need for up to `max_seq_q` queries
    /// against up to `max_seq_k` keys (and `argmax` over `vocab` floats), so that a running
    /// generation never allocates. Backends without such memory do nothing.
    fn reserve_workspace(
        &self,
        _max_seq_q: usize,
        _max_seq_k: usize,
        _heads: usize,
        _kv_heads: usize,
        _head_dim: usize,
        _vocab: usize,
    ) -> Result<()> {
        Ok(())
    }

    /// Index of the largest of the first `n` floats (lowest index on ties). A NaN beats every
    /// number (the first NaN wins, as in `np.argmax`), so that a caller reading the picked
    /// value sees the NaN instead of a token.
    fn argmax(&self, x: &Self::Buf, n: usize) -> Result<u32>;

    /// Wait for all queued work.
    fn synchronize(&self) -> Result<()>;

    // ------------------------------------------------------------- decode steps on the device

    /// State for decode steps whose token id and position live in device memory, with the
    /// working memory of `attention_step` over up to `max_keys` keys and `argmax_step` over
    /// `vocab` floats reserved now; `None` when this backend has no `*_step` ops.
    fn new_step(
        &self,
        _max_keys: usize,
        _heads: usize,
        _kv_heads: usize,
        _head_dim: usize,
        _vocab: usize,
    ) -> Result<Option<Self::Step>> {
        Ok(None)
    }
    /// Set the step's token id and position (one small copy to the device).
    fn set_step(&self, _step: &mut Self::Step, _id: u32, _pos: usize) -> Result<()> {
        Err(no_step_ops())
    }
    /// Queue a copy to the host of the (id, value) the `argmax_step` queued last wrote, for
    /// `step_result`; it does not wait.
    fn queue_step_result(&self, _step: &Self::Step) -> Result<()> {
        Err(no_step_ops())
    }
    /// The (id, value) of the oldest `queue_step_result` not yet returned. It waits for that
    /// copy only: steps queued after it may still be running when it returns.
    fn step_result(&self, _step: &Self::Step) -> Result<(u32, f32)> {
        Err(no_step_ops())
    }
    /// `embedding` of the step's token: `out [1, dim]`.
    fn embedding_step(
        &self,
        _table: &Self::Weight,
        _step: &Self::Step,
        _out: &mut Self::Buf,
    ) -> Result<()> {
        Err(no_step_ops())
    }
    /// `rope` of one token (`x [1, heads, head_dim]`) at the step's position.
    fn rope_step(
        &self,
        _x: &mut Self::Buf,
        _heads: usize,
        _head_dim: usize,
        _step: &Self::Step,
        _rope: &RopeParams,
        _freq_factors: Option<&Self::Weight>,
    ) -> Result<()> {
        Err(no_step_ops())
    }
    /// `kv_append` of one row at the step's position (the caller checks that it fits).
    fn kv_append_step(
        &self,
        _cache: &mut Self::Kv,
        _src: &Self::Buf,
        _step: &Self::Step,
        _row_len: usize,
    ) -> Result<()> {
        Err(no_step_ops())
    }
    /// `rope_kv_append` of one token at the step's position (the caller checks that it fits).
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_append_step(
        &self,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &Self::Buf,
        k_cache: &mut Self::Kv,
        v_cache: &mut Self::Kv,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        step: &Self::Step,
        rope: &RopeParams,
        freq_factors: Option<&Self::Weight>,
    ) -> Result<()> {
        unfused::rope_kv_append_step(
            self,
            q,
            k,
            v,
            k_cache,
            v_cache,
            heads,
            kv_heads,
            head_dim,
            step,
            rope,
            freq_factors,
        )
    }
    /// A decode step's attention inputs: `rms_norm_qkv` of the token (m = 1), then
    /// `rope_kv_append_step` of its q, k and v. Afterwards q holds the turned q and the caches
    /// the step's rows; k and v are scratch (a backend that fuses the two need not write them).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_qkv_rope_kv_step(
        &self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        w: [&Self::Weight; 3],
        biases: Option<[&Self::Weight; 3]>,
        xb: &mut Self::Buf,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &mut Self::Buf,
        k_cache: &mut Self::Kv,
        v_cache: &mut Self::Kv,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        step: &Self::Step,
        rope: &RopeParams,
        freq_factors: Option<&Self::Weight>,
    ) -> Result<()> {
        self.rms_norm_qkv(x, norm, eps, w, biases, 1, xb, q, k, v)?;
        self.rope_kv_append_step(
            q,
            k,
            v,
            k_cache,
            v_cache,
            heads,
            kv_heads,
            head_dim,
            step,
            rope,
            freq_factors,
        )
    }
    /// `attention` of one query against the cache rows `[0, pos + 1)`, pos the step's
    /// position; `max_keys` (the cache's rows) bounds it and sizes the launch.
    #[allow(clippy::too_many_arguments)]
    fn attention_step(
        &self,
        _q: &Self::Buf,
        _k: &Self::Kv,
        _v: &Self::Kv,
        _step: &Self::Step,
        _max_keys: usize,
        _heads: usize,
        _kv_heads: usize,
        _head_dim: usize,
        _scale: f32,
        _out: &mut Self::Buf,
    ) -> Result<()> {
        Err(no_step_ops())
    }
    /// `argmax` of the first `n` floats (a NaN wins, as in `argmax`) and the picked value,
    /// into the step (read with `step_result`).
    fn argmax_step(&self, _x: &Self::Buf, _n: usize, _step: &Self::Step) -> Result<()> {
        Err(no_step_ops())
    }
    /// Record the work `work` queues as a graph instead of running it; `None` when this
    /// backend cannot (then `work` has not run). The work must only use `*_step` ops and
    /// buffers that stay alive and in place while the graph lives.
    fn capture(
        &self,
        _step: &Self::Step,
        _work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Self::Graph>> {
        Ok(None)
    }
    /// Queue one replay of `graph`; `false` (nothing queued) when it is stale, i.e. memory
    /// it recorded has moved since: capture it again.
    fn replay(&self, _graph: &Self::Graph, _step: &Self::Step) -> Result<bool> {
        Err(no_step_ops())
    }
}

fn no_step_ops() -> Error {
    Error::unsupported("this backend has no decode-step ops on the device")
}

/// The fused `Backend` methods as their separate ops: the trait's defaults, and what a backend
/// that fuses falls back to where its fused kernels do not apply.
pub mod unfused {
    use super::{Backend, RopeParams};
    use crate::error::Result;

    #[allow(clippy::too_many_arguments)]
    pub fn matmul_qkv<B: Backend + ?Sized>(
        b: &B,
        x: &B::Buf,
        w: [&B::Weight; 3],
        biases: Option<[&B::Weight; 3]>,
        m: usize,
        q: &mut B::Buf,
        k: &mut B::Buf,
        v: &mut B::Buf,
    ) -> Result<()> {
        b.matmul(x, w[0], m, q)?;
        b.matmul(x, w[1], m, k)?;
        b.matmul(x, w[2], m, v)?;
        if let Some([bq, bk, bv]) = biases {
            b.add_bias(q, bq, m)?;
            b.add_bias(k, bk, m)?;
            b.add_bias(v, bv, m)?;
        }
        Ok(())
    }

    pub fn matmul_add<B: Backend + ?Sized>(
        b: &B,
        x: &B::Buf,
        w: &B::Weight,
        m: usize,
        n: usize,
        tmp: &mut B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        b.matmul(x, w, m, tmp)?;
        b.add(out, tmp, m * n)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn matmul_swiglu<B: Backend + ?Sized>(
        b: &B,
        x: &B::Buf,
        w_gate: &B::Weight,
        w_up: &B::Weight,
        m: usize,
        n: usize,
        gate: &mut B::Buf,
        up: &mut B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        b.matmul(x, w_gate, m, gate)?;
        b.matmul(x, w_up, m, up)?;
        b.swiglu(gate, up, m * n, out)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_append<B: Backend + ?Sized>(
        b: &B,
        q: &mut B::Buf,
        k: &mut B::Buf,
        v: &B::Buf,
        k_cache: &mut B::Kv,
        v_cache: &mut B::Kv,
        t: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: &RopeParams,
        freq_factors: Option<&B::Weight>,
    ) -> Result<()> {
        b.rope(q, t, heads, head_dim, pos0, rope, freq_factors)?;
        b.rope(k, t, kv_heads, head_dim, pos0, rope, freq_factors)?;
        b.kv_append(k_cache, k, pos0, t, kv_heads * head_dim)?;
        b.kv_append(v_cache, v, pos0, t, kv_heads * head_dim)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_append_step<B: Backend + ?Sized>(
        b: &B,
        q: &mut B::Buf,
        k: &mut B::Buf,
        v: &B::Buf,
        k_cache: &mut B::Kv,
        v_cache: &mut B::Kv,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        step: &B::Step,
        rope: &RopeParams,
        freq_factors: Option<&B::Weight>,
    ) -> Result<()> {
        b.rope_step(q, heads, head_dim, step, rope, freq_factors)?;
        b.rope_step(k, kv_heads, head_dim, step, rope, freq_factors)?;
        b.kv_append_step(k_cache, k, step, kv_heads * head_dim)?;
        b.kv_append_step(v_cache, v, step, kv_heads * head_dim)
    }
}
