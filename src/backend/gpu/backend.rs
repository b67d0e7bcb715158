//! `GpuBackend`: the model's `Backend` on one GPU. Activations, weights (in their GGUF type)
//! and the KV cache live in device memory; every method is one or two kernel launches. The
//! `*_step` methods read a decode step's token id and position from device memory (`GpuStep`),
//! so that the whole step can be recorded once as a graph and replayed for every token.

use std::sync::{Arc, Mutex};

use crate::backend::{unfused, Backend};
use crate::device::gpu::{need, DeviceBuffer, GpuDevice, GpuGraph, ReadSlot, Temp, Workspace};
use crate::device::layout::DeviceWeight;
use crate::device::{kernels, KvDtype};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::attention::gpu::KeyCount;
use crate::ops::attention::{gpu as attention, AttentionShape};
use crate::ops::matmul::gpu::{NormIn, NormOut, Projection, QkvRope, RmsNorm};
use crate::ops::rope::RopeParams;
use crate::ops::{
    activation, argmax, elementwise, embedding, kv_cache, matmul, norm, rope, WeightView,
};

pub struct GpuBackend {
    dev: Arc<GpuDevice>,
    /// The longest row (k) of the matrix weights uploaded so far: the prefill matmul's
    /// scratch is reserved for it (`reserve_workspace`).
    max_weight_cols: std::sync::atomic::AtomicUsize,
    /// The per-block sums of squares `matmul_add_norm` hands to the next norm (reserved by
    /// `reserve_workspace`: one float per row of the longest weight row, more than any
    /// residual projection has blocks).
    norm_parts: Mutex<Option<DeviceBuffer>>,
    /// The norm input `matmul_add_norm` last prepared, until the `rms_norm_*` call it was for.
    pending_norm: Mutex<Option<PendingNorm>>,
}

/// Bytes of `GpuBackend::norm_parts` for weights of up to `max_weight_cols` columns.
fn norm_sums_bytes(max_weight_cols: usize) -> usize {
    max_weight_cols.max(1) * 4
}

/// A norm input prepared by `matmul_add_norm`: `xb = x * weight` and `parts` sums of squares,
/// for the `rms_norm_*` call with the same x, weight, eps and xb.
#[derive(Clone, Copy, PartialEq)]
struct PendingNorm {
    x: u64,
    weight: u64,
    xb: u64,
    eps_bits: u32,
    parts: usize,
}

impl GpuBackend {
    pub fn new(dev: Arc<GpuDevice>) -> GpuBackend {
        GpuBackend {
            dev,
            max_weight_cols: std::sync::atomic::AtomicUsize::new(0),
            norm_parts: Mutex::new(None),
            pending_norm: Mutex::new(None),
        }
    }

    /// The norm sums buffer (`norm_parts`), locked.
    fn norm_parts(&self) -> Result<std::sync::MutexGuard<'_, Option<DeviceBuffer>>> {
        self.norm_parts
            .lock()
            .map_err(|_| Error::runtime("norm sums poisoned"))
    }

    /// The prepared norm input for this `rms_norm_*` call, if `matmul_add_norm` left one for
    /// exactly it (taken either way: it is good for one call).
    fn take_pending_norm(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        xb: &DeviceBuffer,
    ) -> Option<usize> {
        let pending = self.pending_norm.lock().ok()?.take()?;
        let want = PendingNorm {
            x: x.ptr(),
            weight: norm.buf.ptr(),
            xb: xb.ptr(),
            eps_bits: eps.to_bits(),
            parts: pending.parts,
        };
        (pending == want).then_some(pending.parts)
    }

    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// The attention's three m = 1 projections in one launch, of x normalized by `norm` when
    /// given; with `rope`, also the rope of q and k and the append of k and v to the caches
    /// where that kernel applies (`launch_matvec_qkv_rope`: q gets the turned q, k and v are
    /// left as they were). Returns whether the rope was done, or None, launching nothing,
    /// where no fused kernel applies.
    #[allow(clippy::too_many_arguments)]
    fn fused_qkv(
        &self,
        x: &DeviceBuffer,
        norm: Option<&NormIn>,
        w: [&GpuWeight; 3],
        biases: Option<[&GpuWeight; 3]>,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &mut DeviceBuffer,
        rope: Option<&mut QkvRope>,
    ) -> Result<Option<bool>> {
        let bias = |i: usize| -> Result<Option<&DeviceBuffer>> {
            biases
                .map(|b| b[i].f32_vector("matmul_qkv bias"))
                .transpose()
        };
        if let Some(rope) = rope.filter(|_| self.dev.tuning().fuse_rope) {
            let (views, bs) = (w.map(|w| w.view()), [bias(0)?, bias(1)?, bias(2)?]);
            if matmul::gpu::launch_matvec_qkv_rope(
                &self.dev,
                self.dev.tuning(),
                x,
                norm,
                views,
                bs,
                q,
                rope,
            )? {
                return Ok(Some(true));
            }
        }
        let mut parts = [
            Projection {
                w: w[0].view(),
                bias: bias(0)?,
                out: q,
            },
            Projection {
                w: w[1].view(),
                bias: bias(1)?,
                out: k,
            },
            Projection {
                w: w[2].view(),
                bias: bias(2)?,
                out: v,
            },
        ];
        let t = self.dev.tuning();
        let fused = matmul::gpu::launch_matvec_multi(&self.dev, t, x, &mut parts, false, norm)?;
        Ok(fused.then_some(false))
    }

    /// `rms_norm_qkv`, fused where it can be: the norm handed over by `matmul_add_norm` or
    /// folded in by weight (m = 1). With `rope` (one token), the launch that makes q, k and v
    /// also turns q and k and appends k and v to the caches (where it cannot, the separate
    /// `rope_kv_append_step` follows); returns whether it did.
    #[allow(clippy::too_many_arguments)]
    fn norm_qkv(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        w: [&GpuWeight; 3],
        biases: Option<[&GpuWeight; 3]>,
        m: usize,
        xb: &mut DeviceBuffer,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &mut DeviceBuffer,
        mut rope: Option<&mut QkvRope>,
    ) -> Result<bool> {
        let rows = w.iter().map(|w| w.rows).sum();
        if let Some(n) = self.take_pending_norm(x, norm, eps, xb) {
            let guard = self.norm_parts()?;
            if let Some(parts) = guard.as_ref() {
                let norm_in = NormIn::Parts { parts, n, eps };
                if m == 1 {
                    #[rustfmt::skip]
                    let done = self.fused_qkv(xb, Some(&norm_in), w, biases, q, k, v, rope.as_deref_mut())?;
                    if let Some(roped) = done {
                        return Ok(roped);
                    }
                }
            }
        }
        if m == 1
            && self.dev.tuning().fuse_norm
            && matmul::gpu::fused_norm_pays(
                &self.dev,
                self.dev.tuning(),
                w[0].ty,
                rows,
                w[0].cols,
                false,
            )
        {
            let norm = NormIn::Weight(RmsNorm {
                weight: norm.f32_vector("rms_norm")?,
                eps,
            });
            #[rustfmt::skip]
            let done = self.fused_qkv(x, Some(&norm), w, biases, q, k, v, rope.as_deref_mut())?;
            if let Some(roped) = done {
                return Ok(roped);
            }
        }
        self.rms_norm(x, norm, eps, m, xb)?;
        if m == 1 && rope.is_some() {
            if let Some(roped) = self.fused_qkv(xb, None, w, biases, q, k, v, rope)? {
                return Ok(roped);
            }
        }
        self.matmul_qkv(xb, w, biases, m, q, k, v)?;
        Ok(false)
    }
}

/// A GGUF tensor `[rows, cols]` on the device, in its file layout.
pub struct GpuWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub buf: DeviceBuffer,
}

impl GpuWeight {
    fn view(&self) -> DeviceWeight<'_> {
        DeviceWeight {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            bytes: &self.buf,
        }
    }

    /// Vector weights (norms, biases, rope factors) must be F32 on the device.
    fn f32_vector(&self, op: &str) -> Result<&DeviceBuffer> {
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

/// `w`'s device view, for the kernel tests.
#[cfg(test)]
pub(super) fn tests_view(w: &GpuWeight) -> DeviceWeight<'_> {
    w.view()
}

/// A decode step's state on the device: int32 `[4]` = token id, position (written by
/// `set_step`, one copy), picked id, picked value (f32 bits; written by `argmax_step`), and
/// the step's own temporaries (so that a recorded graph refers to nothing that others move).
pub struct GpuStep {
    state: DeviceBuffer,
    work: Workspace,
    reads: Mutex<StepReads>,
}

/// Reads of a step's picks to the host (`queue_step_result` / `step_result`).
struct StepReads {
    /// Host copies of the whole state, each taken after one step.
    slots: Vec<ReadSlot>,
    /// Slots with a copy queued and not yet returned, oldest first.
    queued: std::collections::VecDeque<usize>,
    /// What `state` holds at [STEP_ID, STEP_POS] as far as the host knows (None while a step
    /// may be changing it). The step's argmax leaves [its pick, position + 1] there
    /// (`argmax_step`), so that going on with the pick needs no copy to the device.
    held: Option<[i32; 2]>,
}

/// Step results that may be queued and not yet read: the step being read and one queued
/// after it (`Transformer::decode_greedy` with `ahead`), with room to spare.
const STEP_READ_SLOTS: usize = 4;

/// Byte offsets in `GpuStep::state`.
const STEP_ID: usize = 0;
const STEP_POS: usize = 4;
const STEP_PICK: usize = 8;

/// A recorded decode step, and how often the step's workspace had moved when it was recorded.
pub struct GpuStepGraph {
    graph: GpuGraph,
    work_moves: u64,
}

/// One layer's K or V cache on the device.
pub struct GpuKv {
    pub dtype: KvDtype,
    pub buf: DeviceBuffer,
}

impl Backend for GpuBackend {
    type Buf = DeviceBuffer;
    type Weight = GpuWeight;
    type Kv = GpuKv;
    type Step = GpuStep;
    type Graph = GpuStepGraph;

    fn name(&self) -> String {
        self.dev.name().to_string()
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(Some(self.dev.runtime().mem_info()?.0))
    }

    fn workspace_bytes(
        &self,
        max_seq_q: usize,
        max_seq_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        vocab: usize,
        max_weight_cols: usize,
    ) -> Result<u64> {
        // The split-K partials depend on the query rows and the keys; every prefill chunk
        // length (1..=max_seq_q) against the longest cache bounds them (more keys never mean
        // fewer bytes).
        let mut bytes = argmax::gpu::partial_bytes(vocab); // argmax's first pass
        for seq_q in 1..=max_seq_q {
            let shape = AttentionShape {
                batch: 1,
                seq_q,
                seq_k: max_seq_k.max(seq_q),
                heads,
                kv_heads,
                head_dim,
            };
            shape.check("attention")?;
            bytes = bytes.max(attention::flash_scratch_bytes(&self.dev, &shape, false)?);
        }
        // The tensor-core prefill matmul's f16 copy of x (up to max_seq_q rows of the
        // longest weight row).
        if matmul::gpu::mma_available(&self.dev, self.dev.tuning()) {
            bytes = bytes.max(matmul::gpu::mma_scratch_bytes(max_seq_q, max_weight_cols));
        }
        // What the device scratch allocates for it (`GpuDevice::scratch` rounds up), and the
        // norm sums `matmul_add_norm` hands over (`norm_parts`).
        Ok((bytes.next_power_of_two().max(1 << 20) + norm_sums_bytes(max_weight_cols)) as u64)
    }

    fn reserve_workspace(
        &self,
        max_seq_q: usize,
        max_seq_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        vocab: usize,
    ) -> Result<()> {
        let cols = self
            .max_weight_cols
            .load(std::sync::atomic::Ordering::Relaxed);
        let bytes =
            self.workspace_bytes(max_seq_q, max_seq_k, heads, kv_heads, head_dim, vocab, cols)?;
        let sums_bytes = norm_sums_bytes(cols);
        self.dev.scratch(
            bytes as usize - sums_bytes,
            "reserving the attention workspace",
        )?;
        let mut sums = self.norm_parts()?;
        if sums.as_ref().is_none_or(|b| b.bytes() < sums_bytes) {
            *sums = Some(DeviceBuffer::zeros(&self.dev, sums_bytes, "norm sums")?);
        }
        Ok(())
    }

    fn zeros(&self, n: usize) -> Result<DeviceBuffer> {
        DeviceBuffer::zeros(&self.dev, n * 4, "zeros")
    }

    fn upload(&self, host: &[f32]) -> Result<DeviceBuffer> {
        DeviceBuffer::from_slice(&self.dev, host, "upload")
    }

    fn download(&self, buf: &DeviceBuffer, out: &mut [f32]) -> Result<()> {
        buf.read(out, "download")
    }

    fn weight(&self, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<GpuWeight> {
        let view = WeightView::new(ty, rows, cols, bytes)?;
        if rows == 1 && ty != GgmlType::F32 {
            // Vectors are read whole by small kernels: store them as F32.
            let mut v = vec![0f32; cols];
            view.dequantize_rows(0, &mut v)?;
            let buf = DeviceBuffer::from_slice(&self.dev, &v, "weight upload")?;
            return Ok(GpuWeight {
                ty: GgmlType::F32,
                rows,
                cols,
                buf,
            });
        }
        kernels::matvec(ty)?; // the GPU must be able to run this type
        self.max_weight_cols
            .fetch_max(cols, std::sync::atomic::Ordering::Relaxed);
        let buf = DeviceBuffer::from_slice(
            &self.dev,
            &crate::device::layout::to_device_layout(ty, cols, bytes),
            "weight upload",
        )?;
        Ok(GpuWeight {
            ty,
            rows,
            cols,
            buf,
        })
    }

    fn kv_cache(&self, n: usize, dtype: KvDtype) -> Result<GpuKv> {
        let elem = dtype.bytes();
        Ok(GpuKv {
            dtype,
            buf: DeviceBuffer::zeros(&self.dev, n * elem, "kv_cache")?,
        })
    }

    fn embedding(&self, table: &GpuWeight, ids: &[u32], out: &mut DeviceBuffer) -> Result<()> {
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
        norm::gpu::launch_rms_norm(
            &self.dev,
            x,
            w.f32_vector("rms_norm")?,
            eps,
            rows,
            w.cols,
            out,
        )
    }

    fn matmul(
        &self,
        x: &DeviceBuffer,
        w: &GpuWeight,
        m: usize,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        // Prefill on tensor cores where the GPU has them (f16 products: the model's matmul is
        // not held to the op's float32 accuracy); decode keeps the matvec.
        matmul::gpu::launch_matmul_model(&self.dev, self.dev.tuning(), x, &w.view(), m, out)
    }

    fn rms_norm_matmul(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        w: &GpuWeight,
        m: usize,
        xb: &mut DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        // The norm handed over by the last projection (`matmul_add_norm`): xb holds x * norm,
        // the sums of squares are that launch's per-block parts; one launch fewer.
        if m == 1 {
            if let Some(n) = self.take_pending_norm(x, norm, eps, xb) {
                let guard = self.norm_parts()?;
                if let Some(parts) = guard.as_ref() {
                    let norm_in = NormIn::Parts { parts, n, eps };
                    let mut proj = [Projection {
                        w: w.view(),
                        bias: None,
                        out: &mut *out,
                    }];
                    #[rustfmt::skip]
                    let done = matmul::gpu::launch_matvec_multi(
                        &self.dev, self.dev.tuning(), xb, &mut proj, false, Some(&norm_in),
                    )?;
                    if done {
                        return Ok(());
                    }
                }
            }
        }
        // (xb holds x * norm where the handed-over norm was not taken: normalized afresh)
        self.rms_norm(x, norm, eps, m, xb)?;
        self.matmul(xb, w, m, out)
    }

    fn matmul_qkv(
        &self,
        x: &DeviceBuffer,
        w: [&GpuWeight; 3],
        biases: Option<[&GpuWeight; 3]>,
        m: usize,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &mut DeviceBuffer,
    ) -> Result<()> {
        if m == 1 && self.fused_qkv(x, None, w, biases, q, k, v, None)?.is_some() {
            return Ok(());
        }
        unfused::matmul_qkv(self, x, w, biases, m, q, k, v)
    }

    fn rms_norm_qkv(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        w: [&GpuWeight; 3],
        biases: Option<[&GpuWeight; 3]>,
        m: usize,
        xb: &mut DeviceBuffer,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &mut DeviceBuffer,
    ) -> Result<()> {
        self.norm_qkv(x, norm, eps, w, biases, m, xb, q, k, v, None)
            .map(|_| ())
    }

    fn rms_norm_qkv_rope_kv_step(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        w: [&GpuWeight; 3],
        biases: Option<[&GpuWeight; 3]>,
        xb: &mut DeviceBuffer,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &mut DeviceBuffer,
        k_cache: &mut GpuKv,
        v_cache: &mut GpuKv,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        step: &GpuStep,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<()> {
        let ff = freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        // (the fused kernel writes both caches in one type)
        let mut rope = (k_cache.dtype == v_cache.dtype).then(|| QkvRope {
            heads,
            kv_heads,
            head_dim,
            params,
            freq_factors: ff,
            dtype: k_cache.dtype,
            k_cache: &mut k_cache.buf,
            v_cache: &mut v_cache.buf,
            pos: (&step.state, STEP_POS),
        });
        #[rustfmt::skip]
        let done = self.norm_qkv(x, norm, eps, w, biases, 1, xb, q, k, v, rope.as_mut())?;
        if done {
            return Ok(());
        }
        self.rope_kv_append_step(
            q,
            k,
            v,
            k_cache,
            v_cache,
            heads,
            kv_heads,
            head_dim,
            step,
            params,
            freq_factors,
        )
    }

    fn matmul_add(
        &self,
        x: &DeviceBuffer,
        w: &GpuWeight,
        m: usize,
        n: usize,
        tmp: &mut DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if m == 1 {
            let mut parts = [Projection {
                w: w.view(),
                bias: None,
                out,
            }];
            if matmul::gpu::launch_matvec_multi(
                &self.dev,
                self.dev.tuning(),
                x,
                &mut parts,
                true,
                None,
            )? {
                return Ok(());
            }
            let [Projection { out, .. }] = parts;
            return unfused::matmul_add(self, x, w, m, n, tmp, out);
        }
        unfused::matmul_add(self, x, w, m, n, tmp, out)
    }

    /// For m = 1, the projection's launch also writes the next norm's input (matmul.hip
    /// `norm_out`: `xb = out * norm` and per-block sums of `out^2`), which the next `rms_norm_*`
    /// call takes instead of launching a norm (`ROCMFORGE_FUSED_NORM=0` turns this off).
    fn matmul_add_norm(
        &self,
        x: &DeviceBuffer,
        w: &GpuWeight,
        m: usize,
        n: usize,
        norm: &GpuWeight,
        eps: f32,
        xb: &mut DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if let Ok(mut p) = self.pending_norm.lock() {
            *p = None;
        }
        if m == 1 && self.dev.tuning().fuse_norm && norm.rows == 1 && norm.cols == n {
            let guard = self.norm_parts()?;
            if let Some(sums) = guard.as_ref() {
                let (x_ptr, xb_ptr) = (out.ptr(), xb.ptr());
                let mut parts = [Projection {
                    w: w.view(),
                    bias: None,
                    out,
                }];
                let mut norm_out = NormOut {
                    weight: norm.f32_vector("rms_norm")?,
                    xw: xb,
                    parts: sums,
                };
                // The residual stream: written two or more launches back (the model's block
                // order), so loaded before the launch's wait.
                let blocks = matmul::gpu::launch_matvec_multi_blocks(
                    &self.dev,
                    self.dev.tuning(),
                    x,
                    &mut parts,
                    matmul::gpu::Residual::AddEarly,
                    None,
                    Some(&mut norm_out),
                )?;
                if let Some(blocks) = blocks {
                    if let Ok(mut p) = self.pending_norm.lock() {
                        *p = Some(PendingNorm {
                            x: x_ptr,
                            weight: norm.buf.ptr(),
                            xb: xb_ptr,
                            eps_bits: eps.to_bits(),
                            parts: blocks,
                        });
                    }
                    return Ok(());
                }
                let [Projection { out, .. }] = parts;
                return self.matmul_add(x, w, m, n, norm_out.xw, out);
            }
        }
        self.matmul_add(x, w, m, n, xb, out)
    }

    fn matmul_swiglu(
        &self,
        x: &DeviceBuffer,
        w_gate: &GpuWeight,
        w_up: &GpuWeight,
        m: usize,
        n: usize,
        gate: &mut DeviceBuffer,
        up: &mut DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if m == 1
            && matmul::gpu::launch_matvec_glu(
                &self.dev,
                self.dev.tuning(),
                x,
                &w_gate.view(),
                &w_up.view(),
                out,
                crate::ops::activation::Activation::Silu,
                None,
            )?
        {
            return Ok(());
        }
        unfused::matmul_swiglu(self, x, w_gate, w_up, m, n, gate, up, out)
    }

    fn rms_norm_swiglu(
        &self,
        x: &DeviceBuffer,
        norm: &GpuWeight,
        eps: f32,
        w_gate: &GpuWeight,
        w_up: &GpuWeight,
        m: usize,
        n: usize,
        xb: &mut DeviceBuffer,
        gate: &mut DeviceBuffer,
        up: &mut DeviceBuffer,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if let Some(parts_n) = self.take_pending_norm(x, norm, eps, xb) {
            let guard = self.norm_parts()?;
            if let Some(parts) = guard.as_ref() {
                let norm_in = NormIn::Parts {
                    parts,
                    n: parts_n,
                    eps,
                };
                if m == 1
                    && matmul::gpu::launch_matvec_glu(
                        &self.dev,
                        self.dev.tuning(),
                        xb,
                        &w_gate.view(),
                        &w_up.view(),
                        out,
                        crate::ops::activation::Activation::Silu,
                        Some(&norm_in),
                    )?
                {
                    return Ok(());
                }
            }
        }
        if m == 1
            && self.dev.tuning().fuse_norm
            && matmul::gpu::fused_norm_pays(
                &self.dev,
                self.dev.tuning(),
                w_gate.ty,
                n,
                w_gate.cols,
                true,
            )
        {
            let norm = NormIn::Weight(RmsNorm {
                weight: norm.f32_vector("rms_norm")?,
                eps,
            });
            if matmul::gpu::launch_matvec_glu(
                &self.dev,
                self.dev.tuning(),
                x,
                &w_gate.view(),
                &w_up.view(),
                out,
                crate::ops::activation::Activation::Silu,
                Some(&norm),
            )? {
                return Ok(());
            }
        }
        self.rms_norm(x, norm, eps, m, xb)?;
        self.matmul_swiglu(xb, w_gate, w_up, m, n, gate, up, out)
    }

    fn add_bias(&self, x: &mut DeviceBuffer, bias: &GpuWeight, rows: usize) -> Result<()> {
        elementwise::gpu::launch_add_bias(
            &self.dev,
            x,
            bias.f32_vector("add_bias")?,
            rows,
            bias.cols,
        )
    }

    fn add(&self, a: &mut DeviceBuffer, b: &DeviceBuffer, n: usize) -> Result<()> {
        elementwise::gpu::launch_add(&self.dev, a, b, n)
    }

    fn swiglu(
        &self,
        gate: &DeviceBuffer,
        up: &DeviceBuffer,
        n: usize,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        activation::gpu::launch_swiglu(&self.dev, gate, up, n, out)
    }

    fn rope(
        &self,
        x: &mut DeviceBuffer,
        seq: usize,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<()> {
        let ff = freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        rope::gpu::launch_rope(
            &self.dev,
            x,
            seq,
            seq,
            heads,
            head_dim,
            rope::gpu::Positions::From(pos0),
            params,
            ff,
        )
    }

    fn kv_append(
        &self,
        cache: &mut GpuKv,
        src: &DeviceBuffer,
        pos0: usize,
        n: usize,
        row_len: usize,
    ) -> Result<()> {
        let elem = if cache.dtype == KvDtype::F32 { 4 } else { 2 };
        let n_ctx = cache.buf.bytes() / elem / row_len.max(1);
        if pos0.checked_add(n).is_none_or(|end| end > n_ctx) {
            return Err(Error::invalid(format!(
                "kv_append: rows [{pos0}, {pos0} + {n}) do not fit a cache of {n_ctx} rows"
            )));
        }
        kv_cache::gpu::launch_kv_append(
            &self.dev,
            &mut cache.buf,
            cache.dtype,
            src,
            pos0,
            n,
            row_len,
        )
    }

    fn rope_kv_append(
        &self,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &DeviceBuffer,
        k_cache: &mut GpuKv,
        v_cache: &mut GpuKv,
        t: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        pos0: usize,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<()> {
        if k_cache.dtype != v_cache.dtype {
            #[rustfmt::skip]
            return unfused::rope_kv_append(
                self, q, k, v, k_cache, v_cache, t, heads, kv_heads, head_dim, pos0, params,
                freq_factors,
            );
        }
        let kv_row = kv_heads * head_dim;
        let elem = if k_cache.dtype == KvDtype::F32 { 4 } else { 2 };
        let n_ctx = (k_cache.buf.bytes().min(v_cache.buf.bytes()) / elem) / kv_row.max(1);
        if pos0.checked_add(t).is_none_or(|end| end > n_ctx) {
            return Err(Error::invalid(format!(
                "kv_append: rows [{pos0}, {pos0} + {t}) do not fit a cache of {n_ctx} rows"
            )));
        }
        let ff = freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        let tensors = rope::gpu::RopeKv {
            q,
            k,
            v,
            dtype: k_cache.dtype,
            k_cache: &mut k_cache.buf,
            v_cache: &mut v_cache.buf,
        };
        rope::gpu::launch_rope_kv(
            &self.dev,
            tensors,
            t,
            heads,
            kv_heads,
            head_dim,
            kv_cache::gpu::Row::At(pos0),
            params,
            ff,
        )
    }

    fn attention(
        &self,
        q: &DeviceBuffer,
        k: &GpuKv,
        v: &GpuKv,
        seq_q: usize,
        seq_k: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if k.dtype != v.dtype {
            return Err(Error::invalid(
                "attention: the K and V caches have different dtypes",
            ));
        }
        let shape = AttentionShape {
            batch: 1,
            seq_q,
            seq_k,
            heads,
            kv_heads,
            head_dim,
        };
        shape.check("attention")?;
        attention::launch_flash_attention(
            &self.dev, q, &k.buf, &v.buf, k.dtype, seq_k, &shape, true, scale, out,
        )
    }

    fn copy_rows(
        &self,
        src: &DeviceBuffer,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut DeviceBuffer,
    ) -> Result<()> {
        let bytes = n_rows * row_len * 4;
        need("copy_rows", "dst", dst, n_rows * row_len, 4)?;
        dst.copy_from(0, src, src_row * row_len * 4, bytes, "copy_rows")
    }

    fn argmax(&self, x: &DeviceBuffer, n: usize) -> Result<u32> {
        let mut out = DeviceBuffer::alloc(&self.dev, 4, "argmax")?;
        argmax::gpu::launch_argmax(&self.dev, x, 1, n, true, &mut out)?;
        let mut idx = [0i32];
        out.read(&mut idx, "argmax")?;
        Ok(idx[0].max(0) as u32)
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize("synchronize")
    }

    fn new_step(
        &self,
        max_keys: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        vocab: usize,
    ) -> Result<Option<GpuStep>> {
        let shape = AttentionShape {
            batch: 1,
            seq_q: 1,
            seq_k: max_keys,
            heads,
            kv_heads,
            head_dim,
        };
        shape.check("attention")?;
        let argmax_bytes = argmax::gpu::partial_bytes(vocab); // argmax's first pass
        let bytes = argmax_bytes.max(attention::flash_scratch_bytes(&self.dev, &shape, true)?);
        let slots = (0..STEP_READ_SLOTS)
            .map(|_| ReadSlot::new(&self.dev, 16, "decode step result"))
            .collect::<Result<Vec<_>>>()?;
        let step = GpuStep {
            state: DeviceBuffer::zeros(&self.dev, 16, "decode step")?,
            work: Workspace::new(&self.dev),
            reads: Mutex::new(StepReads {
                slots,
                queued: Default::default(),
                held: Some([0, 0]),
            }),
        };
        step.work.ptr(bytes, "decode step workspace")?;
        Ok(Some(step))
    }

    fn set_step(&self, step: &mut GpuStep, id: u32, pos: usize) -> Result<()> {
        let pos = crate::device::gpu::to_i32(pos, "decode step position")?;
        let want = [id as i32, pos];
        let reads = step
            .reads
            .get_mut()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        // (the step about to run changes the state: unknown until its result is read)
        if reads.held.take() != Some(want) {
            step.state.write(&want, "decode step")?;
        }
        Ok(())
    }

    fn queue_step_result(&self, step: &GpuStep) -> Result<()> {
        let mut guard = step
            .reads
            .lock()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        let reads = &mut *guard;
        if reads.queued.len() == reads.slots.len() {
            return Err(Error::runtime(format!(
                "decode step: more than {} results queued and not read",
                reads.slots.len()
            )));
        }
        let slot = match reads.queued.back() {
            Some(&last) => (last + 1) % reads.slots.len(),
            None => 0,
        };
        reads.slots[slot].queue(&step.state, 0, "decode step result")?;
        reads.queued.push_back(slot);
        reads.held = None;
        Ok(())
    }

    fn step_result(&self, step: &GpuStep) -> Result<(u32, f32)> {
        let mut guard = step
            .reads
            .lock()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        let reads = &mut *guard;
        let Some(&slot) = reads.queued.front() else {
            return Err(Error::runtime("decode step: no result queued"));
        };
        let mut state = [0i32; 4];
        let read = reads.slots[slot].finish(&mut state, "decode step result");
        reads.queued.pop_front(); // (a failed read is not read again)
        read?;
        debug_assert_eq!((STEP_ID, STEP_POS, STEP_PICK), (0, 4, 8));
        if reads.queued.is_empty() {
            // The last step queued left [pick, position + 1] as the state (`argmax_step`).
            reads.held = Some([state[0], state[1]]);
        }
        Ok((state[2] as u32, f32::from_bits(state[3] as u32)))
    }

    fn embedding_step(
        &self,
        table: &GpuWeight,
        step: &GpuStep,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        // The id sits first in the step state: the state is the kernel's id table.
        debug_assert_eq!(STEP_ID, 0);
        embedding::gpu::launch_embedding(&self.dev, &table.view(), &step.state, 1, out)
    }

    fn rope_step(
        &self,
        x: &mut DeviceBuffer,
        heads: usize,
        head_dim: usize,
        step: &GpuStep,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<()> {
        let ff = freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        rope::gpu::launch_rope(
            &self.dev,
            x,
            1,
            1,
            heads,
            head_dim,
            rope::gpu::Positions::TableAt(&step.state, STEP_POS),
            params,
            ff,
        )
    }

    fn kv_append_step(
        &self,
        cache: &mut GpuKv,
        src: &DeviceBuffer,
        step: &GpuStep,
        row_len: usize,
    ) -> Result<()> {
        kv_cache::gpu::launch_kv_append_at(
            &self.dev,
            &mut cache.buf,
            cache.dtype,
            src,
            kv_cache::gpu::Row::Device(&step.state, STEP_POS),
            1,
            row_len,
        )
    }

    fn rope_kv_append_step(
        &self,
        q: &mut DeviceBuffer,
        k: &mut DeviceBuffer,
        v: &DeviceBuffer,
        k_cache: &mut GpuKv,
        v_cache: &mut GpuKv,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        step: &GpuStep,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<()> {
        if k_cache.dtype != v_cache.dtype {
            #[rustfmt::skip]
            return unfused::rope_kv_append_step(
                self, q, k, v, k_cache, v_cache, heads, kv_heads, head_dim, step, params,
                freq_factors,
            );
        }
        let ff = freq_factors
            .map(|w| w.f32_vector("rope freq_factors"))
            .transpose()?;
        let tensors = rope::gpu::RopeKv {
            q,
            k,
            v,
            dtype: k_cache.dtype,
            k_cache: &mut k_cache.buf,
            v_cache: &mut v_cache.buf,
        };
        let first = kv_cache::gpu::Row::Device(&step.state, STEP_POS);
        rope::gpu::launch_rope_kv(
            &self.dev, tensors, 1, heads, kv_heads, head_dim, first, params, ff,
        )
    }

    fn attention_step(
        &self,
        q: &DeviceBuffer,
        k: &GpuKv,
        v: &GpuKv,
        step: &GpuStep,
        max_keys: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        out: &mut DeviceBuffer,
    ) -> Result<()> {
        if k.dtype != v.dtype {
            return Err(Error::invalid(
                "attention: the K and V caches have different dtypes",
            ));
        }
        let shape = AttentionShape {
            batch: 1,
            seq_q: 1,
            seq_k: max_keys,
            heads,
            kv_heads,
            head_dim,
        };
        shape.check("attention")?;
        attention::launch_flash_attention_with(
            &self.dev,
            q,
            &k.buf,
            &v.buf,
            k.dtype,
            max_keys,
            &shape,
            true,
            scale,
            out,
            KeyCount::Device(&step.state, STEP_POS),
            Temp::Own(&step.work),
            self.dev.tuning().decode_attention,
        )
    }

    fn argmax_step(&self, x: &DeviceBuffer, n: usize, step: &GpuStep) -> Result<()> {
        let pick = step.state.ptr() + STEP_PICK as u64;
        argmax::gpu::launch_argmax_to(
            &self.dev,
            x,
            1,
            n,
            true,
            pick,
            pick + 4,
            step.state.ptr() + STEP_ID as u64,
            Temp::Own(&step.work),
        )
    }

    fn capture(
        &self,
        step: &GpuStep,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<GpuStepGraph>> {
        let work_moves = step.work.moves();
        let graph = self.dev.capture("decode step graph", work)?;
        if step.work.moves() != work_moves {
            // Recorded while the workspace grew (the runtime should have refused): stale.
            return Err(Error::device(
                "decode step graph: the step's workspace moved while recording",
            ));
        }
        Ok(graph.map(|graph| GpuStepGraph { graph, work_moves }))
    }

    fn replay(&self, graph: &GpuStepGraph, step: &GpuStep) -> Result<bool> {
        if step.work.moves() != graph.work_moves {
            return Ok(false);
        }
        graph.graph.launch("decode step graph")?;
        Ok(true)
    }
}
