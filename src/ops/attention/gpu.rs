//! GPU launch of `kernels/attention.hip`: the unfused steps and flash attention.

use std::any::TypeId;
use std::sync::Arc;

use half::f16;

use super::AttentionShape;
use crate::device::gpu::{flat_grid, need, to_i32, Arg, DeviceBuffer, GpuDevice, Temp, FLAT_BLOCK};
use crate::device::kernels::{self, FlashShape, FLASH_THREADS};
use crate::device::tuning::DecodeAttention;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::ops::Element;

fn dims(s: &AttentionShape, op: &str) -> Result<[Arg; 5]> {
    Ok([
        Arg::I32(to_i32(s.seq_q, &format!("{op} seq_q"))?),
        Arg::I32(to_i32(s.seq_k, &format!("{op} seq_k"))?),
        Arg::I32(to_i32(s.heads, &format!("{op} heads"))?),
        Arg::I32(to_i32(s.kv_heads, &format!("{op} kv_heads"))?),
        Arg::I32(to_i32(s.head_dim, &format!("{op} head_dim"))?),
    ])
}

fn planes(s: &AttentionShape, op: &str) -> Result<u32> {
    let p = s.batch * s.heads;
    if p > 65535 {
        return Err(Error::invalid(format!(
            "{op}: batch * heads = {p} is over the GPU grid limit of 65535"
        )));
    }
    Ok(p as u32)
}

/// `scores [B, H, Sq, Sk] = scale * q k^T`.
pub fn launch_qkt_matmul(
    dev: &GpuDevice,
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    s: &AttentionShape,
    scale: f32,
    scores: &mut DeviceBuffer,
) -> Result<()> {
    need("qkt_matmul", "q", q, s.q_len(), 4)?;
    need("qkt_matmul", "k", k, s.kv_len(), 4)?;
    need("qkt_matmul", "scores", scores, s.scores_len(), 4)?;
    let [a, b, c, d, e] = dims(s, "qkt_matmul")?;
    let grid = [
        s.seq_k.div_ceil(32) as u32,
        s.seq_q.div_ceil(32) as u32,
        planes(s, "qkt_matmul")?,
    ];
    dev.launch(
        "qkt_matmul",
        &kernels::qkt_matmul(),
        grid,
        [256, 1, 1],
        0,
        &[
            q.arg(),
            k.arg(),
            scores.arg(),
            a,
            b,
            c,
            d,
            e,
            Arg::F32(scale),
        ],
    )
}

/// `out [B, Sq, H, D] = weights [B, H, Sq, Sk] v`.
pub fn launch_weighted_matmul(
    dev: &GpuDevice,
    w: &DeviceBuffer,
    v: &DeviceBuffer,
    s: &AttentionShape,
    out: &mut DeviceBuffer,
) -> Result<()> {
    need("weighted_matmul", "weights", w, s.scores_len(), 4)?;
    need("weighted_matmul", "v", v, s.kv_len(), 4)?;
    need("weighted_matmul", "out", out, s.q_len(), 4)?;
    let [a, b, c, d, e] = dims(s, "weighted_matmul")?;
    let grid = [
        s.head_dim.div_ceil(32) as u32,
        s.seq_q.div_ceil(32) as u32,
        planes(s, "weighted_matmul")?,
    ];
    dev.launch(
        "weighted_matmul",
        &kernels::weighted_matmul(),
        grid,
        [256, 1, 1],
        0,
        &[w.arg(), v.arg(), out.arg(), a, b, c, d, e],
    )
}

/// `-inf` where key j > query i + seq_k - seq_q, over `planes` (batch * heads) score
/// matrices `[seq_q, seq_k]`.
pub fn launch_causal_mask(
    dev: &GpuDevice,
    scores: &mut DeviceBuffer,
    planes: usize,
    seq_q: usize,
    seq_k: usize,
) -> Result<()> {
    let n = planes * seq_q * seq_k;
    need("causal_mask", "scores", scores, n, 4)?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        "causal_mask",
        &kernels::causal_mask(),
        flat_grid(n),
        [FLAT_BLOCK, 1, 1],
        0,
        &[
            scores.arg(),
            Arg::I64(planes as i64),
            Arg::I32(to_i32(seq_q, "causal_mask seq_q")?),
            Arg::I32(to_i32(seq_k, "causal_mask seq_k")?),
        ],
    )
}

/// Softmax of each of `rows` rows of `cols`, in place.
pub fn launch_softmax(
    dev: &GpuDevice,
    x: &mut DeviceBuffer,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("softmax", "x", x, rows * cols, 4)?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    dev.launch(
        "softmax",
        &kernels::softmax(),
        [to_i32(rows, "softmax rows")? as u32, 1, 1],
        [256, 1, 1],
        0,
        &[x.arg(), x.arg(), Arg::I32(to_i32(cols, "softmax cols")?)],
    )
}

/// Groups of 32 lanes in an `attn_decode_head_*` block (attention.hip's merge holds 8).
const DECODE_HEAD_GROUPS: usize = 8;
/// Most keys `attn_decode_head_*` takes: 4 rounds of 32 keys a group.
const DECODE_HEAD_MAX_KEYS: usize = DECODE_HEAD_GROUPS * 32 * 4;
/// Most keys the default takes `attn_decode_head_*` for: 2 rounds a group. Each round past
/// the combine launch it saves costs a block-per-head kernel more than the kv-head kernel's
/// split keys (docs/perf/decode-attention-head-block.md).
const DECODE_HEAD_AUTO_KEYS: usize = DECODE_HEAD_GROUPS * 32 * 2;

/// The decode kernels (one query token) where they have the head size and at most 8 query
/// heads share a kv head (`Tuning::decode_attention`):
/// - `attn_decode_*` (a block per kv head and key split, then `flash_attn_combine` where the
///   keys are split: docs/perf/decode-attention-kernel.md);
/// - `attn_decode_head_*` (a block per query head, its 8 groups of 32 lanes split the keys and
///   merge in shared memory: one launch, no partials) for caches of up to
///   `DECODE_HEAD_AUTO_KEYS` rows (docs/perf/decode-attention-head-block.md).
/// `keys`: the most keys the query sees (`key_span`).
fn decode_kernel(
    s: &AttentionShape,
    keys: usize,
    kv: KvDtype,
    mode: DecodeAttention,
) -> Option<(bool, kernels::Kernel)> {
    let group = s.heads / s.kv_heads;
    if mode == DecodeAttention::Flash || s.seq_q != 1 || group > 8 {
        return None;
    }
    let head_keys = match mode {
        DecodeAttention::Head => DECODE_HEAD_MAX_KEYS,
        DecodeAttention::Auto => DECODE_HEAD_AUTO_KEYS,
        _ => 0,
    };
    if keys <= head_keys {
        kernels::attn_decode_head(s.head_dim, kv).map(|k| (true, k))
    } else {
        kernels::attn_decode(s.head_dim, kv).map(|k| (false, k))
    }
}

/// The most keys one block of queries sees: `seq_k`, or with a sliding window the `window`
/// keys of its first query and one more for each later query (`window + seq_q - 1` at most).
pub fn key_span(s: &AttentionShape, window: Option<usize>) -> usize {
    window.map_or(s.seq_k, |w| s.seq_k.min(w.saturating_add(s.seq_q - 1)))
}

/// How a flash-attention call is cut up.
#[derive(Clone, Copy, Debug)]
pub struct FlashPlan {
    pub shape: FlashShape,
    /// The shape's tile runs on AMD matrix cores (`kernels::flash_matrix`): 4 waves, f16
    /// shared tiles (`flash_matrix_shared_bytes`).
    pub matrix: bool,
    /// Key ranges processed by separate blocks, merged by `flash_attn_combine` (1: none);
    /// they cut the keys a block sees (`key_span`), from its first query's window start.
    pub splits: usize,
    pub keys_per_split: usize,
}

/// Largest scratch (bytes) the split-key partials may take.
const MAX_PARTIAL_BYTES: usize = 256 << 20;

/// The plan for shape `s`. With `device_keys` (`KeyCount::Device`: `s.seq_k` is only the most
/// keys a launch may see), the splits may be as short as one key tile: the kernel then spreads
/// the keys it actually sees over all the splits (attention.hip), so that a short cache is still
/// read by many blocks, one tile each, instead of a few blocks walking their tiles in turn.
/// With a `window`, only the keys a block sees are split (`key_span`).
pub fn flash_plan(
    dev: &GpuDevice,
    s: &AttentionShape,
    device_keys: bool,
    window: Option<usize>,
    matrix_cores: bool,
) -> Result<FlashPlan> {
    let dmax = FlashShape::dmax_for(s.head_dim).ok_or_else(|| {
        Error::unsupported(format!(
            "flash_attention on the GPU supports head_dim up to 256, got {}",
            s.head_dim
        ))
    })?;
    let props = dev.runtime().props();
    let rows = s.seq_q * (s.heads / s.kv_heads);
    // Prefill on AMD matrix cores where the caller takes them (`matrix_cores`: the model's
    // attention, not the op's, which stays float32 as on NVIDIA): the 64-row tile on WMMA /
    // MFMA (its shared memory always fits an AMD workgroup's 64 KiB).
    let matrix_shape = FlashShape {
        dmax,
        rows_per_thread: 4,
        cols_per_thread: kernels::flash_matrix_cols(dmax),
    };
    let matrix = matrix_cores
        && dev.amd_matrix_cores()
        && rows > 16
        && flash_matrix_shared_bytes(matrix_shape) <= props.max_shared_per_block;
    let tiles: Vec<(u32, u32)> = if matrix {
        vec![(4, matrix_shape.cols_per_thread)]
    } else if rows <= 16 {
        vec![(1, 2)] // decode: one row block, short key tiles
    } else {
        FlashShape::TILES.to_vec()
    };
    let shape = tiles
        .iter()
        .map(|&(r, c)| FlashShape { dmax, rows_per_thread: r, cols_per_thread: c })
        .find(|t| matrix || t.shared_bytes() <= props.max_shared_per_block)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "flash_attention: head_dim {} needs more shared memory than this GPU's {} bytes per block",
                s.head_dim, props.max_shared_per_block
            ))
        })?;
    // Few blocks and many keys: split the keys so that every multiprocessor gets work.
    let blocks = rows.div_ceil(shape.block_rows() as usize) * s.batch * s.kv_heads;
    let target = 2 * props.multiprocessors.max(1) as usize;
    let bk = shape.block_keys() as usize;
    let keys = key_span(s, window);
    let mut splits = 1;
    let min_split_keys = if device_keys { bk } else { 4 * bk };
    if blocks < target && keys >= 2 * min_split_keys {
        splits = target.div_ceil(blocks).min(keys / min_split_keys).max(1);
        let per_split_bytes = s.batch * s.kv_heads * rows * (dmax as usize + 2) * 4;
        splits = splits
            .min((MAX_PARTIAL_BYTES / per_split_bytes.max(1)).max(1))
            .min(65535);
    }
    let keys_per_split = keys.div_ceil(splits).div_ceil(bk) * bk;
    let splits = keys.div_ceil(keys_per_split);
    Ok(FlashPlan {
        shape,
        matrix,
        splits,
        keys_per_split,
    })
}

/// Dynamic shared memory of the matrix-core flash kernel with tile `shape` (attention.hip,
/// flash_attn_mx_*: f16 Q [BQ][DMAX + 8], one K [BK][DMAX + 8] or V^T [DMAX][BK + 8] tile,
/// P [BQ][BK + 8]).
pub fn flash_matrix_shared_bytes(shape: FlashShape) -> usize {
    let (bq, bk, d) = (
        shape.block_rows() as usize,
        shape.block_keys() as usize,
        shape.dmax as usize,
    );
    2 * (bq * (d + 8) + (bk * (d + 8)).max(d * (bk + 8)) + bq * (bk + 8))
}

/// Bytes of the split-K partial outputs (the first part of the scratch; then 2 floats a row).
fn partial_o_bytes(s: &AttentionShape, plan: &FlashPlan) -> usize {
    plan.splits
        * s.batch
        * s.kv_heads
        * s.seq_q
        * (s.heads / s.kv_heads)
        * plan.shape.dmax as usize
        * 4
}

/// Device scratch `launch_flash_attention_with` takes for shape `s` (0 without a key split;
/// `device_keys`, `window`: see `flash_plan`; a window never takes more than none).
pub fn flash_scratch_bytes(
    dev: &GpuDevice,
    s: &AttentionShape,
    device_keys: bool,
    window: Option<usize>,
    matrix_cores: bool,
) -> Result<usize> {
    let plan = flash_plan(dev, s, device_keys, window, matrix_cores)?;
    if plan.splits == 1 {
        return Ok(0);
    }
    let partial_rows = plan.splits * s.batch * s.kv_heads * s.seq_q * (s.heads / s.kv_heads);
    Ok(partial_o_bytes(s, &plan) + partial_rows * 2 * 4)
}

/// Fused attention: `out [B, Sq, H, D] = softmax(q k^T * scale [+ causal mask]) v`, k and v
/// `[B, kv_rows, KVH, D]` of `kv` type, only rows `< seq_k` read; with a `window` (causal),
/// only the keys of each query's window (`super::flash_attention`).
#[allow(clippy::too_many_arguments)]
pub fn launch_flash_attention(
    dev: &GpuDevice,
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    v: &DeviceBuffer,
    kv: KvDtype,
    kv_rows: usize,
    s: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let keys = KeyCount::Host;
    launch_flash_attention_with(
        dev,
        q,
        k,
        v,
        kv,
        kv_rows,
        s,
        causal,
        scale,
        window,
        out,
        keys,
        Temp::Shared,
        dev.tuning().decode_attention,
        false,
    )
}

/// How many keys a flash-attention launch reads.
#[derive(Clone, Copy)]
pub enum KeyCount<'a> {
    /// The shape's `seq_k`.
    Host,
    /// `n_past + seq_q`, with `n_past` an int32 read by the kernels at this byte offset of the
    /// buffer (a decode step's position); the shape's `seq_k` is the most it can be (the
    /// cache's rows), which sizes the split-key grid, so that one launch serves every
    /// position. The caller checks `n_past + seq_q <= seq_k`.
    Device(&'a DeviceBuffer, usize),
}

/// `launch_flash_attention` with the number of keys given as a `KeyCount` and the split-key
/// partials in `temp`. With `KeyCount::Device`, the kernels find a window's first key from
/// the key count they read (`max(0, n_keys - window)` for a decode step).
#[allow(clippy::too_many_arguments)]
pub fn launch_flash_attention_with(
    dev: &GpuDevice,
    q: &DeviceBuffer,
    k: &DeviceBuffer,
    v: &DeviceBuffer,
    kv: KvDtype,
    kv_rows: usize,
    s: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut DeviceBuffer,
    keys: KeyCount,
    temp: Temp,
    mode: DecodeAttention,
    matrix_cores: bool,
) -> Result<()> {
    let op = "flash_attention";
    super::check_window(op, causal, window)?;
    // A window of at least seq_k keys (the most there can be) hides none: plain causal.
    let window = window.filter(|&w| w < s.seq_k);
    let n_past = match keys {
        KeyCount::Host => Arg::Ptr(0),
        KeyCount::Device(buf, offset) => {
            need(op, "n_past", buf, offset / 4 + 1, 4)?;
            Arg::Ptr(buf.ptr() + offset as u64)
        }
    };
    let elem = kv.bytes();
    need(op, "q", q, s.q_len(), 4)?;
    let kv_need =
        s.batch * kv_rows * s.kv_heads * s.head_dim - (kv_rows - s.seq_k) * s.kv_heads * s.head_dim;
    need(op, "k", k, kv_need, elem)?;
    need(op, "v", v, kv_need, elem)?;
    need(op, "out", out, s.q_len(), 4)?;
    let device_keys = matches!(keys, KeyCount::Device(..));
    let plan = flash_plan(dev, s, device_keys, window, matrix_cores)?;
    let rows = s.seq_q * (s.heads / s.kv_heads);
    let bkv = s.batch * s.kv_heads;
    if bkv > 65535 {
        return Err(Error::invalid(format!(
            "{op}: batch * kv_heads = {bkv} is over the GPU grid limit of 65535"
        )));
    }
    let grid = [
        rows.div_ceil(plan.shape.block_rows() as usize) as u32,
        bkv as u32,
        plan.splits as u32,
    ];
    let shared = if plan.matrix {
        flash_matrix_shared_bytes(plan.shape)
    } else {
        plan.shape.shared_bytes()
    } as u32;
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let [a, b, c, d, e] = dims(s, op)?;
    let (rows_arg, scale_arg, causal_arg) = (
        Arg::I64(kv_rows as i64),
        Arg::F32(scale_log2),
        Arg::I32(causal as i32),
    );
    // The kernels' window: 0 for none (window < seq_k fits an int32).
    let window_arg = Arg::I32(window.unwrap_or(0) as i32);
    let decode = decode_kernel(s, key_span(s, window), kv, mode);
    // attn_decode_head: every key in one block a head, no partials.
    let plan = match decode {
        Some((true, _)) => FlashPlan {
            splits: 1,
            keys_per_split: key_span(s, window),
            ..plan
        },
        _ => plan,
    };
    let kps_arg = Arg::I32(to_i32(
        plan.keys_per_split,
        "flash_attention keys per split",
    )?);
    let (kernel, grid, block, shared) = match &decode {
        // attn_decode: grid (B * KVH, splits), 32 lanes a query head of the kv head, in whole
        // warps (the lanes past the heads idle).
        Some((false, kernel)) => {
            let warp = dev.runtime().props().warp_size.max(32);
            let lanes = 32 * (s.heads / s.kv_heads) as u32;
            (
                kernel.clone(),
                [bkv as u32, plan.splits as u32, 1],
                [lanes.div_ceil(warp) * warp, 1, 1],
                0,
            )
        }
        // attn_decode_head: grid (B * H), 8 groups of 32 lanes.
        Some((true, kernel)) => (
            kernel.clone(),
            [(s.batch * s.heads) as u32, plan.splits as u32, 1],
            [(DECODE_HEAD_GROUPS * 32) as u32, 1, 1],
            0,
        ),
        // AMD matrix cores: 4 waves.
        None if plan.matrix => (
            kernels::flash_matrix(plan.shape.dmax, kv),
            grid,
            [4 * dev.runtime().props().warp_size, 1, 1],
            shared,
        ),
        None => (
            kernels::flash(plan.shape, kv),
            grid,
            [FLASH_THREADS, 1, 1],
            shared,
        ),
    };
    // The kernel's arguments with these partial-output pointers.
    let args_with = |part_o: u64, part_ml: u64| -> Vec<Arg> {
        let head = [
            q.arg(),
            k.arg(),
            v.arg(),
            out.arg(),
            Arg::Ptr(part_o),
            Arg::Ptr(part_ml),
        ];
        let mut args = head.to_vec();
        match &decode {
            // attn_decode: no causal flag (one query sees every key), the partials' row length.
            Some(_) => args.extend([
                b,
                c,
                d,
                rows_arg,
                scale_arg,
                window_arg,
                kps_arg,
                Arg::I32(plan.shape.dmax as i32),
                n_past,
            ]),
            None => args.extend([
                a, b, c, d, e, rows_arg, scale_arg, causal_arg, window_arg, kps_arg, n_past,
            ]),
        }
        args
    };
    if plan.splits == 1 {
        return dev.launch(op, &kernel, grid, block, shared, &args_with(0, 0));
    }
    let o_bytes = partial_o_bytes(s, &plan);
    temp.with(
        dev,
        flash_scratch_bytes(dev, s, device_keys, window, matrix_cores)?,
        op,
        |part_o| {
            let part_ml = part_o + o_bytes as u64;
            let args = args_with(part_o, part_ml);
            dev.launch(op, &kernel, grid, block, shared, &args)?;
            dev.launch(
                op,
                &kernels::flash_combine(),
                [rows as u32, bkv as u32, 1],
                [128, 1, 1],
                (plan.splits * 2 * 4) as u32,
                &[
                    Arg::Ptr(part_o),
                    Arg::Ptr(part_ml),
                    out.arg(),
                    Arg::I32(plan.splits as i32),
                    a,
                    c,
                    d,
                    e,
                    Arg::I32(plan.shape.dmax as i32),
                ],
            )
        },
    )
}

// ------------------------------------------------------------------------- host-array ops

pub fn qkt_matmul(
    dev: &Arc<GpuDevice>,
    q: &[f32],
    k: &[f32],
    s: &AttentionShape,
    scale: f32,
    scores: &mut [f32],
) -> Result<()> {
    let qd = DeviceBuffer::from_slice(dev, &q[..s.q_len()], "qkt_matmul")?;
    let kd = DeviceBuffer::from_slice(dev, &k[..s.kv_len()], "qkt_matmul")?;
    let mut sd = DeviceBuffer::alloc(dev, s.scores_len() * 4, "qkt_matmul")?;
    launch_qkt_matmul(dev, &qd, &kd, s, scale, &mut sd)?;
    sd.read(&mut scores[..s.scores_len()], "qkt_matmul")
}

pub fn causal_mask(
    dev: &Arc<GpuDevice>,
    scores: &mut [f32],
    planes: usize,
    seq_q: usize,
    seq_k: usize,
) -> Result<()> {
    let n = planes * seq_q * seq_k;
    let mut sd = DeviceBuffer::from_slice(dev, &scores[..n], "causal_mask")?;
    launch_causal_mask(dev, &mut sd, planes, seq_q, seq_k)?;
    sd.read(&mut scores[..n], "causal_mask")
}

pub fn softmax(dev: &Arc<GpuDevice>, x: &mut [f32], rows: usize, cols: usize) -> Result<()> {
    let n = rows * cols;
    let mut xd = DeviceBuffer::from_slice(dev, &x[..n], "softmax")?;
    launch_softmax(dev, &mut xd, rows, cols)?;
    xd.read(&mut x[..n], "softmax")
}

pub fn weighted_matmul(
    dev: &Arc<GpuDevice>,
    weights: &[f32],
    v: &[f32],
    s: &AttentionShape,
    out: &mut [f32],
) -> Result<()> {
    let wd = DeviceBuffer::from_slice(dev, &weights[..s.scores_len()], "weighted_matmul")?;
    let vd = DeviceBuffer::from_slice(dev, &v[..s.kv_len()], "weighted_matmul")?;
    let mut od = DeviceBuffer::alloc(dev, s.q_len() * 4, "weighted_matmul")?;
    launch_weighted_matmul(dev, &wd, &vd, s, &mut od)?;
    od.read(&mut out[..s.q_len()], "weighted_matmul")
}

/// k, v: f32 or f16 host arrays `[B, Sk, KVH, D]`.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention<T: Element>(
    dev: &Arc<GpuDevice>,
    q: &[f32],
    k: &[T],
    v: &[T],
    s: &AttentionShape,
    causal: bool,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) -> Result<()> {
    let kv = if TypeId::of::<T>() == TypeId::of::<f32>() {
        KvDtype::F32
    } else if TypeId::of::<T>() == TypeId::of::<f16>() {
        KvDtype::F16
    } else {
        return Err(Error::invalid_type(
            "flash_attention: k and v must be f32 or f16 on the GPU",
        ));
    };
    let elem = std::mem::size_of::<T>();
    let n = s.kv_len();
    // SAFETY: T is f32 or f16 (checked above): plain values of `elem` bytes.
    let kb = unsafe { std::slice::from_raw_parts(k.as_ptr() as *const u8, n * elem) };
    let vb = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, n * elem) };
    let qd = DeviceBuffer::from_slice(dev, &q[..s.q_len()], "flash_attention")?;
    let kd = DeviceBuffer::from_slice(dev, kb, "flash_attention")?;
    let vd = DeviceBuffer::from_slice(dev, vb, "flash_attention")?;
    let mut od = DeviceBuffer::alloc(dev, s.q_len() * 4, "flash_attention")?;
    launch_flash_attention(
        dev, &qd, &kd, &vd, kv, s.seq_k, s, causal, scale, window, &mut od,
    )?;
    od.read(&mut out[..s.q_len()], "flash_attention")
}
