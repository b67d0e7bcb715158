//! Model weights on a backend, loaded through the architecture's tensor-name table and
//! checked against the config (shape, presence). Matrices keep their GGUF type; vectors
//! (norms, biases, rope factors) are converted to F32.

use std::collections::HashMap;

use crate::backend::graph::{Recorder, WeightId};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::gguf::{quants, GgmlType, GgufFile};
use crate::model::arch::{Need, Role, TensorEntry};
use crate::model::config::ModelConfig;
use crate::ops::WeightView;

/// One transformer block. Shapes in NumPy order `[rows, cols]` (a matmul computes `x @ W^T`).
/// The optional weights are there exactly when the block's `BlockSpec` asks for them.
pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Weight,              // [dim]
    pub wq: B::Weight,                     // [heads * head_dim, dim]
    pub wk: B::Weight,                     // [kv_heads * head_dim, dim]
    pub wv: B::Weight,                     // [kv_heads * head_dim, dim]
    pub qkv_bias: Option<[B::Weight; 3]>,  // [heads * head_dim], [kv_dim] x 2  (qwen2)
    pub qk_norm: Option<[B::Weight; 2]>,   // [head_dim] x 2  (per-head q and k norms)
    pub wo: B::Weight,                     // [dim, heads * head_dim]
    pub post_attn_norm: Option<B::Weight>, // [dim]
    pub ffn_norm: B::Weight,               // [dim]
    pub w_gate: B::Weight,                 // [ffn_dim, dim]
    pub w_up: B::Weight,                   // [ffn_dim, dim]
    pub w_down: B::Weight,                 // [dim, ffn_dim]
    pub post_ffn_norm: Option<B::Weight>,  // [dim]
}

pub struct Weights<B: Backend> {
    pub token_embd: B::Weight,  // [vocab, dim]
    pub output_norm: B::Weight, // [dim]
    /// The LM head `[vocab, dim]`; `None` when tied to `token_embd`.
    pub output: Option<B::Weight>,
    /// Rope frequency divisors `[n_rot / 2]` (Llama 3 `rope_freqs`, times any linear scaling).
    pub rope_freqs: Option<B::Weight>,
    pub layers: Vec<LayerWeights<B>>,
    /// Bytes of all weights as stored on the device.
    pub nbytes: usize,
}

impl<B: Backend> Weights<B> {
    /// The matrix of the LM head.
    pub fn lm_head(&self) -> &B::Weight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// The same weights with each replaced by `f(weight)`, visited in one fixed order (a
    /// recording's numbers for them: see `table`).
    pub fn map<'a, B2: Backend>(
        &'a self,
        f: &mut dyn FnMut(&'a B::Weight) -> B2::Weight,
    ) -> Weights<B2> {
        let token_embd = f(&self.token_embd);
        let output_norm = f(&self.output_norm);
        let output = self.output.as_ref().map(&mut *f);
        let rope_freqs = self.rope_freqs.as_ref().map(&mut *f);
        let layers = self
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: f(&l.attn_norm),
                wq: f(&l.wq),
                wk: f(&l.wk),
                wv: f(&l.wv),
                qkv_bias: l.qkv_bias.as_ref().map(|b| [f(&b[0]), f(&b[1]), f(&b[2])]),
                qk_norm: l.qk_norm.as_ref().map(|n| [f(&n[0]), f(&n[1])]),
                wo: f(&l.wo),
                post_attn_norm: l.post_attn_norm.as_ref().map(&mut *f),
                ffn_norm: f(&l.ffn_norm),
                w_gate: f(&l.w_gate),
                w_up: f(&l.w_up),
                w_down: f(&l.w_down),
                post_ffn_norm: l.post_ffn_norm.as_ref().map(&mut *f),
            })
            .collect();
        Weights {
            token_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
            nbytes: self.nbytes,
        }
    }

    /// Every weight in `map`'s order: the table whose indices a recording's weight numbers
    /// are (`ids`).
    pub fn table(&self) -> Vec<&B::Weight> {
        let mut table = Vec::new();
        self.map::<Recorder>(&mut |w| {
            table.push(w);
            WeightId(table.len() - 1)
        });
        table
    }

    /// The weights as a recording's numbers: `table()[id.0]` is the weight of `id`.
    pub fn ids(&self) -> Weights<Recorder> {
        let mut next = 0;
        self.map::<Recorder>(&mut |_| {
            next += 1;
            WeightId(next - 1)
        })
    }
}

/// The NumPy shape a tensor of `role` must have (a fused matrix: its parts stacked by rows).
fn expected_shape(role: Role, c: &ModelConfig) -> Vec<usize> {
    if let Some(parts) = role.parts() {
        let shapes: Vec<_> = parts.iter().map(|&p| expected_shape(p, c)).collect();
        return vec![shapes.iter().map(|s| s[0]).sum(), shapes[0][1]];
    }
    match role {
        Role::TokenEmbd | Role::Output => vec![c.vocab_size, c.dim],
        Role::OutputNorm | Role::AttnNorm | Role::FfnNorm => vec![c.dim],
        Role::RopeFreqs | Role::RopeFactorsLong | Role::RopeFactorsShort => vec![c.rope.n_rot / 2],
        Role::AttnQ => vec![c.q_dim(), c.dim],
        Role::AttnK | Role::AttnV => vec![c.kv_dim(), c.dim],
        Role::AttnQBias => vec![c.q_dim()],
        Role::AttnKBias | Role::AttnVBias => vec![c.kv_dim()],
        Role::AttnOutput => vec![c.dim, c.q_dim()],
        Role::AttnQNorm | Role::AttnKNorm => vec![c.head_dim],
        Role::AttnPostNorm | Role::FfnPostNorm => vec![c.dim],
        Role::FfnGate | Role::FfnUp => vec![c.ffn_dim, c.dim],
        Role::FfnDown => vec![c.dim, c.ffn_dim],
        Role::AttnQkv | Role::FfnGateUp => unreachable!("fused roles have parts"),
    }
}

/// Norms, biases and rope factors: stored as F32 on the backend whatever the file holds.
fn is_vector(role: Role) -> bool {
    matches!(
        role,
        Role::OutputNorm
            | Role::AttnNorm
            | Role::FfnNorm
            | Role::AttnQNorm
            | Role::AttnKNorm
            | Role::AttnPostNorm
            | Role::FfnPostNorm
            | Role::RopeFreqs
            | Role::RopeFactorsLong
            | Role::RopeFactorsShort
            | Role::AttnQBias
            | Role::AttnKBias
            | Role::AttnVBias
    )
}

/// A tensor's values as F32 (for vectors, which the backends take in F32).
fn as_f32(name: &str, ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    let n = quants::elements_in(ty, bytes.len())?;
    let mut out = vec![0.0f32; n];
    quants::dequantize(ty, bytes, &mut out)
        .map_err(|e| Error::unsupported(format!("tensor {name:?}: {e}")))?;
    Ok(out)
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A layer that holds only part of a group of tensors its architecture has all or none of.
fn incomplete(layer: usize, what: &str) -> Error {
    Error::gguf(format!("layer {layer} does not hold all of its {what}"))
}

/// Load one tensor, checking its shape: nothing if it is optional and absent, else the weight
/// of its role, or of each of its parts for a fused matrix (`Role::parts`: each part its rows
/// of the tensor, a byte range, in its GGUF type).
fn load_tensor<B: Backend>(
    backend: &B,
    file: &GgufFile,
    cfg: &ModelConfig,
    role: Role,
    name: &str,
    need: Need,
    nbytes: &mut usize,
) -> Result<Vec<(Role, B::Weight)>> {
    let Some(info) = file.tensor_info(name) else {
        return match need {
            Need::Required => Err(Error::gguf(format!("required tensor {name:?} is missing"))),
            Need::Optional => Ok(Vec::new()),
        };
    };
    let want = expected_shape(role, cfg);
    if info.shape() != want {
        return Err(Error::gguf(format!(
            "tensor {name:?} has shape {:?}, the metadata implies {want:?}",
            info.shape()
        )));
    }
    let bytes = file.tensor_bytes(info);
    if is_vector(role) {
        let mut values = as_f32(name, info.ggml_type, bytes)?;
        if matches!(
            role,
            Role::RopeFreqs | Role::RopeFactorsLong | Role::RopeFactorsShort
        ) {
            values.iter_mut().for_each(|f| *f *= cfg.rope_linear_scale);
        }
        *nbytes += values.len() * 4;
        let bytes = f32_bytes(&values);
        let view = WeightView::new(GgmlType::F32, 1, values.len(), &bytes)?;
        return Ok(vec![(role, backend.weight(view)?)]);
    }
    if !info.ggml_type.can_dequantize() {
        return Err(Error::unsupported(format!(
            "tensor {name:?} has type {}, which rocmforge cannot run",
            info.ggml_type
        )));
    }
    *nbytes += bytes.len();
    let parts: Vec<(Role, usize)> = match role.parts() {
        Some(parts) => parts
            .iter()
            .map(|&p| (p, expected_shape(p, cfg)[0]))
            .collect(),
        None => vec![(role, want[0])],
    };
    let row_bytes = info.row_bytes();
    let mut row0 = 0;
    let mut out = Vec::with_capacity(parts.len());
    for (part, rows) in parts {
        let rows_bytes = &bytes[row0 * row_bytes..(row0 + rows) * row_bytes];
        let view = WeightView::new(info.ggml_type, rows, want[1], rows_bytes)?;
        out.push((part, backend.weight(view)?));
        row0 += rows;
    }
    Ok(out)
}

/// Load the entries of `entries` (of layer `layer`) into `into`: fused matrices first, then
/// the other entries whose role no fused matrix provided.
fn load_entries<B: Backend>(
    backend: &B,
    file: &GgufFile,
    cfg: &ModelConfig,
    entries: &[&TensorEntry],
    layer: usize,
    into: &mut HashMap<Role, B::Weight>,
    nbytes: &mut usize,
) -> Result<()> {
    let (fused, plain): (Vec<&TensorEntry>, Vec<&TensorEntry>) = entries
        .iter()
        .copied()
        .partition(|e| e.role.parts().is_some());
    for e in fused.into_iter().chain(plain) {
        if into.contains_key(&e.role) {
            continue;
        }
        let name = e.name_for(layer);
        for (role, w) in load_tensor(backend, file, cfg, e.role, &name, e.need, nbytes)? {
            into.insert(role, w);
        }
    }
    Ok(())
}

impl<B: Backend> Weights<B> {
    /// Load every tensor of `cfg.arch`'s table from `file` onto `backend`, for a context of
    /// `n_ctx` positions (which of two LongRoPE factor sets applies depends on it).
    pub fn load(backend: &B, file: &GgufFile, cfg: &ModelConfig, n_ctx: usize) -> Result<Self> {
        let mut nbytes = 0usize;
        let table = cfg.arch.tensors();
        // LongRoPE: the long factors where the context is longer than the original one, else
        // the short ones (llama.cpp's choice, by the context per sequence: ours has one).
        let unused_factors = match n_ctx > cfg.rope_original_context {
            true => Role::RopeFactorsShort,
            false => Role::RopeFactorsLong,
        };
        let global_entries: Vec<&TensorEntry> = table
            .iter()
            .filter(|e| !e.per_layer() && e.role != unused_factors)
            .collect();
        let mut global: HashMap<Role, B::Weight> = HashMap::new();
        load_entries(
            backend,
            file,
            cfg,
            &global_entries,
            0,
            &mut global,
            &mut nbytes,
        )?;
        // The set kept is the rope's frequency factors (llama.cpp: rope_freqs first, if any).
        for set in [Role::RopeFactorsLong, Role::RopeFactorsShort] {
            if let Some(w) = global.remove(&set) {
                global.entry(Role::RopeFreqs).or_insert(w);
            }
        }
        // Linear rope scaling without rope_freqs: divide every frequency by the factor.
        if !global.contains_key(&Role::RopeFreqs) && cfg.rope_linear_scale != 1.0 {
            let factors = vec![cfg.rope_linear_scale; cfg.rope.n_rot / 2];
            global.insert(
                Role::RopeFreqs,
                backend.weight(WeightView::new(
                    GgmlType::F32,
                    1,
                    factors.len(),
                    &f32_bytes(&factors),
                )?)?,
            );
        }

        let layer_entries: Vec<&TensorEntry> = table.iter().filter(|e| e.per_layer()).collect();
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for layer in 0..cfg.n_layers {
            let mut w: HashMap<Role, B::Weight> = HashMap::new();
            load_entries(
                backend,
                file,
                cfg,
                &layer_entries,
                layer,
                &mut w,
                &mut nbytes,
            )?;
            let spec = cfg.arch.spec();
            let qkv_bias = match (
                w.remove(&Role::AttnQBias),
                w.remove(&Role::AttnKBias),
                w.remove(&Role::AttnVBias),
            ) {
                (Some(q), Some(k), Some(v)) => Some([q, k, v]),
                (None, None, None) => None,
                _ => return Err(incomplete(layer, "q/k/v biases")),
            };
            let qk_norm = match (w.remove(&Role::AttnQNorm), w.remove(&Role::AttnKNorm)) {
                (Some(q), Some(k)) => Some([q, k]),
                (None, None) => None,
                _ => return Err(incomplete(layer, "q/k norms")),
            };
            if qkv_bias.is_some() != spec.qkv_bias || qk_norm.is_some() != spec.qk_norm {
                return Err(incomplete(layer, "tensors of its architecture"));
            }
            let (post_attn_norm, post_ffn_norm) =
                (w.remove(&Role::AttnPostNorm), w.remove(&Role::FfnPostNorm));
            if post_attn_norm.is_some() != spec.post_norms
                || post_ffn_norm.is_some() != spec.post_norms
            {
                return Err(incomplete(layer, "post-norms"));
            }
            let mut take = |role: Role| w.remove(&role).expect("required tensors were checked");
            layers.push(LayerWeights {
                attn_norm: take(Role::AttnNorm),
                wq: take(Role::AttnQ),
                wk: take(Role::AttnK),
                wv: take(Role::AttnV),
                qkv_bias,
                qk_norm,
                wo: take(Role::AttnOutput),
                post_attn_norm,
                ffn_norm: take(Role::FfnNorm),
                w_gate: take(Role::FfnGate),
                w_up: take(Role::FfnUp),
                w_down: take(Role::FfnDown),
                post_ffn_norm,
            });
        }
        let mut take = |role: Role| global.remove(&role);
        Ok(Weights {
            token_embd: take(Role::TokenEmbd).expect("required"),
            output_norm: take(Role::OutputNorm).expect("required"),
            output: take(Role::Output),
            rope_freqs: take(Role::RopeFreqs),
            layers,
            nbytes,
        })
    }
}
