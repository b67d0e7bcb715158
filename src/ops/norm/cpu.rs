//! CPU reference of RMS normalization.

use rayon::prelude::*;

/// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight` for every row;
/// x, out `[rows, dim]`, weight `[dim]`. The mean of squares is accumulated in f64.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(out, x)| {
            let sum_sq: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let inv_rms = (1.0 / (sum_sq / dim as f64 + eps as f64).sqrt()) as f32;
            for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
                *o = v * inv_rms * w;
            }
        });
}
