//! GPU launch of `kernels/argmax.hip`.

use std::sync::Arc;

use crate::device::gpu::{need, Arg, DeviceBuffer, GpuDevice, Temp};
use crate::device::kernels;
use crate::device::runtime::DevicePtr;
use crate::error::{Error, Result};

/// Elements per block of the first pass (a long row is split over many blocks): one a thread
/// of its 1024, so that a vocabulary's logits are read in one round trip (126 blocks for
/// 128,256; with 8192, each thread walked 8 in turn: docs/perf/argmax-two-pass.md).
pub const ELEMENTS_PER_PART: usize = 1024;
/// Most blocks of the first pass.
pub const MAX_PARTS: usize = 1024;

/// Bytes of the first pass's partials for one row of `n` values.
pub fn partial_bytes(n: usize) -> usize {
    n.div_ceil(ELEMENTS_PER_PART).min(MAX_PARTS) * 8
}

/// `out[r] = argmax(x[r, :n])` for `r < rows` (int32 indices; lowest index on ties). NaN never
/// wins (an all-NaN row gives 0) unless `nan_wins`: then the first NaN of a row is its pick.
pub fn launch_argmax(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    rows: usize,
    n: usize,
    nan_wins: bool,
    out: &mut DeviceBuffer,
) -> Result<()> {
    need("argmax", "out", out, rows, 4)?;
    launch_argmax_to(dev, x, rows, n, nan_wins, out.ptr(), 0, 0, Temp::Shared)
}

/// `launch_argmax` writing the indices to device address `out_idx` (int32 `[rows]`) and, unless
/// `out_val` is 0, the picked values to `out_val` (float32 `[rows]`); the first pass's partials
/// go to `temp`. The caller checks that both outputs hold `rows` elements. Unless `next_step`
/// is 0 (then `rows` must be 1), the int32 pair there (a decode step's [token id, position])
/// becomes [the pick, position + 1] (argmax.hip).
#[allow(clippy::too_many_arguments)]
pub fn launch_argmax_to(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    rows: usize,
    n: usize,
    nan_wins: bool,
    out_idx: DevicePtr,
    out_val: DevicePtr,
    next_step: DevicePtr,
    temp: Temp,
) -> Result<()> {
    need("argmax", "x", x, rows * n, 4)?;
    if next_step != 0 && rows != 1 {
        return Err(Error::invalid(
            "argmax: a decode step's state takes one row",
        ));
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if rows > 65535 {
        return Err(Error::invalid(format!(
            "argmax: {rows} rows are over the GPU grid limit of 65535"
        )));
    }
    let kernel = kernels::argmax();
    let parts = n.div_ceil(ELEMENTS_PER_PART).min(MAX_PARTS);
    let (n_arg, nan_arg) = (Arg::I64(n as i64), Arg::I32(nan_wins as i32));
    let (out_idx, out_val) = (Arg::Ptr(out_idx), Arg::Ptr(out_val));
    if parts == 1 {
        return dev.launch(
            "argmax",
            &kernel,
            [1, rows as u32, 1],
            [1024, 1, 1],
            0,
            &[
                x.arg(),
                n_arg,
                out_idx,
                out_val,
                Arg::Ptr(0),
                Arg::Ptr(0),
                Arg::I32(0),
                nan_arg,
                Arg::Ptr(next_step),
            ],
        );
    }
    temp.with(dev, rows * parts * 8, "argmax", |partials| {
        let (vals, idxs) = (partials, partials + (rows * parts * 4) as u64);
        dev.launch(
            "argmax",
            &kernel,
            [parts as u32, rows as u32, 1],
            [1024, 1, 1],
            0,
            &[
                x.arg(),
                n_arg,
                out_idx,
                out_val,
                Arg::Ptr(vals),
                Arg::Ptr(idxs),
                Arg::I32(0),
                nan_arg,
                Arg::Ptr(next_step),
            ],
        )?;
        dev.launch(
            "argmax",
            &kernel,
            [1, rows as u32, 1],
            [1024, 1, 1],
            0,
            &[
                x.arg(),
                n_arg,
                out_idx,
                out_val,
                Arg::Ptr(vals),
                Arg::Ptr(idxs),
                Arg::I32(parts as i32),
                nan_arg,
                Arg::Ptr(next_step),
            ],
        )
    })
}

pub fn argmax(dev: &Arc<GpuDevice>, x: &[f32], n: usize) -> Result<usize> {
    let xd = DeviceBuffer::from_slice(dev, &x[..n], "argmax")?;
    let mut od = DeviceBuffer::alloc(dev, 4, "argmax")?;
    launch_argmax(dev, &xd, 1, n, false, &mut od)?;
    let mut idx = [0i32];
    od.read(&mut idx, "argmax")?;
    Ok(idx[0].max(0) as usize)
}
