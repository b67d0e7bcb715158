//! KV cache: appending the new tokens' k or v rows to a layer's f32 or f16 cache.

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero, product, Element};
use crate::device::Device;
use crate::error::{Error, Result};

/// `cache[pos0 + t, :] = src[t, :]` for `t < n`; rows of `row_len` elements, cache
/// `[n_ctx, row_len]` of f32 or f16 (n_ctx = cache.len() / row_len). Rows past the cache's end
/// are `InvalidArgument`.
pub fn kv_append<T: Element>(
    device: &Device,
    cache: &mut [T],
    src: &[f32],
    pos0: usize,
    n: usize,
    row_len: usize,
) -> Result<()> {
    check_nonzero("kv_append", "row_len", row_len)?;
    let n_ctx = cache.len() / row_len;
    if pos0.checked_add(n).is_none_or(|end| end > n_ctx) {
        return Err(Error::invalid(format!(
            "kv_append: rows [{pos0}, {pos0} + {n}) do not fit a cache of {n_ctx} rows"
        )));
    }
    let len = product("kv_append", "src", &[n, row_len])?;
    check_len("kv_append", "src", src.len(), len)?;
    match device {
        Device::Cpu => cpu::kv_append(cache, &src[..len], pos0, row_len),
        Device::Gpu(dev) => gpu::kv_append(dev, cache, src, pos0, n, row_len)?,
    }
    Ok(())
}
