//! The forward pass of a decoder, written once over the `Backend`'s basic ops and the
//! `ModelSpec`, so the same code runs on the CPU and on GPUs and for every family of
//! `model::spec`. Everything stays on the device: the host sends token ids and receives one
//! picked id or the logits rows it asked for.
//!
//! One-token steps on a backend with a decode plan (the GPU): at load, `decode_step` is run
//! once against `graph::Recorder` with the token and position left to the device, and the
//! backend compiles that recording (`Backend::plan`: its fused kernels matched to the ops, the
//! step replayed as a graph). Every later one-token evaluation runs the plan: the id and
//! position go to the device in one small copy (none when they are the step before's pick and
//! position + 1), and only (id, logit) of the step's argmax comes back.

use crate::backend::graph::{KvId, Recorder, StepGraph, WeightId};
use crate::backend::{Attention, Backend, DecodePlan, Map, Pos, Rope, Tokens, Workload};
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvCache;
use crate::model::spec::ModelSpec;
use crate::model::weights::Weights;
use crate::model::Interrupt;
use crate::ops::sampling::{DrawKey, SampleRow, StepPick};

/// Tokens per forward chunk during prefill (bounds the activation scratch). 512: the 4096-wide
/// projections of an 8B model then fill a large GPU with 128-row tensor-core tiles.
pub const MAX_BATCH: usize = 512;
/// Rows of logits computed per LM-head call (bounds the logits scratch).
const LOGIT_ROWS: usize = 16;

/// Activation scratch, sized once for the largest chunk. Shapes `[rows, width]`.
pub struct Scratch<B: Backend> {
    x: B::Buf,       // [rows, dim]      the residual stream
    xb: B::Buf,      // [rows, dim]      a normed input, then a block's output
    xb2: B::Buf,     // [rows, dim]      a post-norm's output (post-norm families only)
    q: B::Buf,       // [rows, q_dim]
    k: B::Buf,       // [rows, kv_dim]
    v: B::Buf,       // [rows, kv_dim]
    qn: B::Buf,      // [rows, q_dim]    q after its per-head norm (QK-norm families only)
    kn: B::Buf,      // [rows, kv_dim]   k after its per-head norm (QK-norm families only)
    att: B::Buf,     // [rows, q_dim]    attention output, heads concatenated
    gate: B::Buf,    // [rows, ffn_dim]
    up: B::Buf,      // [rows, ffn_dim]
    hidden: B::Buf,  // [rows, ffn_dim]  act(gate) * up
    head_in: B::Buf, // [LOGIT_ROWS, dim] rows picked for the LM head
    logits: B::Buf,  // [LOGIT_ROWS, vocab]
}

impl<B: Backend> Scratch<B> {
    fn new(b: &B, m: &ModelSpec, rows: usize) -> Result<Self> {
        let (q_dim, kv_dim, ffn) = m.max_widths();
        let qk_norm = m.blocks.iter().any(|s| s.qk_norm);
        let post_norm = m.blocks.iter().any(|s| s.post_attn_norm || s.post_ffn_norm);
        let if_any = |on: bool, n: usize| if on { n } else { 0 };
        Ok(Scratch {
            x: b.zeros(rows * m.dim)?,
            xb: b.zeros(rows * m.dim)?,
            xb2: b.zeros(if_any(post_norm, rows * m.dim))?,
            q: b.zeros(rows * q_dim)?,
            k: b.zeros(rows * kv_dim)?,
            v: b.zeros(rows * kv_dim)?,
            qn: b.zeros(if_any(qk_norm, rows * q_dim))?,
            kn: b.zeros(if_any(qk_norm, rows * kv_dim))?,
            att: b.zeros(rows * q_dim)?,
            gate: b.zeros(rows * ffn)?,
            up: b.zeros(rows * ffn)?,
            hidden: b.zeros(rows * ffn)?,
            head_in: b.zeros(LOGIT_ROWS.min(rows.max(1)) * m.dim)?,
            logits: b.zeros(LOGIT_ROWS.min(rows.max(1)) * m.vocab)?,
        })
    }

    /// Floats `new` allocates for `rows`.
    fn floats(m: &ModelSpec, rows: usize) -> usize {
        let (q_dim, kv_dim, ffn) = m.max_widths();
        let head = LOGIT_ROWS.min(rows.max(1));
        rows * (4 * m.dim + 3 * q_dim + 3 * kv_dim + 3 * ffn) + head * (m.dim + m.vocab)
    }
}

/// Scratch of one row of a batched step: its q, k, v and attention output.
struct RowScratch<B: Backend> {
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    att: B::Buf,
}

impl<B: Backend> RowScratch<B> {
    fn new(b: &B, m: &ModelSpec) -> Result<Self> {
        let (q_dim, kv_dim, _) = m.max_widths();
        Ok(RowScratch {
            q: b.zeros(q_dim)?,
            k: b.zeros(kv_dim)?,
            v: b.zeros(kv_dim)?,
            att: b.zeros(q_dim)?,
        })
    }
}

/// The sequences of the rows `blocks` runs: what each row attends to and where its keys and
/// values go.
enum Seqs<'a, B: Backend> {
    /// Consecutive tokens of one sequence, the first at `Pos`, in one cache.
    Chunk(&'a mut KvCache<B>, Pos),
    /// One token of each of several sequences: row `r` at position `rows[r].1` of cache
    /// `rows[r].0`. Everything but attention runs on all rows at once (each weight matrix is
    /// read once for the batch); rope, the cache writes and attention run row by row.
    Batch {
        caches: &'a mut [KvCache<B>],
        rows: &'a [(usize, usize)],
        scratch: &'a mut RowScratch<B>,
    },
}

/// Run `t` tokens (`ids`) of `seqs` through every block: their keys and values go to the KV
/// cache, their final hidden states stay in `s.x` `[t, dim]`.
fn blocks<B: Backend>(
    b: &B,
    m: &ModelSpec,
    w: &Weights<B>,
    mut seqs: Seqs<B>,
    s: &mut Scratch<B>,
    ids: Tokens,
    t: usize,
) -> Result<()> {
    let (dim, eps) = (m.dim, m.rms_eps);
    b.embedding(&w.token_embd, ids, &mut s.x)?;
    if let Some(f) = m.embed_scale {
        b.map(&mut s.x, t * dim, Map::Scale(f))?;
    }
    for (l, (spec, lw)) in m.blocks.iter().zip(&w.layers).enumerate() {
        // attention: x += [post-norm] wo @ attention(rope([qk-norm] wq @ norm(x) + bq), ...)
        b.rms_norm(&s.x, &lw.attn_norm, eps, t, &mut s.xb)?;
        b.matmul(&s.xb, &lw.wq, t, &mut s.q)?;
        b.matmul(&s.xb, &lw.wk, t, &mut s.k)?;
        b.matmul(&s.xb, &lw.wv, t, &mut s.v)?;
        if let Some([bq, bk, bv]) = &lw.qkv_bias {
            b.add_bias(&mut s.q, bq, t)?;
            b.add_bias(&mut s.k, bk, t)?;
            b.add_bias(&mut s.v, bv, t)?;
        }
        let (q, k) = match &lw.qk_norm {
            Some([nq, nk]) => {
                b.rms_norm(&s.q, nq, eps, t * spec.heads, &mut s.qn)?;
                b.rms_norm(&s.k, nk, eps, t * spec.kv_heads, &mut s.kn)?;
                (&mut s.qn, &mut s.kn)
            }
            None => (&mut s.q, &mut s.k),
        };
        let rope = Rope {
            params: spec.rope,
            freq_factors: w.rope_freqs.as_ref().filter(|_| spec.rope_freq_factors),
        };
        let attention = |seq_q, pos| Attention {
            seq_q,
            pos,
            heads: spec.heads,
            kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            scale: spec.attn_scale,
            window: spec.window,
        };
        let (q_len, kv_len) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        match &mut seqs {
            Seqs::Chunk(kv, pos) => {
                let (kc, vc) = kv.layer(l);
                b.rope(q, [t, spec.heads, spec.head_dim], *pos, &rope)?;
                b.rope(k, [t, spec.kv_heads, spec.head_dim], *pos, &rope)?;
                b.kv_append(kc, k, *pos, t)?;
                b.kv_append(vc, &s.v, *pos, t)?;
                b.attention(q, kc, vc, &attention(t, *pos), &mut s.att)?;
            }
            Seqs::Batch {
                caches,
                rows,
                scratch: r,
            } => {
                for (row, &(slot, p)) in rows.iter().enumerate() {
                    let pos = Pos::At(p);
                    let (kc, vc) = caches[slot].layer(l);
                    b.copy_rows(q, row, 1, q_len, &mut r.q, 0)?;
                    b.copy_rows(k, row, 1, kv_len, &mut r.k, 0)?;
                    b.copy_rows(&s.v, row, 1, kv_len, &mut r.v, 0)?;
                    b.rope(&mut r.q, [1, spec.heads, spec.head_dim], pos, &rope)?;
                    b.rope(&mut r.k, [1, spec.kv_heads, spec.head_dim], pos, &rope)?;
                    b.kv_append(kc, &r.k, pos, 1)?;
                    b.kv_append(vc, &r.v, pos, 1)?;
                    b.attention(&r.q, kc, vc, &attention(1, pos), &mut r.att)?;
                    b.copy_rows(&r.att, 0, 1, q_len, &mut s.att, row)?;
                }
            }
        }
        b.matmul(&s.att, &lw.wo, t, &mut s.xb)?;
        match &lw.post_attn_norm {
            Some(n) => {
                b.rms_norm(&s.xb, n, eps, t, &mut s.xb2)?;
                b.add(&mut s.x, &s.xb2, t * dim)?;
            }
            None => b.add(&mut s.x, &s.xb, t * dim)?,
        }

        // feed-forward: x += [post-norm] w_down @ (act(w_gate @ norm(x)) * (w_up @ norm(x)))
        b.rms_norm(&s.x, &lw.ffn_norm, eps, t, &mut s.xb)?;
        b.matmul(&s.xb, &lw.w_gate, t, &mut s.gate)?;
        b.matmul(&s.xb, &lw.w_up, t, &mut s.up)?;
        b.glu(
            &s.gate,
            &s.up,
            t * spec.ffn_dim,
            spec.activation,
            &mut s.hidden,
        )?;
        b.matmul(&s.hidden, &lw.w_down, t, &mut s.xb)?;
        match &lw.post_ffn_norm {
            Some(n) => {
                b.rms_norm(&s.xb, n, eps, t, &mut s.xb2)?;
                b.add(&mut s.x, &s.xb2, t * dim)?;
            }
            None => b.add(&mut s.x, &s.xb, t * dim)?,
        }
    }
    Ok(())
}

/// Logits of the `n` hidden-state rows in `x` (n <= LOGIT_ROWS) into `s.logits [n, vocab]`.
fn lm_head<B: Backend>(
    b: &B,
    m: &ModelSpec,
    w: &Weights<B>,
    x: &B::Buf,
    n: usize,
    xb: &mut B::Buf,
    logits: &mut B::Buf,
) -> Result<()> {
    b.rms_norm(x, &w.output_norm, m.rms_eps, n, xb)?;
    b.matmul(xb, w.lm_head(), n, logits)?;
    if let Some(cap) = m.logit_softcap {
        b.map(logits, n * m.vocab, Map::SoftCap(cap))?;
    }
    Ok(())
}

/// One decode step of the token the device holds at the position it holds: its logits to
/// `s.logits [1, vocab]`. What `Backend::plan` compiles.
fn decode_step<B: Backend>(
    b: &B,
    m: &ModelSpec,
    w: &Weights<B>,
    kv: &mut KvCache<B>,
    s: &mut Scratch<B>,
) -> Result<()> {
    blocks(b, m, w, Seqs::Chunk(kv, Pos::Step), s, Tokens::Step, 1)?;
    lm_head(b, m, w, &s.x, 1, &mut s.xb, &mut s.logits)
}

/// The decode step of `backend`, recorded (weights and caches as their indices in
/// `Weights::table` and `KvCache::all`).
fn record_step<B: Backend>(m: &ModelSpec, w: &Weights<B>, kv: &KvCache<B>) -> Result<StepGraph> {
    let rec = Recorder::new();
    let mut index = 0;
    let w_ids = w.map::<Recorder>(&mut |_| {
        index += 1;
        WeightId(index - 1)
    });
    let mut kv_ids = kv.map::<Recorder>(|i, _| KvId(i));
    let mut s = Scratch::new(&rec, m, 1)?;
    decode_step(&rec, m, &w_ids, &mut kv_ids, &mut s)?;
    rec.finish(&s.logits, m.vocab)
}

/// Floats of activation scratch `Transformer::load` allocates (see `Scratch`).
fn scratch_floats(m: &ModelSpec, max_batch: usize) -> usize {
    Scratch::<Recorder>::floats(m, max_batch)
}

/// On a device with a memory of its own: fail before allocating anything when the weights,
/// the KV cache and the scratch cannot fit in the free memory, with an error that says what
/// was asked for. (Each allocation is still checked: this is an early, clearer answer.)
fn check_device_memory<B: Backend>(
    backend: &B,
    file: &GgufFile,
    m: &ModelSpec,
    workload: &Workload,
    kv_bytes: u64,
    kv_dtype: KvDtype,
) -> Result<()> {
    let Some(free) = backend.free_memory()? else {
        return Ok(());
    };
    let weights: u64 = file.tensors.iter().map(|t| t.nbytes).sum();
    let workspace = backend.workspace(workload, false)?;
    // The prefill scratch, and a decode plan's own one-token buffers.
    let scratch_floats = scratch_floats(m, workload.max_seq_q) + scratch_floats(m, 1);
    let scratch = (4 * scratch_floats as u64).saturating_add(workspace);
    let needed = weights.saturating_add(kv_bytes).saturating_add(scratch);
    if needed > free {
        return Err(Error::OutOfMemory {
            what: format!(
                "loading the model ({weights} bytes of weights, a KV cache of {kv_bytes} bytes \
                 for {} positions in {}, {scratch} bytes of scratch and workspace)",
                workload.max_seq_k,
                kv_dtype.name()
            ),
            needed,
            free,
        });
    }
    Ok(())
}

/// The decode plan of a model and the bookkeeping of the steps queued on it.
struct Decode<B: Backend> {
    plan: B::Plan,
    /// A step queued ahead (`decode_greedy` with `ahead`) whose result is not read yet: the
    /// (id, position) it runs, the id being the pick of the step before it.
    ahead: Option<(u32, usize)>,
    /// Results queued and not read: at rest 1 with `ahead`, else 0 (more only after an error
    /// part-way, and `settle` then reads them all).
    unread: usize,
    /// The step whose logits the caller may ask for (`last_logits`) when a step queued ahead
    /// has overwritten them since: they are computed again on demand.
    logits_of: Option<(u32, usize)>,
    /// How the plan's steps pick (`DecodePlan::set_pick`; a change waits for queued steps).
    pick: StepPick,
}

impl<B: Backend> Decode<B> {
    fn queue(&mut self, w: &Weights<B>, kv: &mut KvCache<B>) -> Result<()> {
        self.plan.queue(&w.table(), kv.all_mut())?;
        self.unread += 1;
        Ok(())
    }

    /// The oldest result queued and not read.
    fn read(&mut self) -> Result<(u32, f32)> {
        self.unread = self.unread.saturating_sub(1);
        self.plan.read()
    }

    /// Read and drop the result of a step queued ahead, if any: it ran on a token nobody asked
    /// for (its cache row is past what the caller holds, and is written again before it is
    /// read). Also any result an error left unread.
    fn settle(&mut self) -> Result<()> {
        self.ahead = None;
        while self.unread > 0 {
            self.read()?;
        }
        Ok(())
    }
}

/// Which evaluation's logits `last_logits` and `last_argmax` read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Last {
    /// The prefill path's `s.logits` row 0.
    Scratch,
    /// The decode plan's logits, and the (id, logit) its step picked from them.
    Plan((u32, f32)),
}

/// A loaded model on one backend: weights, KV cache and scratch.
pub struct Transformer<B: Backend> {
    // (declared first: dropped before the weights and caches its launches refer to)
    decode: Option<Decode<B>>,
    pub backend: B,
    pub cfg: ModelConfig,
    pub spec: ModelSpec,
    pub weights: Weights<B>,
    /// One KV cache a sequence slot (`set_slots`); `slot` is the one `eval` and `decode` use.
    /// The decode plan was made for slot 0's cache and runs only on it.
    caches: Vec<KvCache<B>>,
    slot: usize,
    max_batch: usize,
    s: Scratch<B>,
    /// Scratch of one row of a batched step (`decode_batch`), made on first use.
    row: Option<RowScratch<B>>,
    last: Last,
}

impl<B: Backend> Transformer<B> {
    /// Load `file`'s weights onto `backend` and allocate a KV cache of `n_ctx` positions.
    pub fn load(backend: B, file: &GgufFile, n_ctx: usize, kv_dtype: KvDtype) -> Result<Self> {
        let cfg = ModelConfig::from_gguf(file)?;
        if n_ctx == 0 {
            return Err(Error::invalid("n_ctx must be at least 1"));
        }
        let spec = ModelSpec::new(&cfg);
        let max_batch = MAX_BATCH.min(n_ctx);
        let workload = Workload {
            max_seq_q: max_batch,
            max_seq_k: n_ctx,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            vocab: cfg.vocab_size,
            max_weight_cols: file
                .tensors
                .iter()
                .filter(|t| t.dims.len() >= 2)
                .map(|t| t.dims[0] as usize)
                .max()
                .unwrap_or(0),
        };
        let kv_bytes = KvCache::<B>::bytes(&cfg, n_ctx, kv_dtype);
        check_device_memory(&backend, file, &spec, &workload, kv_bytes, kv_dtype)?;
        let weights = Weights::load(&backend, file, &cfg, n_ctx)?;
        let kv = KvCache::new(&backend, &cfg, n_ctx, kv_dtype)?;
        backend.workspace(&workload, true)?;
        let s = Scratch::new(&backend, &spec, max_batch)?;
        let mut t = Transformer {
            decode: None,
            backend,
            cfg,
            spec,
            weights,
            caches: vec![kv],
            slot: 0,
            max_batch,
            s,
            row: None,
            last: Last::Scratch,
        };
        t.set_plan(true)?;
        Ok(t)
    }

    /// Make (or drop) the decode plan. Off, or on a backend without plans, one-token steps
    /// are ordinary evaluations.
    pub fn set_plan(&mut self, on: bool) -> Result<()> {
        self.decode = None;
        self.last = Last::Scratch;
        if !on {
            return Ok(());
        }
        let graph = record_step(&self.spec, &self.weights, &self.caches[0])?;
        let table = self.weights.table();
        let kv = self.caches[0].all();
        if let Some(plan) = self.backend.plan(&graph, &table, &kv)? {
            self.decode = Some(Decode {
                plan,
                ahead: None,
                unread: 0,
                logits_of: None,
                pick: StepPick::Greedy,
            });
        }
        Ok(())
    }

    /// Positions each sequence slot's cache holds.
    pub fn n_ctx(&self) -> usize {
        self.caches[0].n_ctx
    }

    pub fn kv_dtype(&self) -> KvDtype {
        self.caches[0].dtype
    }

    /// Bytes of weights and KV caches on the device.
    pub fn nbytes(&self) -> usize {
        self.weights.nbytes + self.caches.iter().map(|c| c.nbytes()).sum::<usize>()
    }

    /// Sequence slots: KV caches of `n_ctx` positions each.
    pub fn slots(&self) -> usize {
        self.caches.len()
    }

    /// Make `n` sequence slots (at least 1): new slots get caches of their own, slots past
    /// `n` are freed (their sequences are lost). Slot 0 is the one the model starts with; a
    /// dropped current slot leaves slot 0 current.
    pub fn set_slots(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("a model needs at least one sequence slot"));
        }
        if n < self.caches.len() {
            self.caches.truncate(n);
            if self.slot >= n {
                self.select_slot(0)?;
            }
            return Ok(());
        }
        let (n_ctx, dtype) = (self.n_ctx(), self.kv_dtype());
        if let Some(free) = self.backend.free_memory()? {
            let more =
                (n - self.caches.len()) as u64 * KvCache::<B>::bytes(&self.cfg, n_ctx, dtype);
            if more > free {
                return Err(Error::OutOfMemory {
                    what: format!("KV caches of {n} sequence slots of {n_ctx} positions"),
                    needed: more,
                    free,
                });
            }
        }
        while self.caches.len() < n {
            let kv = KvCache::new(&self.backend, &self.cfg, n_ctx, dtype)?;
            self.caches.push(kv);
        }
        Ok(())
    }

    /// Make `slot`'s cache the one `eval`, `eval_all` and `decode` read and write.
    pub fn select_slot(&mut self, slot: usize) -> Result<()> {
        if slot >= self.caches.len() {
            return Err(Error::invalid(format!(
                "sequence slot {slot} does not exist ({} slots)",
                self.caches.len()
            )));
        }
        if slot != self.slot {
            self.settle_decode()?;
            self.slot = slot;
            self.last = Last::Scratch;
        }
        Ok(())
    }

    /// One step of several sequences at once: row `r` evaluates token `rows[r].1` at position
    /// `rows[r].2` of slot `rows[r].0` (whose cache holds `0..pos`; one row a slot), and its
    /// logits go to `out [rows, vocab]` on the host. Each weight matrix is read once for all
    /// the rows. The decode plan is not used; `last_logits` and `last_argmax` are left as they
    /// were undefined after it.
    pub fn decode_batch(&mut self, rows: &[(usize, u32, usize)], out: &mut [f32]) -> Result<()> {
        let vocab = self.cfg.vocab_size;
        if rows.is_empty() || rows.len() > self.max_batch {
            return Err(Error::invalid(format!(
                "a batched step takes 1 to {} rows, got {}",
                self.max_batch,
                rows.len()
            )));
        }
        if out.len() != rows.len() * vocab {
            return Err(Error::invalid(format!(
                "a batched step of {} rows writes {} logits, not {}",
                rows.len(),
                rows.len() * vocab,
                out.len()
            )));
        }
        for (i, &(slot, id, pos)) in rows.iter().enumerate() {
            if slot >= self.caches.len() {
                return Err(Error::invalid(format!(
                    "sequence slot {slot} does not exist ({} slots)",
                    self.caches.len()
                )));
            }
            if rows[..i].iter().any(|r| r.0 == slot) {
                return Err(Error::invalid(format!(
                    "sequence slot {slot} appears twice in one batched step"
                )));
            }
            self.check(&[id], pos)?;
        }
        self.settle_decode()?;
        self.last = Last::Scratch;
        if self.row.is_none() {
            self.row = Some(RowScratch::new(&self.backend, &self.spec)?);
        }
        let ids: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let places: Vec<(usize, usize)> = rows.iter().map(|r| (r.0, r.2)).collect();
        let (b, m, w) = (&self.backend, &self.spec, &self.weights);
        let seqs = Seqs::Batch {
            caches: &mut self.caches,
            rows: &places,
            scratch: self.row.as_mut().expect("made above"),
        };
        blocks(b, m, w, seqs, &mut self.s, Tokens::Host(&ids), rows.len())?;
        for r0 in (0..rows.len()).step_by(LOGIT_ROWS) {
            let n = LOGIT_ROWS.min(rows.len() - r0);
            self.head_rows(r0, n)?;
            self.backend
                .download(&self.s.logits, &mut out[r0 * vocab..(r0 + n) * vocab])?;
        }
        Ok(())
    }

    /// What the decode plan runs (empty without one).
    pub fn plan_description(&self) -> Vec<String> {
        self.decode
            .as_ref()
            .map_or_else(Vec::new, |d| d.plan.describe())
    }

    fn check(&self, ids: &[u32], pos0: usize) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("no tokens to evaluate"));
        }
        let n_ctx = self.n_ctx();
        if pos0 + ids.len() > n_ctx {
            return Err(Error::invalid(format!(
                "{} tokens at position {pos0} do not fit the context of {n_ctx} tokens",
                ids.len(),
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

    /// Run `ids` (at most `max_batch`) at positions `pos0..` through every block.
    fn run_blocks(&mut self, ids: &[u32], pos0: usize) -> Result<()> {
        let (b, m, w) = (&self.backend, &self.spec, &self.weights);
        let t = ids.len();
        let seqs = Seqs::Chunk(&mut self.caches[self.slot], Pos::At(pos0));
        blocks(b, m, w, seqs, &mut self.s, Tokens::Host(ids), t)
    }

    /// Logits of hidden-state rows `row0..row0 + n` (n <= LOGIT_ROWS) into `s.logits [n, vocab]`.
    fn head_rows(&mut self, row0: usize, n: usize) -> Result<()> {
        let (b, m, w, s) = (&self.backend, &self.spec, &self.weights, &mut self.s);
        b.copy_rows(&s.x, row0, n, m.dim, &mut s.head_in, 0)?;
        lm_head(b, m, w, &s.head_in, n, &mut s.xb, &mut s.logits)
    }

    /// Evaluate `ids` at positions `pos0..` (the cache must hold positions `0..pos0`), keeping
    /// only the last token's logits, on the device. `interrupt` is called between chunks.
    pub fn eval(&mut self, ids: &[u32], pos0: usize, interrupt: Interrupt) -> Result<()> {
        self.check(ids, pos0)?;
        self.settle_decode()?;
        if let ([id], Some(d), 0) = (ids, self.decode.as_mut(), self.slot) {
            interrupt()?;
            // `last_argmax` reads the step's pick: a sampled pick left by a decode call
            // must not stand in for the argmax.
            if d.pick != StepPick::Greedy {
                d.plan.set_pick(&StepPick::Greedy, &[])?;
                d.pick = StepPick::Greedy;
            }
            d.plan.set_input(*id, pos0)?;
            d.queue(&self.weights, &mut self.caches[0])?;
            self.last = Last::Plan(d.read()?);
            return Ok(());
        }
        let mut pos = pos0;
        for chunk in ids.chunks(self.max_batch) {
            interrupt()?;
            self.run_blocks(chunk, pos)?;
            pos += chunk.len();
        }
        let last = (ids.len() - 1) % self.max_batch;
        self.last = Last::Scratch;
        self.head_rows(last, 1)
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
        self.last = Last::Scratch;
        let mut done = 0;
        for chunk in ids.chunks(self.max_batch) {
            interrupt()?;
            self.run_blocks(chunk, pos0 + done)?;
            for r0 in (0..chunk.len()).step_by(LOGIT_ROWS) {
                let n = LOGIT_ROWS.min(chunk.len() - r0);
                self.head_rows(r0, n)?;
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
        let out = &mut out[..self.cfg.vocab_size];
        match (self.last, &self.decode) {
            (Last::Plan(_), Some(d)) => d.plan.logits(out),
            _ => self.backend.download(&self.s.logits, out),
        }
    }

    /// A step queued ahead is read and dropped; any later evaluation writes the logits.
    fn settle_decode(&mut self) -> Result<()> {
        if let Some(d) = self.decode.as_mut() {
            d.settle()?;
            d.logits_of = None;
        }
        Ok(())
    }

    /// Make the current logits those of the last evaluation the caller asked for: after a
    /// step queued ahead has overwritten them, that step runs again.
    fn refresh_logits(&mut self) -> Result<()> {
        let Some(d) = self.decode.as_mut() else {
            return Ok(());
        };
        d.settle()?;
        if let Some((id, pos)) = d.logits_of.take() {
            d.plan.set_input(id, pos)?;
            d.queue(&self.weights, &mut self.caches[0])?;
            d.read()?;
        }
        Ok(())
    }

    /// Evaluate one token at `pos` (the cache must hold `0..pos`) and pick the next greedily:
    /// (token id, its logit), as `eval` then `last_argmax` would (see `decode`).
    pub fn decode_greedy(&mut self, id: u32, pos: usize, ahead: bool) -> Result<(u32, f32)> {
        self.decode(id, pos, &StepPick::Greedy, &[], ahead)
    }

    /// Evaluate one token at `pos` (the cache must hold `0..pos`) and pick the next: greedy,
    /// (token id, its logit), as `eval` then `last_argmax` would; or sampled, (token id, its
    /// log-probability), as `ops::sampling` on the logits would with the draw at `pos + 1` and
    /// the penalties over `pick.window(history)` (`history`: the tokens up to `id`). NaN as
    /// the value: the logits hold NaN. `last_logits` gives the step's logits. With a decode
    /// plan this is the plan's step and one small copy back.
    ///
    /// With `ahead`, the step after this one (the pick, at `pos + 1`) is queued before this
    /// one's pick is read, so that the device has work while the host takes its turn; when
    /// the next call asks for exactly that step, it only reads its result. A call that asks
    /// for something else, or any other evaluation, drops it (it ran past the caller's tokens:
    /// its cache row is written again before it is read), and `last_logits` runs this step
    /// again if asked for its logits. Penalties read the history, so with them nothing is
    /// queued ahead.
    pub fn decode(
        &mut self,
        id: u32,
        pos: usize,
        pick: &StepPick,
        history: &[u32],
        ahead: bool,
    ) -> Result<(u32, f32)> {
        self.check(&[id], pos)?;
        let n_ctx = self.n_ctx();
        let (Some(d), 0) = (self.decode.as_mut(), self.slot) else {
            self.eval(&[id], pos, &mut || Ok(()))?;
            return self.pick_last(pick, history, pos + 1);
        };
        let (w, kv) = (&self.weights, &mut self.caches[0]);
        d.logits_of = None;
        if d.ahead == Some((id, pos)) && d.unread == 1 && d.pick == *pick {
            d.ahead = None; // queued by the call before, with its result
        } else {
            d.settle()?;
            if d.pick != *pick || pick.penalizes() {
                d.plan.set_pick(pick, pick.window(history))?;
                d.pick = pick.clone();
            }
            d.plan.set_input(id, pos)?;
            d.queue(w, kv)?;
        }
        let go_on = ahead && d.plan.queues_ahead() && pos + 1 < n_ctx && !pick.penalizes();
        if go_on {
            d.queue(w, kv)?;
        }
        let (pick, value) = d.read()?;
        if go_on {
            d.ahead = Some((pick, pos + 1));
            d.logits_of = Some((id, pos));
        }
        self.last = Last::Plan((pick, value));
        Ok((pick, value))
    }

    /// The pick from the last evaluation's logits without a plan: greedy on the device, or
    /// sampled on the host (the draw at `position`).
    fn pick_last(
        &mut self,
        pick: &StepPick,
        history: &[u32],
        position: usize,
    ) -> Result<(u32, f32)> {
        let StepPick::Sample {
            params,
            seed,
            sequence,
        } = pick
        else {
            return self.last_argmax();
        };
        let mut logits = vec![0f32; self.cfg.vocab_size];
        self.last_logits(&mut logits)?;
        let row = SampleRow {
            params: params.clone(),
            key: DrawKey {
                seed: *seed,
                sequence: *sequence,
                position: position as u32,
            },
            history,
        };
        let vocab = logits.len();
        let s = crate::ops::sampling::cpu::sample(&logits, 1, vocab, &[row], 0)?;
        Ok((s.ids[0], s.logprobs[0]))
    }

    /// Greedy pick from the last evaluation's logits, on the device: (token id, its logit).
    /// Only the id and one float come back to the host.
    pub fn last_argmax(&mut self) -> Result<(u32, f32)> {
        match self.last {
            // The plan's step picked already (a step queued ahead since changed nothing of it).
            Last::Plan(pick) => Ok(pick),
            Last::Scratch => self.backend.argmax(&self.s.logits, self.cfg.vocab_size),
        }
    }
}
