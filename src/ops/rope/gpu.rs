//! GPU launch of `kernels/rope.hip`.

use std::sync::Arc;

use crate::backend::gpu::device::{need, to_i32};
use crate::backend::gpu::{kernels, Arg, DeviceBuffer, GpuDevice};
use crate::backend::RopeParams;
use crate::error::{Error, Result};

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
