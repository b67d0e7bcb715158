//! CPU reference of attention: the unfused steps (`qkt_matmul`, `causal_mask`, `softmax`,
//! `weighted_matmul`) and the fused `flash_attention` (online softmax over blocks of keys).
//!
//! Shapes (`s: &AttentionShape`): q `[batch, seq_q, heads, head_dim]`, k and v
//! `[batch, seq_k, kv_heads, head_dim]`, scores/weights `[batch, heads, seq_q, seq_k]`,
//! out `[batch, seq_q, heads, head_dim]`. Query head h reads kv head `h / (heads / kv_heads)`.
//!
//! Parallel over (batch, head, block of QUERY_BLOCK queries); inside a task, keys are walked in
//! blocks of KEY_BLOCK so a block of k/v rows stays in cache while every query of the task uses it.

use rayon::prelude::*;

use super::AttentionShape;
use crate::ops::{dot, Element};

/// Queries per rayon task.
const QUERY_BLOCK: usize = 32;
/// Keys per inner block (KEY_BLOCK rows of k and v stay in L1/L2 while all queries use them).
const KEY_BLOCK: usize = 64;

/// Number of keys query `i` may see under the causal mask, bottom-right aligned: key j is
/// allowed when `j <= i + (seq_k - seq_q)`. Zero for queries above the first key (seq_q > seq_k).
#[inline]
pub fn causal_end(i: usize, seq_q: usize, seq_k: usize) -> usize {
    (i + seq_k + 1).saturating_sub(seq_q).min(seq_k)
}

/// The keys query `i` sees, `[start, end)`: all of them, or with `causal` those up to its
/// position (`causal_end`), and with a `window` only the last `window` of these.
#[inline]
pub fn key_range(
    i: usize,
    seq_q: usize,
    seq_k: usize,
    causal: bool,
    window: Option<usize>,
) -> std::ops::Range<usize> {
    let end = if causal {
        causal_end(i, seq_q, seq_k)
    } else {
        seq_k
    };
    let start = window.map_or(0, |w| end.saturating_sub(w));
    start..end
}

/// Row `(b, t, h)` of a `[batch, seq, heads, head_dim]` tensor.
#[inline]
fn row<T>(
    x: &[T],
    b: usize,
    t: usize,
    h: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
) -> &[T] {
    let start = ((b * seq + t) * heads + h) * head_dim;
    &x[start..start + head_dim]
}

/// `[batch, heads, seq, head_dim]` (head-major, what the tasks write) to
/// `[batch, seq, heads, head_dim]` (token-major, the output layout).
fn heads_to_tokens(src: &[f32], heads: usize, seq: usize, head_dim: usize, out: &mut [f32]) {
    out.par_chunks_mut(heads * head_dim)
        .enumerate()
        .for_each(|(bt, token)| {
            let (b, t) = (bt / seq, bt % seq);
            for (h, dst) in token.chunks_exact_mut(head_dim).enumerate() {
                let start = ((b * heads + h) * seq + t) * head_dim;
                dst.copy_from_slice(&src[start..start + head_dim]);
            }
        });
}

/// `scores[b, h, i, j] = (q[b, i, h, :] . k[b, j, h / group, :]) * scale`.
pub fn qkt_matmul(q: &[f32], k: &[f32], s: &AttentionShape, scale: f32, scores: &mut [f32]) {
    let group = s.heads / s.kv_heads;
    scores
        .par_chunks_mut(s.seq_q * s.seq_k)
        .enumerate()
        .for_each(|(bh, scores)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let g = h / group;
            scores
                .par_chunks_mut(QUERY_BLOCK * s.seq_k)
                .enumerate()
                .for_each(|(qb, block)| {
                    let q0 = qb * QUERY_BLOCK;
                    let n_q = block.len() / s.seq_k;
                    for k0 in (0..s.seq_k).step_by(KEY_BLOCK) {
                        let k1 = (k0 + KEY_BLOCK).min(s.seq_k);
                        for qi in 0..n_q {
                            let q_row = row(q, b, q0 + qi, h, s.seq_q, s.heads, s.head_dim);
                            for j in k0..k1 {
                                let k_row = row(k, b, j, g, s.seq_k, s.kv_heads, s.head_dim);
                                block[qi * s.seq_k + j] = dot(q_row, k_row) * scale;
                            }
                        }
                    }
                });
        });
}

/// Set `scores[.., i, j] = -inf` where key j is after query i (bottom-right aligned:
/// `j > i + seq_k - seq_q`); scores `[rows, seq_q, seq_k]`.
pub fn causal_mask(scores: &mut [f32], seq_q: usize, seq_k: usize) {
    scores
        .par_chunks_mut(seq_k)
        .enumerate()
        .for_each(|(r, row)| {
            let end = causal_end(r % seq_q, seq_q, seq_k);
            row[end..].fill(f32::NEG_INFINITY);
        });
}

/// Softmax of every row of `x [rows, cols]` in place: `exp(x - max) / sum(exp(x - max))`.
/// A row whose entries are all -inf (a query with no allowed key) becomes zeros.
pub fn softmax(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols).for_each(softmax_row);
}

/// Softmax of one row in place (zeros if the row is all -inf).
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `out[b, i, h, :] = sum_j weights[b, h, i, j] * v[b, j, h / group, :]`.
pub fn weighted_matmul(weights: &[f32], v: &[f32], s: &AttentionShape, out: &mut [f32]) {
    let group = s.heads / s.kv_heads;
    // [batch, heads, seq_q, head_dim]
    let mut head_major = vec![0f32; s.batch * s.heads * s.seq_q * s.head_dim];
    head_major
        .par_chunks_mut(s.seq_q * s.head_dim)
        .enumerate()
        .for_each(|(bh, out_bh)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let g = h / group;
            let weights_bh = &weights[bh * s.seq_q * s.seq_k..(bh + 1) * s.seq_q * s.seq_k];
            out_bh
                .par_chunks_mut(QUERY_BLOCK * s.head_dim)
                .enumerate()
                .for_each(|(qb, block)| {
                    let q0 = qb * QUERY_BLOCK;
                    for k0 in (0..s.seq_k).step_by(KEY_BLOCK) {
                        let k1 = (k0 + KEY_BLOCK).min(s.seq_k);
                        for (qi, acc) in block.chunks_exact_mut(s.head_dim).enumerate() {
                            let w_row = &weights_bh[(q0 + qi) * s.seq_k..(q0 + qi + 1) * s.seq_k];
                            for (j, &w) in (k0..k1).zip(&w_row[k0..k1]) {
                                let v_row = row(v, b, j, g, s.seq_k, s.kv_heads, s.head_dim);
                                for (a, &x) in acc.iter_mut().zip(v_row) {
                                    *a += w * x;
                                }
                            }
                        }
                    }
                });
        });
    heads_to_tokens(&head_major, s.heads, s.seq_q, s.head_dim, out);
}

/// Fused attention, `qkt_matmul -> [causal_mask] -> softmax -> weighted_matmul` in one pass:
/// for each query, keys are visited block by block keeping a running max `m`, a running sum
/// `l` of `exp(score - m)` and the running weighted sum of v rows, rescaled whenever `m`
/// grows (online softmax). Memory is O(head_dim) per query: no length limit. A query with no
/// allowed key gets zeros. k and v may be f32 or f16 (a KV cache). With a `window` (causal),
/// a query sees only the last `window` keys up to its position (`key_range`): the key blocks
/// before the block's first query's window are skipped.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention<T: Element>(
    q: &[f32],
    k: &[T],
    v: &[T],
    s: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    let group = s.heads / s.kv_heads;
    // [batch, heads, seq_q, head_dim]
    let mut head_major = vec![0f32; s.batch * s.heads * s.seq_q * s.head_dim];
    head_major
        .par_chunks_mut(s.seq_q * s.head_dim)
        .enumerate()
        .for_each(|(bh, out_bh)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let g = h / group;
            out_bh
                .par_chunks_mut(QUERY_BLOCK * s.head_dim)
                .enumerate()
                .for_each(|(qb, block)| {
                    let q0 = qb * QUERY_BLOCK;
                    let n_q = block.len() / s.head_dim;
                    // Keys each query of the block may see.
                    let keys: Vec<_> = (0..n_q)
                        .map(|qi| key_range(q0 + qi, s.seq_q, s.seq_k, causal, window))
                        .collect();
                    let first_key = keys.iter().map(|r| r.start).min().unwrap_or(0);
                    let last_key = keys.iter().map(|r| r.end).max().unwrap_or(0);
                    let mut running_max = vec![f32::NEG_INFINITY; n_q];
                    let mut running_sum = vec![0f32; n_q];
                    let mut scores = [0f32; KEY_BLOCK];
                    for k0 in (first_key..last_key).step_by(KEY_BLOCK) {
                        for (qi, acc) in block.chunks_exact_mut(s.head_dim).enumerate() {
                            let j0 = k0.max(keys[qi].start);
                            let k1 = (k0 + KEY_BLOCK).min(keys[qi].end);
                            if k1 <= j0 {
                                continue;
                            }
                            let q_row = row(q, b, q0 + qi, h, s.seq_q, s.heads, s.head_dim);
                            let scores = &mut scores[..k1 - j0];
                            for (sc, j) in scores.iter_mut().zip(j0..k1) {
                                *sc = dot(q_row, row(k, b, j, g, s.seq_k, s.kv_heads, s.head_dim))
                                    * scale;
                            }
                            let block_max =
                                scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                            let new_max = running_max[qi].max(block_max);
                            if new_max == f32::NEG_INFINITY {
                                continue; // every score so far is -inf: nothing to add yet
                            }
                            // Rescale what was accumulated under the old max (exp(-inf) = 0 at the start).
                            let correction = (running_max[qi] - new_max).exp();
                            running_sum[qi] *= correction;
                            for a in acc.iter_mut() {
                                *a *= correction;
                            }
                            for (&sc, j) in scores.iter().zip(j0..k1) {
                                let p = (sc - new_max).exp();
                                running_sum[qi] += p;
                                let v_row = row(v, b, j, g, s.seq_k, s.kv_heads, s.head_dim);
                                for (a, &x) in acc.iter_mut().zip(v_row) {
                                    *a += p * x.to_f32();
                                }
                            }
                            running_max[qi] = new_max;
                        }
                    }
                    for (qi, acc) in block.chunks_exact_mut(s.head_dim).enumerate() {
                        let l = running_sum[qi];
                        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                        for a in acc.iter_mut() {
                            *a *= inv;
                        }
                    }
                });
        });
    heads_to_tokens(&head_major, s.heads, s.seq_q, s.head_dim, out);
}
