//! Architectures and their GGUF tensor names: every name the model loads is in one table here.
//!
//! A name template holds `{L}` where the layer index goes (`blk.{L}.attn_q.weight`).

use crate::error::{Error, Result};

/// The model families rocmforge runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3/3.x (with `rope_freqs`), SmolLM2, TinyLlama, Mistral: pairwise rope, no biases.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v biases, neox (half-split) rope.
    Qwen2,
    /// Qwen3 (dense): Qwen2 without biases, with per-head q/k norms.
    Qwen3,
    /// Gemma 3: scaled embeddings, q/k norms, post-norms, GeGLU, sliding-window layers.
    Gemma3,
    /// Phi-3 / Phi-3.5: fused q/k/v and gate/up matrices, neox rope with LongRoPE factors.
    Phi3,
}

/// Every family, in the order the unsupported-architecture error lists them.
pub const ALL: [Arch; 5] = [
    Arch::Llama,
    Arch::Qwen2,
    Arch::Qwen3,
    Arch::Gemma3,
    Arch::Phi3,
];

impl Arch {
    /// The architecture named by `general.architecture`; anything else is `Unsupported`.
    pub fn from_name(name: &str) -> Result<Arch> {
        match ALL.iter().find(|a| a.name() == name) {
            Some(&a) => Ok(a),
            None => {
                let names: Vec<&str> = ALL.iter().map(|a| a.name()).collect();
                Err(Error::unsupported(format!(
                    "architecture {name:?} is not supported (supported: {})",
                    names.join(", ")
                )))
            }
        }
    }

    /// The GGUF name, also the prefix of its metadata keys (`llama.block_count`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// The tensor-name table of this architecture.
    pub fn tensors(self) -> &'static [TensorEntry] {
        match self {
            Arch::Llama => LLAMA,
            Arch::Qwen2 => QWEN2,
            Arch::Qwen3 => QWEN3,
            Arch::Gemma3 => GEMMA3,
            Arch::Phi3 => PHI3,
        }
    }
}

/// What a tensor is in the model (independent of the architecture's naming).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbd,
    OutputNorm,
    /// The LM head; absent means tied to `TokenEmbd`.
    Output,
    /// Llama 3 rope frequency factors.
    RopeFreqs,
    /// LongRoPE frequency factors (Phi-3): the long set serves contexts longer than the
    /// original one (`rope.scaling.original_context_length`), the short set the others. The
    /// loader keeps the one the context calls for, as `RopeFreqs`.
    RopeFactorsLong,
    RopeFactorsShort,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnQBias,
    AttnKBias,
    AttnVBias,
    /// Per-head RMS norms of q and k (QK-norm families).
    AttnQNorm,
    AttnKNorm,
    AttnOutput,
    /// RMS norm of the attention's output before the residual add (post-norm families).
    AttnPostNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// RMS norm of the feed-forward's output before the residual add (post-norm families).
    FfnPostNorm,
    /// Fused matrices (`Role::parts`): q, k and v stacked by rows (Phi-3's `attn_qkv`).
    AttnQkv,
    /// The gate and up matrices stacked by rows (Phi-3's `ffn_up`, gate first).
    FfnGateUp,
}

impl Role {
    /// The roles a fused matrix holds, stacked by rows in this order (None: not fused). The
    /// loader splits it into them (rows are whole blocks of any type: each part is a byte
    /// range of the tensor), so the model sees only the parts.
    pub fn parts(self) -> Option<&'static [Role]> {
        match self {
            Role::AttnQkv => Some(&[Role::AttnQ, Role::AttnK, Role::AttnV]),
            Role::FfnGateUp => Some(&[Role::FfnGate, Role::FfnUp]),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// One row of an architecture's table. A fused tensor (`Role::parts`) provides its parts'
/// roles; where the file holds it, the parts' own rows of the table are not looked up (so a
/// required part is required only of files without the fused tensor).
#[derive(Clone, Copy, Debug)]
pub struct TensorEntry {
    pub role: Role,
    /// The GGUF name; per-layer names hold `{L}`.
    pub name: &'static str,
    pub need: Need,
}

impl TensorEntry {
    pub fn per_layer(&self) -> bool {
        self.name.contains("{L}")
    }

    /// The tensor name of layer `layer` (global tensors ignore it).
    pub fn name_for(&self, layer: usize) -> String {
        self.name.replace("{L}", &layer.to_string())
    }
}

use Need::{Optional, Required};
use Role::*;

const fn t(role: Role, name: &'static str, need: Need) -> TensorEntry {
    TensorEntry { role, name, need }
}

const LLAMA: &[TensorEntry] = &[
    t(TokenEmbd, "token_embd.weight", Required),
    t(OutputNorm, "output_norm.weight", Required),
    t(Output, "output.weight", Optional),
    t(RopeFreqs, "rope_freqs.weight", Optional),
    t(AttnNorm, "blk.{L}.attn_norm.weight", Required),
    t(AttnQ, "blk.{L}.attn_q.weight", Required),
    t(AttnK, "blk.{L}.attn_k.weight", Required),
    t(AttnV, "blk.{L}.attn_v.weight", Required),
    t(AttnOutput, "blk.{L}.attn_output.weight", Required),
    t(FfnNorm, "blk.{L}.ffn_norm.weight", Required),
    t(FfnGate, "blk.{L}.ffn_gate.weight", Required),
    t(FfnUp, "blk.{L}.ffn_up.weight", Required),
    t(FfnDown, "blk.{L}.ffn_down.weight", Required),
];

const QWEN2: &[TensorEntry] = &[
    t(TokenEmbd, "token_embd.weight", Required),
    t(OutputNorm, "output_norm.weight", Required),
    t(Output, "output.weight", Optional),
    t(AttnNorm, "blk.{L}.attn_norm.weight", Required),
    t(AttnQ, "blk.{L}.attn_q.weight", Required),
    t(AttnK, "blk.{L}.attn_k.weight", Required),
    t(AttnV, "blk.{L}.attn_v.weight", Required),
    t(AttnQBias, "blk.{L}.attn_q.bias", Required),
    t(AttnKBias, "blk.{L}.attn_k.bias", Required),
    t(AttnVBias, "blk.{L}.attn_v.bias", Required),
    t(AttnOutput, "blk.{L}.attn_output.weight", Required),
    t(FfnNorm, "blk.{L}.ffn_norm.weight", Required),
    t(FfnGate, "blk.{L}.ffn_gate.weight", Required),
    t(FfnUp, "blk.{L}.ffn_up.weight", Required),
    t(FfnDown, "blk.{L}.ffn_down.weight", Required),
];

const QWEN3: &[TensorEntry] = &[
    t(TokenEmbd, "token_embd.weight", Required),
    t(OutputNorm, "output_norm.weight", Required),
    t(Output, "output.weight", Optional),
    t(AttnNorm, "blk.{L}.attn_norm.weight", Required),
    t(AttnQ, "blk.{L}.attn_q.weight", Required),
    t(AttnK, "blk.{L}.attn_k.weight", Required),
    t(AttnV, "blk.{L}.attn_v.weight", Required),
    t(AttnQNorm, "blk.{L}.attn_q_norm.weight", Required),
    t(AttnKNorm, "blk.{L}.attn_k_norm.weight", Required),
    t(AttnOutput, "blk.{L}.attn_output.weight", Required),
    t(FfnNorm, "blk.{L}.ffn_norm.weight", Required),
    t(FfnGate, "blk.{L}.ffn_gate.weight", Required),
    t(FfnUp, "blk.{L}.ffn_up.weight", Required),
    t(FfnDown, "blk.{L}.ffn_down.weight", Required),
];

const GEMMA3: &[TensorEntry] = &[
    t(TokenEmbd, "token_embd.weight", Required),
    t(OutputNorm, "output_norm.weight", Required),
    t(Output, "output.weight", Optional),
    t(AttnNorm, "blk.{L}.attn_norm.weight", Required),
    t(AttnQ, "blk.{L}.attn_q.weight", Required),
    t(AttnK, "blk.{L}.attn_k.weight", Required),
    t(AttnV, "blk.{L}.attn_v.weight", Required),
    t(AttnQNorm, "blk.{L}.attn_q_norm.weight", Required),
    t(AttnKNorm, "blk.{L}.attn_k_norm.weight", Required),
    t(AttnOutput, "blk.{L}.attn_output.weight", Required),
    t(AttnPostNorm, "blk.{L}.post_attention_norm.weight", Required),
    t(FfnNorm, "blk.{L}.ffn_norm.weight", Required),
    t(FfnGate, "blk.{L}.ffn_gate.weight", Required),
    t(FfnUp, "blk.{L}.ffn_up.weight", Required),
    t(FfnDown, "blk.{L}.ffn_down.weight", Required),
    t(FfnPostNorm, "blk.{L}.post_ffw_norm.weight", Required),
];

/// Phi-3 (llama.cpp's phi3 graph): q/k/v in one `attn_qkv` matrix (some files hold them
/// apart), gate and up in one `ffn_up` of twice the feed-forward's rows, and the global
/// LongRoPE factor sets.
const PHI3: &[TensorEntry] = &[
    t(TokenEmbd, "token_embd.weight", Required),
    t(OutputNorm, "output_norm.weight", Required),
    t(Output, "output.weight", Optional),
    t(RopeFactorsLong, "rope_factors_long.weight", Optional),
    t(RopeFactorsShort, "rope_factors_short.weight", Optional),
    t(AttnNorm, "blk.{L}.attn_norm.weight", Required),
    t(AttnQkv, "blk.{L}.attn_qkv.weight", Optional),
    t(AttnQ, "blk.{L}.attn_q.weight", Required),
    t(AttnK, "blk.{L}.attn_k.weight", Required),
    t(AttnV, "blk.{L}.attn_v.weight", Required),
    t(AttnOutput, "blk.{L}.attn_output.weight", Required),
    t(FfnNorm, "blk.{L}.ffn_norm.weight", Required),
    t(FfnGateUp, "blk.{L}.ffn_up.weight", Required),
    t(FfnDown, "blk.{L}.ffn_down.weight", Required),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lookup() {
        assert_eq!(Arch::from_name("qwen2").unwrap(), Arch::Qwen2);
        let err = Arch::from_name("gpt2").unwrap_err();
        assert!(matches!(err, Error::Unsupported(ref m) if m.contains("gpt2")));
        let q = LLAMA.iter().find(|e| e.role == AttnQ).unwrap();
        assert_eq!(q.name_for(12), "blk.12.attn_q.weight");
        assert!(!LLAMA[0].per_layer());
        let err = Arch::from_name("phi2").unwrap_err();
        assert!(matches!(
            err,
            Error::Unsupported(ref m)
                if m.ends_with("(supported: llama, qwen2, qwen3, gemma3, phi3)")
        ));
        for arch in ALL {
            assert_eq!(Arch::from_name(arch.name()).unwrap(), arch);
            let mut roles: Vec<_> = arch.tensors().iter().map(|e| e.role).collect();
            roles.dedup();
            assert_eq!(roles.len(), arch.tensors().len(), "{arch:?}: a role twice");
            // fused matrices are per layer and split into roles that are not fused themselves
            for e in arch.tensors() {
                if let Some(parts) = e.role.parts() {
                    assert!(e.per_layer() && parts.len() >= 2, "{arch:?} {}", e.name);
                    assert!(parts.iter().all(|p| p.parts().is_none()));
                }
            }
        }
        assert_eq!(Arch::from_name("phi3").unwrap(), Arch::Phi3);
        let fused: Vec<_> = PHI3.iter().filter(|e| e.role.parts().is_some()).collect();
        assert_eq!(fused[0].name_for(3), "blk.3.attn_qkv.weight");
        assert_eq!(fused[0].role.parts().unwrap(), &[AttnQ, AttnK, AttnV]);
        assert_eq!(fused[1].name_for(0), "blk.0.ffn_up.weight");
        assert_eq!(fused[1].role.parts().unwrap(), &[FfnGate, FfnUp]);
    }
}
