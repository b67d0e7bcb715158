//! CPU reference of the projection matmul `out[m, n] = x[m, k] @ W[n, k]^T`, with W in
//! float32 or in any GGUF type (rows dequantized on the fly).
//!
//! Parallel over blocks of W_ROWS_PER_TASK weight rows: each task dequantizes its rows once
//! (they then sit in L2) and dots them with every row of x, writing `out^T [n, m]`
//! contiguously; a final pass transposes to `out [m, n]` (nothing to do when m = 1).

use rayon::prelude::*;

use crate::error::Result;
use crate::ops::{dot, WeightView};

/// Weight rows per rayon task (16 rows of k = 4096 floats: 256 KiB, an L2's worth).
const W_ROWS_PER_TASK: usize = 16;

/// Where a task gets its float rows of W.
#[derive(Clone, Copy)]
enum Weights<'a> {
    /// `[n, k]` float32.
    F32(&'a [f32]),
    /// `[n, k]` in a GGUF type.
    Gguf(WeightView<'a>),
}

/// `out[m, n] = x[m, k] @ w[n, k]^T`, w float32.
pub fn matmul_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    matmul_impl(x, Weights::F32(w), m, n, k, out).expect("float32 weights cannot fail")
}

/// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`, w `[n, k]` in its GGUF type. Fails only if the
/// type cannot be dequantized.
pub fn matmul_gguf(x: &[f32], w: &WeightView, m: usize, out: &mut [f32]) -> Result<()> {
    matmul_impl(x, Weights::Gguf(*w), m, w.rows, w.cols, out)
}

fn matmul_impl(x: &[f32], w: Weights, m: usize, n: usize, k: usize, out: &mut [f32]) -> Result<()> {
    // out^T: [n, m]; when m == 1 it is already out.
    let mut out_t_owned = Vec::new();
    let out_t: &mut [f32] = if m == 1 {
        &mut out[..n]
    } else {
        out_t_owned.resize(n * m, 0f32);
        &mut out_t_owned
    };
    out_t
        .par_chunks_mut(W_ROWS_PER_TASK * m)
        .enumerate()
        .try_for_each_init(
            Vec::new,
            |dequantized: &mut Vec<f32>, (task, out_t)| -> Result<()> {
                let row0 = task * W_ROWS_PER_TASK;
                let n_rows = out_t.len() / m;
                // w_rows: [n_rows, k]
                let w_rows: &[f32] = match w {
                    Weights::F32(w) => &w[row0 * k..(row0 + n_rows) * k],
                    Weights::Gguf(view) => {
                        dequantized.resize(n_rows * k, 0.0);
                        view.dequantize_rows(row0, dequantized)?;
                        dequantized
                    }
                };
                for (i, x_row) in x.chunks_exact(k).take(m).enumerate() {
                    for (r, w_row) in w_rows.chunks_exact(k).enumerate() {
                        out_t[r * m + i] = dot(x_row, w_row);
                    }
                }
                Ok(())
            },
        )?;
    if m > 1 {
        out[..m * n]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, out_row)| {
                for (j, o) in out_row.iter_mut().enumerate() {
                    *o = out_t_owned[j * m + i];
                }
            });
    }
    Ok(())
}
