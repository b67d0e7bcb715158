//! The typed model configuration, read once from GGUF metadata with a required-keys check.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetaValue};
use crate::model::arch::Arch;
use crate::ops::rope::RopeParams;

/// Hyperparameters of a Llama-style decoder, checked for consistency.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Width of the residual stream (`embedding_length`).
    pub dim: usize,
    pub n_layers: usize,
    /// Hidden width of the SwiGLU feed-forward (`feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA: `heads % kv_heads == 0`).
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope: RopeParams,
    /// Linear rope scaling: positions are divided by this (1.0 = none).
    pub rope_linear_scale: f32,
    /// The context the rope was trained for before any extension
    /// (`rope.scaling.original_context_length`, else `context_length`): a longer context
    /// takes the long LongRoPE factor set (`Role::RopeFactorsLong`), as llama.cpp chooses.
    pub rope_original_context: usize,
    /// Magnitude of the rotated q and k dims (`rope.scaling.attn_factor`, 1.0 = none):
    /// LongRoPE's sqrt(1 + ln(s) / ln(original context)), which llama.cpp's converter writes
    /// for Phi-3's 128k models and llama.cpp applies at every context length.
    pub rope_attn_factor: f32,
    /// No `output.weight`: the LM head is the token embedding.
    pub tied_embeddings: bool,
    /// Keys a sliding-window layer attends over (`attention.sliding_window`), for the
    /// families that have such layers (`ArchSpec::window_every`).
    pub sliding_window: Option<usize>,
    /// Logits become `cap * tanh(logits / cap)` (`final_logit_softcapping`).
    pub logit_softcap: Option<f32>,
}

/// Largest value accepted for a width or count (guards allocations sized by metadata).
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 4096;
const MAX_CONTEXT: usize = 1 << 24;

impl ModelConfig {
    /// Read and check the configuration of `file`. Missing or malformed keys are `Gguf`
    /// errors naming the key; an unknown architecture is `Unsupported`.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch_name = match file.meta("general.architecture") {
            Some(v) => v.as_str().ok_or_else(|| {
                Error::gguf(format!(
                    "metadata key \"general.architecture\" must be a string, found {}",
                    v.type_name()
                ))
            })?,
            None => return Err(missing("general.architecture")),
        };
        let arch = Arch::from_name(arch_name)?;
        let keys = Keys {
            file,
            prefix: arch.name(),
        };

        if keys.opt_usize("expert_count", MAX_DIM)?.unwrap_or(0) > 0 {
            return Err(Error::unsupported(format!(
                "mixture-of-experts {arch_name} models are not supported"
            )));
        }
        let dim = keys.usize("embedding_length", MAX_DIM)?;
        let n_layers = keys.usize("block_count", MAX_LAYERS)?;
        let ffn_dim = keys.usize("feed_forward_length", MAX_DIM)?;
        let heads = keys.usize("attention.head_count", MAX_DIM)?;
        let kv_heads = keys
            .opt_usize("attention.head_count_kv", MAX_DIM)?
            .unwrap_or(heads);
        let context_length = keys.usize("context_length", MAX_CONTEXT)?;
        let rms_eps = keys.f64("attention.layer_norm_rms_epsilon")? as f32;
        let theta = keys.opt_f64("rope.freq_base")?.unwrap_or(10000.0) as f32;

        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::gguf(format!(
                "{0}.attention.head_count ({heads}) must be a multiple of {0}.attention.head_count_kv ({kv_heads})",
                arch.name()
            )));
        }
        let head_dim = match keys.opt_usize("attention.key_length", MAX_DIM)? {
            Some(d) => d,
            None if dim % heads == 0 => dim / heads,
            None => {
                return Err(Error::gguf(format!(
                    "{0}.embedding_length ({dim}) is not a multiple of {0}.attention.head_count ({heads})",
                    arch.name()
                )))
            }
        };
        if let Some(v) = keys.opt_usize("attention.value_length", MAX_DIM)? {
            if v != head_dim {
                return Err(Error::unsupported(format!(
                    "value head size {v} differs from key head size {head_dim}"
                )));
            }
        }
        let n_rot = keys
            .opt_usize("rope.dimension_count", MAX_DIM)?
            .unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::gguf(format!(
                "the rotated dimensions per head ({n_rot}, {}.rope.dimension_count or the head size) must be even and at most the head size {head_dim}",
                arch.name()
            )));
        }
        let valid_eps = rms_eps.is_finite() && rms_eps >= 0.0;
        let valid_theta = theta.is_finite() && theta > 0.0;
        if !valid_eps || !valid_theta {
            return Err(Error::gguf(format!(
                "bad {0}.attention.layer_norm_rms_epsilon ({rms_eps}) or {0}.rope.freq_base ({theta})",
                arch.name()
            )));
        }
        let rope_linear_scale = match keys.opt_str("rope.scaling.type")? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let f = keys.opt_f64("rope.scaling.factor")?.unwrap_or(1.0) as f32;
                if !(f.is_finite() && f > 0.0) {
                    return Err(Error::gguf(format!(
                        "bad {}.rope.scaling.factor {f}",
                        arch.name()
                    )));
                }
                f
            }
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "rope scaling type {other:?} is not supported"
                )))
            }
        };

        let rope_original_context = keys
            .opt_usize("rope.scaling.original_context_length", MAX_CONTEXT)?
            .unwrap_or(context_length);
        let rope_attn_factor = keys.opt_f64("rope.scaling.attn_factor")?.unwrap_or(1.0) as f32;
        if !(rope_attn_factor.is_finite() && rope_attn_factor > 0.0) {
            return Err(Error::gguf(format!(
                "bad {}.rope.scaling.attn_factor {rope_attn_factor}",
                arch.name()
            )));
        }
        // llama.cpp scales only the rotated dims of q and k by it: with all of them rotated
        // that is a factor of the attention scores (`BlockSpec::attn_scale`), otherwise not.
        if rope_attn_factor != 1.0 && n_rot != head_dim {
            return Err(Error::unsupported(format!(
                "a rope attention factor ({}.rope.scaling.attn_factor = {rope_attn_factor}) with \
                 {n_rot} of {head_dim} dims per head rotated is not supported",
                arch.name()
            )));
        }

        // Read only by the families with sliding-window layers. Phi-3 files carry one too (0
        // in Phi-4's), which llama.cpp ignores: it runs phi3 without a window.
        let sliding_window = match arch.spec().window_every {
            Some(_) => keys.opt_usize("attention.sliding_window", MAX_CONTEXT)?,
            None => None,
        };
        let logit_softcap = match keys.opt_f64("final_logit_softcapping")? {
            Some(c) if c.is_finite() && c > 0.0 => Some(c as f32),
            Some(c) => {
                return Err(Error::gguf(format!(
                    "bad {}.final_logit_softcapping {c}",
                    arch.name()
                )))
            }
            None => None,
        };

        // The vocabulary size: metadata if present, else the embedding table's rows.
        let embd = file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| Error::gguf("tensor \"token_embd.weight\" not found in the file"))?;
        let embd_rows = embd.n_rows();
        let vocab_size = keys
            .opt_usize("vocab_size", usize::MAX)?
            .unwrap_or(embd_rows);
        if vocab_size != embd_rows || vocab_size == 0 {
            return Err(Error::gguf(format!(
                "{}.vocab_size ({vocab_size}) disagrees with token_embd.weight's {embd_rows} rows",
                arch.name()
            )));
        }

        Ok(ModelConfig {
            arch,
            dim,
            n_layers,
            ffn_dim,
            heads,
            kv_heads,
            head_dim,
            vocab_size,
            context_length,
            rms_eps,
            rope: RopeParams {
                theta,
                neox: arch.spec().rope_neox,
                n_rot,
            },
            rope_linear_scale,
            rope_original_context,
            rope_attn_factor,
            tied_embeddings: file.tensor_info("output.weight").is_none(),
            sliding_window,
            logit_softcap,
        })
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of one K or V cache row (all key/value heads).
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

fn missing(key: &str) -> Error {
    Error::gguf(format!("required metadata key {key:?} is missing"))
}

/// Typed access to `{arch}.*` metadata keys with errors that name the key.
struct Keys<'a> {
    file: &'a GgufFile,
    prefix: &'a str,
}

impl Keys<'_> {
    fn get(&self, key: &str) -> (String, Option<&MetaValue>) {
        let full = format!("{}.{key}", self.prefix);
        let v = self.file.meta(&full);
        (full, v)
    }

    fn opt_usize(&self, key: &str, max: usize) -> Result<Option<usize>> {
        let (full, v) = self.get(key);
        let Some(v) = v else { return Ok(None) };
        match v.as_int() {
            Some(n) if n >= 1 && n <= max as i128 => Ok(Some(n as usize)),
            Some(n) => Err(Error::gguf(format!(
                "metadata key {full:?} = {n} is out of range 1..={max}"
            ))),
            None => Err(Error::gguf(format!(
                "metadata key {full:?} must be an integer, found {}",
                v.type_name()
            ))),
        }
    }

    fn usize(&self, key: &str, max: usize) -> Result<usize> {
        let (full, _) = self.get(key);
        self.opt_usize(key, max)?.ok_or_else(|| missing(&full))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let (full, v) = self.get(key);
        let Some(v) = v else { return Ok(None) };
        v.as_f64().map(Some).ok_or_else(|| {
            Error::gguf(format!(
                "metadata key {full:?} must be a number, found {}",
                v.type_name()
            ))
        })
    }

    fn f64(&self, key: &str) -> Result<f64> {
        let (full, _) = self.get(key);
        self.opt_f64(key)?.ok_or_else(|| missing(&full))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        let (full, v) = self.get(key);
        let Some(v) = v else { return Ok(None) };
        v.as_str().map(Some).ok_or_else(|| {
            Error::gguf(format!(
                "metadata key {full:?} must be a string, found {}",
                v.type_name()
            ))
        })
    }
}
