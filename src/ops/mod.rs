//! Atomic transformer ops. One folder per op family; each holds `mod.rs` (the public entry
//! points: argument checks, then dispatch on `Device`) and `cpu.rs` (the plain, multi-threaded
//! CPU reference, with shape comments). GPU launchers sit beside them as `gpu.rs`. `bench`
//! times single GPU ops on device-resident buffers.
//!
//! Every op works on flat, row-major f32 slices whose shapes are passed as sizes (NumPy order,
//! last axis contiguous). A slice may be longer than the op needs; only the prefix the sizes
//! describe is read or written. Sizes that disagree with the slices are `Error::InvalidArgument`
//! naming the op and the argument.

pub mod activation;
pub mod argmax;
pub mod attention;
pub mod bench;
pub mod elementwise;
pub mod embedding;
pub mod kv_cache;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod sampling;

use half::f16;

use crate::error::{Error, Result};
use crate::gguf::{quants, GgmlType};

/// A matrix `[rows, cols]` stored in a GGUF type (quantized or not), rows contiguous: what a
/// GGUF file holds for a weight. `cols` is a whole number of the type's blocks.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

impl<'a> WeightView<'a> {
    /// Check that `bytes` holds exactly `rows` rows of `cols` elements of `ty`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: &'a [u8]) -> Result<Self> {
        if cols % ty.block_size() != 0 {
            return Err(Error::invalid(format!(
                "a {ty} row of {cols} elements is not a whole number of blocks of {}",
                ty.block_size()
            )));
        }
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let needed = rows.checked_mul(row_bytes);
        if needed != Some(bytes.len()) {
            return Err(Error::invalid(format!(
                "a {ty} matrix [{rows}, {cols}] takes {rows} x {row_bytes} bytes, got {} bytes",
                bytes.len()
            )));
        }
        Ok(WeightView {
            ty,
            rows,
            cols,
            bytes,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// Dequantize rows `[row0, row0 + out.len() / cols)` into `out` (`[n, cols]`).
    pub fn dequantize_rows(&self, row0: usize, out: &mut [f32]) -> Result<()> {
        let n = out.len() / self.cols;
        let rb = self.row_bytes();
        quants::dequantize(self.ty, &self.bytes[row0 * rb..(row0 + n) * rb], out)
    }
}

/// Element types the KV cache (and the attention that reads it) can hold.
pub trait Element: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// `sum(a[i] * b[i])` with eight independent accumulators (so the compiler vectorizes it and
/// the rounding error grows like sqrt(n / 8) instead of n).
#[inline]
pub(crate) fn dot<T: Element>(a: &[f32], b: &[T]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (ca, cb) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l].to_f32();
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_rest.iter().zip(b_rest) {
        tail += x * y.to_f32();
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// `a * b * ...`, or `InvalidArgument` naming `what` if the product overflows.
pub(crate) fn product(op: &str, what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{op}: {what} of shape {dims:?} has too many elements"
            ))
        })
}

/// `InvalidArgument` unless `len >= needed` (`what` holds fewer elements than its shape says).
pub fn check_len(op: &str, what: &str, len: usize, needed: usize) -> Result<()> {
    if len < needed {
        return Err(Error::invalid(format!(
            "{op}: {what} holds {len} elements, its shape needs {needed}"
        )));
    }
    Ok(())
}

/// `InvalidArgument` if `value` is zero.
pub(crate) fn check_nonzero(op: &str, what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(format!("{op}: {what} must be at least 1")));
    }
    Ok(())
}
