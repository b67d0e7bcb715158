//! How a GGUF tensor sits in device memory: the bytes the kernels read (`to_device_layout`)
//! and a weight matrix held in a device buffer (`DeviceWeight`).

use std::borrow::Cow;

use super::gpu::DeviceBuffer;
use crate::gguf::GgmlType;

/// A weight matrix `[rows, cols]` of a GGUF type in device memory (its bytes in the layout
/// `to_device_layout` gives).
#[derive(Clone, Copy)]
pub struct DeviceWeight<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a DeviceBuffer,
}

impl DeviceWeight<'_> {
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }
}

/// A GGUF weight's bytes as the kernels read them (kernels/quants.h): Q4_0 and Q8_0 rows have
/// their blocks split, the quants of every block first and then the fp16 scales (the same
/// bytes per row), so that the decode kernels read quants as aligned 4-byte words; other types
/// keep the file's layout. `cols`: elements per row; `bytes` whole rows.
pub fn to_device_layout(ty: GgmlType, cols: usize, bytes: &[u8]) -> Cow<'_, [u8]> {
    let (block_bytes, qs) = match ty {
        GgmlType::Q4_0 => (18, 16),
        GgmlType::Q8_0 => (34, 32),
        _ => return Cow::Borrowed(bytes),
    };
    let blocks = cols / 32;
    let row_bytes = blocks * block_bytes;
    if row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return Cow::Borrowed(bytes); // not whole rows: the launchers reject it
    }
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        let (quants, scales) = dst.split_at_mut(blocks * qs);
        for (b, block) in src.chunks_exact(block_bytes).enumerate() {
            scales[2 * b..2 * b + 2].copy_from_slice(&block[..2]);
            quants[b * qs..(b + 1) * qs].copy_from_slice(&block[2..]);
        }
    }
    Cow::Owned(out)
}
