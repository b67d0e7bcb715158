//! The KV cache: per layer, one K and one V buffer of `[n_ctx, kv_heads * head_dim]` on the
//! backend's device. Row `p` holds the key/value of the token at position `p`.

use crate::backend::Backend;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

pub struct KvCache<B: Backend> {
    /// `k[layer]`: `[n_ctx, kv_dim]`.
    pub k: Vec<B::Kv>,
    /// `v[layer]`: `[n_ctx, kv_dim]`.
    pub v: Vec<B::Kv>,
    /// Positions the cache holds.
    pub n_ctx: usize,
    /// Floats per row: `kv_heads * head_dim`.
    pub kv_dim: usize,
    pub dtype: KvDtype,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, cfg: &ModelConfig, n_ctx: usize, dtype: KvDtype) -> Result<Self> {
        let kv_dim = cfg.kv_dim();
        let n = n_ctx.checked_mul(kv_dim).ok_or_else(|| {
            Error::invalid(format!("KV cache of {n_ctx} x {kv_dim} elements overflows"))
        })?;
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            k.push(backend.kv_cache(n, dtype)?);
            v.push(backend.kv_cache(n, dtype)?);
        }
        Ok(KvCache {
            k,
            v,
            n_ctx,
            kv_dim,
            dtype,
        })
    }

    /// Bytes the cache takes on the device.
    pub fn nbytes(&self) -> usize {
        let elem = self.dtype.bytes();
        2 * self.k.len() * self.n_ctx * self.kv_dim * elem
    }
}
