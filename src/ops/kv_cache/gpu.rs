//! GPU launch of `kernels/kv_cache.hip`.

use std::any::TypeId;
use std::sync::Arc;

use half::f16;

use crate::device::gpu::{flat_grid, need, to_i32, Arg, DeviceBuffer, GpuDevice, FLAT_BLOCK};
use crate::device::kernels;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::ops::Element;

/// The first cache row a `launch_kv_append` writes.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    At(usize),
    /// Read by the kernel from int32 `[1]` at this byte offset of the buffer (a decode step's
    /// position on the device); the caller checks that it fits.
    Device(&'a DeviceBuffer, usize),
}

/// `cache[pos0 + t, :] = src[t, :]` for `t < n` (rows of `row_len`; the caller checks that
/// they fit); the cache holds `dtype` elements.
pub fn launch_kv_append(
    dev: &GpuDevice,
    cache: &mut DeviceBuffer,
    dtype: KvDtype,
    src: &DeviceBuffer,
    pos0: usize,
    n: usize,
    row_len: usize,
) -> Result<()> {
    launch_kv_append_at(dev, cache, dtype, src, Row::At(pos0), n, row_len)
}

/// `launch_kv_append` with the first row given as a `Row`.
pub fn launch_kv_append_at(
    dev: &GpuDevice,
    cache: &mut DeviceBuffer,
    dtype: KvDtype,
    src: &DeviceBuffer,
    row: Row,
    n: usize,
    row_len: usize,
) -> Result<()> {
    let elem = dtype.bytes();
    let (pos0, pos_dev) = match row {
        Row::At(p) => (p, Arg::Ptr(0)),
        Row::Device(buf, offset) => {
            need("kv_append", "position", buf, offset / 4 + 1, 4)?;
            (0, Arg::Ptr(buf.ptr() + offset as u64))
        }
    };
    need("kv_append", "cache", cache, (pos0 + n) * row_len, elem)?;
    need("kv_append", "src", src, n * row_len, 4)?;
    if n == 0 || row_len == 0 {
        return Ok(());
    }
    dev.launch(
        "kv_append",
        &kernels::kv_append(dtype),
        flat_grid(n * row_len),
        [FLAT_BLOCK, 1, 1],
        0,
        &[
            cache.arg(),
            src.arg(),
            Arg::I64(pos0 as i64),
            pos_dev,
            Arg::I64(n as i64),
            Arg::I32(to_i32(row_len, "kv_append row_len")?),
        ],
    )
}

/// The op on host arrays: the new rows go through the kernel (converted to the cache's type
/// there) and land in `cache`.
pub fn kv_append<T: Element>(
    dev: &Arc<GpuDevice>,
    cache: &mut [T],
    src: &[f32],
    pos0: usize,
    n: usize,
    row_len: usize,
) -> Result<()> {
    let len = n * row_len;
    let dtype = if TypeId::of::<T>() == TypeId::of::<f32>() {
        KvDtype::F32
    } else if TypeId::of::<T>() == TypeId::of::<f16>() {
        KvDtype::F16
    } else {
        return Err(Error::invalid_type(
            "kv_append: the GPU cache holds f32 or f16",
        ));
    };
    let elem = std::mem::size_of::<T>();
    let sd = DeviceBuffer::from_slice(dev, &src[..len], "kv_append")?;
    // Only the rows being written travel: a device cache of n rows, appended at row 0.
    let mut cd = DeviceBuffer::alloc(dev, len * elem, "kv_append")?;
    launch_kv_append(dev, &mut cd, dtype, &sd, 0, n, row_len)?;
    let dst = &mut cache[pos0 * row_len..pos0 * row_len + len];
    // SAFETY: T is f32 or f16 (checked above), plain values of `elem` bytes.
    let dst_bytes =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, len * elem) };
    cd.read(dst_bytes, "kv_append")
}
