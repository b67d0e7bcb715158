//! CPU dequantization and quantization of ggml blocks.
//!
//! - `dequantize(ty, bytes, out)`: `bytes` holds whole blocks of `ty`; `out` gets
//!   `bytes.len() / type_size * block_size` floats, bit-identical to the `gguf` PyPI package's
//!   `gguf.quants.dequantize` (Q8_K, which that package lacks, as ggml's `dequantize_row_q8_K`;
//!   IQ4_NL and IQ4_XS, which it decodes but cannot encode, checked on random blocks).
//!   Large inputs are split over threads.
//! - `quantize(ty, x)`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 byte-identical to
//!   `gguf.quants.quantize`; Q8_K as llama.cpp's reference `quantize_row_q8_K_ref`.
//! - `vec_dot(ty, row, x)`: the dot product of one quantized row with f32 `x`, decoding a few
//!   blocks at a time (the row is never materialized).
//!
//! Block layouts live in `blocks`, decoding in `dequant`, encoding in `quantize`.

pub mod blocks;
mod dequant;
mod quantize;

use half::f16;
use rayon::prelude::*;

use self::blocks::*;
pub use self::dequant::Dequantize;
pub use self::quantize::{f32_to_bf16_bits, Quantize};
use super::types::GgmlType;
use crate::error::{Error, Result};

/// Below this many output weights one thread does all the work.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;
/// Weights per parallel task.
const TASK_WEIGHTS: usize = 1 << 14;

/// Run `$body` with `$B` the block type of `$ty` (the `Dequantize` implementor), or `$other`.
macro_rules! with_dequantize_block {
    ($ty:expr, $B:ident => $body:expr, _ => $other:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $B = F32Le;
                $body
            }
            GgmlType::F16 => {
                type $B = F16Le;
                $body
            }
            GgmlType::BF16 => {
                type $B = Bf16Le;
                $body
            }
            GgmlType::Q4_0 => {
                type $B = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = BlockQ8_0;
                $body
            }
            GgmlType::Q2_K => {
                type $B = BlockQ2_K;
                $body
            }
            GgmlType::Q3_K => {
                type $B = BlockQ3_K;
                $body
            }
            GgmlType::Q4_K => {
                type $B = BlockQ4_K;
                $body
            }
            GgmlType::Q5_K => {
                type $B = BlockQ5_K;
                $body
            }
            GgmlType::Q6_K => {
                type $B = BlockQ6_K;
                $body
            }
            GgmlType::Q8_K => {
                type $B = BlockQ8_K;
                $body
            }
            GgmlType::IQ4_NL => {
                type $B = BlockIQ4_NL;
                $body
            }
            GgmlType::IQ4_XS => {
                type $B = BlockIQ4_XS;
                $body
            }
            _ => $other,
        }
    };
}

/// The types `dequantize` and `vec_dot` accept (the same set as `GgmlType::can_dequantize`).
pub const DEQUANTIZABLE: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// The types `quantize` produces.
pub const QUANTIZABLE: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_K,
];

fn type_list(types: &[GgmlType]) -> String {
    types
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn cannot_dequantize(ty: GgmlType) -> Error {
    Error::unsupported(format!(
        "rocmforge cannot dequantize {ty} tensors on the CPU (supported: {})",
        type_list(&DEQUANTIZABLE)
    ))
}

/// Number of elements `n_bytes` of `ty` hold; error if not whole blocks.
pub fn elements_in(ty: GgmlType, n_bytes: usize) -> Result<usize> {
    if !n_bytes.is_multiple_of(ty.type_size()) {
        return Err(Error::invalid(format!(
            "{} bytes are not a whole number of {ty} blocks ({} bytes each)",
            n_bytes,
            ty.type_size()
        )));
    }
    Ok(n_bytes / ty.type_size() * ty.block_size())
}

/// View whole blocks of `data` as `&[B]` (the block structs have alignment 1).
fn as_blocks<B: bytemuck::Pod>(data: &[u8]) -> &[B] {
    bytemuck::cast_slice(data)
}

/// Dequantize whole blocks of `ty` from `data` into `out`.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let n = elements_in(ty, data.len())?;
    if out.len() != n {
        return Err(Error::invalid(format!(
            "dequantize {ty}: output holds {} floats, the data holds {n}",
            out.len()
        )));
    }
    with_dequantize_block!(ty, B => dequantize_blocks::<B>(as_blocks(data), out),
        _ => return Err(cannot_dequantize(ty)));
    Ok(())
}

/// Dequantize one row (whole blocks); the same as `dequantize`, named for the model's CPU path.
pub fn dequantize_row(ty: GgmlType, row_bytes: &[u8], out: &mut [f32]) -> Result<()> {
    dequantize(ty, row_bytes, out)
}

/// out[i * WEIGHTS..][..WEIGHTS] = decode(blocks[i]), over threads when large.
fn dequantize_blocks<B: Dequantize + Sync>(blocks: &[B], out: &mut [f32]) {
    let decode = |blocks: &[B], out: &mut [f32]| {
        for (block, out) in blocks.iter().zip(out.chunks_exact_mut(B::WEIGHTS)) {
            block.dequantize(out);
        }
    };
    if out.len() < PARALLEL_MIN_WEIGHTS {
        decode(blocks, out);
    } else {
        let blocks_per_task = (TASK_WEIGHTS / B::WEIGHTS).max(1);
        blocks
            .par_chunks(blocks_per_task)
            .zip(out.par_chunks_mut(blocks_per_task * B::WEIGHTS))
            .for_each(|(blocks, out)| decode(blocks, out));
    }
}

/// Dot product of one row of `ty` blocks with `x` (`x.len()` = the row's element count),
/// without materializing the row: blocks are decoded 256 weights at a time.
pub fn vec_dot(ty: GgmlType, row_bytes: &[u8], x: &[f32]) -> Result<f32> {
    let n = elements_in(ty, row_bytes.len())?;
    if x.len() != n {
        return Err(Error::invalid(format!(
            "vec_dot {ty}: the row holds {n} elements but x has {}",
            x.len()
        )));
    }
    Ok(
        with_dequantize_block!(ty, B => vec_dot_blocks::<B>(as_blocks(row_bytes), x),
        _ => return Err(cannot_dequantize(ty))),
    )
}

fn vec_dot_blocks<B: Dequantize>(blocks: &[B], x: &[f32]) -> f32 {
    // Decode enough blocks to fill one 256-weight buffer, then dot it with x.
    let blocks_per_step = (QK_K / B::WEIGHTS).max(1);
    let mut buf = [0f32; QK_K];
    let mut sum = 0f32;
    for (blocks, x) in blocks
        .chunks(blocks_per_step)
        .zip(x.chunks(blocks_per_step * B::WEIGHTS))
    {
        let weights = &mut buf[..x.len()];
        for (block, out) in blocks.iter().zip(weights.chunks_exact_mut(B::WEIGHTS)) {
            block.dequantize(out);
        }
        sum += dot(weights, x);
    }
    sum
}

/// f32 dot product with eight independent accumulators (vectorizes).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Quantize `x` (a whole number of blocks) to `ty`.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    if !x.len().is_multiple_of(ty.block_size()) {
        return Err(Error::invalid(format!(
            "quantize {ty}: {} values are not a whole number of blocks of {}",
            x.len(),
            ty.block_size()
        )));
    }
    Ok(match ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => x
            .iter()
            .flat_map(|v| f32_to_bf16_bits(*v).to_le_bytes())
            .collect(),
        GgmlType::Q4_0 => quantize_blocks::<BlockQ4_0>(x),
        GgmlType::Q4_1 => quantize_blocks::<BlockQ4_1>(x),
        GgmlType::Q5_0 => quantize_blocks::<BlockQ5_0>(x),
        GgmlType::Q5_1 => quantize_blocks::<BlockQ5_1>(x),
        GgmlType::Q8_0 => quantize_blocks::<BlockQ8_0>(x),
        GgmlType::Q8_K => quantize_blocks::<BlockQ8_K>(x),
        other => {
            return Err(Error::unsupported(format!(
                "rocmforge cannot quantize to {other} (supported: {})",
                type_list(&QUANTIZABLE)
            )))
        }
    })
}

/// Encode `x` block by block, over threads when large.
fn quantize_blocks<B: Quantize + Send>(x: &[f32]) -> Vec<u8> {
    let n_blocks = x.len() / B::WEIGHTS;
    let mut out = vec![0u8; n_blocks * std::mem::size_of::<B>()];
    let blocks: &mut [B] = bytemuck::cast_slice_mut(&mut out);
    let encode = |blocks: &mut [B], x: &[f32]| {
        for (block, x) in blocks.iter_mut().zip(x.chunks_exact(B::WEIGHTS)) {
            *block = B::quantize(x);
        }
    };
    if x.len() < PARALLEL_MIN_WEIGHTS {
        encode(blocks, x);
    } else {
        let blocks_per_task = (TASK_WEIGHTS / B::WEIGHTS).max(1);
        blocks
            .par_chunks_mut(blocks_per_task)
            .zip(x.par_chunks(blocks_per_task * B::WEIGHTS))
            .for_each(|(blocks, x)| encode(blocks, x));
    }
    out
}

#[cfg(test)]
mod tests;
