//! The KV cache: per layer, one K and one V buffer of `[n_ctx, kv_heads * head_dim]` on the
//! backend's device. Row `p` holds the key/value of the token at position `p`.

use crate::backend::Backend;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

pub struct KvCache<B: Backend> {
    /// K then V of each layer: `[2 * n_layers]` buffers of `[n_ctx, kv_dim]`.
    caches: Vec<B::Kv>,
    /// Positions the cache holds.
    pub n_ctx: usize,
    /// Floats per row: `kv_heads * head_dim`.
    pub kv_dim: usize,
    pub dtype: KvDtype,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, cfg: &ModelConfig, n_ctx: usize, dtype: KvDtype) -> Result<Self> {
        let kv_dim = cfg.kv_dim();
        n_ctx.checked_mul(kv_dim).ok_or_else(|| {
            Error::invalid(format!("KV cache of {n_ctx} x {kv_dim} elements overflows"))
        })?;
        let caches = (0..2 * cfg.n_layers)
            .map(|_| backend.kv_cache(n_ctx, kv_dim, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            caches,
            n_ctx,
            kv_dim,
            dtype,
        })
    }

    /// Bytes a cache of `n_ctx` positions of `dtype` takes for `cfg`.
    pub fn bytes(cfg: &ModelConfig, n_ctx: usize, dtype: KvDtype) -> u64 {
        (2 * cfg.n_layers as u64)
            .saturating_mul(n_ctx as u64)
            .saturating_mul(cfg.kv_dim() as u64)
            .saturating_mul(dtype.bytes() as u64)
    }

    /// Bytes the cache takes on the device.
    pub fn nbytes(&self) -> usize {
        self.caches.len() * self.n_ctx * self.kv_dim * self.dtype.bytes()
    }

    /// Layer `l`'s K and V caches.
    pub fn layer(&mut self, l: usize) -> (&mut B::Kv, &mut B::Kv) {
        let [k, v] = &mut self.caches[2 * l..2 * l + 2] else {
            unreachable!("two caches a layer")
        };
        (k, v)
    }

    /// Every cache, K then V of each layer (the order of `Backend::plan`'s cache table).
    pub fn all(&self) -> Vec<&B::Kv> {
        self.caches.iter().collect()
    }

    /// `all`, mutable.
    pub fn all_mut(&mut self) -> &mut [B::Kv] {
        &mut self.caches
    }

    /// The same cache with each buffer replaced by `f(index in all(), buffer)` (a recording's
    /// numbers for them).
    pub fn map<B2: Backend>(&self, mut f: impl FnMut(usize, &B::Kv) -> B2::Kv) -> KvCache<B2> {
        KvCache {
            caches: self
                .caches
                .iter()
                .enumerate()
                .map(|(i, c)| f(i, c))
                .collect(),
            n_ctx: self.n_ctx,
            kv_dim: self.kv_dim,
            dtype: self.dtype,
        }
    }
}
