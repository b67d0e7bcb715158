//! Gated activations of the feed-forward block: `glu` with SiLU (`swiglu`: Llama, Qwen) or
//! the tanh form of GELU (`geglu`: Gemma).

pub mod cpu;
pub mod gpu;

use super::check_len;

/// The activation of a gated feed-forward: `out = act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(g) = g / (1 + exp(-g))` (SwiGLU: Llama, Qwen).
    Silu,
    /// `gelu(g) = 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3)))` (GeGLU, tanh form: Gemma).
    GeluTanh,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_tanh",
        }
    }

    /// The name of the gated op (`swiglu`, `geglu`).
    pub fn glu_name(self) -> &'static str {
        match self {
            Activation::Silu => "swiglu",
            Activation::GeluTanh => "geglu",
        }
    }
}
use crate::device::Device;
use crate::error::Result;

/// `out[i] = act(gate[i]) * up[i]` for `i < n`.
pub fn glu(
    device: &Device,
    gate: &[f32],
    up: &[f32],
    n: usize,
    act: Activation,
    out: &mut [f32],
) -> Result<()> {
    let op = act.glu_name();
    check_len(op, "gate", gate.len(), n)?;
    check_len(op, "up", up.len(), n)?;
    check_len(op, "out", out.len(), n)?;
    match (device, act) {
        (Device::Cpu, Activation::Silu) => cpu::swiglu(&gate[..n], &up[..n], &mut out[..n]),
        (Device::Cpu, Activation::GeluTanh) => cpu::geglu(&gate[..n], &up[..n], &mut out[..n]),
        (Device::Gpu(dev), _) => gpu::glu(dev, gate, up, n, act, out)?,
    }
    Ok(())
}

/// `out[i] = silu(gate[i]) * up[i]` for `i < n`, `silu(g) = g / (1 + exp(-g))`.
pub fn swiglu(device: &Device, gate: &[f32], up: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    glu(device, gate, up, n, Activation::Silu, out)
}
