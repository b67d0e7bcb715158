//! Llama-style decoder models: typed config (`config`), tensor-name tables (`arch`), weights
//! (`weights`), KV cache (`kv_cache`) and the forward pass (`forward`), generic over the
//! `Backend`. `LanguageModel` hides the backend type from the layers above (generation,
//! Python), so one `Box<dyn LanguageModel>` runs on whichever device was picked.

pub mod arch;
pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod spec;
pub mod weights;

#[cfg(test)]
mod tests;

pub use arch::Arch;
pub use config::ModelConfig;
pub use forward::Transformer;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::device::tuning::Tuning;
use crate::device::{Device, KvDtype};
use crate::error::Result;
use crate::ops::sampling::StepPick;

/// Polled between forward chunks and tokens; returns `Err(Interrupted)` to stop (Ctrl-C).
pub type Interrupt<'a> = &'a mut (dyn FnMut() -> Result<()> + Send);

/// A model ready to evaluate tokens, whatever its backend.
pub trait LanguageModel: Send {
    fn config(&self) -> &ModelConfig;
    /// The device's name ("cpu", "NVIDIA H100 80GB HBM3", ...).
    fn device_name(&self) -> String;
    /// Positions the KV cache (each sequence slot's) holds.
    fn n_ctx(&self) -> usize;
    fn kv_dtype(&self) -> KvDtype;
    /// Bytes of weights and KV caches on the device.
    fn nbytes(&self) -> usize;
    /// Sequence slots, each a KV cache of its own (1 unless `set_slots` made more).
    fn slots(&self) -> usize;
    /// Make `n >= 1` slots; slots past `n` are freed (`Transformer::set_slots`).
    fn set_slots(&mut self, n: usize) -> Result<()>;
    /// The slot whose cache `eval`, `eval_all`, `decode` and the `last_*` reads use.
    fn select_slot(&mut self, slot: usize) -> Result<()>;
    /// One step of several sequences: row `r` evaluates `rows[r] = (slot, id, pos)` and its
    /// logits go to `out [rows, vocab]` (`Transformer::decode_batch`).
    fn decode_batch(&mut self, rows: &[(usize, u32, usize)], out: &mut [f32]) -> Result<()>;
    /// Evaluate `ids` at positions `pos0..`; the cache must already hold `0..pos0`. Keeps the
    /// last token's logits on the device. `interrupt` is polled between chunks.
    fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: Interrupt) -> Result<()>;
    /// Evaluate `ids` at positions `pos0..`, every position's logits to `out [ids, vocab]`.
    fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: Interrupt,
    ) -> Result<()>;
    /// The last `eval`'s (or `decode`'s) logits, to `out [vocab]`.
    fn last_logits(&mut self, out: &mut [f32]) -> Result<()>;
    /// The last `eval`'s argmax (lowest id on ties) and its logit, computed on the device.
    fn last_argmax(&mut self) -> Result<(u32, f32)>;
    /// One greedy decode step: evaluate `id` at `pos` (the cache holds `0..pos`) and return
    /// the argmax of its logits and that logit, like `eval` + `last_argmax`; its logits stay
    /// available to `last_logits`. GPU models replay a recorded graph of the step. `ahead`:
    /// the caller will likely ask next for the pick at `pos + 1`, which a GPU model then
    /// queues before returning (`Transformer::decode_greedy`); the results are the same.
    fn decode_greedy(&mut self, id: u32, pos: usize, ahead: bool) -> Result<(u32, f32)> {
        self.decode(id, pos, &StepPick::Greedy, &[], ahead)
    }
    /// One decode step with `pick` (`Transformer::decode`): greedy, (id, its logit); sampled,
    /// (id, its log-probability), the draw at `pos + 1` and the penalties over the end of
    /// `history` (the tokens up to `id`). On a GPU the pick is part of the replayed step.
    fn decode(
        &mut self,
        id: u32,
        pos: usize,
        pick: &StepPick,
        history: &[u32],
        ahead: bool,
    ) -> Result<(u32, f32)>;
    /// What the model's decode plan runs, a line a kind of launch (empty without a plan).
    fn plan(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<B: Backend + 'static> LanguageModel for Transformer<B> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn device_name(&self) -> String {
        self.backend.name()
    }
    fn n_ctx(&self) -> usize {
        Transformer::n_ctx(self)
    }
    fn kv_dtype(&self) -> KvDtype {
        Transformer::kv_dtype(self)
    }
    fn nbytes(&self) -> usize {
        Transformer::nbytes(self)
    }
    fn slots(&self) -> usize {
        Transformer::slots(self)
    }
    fn set_slots(&mut self, n: usize) -> Result<()> {
        Transformer::set_slots(self, n)
    }
    fn select_slot(&mut self, slot: usize) -> Result<()> {
        Transformer::select_slot(self, slot)
    }
    fn decode_batch(&mut self, rows: &[(usize, u32, usize)], out: &mut [f32]) -> Result<()> {
        Transformer::decode_batch(self, rows, out)
    }
    fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: Interrupt) -> Result<()> {
        Transformer::eval(self, ids, pos0, interrupt)
    }
    fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: Interrupt,
    ) -> Result<()> {
        Transformer::eval_all(self, ids, pos0, out, interrupt)
    }
    fn last_logits(&mut self, out: &mut [f32]) -> Result<()> {
        Transformer::last_logits(self, out)
    }
    fn last_argmax(&mut self) -> Result<(u32, f32)> {
        Transformer::last_argmax(self)
    }
    fn decode(
        &mut self,
        id: u32,
        pos: usize,
        pick: &StepPick,
        history: &[u32],
        ahead: bool,
    ) -> Result<(u32, f32)> {
        Transformer::decode(self, id, pos, pick, history, ahead)
    }
    fn plan(&self) -> Vec<String> {
        self.plan_description()
    }
}

/// A CPU model whose evaluations run on a thread of rayon's pool: the ops' parallel loops are
/// then forked from a pool thread, which is cheap, instead of each being handed over from an
/// outside thread that sleeps until it is done (two context switches per op, hundreds of ops
/// per token).
struct OnRayonPool<M> {
    model: M,
}

impl<M: LanguageModel> OnRayonPool<M> {
    fn new(model: M) -> Self {
        OnRayonPool { model }
    }
}

impl<M: LanguageModel> LanguageModel for OnRayonPool<M> {
    fn config(&self) -> &ModelConfig {
        self.model.config()
    }
    fn device_name(&self) -> String {
        self.model.device_name()
    }
    fn n_ctx(&self) -> usize {
        self.model.n_ctx()
    }
    fn kv_dtype(&self) -> KvDtype {
        self.model.kv_dtype()
    }
    fn nbytes(&self) -> usize {
        self.model.nbytes()
    }
    fn slots(&self) -> usize {
        self.model.slots()
    }
    fn set_slots(&mut self, n: usize) -> Result<()> {
        self.model.set_slots(n)
    }
    fn select_slot(&mut self, slot: usize) -> Result<()> {
        self.model.select_slot(slot)
    }
    fn decode_batch(&mut self, rows: &[(usize, u32, usize)], out: &mut [f32]) -> Result<()> {
        rayon::scope(|_| self.model.decode_batch(rows, out))
    }
    // The chunks run on the pool, but `interrupt` is called here, on the caller's thread,
    // between them: it polls Python for Ctrl-C, which only the main thread can see.
    fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: Interrupt) -> Result<()> {
        let mut pos = pos0;
        for chunk in ids.chunks(forward::MAX_BATCH) {
            interrupt()?;
            rayon::scope(|_| self.model.eval(chunk, pos, &mut || Ok(())))?;
            pos += chunk.len();
        }
        Ok(())
    }
    fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: Interrupt,
    ) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        let mut done = 0;
        for chunk in ids.chunks(forward::MAX_BATCH) {
            interrupt()?;
            let rows = &mut out[done * vocab..(done + chunk.len()) * vocab];
            rayon::scope(|_| {
                self.model
                    .eval_all(chunk, pos0 + done, rows, &mut || Ok(()))
            })?;
            done += chunk.len();
        }
        Ok(())
    }
    fn last_logits(&mut self, out: &mut [f32]) -> Result<()> {
        self.model.last_logits(out)
    }
    // `Backend::argmax` lets a NaN win, so a NaN logit shows in the picked value.
    fn last_argmax(&mut self) -> Result<(u32, f32)> {
        rayon::scope(|_| self.model.last_argmax())
    }
    fn decode(
        &mut self,
        id: u32,
        pos: usize,
        pick: &StepPick,
        history: &[u32],
        ahead: bool,
    ) -> Result<(u32, f32)> {
        rayon::scope(|_| self.model.decode(id, pos, pick, history, ahead))
    }
    fn plan(&self) -> Vec<String> {
        self.model.plan()
    }
}

/// The context length used when the caller gives none: the model's, capped.
pub const DEFAULT_MAX_CTX: usize = 4096;

/// Load `file` onto `device` ("cpu", "gpu", or "auto": the first GPU found, else the CPU)
/// with a KV cache of `n_ctx` positions (default: the model's context length, at most
/// `DEFAULT_MAX_CTX`) of `kv_dtype` (default: f16 on GPUs, f32 on the CPU). On a GPU the
/// model runs with the device's tuning record changed by `tuning` (`key=value` pairs of
/// `Tuning::set`), which is returned with it; the CPU has no tuning (the pairs are checked
/// all the same, so that a typo fails everywhere).
pub fn load(
    file: &crate::gguf::GgufFile,
    device: &str,
    n_ctx: Option<usize>,
    kv_dtype: Option<KvDtype>,
    tuning: &[(String, String)],
) -> Result<(Box<dyn LanguageModel>, Option<Tuning>)> {
    let device = crate::device::resolve_device(device)?;
    let cfg = ModelConfig::from_gguf(file)?;
    let n_ctx = n_ctx.unwrap_or(cfg.context_length.min(DEFAULT_MAX_CTX));
    let overridden = |base: &Tuning| -> Result<Tuning> {
        let mut t = base.clone();
        for (k, v) in tuning {
            t.set(k, v)?;
        }
        Ok(t)
    };
    Ok(match device {
        Device::Cpu => {
            overridden(&Tuning::default())?;
            let kv = kv_dtype.unwrap_or(KvDtype::F32);
            let model = Transformer::load(CpuBackend, file, n_ctx, kv)?;
            (Box::new(OnRayonPool::new(model)), None)
        }
        Device::Gpu(dev) => {
            let t = overridden(dev.tuning())?;
            let kv = kv_dtype.unwrap_or(KvDtype::F16);
            let backend = GpuBackend::with_tuning(dev, t.clone())?;
            (
                Box::new(Transformer::load(backend, file, n_ctx, kv)?),
                Some(t),
            )
        }
    })
}
