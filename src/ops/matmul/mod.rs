//! The projection matmul: `out[m, n] = x[m, k] @ W[n, k]^T`, W float32 or a GGUF-typed
//! matrix (any type `crate::gguf::quants::dequantize` knows; others are `Unsupported`).

pub mod cpu;
pub mod cpu_quant;
pub mod decode;
pub mod gpu;

use super::{check_len, check_nonzero, product, WeightView};
use crate::device::Device;
use crate::error::Result;

/// `out[m, n] = x[m, k] @ w[n, k]^T`, w float32.
pub fn matmul_f32(
    device: &Device,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) -> Result<()> {
    for (what, v) in [("m", m), ("n", n), ("k", k)] {
        check_nonzero("matmul", what, v)?;
    }
    check_len("matmul", "x", x.len(), product("matmul", "x", &[m, k])?)?;
    check_len("matmul", "w", w.len(), product("matmul", "w", &[n, k])?)?;
    check_len(
        "matmul",
        "out",
        out.len(),
        product("matmul", "out", &[m, n])?,
    )?;
    match device {
        Device::Cpu => cpu::matmul_f32(x, w, m, n, k, out),
        Device::Gpu(dev) => gpu::matmul_f32(dev, x, w, m, n, k, out)?,
    }
    Ok(())
}

/// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`; w `[n, k]` = `[w.rows, w.cols]` in its GGUF type.
pub fn matmul_gguf(
    device: &Device,
    x: &[f32],
    w: &WeightView,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    check_nonzero("matmul", "m", m)?;
    check_nonzero("matmul", "w rows", w.rows)?;
    check_nonzero("matmul", "w cols", w.cols)?;
    check_len(
        "matmul",
        "x",
        x.len(),
        product("matmul", "x", &[m, w.cols])?,
    )?;
    check_len(
        "matmul",
        "out",
        out.len(),
        product("matmul", "out", &[m, w.rows])?,
    )?;
    match device {
        Device::Cpu => cpu::matmul_gguf(x, w, m, out),
        Device::Gpu(dev) => gpu::matmul_gguf(dev, x, w, m, out),
    }
}
