//! `GpuBackend`: the model's `Backend` on one GPU. Activations, weights (in their GGUF type)
//! and the KV cache live in device memory; every method is one or two kernel launches of the
//! ops' GPU launchers. A model's one-token decode step runs as a `GpuPlan` (plan.rs): its
//! fused kernels, recorded as a graph.

use std::sync::Arc;

use super::plan::GpuPlan;
use crate::backend::graph::StepGraph;
use crate::backend::{Activation, Attention, Backend, Map, Pos, Rope, Tokens, Workload};
use crate::device::gpu::{need, DeviceBuffer, GpuDevice};
use crate::device::layout::DeviceWeight;
use crate::device::tuning::Tuning;
use crate::device::{kernels, KvDtype};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::attention::{gpu as attention, AttentionShape};
use crate::ops::{
    activation, argmax, elementwise, embedding, kv_cache, matmul, norm, rope, WeightView,
};

/// See the module doc. Each backend has its own tuning record (the device's, or a model's
/// overrides of it).
pub struct GpuBackend {
    dev: Arc<GpuDevice>,
    tuning: Tuning,
}

impl GpuBackend {
    /// A backend on `dev` with the device's tuning record.
    pub fn new(dev: Arc<GpuDevice>) -> GpuBackend {
        let tuning = dev.tuning().clone();
        GpuBackend { dev, tuning }
    }

    /// A backend on `dev` with its own tuning record. The device-wide `overlap` field cannot
    /// differ from the device's (it is a launch attribute of the device).
    pub fn with_tuning(dev: Arc<GpuDevice>, tuning: Tuning) -> Result<GpuBackend> {
        if tuning.overlap != dev.tuning().overlap {
            return Err(Error::invalid(
                "tuning overlap is a setting of the device (ROCMFORGE_TUNING), not of a model",
            ));
        }
        Ok(GpuBackend { dev, tuning })
    }

    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }
}

/// A GGUF tensor `[rows, cols]` on the device, in its device layout (`device::layout`).
pub struct GpuWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub buf: DeviceBuffer,
}

impl GpuWeight {
    pub(super) fn view(&self) -> DeviceWeight<'_> {
        DeviceWeight {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            bytes: &self.buf,
        }
    }

    /// Vector weights (norms, biases, rope factors) must be F32 on the device.
    pub(super) fn f32_vector(&self, op: &str) -> Result<&DeviceBuffer> {
        if self.ty != GgmlType::F32 || self.rows != 1 {
            return Err(Error::invalid(format!(
                "{op}: expected an F32 vector weight, got a {} [{}, {}] tensor",
                self.ty.name(),
                self.rows,
                self.cols
            )));
        }
        Ok(&self.buf)
    }
}

/// One layer's K or V cache on the device: `[rows, row_len]` of `dtype`.
pub struct GpuKv {
    pub dtype: KvDtype,
    pub rows: usize,
    pub row_len: usize,
    pub buf: DeviceBuffer,
}

/// The host position of a call outside a decode plan (the plan's steps read theirs from the
/// device: plan.rs).
fn at(pos: Pos, op: &str) -> Result<usize> {
    match pos {
        Pos::At(p) => Ok(p),
        Pos::Step => Err(Error::invalid(format!(
            "{op}: a step's device position is read by its decode plan only"
        ))),
    }
}

impl Backend for GpuBackend {
    type Buf = DeviceBuffer;
    type Weight = GpuWeight;
    type Kv = GpuKv;
    type Plan = GpuPlan;

    fn name(&self) -> String {
        self.dev.name().to_string()
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(Some(self.dev.runtime().mem_info()?.0))
    }

    fn zeros(&self, n: usize) -> Result<DeviceBuffer> {
        DeviceBuffer::zeros(&self.dev, n.max(1) * 4, "zeros")
    }

    fn download(&self, buf: &DeviceBuffer, out: &mut [f32]) -> Result<()> {
        buf.read(out, "download")
    }

    fn weight(&self, w: WeightView) -> Result<GpuWeight> {
        if w.rows == 1 && w.ty != GgmlType::F32 {
            // Vectors are read whole by small kernels: store them as F32.
            let mut v = vec![0f32; w.cols];
            w.dequantize_rows(0, &mut v)?;
            let buf = DeviceBuffer::from_slice(&self.dev, &v, "weight upload")?;
            return Ok(GpuWeight {
                ty: GgmlType::F32,
                rows: 1,
                cols: w.cols,
                buf,
            });
        }
        kernels::matvec(w.ty)?; // the GPU must be able to run this type
        let bytes = crate::device::layout::to_device_layout(w.ty, w.cols, w.bytes);
        let buf = DeviceBuffer::from_slice(&self.dev, &bytes, "weight upload")?;
        Ok(GpuWeight {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            buf,
        })
    }

    fn kv_cache(&self, rows: usize, row_len: usize, dtype: KvDtype) -> Result<GpuKv> {
        let bytes = rows
            .checked_mul(row_len)
            .and_then(|n| n.checked_mul(dtype.bytes()))
            .ok_or_else(|| {
                Error::invalid(format!("KV cache of {rows} x {row_len} elements overflows"))
            })?;
        Ok(GpuKv {
            dtype,
            rows,
            row_len,
            buf: DeviceBuffer::zeros(&self.dev, bytes.max(1), "kv_cache")?,
        })
    }

    fn workspace(&self, w: &Workload, reserve: bool) -> Result<u64> {
        // The split-K partials depend on the query rows and the keys; every prefill chunk
        // length (1..=max_seq_q) against the longest cache bounds them (more keys never mean
        // fewer bytes).
        let mut bytes = argmax::gpu::partial_bytes(w.vocab); // argmax's first pass
        for seq_q in 1..=w.max_seq_q {
            let shape = AttentionShape {
                batch: 1,
                seq_q,
                seq_k: w.max_seq_k.max(seq_q),
                heads: w.heads,
                kv_heads: w.kv_heads,
                head_dim: w.head_dim,
            };
            shape.check("attention")?;
            bytes = bytes.max(attention::flash_scratch_bytes(
                &self.dev,
                &shape,
                false,
                None,
                self.tuning.mma,
            )?);
        }
        // The tensor-core prefill matmul's f16 copy of x (up to max_seq_q rows of the
        // longest weight row).
        if matmul::gpu::mma_available(&self.dev, &self.tuning) {
            bytes = bytes.max(matmul::gpu::mma_scratch_bytes(
                w.max_seq_q,
                w.max_weight_cols,
            ));
        }
        if reserve {
            self.dev.scratch(bytes, "reserving the working memory")?;
        }
        // What the device scratch allocates for it (`GpuDevice::scratch` rounds up).
        Ok(bytes.next_power_of_two().max(1 << 20) as u64)
    }

    fn embedding(&self, table: &GpuWeight, ids: Tokens, out: &mut DeviceBuffer) -> Result<()> {
        let Tokens::Host(ids) = ids else {
            return Err(Error::invalid(
                "embedding: a step's device token is read by its decode plan only",
            ));
        };
        let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let idb = DeviceBuffer::from_slice(&self.dev, &ids32, "embedding")?;
        embedding::gpu::launch_embedding(&self.dev, &table.view(), &idb, ids.len(), out)
    }

    fn rms_norm(
        &self,
        x: &DeviceBuffer,
        w: &GpuWeight,
        eps: f32,
        rows: usize,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        let weight = w.f32_vector("rms_norm")?;
        norm::gpu::launch_rms_norm(&self.dev, x, weight, eps, rows, w.cols, out)
    }

    fn matmul(
        &self,
        x: &DeviceBuffer,
        w: &GpuWeight,
        m: usize,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        // Prefill on tensor cores where the GPU has them (f16 products: the model's matmul is
        // not held to the op's float32 accuracy); one row on the decode matvec (8-bit x).
        matmul::gpu::launch_matmul_model(&self.dev, &self.tuning, x, &w.view(), m, out)
    }

    fn add(&self, a: &mut DeviceBuffer, b: &DeviceBuffer, n: usize) -> Result<()> {
        elementwise::gpu::launch_add(&self.dev, a, b, n)
    }

    fn add_bias(&self, x: &mut DeviceBuffer, bias: &GpuWeight, rows: usize) -> Result<()> {
        let b = bias.f32_vector("add_bias")?;
        elementwise::gpu::launch_add_bias(&self.dev, x, b, rows, bias.cols)
    }

    fn glu(
        &self,
        gate: &DeviceBuffer,
        up: &DeviceBuffer,
        n: usize,
        act: Activation,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        activation::gpu::launch_glu(&self.dev, gate, up, n, act, out)
    }

    fn map(&self, x: &mut DeviceBuffer, n: usize, f: Map) -> Result<()> {
        match f {
            Map::Scale(s) => elementwise::gpu::launch_scale(&self.dev, x, s, n),
            Map::SoftCap(cap) => elementwise::gpu::launch_softcap(&self.dev, x, cap, n),
        }
    }

    fn rope(
        &self,
        x: &mut DeviceBuffer,
        shape: [usize; 3],
        pos: Pos,
        r: &Rope<GpuWeight>,
    ) -> Result<()> {
        let [seq, heads, head_dim] = shape;
        let ff = r
            .freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        let positions = rope::gpu::Positions::From(at(pos, "rope")?);
        let dev = &self.dev;
        rope::gpu::launch_rope(dev, x, seq, seq, heads, head_dim, positions, &r.params, ff)
    }

    fn kv_append(&self, cache: &mut GpuKv, src: &DeviceBuffer, pos: Pos, n: usize) -> Result<()> {
        let pos0 = at(pos, "kv_append")?;
        if pos0.checked_add(n).is_none_or(|end| end > cache.rows) {
            return Err(Error::invalid(format!(
                "kv_append: rows [{pos0}, {pos0} + {n}) do not fit a cache of {} rows",
                cache.rows
            )));
        }
        kv_cache::gpu::launch_kv_append(
            &self.dev,
            &mut cache.buf,
            cache.dtype,
            src,
            pos0,
            n,
            cache.row_len,
        )
    }

    fn attention(
        &self,
        q: &DeviceBuffer,
        k: &GpuKv,
        v: &GpuKv,
        a: &Attention,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if k.dtype != v.dtype {
            return Err(Error::invalid(
                "attention: the K and V caches have different dtypes",
            ));
        }
        let seq_k = at(a.pos, "attention")? + a.seq_q;
        let shape = AttentionShape {
            batch: 1,
            seq_q: a.seq_q,
            seq_k,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
        };
        shape.check("attention")?;
        if seq_k > k.rows.min(v.rows) {
            return Err(Error::invalid(format!(
                "attention: {seq_k} keys do not fit a cache of {} rows",
                k.rows.min(v.rows)
            )));
        }
        attention::launch_flash_attention_with(
            &self.dev,
            q,
            &k.buf,
            &v.buf,
            k.dtype,
            seq_k,
            &shape,
            true,
            a.scale,
            a.window,
            out,
            attention::KeyCount::Host,
            crate::device::gpu::Temp::Shared,
            self.tuning.decode_attention,
            self.tuning.mma,
        )
    }

    fn argmax(&self, x: &DeviceBuffer, n: usize) -> Result<(u32, f32)> {
        let out = DeviceBuffer::alloc(&self.dev, 8, "argmax")?;
        let base = out.ptr();
        argmax::gpu::launch_argmax_to(
            &self.dev,
            x,
            1,
            n,
            true,
            base,
            base + 4,
            0,
            crate::device::gpu::Temp::Shared,
        )?;
        let mut picked = [0i32; 2];
        out.read(&mut picked, "argmax")?;
        Ok((picked[0].max(0) as u32, f32::from_bits(picked[1] as u32)))
    }

    fn copy_rows(
        &self,
        src: &DeviceBuffer,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut DeviceBuffer,
        dst_row: usize,
    ) -> Result<()> {
        let bytes = n_rows * row_len * 4;
        need("copy_rows", "dst", dst, (dst_row + n_rows) * row_len, 4)?;
        dst.copy_from(
            dst_row * row_len * 4,
            src,
            src_row * row_len * 4,
            bytes,
            "copy_rows",
        )
    }

    fn plan(
        &self,
        step: &StepGraph,
        weights: &[&GpuWeight],
        kv: &[&GpuKv],
    ) -> Result<Option<GpuPlan>> {
        GpuPlan::new(&self.dev, &self.tuning, step, weights, kv).map(Some)
    }
}
