//! CPU reference of the gated activation.

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `silu(g) = g * sigmoid(g) = g / (1 + exp(-g))`.
#[inline]
pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// `out[i] = silu(gate[i]) * up[i]`; gate, up, out `[n]`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(out, (gate, up))| {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = silu(g) * u;
            }
        });
}

/// `gelu(g) = 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3)))` (the tanh form).
#[inline]
pub fn gelu_tanh(g: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * g * (1.0 + (SQRT_2_OVER_PI * (g + 0.044715 * g * g * g)).tanh())
}

/// `out[i] = gelu(gate[i]) * up[i]`; gate, up, out `[n]`.
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(out, (gate, up))| {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = gelu_tanh(g) * u;
            }
        });
}

/// `out[i] = gelu(x[i])` (tanh form); x, out `[n]`.
pub fn gelu(x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = gelu_tanh(v);
            }
        });
}
