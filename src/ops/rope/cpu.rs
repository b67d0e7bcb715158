//! CPU reference of rotary position embedding.

use rayon::prelude::*;

use crate::ops::rope::RopeParams;

/// `cos`/`sin` of every (position, frequency) pair: `[positions.len(), n_rot / 2]` each.
///
/// angle(t, i) = positions[t] * theta^(-2i / n_rot) / freq_factors[i], computed in f64 so that
/// large positions keep full f32 accuracy.
pub fn rotation_table(
    positions: &[i64],
    params: &RopeParams,
    freq_factors: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let half = params.n_rot / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| {
            let f = (params.theta as f64).powf(-2.0 * i as f64 / params.n_rot as f64);
            match freq_factors {
                Some(ff) => f / ff[i] as f64,
                None => f,
            }
        })
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &pos in positions {
        for &f in &inv_freq {
            let angle = pos as f64 * f;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotate `x [batch, seq, heads, head_dim]` in place, token t at position `positions[t]`
/// (seq = positions.len()). Only the first `n_rot` dims of each head turn; the rest pass.
///
/// Each rotated pair `(a, b)` becomes `(a cos - b sin, a sin + b cos)`. Pairs are
/// `(2i, 2i + 1)` (GGUF llama, `neox = false`) or `(i, i + n_rot / 2)` (qwen2/NeoX, `neox = true`).
pub fn rope(
    x: &mut [f32],
    positions: &[i64],
    heads: usize,
    head_dim: usize,
    params: &RopeParams,
    freq_factors: Option<&[f32]>,
) {
    let seq = positions.len();
    let half = params.n_rot / 2;
    let (cos, sin) = rotation_table(positions, params, freq_factors);
    // One task per token: its `heads` rows of head_dim.
    x.par_chunks_mut(heads * head_dim)
        .enumerate()
        .for_each(|(row, token)| {
            let t = row % seq;
            let (cos, sin) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            for head in token.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let (ia, ib) = if params.neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (a, b) = (head[ia], head[ib]);
                    head[ia] = a * cos[i] - b * sin[i];
                    head[ib] = a * sin[i] + b * cos[i];
                }
            }
        });
}
