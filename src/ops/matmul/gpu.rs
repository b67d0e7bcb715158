//! GPU launch of `kernels/matmul.hip`: `out[m, n] = x[m, k] @ dequant(W)[n, k]^T`, W kept in
//! its GGUF type in device memory.

use std::sync::Arc;

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels;
use crate::device::layout::{to_device_layout, DeviceWeight};
use crate::device::tuning::Tuning;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::activation::Activation;
use crate::ops::rope::RopeParams;
use crate::ops::WeightView;

/// Rows of x up to which the matrix-vector kernel is used (matmul.hip, MATVEC_MAX_M).
pub const MATVEC_MAX_M: usize = 8;
/// Weight rows per matrix-vector block (256 threads, one 32-lane group per row).
const MATVEC_ROWS_PER_BLOCK: usize = 8;
/// Output tile of the tiled kernel.
const TILE: usize = 64;

/// Values of x one 16-byte quant piece of the wide and streaming m = 1 kernels covers
/// (matmul.hip, WideQ4_0 / WideQ8_0), or None for types without those kernels.
fn wide_piece_values(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(32),
        GgmlType::Q8_0 => Some(16),
        _ => None,
    }
}

/// Rows per block of the wide kernels for `n` rows (in all, for a fused launch) of k values:
/// `tuning.matvec_rows`, else Q8_0 4; Q4_0 16 where rows are long (k >= 2048) and there are
/// still at least a block per multiprocessor, else 8 (docs/perf). Every block reads all of x,
/// so more rows per block move fewer bytes, until too few blocks remain.
fn wide_matvec_rows(dev: &GpuDevice, tuning: &Tuning, ty: GgmlType, n: usize, k: usize) -> usize {
    if let Some(r) = tuning.matvec_rows {
        return r;
    }
    if ty != GgmlType::Q4_0 {
        return 4;
    }
    let sms = dev.runtime().props().multiprocessors.max(1) as usize;
    if k >= 2048 && n / 16 >= sms {
        16
    } else {
        8
    }
}

/// Rows of each matrix per block of the wide gate/up kernels: `tuning.glu_rows`, else 8 for
/// Q4_0 and 4 for Q8_0 (twice the rows in flight of the unfused default).
fn wide_swiglu_rows(tuning: &Tuning, ty: GgmlType) -> usize {
    tuning
        .glu_rows
        .unwrap_or(if ty == GgmlType::Q4_0 { 8 } else { 4 })
}

/// Whether an RMS norm fused into the m = 1 projections of `ty` with `rows` rows in all
/// (`glu`: of each of gate and up) of `k` values saves time: every block then also reads the
/// norm's weight (k floats, like x), which costs about as much as the norm's own launch at
/// ~8 MiB of extra reads in all (docs/perf).
pub fn fused_norm_pays(
    dev: &GpuDevice,
    tuning: &Tuning,
    ty: GgmlType,
    rows: usize,
    k: usize,
    glu: bool,
) -> bool {
    const MAX_EXTRA_BYTES: usize = 8 << 20;
    let per_block = if glu {
        wide_swiglu_rows(tuning, ty)
    } else {
        wide_matvec_rows(dev, tuning, ty, rows, k)
    };
    rows.div_ceil(per_block) * k * 4 <= MAX_EXTRA_BYTES
}

/// Threads per block of the wide kernels for rows of k elements: one 32-lane group per 1,024
/// elements (a lane holds 32 x values per chunk), at most 4 groups (matmul.hip MV_GROUPS), at
/// rounded up to a whole number of warps (an even number of groups on wave-64 devices).
fn wide_matvec_threads(dev: &GpuDevice, k: usize) -> u32 {
    let warp = dev.runtime().props().warp_size;
    (32 * k.div_ceil(1024).clamp(1, 4) as u32).div_ceil(warp) * warp
}

/// Whether an m = 1 launch of 16 rows per block with 8-bit x over rows of `k` values of `ty`
/// takes the register-capped `*_r16_o3` kernels (3 blocks per multiprocessor instead of 2 on
/// NVIDIA): where the block reads a row in one pass (pieces <= threads), unless
/// `tuning.matvec_capped` is off; rows read in several passes were slower capped (docs/perf).
fn occupancy_capped(dev: &GpuDevice, tuning: &Tuning, ty: GgmlType, k: usize) -> bool {
    let Some(piece_values) = wide_piece_values(ty) else {
        return false;
    };
    tuning.matvec_capped && k.div_ceil(piece_values) <= wide_matvec_threads(dev, k) as usize
}

/// Weight rows per group of the streaming kernels (matmul.hip, matvec_stream): 4 of gate and
/// 4 of up (docs/perf).
const STREAM_ROWS: usize = 8;

/// Launch shape of a streaming m = 1 kernel (matmul.hip, matvec_stream).
struct StreamPlan {
    grid: u32,
    block: u32,
    shared: usize,
    /// Groups whose loads are in flight (the kernel's form).
    stages: usize,
}

/// Groups of weight rows in flight in the streaming kernels for rows of `k` values:
/// `tuning.stream_stages`, else 3 (384 threads' registers a multiprocessor) from 4096 values
/// and 2 (512 threads') below (docs/perf).
pub fn stream_stages(tuning: &Tuning, k: usize) -> usize {
    tuning
        .stream_stages
        .unwrap_or(if k >= STREAM_3_STAGES_FROM { 3 } else { 2 })
}

/// Row length (values) from which the streaming kernels keep 3 groups in flight.
pub const STREAM_3_STAGES_FROM: usize = 4096;

/// The streaming kernel's launch for `rows` weight rows (in all) of `k` values of `ty`, taken
/// in groups of `group`, or None where the wide kernels stay: rows shorter than 2048 values,
/// more than 512 pieces (16 quant bytes) a row (the kernel's block limit), shared memory
/// short, or `tuning.matvec_stream` off. The grid is a few blocks per multiprocessor (512
/// threads' worth: ~120 registers a thread), each block taking every grid-th group.
fn stream_plan(
    dev: &GpuDevice,
    tuning: &Tuning,
    ty: GgmlType,
    rows: usize,
    k: usize,
    group: usize,
) -> Option<StreamPlan> {
    let piece_values = wide_piece_values(ty)?;
    let pieces = k / piece_values;
    if !tuning.matvec_stream || k < 2048 || k % 32 != 0 || pieces > 512 || rows == 0 {
        return None;
    }
    let props = dev.runtime().props();
    let block = pieces.div_ceil(64) * 64;
    let stages = stream_stages(tuning, k);
    let per_sm = ((if stages == 3 { 384 } else { 512 }) / block).max(1);
    let groups = rows.div_ceil(group);
    let grid = groups.min(props.multiprocessors.max(1) as usize * per_sm);
    let shared = groups.div_ceil(grid) * group * (block / 32) * 4;
    (shared <= props.max_shared_per_block).then_some(StreamPlan {
        grid: grid as u32,
        block: block as u32,
        shared,
        stages,
    })
}

/// `out = x @ w^T` for m = 1 by the dedicated m = 1 kernels of w's type (`q8x`: x to 8 bits,
/// as the model's decode takes it). Returns false, launching nothing, where there is none.
fn launch_matvec_m1(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    out: &mut DeviceBuffer,
    q8x: bool,
) -> Result<bool> {
    let (n, k) = (w.rows, w.cols);
    if k % 32 != 0 || w.row_bytes() % 4 != 0 {
        return Ok(false);
    }
    need("matmul", "x", x, k, 4)?;
    need("matmul", "weight", w.bytes, n * w.row_bytes(), 1)?;
    need("matmul", "out", out, n, 4)?;
    if n == 0 {
        return Ok(true);
    }
    let rows_per_block = wide_matvec_rows(dev, tuning, w.ty, n, k);
    let kernel = if q8x && rows_per_block == 16 && occupancy_capped(dev, tuning, w.ty, k) {
        kernels::matvec_wide_o3(w.ty)
    } else {
        kernels::matvec_wide(w.ty, rows_per_block, q8x)
    };
    let threads = wide_matvec_threads(dev, k);
    let Some(kernel) = kernel else {
        return Ok(false);
    };
    let args = [
        x.arg(),
        w.bytes.arg(),
        out.arg(),
        Arg::I32(to_i32(n, "matmul n")?),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(w.row_bytes() as i64),
    ];
    let blocks = n.div_ceil(rows_per_block) as u32;
    dev.launch("matmul", &kernel, [blocks, 1, 1], [threads, 1, 1], 0, &args)?;
    Ok(true)
}

pub fn launch_matmul(
    dev: &GpuDevice,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let (n, k) = (w.rows, w.cols);
    need("matmul", "x", x, m * k, 4)?;
    need("matmul", "weight", w.bytes, n * w.row_bytes(), 1)?;
    need("matmul", "out", out, m * n, 4)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if m == 1 && launch_matvec_m1(dev, dev.tuning(), x, w, out, false)? {
        return Ok(());
    }
    let args = [
        x.arg(),
        w.bytes.arg(),
        out.arg(),
        Arg::I32(to_i32(m, "matmul m")?),
        Arg::I32(to_i32(n, "matmul n")?),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(w.row_bytes() as i64),
    ];
    if m <= MATVEC_MAX_M {
        let blocks = n.div_ceil(MATVEC_ROWS_PER_BLOCK);
        // x staged in shared memory (chunks of 32 padded to 33 floats) when it fits.
        let staged_bytes = m * k.div_ceil(32) * 33 * 4;
        let float_path = w.ty.block_size() == 1 && k % 4 == 0; // matmul.hip: no staging there
        let staged = !float_path && staged_bytes <= dev.runtime().props().max_shared_per_block;
        let mut args = args.to_vec();
        args.push(Arg::I32(staged as i32));
        let shared = if staged { staged_bytes as u32 } else { 0 };
        dev.launch(
            "matmul",
            &kernels::matvec(w.ty)?,
            [blocks as u32, 1, 1],
            [32 * MATVEC_ROWS_PER_BLOCK as u32, 1, 1],
            shared,
            &args,
        )
    } else {
        let grid = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1];
        dev.launch(
            "matmul",
            &kernels::matmul_tiled(w.ty)?,
            grid,
            [256, 1, 1],
            0,
            &args,
        )
    }
}

/// Whether the decode (m = 1, 8-bit x) matvec kernels can take weight `w`: the fused
/// launches below and `launch_matmul_model` at m = 1.
pub fn decode_matvec_fits(w: &DeviceWeight) -> bool {
    w.cols % 32 == 0 && w.row_bytes() % 4 == 0 && kernels::matvec_swiglu(w.ty).is_some()
}

/// Whether the decode gate/up kernels have activation `act`.
pub fn decode_glu_fits(act: Activation) -> bool {
    act == Activation::Silu
}

/// An RMS norm fused into the m = 1 kernels (wide kernels only): they take
/// `x / sqrt(mean(x^2) + eps) * weight` in x's place, computed as `(x * weight)`'s products
/// times `1 / sqrt(mean(x^2) + eps)`.
pub struct RmsNorm<'a> {
    /// F32 `[k]`.
    pub weight: &'a DeviceBuffer,
    pub eps: f32,
}

/// The RMS norm a fused m = 1 launch applies to x (wide kernels only).
pub enum NormIn<'a> {
    /// x is the raw rows: every block multiplies them by the weight and sums their squares.
    Weight(RmsNorm<'a>),
    /// x is already the rows times the norm's weight, and their sum of squares is the sum of
    /// the first `n` floats of `parts`: both written by the `NormOut` launch just before.
    Parts {
        parts: &'a DeviceBuffer,
        n: usize,
        eps: f32,
    },
}

impl NormIn<'_> {
    /// The kernels' `norm_w, eps, ss_parts, n_parts`.
    fn args(norm: Option<&NormIn>, k: usize) -> Result<[Arg; 4]> {
        Ok(match norm {
            Some(NormIn::Weight(n)) => {
                need("matmul", "norm weight", n.weight, k, 4)?;
                [n.weight.arg(), Arg::F32(n.eps), Arg::Ptr(0), Arg::I32(0)]
            }
            Some(NormIn::Parts { parts, n, eps }) => {
                need("matmul", "norm partial sums", parts, *n, 4)?;
                let n = to_i32(*n, "matmul norm parts")?;
                [Arg::Ptr(0), Arg::F32(*eps), parts.arg(), Arg::I32(n)]
            }
            None => [Arg::Ptr(0), Arg::F32(0.0), Arg::Ptr(0), Arg::I32(0)],
        })
    }
}

/// The next RMS norm's input, written by a one-matrix `launch_matvec_multi` (the residual
/// projection that produces the norm's x): `xw = out * weight` and, per block, the sum of
/// `out^2` over its rows into `parts` (as many floats as blocks: `launch_matvec_multi`
/// returns that count). The norm's consumer takes them as `NormIn::Parts`.
pub struct NormOut<'a> {
    /// F32 `[n]`.
    pub weight: &'a DeviceBuffer,
    pub xw: &'a mut DeviceBuffer,
    pub parts: &'a DeviceBuffer,
}

/// One matrix of a fused m = 1 launch: `out[r] (+)= x . w[r] (+ bias[r])`.
pub struct Projection<'a> {
    pub w: DeviceWeight<'a>,
    /// F32 `[w.rows]`.
    pub bias: Option<&'a DeviceBuffer>,
    pub out: &'a mut DeviceBuffer,
}

/// How a fused m = 1 launch writes each projection's `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residual {
    /// `out = x @ w^T (+ bias)`.
    Overwrite,
    /// `out += x @ w^T (+ bias)`.
    Add,
    /// `Add`, with `out` loaded before the launch waits for the one before it (wide kernels,
    /// matmul.hip `accumulate = 2`; others as `Add`): only for an `out` that no launch since
    /// the one before the launch just before has written, such as a decode step's residual
    /// stream (written two or more launches back).
    AddEarly,
}

/// Up to three m = 1 projections of x in one launch (matmul.hip `matvec_multi`), each
/// `out = x @ w^T (+ bias)`, added to what `out` holds when `accumulate`. Returns false,
/// launching nothing, where the fused kernel does not apply (weight types that differ or
/// have no fast kernel, k not a multiple of 32): the caller then runs the unfused ops.
pub fn launch_matvec_multi(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    parts: &mut [Projection],
    accumulate: bool,
    norm: Option<&NormIn>,
) -> Result<bool> {
    let residual = if accumulate {
        Residual::Add
    } else {
        Residual::Overwrite
    };
    Ok(launch_matvec_multi_blocks(dev, tuning, x, parts, residual, norm, None)?.is_some())
}

/// `launch_matvec_multi` with `out` written as `residual` says, that also writes the next norm's
/// input (`norm_out`: one projection, wide kernels only). Returns the number of blocks launched
/// (`NormOut::parts` holds that many sums), or None, launching nothing, where the fused kernel
/// does not apply.
pub fn launch_matvec_multi_blocks(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    parts: &mut [Projection],
    residual: Residual,
    norm: Option<&NormIn>,
    norm_out: Option<&mut NormOut>,
) -> Result<Option<usize>> {
    let Some(first) = parts.first() else {
        return Ok(Some(0));
    };
    let (ty, k, row_bytes) = (first.w.ty, first.w.cols, first.w.row_bytes());
    if parts.len() > 3
        || !parts
            .iter()
            .all(|p| p.w.ty == ty && p.w.cols == k && decode_matvec_fits(&p.w))
    {
        return Ok(None);
    }
    need("matmul", "x", x, k, 4)?;
    for p in parts.iter() {
        need("matmul", "weight", p.w.bytes, p.w.rows * row_bytes, 1)?;
        need("matmul", "out", p.out, p.w.rows, 4)?;
        if let Some(b) = p.bias {
            need("matmul", "bias", b, p.w.rows, 4)?;
        }
    }
    if norm_out.is_some() && parts.len() != 1 {
        return Err(Error::invalid(
            "matmul: the next norm's input comes from a single projection",
        ));
    }
    let rows_per_block = wide_matvec_rows(dev, tuning, ty, parts.iter().map(|p| p.w.rows).sum(), k);
    let kernel = if rows_per_block == 16 && occupancy_capped(dev, tuning, ty, k) {
        kernels::matvec_wide_multi_o3(ty).expect("fast type")
    } else {
        kernels::matvec_wide_multi(ty, rows_per_block, true).expect("fast type")
    };
    let threads = wide_matvec_threads(dev, k);
    let mut args = vec![
        x.arg(),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(row_bytes as i64),
        Arg::I32(match residual {
            Residual::Overwrite => 0,
            Residual::Add => 1,
            Residual::AddEarly => 2,
        }),
    ];
    {
        args.extend(NormIn::args(norm, k)?);
        match &norm_out {
            Some(o) => {
                let n = parts[0].w.rows;
                need("matmul", "next norm weight", o.weight, n, 4)?;
                need("matmul", "next norm input", o.xw, n, 4)?;
                need(
                    "matmul",
                    "next norm sums",
                    o.parts,
                    n.div_ceil(rows_per_block),
                    4,
                )?;
                args.extend([o.weight.arg(), o.xw.arg(), o.parts.arg()]);
            }
            None => args.extend([Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0)]),
        }
    }
    let mut blocks = 0;
    for i in 0..3 {
        match parts.get(i) {
            Some(p) => {
                args.extend([
                    p.w.bytes.arg(),
                    p.out.arg(),
                    p.bias.map_or(Arg::Ptr(0), |b| b.arg()),
                    Arg::I32(to_i32(p.w.rows, "matmul n")?),
                ]);
                blocks += p.w.rows.div_ceil(rows_per_block);
            }
            None => args.extend([Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0), Arg::I32(0)]),
        }
    }
    if blocks == 0 {
        return Ok(Some(0));
    }
    dev.launch(
        "matmul",
        &kernel,
        [to_i32(blocks, "matmul blocks")? as u32, 1, 1],
        [threads, 1, 1],
        0,
        &args,
    )?;
    Ok(Some(blocks))
}

/// The rope and KV-cache append a decode step's q/k/v launch runs in its epilogue
/// (`launch_matvec_qkv_rope`).
pub struct QkvRope<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub params: &'a RopeParams,
    /// F32 `[head_dim / 2]`.
    pub freq_factors: Option<&'a DeviceBuffer>,
    /// `[n_ctx, kv_heads * head_dim]` of `dtype`; the step's row must exist (the caller checks).
    pub k_cache: &'a mut DeviceBuffer,
    pub v_cache: &'a mut DeviceBuffer,
    pub dtype: KvDtype,
    /// The step's position: the int32 at this byte offset of this buffer.
    pub pos: (&'a DeviceBuffer, usize),
}

/// The kernel and rows per block `launch_matvec_qkv_rope` takes for q/k/v weights like
/// `w` (of `heads` and `kv_heads` heads of `head_dim`), or None where it does not apply:
/// weights with no decode kernel, a partial rotation (n_rot < head_dim), or a head that the
/// block's rows do not divide.
fn qkv_rope_kernel(
    dev: &GpuDevice,
    tuning: &Tuning,
    w: &DeviceWeight,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    params: &RopeParams,
    dtype: KvDtype,
) -> Option<(kernels::Kernel, usize)> {
    let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
    if !decode_matvec_fits(w) || params.n_rot != head_dim || nq == 0 || nkv == 0 {
        return None;
    }
    let (ty, k) = (w.ty, w.cols);
    let r = wide_matvec_rows(dev, tuning, ty, nq + 2 * nkv, k);
    let kernel = if r == 16 && occupancy_capped(dev, tuning, ty, k) {
        kernels::matvec_qkv_rope_o3(ty, dtype)
    } else {
        kernels::matvec_qkv_rope(ty, r, dtype)
    }?;
    head_dim.is_multiple_of(r).then_some((kernel, r))
}

/// Whether `launch_matvec_qkv_rope` takes q/k/v weights like `w` (see `qkv_rope_kernel`).
#[allow(clippy::too_many_arguments)]
pub fn decode_qkv_rope_fits(
    dev: &GpuDevice,
    tuning: &Tuning,
    w: &DeviceWeight,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    params: &RopeParams,
    dtype: KvDtype,
) -> bool {
    qkv_rope_kernel(dev, tuning, w, heads, kv_heads, head_dim, params, dtype).is_some()
}

/// A decode step's `q = rope(x @ wq^T + bq)`, `k_cache[pos] = rope(x @ wk^T + bk)`,
/// `v_cache[pos] = x @ wv^T + bv` in one launch (matmul.hip `matvec_qkv_rope`, 8-bit x, the
/// norm as `launch_matvec_multi` takes it). Returns false, launching nothing, where that
/// kernel does not apply: weights of different types or with no decode kernel, a partial
/// rotation (n_rot < head_dim), or a head that the block's rows do not divide.
#[allow(clippy::too_many_arguments)]
pub fn launch_matvec_qkv_rope(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    norm: Option<&NormIn>,
    w: [DeviceWeight; 3],
    biases: [Option<&DeviceBuffer>; 3],
    q_out: &mut DeviceBuffer,
    rope: &mut QkvRope,
) -> Result<bool> {
    let (ty, k, row_bytes) = (w[0].ty, w[0].cols, w[0].row_bytes());
    let (nq, nkv) = (rope.heads * rope.head_dim, rope.kv_heads * rope.head_dim);
    if !w.iter().all(|w| w.ty == ty && w.cols == k)
        || w[0].rows != nq
        || w[1].rows != nkv
        || w[2].rows != nkv
    {
        return Ok(false);
    }
    #[rustfmt::skip]
    let Some((kernel, r)) = qkv_rope_kernel(
        dev, tuning, &w[0], rope.heads, rope.kv_heads, rope.head_dim, rope.params, rope.dtype,
    ) else {
        return Ok(false);
    };
    let op = "matmul";
    need(op, "x", x, k, 4)?;
    for (w, bias) in w.iter().zip(biases) {
        need(op, "weight", w.bytes, w.rows * row_bytes, 1)?;
        if let Some(b) = bias {
            need(op, "bias", b, w.rows, 4)?;
        }
    }
    need(op, "q", q_out, nq, 4)?;
    let elem = rope.dtype.bytes();
    need(op, "k_cache", rope.k_cache, nkv, elem)?;
    need(op, "v_cache", rope.v_cache, nkv, elem)?;
    let (pos_buf, pos_offset) = rope.pos;
    need(op, "position", pos_buf, pos_offset / 4 + 1, 4)?;
    if let Some(ff) = rope.freq_factors {
        need(op, "freq_factors", ff, rope.head_dim / 2, 4)?;
    }
    let mut args = vec![
        x.arg(),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(row_bytes as i64),
    ];
    args.extend(NormIn::args(norm, k)?);
    args.extend(w.iter().map(|w| w.bytes.arg()));
    args.extend(biases.map(|b| b.map_or(Arg::Ptr(0), |b| b.arg())));
    args.extend([
        Arg::I32(to_i32(nq, "matmul n")?),
        Arg::I32(to_i32(nkv, "matmul n")?),
        q_out.arg(),
        rope.k_cache.arg(),
        rope.v_cache.arg(),
        Arg::Ptr(pos_buf.ptr() + pos_offset as u64),
        rope.freq_factors.map_or(Arg::Ptr(0), |f| f.arg()),
        Arg::I32(to_i32(rope.head_dim, "head_dim")?),
        Arg::F32(rope.params.theta),
        Arg::I32(rope.params.neox as i32),
    ]);
    let blocks = to_i32((nq + 2 * nkv) / r, "matmul blocks")? as u32;
    let threads = wide_matvec_threads(dev, k);
    dev.launch(op, &kernel, [blocks, 1, 1], [threads, 1, 1], 0, &args)?;
    Ok(true)
}

/// `out[r] = silu(x . w_gate[r]) * (x . w_up[r])` for m = 1 in one launch (matmul.hip
/// `matvec_swiglu`). Returns false, launching nothing, where the fused kernel does not apply.
#[allow(clippy::too_many_arguments)]
pub fn launch_matvec_glu(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w_gate: &DeviceWeight,
    w_up: &DeviceWeight,
    out: &mut DeviceBuffer,
    act: Activation,
    norm: Option<&NormIn>,
) -> Result<bool> {
    let (n, k) = (w_gate.rows, w_gate.cols);
    if w_up.ty != w_gate.ty
        || w_up.rows != n
        || w_up.cols != k
        || !decode_matvec_fits(w_gate)
        || !decode_glu_fits(act)
    {
        return Ok(false);
    }
    need("matmul", "x", x, k, 4)?;
    need(
        "matmul",
        "gate weight",
        w_gate.bytes,
        n * w_gate.row_bytes(),
        1,
    )?;
    need("matmul", "up weight", w_up.bytes, n * w_up.row_bytes(), 1)?;
    need("matmul", "out", out, n, 4)?;
    if n == 0 {
        return Ok(true);
    }
    // The streaming kernel for long rows; else the wide kernel with half the rows per block of
    // the unfused one for each matrix (the same number of rows in flight).
    let stream = stream_plan(dev, tuning, w_gate.ty, 2 * n, k, STREAM_ROWS);
    let (kernel, grid, threads, shared) = if let Some(plan) = stream {
        let kernel =
            kernels::matvec_stream_swiglu(w_gate.ty, STREAM_ROWS, plan.stages).expect("fast type");
        (kernel, plan.grid, plan.block, plan.shared as u32)
    } else {
        let r = wide_swiglu_rows(tuning, w_gate.ty);
        let kernel = kernels::matvec_wide_swiglu(w_gate.ty, r, true).expect("fast type");
        let grid = to_i32(n.div_ceil(r), "matmul n")? as u32;
        (kernel, grid, wide_matvec_threads(dev, k), 0)
    };
    let mut args = vec![x.arg()];
    args.extend(NormIn::args(norm, k)?);
    args.extend([
        w_gate.bytes.arg(),
        w_up.bytes.arg(),
        out.arg(),
        Arg::I32(to_i32(n, "matmul n")?),
        Arg::I32(to_i32(k, "matmul k")?),
        Arg::I64(w_gate.row_bytes() as i64),
    ]);
    dev.launch(
        "matmul",
        &kernel,
        [grid, 1, 1],
        [threads, 1, 1],
        shared,
        &args,
    )?;
    Ok(true)
}

// ------------------------------------------------------------------------------------------
// The model's matmul: tensor cores for prefill.

/// Columns of out per tensor-core block (matmul.hip, MMA_BN), and k per step (MMA_BK).
const MMA_BN: usize = 128;
const MMA_BK: usize = 64;
/// Shared row length in f16 (matmul.hip, MMA_LD).
const MMA_LD: usize = 72;

/// Whether the model's matmul may use the tensor-core kernel on `dev`: NVIDIA sm_80 or newer
/// (`mma.sync` m16n8k16), and the CPU emulation (which runs the kernel's portable form, to
/// test its tiling). Not on AMD hardware: there the portable form emulates the MMA with
/// shuffles, slower than the FP32 tiled kernel, so AMD keeps that (MFMA on CDNA and WMMA on
/// RDNA3 are future work). `tuning.mma` off keeps the float32 kernels.
pub fn mma_available(dev: &GpuDevice, tuning: &Tuning) -> bool {
    let rt = dev.runtime();
    tuning.mma
        && match rt.backend() {
            "cuda" => rt
                .props()
                .arch
                .strip_prefix("sm_")
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v >= 80),
            "emulator" => true,
            _ => false,
        }
}

/// Dynamic shared memory of a tensor-core block with row tile `bm` (double-buffered x and W
/// tiles of f16).
fn mma_shared_bytes(bm: usize) -> usize {
    2 * (bm + MMA_BN) * MMA_LD * 2
}

/// Row tile for an m x n product: 128 when its blocks fill at least 90% of the
/// multiprocessors in one wave (fewer, larger tiles: each weight tile is dequantized fewer
/// times), else 64; only tiles whose shared memory fits (measured on an H200,
/// docs/perf). `tuning.mma_tile_rows` forces one where it fits.
fn mma_row_tile(dev: &GpuDevice, tuning: &Tuning, m: usize, n: usize) -> usize {
    let props = dev.runtime().props();
    let fits = |bm: usize| mma_shared_bytes(bm) <= props.max_shared_per_block;
    if let Some(bm) = tuning.mma_tile_rows.filter(|&b| fits(b)) {
        return bm;
    }
    let blocks128 = m.div_ceil(128) * n.div_ceil(MMA_BN);
    if fits(128) && blocks128 * 10 >= props.multiprocessors as usize * 9 {
        128
    } else {
        64
    }
}

/// Device scratch the tensor-core path takes for m rows of k (any row tile): x as f16 with
/// its rows padded to the largest tile and k to MMA_BK, then one float a row.
pub fn mma_scratch_bytes(m: usize, k: usize) -> usize {
    let mp = m.div_ceil(128) * 128;
    mp * k.div_ceil(MMA_BK) * MMA_BK * 2 + mp * 4
}

/// `out[m, n] = x[m, k] @ dequant(W)[n, k]^T` on tensor cores (matmul.hip, `mma_prep_x` then
/// `matmul_mma_<type>_m<bm>`): x rounded to f16 after a per-row power-of-two scale (no
/// overflow whatever its range), W dequantized to f16, f32 accumulation; the error is that of
/// f16 inputs (relative ~2^-10 of sum |x| |w| per output), not the 1e-5 of `launch_matmul`.
/// Errors where `mma_available` is false.
pub fn launch_matmul_mma(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    launch_matmul_mma_tile(dev, tuning, x, w, m, out, None)
}

/// `launch_matmul_mma` with the row tile `bm` (64 or 128) chosen by the caller, or by
/// `mma_row_tile` when None.
pub fn launch_matmul_mma_tile(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
    bm: Option<usize>,
) -> Result<()> {
    let (n, k) = (w.rows, w.cols);
    if let Some(b) = bm {
        if !kernels::MMA_ROW_TILES.contains(&b)
            || mma_shared_bytes(b) > dev.runtime().props().max_shared_per_block
        {
            return Err(crate::error::Error::invalid(format!(
                "matmul: row tile {b} is not available on {}",
                dev.name()
            )));
        }
    }
    need("matmul", "x", x, m * k, 4)?;
    need("matmul", "weight", w.bytes, n * w.row_bytes(), 1)?;
    need("matmul", "out", out, m * n, 4)?;
    if !mma_available(dev, tuning) {
        return Err(crate::error::Error::unsupported(format!(
            "matmul: no tensor-core kernel on {} ({})",
            dev.name(),
            dev.runtime().props().arch
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let bm = bm.unwrap_or_else(|| mma_row_tile(dev, tuning, m, n));
    let (mp, kp) = (m.div_ceil(bm) * bm, k.div_ceil(MMA_BK) * MMA_BK);
    let xh_bytes = mp * kp * 2;
    debug_assert!(xh_bytes + mp * 4 <= mma_scratch_bytes(m, k));
    let scratch = dev.scratch(xh_bytes + mp * 4, "matmul")?;
    let (xh, inv) = (scratch.ptr(), scratch.ptr() + xh_bytes as u64);
    dev.launch(
        "matmul",
        &kernels::mma_prep_x(),
        [to_i32(mp, "matmul m")? as u32, 1, 1],
        [256, 1, 1],
        0,
        &[
            x.arg(),
            Arg::Ptr(xh),
            Arg::Ptr(inv),
            Arg::I32(to_i32(m, "matmul m")?),
            Arg::I32(to_i32(k, "matmul k")?),
            Arg::I32(to_i32(kp, "matmul k")?),
        ],
    )?;
    dev.launch(
        "matmul",
        &kernels::matmul_mma(w.ty, bm)?,
        [n.div_ceil(MMA_BN) as u32, (mp / bm) as u32, 1],
        [256, 1, 1],
        mma_shared_bytes(bm) as u32,
        &[
            Arg::Ptr(xh),
            Arg::Ptr(inv),
            w.bytes.arg(),
            out.arg(),
            Arg::I32(to_i32(m, "matmul m")?),
            Arg::I32(to_i32(n, "matmul n")?),
            Arg::I32(to_i32(k, "matmul k")?),
            Arg::I32(to_i32(kp, "matmul k")?),
            Arg::I64(w.row_bytes() as i64),
        ],
    )
}

/// The model's matmul (`Backend::matmul` of the GPU backend): the tensor-core kernel from
/// `tuning.mma_min_rows` rows where `mma_available`, the decode matvec (8-bit x) at m = 1,
/// else `launch_matmul` (exact to float32 rounding; the op `rocmforge.ops.matmul` always takes
/// that one). F32 weights keep the exact kernels: a file stored in F32 asks for float32
/// arithmetic, which f16 tiles would not give.
pub fn launch_matmul_model(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    m: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    if m >= tuning.mma_min_rows && w.ty != GgmlType::F32 && mma_available(dev, tuning) {
        launch_matmul_mma(dev, tuning, x, w, m, out)
    } else if m == 1 && launch_matvec_m1(dev, tuning, x, w, out, true)? {
        Ok(())
    } else {
        launch_matmul(dev, x, w, m, out)
    }
}

/// Which kernel family `matmul_gguf_path` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// `launch_matmul` (the op's path).
    Exact,
    /// `launch_matmul_model` (the model's choice).
    Model,
    /// `launch_matmul_mma`.
    TensorCores,
}

/// `matmul_gguf` through the chosen path (tests and benchmarks of the model's matmul).
pub fn matmul_gguf_path(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &WeightView,
    m: usize,
    out: &mut [f32],
    path: MatmulPath,
) -> Result<()> {
    kernels::matvec(w.ty)?;
    run_path(dev, x, w.ty, w.rows, w.cols, w.bytes, m, out, path)
}

#[allow(clippy::too_many_arguments)]
fn run(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    ty: GgmlType,
    n: usize,
    k: usize,
    bytes: &[u8],
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    run_path(dev, x, ty, n, k, bytes, m, out, MatmulPath::Exact)
}

#[allow(clippy::too_many_arguments)]
fn run_path(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    ty: GgmlType,
    n: usize,
    k: usize,
    bytes: &[u8],
    m: usize,
    out: &mut [f32],
    path: MatmulPath,
) -> Result<()> {
    let xd = DeviceBuffer::from_slice(dev, &x[..m * k], "matmul")?;
    let wd = DeviceBuffer::from_slice(dev, &to_device_layout(ty, k, bytes), "matmul")?;
    let mut od = DeviceBuffer::alloc(dev, m * n * 4, "matmul")?;
    let w = DeviceWeight {
        ty,
        rows: n,
        cols: k,
        bytes: &wd,
    };
    match path {
        MatmulPath::Exact => launch_matmul(dev, &xd, &w, m, &mut od)?,
        MatmulPath::Model => launch_matmul_model(dev, dev.tuning(), &xd, &w, m, &mut od)?,
        MatmulPath::TensorCores => launch_matmul_mma(dev, dev.tuning(), &xd, &w, m, &mut od)?,
    }
    od.read(&mut out[..m * n], "matmul")
}

/// The model's decode gate/up + SwiGLU for one row, host arrays in and out:
/// `out[n] = silu(gate @ x) * (up @ x)` with 8-bit x (`launch_matvec_glu`, the streaming
/// kernel for rows of 2048 values or more). Q4_0 and Q8_0 weights.
pub fn matvec_swiglu_gguf(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    gate: &WeightView,
    up: &WeightView,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (gate.rows, gate.cols);
    if up.ty != gate.ty || up.rows != n || up.cols != k || x.len() != k || out.len() != n {
        return Err(Error::invalid(format!(
            "matvec_swiglu: gate [{n}, {k}] {}, up [{}, {}] {}, x [{}], out [{}] do not match",
            gate.ty,
            up.rows,
            up.cols,
            up.ty,
            x.len(),
            out.len()
        )));
    }
    let xd = DeviceBuffer::from_slice(dev, x, "matvec_swiglu")?;
    let upload = |w: &WeightView| {
        DeviceBuffer::from_slice(dev, &to_device_layout(w.ty, k, w.bytes), "matvec_swiglu")
    };
    let (gd, ud) = (upload(gate)?, upload(up)?);
    let mut od = DeviceBuffer::alloc(dev, n * 4, "matvec_swiglu")?;
    let view = |bytes| DeviceWeight {
        ty: gate.ty,
        rows: n,
        cols: k,
        bytes,
    };
    let (tuning, act) = (dev.tuning(), Activation::Silu);
    if !launch_matvec_glu(dev, tuning, &xd, &view(&gd), &view(&ud), &mut od, act, None)? {
        return Err(Error::unsupported(format!(
            "matvec_swiglu: no fused decode kernel for {} weights",
            gate.ty
        )));
    }
    od.read(out, "matvec_swiglu")
}

/// `out[m, n] = x[m, k] @ w[n, k]^T`, all float32 host arrays.
pub fn matmul_f32(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) -> Result<()> {
    // SAFETY: f32 is plain data; the byte view covers exactly w[..n * k].
    let bytes = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, n * k * 4) };
    run(dev, x, GgmlType::F32, n, k, bytes, m, out)
}

/// `out[m, n] = x[m, k] @ dequant(w)[n, k]^T`, w in its GGUF type.
pub fn matmul_gguf(
    dev: &Arc<GpuDevice>,
    x: &[f32],
    w: &WeightView,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    kernels::matvec(w.ty)?; // an unsupported type fails before any upload
    run(dev, x, w.ty, w.rows, w.cols, w.bytes, m, out)
}
