//! Element-wise ops: `add` (residuals), `add_bias` (biases of projections), `scale`,
//! `softcap` (logit soft-capping).

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero, product};
use crate::device::Device;
use crate::error::Result;

/// `a[i] += b[i]` for `i < n`.
pub fn add(device: &Device, a: &mut [f32], b: &[f32], n: usize) -> Result<()> {
    check_len("add", "a", a.len(), n)?;
    check_len("add", "b", b.len(), n)?;
    match device {
        Device::Cpu => cpu::add(&mut a[..n], &b[..n]),
        Device::Gpu(dev) => gpu::add(dev, a, b, n)?,
    }
    Ok(())
}

/// `x[r, :] += bias` for `r < rows`; x `[rows, n]`, bias `[n]` (n = bias.len()).
pub fn add_bias(device: &Device, x: &mut [f32], bias: &[f32], rows: usize) -> Result<()> {
    check_nonzero("add_bias", "bias length", bias.len())?;
    let n = product("add_bias", "x", &[rows, bias.len()])?;
    check_len("add_bias", "x", x.len(), n)?;
    match device {
        Device::Cpu => cpu::add_bias(&mut x[..n], bias),
        Device::Gpu(dev) => gpu::add_bias(dev, x, bias, rows)?,
    }
    Ok(())
}

/// `x[i] *= factor` for `i < n`.
pub fn scale(device: &Device, x: &mut [f32], factor: f32, n: usize) -> Result<()> {
    check_len("scale", "x", x.len(), n)?;
    match device {
        Device::Cpu => cpu::scale(&mut x[..n], factor),
        Device::Gpu(dev) => gpu::scale(dev, x, factor, n)?,
    }
    Ok(())
}

/// `x[i] = cap * tanh(x[i] / cap)` for `i < n` (cap > 0).
pub fn softcap(device: &Device, x: &mut [f32], cap: f32, n: usize) -> Result<()> {
    check_len("softcap", "x", x.len(), n)?;
    if !(cap.is_finite() && cap > 0.0) {
        return Err(crate::error::Error::invalid(format!(
            "softcap: cap must be a positive number, got {cap}"
        )));
    }
    match device {
        Device::Cpu => cpu::softcap(&mut x[..n], cap),
        Device::Gpu(dev) => gpu::softcap(dev, x, cap, n)?,
    }
    Ok(())
}
