//! GPU launch of `kernels/argmax.hip`.

use std::sync::Arc;

use crate::backend::gpu::device::need;
use crate::backend::gpu::{kernels, Arg, DeviceBuffer, GpuDevice};
use crate::error::Result;

/// `out[r] = argmax(x[r, :n])` for `r < rows` (int32 indices; lowest index on ties, NaN never
/// wins, an all-NaN row gives 0).
pub fn launch_argmax(dev: &GpuDevice, x: &DeviceBuffer, rows: usize, n: usize, out: &mut DeviceBuffer) -> Result<()> {
    need("argmax", "x", x, rows * n, 4)?;
    need("argmax", "out", out, rows, 4)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    dev.launch("argmax", &kernels::argmax(), [rows as u32, 1, 1], [1024, 1, 1], 0, &[x.arg(), Arg::I64(n as i64), out.arg()])
}

pub fn argmax(dev: &Arc<GpuDevice>, x: &[f32], n: usize) -> Result<usize> {
    let xd = DeviceBuffer::from_slice(dev, &x[..n], "argmax")?;
    let mut od = DeviceBuffer::alloc(dev, 4, "argmax")?;
    launch_argmax(dev, &xd, 1, n, &mut od)?;
    let mut idx = [0i32];
    od.read(&mut idx, "argmax")?;
    Ok(idx[0].max(0) as usize)
}
