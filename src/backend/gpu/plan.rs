//! The GPU's decode plan: a model's recorded one-token step (`graph::StepGraph`) matched
//! against the fused kernels this backend has, as ggml's CUDA backend matches graph nodes, then
//! run as a list of launches, recorded once as a graph and replayed for every token.
//!
//! What the matcher fuses (each only where the kernels take the weights' type and shapes, and
//! only where the buffers it skips are not read later):
//! - an RMS norm and the m = 1 projections of its output: the norm folded into the
//!   projections' launch (`NormSrc::Weight`), or, where the launch before is a residual
//!   projection of the norm's input, handed over by it (`NormSrc::HandedOver`: that launch also
//!   writes `x * weight` and its blocks' sums of squares; no norm launch, no extra reads);
//! - up to three projections of one input (q, k, v and their biases) in one launch; with the
//!   rope of q and k and the cache append of k and v after them, those too (`Epi::Rope`);
//! - gate and up projections and the gated activation (`Epi::Glu`);
//! - a projection and the residual add of its output (`Epi::Add`).
//! Every other op runs as the op it is (`Launch::Op`), with the step's token id and position
//! read from the plan's device state. `describe` lists what applied.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::backend::{GpuKv, GpuWeight};
use crate::backend::graph::{BufId, KvId, Op, StepGraph, WeightId};
use crate::backend::{Activation, DecodePlan, Map};
use crate::device::gpu::{DeviceBuffer, GpuDevice, GpuGraph, ReadSlot, Temp, Workspace};
use crate::device::tuning::Tuning;
use crate::error::{Error, Result};
use crate::ops::attention::gpu::KeyCount;
use crate::ops::attention::{gpu as attention, AttentionShape};
use crate::ops::kv_cache::gpu::Row;
use crate::ops::matmul::gpu::{
    self as mm, NormIn, NormOut, Projection, QkvRope, Residual, RmsNorm,
};
use crate::ops::rope::gpu::Positions;
use crate::ops::rope::RopeParams;
use crate::ops::sampling::{gpu as sampling, DrawKey, StepPick};
use crate::ops::{activation, argmax, elementwise, embedding, kv_cache, matmul, norm, rope};

/// Where a fused matvec's RMS norm comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum NormSrc {
    /// The launch's input is taken as it is.
    None,
    /// The launch normalizes `raw` itself (multiplies it by the weight, sums its squares);
    /// its recorded input (the norm's output) is not written.
    Weight { raw: BufId, w: WeightId, eps: f32 },
    /// The launch before wrote `raw * weight` into the input and its per-block sums of
    /// squares into the plan's `parts`.
    HandedOver { eps: f32 },
}

/// The rope and KV-cache append a q/k/v launch runs after its projections.
#[derive(Clone, Debug, PartialEq)]
struct RopeEpi {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    params: RopeParams,
    freq_factors: Option<WeightId>,
    k: KvId,
    v: KvId,
}

/// What a fused matvec does with its products.
#[derive(Clone, Debug, PartialEq)]
enum Epi {
    /// `out_i = x @ w_i^T (+ bias_i)`.
    Store,
    /// `out_0 += x @ w_0^T`, the residual stream; `early`: out loaded before the launch waits
    /// for the one before (no launch since the one two back has written it). `emit`: also
    /// write the next norm's input (`out * weight` to the buffer) and the sums of squares.
    Add {
        early: bool,
        emit: Option<(WeightId, BufId)>,
    },
    /// `out = act(x @ w_0^T) * (x @ w_1^T)`.
    Glu { act: Activation, out: BufId },
    /// `Store` of q (turned), k and v to the caches' row at the step's position.
    Rope(RopeEpi),
}

/// A fused m = 1 matvec launch.
#[derive(Clone, Debug, PartialEq)]
struct Matvec {
    x: BufId,
    norm: NormSrc,
    w: Vec<WeightId>,
    bias: Vec<WeightId>,
    out: Vec<BufId>,
    epi: Epi,
}

#[derive(Clone, Debug, PartialEq)]
enum Launch {
    /// A recorded op as it is.
    Op(Op),
    Matvec(Matvec),
    /// The rope of q and k and the cache appends of k and v in one launch (where the q/k/v
    /// launch cannot take them).
    RopeKv {
        q: BufId,
        k: BufId,
        v: BufId,
        rope: RopeEpi,
    },
    /// The step's pick into the state: the argmax, or the sampling op (`set_pick`).
    Pick {
        x: BufId,
        n: usize,
    },
}

impl Launch {
    /// One line of `describe` (launches of one kind say the same).
    fn label(&self) -> String {
        match self {
            Launch::Op(op) => format!("op {}", op_name(op)),
            Launch::Pick { .. } => {
                "argmax (or sampling) of the logits into the step state".to_string()
            }
            Launch::RopeKv { .. } => "fused rope of q and k + KV append".to_string(),
            Launch::Matvec(m) => {
                let what = match &m.epi {
                    Epi::Store if m.w.len() == 1 => "fused matvec".to_string(),
                    Epi::Store => format!("fused {} matvecs", m.w.len()),
                    Epi::Add { emit: None, .. } => "fused matvec + residual add".to_string(),
                    Epi::Add { emit: Some(_), .. } => {
                        "fused matvec + residual add + next norm's input".to_string()
                    }
                    Epi::Glu { act, .. } => format!("fused gate/up matvecs + {}", act.name()),
                    Epi::Rope(_) => "fused q/k/v matvecs + rope + KV append".to_string(),
                };
                let bias = if m.bias.is_empty() { "" } else { " + bias" };
                let norm = match m.norm {
                    NormSrc::None => "",
                    NormSrc::Weight { .. } => ", RMS norm folded in",
                    NormSrc::HandedOver { .. } => ", RMS norm handed over",
                };
                format!("{what}{bias}{norm}")
            }
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Embedding { .. } => "embedding",
        Op::RmsNorm { .. } => "rms_norm",
        Op::Matmul { .. } => "matvec",
        Op::Add { .. } => "add",
        Op::AddBias { .. } => "add_bias",
        Op::Glu { .. } => "glu",
        Op::Map { .. } => "map",
        Op::Rope { .. } => "rope",
        Op::KvAppend { .. } => "kv_append",
        Op::Attention { .. } => "attention",
        Op::CopyRows { .. } => "copy_rows",
    }
}

/// Byte offsets in the step state (int32 `[4]`): the input token id and position (the
/// pick launch leaves its pick and position + 1 there), and the pick and its value (f32 bits:
/// the logit of a greedy pick, the log-probability of a sampled one).
const STEP_ID: usize = 0;
const STEP_POS: usize = 4;
const STEP_PICK: usize = 8;
/// Step results that may be queued and not yet read: the step being read and one queued
/// after it (`Transformer::decode_greedy` with `ahead`), with room to spare.
const STEP_READ_SLOTS: usize = 4;

/// Reads of the steps' picks to the host.
struct StepReads {
    /// Host copies of the whole state, each taken after one step.
    slots: Vec<ReadSlot>,
    /// Slots with a copy queued and not yet returned, oldest first.
    queued: VecDeque<usize>,
    /// What the state holds at [STEP_ID, STEP_POS] as far as the host knows (None while a
    /// step may be changing it).
    held: Option<[i32; 2]>,
}

/// Which kernel the pick launch runs (`DecodePlan::set_pick`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PickKind {
    Greedy,
    Sample,
}

/// The sampling op's inputs as the device holds them.
struct SampleInputs {
    /// u32 `[sampling::PARAM_WORDS]` (`sampling::param_words`; the position comes from the
    /// step state).
    params: DeviceBuffer,
    /// int32 `[kv_rows]`: the penalties' window.
    window: DeviceBuffer,
    /// u32 `[1]` of zeros (the kernel's arrival counter).
    arrivals: DeviceBuffer,
    /// What `params` and `window` hold (None: not written yet).
    held: Option<([u32; sampling::PARAM_WORDS], Vec<u32>)>,
}

/// See the module doc.
pub struct GpuPlan {
    dev: Arc<GpuDevice>,
    tuning: Tuning,
    launches: Vec<Launch>,
    /// The recording's buffers (`None` only while a launch borrows one).
    bufs: Vec<Option<DeviceBuffer>>,
    /// The sums of squares a residual launch hands to the next norm.
    parts: DeviceBuffer,
    /// [token id, position, pick, pick's value].
    state: DeviceBuffer,
    pick: PickKind,
    sample: SampleInputs,
    /// Attention and argmax temporaries (the plan's own: a recorded graph refers to them).
    work: Workspace,
    reads: Mutex<StepReads>,
    /// The recorded step, how often `work` had moved when it was recorded, and its pick.
    graph: Option<(GpuGraph, u64, PickKind)>,
    /// False once the device declined to record (the step then runs launch by launch).
    can_capture: bool,
    logits: (BufId, usize),
    /// Cache rows (the most keys attention reads).
    kv_rows: usize,
}

/// The plan's view of the weights and caches while it matches.
struct Ctx<'a> {
    dev: &'a GpuDevice,
    tuning: &'a Tuning,
    g: &'a StepGraph,
    weights: &'a [&'a GpuWeight],
    kv: &'a [&'a GpuKv],
}

impl Ctx<'_> {
    fn w(&self, id: WeightId) -> &GpuWeight {
        self.weights[id.0]
    }

    /// The fused matvec that starts at op `i`, and the ops it takes.
    fn matvec_at(&self, i: usize) -> Option<(Matvec, usize)> {
        let ops = &self.g.ops;
        // An RMS norm of one row, then m = 1 projections of its output; or the projections.
        let (norm, j) = match ops.get(i)? {
            Op::RmsNorm {
                x,
                w,
                eps,
                rows: 1,
                out,
            } if self.tuning.fuse_norm => (Some((*x, *w, *eps, *out)), i + 1),
            _ => (None, i),
        };
        let Op::Matmul { x, w: w0, m: 1, .. } = ops.get(j)? else {
            return None;
        };
        let (x, first) = (*x, self.w(*w0));
        if norm.is_some_and(|n| n.3 != x) {
            return None;
        }
        // Up to three projections of x of one type (one launch takes one type); where the
        // types differ, the first ones of one type, and the others as launches of their own.
        let (ty, k) = (first.ty, first.cols);
        if !mm::decode_matvec_fits(&first.view()) {
            return None;
        }
        let mut w = Vec::new();
        let mut out = Vec::new();
        for op in &ops[j..] {
            match op {
                Op::Matmul {
                    x: xi,
                    w: wi,
                    m: 1,
                    out: o,
                } if *xi == x
                    && w.len() < 3
                    && *o != x
                    && self.w(*wi).ty == ty
                    && self.w(*wi).cols == k =>
                {
                    w.push(*wi);
                    out.push(*o);
                }
                _ => break,
            }
        }
        let mut end = j + w.len();
        let mut mv = Matvec {
            x,
            norm: NormSrc::None,
            w,
            bias: vec![],
            out,
            epi: Epi::Store,
        };
        match mv.w.len() {
            3 => {
                if let Some(bias) = self.biases_at(end, &mv.out) {
                    mv.bias = bias;
                    end += 3;
                }
                if let Some(rope) = self.rope_tail_at(end, &mv) {
                    mv.epi = Epi::Rope(rope);
                    end += 4;
                }
            }
            2 => {
                if let Some(Op::Glu {
                    gate,
                    up,
                    n,
                    act,
                    out,
                }) = ops.get(end)
                {
                    let rows = self.w(mv.w[0]).rows;
                    if [*gate, *up] == [mv.out[0], mv.out[1]]
                        && *n == rows
                        && self.w(mv.w[1]).rows == rows
                        && mm::decode_glu_fits(*act)
                        && !self.g.read_later(*gate, end + 1)
                        && !self.g.read_later(*up, end + 1)
                    {
                        mv.epi = Epi::Glu {
                            act: *act,
                            out: *out,
                        };
                        mv.out.clear();
                        end += 1;
                    }
                }
            }
            _ => {
                if let Some(Op::Add { a, b, n }) = ops.get(end) {
                    let rows = self.w(mv.w[0]).rows;
                    if *b == mv.out[0] && *n == rows && !self.g.read_later(*b, end + 1) {
                        mv.out = vec![*a];
                        mv.epi = Epi::Add {
                            early: false,
                            emit: None,
                        };
                        end += 1;
                    }
                }
            }
        }
        // The norm's output is the launch's recorded input: folding the norm in leaves it
        // unwritten, so nothing after may read it.
        if let Some((raw, w, eps, _)) = norm {
            if !self.g.read_later(x, end) {
                mv.norm = NormSrc::Weight { raw, w, eps };
                return Some((mv, end));
            }
            return None;
        }
        Some((mv, end))
    }

    /// Three `AddBias` of the three outputs at op `i`, in order.
    fn biases_at(&self, i: usize, out: &[BufId]) -> Option<Vec<WeightId>> {
        let mut bias = Vec::new();
        for (op, o) in self.g.ops.get(i..i + 3)?.iter().zip(out) {
            match op {
                Op::AddBias {
                    x,
                    bias: b,
                    rows: 1,
                } if x == o => bias.push(*b),
                _ => return None,
            }
        }
        Some(bias)
    }

    /// The rope of q and k and the appends of k and v at op `i`, as the q/k/v launch's
    /// epilogue can take them (k and v are then never written: nothing after may read them).
    fn rope_tail_at(&self, i: usize, mv: &Matvec) -> Option<RopeEpi> {
        if !self.tuning.fuse_rope {
            return None;
        }
        let (q, k, v, rope) = self.rope_kv_at(i)?;
        let fits = [q, k, v] == [mv.out[0], mv.out[1], mv.out[2]]
            && !self.g.read_later(k, i + 4)
            && !self.g.read_later(v, i + 4)
            && mm::decode_qkv_rope_fits(
                self.dev,
                self.tuning,
                &self.w(mv.w[0]).view(),
                rope.heads,
                rope.kv_heads,
                rope.head_dim,
                &rope.params,
                self.kv[rope.k.0].dtype,
            );
        fits.then_some(rope)
    }

    /// The rope of one token's q and k (`[1, heads, head_dim]`, `[1, kv_heads, head_dim]`) and
    /// the appends of k and v at op `i`, with the caches of one dtype: (q, k, v, what the
    /// rope kernels take).
    fn rope_kv_at(&self, i: usize) -> Option<(BufId, BufId, BufId, RopeEpi)> {
        let tail = self.g.ops.get(i..i + 4)?;
        let (
            Op::Rope {
                x: rq,
                shape: sq,
                params,
                freq_factors,
            },
            Op::Rope {
                x: rk,
                shape: sk,
                params: pk,
                freq_factors: fk,
            },
            Op::KvAppend {
                cache: kc,
                src: ks,
                n: 1,
            },
            Op::KvAppend {
                cache: vc,
                src: vs,
                n: 1,
            },
        ) = (&tail[0], &tail[1], &tail[2], &tail[3])
        else {
            return None;
        };
        let (heads, kv_heads, head_dim) = (sq[1], sk[1], sq[2]);
        let fits = ks == rk
            && sq[0] == 1
            && sk[0] == 1
            && sk[2] == head_dim
            && params == pk
            && freq_factors == fk
            && rq != rk
            && vs != rk
            && self.kv[kc.0].dtype == self.kv[vc.0].dtype;
        let rope = RopeEpi {
            heads,
            kv_heads,
            head_dim,
            params: *params,
            freq_factors: *freq_factors,
            k: *kc,
            v: *vc,
        };
        fits.then_some((*rq, *rk, *vs, rope))
    }

    /// Whether folding the norm into `mv` saves time (every block then reads the norm's
    /// weight as well as x: small shapes only).
    fn folding_pays(&self, mv: &Matvec) -> bool {
        let w = self.w(mv.w[0]);
        let rows = mv.w.iter().map(|&id| self.w(id).rows).sum::<usize>();
        let glu = matches!(mv.epi, Epi::Glu { .. });
        let rows = if glu { rows / 2 } else { rows };
        mm::fused_norm_pays(self.dev, self.tuning, w.ty, rows, w.cols, glu)
    }
}

/// The launches of `g` (see the module doc).
fn lower(c: &Ctx) -> Vec<Launch> {
    let ops = &c.g.ops;
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        if let Some((mv, end)) = c.matvec_at(i) {
            out.push(Launch::Matvec(mv));
            i = end;
        } else if let Some((q, k, v, rope)) = c.rope_kv_at(i) {
            out.push(Launch::RopeKv { q, k, v, rope });
            i += 4;
        } else {
            out.push(Launch::Op(ops[i].clone()));
            i += 1;
        }
    }
    // A residual projection hands the norm of its output to the next launch where that one
    // would fold the same norm in.
    for i in 1..out.len() {
        let (before, after) = out.split_at_mut(i);
        let (Launch::Matvec(prev), Launch::Matvec(next)) = (&mut before[i - 1], &mut after[0])
        else {
            continue;
        };
        let NormSrc::Weight { raw, w, eps } = next.norm else {
            continue;
        };
        if let Epi::Add { emit, .. } = &mut prev.epi {
            if prev.out[0] == raw && emit.is_none() && c.w(w).cols == c.w(prev.w[0]).rows {
                *emit = Some((w, next.x));
                next.norm = NormSrc::HandedOver { eps };
            }
        }
    }
    // A norm folded in where that costs more than its own launch: its own launch.
    let mut split = Vec::with_capacity(out.len());
    for launch in out {
        match launch {
            Launch::Matvec(mut mv) => {
                if let NormSrc::Weight { raw, w, eps } = mv.norm {
                    if !c.folding_pays(&mv) {
                        split.push(Launch::Op(Op::RmsNorm {
                            x: raw,
                            w,
                            eps,
                            rows: 1,
                            out: mv.x,
                        }));
                        mv.norm = NormSrc::None;
                    }
                }
                split.push(Launch::Matvec(mv));
            }
            other => split.push(other),
        }
    }
    // The residual stream is loaded before the launch's wait where the launch just before
    // did not write it.
    for i in 0..split.len() {
        let written_before = i > 0 && launch_writes(&split[i - 1]).contains(&out_of(&split[i]));
        if let Launch::Matvec(Matvec {
            epi: Epi::Add { early, .. },
            ..
        }) = &mut split[i]
        {
            *early = !written_before;
        }
    }
    if let Some((logits, n)) = c.g.logits {
        split.push(Launch::Pick { x: logits, n });
    }
    split
}

/// The residual a launch adds into (a dummy id for other launches).
fn out_of(l: &Launch) -> BufId {
    match l {
        Launch::Matvec(m) if matches!(m.epi, Epi::Add { .. }) => m.out[0],
        _ => BufId(usize::MAX),
    }
}

/// The buffers a launch writes.
fn launch_writes(l: &Launch) -> Vec<BufId> {
    match l {
        Launch::Op(op) => op.writes().into_iter().collect(),
        Launch::Pick { .. } => vec![],
        Launch::RopeKv { q, k, .. } => vec![*q, *k],
        Launch::Matvec(m) => m.writes(),
    }
}

impl Matvec {
    /// The buffers the launch writes (caches aside).
    fn writes(&self) -> Vec<BufId> {
        let mut w = self.out.clone();
        match &self.epi {
            Epi::Glu { out, .. } => w.push(*out),
            Epi::Add {
                emit: Some((_, xw)),
                ..
            } => w.push(*xw),
            _ => {}
        }
        w
    }
}

/// Consecutive launches of one label as "label (n launches)", in order of first appearance.
fn summarize(launches: &[Launch]) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in launches {
        let label = l.label();
        match counts.iter_mut().find(|(s, _)| *s == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(s, n)| if n == 1 { s } else { format!("{s} x{n}") })
        .collect()
}

impl GpuPlan {
    /// The plan of `g` on `dev` (see the module doc); its own buffers, state and workspace
    /// are allocated now.
    pub fn new(
        dev: &Arc<GpuDevice>,
        tuning: &Tuning,
        g: &StepGraph,
        weights: &[&GpuWeight],
        kv: &[&GpuKv],
    ) -> Result<GpuPlan> {
        let c = Ctx {
            dev,
            tuning,
            g,
            weights,
            kv,
        };
        let launches = lower(&c);
        let logits = g
            .logits
            .ok_or_else(|| Error::invalid("decode plan: the recording has no logits"))?;
        let bufs = g
            .buffers
            .iter()
            .map(|&n| DeviceBuffer::zeros(dev, 4 * n.max(1), "decode plan").map(Some))
            .collect::<Result<Vec<_>>>()?;
        let widest = weights
            .iter()
            .map(|w| w.cols.max(w.rows))
            .max()
            .unwrap_or(1);
        let kv_rows = kv.iter().map(|k| k.rows).min().unwrap_or(0);
        let slots = (0..STEP_READ_SLOTS)
            .map(|_| ReadSlot::new(dev, 16, "decode step result"))
            .collect::<Result<Vec<_>>>()?;
        let plan = GpuPlan {
            dev: dev.clone(),
            tuning: tuning.clone(),
            launches,
            bufs,
            parts: DeviceBuffer::zeros(dev, 4 * widest, "decode plan norm sums")?,
            state: DeviceBuffer::zeros(dev, 16, "decode step")?,
            pick: PickKind::Greedy,
            sample: SampleInputs {
                params: DeviceBuffer::zeros(dev, 4 * sampling::PARAM_WORDS, "sampling parameters")?,
                window: DeviceBuffer::zeros(dev, 4 * kv_rows.max(1), "sampling window")?,
                arrivals: DeviceBuffer::zeros(dev, 4, "sampling arrivals")?,
                held: None,
            },
            work: Workspace::new(dev),
            reads: Mutex::new(StepReads {
                slots,
                queued: VecDeque::new(),
                held: Some([0, 0]),
            }),
            graph: None,
            can_capture: tuning.graphs && dev.supports_graphs(),
            logits,
            kv_rows,
        };
        plan.reserve_work(g, kv)?;
        Ok(plan)
    }

    /// The workspace of the step's attention (over every cache row) and pick, now.
    fn reserve_work(&self, g: &StepGraph, kv: &[&GpuKv]) -> Result<()> {
        let warp = self.dev.runtime().props().warp_size as usize;
        let sample = sampling::Split::new(self.logits.1, warp, self.tuning.sample_block)?
            .workspace_bytes(1, 0);
        let mut bytes = argmax::gpu::partial_bytes(self.logits.1).max(sample);
        for op in &g.ops {
            if let Op::Attention { a, k, .. } = op {
                let shape = AttentionShape {
                    batch: 1,
                    seq_q: 1,
                    seq_k: kv[k.0].rows,
                    heads: a.heads,
                    kv_heads: a.kv_heads,
                    head_dim: a.head_dim,
                };
                shape.check("attention")?;
                bytes = bytes.max(attention::flash_scratch_bytes(
                    &self.dev,
                    &shape,
                    true,
                    a.window,
                    self.tuning.mma,
                )?);
            }
        }
        self.work.ptr(bytes, "decode step workspace").map(|_| ())
    }

    fn buf(&self, id: BufId) -> Result<&DeviceBuffer> {
        self.bufs[id.0]
            .as_ref()
            .ok_or_else(|| Error::runtime("decode plan: a buffer is taken twice"))
    }

    /// Run `f` with the buffers `ids` taken out of the plan (mutable, distinct), and put them
    /// back whatever `f` returns.
    fn with_taken<R>(
        &mut self,
        ids: &[BufId],
        f: impl FnOnce(&GpuPlan, &mut [DeviceBuffer]) -> Result<R>,
    ) -> Result<R> {
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            match self.bufs[id.0].take() {
                Some(b) => taken.push(b),
                None => {
                    for (id, b) in ids.iter().zip(taken) {
                        self.bufs[id.0] = Some(b);
                    }
                    return Err(Error::runtime("decode plan: a buffer is taken twice"));
                }
            }
        }
        let r = f(self, &mut taken);
        for (id, b) in ids.iter().zip(taken) {
            self.bufs[id.0] = Some(b);
        }
        r
    }

    /// Queue every launch of the step (what the graph records).
    fn run(&mut self, weights: &[&GpuWeight], kv: &mut [GpuKv]) -> Result<()> {
        let launches = std::mem::take(&mut self.launches);
        let mut parts = 0usize;
        let r = (|| {
            for l in &launches {
                self.launch(l, weights, kv, &mut parts)?;
            }
            Ok(())
        })();
        self.launches = launches;
        r
    }

    fn launch(
        &mut self,
        l: &Launch,
        weights: &[&GpuWeight],
        kv: &mut [GpuKv],
        parts: &mut usize,
    ) -> Result<()> {
        match l {
            Launch::Op(op) => self.run_op(op, weights, kv),
            Launch::Pick { x, n } if self.pick == PickKind::Sample => {
                let state = self.state.ptr();
                let launch = sampling::SampleLaunch {
                    logits: self.buf(*x)?.ptr(),
                    row_stride: 0,
                    vocab: *n,
                    rows: 1,
                    params: self.sample.params.ptr(),
                    window: self.sample.window.ptr(),
                    window_stride: self.kv_rows,
                    out_id: state + STEP_PICK as u64,
                    out_logprob: state + STEP_PICK as u64 + 4,
                    top_id: 0,
                    top_logprob: 0,
                    n_top: 0,
                    next_step: state + STEP_ID as u64,
                    arrivals: self.sample.arrivals.ptr(),
                };
                sampling::launch_sample_to(
                    &self.dev,
                    &launch,
                    self.tuning.sample_block,
                    Temp::Own(&self.work),
                )
            }
            Launch::Pick { x, n } => {
                let pick = self.state.ptr() + STEP_PICK as u64;
                argmax::gpu::launch_argmax_to(
                    &self.dev,
                    self.buf(*x)?,
                    1,
                    *n,
                    true,
                    pick,
                    pick + 4,
                    self.state.ptr() + STEP_ID as u64,
                    Temp::Own(&self.work),
                )
            }
            Launch::Matvec(mv) => self.run_matvec(mv, weights, kv, parts),
            Launch::RopeKv { q, k, v, rope } => self.run_rope_kv([*q, *k, *v], rope, weights, kv),
        }
    }

    fn run_rope_kv(
        &mut self,
        [q, k, v]: [BufId; 3],
        r: &RopeEpi,
        weights: &[&GpuWeight],
        kv: &mut [GpuKv],
    ) -> Result<()> {
        let dev = self.dev.clone();
        self.with_taken(&[q, k], |plan, qk| {
            let [kc, vc] = kv
                .get_disjoint_mut([r.k.0, r.v.0])
                .map_err(|_| Error::runtime("decode plan: one cache for k and v"))?;
            let ff = r
                .freq_factors
                .map(|f| weights[f.0].f32_vector("rope freq_factors"))
                .transpose()?;
            let (qb, kb) = qk.split_at_mut(1);
            let tensors = rope::gpu::RopeKv {
                q: &mut qb[0],
                k: &mut kb[0],
                v: plan.buf(v)?,
                dtype: kc.dtype,
                k_cache: &mut kc.buf,
                v_cache: &mut vc.buf,
            };
            let first = Row::Device(&plan.state, STEP_POS);
            let (h, kvh, d) = (r.heads, r.kv_heads, r.head_dim);
            rope::gpu::launch_rope_kv(&dev, tensors, 1, h, kvh, d, first, &r.params, ff)
        })
    }

    fn run_matvec(
        &mut self,
        mv: &Matvec,
        weights: &[&GpuWeight],
        kv: &mut [GpuKv],
        parts: &mut usize,
    ) -> Result<()> {
        let views: Vec<_> = mv.w.iter().map(|&w| weights[w.0].view()).collect();
        let bias = |i: usize| -> Result<Option<&DeviceBuffer>> {
            mv.bias
                .get(i)
                .map(|b| weights[b.0].f32_vector("matvec bias"))
                .transpose()
        };
        let x = match mv.norm {
            NormSrc::Weight { raw, .. } => raw,
            _ => mv.x,
        };
        let norm_weight = match mv.norm {
            NormSrc::Weight { w, .. } => Some(weights[w.0].f32_vector("rms_norm")?),
            _ => None,
        };
        let handed = *parts;
        let written = mv.writes();
        let (dev, tuning) = (self.dev.clone(), self.tuning.clone());
        let blocks = self.with_taken(&written, |plan, outs| {
            let norm = match mv.norm {
                NormSrc::None => None,
                NormSrc::Weight { eps, .. } => Some(NormIn::Weight(RmsNorm {
                    weight: norm_weight.expect("weight norm"),
                    eps,
                })),
                NormSrc::HandedOver { eps } => Some(NormIn::Parts {
                    parts: &plan.parts,
                    n: handed,
                    eps,
                }),
            };
            let x = plan.buf(x)?;
            let fused = match &mv.epi {
                Epi::Rope(r) => {
                    let [kc, vc] = kv
                        .get_disjoint_mut([r.k.0, r.v.0])
                        .map_err(|_| Error::runtime("decode plan: one cache for k and v"))?;
                    let ff = r
                        .freq_factors
                        .map(|f| weights[f.0].f32_vector("rope freq_factors"))
                        .transpose()?;
                    let mut rope = QkvRope {
                        heads: r.heads,
                        kv_heads: r.kv_heads,
                        head_dim: r.head_dim,
                        params: &r.params,
                        freq_factors: ff,
                        dtype: kc.dtype,
                        k_cache: &mut kc.buf,
                        v_cache: &mut vc.buf,
                        pos: (&plan.state, STEP_POS),
                    };
                    let views = [views[0], views[1], views[2]];
                    let biases = [bias(0)?, bias(1)?, bias(2)?];
                    let (q, _) = outs.split_first_mut().expect("q");
                    mm::launch_matvec_qkv_rope(
                        &dev,
                        &tuning,
                        x,
                        norm.as_ref(),
                        views,
                        biases,
                        q,
                        &mut rope,
                    )?
                    .then_some(0)
                }
                Epi::Glu { act, .. } => mm::launch_matvec_glu(
                    &dev,
                    &tuning,
                    x,
                    &views[0],
                    &views[1],
                    &mut outs[0],
                    *act,
                    norm.as_ref(),
                )?
                .then_some(0),
                Epi::Store => {
                    let mut projections = Vec::new();
                    for (i, (w, out)) in views.iter().zip(outs.iter_mut()).enumerate() {
                        projections.push(Projection {
                            w: *w,
                            bias: bias(i)?,
                            out,
                        });
                    }
                    mm::launch_matvec_multi_blocks(
                        &dev,
                        &tuning,
                        x,
                        &mut projections,
                        Residual::Overwrite,
                        norm.as_ref(),
                        None,
                    )?
                }
                Epi::Add { early, emit } => {
                    let (resid, rest) = outs.split_first_mut().expect("residual");
                    let mut projections = [Projection {
                        w: views[0],
                        bias: None,
                        out: resid,
                    }];
                    let residual = if *early {
                        Residual::AddEarly
                    } else {
                        Residual::Add
                    };
                    let mut norm_out = match emit {
                        Some((w, _)) => Some(NormOut {
                            weight: weights[w.0].f32_vector("rms_norm")?,
                            xw: &mut rest[0],
                            parts: &plan.parts,
                        }),
                        None => None,
                    };
                    mm::launch_matvec_multi_blocks(
                        &dev,
                        &tuning,
                        x,
                        &mut projections,
                        residual,
                        norm.as_ref(),
                        norm_out.as_mut(),
                    )?
                }
            };
            fused.ok_or_else(|| {
                Error::runtime(format!(
                    "decode plan: the fused launch \"{}\" did not fit at run time",
                    Launch::Matvec(mv.clone()).label()
                ))
            })
        })?;
        if matches!(mv.epi, Epi::Add { emit: Some(_), .. }) {
            *parts = blocks;
        }
        Ok(())
    }

    /// A recorded op as it is, its token id and position from the step state.
    fn run_op(&mut self, op: &Op, weights: &[&GpuWeight], kv: &mut [GpuKv]) -> Result<()> {
        let dev = self.dev.clone();
        let written: Vec<BufId> = op.writes().into_iter().collect();
        self.with_taken(&written, |plan, outs| {
            let out = outs.first_mut();
            let state = &plan.state;
            match *op {
                Op::Embedding { table, .. } => {
                    // The id sits first in the state: the state is the kernel's id table.
                    embedding::gpu::launch_embedding(
                        &dev,
                        &weights[table.0].view(),
                        state,
                        1,
                        out.expect("out"),
                    )
                }
                Op::RmsNorm {
                    x, w, eps, rows, ..
                } => norm::gpu::launch_rms_norm(
                    &dev,
                    plan.buf(x)?,
                    weights[w.0].f32_vector("rms_norm")?,
                    eps,
                    rows,
                    weights[w.0].cols,
                    out.expect("out"),
                ),
                Op::Matmul { x, w, m, .. } => matmul::gpu::launch_matmul_model(
                    &dev,
                    &plan.tuning,
                    plan.buf(x)?,
                    &weights[w.0].view(),
                    m,
                    out.expect("out"),
                ),
                Op::Add { b, n, .. } => {
                    elementwise::gpu::launch_add(&dev, out.expect("a"), plan.buf(b)?, n)
                }
                Op::AddBias { bias, rows, .. } => {
                    let n = weights[bias.0].cols;
                    let bias = weights[bias.0].f32_vector("add_bias")?;
                    elementwise::gpu::launch_add_bias(&dev, out.expect("x"), bias, rows, n)
                }
                Op::Glu {
                    gate, up, n, act, ..
                } => activation::gpu::launch_glu(
                    &dev,
                    plan.buf(gate)?,
                    plan.buf(up)?,
                    n,
                    act,
                    out.expect("out"),
                ),
                Op::Map { n, f, .. } => match f {
                    Map::Scale(s) => elementwise::gpu::launch_scale(&dev, out.expect("x"), s, n),
                    Map::SoftCap(cap) => {
                        elementwise::gpu::launch_softcap(&dev, out.expect("x"), cap, n)
                    }
                },
                Op::Rope {
                    shape,
                    params,
                    freq_factors,
                    ..
                } => {
                    let ff = freq_factors
                        .map(|f| weights[f.0].f32_vector("rope freq_factors"))
                        .transpose()?;
                    rope::gpu::launch_rope(
                        &dev,
                        out.expect("x"),
                        shape[0],
                        shape[0],
                        shape[1],
                        shape[2],
                        Positions::TableAt(state, STEP_POS),
                        &params,
                        ff,
                    )
                }
                Op::KvAppend { cache, src, n } => {
                    let c = &mut kv[cache.0];
                    let row_len = c.row_len;
                    kv_cache::gpu::launch_kv_append_at(
                        &dev,
                        &mut c.buf,
                        c.dtype,
                        plan.buf(src)?,
                        Row::Device(state, STEP_POS),
                        n,
                        row_len,
                    )
                }
                Op::Attention { q, k, v, a, .. } => {
                    let (k, v) = (&kv[k.0], &kv[v.0]);
                    let shape = AttentionShape {
                        batch: 1,
                        seq_q: 1,
                        seq_k: plan.kv_rows,
                        heads: a.heads,
                        kv_heads: a.kv_heads,
                        head_dim: a.head_dim,
                    };
                    attention::launch_flash_attention_with(
                        &dev,
                        plan.buf(q)?,
                        &k.buf,
                        &v.buf,
                        k.dtype,
                        plan.kv_rows,
                        &shape,
                        true,
                        a.scale,
                        a.window,
                        out.expect("out"),
                        KeyCount::Device(state, STEP_POS),
                        Temp::Own(&plan.work),
                        plan.tuning.decode_attention,
                        plan.tuning.mma,
                    )
                }
                Op::CopyRows {
                    src,
                    src_row,
                    n_rows,
                    row_len,
                    dst_row,
                    ..
                } => {
                    let bytes = n_rows * row_len * 4;
                    out.expect("dst").copy_from(
                        dst_row * row_len * 4,
                        plan.buf(src)?,
                        src_row * row_len * 4,
                        bytes,
                        "copy_rows",
                    )
                }
            }
        })
    }
}

impl DecodePlan<super::GpuBackend> for GpuPlan {
    fn set_input(&mut self, id: u32, pos: usize) -> Result<()> {
        let pos = crate::device::gpu::to_i32(pos, "decode step position")?;
        let want = [id as i32, pos];
        let reads = self
            .reads
            .get_mut()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        // (the step about to run changes the state: unknown until its result is read)
        if reads.held.take() != Some(want) {
            self.state.write(&want, "decode step")?;
        }
        Ok(())
    }

    fn set_pick(&mut self, pick: &StepPick, window: &[u32]) -> Result<()> {
        let StepPick::Sample {
            params,
            seed,
            sequence,
        } = pick
        else {
            self.pick = PickKind::Greedy;
            return Ok(());
        };
        if window.len() > self.kv_rows {
            return Err(Error::invalid(format!(
                "decode step: a penalty window of {} tokens is over the context of {}",
                window.len(),
                self.kv_rows
            )));
        }
        let key = DrawKey {
            seed: *seed,
            sequence: *sequence,
            position: 0, // the kernel takes the step's
        };
        let words = sampling::param_words(params, &key, window.len());
        let s = &mut self.sample;
        if s.held.as_ref().map(|(p, _)| p) != Some(&words) {
            s.params.write(&words, "sampling parameters")?;
        }
        if s.held.as_ref().map(|(_, w)| &w[..]) != Some(window) && !window.is_empty() {
            s.window.write(window, "sampling window")?;
        }
        s.held = Some((words, window.to_vec()));
        self.pick = PickKind::Sample;
        Ok(())
    }

    fn queue(&mut self, weights: &[&GpuWeight], kv: &mut [GpuKv]) -> Result<()> {
        let replayed = match &self.graph {
            Some((graph, moves, pick)) if *moves == self.work.moves() && *pick == self.pick => {
                graph.launch("decode step graph")?;
                true
            }
            _ => false,
        };
        if !replayed {
            self.graph = None;
            // Launch by launch: this also sizes the workspace before anything is recorded.
            self.run(weights, kv)?;
            if self.can_capture {
                let moves = self.work.moves();
                let dev = self.dev.clone();
                let graph = dev.capture("decode step graph", &mut || self.run(weights, kv))?;
                if self.work.moves() != moves {
                    return Err(Error::device(
                        "decode step graph: the step's workspace moved while recording",
                    ));
                }
                self.can_capture = graph.is_some();
                self.graph = graph.map(|g| (g, moves, self.pick));
            }
        }
        let mut guard = self
            .reads
            .lock()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        let reads = &mut *guard;
        if reads.queued.len() == reads.slots.len() {
            return Err(Error::runtime(format!(
                "decode step: more than {} results queued and not read",
                reads.slots.len()
            )));
        }
        let slot = match reads.queued.back() {
            Some(&last) => (last + 1) % reads.slots.len(),
            None => 0,
        };
        reads.slots[slot].queue(&self.state, 0, "decode step result")?;
        reads.queued.push_back(slot);
        reads.held = None;
        Ok(())
    }

    fn read(&mut self) -> Result<(u32, f32)> {
        let reads = self
            .reads
            .get_mut()
            .map_err(|_| Error::runtime("decode step: poisoned lock"))?;
        let Some(&slot) = reads.queued.front() else {
            return Err(Error::runtime("decode step: no result queued"));
        };
        let mut state = [0i32; 4];
        let read = reads.slots[slot].finish(&mut state, "decode step result");
        reads.queued.pop_front(); // (a failed read is not read again)
        read?;
        debug_assert_eq!((STEP_ID, STEP_POS, STEP_PICK), (0, 4, 8));
        if reads.queued.is_empty() {
            // The last step queued left [pick, position + 1] as the state (the pick launch).
            reads.held = Some([state[0], state[1]]);
        }
        Ok((state[2] as u32, f32::from_bits(state[3] as u32)))
    }

    fn logits(&self, out: &mut [f32]) -> Result<()> {
        self.buf(self.logits.0)?.read(out, "decode step logits")
    }

    fn queues_ahead(&self) -> bool {
        self.tuning.decode_ahead
    }

    fn describe(&self) -> Vec<String> {
        summarize(&self.launches)
    }
}
