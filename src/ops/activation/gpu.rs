//! GPU launch of `kernels/activation.hip`.

use std::sync::Arc;

use crate::device::gpu::{flat_grid, need, Arg, DeviceBuffer, GpuDevice, FLAT_BLOCK};
use crate::device::kernels;
use crate::error::Result;

/// `out[i] = silu(gate[i]) * up[i]` for `i < n`.
pub fn launch_swiglu(
    dev: &GpuDevice,
    gate: &DeviceBuffer,
    up: &DeviceBuffer,
    n: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    need("swiglu", "gate", gate, n, 4)?;
    need("swiglu", "up", up, n, 4)?;
    need("swiglu", "out", out, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "swiglu",
        &kernels::swiglu(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[gate.arg(), up.arg(), out.arg(), Arg::I64(n as i64)],
    )
}

pub fn swiglu(
    dev: &Arc<GpuDevice>,
    gate: &[f32],
    up: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let g = DeviceBuffer::from_slice(dev, &gate[..n], "swiglu")?;
    let u = DeviceBuffer::from_slice(dev, &up[..n], "swiglu")?;
    let mut o = DeviceBuffer::alloc(dev, n * 4, "swiglu")?;
    launch_swiglu(dev, &g, &u, n, &mut o)?;
    o.read(&mut out[..n], "swiglu")
}
