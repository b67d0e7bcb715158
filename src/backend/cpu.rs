//! The CPU backend: host buffers, weights kept in their GGUF type, and every method a call of
//! the CPU reference in `crate::ops` (multi-threaded with rayon).

use half::f16;

use super::Backend;
use crate::device::{Device, KvDtype};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::matmul::cpu_quant;
use crate::ops::rope::RopeParams;
use crate::ops::{self, attention::AttentionShape, WeightView};

/// Runs the model on the CPU. Stateless: rayon's global pool does the threading.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// A weight as stored in a GGUF file: `[rows, cols]` of `ty`, rows contiguous.
#[derive(Clone, Debug)]
pub struct CpuWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
    /// The values as f32, kept for vectors (rows = 1: norms, biases, rope frequency factors),
    /// which are read whole on every call.
    floats: Option<Vec<f32>>,
}

impl CpuWeight {
    /// The weight as a borrowed GGUF matrix.
    pub fn view(&self) -> WeightView<'_> {
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            bytes: &self.bytes,
        }
    }

    /// The values of a vector weight (rows = 1) as f32.
    fn vector(&self, op: &str) -> Result<&[f32]> {
        match (&self.floats, self.rows) {
            (Some(v), 1) => Ok(v),
            _ => Err(Error::invalid(format!(
                "{op}: expected a vector weight (1 row), got a [{}, {}] matrix",
                self.rows, self.cols
            ))),
        }
    }
}

/// One layer's K or V cache on the host.
#[derive(Clone, Debug)]
pub enum CpuKv {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

const CPU: Device = Device::Cpu;

/// A zero-filled vector of `n` elements, or an error (instead of an abort) if the host cannot
/// hold it.
fn zeroed<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::runtime(format!(
            "cannot allocate {n} elements ({} bytes each) of host memory for {what}",
            std::mem::size_of::<T>()
        ))
    })?;
    v.resize(n, T::default());
    Ok(v)
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;
    type Kv = CpuKv;
    type Step = ();
    type Graph = ();

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        zeroed(n, "a buffer")
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn download(&self, buf: &Vec<f32>, out: &mut [f32]) -> Result<()> {
        ops::check_len("download", "buffer", buf.len(), out.len())?;
        out.copy_from_slice(&buf[..out.len()]);
        Ok(())
    }

    fn weight(&self, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<CpuWeight> {
        let view = WeightView::new(ty, rows, cols, bytes)?;
        let floats = if rows == 1 {
            let mut v = zeroed(cols, "a weight")?;
            view.dequantize_rows(0, &mut v)?;
            Some(v)
        } else {
            None
        };
        Ok(CpuWeight {
            ty,
            rows,
            cols,
            bytes: bytes.to_vec(),
            floats,
        })
    }

    fn kv_cache(&self, n: usize, dtype: KvDtype) -> Result<CpuKv> {
        Ok(match dtype {
            KvDtype::F32 => CpuKv::F32(zeroed(n, "the KV cache")?),
            KvDtype::F16 => CpuKv::F16(zeroed(n, "the KV cache")?),
        })
    }

    fn embedding(&self, table: &CpuWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        ops::embedding::embedding(&CPU, &table.view(), ids, out)
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &CpuWeight,
        eps: f32,
        rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::norm::rms_norm(&CPU, x, w.vector("rms_norm")?, eps, rows, out)
    }

    fn matmul(&self, x: &Vec<f32>, w: &CpuWeight, m: usize, out: &mut Vec<f32>) -> Result<()> {
        // Quantized weights take the fast path (8-bit activations, SIMD integer dots) for every
        // m, so a token's numbers do not depend on how many tokens share its batch.
        if cpu_quant::supports(w.ty) {
            return cpu_quant::matmul(w.ty, &w.bytes, w.rows, w.cols, x, m, out);
        }
        ops::matmul::matmul_gguf(&CPU, x, &w.view(), m, out)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &CpuWeight, rows: usize) -> Result<()> {
        ops::elementwise::add_bias(&CPU, x, bias.vector("add_bias")?, rows)
    }

    fn add(&self, a: &mut Vec<f32>, b: &Vec<f32>, n: usize) -> Result<()> {
        ops::elementwise::add(&CPU, a, b, n)
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        ops::activation::swiglu(&CPU, gate, up, n, out)
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        seq: usize,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: &RopeParams,
        freq_factors: Option<&CpuWeight>,
    ) -> Result<()> {
        let positions: Vec<i64> = (0..seq).map(|t| (pos0 + t) as i64).collect();
        let ff = freq_factors
            .map(|w| w.vector("rope freq_factors"))
            .transpose()?;
        ops::rope::rope(&CPU, x, 1, &positions, heads, head_dim, rope, ff)
    }

    fn kv_append(
        &self,
        cache: &mut CpuKv,
        src: &Vec<f32>,
        pos0: usize,
        n: usize,
        row_len: usize,
    ) -> Result<()> {
        match cache {
            CpuKv::F32(c) => ops::kv_cache::kv_append(&CPU, c, src, pos0, n, row_len),
            CpuKv::F16(c) => ops::kv_cache::kv_append(&CPU, c, src, pos0, n, row_len),
        }
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &CpuKv,
        v: &CpuKv,
        seq_q: usize,
        seq_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let shape = AttentionShape {
            batch: 1,
            seq_q,
            seq_k,
            heads,
            kv_heads,
            head_dim,
        };
        use ops::attention::flash_attention;
        match (k, v) {
            (CpuKv::F32(k), CpuKv::F32(v)) => {
                flash_attention(&CPU, q, k, v, &shape, true, scale, out)
            }
            (CpuKv::F16(k), CpuKv::F16(v)) => {
                flash_attention(&CPU, q, k, v, &shape, true, scale, out)
            }
            _ => Err(Error::invalid(
                "attention: the K and V caches have different dtypes",
            )),
        }
    }

    fn copy_rows(
        &self,
        src: &Vec<f32>,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        let start = src_row.checked_mul(row_len);
        let len = n_rows.checked_mul(row_len);
        let (start, len) = match (start, len) {
            (Some(s), Some(l)) if s.checked_add(l).is_some_and(|end| end <= src.len()) => (s, l),
            _ => {
                return Err(Error::invalid(format!(
                    "copy_rows: rows [{src_row}, {src_row} + {n_rows}) of {row_len} floats are outside a buffer of {} floats",
                    src.len()
                )))
            }
        };
        ops::check_len("copy_rows", "dst", dst.len(), len)?;
        dst[..len].copy_from_slice(&src[start..start + len]);
        Ok(())
    }

    fn argmax(&self, x: &Vec<f32>, n: usize) -> Result<u32> {
        if let Some(first_nan) = x[..n].iter().position(|v| v.is_nan()) {
            return Ok(first_nan as u32);
        }
        Ok(ops::argmax::argmax(&CPU, x, n)? as u32)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
