//! GPU launch of `kernels/embedding.hip`.

use std::sync::Arc;

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels;
use crate::device::layout::{to_device_layout, DeviceWeight};
use crate::error::{Error, Result};
use crate::ops::WeightView;

/// `out[t, :] = dequant(table)[ids[t], :]`; ids int32 `[n_ids]` on the device (checked
/// against the vocabulary by the caller), out `[n_ids, cols]`.
pub fn launch_embedding(
    dev: &GpuDevice,
    table: &DeviceWeight,
    ids: &DeviceBuffer,
    n_ids: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let kernel = kernels::embedding(table.ty)?;
    need(
        "embedding",
        "table",
        table.bytes,
        table.rows * table.row_bytes(),
        1,
    )?;
    need("embedding", "ids", ids, n_ids, 4)?;
    need("embedding", "out", out, n_ids * table.cols, 4)?;
    if n_ids == 0 {
        return Ok(());
    }
    dev.launch(
        "embedding",
        &kernel,
        [to_i32(n_ids, "embedding ids")? as u32, 1, 1],
        [128, 1, 1],
        0,
        &[
            table.bytes.arg(),
            ids.arg(),
            out.arg(),
            Arg::I32(to_i32(table.cols, "embedding dim")?),
            Arg::I64(table.row_bytes() as i64),
        ],
    )
}

pub fn embedding(
    dev: &Arc<GpuDevice>,
    table: &WeightView,
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= table.rows) {
        return Err(Error::invalid(format!(
            "embedding: id {bad} is outside the table of {} rows",
            table.rows
        )));
    }
    let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    let tb = DeviceBuffer::from_slice(
        dev,
        &to_device_layout(table.ty, table.cols, table.bytes),
        "embedding",
    )?;
    let idb = DeviceBuffer::from_slice(dev, &ids32, "embedding")?;
    let n = ids.len() * table.cols;
    let mut od = DeviceBuffer::alloc(dev, n * 4, "embedding")?;
    let w = DeviceWeight {
        ty: table.ty,
        rows: table.rows,
        cols: table.cols,
        bytes: &tb,
    };
    launch_embedding(dev, &w, &idb, ids.len(), &mut od)?;
    od.read(&mut out[..n], "embedding")
}
