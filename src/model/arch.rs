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
}

/// Every family, in the order the unsupported-architecture error lists them.
pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3];

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
        }
    }

    /// The tensor-name table of this architecture.
    pub fn tensors(self) -> &'static [TensorEntry] {
        match self {
            Arch::Llama => LLAMA,
            Arch::Qwen2 => QWEN2,
            Arch::Qwen3 => QWEN3,
            Arch::Gemma3 => GEMMA3,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// One row of an architecture's table.
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
        let err = Arch::from_name("phi3").unwrap_err();
        assert!(
            matches!(err, Error::Unsupported(ref m) if m.contains("gemma3") && m.contains("qwen3"))
        );
        for arch in ALL {
            assert_eq!(Arch::from_name(arch.name()).unwrap(), arch);
            let mut roles: Vec<_> = arch.tensors().iter().map(|e| e.role).collect();
            roles.dedup();
            assert_eq!(roles.len(), arch.tensors().len(), "{arch:?}: a role twice");
        }
    }
}
