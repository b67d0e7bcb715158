//! Gated activations of the feed-forward block: `swiglu` (Llama, Qwen2).

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
}
use crate::device::Device;
use crate::error::Result;

/// `out[i] = silu(gate[i]) * up[i]` for `i < n`, `silu(g) = g / (1 + exp(-g))`.
pub fn swiglu(device: &Device, gate: &[f32], up: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    check_len("swiglu", "gate", gate.len(), n)?;
    check_len("swiglu", "up", up.len(), n)?;
    check_len("swiglu", "out", out.len(), n)?;
    match device {
        Device::Cpu => cpu::swiglu(&gate[..n], &up[..n], &mut out[..n]),
        Device::Gpu(dev) => gpu::swiglu(dev, gate, up, n, out)?,
    }
    Ok(())
}
