//! Argmax of a vector (greedy sampling).

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero};
use crate::device::Device;
use crate::error::Result;

/// Index of the largest of the first `n` floats of `x` (lowest index on ties; NaN never wins
/// over a number).
pub fn argmax(device: &Device, x: &[f32], n: usize) -> Result<usize> {
    check_nonzero("argmax", "n", n)?;
    check_len("argmax", "x", x.len(), n)?;
    match device {
        Device::Cpu => Ok(cpu::argmax(&x[..n])),
        Device::Gpu(dev) => gpu::argmax(dev, x, n),
    }
}
