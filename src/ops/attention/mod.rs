//! Attention: `qkt_matmul`, `causal_mask`, `softmax`, `weighted_matmul` (the unfused steps,
//! each callable on its own) and `flash_attention` (all of them fused, any length).
//!
//! Layouts (NumPy order, row-major): q `[batch, seq_q, heads, head_dim]`, k and v
//! `[batch, seq_k, kv_heads, head_dim]`, scores/weights `[batch, heads, seq_q, seq_k]`,
//! out `[batch, seq_q, heads, head_dim]`. GQA: `heads % kv_heads == 0`, query head h reads
//! kv head `h / (heads / kv_heads)`. The causal mask is bottom-right aligned: query i sees key
//! j when `j <= i + seq_k - seq_q` (decoding with a cache: seq_k >= seq_q). A sliding window
//! (`flash_attention`'s `window`, with the causal mask) keeps the last `window` of those keys:
//! query i, at position `p = i + seq_k - seq_q`, sees key j when `j <= p` and `p - j < window`.

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero, product, Element};
use crate::device::Device;
use crate::error::{Error, Result};

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// All sizes at least 1, `heads % kv_heads == 0`, and every tensor's element count fits.
    pub fn check(&self, op: &str) -> Result<()> {
        let s = self;
        for (what, v) in [
            ("batch", s.batch),
            ("seq_q", s.seq_q),
            ("seq_k", s.seq_k),
            ("heads", s.heads),
            ("kv_heads", s.kv_heads),
            ("head_dim", s.head_dim),
        ] {
            check_nonzero(op, what, v)?;
        }
        if s.heads % s.kv_heads != 0 {
            return Err(Error::invalid(format!(
                "{op}: heads={} is not a multiple of kv_heads={} (GQA needs kv_heads to divide heads)",
                s.heads, s.kv_heads
            )));
        }
        product(op, "q", &[s.batch, s.seq_q, s.heads, s.head_dim])?;
        product(op, "k", &[s.batch, s.seq_k, s.kv_heads, s.head_dim])?;
        product(op, "scores", &[s.batch, s.heads, s.seq_q, s.seq_k])?;
        Ok(())
    }

    /// Elements of q and out: `batch * seq_q * heads * head_dim`.
    pub fn q_len(&self) -> usize {
        self.batch * self.seq_q * self.heads * self.head_dim
    }

    /// Elements of k and v: `batch * seq_k * kv_heads * head_dim`.
    pub fn kv_len(&self) -> usize {
        self.batch * self.seq_k * self.kv_heads * self.head_dim
    }

    /// Elements of scores / weights: `batch * heads * seq_q * seq_k`.
    pub fn scores_len(&self) -> usize {
        self.batch * self.heads * self.seq_q * self.seq_k
    }
}

/// `scores[b, h, i, j] = (q[b, i, h, :] . k[b, j, h / (heads / kv_heads), :]) * scale`.
pub fn qkt_matmul(
    device: &Device,
    q: &[f32],
    k: &[f32],
    shape: &AttentionShape,
    scale: f32,
    scores: &mut [f32],
) -> Result<()> {
    let op = "qkt_matmul";
    shape.check(op)?;
    check_len(op, "q", q.len(), shape.q_len())?;
    check_len(op, "k", k.len(), shape.kv_len())?;
    check_len(op, "scores", scores.len(), shape.scores_len())?;
    match device {
        Device::Cpu => cpu::qkt_matmul(q, k, shape, scale, &mut scores[..shape.scores_len()]),
        Device::Gpu(dev) => gpu::qkt_matmul(dev, q, k, shape, scale, scores)?,
    }
    Ok(())
}

/// Set `scores[r, i, j] = -inf` where `j > i + seq_k - seq_q`, for `r < rows`;
/// scores `[rows, seq_q, seq_k]` (rows = batch * heads).
pub fn causal_mask(
    device: &Device,
    scores: &mut [f32],
    rows: usize,
    seq_q: usize,
    seq_k: usize,
) -> Result<()> {
    let op = "causal_mask";
    check_nonzero(op, "seq_q", seq_q)?;
    check_nonzero(op, "seq_k", seq_k)?;
    let n = product(op, "scores", &[rows, seq_q, seq_k])?;
    check_len(op, "scores", scores.len(), n)?;
    match device {
        Device::Cpu => cpu::causal_mask(&mut scores[..n], seq_q, seq_k),
        Device::Gpu(dev) => gpu::causal_mask(dev, scores, rows, seq_q, seq_k)?,
    }
    Ok(())
}

/// Softmax of each row of `x [rows, cols]` in place; a row of all -inf becomes zeros.
pub fn softmax(device: &Device, x: &mut [f32], rows: usize, cols: usize) -> Result<()> {
    check_nonzero("softmax", "cols", cols)?;
    let n = product("softmax", "x", &[rows, cols])?;
    check_len("softmax", "x", x.len(), n)?;
    match device {
        Device::Cpu => cpu::softmax(&mut x[..n], cols),
        Device::Gpu(dev) => gpu::softmax(dev, x, rows, cols)?,
    }
    Ok(())
}

/// `out[b, i, h, :] = sum_j weights[b, h, i, j] * v[b, j, h / (heads / kv_heads), :]`.
pub fn weighted_matmul(
    device: &Device,
    weights: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    out: &mut [f32],
) -> Result<()> {
    let op = "weighted_matmul";
    shape.check(op)?;
    check_len(op, "weights", weights.len(), shape.scores_len())?;
    check_len(op, "v", v.len(), shape.kv_len())?;
    check_len(op, "out", out.len(), shape.q_len())?;
    match device {
        Device::Cpu => cpu::weighted_matmul(weights, v, shape, &mut out[..shape.q_len()]),
        Device::Gpu(dev) => gpu::weighted_matmul(dev, weights, v, shape, out)?,
    }
    Ok(())
}

/// `out = softmax(qkt_matmul(q, k) * [causal mask]) @ v`, fused with an online softmax over
/// blocks of keys: any length, memory that does not grow with seq_q * seq_k. k and v are f32
/// or f16 (`Element`), e.g. the rows `[0, seq_k)` of a KV cache (batch 1). `window` (causal
/// only, at least 1): each query sees only the last `window` keys up to its own position (the
/// module doc); the keys before a query block's window are not read.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention<T: Element>(
    device: &Device,
    q: &[f32],
    k: &[T],
    v: &[T],
    shape: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) -> Result<()> {
    let op = "flash_attention";
    shape.check(op)?;
    check_window(op, causal, window)?;
    check_len(op, "q", q.len(), shape.q_len())?;
    check_len(op, "k", k.len(), shape.kv_len())?;
    check_len(op, "v", v.len(), shape.kv_len())?;
    check_len(op, "out", out.len(), shape.q_len())?;
    match device {
        Device::Cpu => {
            let out = &mut out[..shape.q_len()];
            cpu::flash_attention(q, k, v, shape, causal, scale, window, out)
        }
        Device::Gpu(dev) => gpu::flash_attention(dev, q, k, v, shape, causal, scale, window, out)?,
    }
    Ok(())
}

/// A sliding window needs the causal mask (it is counted back from each query's position) and
/// at least one key.
pub fn check_window(op: &str, causal: bool, window: Option<usize>) -> Result<()> {
    match window {
        Some(0) => Err(Error::invalid(format!(
            "{op}: window must be at least 1 (a query sees itself)"
        ))),
        Some(_) if !causal => Err(Error::invalid(format!(
            "{op}: a window needs the causal mask (causal=true)"
        ))),
        _ => Ok(()),
    }
}
