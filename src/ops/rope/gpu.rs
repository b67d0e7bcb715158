//! GPU launch of `kernels/rope.hip`.

use std::sync::Arc;

use crate::device::gpu::{need, to_i32, Arg, DeviceBuffer, GpuDevice};
use crate::device::kernels;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::ops::kv_cache::gpu::Row;
use crate::ops::rope::RopeParams;

/// Where each token's position comes from.
pub enum Positions<'a> {
    /// int32 `[seq]` on the device.
    Table(&'a DeviceBuffer),
    /// int32 `[seq]` at this byte offset of the buffer (a decode step's position).
    TableAt(&'a DeviceBuffer, usize),
    /// Token t is at `pos0 + t`.
    From(usize),
}

/// Rotate `x [tokens, heads, head_dim]` in place (tokens = batch * seq; token t of each
/// sequence at its position), see `kernels/rope.hip`.
#[allow(clippy::too_many_arguments)]
pub fn launch_rope(
    dev: &GpuDevice,
    x: &mut DeviceBuffer,
    tokens: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    positions: Positions,
    params: &RopeParams,
    freq_factors: Option<&DeviceBuffer>,
) -> Result<()> {
    need("rope", "x", x, tokens * heads * head_dim, 4)?;
    if let Some(ff) = freq_factors {
        need("rope", "freq_factors", ff, params.n_rot / 2, 4)?;
    }
    if tokens == 0 || heads == 0 || params.n_rot < 2 {
        return Ok(());
    }
    if heads > 65535 {
        return Err(Error::invalid(format!(
            "rope: heads = {heads} is over the GPU grid limit of 65535"
        )));
    }
    let (pos_ptr, pos0) = match positions {
        Positions::Table(t) => {
            need("rope", "positions", t, seq, 4)?;
            (t.arg(), 0)
        }
        Positions::TableAt(t, offset) => {
            need("rope", "positions", t, offset / 4 + seq, 4)?;
            (Arg::Ptr(t.ptr() + offset as u64), 0)
        }
        Positions::From(p) => {
            to_i32(p + seq, "rope position")?;
            (Arg::Ptr(0), p as i32)
        }
    };
    dev.launch(
        "rope",
        &kernels::rope(),
        [to_i32(tokens, "rope tokens")? as u32, heads as u32, 1],
        [64, 1, 1],
        0,
        &[
            x.arg(),
            pos_ptr,
            freq_factors.map(|f| f.arg()).unwrap_or(Arg::Ptr(0)),
            Arg::I32(to_i32(seq, "rope seq")?),
            Arg::I32(heads as i32),
            Arg::I32(to_i32(head_dim, "rope head_dim")?),
            Arg::I32(to_i32(params.n_rot, "rope n_rot")?),
            Arg::I32(pos0),
            Arg::F32(params.theta),
            Arg::I32(params.neox as i32),
        ],
    )
}

/// The tensors of one attention block's `launch_rope_kv`: q `[t, heads, head_dim]` and
/// k `[t, kv_heads, head_dim]` (turned in place), v `[t, kv_heads, head_dim]`, and the layer's
/// K and V caches `[n_ctx, kv_heads * head_dim]` of `dtype`.
pub struct RopeKv<'a> {
    pub q: &'a mut DeviceBuffer,
    pub k: &'a mut DeviceBuffer,
    pub v: &'a DeviceBuffer,
    pub k_cache: &'a mut DeviceBuffer,
    pub v_cache: &'a mut DeviceBuffer,
    pub dtype: KvDtype,
}

/// Rope of q and k for `t` tokens at positions `first..` and the append of their k and v rows
/// to the caches at rows `first..`, in one launch (`kernels/rope.hip`, `rope_kv_*`): the same
/// results, bit for bit, as `launch_rope` on q and k and `launch_kv_append_at` of k and v.
/// For `Row::At` the rows are checked against the caches; for `Row::Device` the caller checks.
#[allow(clippy::too_many_arguments)]
pub fn launch_rope_kv(
    dev: &GpuDevice,
    b: RopeKv,
    t: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    first: Row,
    params: &RopeParams,
    freq_factors: Option<&DeviceBuffer>,
) -> Result<()> {
    let op = "rope_kv";
    let kv_row = kv_heads * head_dim;
    need(op, "q", b.q, t * heads * head_dim, 4)?;
    need(op, "k", b.k, t * kv_row, 4)?;
    need(op, "v", b.v, t * kv_row, 4)?;
    if let Some(ff) = freq_factors {
        need(op, "freq_factors", ff, params.n_rot / 2, 4)?;
    }
    let elem = b.dtype.bytes();
    let (pos0, pos_dev) = match first {
        Row::At(p) => (p, Arg::Ptr(0)),
        Row::Device(buf, offset) => {
            need(op, "position", buf, offset / 4 + 1, 4)?;
            (0, Arg::Ptr(buf.ptr() + offset as u64))
        }
    };
    need(op, "k_cache", b.k_cache, (pos0 + t) * kv_row, elem)?;
    need(op, "v_cache", b.v_cache, (pos0 + t) * kv_row, elem)?;
    if params.n_rot > head_dim || params.n_rot % 2 != 0 {
        return Err(Error::invalid(format!(
            "{op}: n_rot = {} must be even and at most head_dim = {head_dim}",
            params.n_rot
        )));
    }
    if t == 0 || kv_row == 0 {
        return Ok(());
    }
    if heads + kv_heads > 65535 {
        return Err(Error::invalid(format!(
            "{op}: heads + kv_heads = {} is over the GPU grid limit of 65535",
            heads + kv_heads
        )));
    }
    to_i32(pos0 + t, "rope_kv position")?;
    dev.launch(
        op,
        &kernels::rope_kv(b.dtype),
        [
            to_i32(t, "rope_kv tokens")? as u32,
            (heads + kv_heads) as u32,
            1,
        ],
        [64, 1, 1],
        0,
        &[
            b.q.arg(),
            b.k.arg(),
            b.v.arg(),
            b.k_cache.arg(),
            b.v_cache.arg(),
            pos_dev,
            freq_factors.map(|f| f.arg()).unwrap_or(Arg::Ptr(0)),
            Arg::I32(heads as i32),
            Arg::I32(kv_heads as i32),
            Arg::I32(to_i32(head_dim, "rope_kv head_dim")?),
            Arg::I32(params.n_rot as i32),
            Arg::I32(pos0 as i32),
            Arg::F32(params.theta),
            Arg::I32(params.neox as i32),
        ],
    )
}

/// The op `rope` on host arrays: `x [batch, seq, heads, head_dim]`, positions `[seq]`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    dev: &Arc<GpuDevice>,
    x: &mut [f32],
    batch: usize,
    positions: &[i64],
    heads: usize,
    head_dim: usize,
    params: &RopeParams,
    freq_factors: Option<&[f32]>,
) -> Result<()> {
    let seq = positions.len();
    let n = batch * seq * heads * head_dim;
    let pos32: Vec<i32> = positions
        .iter()
        .map(|&p| {
            i32::try_from(p).map_err(|_| {
                Error::invalid(format!(
                    "rope: position {p} is outside the GPU's int32 range"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let mut xd = DeviceBuffer::from_slice(dev, &x[..n], "rope")?;
    let pd = DeviceBuffer::from_slice(dev, &pos32, "rope")?;
    let ffd = freq_factors
        .map(|f| DeviceBuffer::from_slice(dev, f, "rope"))
        .transpose()?;
    launch_rope(
        dev,
        &mut xd,
        batch * seq,
        seq,
        heads,
        head_dim,
        Positions::Table(&pd),
        params,
        ffd.as_ref(),
    )?;
    xd.read(&mut x[..n], "rope")
}
