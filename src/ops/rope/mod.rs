//! Rotary position embedding (`rope`), both conventions, with Llama 3 frequency factors.

pub mod cpu;
pub mod gpu;

use super::{check_len, check_nonzero, product};
use crate::device::Device;
use crate::error::{Error, Result};

/// Rotary embedding parameters of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Base of the frequencies (`rope.freq_base`).
    pub theta: f32,
    /// false: rotate pairs (2i, 2i+1) (GGUF llama); true: rotate halves (i, i + n/2) (qwen2).
    pub neox: bool,
    /// Number of leading dims of each head that are rotated (usually head_dim).
    pub n_rot: usize,
}

/// Rotate `x [batch, seq, heads, head_dim]` in place, token t at position `positions[t]`
/// (seq = positions.len(), batch = x's length / (seq * heads * head_dim) rows are all turned).
///
/// angle(t, i) = positions[t] * theta^(-2i / n_rot) / freq_factors[i], for i < n_rot / 2;
/// `params.neox` false rotates pairs (2i, 2i + 1), true rotates halves (i, i + n_rot / 2);
/// dims from `n_rot` on pass through. `freq_factors`: `[n_rot / 2]` (Llama 3 `rope_freqs`).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    device: &Device,
    x: &mut [f32],
    batch: usize,
    positions: &[i64],
    heads: usize,
    head_dim: usize,
    params: &RopeParams,
    freq_factors: Option<&[f32]>,
) -> Result<()> {
    check_nonzero("rope", "heads", heads)?;
    check_nonzero("rope", "head_dim", head_dim)?;
    check_nonzero("rope", "positions length", positions.len())?;
    let n_rot = params.n_rot;
    if n_rot == 0 || n_rot % 2 != 0 || n_rot > head_dim {
        return Err(Error::invalid(format!(
            "rope: the rotated dims n_rot={n_rot} must be even, at least 2 and at most head_dim={head_dim}"
        )));
    }
    if !(params.theta.is_finite() && params.theta > 0.0) {
        return Err(Error::invalid(format!(
            "rope: theta must be finite and > 0, got {}",
            params.theta
        )));
    }
    if let Some(ff) = freq_factors {
        if ff.len() != n_rot / 2 {
            return Err(Error::invalid(format!(
                "rope: freq_factors has {} values, expected n_rot / 2 = {}",
                ff.len(),
                n_rot / 2
            )));
        }
        if let Some(bad) = ff.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(Error::invalid(format!(
                "rope: freq_factors must be finite and > 0, found {bad}"
            )));
        }
    }
    let n = product("rope", "x", &[batch, positions.len(), heads, head_dim])?;
    check_len("rope", "x", x.len(), n)?;
    match device {
        Device::Cpu => cpu::rope(
            &mut x[..n],
            positions,
            heads,
            head_dim,
            params,
            freq_factors,
        ),
        Device::Gpu(dev) => gpu::rope(
            dev,
            x,
            batch,
            positions,
            heads,
            head_dim,
            params,
            freq_factors,
        )?,
    }
    Ok(())
}
