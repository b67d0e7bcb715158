//! GPU launch of `kernels/matvec.hip`: the model's decode matrix-vector products (m = 1, x in
//! 8 bits) of every type the family takes, with their epilogues: projections (1 to 3
//! matrices, bias, residual add, the next norm's input), gate/up with the activation, and
//! q/k/v with the rope and the KV-cache append. The kernels come from the table in
//! src/device/matvec_table.rs; these launchers choose one (the rows per block and forms the
//! tuning record asks for, else the defaults) and the launch shape.

use bytemuck::{Pod, Zeroable};

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels::{self, Kernel};
use crate::device::layout::DeviceWeight;
use crate::device::matvec_table::{Core, Epilogue, SHAPES};
use crate::device::tuning::Tuning;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::ops::activation::Activation;
use crate::ops::rope::RopeParams;

/// One matrix of a launch (matvec.hip `MatvecMat`).
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct MatvecMat {
    w: u64,
    out: u64,
    bias: u64,
    n: i32,
    pad: i32,
}

/// The arguments of every matvec.hip kernel (`MatvecArgs` there, passed by value).
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
struct MatvecArgs {
    x: u64,
    norm_w: u64,
    ss_parts: u64,
    row_bytes: i64,
    k: i32,
    n_parts: i32,
    eps: f32,
    mode: i32,
    mat: [MatvecMat; 3],
    next_w: u64,
    xw_out: u64,
    ss_out: u64,
    k_cache: u64,
    v_cache: u64,
    pos: u64,
    freq_factors: u64,
    head_dim: i32,
    neox: i32,
    theta: f32,
    /// The RMS norm of x: 0 none, 1 by weight (`norm_w`), 2 handed over (`ss_parts`).
    norm: i32,
}

// The kernels' static_assert says the same.
const _: () = assert!(std::mem::size_of::<MatvecArgs>() == 216);
const _: () = assert!(std::mem::align_of::<MatvecArgs>() == 8);

impl MatvecArgs {
    /// x of rows of k values of `row_bytes`, normalized as `norm` says. (The norm's pointers
    /// are x's where unused: the kernels declare them global memory, so they are never null.)
    fn new(x: &DeviceBuffer, k: usize, row_bytes: usize, norm: Option<&NormIn>) -> Result<Self> {
        need("matmul", "x", x, k, 4)?;
        let mut a = MatvecArgs {
            x: x.ptr(),
            norm_w: x.ptr(),
            ss_parts: x.ptr(),
            k: to_i32(k, "matmul k")?,
            row_bytes: row_bytes as i64,
            ..Default::default()
        };
        match norm {
            Some(NormIn::Weight(n)) => {
                need("matmul", "norm weight", n.weight, k, 4)?;
                (a.norm, a.norm_w, a.eps) = (1, n.weight.ptr(), n.eps);
            }
            Some(NormIn::Parts { parts, n, eps }) => {
                need("matmul", "norm partial sums", parts, *n, 4)?;
                let n = to_i32(*n, "matmul norm parts")?;
                (a.norm, a.ss_parts, a.n_parts, a.eps) = (2, parts.ptr(), n, *eps);
            }
            None => {}
        }
        Ok(a)
    }

    /// Matrix `i`: weight `w`, its output and bias.
    fn set_mat(
        &mut self,
        i: usize,
        w: &DeviceWeight,
        out: u64,
        bias: Option<&DeviceBuffer>,
    ) -> Result<()> {
        need("matmul", "weight", w.bytes, w.rows * w.row_bytes(), 1)?;
        if let Some(b) = bias {
            need("matmul", "bias", b, w.rows, 4)?;
        }
        self.mat[i] = MatvecMat {
            w: w.bytes.ptr(),
            out,
            bias: bias.map_or(0, |b| b.ptr()),
            n: to_i32(w.rows, "matmul n")?,
            pad: 0,
        };
        Ok(())
    }
}

/// Values of x one 16-byte piece covers (quants.h `VALUES`) for the types of the family.
fn piece_values(ty: GgmlType) -> Option<usize> {
    kernels::matvec_decode_type(ty).then_some(if ty == GgmlType::Q8_0 { 16 } else { 32 })
}

/// Rows per block of the row-block kernels for `n` rows (in all, for a fused launch) of k values:
/// `tuning.matvec_rows` (at most the type's largest: Q8_0 8), else Q8_0 4; Q4_0 16 where rows
/// are long (k >= 2048) and there are still at least a block per multiprocessor, else 8
/// (docs/perf), and IQ4_NL / IQ4_XS as Q4_0
/// (a piece's scale is one register there too: their 16-row forms fit the capped registers
/// without spills; not timed yet); the other types 8 (their 16-row forms hold more registers
/// a piece). Every block reads all of x, so more rows per block move fewer bytes, until too
/// few blocks remain.
fn row_block_rows(dev: &GpuDevice, tuning: &Tuning, ty: GgmlType, n: usize, k: usize) -> usize {
    if let Some(r) = tuning.matvec_rows {
        return r.min(kernels::matvec_row_block_max(ty).unwrap_or(r));
    }
    match ty {
        GgmlType::Q8_0 => 4,
        GgmlType::Q4_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            let sms = dev.runtime().props().multiprocessors.max(1) as usize;
            if k >= 2048 && n / 16 >= sms {
                16
            } else {
                8
            }
        }
        _ => 8,
    }
}

/// Rows of each matrix per block of the row-block gate/up kernels: `tuning.glu_rows`, else 8 for
/// Q4_0 and 4 for the other types (twice the rows in flight of the unfused default).
fn row_block_glu_rows(tuning: &Tuning, ty: GgmlType) -> usize {
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
        row_block_glu_rows(tuning, ty)
    } else {
        row_block_rows(dev, tuning, ty, rows, k)
    };
    rows.div_ceil(per_block) * k * 4 <= MAX_EXTRA_BYTES
}

/// Threads per block of the row-block kernels for rows of k elements: one 32-lane group per 1,024
/// elements (a lane holds 32 x values per chunk), at most 4 groups (matvec.hip MV_GROUPS),
/// rounded up to a whole number of warps (an even number of groups on wave-64 devices).
fn row_block_threads(dev: &GpuDevice, k: usize) -> u32 {
    let warp = dev.runtime().props().warp_size;
    (32 * k.div_ceil(1024).clamp(1, 4) as u32).div_ceil(warp) * warp
}

/// Whether an m = 1 launch of 16 rows per block over rows of `k` values of `ty` takes the
/// register-capped form (3 blocks per multiprocessor instead of 2 on NVIDIA): where the block
/// reads a row in one pass (pieces <= threads), unless `tuning.matvec_capped` is off; rows read
/// in several passes were slower capped (docs/perf).
fn occupancy_capped(dev: &GpuDevice, tuning: &Tuning, ty: GgmlType, k: usize) -> bool {
    let Some(piece_values) = piece_values(ty) else {
        return false;
    };
    tuning.matvec_capped && k.div_ceil(piece_values) <= row_block_threads(dev, k) as usize
}

/// The row-block kernel of `epilogue` with `rows` rows per block (the capped form where
/// `occupancy_capped`), if the table has it.
fn row_block_kernel(
    dev: &GpuDevice,
    tuning: &Tuning,
    ty: GgmlType,
    k: usize,
    epilogue: Epilogue,
    rows: usize,
) -> Option<Kernel> {
    let capped = rows == 16 && epilogue != Epilogue::Glu && occupancy_capped(dev, tuning, ty, k);
    let shape = SHAPES.iter().find(|s| {
        s.epilogue == epilogue && s.core == Core::RowBlock && s.rows == rows && s.capped() == capped
    })?;
    kernels::matvec_decode(ty, shape)
}

/// Launch shape of a streaming kernel.
struct StreamPlan {
    kernel: Kernel,
    grid: u32,
    block: u32,
    shared: usize,
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

/// The streaming kernel's launch for `rows` weight rows (in all) of `k` values of `ty` (in
/// `aligned` rows: 16-byte aligned), or None where the row-block kernels stay: rows shorter than
/// 2048 values, more pieces a row than the form's block may have threads (512 with 2 stages,
/// 384 with 3), rows not 16-byte aligned (the kernel loads every piece with one 16-byte
/// load), shared memory short, or `tuning.matvec_stream` off. The grid is a few blocks per
/// multiprocessor (512 or 384 threads' worth), each block taking every grid-th group.
fn stream_plan(
    dev: &GpuDevice,
    tuning: &Tuning,
    ty: GgmlType,
    rows: usize,
    k: usize,
    aligned: bool,
) -> Option<StreamPlan> {
    let pieces = k / piece_values(ty)?;
    if !tuning.matvec_stream || k < 2048 || pieces > 512 || rows == 0 || !aligned {
        return None;
    }
    let stages = stream_stages(tuning, k);
    // (each type has its streaming kernels at one group size: matvec_table.rs `stream_rows`)
    let (shape, kernel) = SHAPES
        .iter()
        .filter(|s| s.epilogue == Epilogue::Glu && s.core == (Core::Stream { stages }))
        .find_map(|s| kernels::matvec_decode(ty, s).map(|kernel| (s, kernel)))?;
    let group_rows = shape.rows;
    let props = dev.runtime().props();
    let block = pieces.div_ceil(64) * 64;
    if block > shape.threads as usize {
        return None; // (the 3-stage form's bound: rows of more than 384 pieces)
    }
    let per_sm = (shape.threads as usize / block).max(1);
    let groups = rows.div_ceil(group_rows);
    let grid = groups.min(props.multiprocessors.max(1) as usize * per_sm);
    let shared = groups.div_ceil(grid) * group_rows * (block / 32) * 4;
    (shared <= props.max_shared_per_block).then_some(StreamPlan {
        kernel,
        grid: grid as u32,
        block: block as u32,
        shared,
    })
}

/// Whether the decode matvec family takes weight `w`: a type it has (quants.h), whole
/// blocks, and rows of a whole number of 4-byte words (the pieces' loads); the fused launches
/// below and `launch_matmul_model` at m = 1.
pub fn decode_matvec_fits(w: &DeviceWeight) -> bool {
    kernels::matvec_decode_type(w.ty)
        && w.cols % w.ty.block_size() == 0
        && w.cols % 32 == 0
        && w.row_bytes() % 4 == 0
}

/// Whether the decode gate/up kernels have activation `act` (matvec.hip `rf_act`).
pub fn decode_glu_fits(act: Activation) -> bool {
    matches!(act, Activation::Silu | Activation::GeluTanh)
}

/// An RMS norm fused into the m = 1 kernels: they take `x / sqrt(mean(x^2) + eps) * weight`
/// in x's place, computed as `(x * weight)`'s products times `1 / sqrt(mean(x^2) + eps)`.
pub struct RmsNorm<'a> {
    /// F32 `[k]`.
    pub weight: &'a DeviceBuffer,
    pub eps: f32,
}

/// The RMS norm a fused m = 1 launch applies to x.
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

/// The next RMS norm's input, written by a one-matrix `launch_matvec_multi` (the residual
/// projection that produces the norm's x): `xw = out * weight` and, per block, the sum of
/// `out^2` over its rows into `parts` (as many floats as blocks: `launch_matvec_multi_blocks`
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
    /// `Add`, with `out` loaded before the launch waits for the one before it: only for an
    /// `out` that no launch since the one before the launch just before has written, such as
    /// a decode step's residual stream (written two or more launches back).
    AddEarly,
}

/// Up to three m = 1 projections of x in one launch, each `out = x @ w^T (+ bias)`, added to
/// what `out` holds when `accumulate`. Returns false, launching nothing, where the family does
/// not apply (weight types that differ or that it lacks, rows it cannot take): the caller then
/// runs the unfused ops.
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
/// input (`norm_out`: one projection). Returns the number of blocks launched (`NormOut::parts`
/// holds that many sums), or None, launching nothing, where the family does not apply.
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
    if norm_out.is_some() && parts.len() != 1 {
        return Err(Error::invalid(
            "matmul: the next norm's input comes from a single projection",
        ));
    }
    let rows_per_block = row_block_rows(dev, tuning, ty, parts.iter().map(|p| p.w.rows).sum(), k);
    let Some(kernel) = row_block_kernel(dev, tuning, ty, k, Epilogue::Proj, rows_per_block) else {
        return Ok(None);
    };
    let mut a = MatvecArgs::new(x, k, row_bytes, norm)?;
    a.mode = match residual {
        Residual::Overwrite => 0,
        Residual::Add => 1,
        Residual::AddEarly => 2,
    };
    let mut blocks = 0;
    for (i, p) in parts.iter().enumerate() {
        need("matmul", "out", p.out, p.w.rows, 4)?;
        a.set_mat(i, &p.w, p.out.ptr(), p.bias)?;
        blocks += p.w.rows.div_ceil(rows_per_block);
    }
    if let Some(o) = norm_out {
        let n = parts[0].w.rows;
        need("matmul", "next norm weight", o.weight, n, 4)?;
        need("matmul", "next norm input", o.xw, n, 4)?;
        need("matmul", "next norm sums", o.parts, blocks, 4)?;
        (a.next_w, a.xw_out, a.ss_out) = (o.weight.ptr(), o.xw.ptr(), o.parts.ptr());
    }
    if blocks == 0 {
        return Ok(Some(0));
    }
    let grid = [to_i32(blocks, "matmul blocks")? as u32, 1, 1];
    let threads = [row_block_threads(dev, k), 1, 1];
    dev.launch("matmul", &kernel, grid, threads, 0, &[Arg::from_struct(&a)])?;
    Ok(Some(blocks))
}

/// `out = x @ w^T` for m = 1 on the family (the model's decode matmul, `launch_matmul_model`).
/// Returns false, launching nothing, where the family does not take `w`.
pub fn launch_matvec(
    dev: &GpuDevice,
    tuning: &Tuning,
    x: &DeviceBuffer,
    w: &DeviceWeight,
    out: &mut DeviceBuffer,
) -> Result<bool> {
    let w = DeviceWeight {
        bytes: w.bytes,
        ..*w
    };
    let mut parts = [Projection { w, bias: None, out }];
    let done =
        launch_matvec_multi_blocks(dev, tuning, x, &mut parts, Residual::Overwrite, None, None)?;
    Ok(done.is_some())
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
/// weights the family does not take, a partial rotation (n_rot < head_dim), or a head that
/// the block's rows do not divide.
#[allow(clippy::too_many_arguments)]
fn qkv_rope_kernel(
    dev: &GpuDevice,
    tuning: &Tuning,
    w: &DeviceWeight,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    params: &RopeParams,
    dtype: KvDtype,
) -> Option<(Kernel, usize)> {
    let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
    if !decode_matvec_fits(w) || params.n_rot != head_dim || nq == 0 || nkv == 0 {
        return None;
    }
    let (ty, k) = (w.ty, w.cols);
    let r = row_block_rows(dev, tuning, ty, nq + 2 * nkv, k);
    let epilogue = Epilogue::QkvRope {
        f16: dtype == KvDtype::F16,
    };
    let kernel = row_block_kernel(dev, tuning, ty, k, epilogue, r)?;
    (r % 2 == 0 && head_dim.is_multiple_of(r)).then_some((kernel, r))
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
/// `v_cache[pos] = x @ wv^T + bv` in one launch (matvec.hip `EpiQkvRope`, the norm as
/// `launch_matvec_multi` takes it). Returns false, launching nothing, where that kernel does
/// not apply: weights of different types or that the family does not take, a partial
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
    let mut a = MatvecArgs::new(x, k, row_bytes, norm)?;
    need(op, "q", q_out, nq, 4)?;
    for (i, (w, bias)) in w.iter().zip(biases).enumerate() {
        a.set_mat(i, w, if i == 0 { q_out.ptr() } else { 0 }, bias)?;
    }
    let elem = rope.dtype.bytes();
    need(op, "k_cache", rope.k_cache, nkv, elem)?;
    need(op, "v_cache", rope.v_cache, nkv, elem)?;
    let (pos_buf, pos_offset) = rope.pos;
    need(op, "position", pos_buf, pos_offset / 4 + 1, 4)?;
    if let Some(ff) = rope.freq_factors {
        need(op, "freq_factors", ff, rope.head_dim / 2, 4)?;
    }
    a.k_cache = rope.k_cache.ptr();
    a.v_cache = rope.v_cache.ptr();
    a.pos = pos_buf.ptr() + pos_offset as u64;
    a.freq_factors = rope.freq_factors.map_or(0, |f| f.ptr());
    a.head_dim = to_i32(rope.head_dim, "head_dim")?;
    a.theta = rope.params.theta;
    a.neox = rope.params.neox as i32;
    let blocks = to_i32((nq + 2 * nkv) / r, "matmul blocks")? as u32;
    let threads = row_block_threads(dev, k);
    dev.launch(
        op,
        &kernel,
        [blocks, 1, 1],
        [threads, 1, 1],
        0,
        &[Arg::from_struct(&a)],
    )?;
    Ok(true)
}

/// `out[r] = act(x . w_gate[r]) * (x . w_up[r])` for m = 1 in one launch (matvec.hip
/// `EpiGlu`: the streaming kernel for rows of 2048 values or more, else the row-block one). Returns
/// false, launching nothing, where the family does not apply.
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
    let (n, k, ty) = (w_gate.rows, w_gate.cols, w_gate.ty);
    if w_up.ty != ty
        || w_up.rows != n
        || w_up.cols != k
        || !decode_matvec_fits(w_gate)
        || !decode_glu_fits(act)
    {
        return Ok(false);
    }
    // The streaming kernel for long rows; else the row-block kernel.
    let aligned = [w_gate, w_up]
        .iter()
        .all(|w| (w.bytes.ptr() | w.row_bytes() as u64) % 16 == 0);
    let (kernel, grid, threads, shared) = match stream_plan(dev, tuning, ty, 2 * n, k, aligned) {
        Some(plan) => (plan.kernel, plan.grid, plan.block, plan.shared as u32),
        None => {
            let r = row_block_glu_rows(tuning, ty);
            let Some(kernel) = row_block_kernel(dev, tuning, ty, k, Epilogue::Glu, r) else {
                return Ok(false);
            };
            let grid = to_i32(n.div_ceil(r), "matmul n")? as u32;
            (kernel, grid, row_block_threads(dev, k), 0)
        }
    };
    let mut a = MatvecArgs::new(x, k, w_gate.row_bytes(), norm)?;
    need("matmul", "out", out, n, 4)?;
    a.set_mat(0, w_gate, out.ptr(), None)?;
    a.set_mat(1, w_up, 0, None)?;
    a.mode = (act == Activation::GeluTanh) as i32;
    if n == 0 {
        return Ok(true);
    }
    dev.launch(
        "matmul",
        &kernel,
        [grid, 1, 1],
        [threads, 1, 1],
        shared,
        &[Arg::from_struct(&a)],
    )?;
    Ok(true)
}

// ------------------------------------------------------------------------------------------
// The testing hook: one launch of the family on host arrays.

/// The norm of x in a `DecodeCase`.
pub enum DecodeNorm<'a> {
    None,
    /// RMS norm folded in by weight `[k]`.
    Weight(&'a [f32], f32),
    /// Handed over: x is already x * weight, and sum(x^2) is the sum of these floats.
    Parts(&'a [f32], f32),
}

/// The epilogue of a `DecodeCase`.
pub enum DecodeEpilogue<'a> {
    /// out_i = x @ w_i^T + bias_i (1 to 3 matrices).
    Store,
    /// out += x @ w^T + bias (one matrix; `out_init` its values before); `early`: loaded
    /// before the wait; `next_norm`: also the next norm's input (xw, per-block sums).
    Add {
        early: bool,
        next_norm: Option<&'a [f32]>,
    },
    /// out = act(x @ gate^T) * (x @ up^T) (weights: gate, up).
    Glu(Activation),
    /// q = rope(x @ wq^T + bq), k and v to row `pos` of caches of `n_ctx` rows (weights: q, k, v).
    QkvRope {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        params: RopeParams,
        freq_factors: Option<&'a [f32]>,
        dtype: KvDtype,
        n_ctx: usize,
        pos: usize,
    },
}

/// One decode matvec launch on host arrays (`matvec_decode_gguf`).
pub struct DecodeCase<'a> {
    /// `[k]`.
    pub x: &'a [f32],
    /// 1 to 3 matrices of one type and k, in the file's layout.
    pub weights: Vec<crate::ops::WeightView<'a>>,
    /// Per matrix, `[rows]` or None.
    pub biases: Vec<Option<&'a [f32]>>,
    /// `Add`: out's values before the launch, `[rows]`.
    pub out_init: Option<&'a [f32]>,
    pub norm: DecodeNorm<'a>,
    pub epilogue: DecodeEpilogue<'a>,
}

/// What a `DecodeCase` launch wrote.
#[derive(Debug, Default)]
pub struct DecodeResult {
    /// Store: each matrix's out; Add: out; Glu: out; QkvRope: q.
    pub outs: Vec<Vec<f32>>,
    /// Add with next_norm: out * next_norm, and the per-block sums of out^2.
    pub xw: Vec<f32>,
    pub parts: Vec<f32>,
    /// QkvRope: the whole caches `[n_ctx, kv_heads * head_dim]` as f32 (f16 widened).
    pub k_cache: Vec<f32>,
    pub v_cache: Vec<f32>,
    /// The kernel that ran.
    pub kernel: String,
}

/// Run one launch of the decode family (`tuning` choosing its form) on `case`: the testing
/// hook behind `_rocmforge.gpu_matvec` and the emulator tests. `Unsupported` where the family
/// does not take the case (its type, its shapes); the launch must be exactly one kernel.
pub fn matvec_decode_gguf(
    dev: &std::sync::Arc<GpuDevice>,
    tuning: &Tuning,
    case: &DecodeCase,
) -> Result<DecodeResult> {
    use crate::device::layout::to_device_layout;
    let op = "gpu_matvec";
    let k = case.x.len();
    let Some(first) = case.weights.first() else {
        return Err(Error::invalid(format!("{op}: no weight matrix")));
    };
    let want = match case.epilogue {
        DecodeEpilogue::Store => 1..=3,
        DecodeEpilogue::Add { .. } => 1..=1,
        DecodeEpilogue::Glu(_) => 2..=2,
        DecodeEpilogue::QkvRope { .. } => 3..=3,
    };
    if !want.contains(&case.weights.len())
        || case.weights.iter().any(|w| w.ty != first.ty || w.cols != k)
        || case.biases.len() > case.weights.len()
    {
        return Err(Error::invalid(format!(
            "{op}: {} matrices of types/lengths that do not fit the epilogue or x [{k}]",
            case.weights.len()
        )));
    }
    let upload = |v: &[f32]| DeviceBuffer::from_slice(dev, v, op);
    let xd = upload(case.x)?;
    let wd = case
        .weights
        .iter()
        .map(|w| DeviceBuffer::from_slice(dev, &to_device_layout(w.ty, k, w.bytes), op))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<DeviceWeight> = case
        .weights
        .iter()
        .zip(&wd)
        .map(|(w, bytes)| DeviceWeight {
            ty: w.ty,
            rows: w.rows,
            cols: k,
            bytes,
        })
        .collect();
    let bias_d = case
        .biases
        .iter()
        .map(|b| b.map(upload).transpose())
        .collect::<Result<Vec<_>>>()?;
    let bias = |i: usize| bias_d.get(i).and_then(|b| b.as_ref());
    let norm_d = match case.norm {
        DecodeNorm::None => None,
        DecodeNorm::Weight(w, eps) | DecodeNorm::Parts(w, eps) => Some((upload(w)?, w.len(), eps)),
    };
    let norm = norm_d.as_ref().map(|(buf, n, eps)| match case.norm {
        DecodeNorm::Weight(..) => NormIn::Weight(RmsNorm {
            weight: buf,
            eps: *eps,
        }),
        _ => NormIn::Parts {
            parts: buf,
            n: *n,
            eps: *eps,
        },
    });
    let read = |b: &DeviceBuffer, n: usize| -> Result<Vec<f32>> {
        let mut v = vec![0f32; n];
        b.read(&mut v, op)?;
        Ok(v)
    };
    let launches = dev.launch_count();
    let mut res = DecodeResult::default();
    let done = match &case.epilogue {
        DecodeEpilogue::Store | DecodeEpilogue::Add { .. } => {
            let mut outs = views
                .iter()
                .map(|w| match (case.out_init, &case.epilogue) {
                    (Some(init), DecodeEpilogue::Add { .. }) if init.len() == w.rows => {
                        upload(init)
                    }
                    (_, DecodeEpilogue::Add { .. }) => Err(Error::invalid(format!(
                        "{op}: add needs out's {} initial values",
                        w.rows
                    ))),
                    _ => DeviceBuffer::alloc(dev, w.rows.max(1) * 4, op),
                })
                .collect::<Result<Vec<_>>>()?;
            let (residual, next) = match case.epilogue {
                DecodeEpilogue::Add { early, next_norm } => (
                    if early {
                        Residual::AddEarly
                    } else {
                        Residual::Add
                    },
                    next_norm,
                ),
                _ => (Residual::Overwrite, None),
            };
            let n0 = views[0].rows;
            let next_d = next.map(upload).transpose()?;
            let mut xw = DeviceBuffer::alloc(dev, n0.max(1) * 4, op)?;
            let sums = DeviceBuffer::alloc(dev, n0.max(1) * 4, op)?;
            let mut norm_out = match (&next_d, next) {
                (Some(w), Some(host)) if host.len() == n0 => Some(NormOut {
                    weight: w,
                    xw: &mut xw,
                    parts: &sums,
                }),
                (Some(_), _) => {
                    return Err(Error::invalid(format!("{op}: next_norm needs {n0} values")))
                }
                _ => None,
            };
            let mut parts: Vec<Projection> = views
                .iter()
                .zip(outs.iter_mut())
                .enumerate()
                .map(|(i, (w, out))| Projection {
                    w: DeviceWeight {
                        bytes: w.bytes,
                        ..*w
                    },
                    bias: bias(i),
                    out,
                })
                .collect();
            let blocks = launch_matvec_multi_blocks(
                dev,
                tuning,
                &xd,
                &mut parts,
                residual,
                norm.as_ref(),
                norm_out.as_mut(),
            )?;
            drop(parts);
            if let Some(b) = blocks.filter(|_| next.is_some()) {
                res.xw = read(&xw, n0)?;
                res.parts = read(&sums, b)?;
            }
            for (o, w) in outs.iter().zip(&views) {
                res.outs.push(read(o, w.rows)?);
            }
            blocks.is_some()
        }
        DecodeEpilogue::Glu(act) => {
            let n = views[0].rows;
            let mut out = DeviceBuffer::alloc(dev, n.max(1) * 4, op)?;
            let done = launch_matvec_glu(
                dev,
                tuning,
                &xd,
                &views[0],
                &views[1],
                &mut out,
                *act,
                norm.as_ref(),
            )?;
            res.outs.push(read(&out, n)?);
            done
        }
        DecodeEpilogue::QkvRope {
            heads,
            kv_heads,
            head_dim,
            params,
            freq_factors,
            dtype,
            n_ctx,
            pos,
        } => {
            let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
            if *pos >= *n_ctx {
                return Err(Error::invalid(format!(
                    "{op}: position {pos} outside {n_ctx} rows"
                )));
            }
            let mut q = DeviceBuffer::alloc(dev, nq.max(1) * 4, op)?;
            let cache_bytes = (n_ctx * nkv).max(1) * dtype.bytes();
            let mut kc = DeviceBuffer::zeros(dev, cache_bytes, op)?;
            let mut vc = DeviceBuffer::zeros(dev, cache_bytes, op)?;
            let pos_d = DeviceBuffer::from_slice(dev, &[*pos as i32], op)?;
            let ff = freq_factors.map(upload).transpose()?;
            let mut rope = QkvRope {
                heads: *heads,
                kv_heads: *kv_heads,
                head_dim: *head_dim,
                params,
                freq_factors: ff.as_ref(),
                k_cache: &mut kc,
                v_cache: &mut vc,
                dtype: *dtype,
                pos: (&pos_d, 0),
            };
            let w = [0, 1, 2].map(|i| DeviceWeight {
                bytes: views[i].bytes,
                ..views[i]
            });
            let done = launch_matvec_qkv_rope(
                dev,
                tuning,
                &xd,
                norm.as_ref(),
                w,
                [bias(0), bias(1), bias(2)],
                &mut q,
                &mut rope,
            )?;
            res.outs.push(read(&q, nq)?);
            let widen = |b: &DeviceBuffer| -> Result<Vec<f32>> {
                Ok(match dtype {
                    KvDtype::F32 => read(b, n_ctx * nkv)?,
                    KvDtype::F16 => {
                        let mut h = vec![0u16; n_ctx * nkv];
                        b.read(&mut h, op)?;
                        h.iter()
                            .map(|&v| half::f16::from_bits(v).to_f32())
                            .collect()
                    }
                })
            };
            res.k_cache = widen(&kc)?;
            res.v_cache = widen(&vc)?;
            done
        }
    };
    if !done {
        return Err(Error::unsupported(format!(
            "{op}: the decode matvec family does not take this launch ({} [{}, {k}])",
            first.ty, first.rows
        )));
    }
    let n = dev.launch_count() - launches;
    if n != 1 {
        return Err(Error::runtime(format!("{op}: {n} launches, expected one")));
    }
    res.kernel = dev.last_kernel_name();
    Ok(res)
}
