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
    /// Sliding-window layers: of every `n` layers the last attends over every key before it
    /// and the others over the last `attention.sliding_window` keys (None: every layer
    /// global).
    pub window_every: Option<usize>,
    /// Rope base of the sliding-window layers, which also take no frequency scaling (None:
    /// the file's, as global layers).
    pub local_rope_theta: Option<f32>,
    /// The layer count of the family's member whose attention scale is 1/sqrt(dim / heads)
    /// instead of 1/sqrt(head_dim) (Gemma 3 27B's `query_pre_attn_scalar`: llama.cpp knows
    /// that size by its 62 layers).
    pub dim_over_heads_scale_at_layers: Option<usize>,
}

/// The Llama family (Llama 2/3, SmolLM2, Mistral, TinyLlama).
pub const LLAMA: ArchSpec = ArchSpec {
    rope_neox: false,
    qkv_bias: false,
    qk_norm: false,
    post_norms: false,
    activation: Activation::Silu,
    embed_scale_sqrt_dim: false,
    window_every: None,
    local_rope_theta: None,
    dim_over_heads_scale_at_layers: None,
};

/// Qwen2 / Qwen2.5: Llama with q/k/v biases and half-split rope.
pub const QWEN2: ArchSpec = ArchSpec {
    rope_neox: true,
    qkv_bias: true,
    ..LLAMA
};

/// Qwen3 (dense): Qwen2's half-split rope without the biases, with per-head q/k norms.
pub const QWEN3: ArchSpec = ArchSpec {
    rope_neox: true,
    qk_norm: true,
    ..LLAMA
};

/// Gemma 3 (llama.cpp's graph): embeddings times sqrt(dim), per-head q/k norms, post-norms
/// before each residual add, GELU (tanh) gating, five local layers (window, rope base 10,000)
/// to one global. The norm weights in GGUF files already hold Gemma's `1 + w`.
pub const GEMMA3: ArchSpec = ArchSpec {
    rope_neox: true,
    qkv_bias: false,
    qk_norm: true,
    post_norms: true,
    activation: Activation::GeluTanh,
    embed_scale_sqrt_dim: true,
    window_every: Some(6),
    local_rope_theta: Some(10000.0),
    dim_over_heads_scale_at_layers: Some(62),
};

/// Phi-3 (llama.cpp's phi3 graph): Llama's block with half-split rope; its fused matrices
/// are split at load (`Role::parts`), its LongRoPE factors are the rope frequency factors.
/// Files may give `attention.sliding_window`, which llama.cpp ignores for phi3 (it disabled
/// Phi's sliding window, llama.cpp PR 13676): every layer attends over the whole context.
pub const PHI3: ArchSpec = ArchSpec {
    rope_neox: true,
    ..LLAMA
};

impl Arch {
    /// This architecture's row.
    pub fn spec(self) -> &'static ArchSpec {
        match self {
            Arch::Llama => &LLAMA,
            Arch::Qwen2 => &QWEN2,
            Arch::Qwen3 => &QWEN3,
            Arch::Gemma3 => &GEMMA3,
            Arch::Phi3 => &PHI3,
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
    /// Whether the model's rope frequency factors (`rope_freqs`, linear scaling) apply here.
    pub rope_freq_factors: bool,
    /// A query sees only the last `window` positions (itself included); None: all before it.
    pub window: Option<usize>,
    /// Factor of the attention scores: 1 / sqrt(head_dim), times the square of the rope's
    /// attention factor where the file gives one (`ModelConfig::rope_attn_factor`).
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
        let query_width = match a.dim_over_heads_scale_at_layers {
            Some(n) if n == c.n_layers => c.dim / c.heads,
            _ => c.head_dim,
        };
        let global = BlockSpec {
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
            rope_freq_factors: true,
            window: None,
            // llama.cpp multiplies the rotated dims of q and k by the attention factor (in its
            // rope's cos and sin); the config allows a factor only where every dim is rotated,
            // so it is the same as scaling their product by its square.
            attn_scale: c.rope_attn_factor * c.rope_attn_factor / (query_width as f32).sqrt(),
        };
        // A sliding-window layer, where the family has them and the file gives a window.
        let local = match (a.window_every, c.sliding_window) {
            (Some(_), Some(window)) => Some(BlockSpec {
                rope: RopeParams {
                    theta: a.local_rope_theta.unwrap_or(c.rope.theta),
                    ..c.rope
                },
                rope_freq_factors: a.local_rope_theta.is_none(),
                window: Some(window),
                ..global.clone()
            }),
            _ => None,
        };
        let blocks = (0..c.n_layers)
            .map(|l| match (&local, a.window_every) {
                (Some(local), Some(n)) if l % n != n - 1 => local.clone(),
                _ => global.clone(),
            })
            .collect();
        ModelSpec {
            blocks,
            dim: c.dim,
            vocab: c.vocab_size,
            rms_eps: c.rms_eps,
            embed_scale: a.embed_scale_sqrt_dim.then(|| (c.dim as f32).sqrt()),
            logit_softcap: c.logit_softcap,
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
