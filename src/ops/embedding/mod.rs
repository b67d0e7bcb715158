//! Token embedding lookup: rows of a float or quantized table.

pub mod cpu;
pub mod gpu;

use super::{check_len, product, WeightView};
use crate::device::Device;
use crate::error::{Error, Result};

/// `out[t, :] = dequant(table)[ids[t], :]`; table `[vocab, dim]`, out `[ids.len(), dim]`.
/// An id `>= vocab` is `InvalidArgument`.
pub fn embedding(device: &Device, table: &WeightView, ids: &[u32], out: &mut [f32]) -> Result<()> {
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
        return Err(Error::invalid(format!(
            "embedding: token id {bad} is outside the vocabulary of {} rows",
            table.rows
        )));
    }
    let n = product("embedding", "out", &[ids.len(), table.cols])?;
    check_len("embedding", "out", out.len(), n)?;
    match device {
        Device::Cpu => cpu::embedding(table, ids, &mut out[..n]),
        Device::Gpu(dev) => gpu::embedding(dev, table, ids, out),
    }
}
