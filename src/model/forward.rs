//! The forward pass of a Llama-style decoder, written once over the `Backend` ops so the same
//! code runs on the CPU and on GPUs. Everything stays on the device: the host sends token ids
//! and receives either one argmax id or the logits rows it asked for.
//!
//! Greedy decode (`decode_greedy`) on a backend with device-side decode steps (the GPU): the
//! token id and position go to the device in one copy, the step (embedding, every block, final
//! norm, LM head, argmax) reads them from there, and only (id, logit) comes back. The step is
//! then the same work at every position: it is recorded once as a graph at the first decode
//! step and replayed for every later token (`ROCMFORGE_GRAPHS=0` turns the recording off: the
//! same step then runs op by op, with the same kernels and so the same tokens).

use crate::backend::Backend;
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvCache;
use crate::model::weights::Weights;
use crate::model::Interrupt;

/// Tokens per forward chunk during prefill (bounds the activation scratch). 512: the 4096-wide
/// projections of an 8B model then fill an H200's 132 SMs with 128-row tensor-core tiles (at
/// 256 they made 64 blocks).
pub const MAX_BATCH: usize = 512;
/// Rows of logits computed per LM-head call (bounds the logits scratch).
const LOGIT_ROWS: usize = 16;

/// Activation scratch, sized once for the largest chunk. Shapes `[rows, width]`.
struct Scratch<B: Backend> {
    x: B::Buf,         // [MAX_BATCH, dim]      the residual stream
    xb: B::Buf,        // [MAX_BATCH, dim]      normed input of a block, then its output
    q: B::Buf,         // [MAX_BATCH, q_dim]
    k: B::Buf,         // [MAX_BATCH, kv_dim]
    v: B::Buf,         // [MAX_BATCH, kv_dim]
    att: B::Buf,       // [MAX_BATCH, q_dim]    attention output, heads concatenated
    gate: B::Buf,      // [MAX_BATCH, ffn_dim]
    up: B::Buf,        // [MAX_BATCH, ffn_dim]
    hidden: B::Buf,    // [MAX_BATCH, ffn_dim]  silu(gate) * up
    head_in: B::Buf,   // [LOGIT_ROWS, dim]    rows picked for the LM head
    head_norm: B::Buf, // [LOGIT_ROWS, dim]
    logits: B::Buf,    // [LOGIT_ROWS, vocab]
    one: B::Buf,       // [1]                   a single logit, read back to check it
}

/// Whether decode steps may be recorded and replayed as graphs (`ROCMFORGE_GRAPHS=0`: no).
pub fn graphs_enabled_by_env() -> bool {
    std::env::var("ROCMFORGE_GRAPHS").map_or(true, |v| v.trim() != "0")
}

/// Whether a greedy decode step may queue the next step before its pick is read
/// (`decode_greedy`'s `ahead`; `ROCMFORGE_DECODE_AHEAD=0`: never).
pub fn decode_ahead_enabled_by_env() -> bool {
    std::env::var("ROCMFORGE_DECODE_AHEAD").map_or(true, |v| v.trim() != "0")
}

/// The decode step's device state and its recorded graph.
struct DecodeState<B: Backend> {
    step: B::Step,
    /// Recorded at the first decode step, replayed after; dropped (and recorded again) when
    /// stale.
    graph: Option<B::Graph>,
    /// False once the backend declined to record (then the step runs op by op).
    can_capture: bool,
    /// False: `decode_greedy` queues no step ahead (`ROCMFORGE_DECODE_AHEAD=0`).
    may_ahead: bool,
    /// A step queued ahead (`decode_greedy` with `ahead`) whose result is not read yet: the
    /// (id, position) it runs, the id being the pick of the step before it.
    ahead: Option<(u32, usize)>,
    /// Results queued (`queue_step_result`) and not read: at rest 1 with `ahead`, else 0
    /// (more only after an error part-way, and `settle` then reads them all).
    unread: usize,
    /// The step whose logits the caller may ask for (`last_logits`) when a step queued ahead
    /// has overwritten them since: they are computed again on demand.
    logits_of: Option<(u32, usize)>,
}

impl<B: Backend> DecodeState<B> {
    /// Queue one decode step on what the step state holds: the recorded graph, or the step op
    /// by op (recording it for later where the backend can), then a read of its pick.
    fn queue(
        &mut self,
        b: &B,
        c: &ModelConfig,
        w: &Weights<B>,
        kv: &mut KvCache<B>,
        s: &mut Scratch<B>,
    ) -> Result<()> {
        let replayed = match &self.graph {
            Some(graph) => b.replay(graph, &self.step)?,
            None => false,
        };
        if !replayed {
            self.graph = None;
            // Op by op: this also sizes the step's workspace before anything is recorded.
            decode_step(b, c, w, kv, s, &self.step)?;
            if self.can_capture {
                let step = &self.step;
                self.graph = b.capture(step, &mut || decode_step(b, c, w, kv, s, step))?;
                self.can_capture = self.graph.is_some();
            }
        }
        b.queue_step_result(&self.step)?;
        self.unread += 1;
        Ok(())
    }

    /// The oldest result queued and not read.
    fn read(&mut self, b: &B) -> Result<(u32, f32)> {
        self.unread = self.unread.saturating_sub(1);
        b.step_result(&self.step)
    }

    /// Read and drop the result of a step queued ahead, if any: it ran on a token nobody asked
    /// for (its cache row is past what the caller holds, and is written again before it is
    /// read). Also any result an error left unread.
    fn settle(&mut self, b: &B) -> Result<()> {
        self.ahead = None;
        while self.unread > 0 {
            self.read(b)?;
        }
        Ok(())
    }
}

/// A loaded model on one backend: weights, KV cache and scratch.
pub struct Transformer<B: Backend> {
    pub backend: B,
    pub cfg: ModelConfig,
    pub weights: Weights<B>,
    pub kv: KvCache<B>,
    max_batch: usize,
    s: Scratch<B>,
    /// Greedy decode steps on the device (`decode_greedy`; `None`: the `eval` path): made at
    /// load, the graph recorded at the first decode step.
    decode: Option<DecodeState<B>>,
}

/// Where the tokens of a forward pass come from.
enum At<'a, B: Backend> {
    /// Token ids from the host, at positions `pos0..`.
    Host { ids: &'a [u32], pos0: usize },
    /// One token whose id and position the kernels read from the device.
    Step(&'a B::Step),
}

/// Run the tokens through every block: their keys and values go to the KV cache, their final
/// hidden states stay in `s.x` `[t, dim]`.
fn run_blocks<B: Backend>(
    b: &B,
    c: &ModelConfig,
    w: &Weights<B>,
    kv: &mut KvCache<B>,
    s: &mut Scratch<B>,
    at: &At<B>,
) -> Result<()> {
    let t = match at {
        At::Host { ids, .. } => ids.len(),
        At::Step(_) => 1,
    };
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    match at {
        At::Host { ids, .. } => b.embedding(&w.token_embd, ids, &mut s.x)?,
        At::Step(step) => b.embedding_step(&w.token_embd, step, &mut s.x)?,
    }
    for (l, lw) in w.layers.iter().enumerate() {
        // attention: x += wo @ attn(rope(wq @ norm(x)), rope(wk @ norm(x)), wv @ norm(x))
        let biases = match (&lw.bq, &lw.bk, &lw.bv) {
            (Some(bq), Some(bk), Some(bv)) => Some([bq, bk, bv]),
            _ => None,
        };
        let (w_qkv, norm, eps) = ([&lw.wq, &lw.wk, &lw.wv], &lw.attn_norm, c.rms_eps);
        let freqs = w.rope_freqs.as_ref();
        let (kc, vc) = (&mut kv.k[l], &mut kv.v[l]);
        match at {
            At::Host { pos0, .. } => {
                let pos0 = *pos0;
                #[rustfmt::skip]
                b.rms_norm_qkv(&s.x, norm, eps, w_qkv, biases, t, &mut s.xb, &mut s.q, &mut s.k, &mut s.v)?;
                #[rustfmt::skip]
                b.rope_kv_append(
                    &mut s.q, &mut s.k, &s.v, kc, vc, t, c.heads, c.kv_heads, c.head_dim, pos0,
                    &c.rope, freqs,
                )?;
                #[rustfmt::skip]
                b.attention(
                    &s.q, kc, vc, t, pos0 + t, c.heads, c.kv_heads, c.head_dim, scale, &mut s.att,
                )?;
            }
            At::Step(step) => {
                #[rustfmt::skip]
                b.rms_norm_qkv_rope_kv_step(
                    &s.x, norm, eps, w_qkv, biases, &mut s.xb, &mut s.q, &mut s.k, &mut s.v, kc,
                    vc, c.heads, c.kv_heads, c.head_dim, step, &c.rope, freqs,
                )?;
                #[rustfmt::skip]
                b.attention_step(
                    &s.q, kc, vc, step, kv.n_ctx, c.heads, c.kv_heads, c.head_dim, scale,
                    &mut s.att,
                )?;
            }
        }
        let (wo, ffn_norm) = (&lw.wo, &lw.ffn_norm);
        b.matmul_add_norm(
            &s.att, wo, t, c.dim, ffn_norm, c.rms_eps, &mut s.xb, &mut s.x,
        )?;

        // feed-forward: x += w_down @ (silu(w_gate @ norm(x)) * (w_up @ norm(x)))
        let (g, u, norm) = (&lw.w_gate, &lw.w_up, &lw.ffn_norm);
        #[rustfmt::skip]
        b.rms_norm_swiglu(
            &s.x, norm, c.rms_eps, g, u, t, c.ffn_dim, &mut s.xb, &mut s.gate, &mut s.up,
            &mut s.hidden,
        )?;
        match (w.layers.get(l + 1), at) {
            // the next block's attention norm is the next op on x
            (Some(next), _) => {
                let (down, norm) = (&lw.w_down, &next.attn_norm);
                b.matmul_add_norm(
                    &s.hidden, down, t, c.dim, norm, c.rms_eps, &mut s.xb, &mut s.x,
                )?
            }
            // a decode step: the final norm is next (`decode_step`'s LM head)
            (None, At::Step(_)) => {
                let (down, norm) = (&lw.w_down, &w.output_norm);
                b.matmul_add_norm(
                    &s.hidden, down, t, c.dim, norm, c.rms_eps, &mut s.xb, &mut s.x,
                )?
            }
            (None, At::Host { .. }) => {
                b.matmul_add(&s.hidden, &lw.w_down, t, c.dim, &mut s.xb, &mut s.x)?
            }
        }
    }
    Ok(())
}

/// One greedy decode step on the device state: the token through every block, its logits to
/// `s.logits [1, vocab]`, their argmax (a NaN wins) and its value into the step.
fn decode_step<B: Backend>(
    b: &B,
    c: &ModelConfig,
    w: &Weights<B>,
    kv: &mut KvCache<B>,
    s: &mut Scratch<B>,
    step: &B::Step,
) -> Result<()> {
    run_blocks(b, c, w, kv, s, &At::Step(step))?;
    // (s.xb: the final norm's input, as the last block's down projection left it)
    #[rustfmt::skip]
    b.rms_norm_matmul(&s.x, &w.output_norm, c.rms_eps, w.lm_head(), 1, &mut s.xb, &mut s.logits)?;
    b.argmax_step(&s.logits, c.vocab_size, step)
}

/// Floats of activation scratch `Transformer::load` allocates (see `Scratch`).
fn scratch_floats(c: &ModelConfig, max_batch: usize) -> usize {
    max_batch * (2 * c.dim + 2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.ffn_dim)
        + LOGIT_ROWS * (2 * c.dim + c.vocab_size)
        + 1
}

/// On a device with a memory of its own: fail before allocating anything when the weights,
/// the KV cache and the scratch cannot fit in the free memory, with an error that says what
/// was asked for. (Each allocation is still checked: this is an early, clearer answer.)
fn check_device_memory<B: Backend>(
    backend: &B,
    file: &GgufFile,
    c: &ModelConfig,
    n_ctx: usize,
    kv_dtype: KvDtype,
    max_batch: usize,
) -> Result<()> {
    let Some(free) = backend.free_memory()? else {
        return Ok(());
    };
    let weights: u64 = file.tensors.iter().map(|t| t.nbytes).sum();
    let elem = kv_dtype.bytes() as u64;
    let kv = (2 * c.n_layers as u64)
        .saturating_mul(n_ctx as u64)
        .saturating_mul(c.kv_dim() as u64)
        .saturating_mul(elem);
    // The backend's workspace (attention partials, the tensor-core matmul's f16 copy of x)
    // for the longest weight row of the file.
    let max_cols = file
        .tensors
        .iter()
        .filter(|t| t.dims.len() >= 2)
        .map(|t| t.dims[0] as usize)
        .max()
        .unwrap_or(0);
    let workspace = backend.workspace_bytes(
        max_batch,
        n_ctx,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.vocab_size,
        max_cols,
    )?;
    let scratch = (4 * scratch_floats(c, max_batch) as u64).saturating_add(workspace);
    let needed = weights.saturating_add(kv).saturating_add(scratch);
    if needed > free {
        return Err(Error::OutOfMemory {
            what: format!(
                "loading the model ({weights} bytes of weights, a KV cache of {kv} bytes for \
                 {n_ctx} positions in {}, {scratch} bytes of scratch and workspace)",
                kv_dtype.name()
            ),
            needed,
            free,
        });
    }
    Ok(())
}

impl<B: Backend> Transformer<B> {
    /// Load `file`'s weights onto `backend` and allocate a KV cache of `n_ctx` positions.
    pub fn load(backend: B, file: &GgufFile, n_ctx: usize, kv_dtype: KvDtype) -> Result<Self> {
        let cfg = ModelConfig::from_gguf(file)?;
        if n_ctx == 0 {
            return Err(Error::invalid("n_ctx must be at least 1"));
        }
        let max_batch = MAX_BATCH.min(n_ctx);
        check_device_memory(&backend, file, &cfg, n_ctx, kv_dtype, max_batch)?;
        let weights = Weights::load(&backend, file, &cfg)?;
        let kv = KvCache::new(&backend, &cfg, n_ctx, kv_dtype)?;
        backend.reserve_workspace(
            max_batch,
            n_ctx,
            cfg.heads,
            cfg.kv_heads,
            cfg.head_dim,
            cfg.vocab_size,
        )?;
        let b = &backend;
        let s = Scratch {
            x: b.zeros(max_batch * cfg.dim)?,
            xb: b.zeros(max_batch * cfg.dim)?,
            q: b.zeros(max_batch * cfg.q_dim())?,
            k: b.zeros(max_batch * cfg.kv_dim())?,
            v: b.zeros(max_batch * cfg.kv_dim())?,
            att: b.zeros(max_batch * cfg.q_dim())?,
            gate: b.zeros(max_batch * cfg.ffn_dim)?,
            up: b.zeros(max_batch * cfg.ffn_dim)?,
            hidden: b.zeros(max_batch * cfg.ffn_dim)?,
            head_in: b.zeros(LOGIT_ROWS * cfg.dim)?,
            head_norm: b.zeros(LOGIT_ROWS * cfg.dim)?,
            logits: b.zeros(LOGIT_ROWS * cfg.vocab_size)?,
            one: b.zeros(1)?,
        };
        let mut t = Transformer {
            backend,
            cfg,
            weights,
            kv,
            max_batch,
            s,
            decode: None,
        };
        t.set_device_steps(true)?;
        Ok(t)
    }

    /// Turn device decode steps (and their graph) on or off for this model. Off, or on a
    /// backend without them: `decode_greedy` is `eval` + `last_argmax`. On: the step's device
    /// state and working memory are allocated now, so that decoding allocates nothing; the
    /// step is recorded as a graph at the first decode step unless `ROCMFORGE_GRAPHS=0`.
    pub fn set_device_steps(&mut self, on: bool) -> Result<()> {
        self.decode = None;
        if !on {
            return Ok(());
        }
        let c = &self.cfg;
        #[rustfmt::skip]
        let step = self.backend.new_step(
            self.kv.n_ctx, c.heads, c.kv_heads, c.head_dim, c.vocab_size,
        )?;
        if let Some(step) = step {
            self.decode = Some(DecodeState {
                step,
                graph: None,
                can_capture: graphs_enabled_by_env(),
                may_ahead: decode_ahead_enabled_by_env(),
                ahead: None,
                unread: 0,
                logits_of: None,
            });
        }
        Ok(())
    }

    fn check(&self, ids: &[u32], pos0: usize) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("no tokens to evaluate"));
        }
        if pos0 + ids.len() > self.kv.n_ctx {
            return Err(Error::invalid(format!(
                "{} tokens at position {pos0} do not fit the context of {} tokens",
                ids.len(),
                self.kv.n_ctx
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Run `ids` (at most `max_batch`) at positions `pos0..` through every block: their keys
    /// and values go to the KV cache, their final hidden states stay in `s.x` `[t, dim]`.
    fn blocks(&mut self, ids: &[u32], pos0: usize) -> Result<()> {
        let at = At::Host { ids, pos0 };
        let (b, c, w) = (&self.backend, &self.cfg, &self.weights);
        run_blocks(b, c, w, &mut self.kv, &mut self.s, &at)
    }

    /// Logits of hidden-state rows `row0..row0 + n` (n <= LOGIT_ROWS) into `s.logits [n, vocab]`.
    fn lm_head(&mut self, row0: usize, n: usize) -> Result<()> {
        let (b, c, s, w) = (&self.backend, &self.cfg, &mut self.s, &self.weights);
        b.copy_rows(&s.x, row0, n, c.dim, &mut s.head_in)?;
        b.rms_norm(&s.head_in, &w.output_norm, c.rms_eps, n, &mut s.head_norm)?;
        b.matmul(&s.head_norm, w.lm_head(), n, &mut s.logits)
    }

    /// Evaluate `ids` at positions `pos0..` (the cache must hold positions `0..pos0`), keeping
    /// only the last token's logits, on the device. `interrupt` is called between chunks.
    pub fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: Interrupt) -> Result<()> {
        self.check(ids, pos0)?;
        self.settle_decode()?;
        let mut pos = pos0;
        for chunk in ids.chunks(self.max_batch) {
            interrupt()?;
            self.blocks(chunk, pos)?;
            pos += chunk.len();
        }
        let last = (ids.len() - 1) % self.max_batch;
        self.lm_head(last, 1)
    }

    /// Evaluate `ids` at positions `pos0..` and copy every position's logits to
    /// `out [ids.len(), vocab]` on the host.
    pub fn eval_all(
        &mut self,
        ids: &[u32],
        pos0: usize,
        out: &mut [f32],
        interrupt: Interrupt,
    ) -> Result<()> {
        self.check(ids, pos0)?;
        self.settle_decode()?;
        let vocab = self.cfg.vocab_size;
        assert_eq!(
            out.len(),
            ids.len() * vocab,
            "eval_all: out must be [ids, vocab]"
        );
        let mut done = 0;
        for chunk in ids.chunks(self.max_batch) {
            interrupt()?;
            self.blocks(chunk, pos0 + done)?;
            for r0 in (0..chunk.len()).step_by(LOGIT_ROWS) {
                let n = LOGIT_ROWS.min(chunk.len() - r0);
                self.lm_head(r0, n)?;
                let rows = &mut out[(done + r0) * vocab..(done + r0 + n) * vocab];
                self.backend.download(&self.s.logits, rows)?;
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// The logits of the last `eval` or `decode_greedy` (its last token) on the host:
    /// `out [vocab]`.
    pub fn last_logits(&mut self, out: &mut [f32]) -> Result<()> {
        self.refresh_logits()?;
        self.backend
            .download(&self.s.logits, &mut out[..self.cfg.vocab_size])
    }

    /// A step queued ahead is read and dropped; any later evaluation writes the logits.
    fn settle_decode(&mut self) -> Result<()> {
        if let Some(d) = self.decode.as_mut() {
            d.settle(&self.backend)?;
            d.logits_of = None;
        }
        Ok(())
    }

    /// Make `s.logits` those of the last evaluation the caller asked for: after a step queued
    /// ahead has overwritten them, that step runs again.
    fn refresh_logits(&mut self) -> Result<()> {
        let Some(d) = self.decode.as_mut() else {
            return Ok(());
        };
        let (b, c, w) = (&self.backend, &self.cfg, &self.weights);
        d.settle(b)?;
        if let Some((id, pos)) = d.logits_of.take() {
            b.set_step(&mut d.step, id, pos)?;
            d.queue(b, c, w, &mut self.kv, &mut self.s)?;
            d.read(b)?;
        }
        Ok(())
    }

    /// Evaluate one token at `pos` (the cache must hold `0..pos`) and pick the next greedily:
    /// (token id, its logit), as `eval` then `last_argmax` would; `last_logits` gives its
    /// logits. On a backend with device decode steps this is the recorded step graph
    /// (recorded at the first call) and one small copy back; the id and position go to the
    /// device only when they are not what the step before left there (its pick, its position
    /// + 1).
    ///
    /// With `ahead`, the step after this one (the pick, at `pos + 1`) is queued before this
    /// one's pick is read, so that the device has work while the host takes its turn; when
    /// the next call asks for exactly that step, it only reads its result. A call that asks
    /// for something else, or any other evaluation, drops it (it ran past the caller's tokens:
    /// its cache row is written again before it is read), and `last_logits` runs this step
    /// again if asked for its logits.
    pub fn decode_greedy(&mut self, id: u32, pos: usize, ahead: bool) -> Result<(u32, f32)> {
        self.check(&[id], pos)?;
        let n_ctx = self.kv.n_ctx;
        let Some(d) = self.decode.as_mut() else {
            self.eval(&[id], pos, &mut || Ok(()))?;
            return self.last_argmax();
        };
        let (b, c, w) = (&self.backend, &self.cfg, &self.weights);
        let (kv, s) = (&mut self.kv, &mut self.s);
        d.logits_of = None;
        if d.ahead == Some((id, pos)) && d.unread == 1 {
            d.ahead = None; // queued by the call before, with its result
        } else {
            d.settle(b)?;
            b.set_step(&mut d.step, id, pos)?;
            d.queue(b, c, w, kv, s)?;
        }
        let go_on = ahead && d.may_ahead && pos + 1 < n_ctx;
        if go_on {
            d.queue(b, c, w, kv, s)?;
        }
        let (pick, value) = d.read(b)?;
        if go_on {
            d.ahead = Some((pick, pos + 1));
            d.logits_of = Some((id, pos));
        }
        Ok((pick, value))
    }

    /// Greedy pick from the last `eval`'s logits, on the device: (token id, its logit).
    /// Only the id and one float come back to the host.
    pub fn last_argmax(&mut self) -> Result<(u32, f32)> {
        self.refresh_logits()?;
        let id = self.backend.argmax(&self.s.logits, self.cfg.vocab_size)?;
        self.backend
            .copy_rows(&self.s.logits, id as usize, 1, 1, &mut self.s.one)?;
        let mut value = [0.0f32];
        self.backend.download(&self.s.one, &mut value)?;
        Ok((id, value[0]))
    }
}
