//! GPU launch of `kernels/activation.hip`.

use std::sync::Arc;

use crate::device::gpu::{flat_grid, need, Arg, DeviceBuffer, GpuDevice, FLAT_BLOCK};
use crate::device::kernels;
use crate::error::Result;
use crate::ops::activation::Activation;

/// `out[i] = act(gate[i]) * up[i]` for `i < n`.
pub fn launch_glu(
    dev: &GpuDevice,
    gate: &DeviceBuffer,
    up: &DeviceBuffer,
    n: usize,
    act: Activation,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let op = act.glu_name();
    need(op, "gate", gate, n, 4)?;
    need(op, "up", up, n, 4)?;
    need(op, "out", out, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        op,
        &kernels::glu(act.glu_name()),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[gate.arg(), up.arg(), out.arg(), Arg::I64(n as i64)],
    )
}

pub fn glu(
    dev: &Arc<GpuDevice>,
    gate: &[f32],
    up: &[f32],
    n: usize,
    act: Activation,
    out: &mut [f32],
) -> Result<()> {
    let op = act.glu_name();
    let g = DeviceBuffer::from_slice(dev, &gate[..n], op)?;
    let u = DeviceBuffer::from_slice(dev, &up[..n], op)?;
    let mut o = DeviceBuffer::alloc(dev, n * 4, op)?;
    launch_glu(dev, &g, &u, n, act, &mut o)?;
    o.read(&mut out[..n], op)
}

/// `out[i] = gelu(x[i])` (tanh form) for `i < n`.
pub fn launch_gelu(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    n: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    need("gelu", "x", x, n, 4)?;
    need("gelu", "out", out, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "gelu",
        &kernels::gelu(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[x.arg(), out.arg(), Arg::I64(n as i64)],
    )
}

pub fn gelu(dev: &Arc<GpuDevice>, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    let xd = DeviceBuffer::from_slice(dev, &x[..n], "gelu")?;
    let mut o = DeviceBuffer::alloc(dev, n * 4, "gelu")?;
    launch_gelu(dev, &xd, n, &mut o)?;
    o.read(&mut out[..n], "gelu")
}
