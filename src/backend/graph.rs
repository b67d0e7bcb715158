//! A backend that runs nothing: it writes down the ops a forward pass calls, with buffers,
//! weights and caches as numbers. The model records its one-token decode step with it once
//! (`Tokens::Step`, `Pos::Step`), and a backend turns the recording into a `DecodePlan`
//! (`Backend::plan`), matching its ops against the fused kernels it has.

use std::sync::Mutex;

use super::{Activation, Attention, Backend, Map, NoPlan, Pos, Rope, Tokens, Workload};
use crate::device::KvDtype;
use crate::error::{Error, Result};
use crate::ops::rope::RopeParams;
use crate::ops::WeightView;

/// A buffer of the recording: index into `StepGraph::buffers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufId(pub usize);

/// A weight of the recording: index into the weight table handed to `Backend::plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightId(pub usize);

/// A K or V cache of the recording: index into the cache table handed to `Backend::plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvId(pub usize);

/// One recorded call, its arguments as the `Backend` method took them. Positions and token
/// ids are the step's (`Pos::Step`, `Tokens::Step`): a recording is one decode step.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Embedding {
        table: WeightId,
        out: BufId,
    },
    RmsNorm {
        x: BufId,
        w: WeightId,
        eps: f32,
        rows: usize,
        out: BufId,
    },
    Matmul {
        x: BufId,
        w: WeightId,
        m: usize,
        out: BufId,
    },
    Add {
        a: BufId,
        b: BufId,
        n: usize,
    },
    AddBias {
        x: BufId,
        bias: WeightId,
        rows: usize,
    },
    Glu {
        gate: BufId,
        up: BufId,
        n: usize,
        act: Activation,
        out: BufId,
    },
    Map {
        x: BufId,
        n: usize,
        f: Map,
    },
    Rope {
        x: BufId,
        shape: [usize; 3],
        params: RopeParams,
        freq_factors: Option<WeightId>,
    },
    KvAppend {
        cache: KvId,
        src: BufId,
        n: usize,
    },
    Attention {
        q: BufId,
        k: KvId,
        v: KvId,
        a: Attention,
        out: BufId,
    },
    CopyRows {
        src: BufId,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: BufId,
        dst_row: usize,
    },
}

impl Op {
    /// The buffers the op reads.
    pub fn reads(&self) -> Vec<BufId> {
        match *self {
            Op::Embedding { .. } => vec![],
            Op::RmsNorm { x, .. } | Op::Matmul { x, .. } => vec![x],
            Op::Add { a, b, .. } => vec![a, b],
            Op::AddBias { x, .. } | Op::Map { x, .. } | Op::Rope { x, .. } => vec![x],
            Op::Glu { gate, up, .. } => vec![gate, up],
            Op::KvAppend { src, .. } => vec![src],
            Op::Attention { q, .. } => vec![q],
            Op::CopyRows { src, .. } => vec![src],
        }
    }

    /// The buffer the op writes, if any (caches aside).
    pub fn writes(&self) -> Option<BufId> {
        match *self {
            Op::Embedding { out, .. }
            | Op::RmsNorm { out, .. }
            | Op::Matmul { out, .. }
            | Op::Glu { out, .. }
            | Op::Attention { out, .. } => Some(out),
            Op::Add { a, .. } => Some(a),
            Op::AddBias { x, .. } | Op::Map { x, .. } | Op::Rope { x, .. } => Some(x),
            Op::CopyRows { dst, .. } => Some(dst),
            Op::KvAppend { .. } => None,
        }
    }
}

/// A recorded decode step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepGraph {
    pub ops: Vec<Op>,
    /// Floats of each buffer.
    pub buffers: Vec<usize>,
    /// The buffer that holds the step's logits when it ends, and how many there are.
    pub logits: Option<(BufId, usize)>,
}

impl StepGraph {
    /// Whether `buf` is read by an op at or after `from` before an op writes it again (the
    /// recording ends the step: what is left in a buffer then is not read).
    pub fn read_later(&self, buf: BufId, from: usize) -> bool {
        for op in &self.ops[from.min(self.ops.len())..] {
            if op.reads().contains(&buf) {
                return true;
            }
            if op.writes() == Some(buf) {
                return false;
            }
        }
        self.logits.is_some_and(|(l, _)| l == buf)
    }
}

/// The recording backend (see the module doc).
#[derive(Default)]
pub struct Recorder {
    graph: Mutex<StepGraph>,
}

/// A buffer of the recording.
#[derive(Debug)]
pub struct RecBuf {
    pub id: BufId,
    pub len: usize,
}

fn only_step(op: &str) -> Error {
    Error::invalid(format!(
        "{op}: a recorded decode step takes its token and position from the device"
    ))
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn push(&self, op: Op) -> Result<()> {
        self.graph
            .lock()
            .map_err(|_| Error::runtime("recording poisoned"))?
            .ops
            .push(op);
        Ok(())
    }

    /// The recording, with `logits` (`n` floats) as the step's output.
    pub fn finish(self, logits: &RecBuf, n: usize) -> Result<StepGraph> {
        let mut g = self
            .graph
            .into_inner()
            .map_err(|_| Error::runtime("recording poisoned"))?;
        g.logits = Some((logits.id, n));
        Ok(g)
    }
}

impl Backend for Recorder {
    type Buf = RecBuf;
    type Weight = WeightId;
    type Kv = KvId;
    type Plan = NoPlan;

    fn name(&self) -> String {
        "recorder".to_string()
    }
    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    fn zeros(&self, n: usize) -> Result<RecBuf> {
        let mut g = self
            .graph
            .lock()
            .map_err(|_| Error::runtime("recording poisoned"))?;
        g.buffers.push(n);
        Ok(RecBuf {
            id: BufId(g.buffers.len() - 1),
            len: n,
        })
    }
    fn download(&self, _: &RecBuf, _: &mut [f32]) -> Result<()> {
        Err(Error::invalid("a recording has no values to download"))
    }
    fn weight(&self, _: WeightView) -> Result<WeightId> {
        Err(Error::invalid(
            "a recording takes the weights of a loaded model (Weights::ids)",
        ))
    }
    fn kv_cache(&self, _: usize, _: usize, _: KvDtype) -> Result<KvId> {
        Err(Error::invalid(
            "a recording takes the caches of a loaded model (KvCache::ids)",
        ))
    }
    fn workspace(&self, _: &Workload, _: bool) -> Result<u64> {
        Ok(0)
    }
    fn embedding(&self, table: &WeightId, ids: Tokens, out: &mut RecBuf) -> Result<()> {
        match ids {
            Tokens::Step => self.push(Op::Embedding {
                table: *table,
                out: out.id,
            }),
            Tokens::Host(_) => Err(only_step("embedding")),
        }
    }
    fn rms_norm(
        &self,
        x: &RecBuf,
        w: &WeightId,
        eps: f32,
        rows: usize,
        out: &mut RecBuf,
    ) -> Result<()> {
        self.push(Op::RmsNorm {
            x: x.id,
            w: *w,
            eps,
            rows,
            out: out.id,
        })
    }
    fn matmul(&self, x: &RecBuf, w: &WeightId, m: usize, out: &mut RecBuf) -> Result<()> {
        self.push(Op::Matmul {
            x: x.id,
            w: *w,
            m,
            out: out.id,
        })
    }
    fn add(&self, a: &mut RecBuf, b: &RecBuf, n: usize) -> Result<()> {
        self.push(Op::Add {
            a: a.id,
            b: b.id,
            n,
        })
    }
    fn add_bias(&self, x: &mut RecBuf, bias: &WeightId, rows: usize) -> Result<()> {
        self.push(Op::AddBias {
            x: x.id,
            bias: *bias,
            rows,
        })
    }
    fn glu(
        &self,
        gate: &RecBuf,
        up: &RecBuf,
        n: usize,
        act: Activation,
        out: &mut RecBuf,
    ) -> Result<()> {
        self.push(Op::Glu {
            gate: gate.id,
            up: up.id,
            n,
            act,
            out: out.id,
        })
    }
    fn map(&self, x: &mut RecBuf, n: usize, f: Map) -> Result<()> {
        self.push(Op::Map { x: x.id, n, f })
    }
    fn rope(
        &self,
        x: &mut RecBuf,
        shape: [usize; 3],
        pos: Pos,
        rope: &Rope<WeightId>,
    ) -> Result<()> {
        if pos != Pos::Step {
            return Err(only_step("rope"));
        }
        self.push(Op::Rope {
            x: x.id,
            shape,
            params: rope.params,
            freq_factors: rope.freq_factors.copied(),
        })
    }
    fn kv_append(&self, cache: &mut KvId, src: &RecBuf, pos: Pos, n: usize) -> Result<()> {
        if pos != Pos::Step {
            return Err(only_step("kv_append"));
        }
        self.push(Op::KvAppend {
            cache: *cache,
            src: src.id,
            n,
        })
    }
    fn attention(
        &self,
        q: &RecBuf,
        k: &KvId,
        v: &KvId,
        a: &Attention,
        out: &mut RecBuf,
    ) -> Result<()> {
        if a.pos != Pos::Step {
            return Err(only_step("attention"));
        }
        self.push(Op::Attention {
            q: q.id,
            k: *k,
            v: *v,
            a: *a,
            out: out.id,
        })
    }
    fn argmax(&self, _: &RecBuf, _: usize) -> Result<(u32, f32)> {
        Err(Error::invalid(
            "a recorded step ends at its logits: the plan picks from them",
        ))
    }
    fn copy_rows(
        &self,
        src: &RecBuf,
        src_row: usize,
        n_rows: usize,
        row_len: usize,
        dst: &mut RecBuf,
        dst_row: usize,
    ) -> Result<()> {
        self.push(Op::CopyRows {
            src: src.id,
            src_row,
            n_rows,
            row_len,
            dst: dst.id,
            dst_row,
        })
    }
    fn plan(&self, _: &StepGraph, _: &[&WeightId], _: &[&KvId]) -> Result<Option<NoPlan>> {
        Ok(None)
    }
}
