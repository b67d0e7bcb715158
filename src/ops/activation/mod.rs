//! Activations of the feed-forward block: `glu` with SiLU (`swiglu`: Llama, Qwen) or the tanh
//! form of GELU (`geglu`: Gemma), and that GELU alone (`gelu`).

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

/// `out[i] = geglu(gate[i], up[i]) = gelu(gate[i]) * up[i]` for `i < n` (tanh form).
pub fn geglu(device: &Device, gate: &[f32], up: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    glu(device, gate, up, n, Activation::GeluTanh, out)
}

/// `out[i] = gelu(x[i])` for `i < n`, `gelu(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
pub fn gelu(device: &Device, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    check_len("gelu", "x", x.len(), n)?;
    check_len("gelu", "out", out.len(), n)?;
    match device {
        Device::Cpu => cpu::gelu(&x[..n], &mut out[..n]),
        Device::Gpu(dev) => gpu::gelu(dev, x, n, out)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tanh form in float64, from the formula.
    fn gelu_f64(x: f64) -> f64 {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    }

    #[test]
    fn gelu_and_geglu_match_f64_on_cpu() {
        // -30..30 in steps of 0.01 (tanh saturates at both ends), plus 0 and a tiny value
        let mut x: Vec<f32> = (-3000..=3000).map(|i| i as f32 / 100.0).collect();
        x.extend([0.0, -0.0, 1e-30]);
        let n = x.len();
        let mut out = vec![f32::NAN; n];
        gelu(&Device::Cpu, &x, n, &mut out).unwrap();
        for (&v, &o) in x.iter().zip(&out) {
            let want = gelu_f64(v as f64);
            // relative 1e-5, plus 1e-6 absolute where 1 + tanh cancels (x below about -3)
            assert!(
                (o as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6,
                "gelu({v}) = {o}, want {want}"
            );
        }
        let up: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut g = vec![f32::NAN; n];
        geglu(&Device::Cpu, &x, &up, n, &mut g).unwrap();
        for i in 0..n {
            assert_eq!(g[i].to_bits(), (out[i] * up[i]).to_bits(), "geglu at {i}");
        }
        assert!(gelu(&Device::Cpu, &x[..3], 4, &mut out).is_err());
        assert!(gelu(&Device::Cpu, &x, n, &mut out[..3]).is_err());
    }
}
