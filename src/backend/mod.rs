//! Backends: where the model's ops run.
//!
//! `Backend` is what the model (`crate::model`) is written against: flat f32 activation
//! buffers, weights kept in their GGUF type, KV caches, and one method per basic op of a
//! transformer block. Implementations: `cpu::CpuBackend` (always there) and
//! `gpu::GpuBackend` (CUDA, and HIP with feature `rocm`).
//!
//! Conventions shared by every method:
//! - Buffers may be larger than a call needs (scratch is sized for the largest chunk once);
//!   each method reads/writes only the prefix its size arguments describe.
//! - Shapes are written in NumPy order, row-major, last axis contiguous.
//! - Errors are `Error::Device` / `Error::OutOfMemory` naming the op and the sizes.
//!
//! Decode steps: the model records its one-token step once (`graph::Recorder`, a backend that
//! only writes the ops down) with the token and position left to the device (`Tokens::Step`,
//! `Pos::Step`), and hands the recording to `Backend::plan`. A GPU backend turns it into a
//! `DecodePlan`: the ops matched against its fused kernels, the step recorded as a graph and
//! replayed for every token. The CPU has no plan: its decode steps are ordinary calls.

pub mod cpu;
pub mod gpu;
pub mod graph;

use crate::device::KvDtype;
use crate::error::Result;
pub use crate::ops::activation::Activation;
use crate::ops::rope::RopeParams;
use crate::ops::sampling::StepPick;
use crate::ops::WeightView;

/// The token ids of a chunk.
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    /// Ids from the host.
    Host(&'a [u32]),
    /// One token whose id a decode plan keeps in device memory (recorded steps only).
    Step,
}

/// The position of a chunk's first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pos {
    /// Token `t` of the chunk sits at position `p + t`.
    At(usize),
    /// One token at the position a decode plan keeps in device memory (recorded steps only).
    Step,
}

/// An elementwise map of a buffer in place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Map {
    /// `x * factor`.
    Scale(f32),
    /// `cap * tanh(x / cap)`.
    SoftCap(f32),
}

/// A rope as a block applies it: the parameters and the optional frequency divisors
/// (F32 `[n_rot / 2]`, Llama 3's `rope_freqs`).
pub struct Rope<'a, W> {
    pub params: RopeParams,
    pub freq_factors: Option<&'a W>,
}

/// One attention call: `seq_q` queries (`q [seq_q, heads, head_dim]`), the first at `pos`,
/// against the cache rows `[0, pos + seq_q)` (GQA: `heads % kv_heads == 0`), causal
/// (bottom-right aligned), and with `window` only the last `window` keys of each query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    pub seq_q: usize,
    pub pos: Pos,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
}

/// The largest work a model asks of a backend: what its working memory is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Tokens of the longest chunk.
    pub max_seq_q: usize,
    /// Rows of the KV cache.
    pub max_seq_k: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// The longest weight row.
    pub max_weight_cols: usize,
}

pub trait Backend: Send + Sync + Sized {
    /// A flat f32 buffer on the device.
    type Buf: Send + Sync;
    /// A GGUF tensor as stored in the file (quantized types stay quantized), on the device.
    type Weight: Send + Sync;
    /// One layer's K or V cache: `[rows, row_len]` of `KvDtype`.
    type Kv: Send + Sync;
    /// A compiled decode step (`plan`).
    type Plan: DecodePlan<Self>;

    /// Human-readable device name ("cpu", "NVIDIA H100 80GB HBM3", ...).
    fn name(&self) -> String;
    /// Free bytes of the device's memory, where it has a memory of its own (GPUs); `None` on
    /// the CPU.
    fn free_memory(&self) -> Result<Option<u64>>;
    /// A zero-filled buffer of `n` floats.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// Copy the first `out.len()` floats of `buf` to the host (waits for the work queued).
    fn download(&self, buf: &Self::Buf, out: &mut [f32]) -> Result<()>;
    /// A weight from the file's bytes (vectors: rows = 1).
    fn weight(&self, w: WeightView) -> Result<Self::Weight>;
    /// A zero-filled K or V cache of `rows` rows of `row_len` values.
    fn kv_cache(&self, rows: usize, row_len: usize, dtype: KvDtype) -> Result<Self::Kv>;
    /// Bytes of working memory `workload` needs beyond the buffers (attention partials, the
    /// tensor cores' f16 copies), reserved now when `reserve` (so that a running generation
    /// never allocates). The load-time memory check asks first, without `reserve`.
    fn workspace(&self, workload: &Workload, reserve: bool) -> Result<u64>;

    /// `out[t, :] = dequant(table)[ids[t], :]`; table `[vocab, dim]`, ids checked by the caller.
    fn embedding(&self, table: &Self::Weight, ids: Tokens, out: &mut Self::Buf) -> Result<()>;
    /// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w` for `r < rows`; rows of
    /// `w.cols` values (per-head norms: rows = tokens x heads).
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        eps: f32,
        rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight, m: usize, out: &mut Self::Buf) -> Result<()>;
    /// `a[i] += b[i]` for `i < n`.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf, n: usize) -> Result<()>;
    /// `x[r, :] += bias` for `r < rows`; bias F32 `[n]`.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Weight, rows: usize) -> Result<()>;
    /// `out[i] = act(gate[i]) * up[i]` for `i < n`.
    fn glu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        n: usize,
        act: Activation,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// `x[i] = f(x[i])` for `i < n`.
    fn map(&self, x: &mut Self::Buf, n: usize, f: Map) -> Result<()>;
    /// Rotate `x [seq, heads, head_dim]` (`shape`) in place, token t at position `pos + t`:
    /// angle(i) = pos * theta^(-2i/n_rot) / freq_factors[i].
    fn rope(
        &self,
        x: &mut Self::Buf,
        shape: [usize; 3],
        pos: Pos,
        rope: &Rope<Self::Weight>,
    ) -> Result<()>;
    /// `cache[pos + t, :] = src[t, :]` for `t < n` (converted to the cache's dtype).
    fn kv_append(&self, cache: &mut Self::Kv, src: &Self::Buf, pos: Pos, n: usize) -> Result<()>;
    /// `out [seq_q, heads, head_dim] = softmax(q k^T * scale + mask) v` over the cache.
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Kv,
        v: &Self::Kv,
        a: &Attention,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// The index of the largest of the first `n` floats (lowest on ties; a NaN beats every
    /// number, the first NaN winning as in `np.argmax`) and its value.
    fn argmax(&self, x: &Self::Buf, n: usize) -> Result<(u32, f32)>;
    /// `dst[dst_row .. dst_row + n_rows, :] = src[src_row .. src_row + n_rows, :]` (rows of
    /// `row_len` floats).
    fn copy_rows(
        &self,
        src: &Self::Buf,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut Self::Buf,
        dst_row: usize,
    ) -> Result<()>;
    /// A decode plan for the recorded one-token step `step` (its weight ids index `weights`,
    /// its cache ids `kv`), or `None` where this backend runs steps as ordinary calls.
    fn plan(
        &self,
        step: &graph::StepGraph,
        weights: &[&Self::Weight],
        kv: &[&Self::Kv],
    ) -> Result<Option<Self::Plan>>;
}

/// A compiled one-token decode step (`Backend::plan`): the step's token id and position live
/// in device memory, the step leaves its logits and its pick (greedy or sampled) there, and
/// results come back through a small queue so that the next step can be queued before a
/// pick is read.
pub trait DecodePlan<B: Backend>: Send {
    /// Make `(id, pos)` the next step's input (no copy when the device already holds it:
    /// each step leaves its pick and its position + 1 as the next input).
    fn set_input(&mut self, id: u32, pos: usize) -> Result<()>;
    /// How the steps queued from now on pick their token (greedy until set), with the
    /// penalties' window of history for the next step (`StepPick::window`).
    fn set_pick(&mut self, pick: &StepPick, window: &[u32]) -> Result<()>;
    /// Queue one step on the current input, and a read of its pick. `weights` and `kv` are
    /// those the plan was made with, in the same order.
    fn queue(&mut self, weights: &[&B::Weight], kv: &mut [B::Kv]) -> Result<()>;
    /// The pick of the oldest queued step not yet read and its logit (greedy) or
    /// log-probability (sampled); waits for that step only.
    fn read(&mut self) -> Result<(u32, f32)>;
    /// The logits of the last step that ran (`out [vocab]`; waits for it).
    fn logits(&self, out: &mut [f32]) -> Result<()>;
    /// Whether greedy decoding should queue the next step before reading a step's pick
    /// (`Transformer::decode_greedy`'s `ahead`; the backend's tuning says).
    fn queues_ahead(&self) -> bool;
    /// What the plan runs, a line a launch kind: the fusions it applied and the ops it
    /// leaves as they are.
    fn describe(&self) -> Vec<String>;
}

/// The plan of a backend that has none (the CPU): never made.
pub enum NoPlan {}

impl<B: Backend> DecodePlan<B> for NoPlan {
    fn set_input(&mut self, _: u32, _: usize) -> Result<()> {
        match *self {}
    }
    fn set_pick(&mut self, _: &StepPick, _: &[u32]) -> Result<()> {
        match *self {}
    }
    fn queue(&mut self, _: &[&B::Weight], _: &mut [B::Kv]) -> Result<()> {
        match *self {}
    }
    fn read(&mut self) -> Result<(u32, f32)> {
        match *self {}
    }
    fn logits(&self, _: &mut [f32]) -> Result<()> {
        match *self {}
    }
    fn queues_ahead(&self) -> bool {
        match *self {}
    }
    fn describe(&self) -> Vec<String> {
        match *self {}
    }
}
