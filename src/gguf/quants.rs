//! CPU dequantization and quantization of ggml blocks.
//!
//! `dequantize(ty, bytes, out)`: `bytes` holds whole blocks of `ty`; `out` gets
//! `bytes.len() / type_size * block_size` floats. Results are bit-identical to the `gguf`
//! PyPI package's `gguf.quants.dequantize` (and `quantize` byte-identical to its `quantize`).

use half::{bf16, f16};

use super::types::GgmlType;
use crate::error::{Error, Result};

/// Number of elements `n_bytes` of `ty` hold; error if not whole blocks.
pub fn elements_in(ty: GgmlType, n_bytes: usize) -> Result<usize> {
    if n_bytes % ty.type_size() != 0 {
        return Err(Error::invalid(format!(
            "{} bytes are not a whole number of {ty} blocks ({} bytes each)",
            n_bytes,
            ty.type_size()
        )));
    }
    Ok(n_bytes / ty.type_size() * ty.block_size())
}

/// Dequantize whole blocks of `ty` from `data` into `out`.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let n = elements_in(ty, data.len())?;
    if out.len() != n {
        return Err(Error::invalid(format!(
            "dequantize {ty}: output holds {} floats, the data holds {n}",
            out.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes(b.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes(b.try_into().unwrap()).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes(b.try_into().unwrap()).to_f32();
            }
        }
        other => {
            return Err(Error::unsupported(format!(
                "dequantizing {other} is not supported"
            )))
        }
    }
    Ok(())
}

/// Quantize `x` (a whole number of blocks) to `ty`.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    if x.len() % ty.block_size() != 0 {
        return Err(Error::invalid(format!(
            "quantize {ty}: {} values are not a whole number of blocks of {}",
            x.len(),
            ty.block_size()
        )));
    }
    match ty {
        GgmlType::F32 => Ok(x.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlType::F16 => Ok(x.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()),
        other => Err(Error::unsupported(format!("quantizing to {other} is not supported"))),
    }
}
