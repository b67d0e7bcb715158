//! The CPU backend: host buffers, weights kept in their GGUF type, and every method a call of
//! the CPU reference in `crate::ops` (multi-threaded with rayon).

use half::f16;

use super::graph::StepGraph;
use super::{Activation, Attention, Backend, Map, NoPlan, Pos, Rope, Tokens, Workload};
use crate::device::{Device, KvDtype};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::matmul::cpu_quant;
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

/// One layer's K or V cache on the host: `[rows, row_len]`.
#[derive(Clone, Debug)]
pub struct CpuKv {
    pub data: CpuKvData,
    pub row_len: usize,
}

/// The values of a `CpuKv`, in its dtype.
#[derive(Clone, Debug)]
pub enum CpuKvData {
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

/// The host position of a CPU call (the CPU has no decode plan: no device positions).
fn at(pos: Pos, op: &str) -> Result<usize> {
    match pos {
        Pos::At(p) => Ok(p),
        Pos::Step => Err(Error::invalid(format!(
            "{op}: the CPU takes positions from the host"
        ))),
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;
    type Kv = CpuKv;
    type Plan = NoPlan;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        zeroed(n, "a buffer")
    }

    fn download(&self, buf: &Vec<f32>, out: &mut [f32]) -> Result<()> {
        ops::check_len("download", "buffer", buf.len(), out.len())?;
        out.copy_from_slice(&buf[..out.len()]);
        Ok(())
    }

    fn weight(&self, w: WeightView) -> Result<CpuWeight> {
        let floats = if w.rows == 1 {
            let mut v = zeroed(w.cols, "a weight")?;
            w.dequantize_rows(0, &mut v)?;
            Some(v)
        } else {
            None
        };
        Ok(CpuWeight {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            bytes: w.bytes.to_vec(),
            floats,
        })
    }

    fn kv_cache(&self, rows: usize, row_len: usize, dtype: KvDtype) -> Result<CpuKv> {
        let n = rows.checked_mul(row_len).ok_or_else(|| {
            Error::invalid(format!("KV cache of {rows} x {row_len} elements overflows"))
        })?;
        let data = match dtype {
            KvDtype::F32 => CpuKvData::F32(zeroed(n, "the KV cache")?),
            KvDtype::F16 => CpuKvData::F16(zeroed(n, "the KV cache")?),
        };
        Ok(CpuKv { data, row_len })
    }

    fn workspace(&self, _: &Workload, _: bool) -> Result<u64> {
        Ok(0)
    }

    fn embedding(&self, table: &CpuWeight, ids: Tokens, out: &mut Vec<f32>) -> Result<()> {
        match ids {
            Tokens::Host(ids) => ops::embedding::embedding(&CPU, &table.view(), ids, out),
            Tokens::Step => Err(Error::invalid(
                "embedding: the CPU takes token ids from the host",
            )),
        }
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

    fn add(&self, a: &mut Vec<f32>, b: &Vec<f32>, n: usize) -> Result<()> {
        ops::elementwise::add(&CPU, a, b, n)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &CpuWeight, rows: usize) -> Result<()> {
        ops::elementwise::add_bias(&CPU, x, bias.vector("add_bias")?, rows)
    }

    fn glu(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        n: usize,
        act: Activation,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ops::activation::glu(&CPU, gate, up, n, act, out)
    }

    fn map(&self, x: &mut Vec<f32>, n: usize, f: Map) -> Result<()> {
        match f {
            Map::Scale(s) => ops::elementwise::scale(&CPU, x, s, n),
            Map::SoftCap(cap) => ops::elementwise::softcap(&CPU, x, cap, n),
        }
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        shape: [usize; 3],
        pos: Pos,
        rope: &Rope<CpuWeight>,
    ) -> Result<()> {
        let [seq, heads, head_dim] = shape;
        let pos0 = at(pos, "rope")?;
        let positions: Vec<i64> = (0..seq).map(|t| (pos0 + t) as i64).collect();
        let ff = rope
            .freq_factors
            .map(|w| w.vector("rope freq_factors"))
            .transpose()?;
        ops::rope::rope(&CPU, x, 1, &positions, heads, head_dim, &rope.params, ff)
    }

    fn kv_append(&self, cache: &mut CpuKv, src: &Vec<f32>, pos: Pos, n: usize) -> Result<()> {
        let (pos0, row_len) = (at(pos, "kv_append")?, cache.row_len);
        match &mut cache.data {
            CpuKvData::F32(c) => ops::kv_cache::kv_append(&CPU, c, src, pos0, n, row_len),
            CpuKvData::F16(c) => ops::kv_cache::kv_append(&CPU, c, src, pos0, n, row_len),
        }
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &CpuKv,
        v: &CpuKv,
        a: &Attention,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let shape = AttentionShape {
            batch: 1,
            seq_q: a.seq_q,
            seq_k: at(a.pos, "attention")? + a.seq_q,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
        };
        use ops::attention::flash_attention;
        let s = a.scale;
        match (&k.data, &v.data) {
            (CpuKvData::F32(k), CpuKvData::F32(v)) => {
                flash_attention(&CPU, q, k, v, &shape, true, s, a.window, out)
            }
            (CpuKvData::F16(k), CpuKvData::F16(v)) => {
                flash_attention(&CPU, q, k, v, &shape, true, s, a.window, out)
            }
            _ => Err(Error::invalid(
                "attention: the K and V caches have different dtypes",
            )),
        }
    }

    fn argmax(&self, x: &Vec<f32>, n: usize) -> Result<(u32, f32)> {
        ops::check_len("argmax", "x", x.len(), n)?;
        if let Some(first_nan) = x[..n].iter().position(|v| v.is_nan()) {
            return Ok((first_nan as u32, f32::NAN));
        }
        let id = ops::argmax::argmax(&CPU, x, n)?;
        Ok((id as u32, x[id]))
    }

    fn copy_rows(
        &self,
        src: &Vec<f32>,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut Vec<f32>,
        dst_row: usize,
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
        let at = dst_row.checked_mul(row_len).unwrap_or(usize::MAX);
        ops::check_len("copy_rows", "dst", dst.len().saturating_sub(at), len)?;
        dst[at..at + len].copy_from_slice(&src[start..start + len]);
        Ok(())
    }

    fn plan(&self, _: &StepGraph, _: &[&CpuWeight], _: &[&CpuKv]) -> Result<Option<NoPlan>> {
        Ok(None)
    }
}

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod tests;
