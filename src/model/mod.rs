//! Llama-style decoder models: typed config (`config`), tensor-name tables (`arch`), weights
//! (`weights`), KV cache (`kv_cache`) and the forward pass (`forward`), generic over the
//! `Backend`. `LanguageModel` hides the backend type from the layers above (generation,
//! Python), so one `Box<dyn LanguageModel>` runs on whichever device was picked.

pub mod arch;
pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod weights;

pub use arch::Arch;
pub use config::ModelConfig;
pub use forward::Transformer;

use crate::backend::{Backend, KvDtype};
use crate::error::Result;

/// A model ready to evaluate tokens, whatever its backend.
pub trait LanguageModel: Send {
    fn config(&self) -> &ModelConfig;
    /// The device's name ("cpu", "NVIDIA H100 80GB HBM3", ...).
    fn device_name(&self) -> String;
    /// Positions the KV cache holds.
    fn n_ctx(&self) -> usize;
    fn kv_dtype(&self) -> KvDtype;
    /// Bytes of weights and KV cache on the device.
    fn nbytes(&self) -> usize;
    /// Evaluate `ids` at positions `pos0..`; the cache must already hold `0..pos0`. Keeps the
    /// last token's logits on the device. `interrupt` is polled between chunks.
    fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: &mut dyn FnMut() -> Result<()>) -> Result<()>;
    /// Evaluate `ids` at positions `pos0..`, every position's logits to `out [ids, vocab]`.
    fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()>;
    /// The last `eval`'s logits, to `out [vocab]`.
    fn last_logits(&self, out: &mut [f32]) -> Result<()>;
    /// The last `eval`'s argmax (lowest id on ties) and its logit, computed on the device.
    fn last_argmax(&mut self) -> Result<(u32, f32)>;
}

impl<B: Backend + 'static> LanguageModel for Transformer<B> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn device_name(&self) -> String {
        self.backend.name()
    }
    fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }
    fn kv_dtype(&self) -> KvDtype {
        self.kv.dtype
    }
    fn nbytes(&self) -> usize {
        self.weights.nbytes + self.kv.nbytes()
    }
    fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        Transformer::eval(self, ids, pos0, interrupt)
    }
    fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        Transformer::eval_all(self, ids, pos0, out, interrupt)
    }
    fn last_logits(&self, out: &mut [f32]) -> Result<()> {
        Transformer::last_logits(self, out)
    }
    fn last_argmax(&mut self) -> Result<(u32, f32)> {
        Transformer::last_argmax(self)
    }
}
