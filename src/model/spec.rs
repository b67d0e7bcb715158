//! The model as data: what each block computes (`BlockSpec`) and what surrounds the blocks
//! (`ModelSpec`), derived once from the checked config through the architecture's row of
//! `ArchSpec`. The forward pass (`forward.rs`) reads these and nothing else about the family:
//! a new architecture is a new `ArchSpec` row (and tensor-name table), not new forward code.

use crate::backend::Activation;
use crate::model::arch::Arch;
use crate::model::config::ModelConfig;
use crate::ops::rope::RopeParams;

/// What an architecture changes in the Llama block, one row per family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchSpec {
    /// Rope rotates halves (i, i + n/2) instead of pairs (2i, 2i+1).
    pub rope_neox: bool,
    /// q, k and v have biases.
    pub qkv_bias: bool,
    /// Per-head RMS norms of q and k before the rope (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMS norms of the attention's and the feed-forward's outputs before each residual add.
    pub post_norms: bool,
    /// The feed-forward's gate activation.
    pub activation: Activation,
    /// The token embeddings are multiplied by sqrt(dim).
    pub embed_scale_sqrt_dim: bool,
}

/// The Llama family (Llama 2/3, SmolLM2, Mistral, TinyLlama).
pub const LLAMA: ArchSpec = ArchSpec {
    rope_neox: false,
    qkv_bias: false,
    qk_norm: false,
    post_norms: false,
    activation: Activation::Silu,
    embed_scale_sqrt_dim: false,
};

/// Qwen2 / Qwen2.5: Llama with q/k/v biases and half-split rope.
pub const QWEN2: ArchSpec = ArchSpec {
    rope_neox: true,
    qkv_bias: true,
    ..LLAMA
};

impl Arch {
    /// This architecture's row.
    pub fn spec(self) -> &'static ArchSpec {
        match self {
            Arch::Llama => &LLAMA,
            Arch::Qwen2 => &QWEN2,
        }
    }
}

/// One transformer block:
///
/// ```text
/// h  = x + [post_attn_norm] wo @ attention(rope([qk_norm] wq @ norm(x) + bq), rope(...k), ...v)
/// x' = h + [post_ffn_norm] w_down @ (act(w_gate @ norm(h)) * (w_up @ norm(h)))
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the feed-forward's hidden layer.
    pub ffn_dim: usize,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub post_attn_norm: bool,
    pub post_ffn_norm: bool,
    pub activation: Activation,
    pub rope: RopeParams,
    /// A query sees only the last `window` positions (itself included); None: all before it.
    pub window: Option<usize>,
    /// Factor of the attention scores (1 / sqrt(head_dim) for the families here).
    pub attn_scale: f32,
}

/// The whole decoder: its blocks, and what comes before and after them.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub blocks: Vec<BlockSpec>,
    /// Width of the residual stream.
    pub dim: usize,
    pub vocab: usize,
    /// Epsilon of every RMS norm.
    pub rms_eps: f32,
    /// Factor applied to the token embeddings (None: 1).
    pub embed_scale: Option<f32>,
    /// Logits become `cap * tanh(logits / cap)` (None: no capping).
    pub logit_softcap: Option<f32>,
}

impl ModelSpec {
    /// The spec of a checked config: the architecture's row applied to every block.
    pub fn new(c: &ModelConfig) -> ModelSpec {
        let a = c.arch.spec();
        let block = BlockSpec {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            ffn_dim: c.ffn_dim,
            qkv_bias: a.qkv_bias,
            qk_norm: a.qk_norm,
            post_attn_norm: a.post_norms,
            post_ffn_norm: a.post_norms,
            activation: a.activation,
            rope: c.rope,
            window: None,
            attn_scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        ModelSpec {
            blocks: vec![block; c.n_layers],
            dim: c.dim,
            vocab: c.vocab_size,
            rms_eps: c.rms_eps,
            embed_scale: a.embed_scale_sqrt_dim.then(|| (c.dim as f32).sqrt()),
            logit_softcap: None,
        }
    }

    /// The widest q and kv rows and feed-forward of any block (scratch sizes).
    pub fn max_widths(&self) -> (usize, usize, usize) {
        self.blocks.iter().fold((0, 0, 0), |(q, kv, f), b| {
            (
                q.max(b.heads * b.head_dim),
                kv.max(b.kv_heads * b.head_dim),
                f.max(b.ffn_dim),
            )
        })
    }
}
