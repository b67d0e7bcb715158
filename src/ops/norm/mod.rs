//! Normalization: `rms_norm` (Llama, Qwen2).

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero, product};
use crate::device::Device;
use crate::error::{Error, Result};

/// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight` for `r < rows`;
/// x, out `[rows, dim]`, weight `[dim]` (dim = weight.len()).
pub fn rms_norm(
    device: &Device,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    check_nonzero("rms_norm", "weight length", weight.len())?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(format!(
            "rms_norm: eps must be finite and >= 0, got {eps}"
        )));
    }
    let n = product("rms_norm", "x", &[rows, weight.len()])?;
    check_len("rms_norm", "x", x.len(), n)?;
    check_len("rms_norm", "out", out.len(), n)?;
    match device {
        Device::Cpu => cpu::rms_norm(&x[..n], weight, eps, &mut out[..n]),
        Device::Gpu(dev) => gpu::rms_norm(dev, x, weight, eps, rows, out)?,
    }
    Ok(())
}
