//! GPU launch of `kernels/elementwise.hip`.

use std::sync::Arc;

use crate::device::gpu::{flat_grid, need, to_i32, Arg, DeviceBuffer, GpuDevice, FLAT_BLOCK};
use crate::device::kernels;
use crate::error::Result;

/// `a[i] += b[i]` for `i < n`.
pub fn launch_add(dev: &GpuDevice, a: &mut DeviceBuffer, b: &DeviceBuffer, n: usize) -> Result<()> {
    need("add", "a", a, n, 4)?;
    need("add", "b", b, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "add",
        &kernels::add(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[a.arg(), b.arg(), a.arg(), Arg::I64(n as i64)],
    )
}

/// `x[r, :] += bias` for `r < rows`; bias `[cols]`.
pub fn launch_add_bias(
    dev: &GpuDevice,
    x: &mut DeviceBuffer,
    bias: &DeviceBuffer,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let n = rows * cols;
    need("add_bias", "x", x, n, 4)?;
    need("add_bias", "bias", bias, cols, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "add_bias",
        &kernels::add_bias(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[
            x.arg(),
            bias.arg(),
            x.arg(),
            Arg::I64(rows as i64),
            Arg::I32(to_i32(cols, "add_bias cols")?),
        ],
    )
}

/// `x[i] *= factor` for `i < n`.
pub fn launch_scale(dev: &GpuDevice, x: &mut DeviceBuffer, factor: f32, n: usize) -> Result<()> {
    need("scale", "x", x, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "scale",
        &kernels::scale(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[x.arg(), x.arg(), Arg::F32(factor), Arg::I64(n as i64)],
    )
}

/// `x[i] = cap * tanh(x[i] / cap)` for `i < n`.
pub fn launch_softcap(dev: &GpuDevice, x: &mut DeviceBuffer, cap: f32, n: usize) -> Result<()> {
    need("softcap", "x", x, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "softcap",
        &kernels::softcap(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[x.arg(), x.arg(), Arg::F32(cap), Arg::I64(n as i64)],
    )
}

pub fn add(dev: &Arc<GpuDevice>, a: &mut [f32], b: &[f32], n: usize) -> Result<()> {
    let mut ad = DeviceBuffer::from_slice(dev, &a[..n], "add")?;
    let bd = DeviceBuffer::from_slice(dev, &b[..n], "add")?;
    launch_add(dev, &mut ad, &bd, n)?;
    ad.read(&mut a[..n], "add")
}

pub fn add_bias(dev: &Arc<GpuDevice>, x: &mut [f32], bias: &[f32], rows: usize) -> Result<()> {
    let n = rows * bias.len();
    let mut xd = DeviceBuffer::from_slice(dev, &x[..n], "add_bias")?;
    let bd = DeviceBuffer::from_slice(dev, bias, "add_bias")?;
    launch_add_bias(dev, &mut xd, &bd, rows, bias.len())?;
    xd.read(&mut x[..n], "add_bias")
}

pub fn scale(dev: &Arc<GpuDevice>, x: &mut [f32], factor: f32, n: usize) -> Result<()> {
    let mut xd = DeviceBuffer::from_slice(dev, &x[..n], "scale")?;
    launch_scale(dev, &mut xd, factor, n)?;
    xd.read(&mut x[..n], "scale")
}

pub fn softcap(dev: &Arc<GpuDevice>, x: &mut [f32], cap: f32, n: usize) -> Result<()> {
    let mut xd = DeviceBuffer::from_slice(dev, &x[..n], "softcap")?;
    launch_softcap(dev, &mut xd, cap, n)?;
    xd.read(&mut x[..n], "softcap")
}
