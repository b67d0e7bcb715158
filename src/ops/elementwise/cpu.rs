//! CPU reference of the element-wise ops.

use rayon::prelude::*;

/// Elements per rayon task: below this a thread hand-off costs more than the work.
const CHUNK: usize = 1 << 14;

/// `a[i] += b[i]`; a, b `[n]`.
pub fn add(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        });
}

/// `x[r, :] += bias` for every row; x `[rows, n]`, bias `[n]`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len()).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// `x[i] *= factor`; x `[n]`.
pub fn scale(x: &mut [f32], factor: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v *= factor;
        }
    });
}

/// `x[i] = cap * tanh(x[i] / cap)`; x `[n]`.
pub fn softcap(x: &mut [f32], cap: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v = cap * (*v / cap).tanh();
        }
    });
}
