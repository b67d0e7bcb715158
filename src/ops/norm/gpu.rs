//! GPU launch of `kernels/norm.hip`.

use std::sync::Arc;

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels;
use crate::error::Result;

/// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w` for `r < rows`; x, out `[rows, dim]`
/// (out may be x's buffer only through `launch_rms_norm_in_place`), w `[dim]`.
pub fn launch_rms_norm(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    w: &DeviceBuffer,
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    need("rms_norm", "x", x, rows * dim, 4)?;
    need("rms_norm", "weight", w, dim, 4)?;
    need("rms_norm", "out", out, rows * dim, 4)?;
    if rows == 0 {
        return Ok(());
    }
    // One thread per 4 values (norm.hip keeps them in registers), whole warps, 64 to 1024.
    let warp = dev.runtime().props().warp_size;
    let threads = (dim.div_ceil(4).clamp(64, 1024) as u32).div_ceil(warp) * warp;
    dev.launch(
        "rms_norm",
        &kernels::rms_norm(),
        [to_i32(rows, "rms_norm rows")? as u32, 1, 1],
        [threads.min(1024), 1, 1],
        0,
        &[
            x.arg(),
            w.arg(),
            out.arg(),
            Arg::I32(to_i32(dim, "rms_norm dim")?),
            Arg::F32(eps),
        ],
    )
}

/// Host arrays in and out (the op `rms_norm` with `device="gpu"`).
pub fn rms_norm(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let n = rows * weight.len();
    let xd = DeviceBuffer::from_slice(dev, &x[..n], "rms_norm")?;
    let wd = DeviceBuffer::from_slice(dev, weight, "rms_norm")?;
    let mut od = DeviceBuffer::alloc(dev, n * 4, "rms_norm")?;
    launch_rms_norm(dev, &xd, &wd, eps, rows, weight.len(), &mut od)?;
    od.read(&mut out[..n], "rms_norm")
}
