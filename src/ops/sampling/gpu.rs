//! GPU launch of `kernels/sampling.hip` (design in its header comment).

use std::sync::Arc;

use super::{SampleParams, SampleRow, Samples};
use crate::device::gpu::{Arg, DeviceBuffer, GpuDevice, Temp};
use crate::device::kernels;
use crate::device::runtime::DevicePtr;
use crate::error::{Error, Result};

/// Tokens a thread loads from its block's slice (sampling.hip `RF_SAMPLE_ITEMS`).
pub const ITEMS: usize = 4;
/// Most candidates the last block ranks (`RF_SAMPLE_SORTED`).
pub const SORTED: usize = 256;
/// u32 words of one row's parameters (`RF_SAMPLE_PARAM_WORDS`).
pub const PARAM_WORDS: usize = 16;
/// f32 words of one slice's summary (`RF_SAMPLE_PART_WORDS`).
const PART_WORDS: usize = 16;
/// Largest vocabulary: ids are selected 8 bits a pass in three passes, and the slices of a row
/// (at most one block's worth of threads times `ITEMS`, squared) must leave each at least one
/// candidate slot.
pub const MAX_VOCAB: usize = 1 << 24;
/// Workspace one host-side launch may take (rows are launched in chunks that fit).
const HOST_WORKSPACE_BYTES: usize = 64 << 20;

/// One row's parameter words as the kernel reads them (sampling.hip `RfSampleParams`):
/// [1 / temperature (0: greedy), top_k (0: all), top_p, ln(min_p), repeat, presence,
/// frequency, window length, seed low, seed high, sequence low, sequence high, position, 0...].
pub fn param_words(
    p: &SampleParams,
    key: &super::DrawKey,
    window_len: usize,
) -> [u32; PARAM_WORDS] {
    let c = p.row_constants();
    let mut w = [0u32; PARAM_WORDS];
    w[0] = c.inv_temperature.to_bits();
    w[1] = p.top_k.clamp(0, u32::MAX as i64) as u32;
    w[2] = p.top_p.to_bits();
    w[3] = c.ln_min_p.to_bits();
    w[4] = p.repeat_penalty.to_bits();
    w[5] = p.presence_penalty.to_bits();
    w[6] = p.frequency_penalty.to_bits();
    w[7] = window_len as u32;
    w[8] = key.seed as u32;
    w[9] = (key.seed >> 32) as u32;
    w[10] = key.sequence as u32;
    w[11] = (key.sequence >> 32) as u32;
    w[12] = key.position;
    w
}

/// How a row is split: `parts` slices of `block * ITEMS` tokens, one block each, each
/// writing up to `cap` candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub block: usize,
    pub parts: usize,
    pub cap: usize,
}

impl Split {
    /// The split of a `vocab` row with `block` threads a block (`None`: the smallest multiple of
    /// the warp holding the row at `ITEMS` a thread, at most 1024).
    pub fn new(vocab: usize, warp: usize, block: Option<usize>) -> Result<Split> {
        let block = block.unwrap_or_else(|| vocab.div_ceil(ITEMS).div_ceil(warp) * warp);
        let block = block.clamp(warp, 1024 / warp * warp);
        if !block.is_multiple_of(warp) {
            return Err(Error::invalid(format!(
                "sample: a block of {block} threads is not a multiple of the warp ({warp})"
            )));
        }
        let slice = block * ITEMS;
        let parts = vocab.div_ceil(slice);
        // The last block gathers every slice's candidates, `ITEMS` a thread.
        if parts > slice || vocab > MAX_VOCAB {
            return Err(Error::invalid(format!(
                "sample: a vocabulary of {vocab} is too large for blocks of {block} threads"
            )));
        }
        Ok(Split {
            block,
            parts,
            cap: SORTED.min(slice / parts),
        })
    }

    /// Workspace bytes of `rows` rows with `n_top` top log-probabilities.
    pub fn workspace_bytes(&self, rows: usize, n_top: usize) -> usize {
        rows * self.parts * 4 * (PART_WORDS + 2 * self.cap + 2 * n_top)
    }
}

/// A launch over device memory, as a decode step would make it.
#[derive(Clone, Copy, Debug)]
pub struct SampleLaunch {
    /// float32 `[rows, vocab]`, row r at `logits + r * row_stride` floats (0: all rows read one).
    pub logits: DevicePtr,
    pub row_stride: usize,
    pub vocab: usize,
    pub rows: usize,
    /// u32 `[rows, PARAM_WORDS]` (`param_words`).
    pub params: DevicePtr,
    /// int32 `[rows, window_stride]`: row r's penalty window, its first `window length` ids.
    pub window: DevicePtr,
    pub window_stride: usize,
    /// int32 `[rows]`: the picks.
    pub out_id: DevicePtr,
    /// float32 `[rows]`: their log-probabilities; NaN where the row's logits hold NaN or +inf
    /// or no finite value (the caller raises).
    pub out_logprob: DevicePtr,
    /// int32 / float32 `[rows, n_top]` (unused when n_top is 0).
    pub top_id: DevicePtr,
    pub top_logprob: DevicePtr,
    pub n_top: usize,
    /// 0, or (rows 1) a decode step's int32 [token id, position]: the draw is keyed by
    /// position + 1 (instead of the parameters' position) and the pair becomes
    /// [the pick, position + 1], as `launch_argmax_to` leaves it.
    pub next_step: DevicePtr,
    /// u32 `[rows]` of zeros; the kernel leaves them zero (the rows' arrival counters).
    pub arrivals: DevicePtr,
}

/// Launch `kernels/sampling.hip` for `l` (see `SampleLaunch`) with blocks of `block` threads
/// (`None`: `Split::new`'s choice), its workspace (`Split::workspace_bytes`) from `temp`.
pub fn launch_sample_to(
    dev: &GpuDevice,
    l: &SampleLaunch,
    block: Option<usize>,
    temp: Temp,
) -> Result<()> {
    if l.rows == 0 {
        return Ok(());
    }
    if l.rows > 65535 {
        return Err(Error::invalid(format!(
            "sample: {} rows are over the GPU grid limit of 65535",
            l.rows
        )));
    }
    if l.next_step != 0 && l.rows != 1 {
        return Err(Error::invalid(
            "sample: a decode step's state takes one row",
        ));
    }
    if l.n_top > super::MAX_TOP {
        return Err(Error::invalid(format!(
            "sample: n_top {} is over {}",
            l.n_top,
            super::MAX_TOP
        )));
    }
    let split = Split::new(l.vocab, dev.runtime().props().warp_size as usize, block)?;
    let kernel = kernels::sample(split.block);
    let cells = l.rows * split.parts;
    temp.with(
        dev,
        split.workspace_bytes(l.rows, l.n_top),
        "sample",
        |ws| {
            let stats = ws;
            let cand_z = stats + (cells * PART_WORDS * 4) as u64;
            let cand_id = cand_z + (cells * split.cap * 4) as u64;
            let top_v = cand_id + (cells * split.cap * 4) as u64;
            let top_id = top_v + (cells * l.n_top * 4) as u64;
            dev.launch(
                "sample",
                &kernel,
                [split.parts as u32, l.rows as u32, 1],
                [split.block as u32, 1, 1],
                0,
                &[
                    Arg::Ptr(l.logits),
                    Arg::I64(l.row_stride as i64),
                    Arg::I32(l.vocab as i32),
                    Arg::Ptr(l.params),
                    Arg::Ptr(l.window),
                    Arg::I32(l.window_stride as i32),
                    Arg::Ptr(l.out_id),
                    Arg::Ptr(l.out_logprob),
                    Arg::Ptr(l.top_id),
                    Arg::Ptr(l.top_logprob),
                    Arg::I32(l.n_top as i32),
                    Arg::Ptr(l.next_step),
                    Arg::Ptr(l.arrivals),
                    Arg::Ptr(stats),
                    Arg::Ptr(cand_z),
                    Arg::Ptr(cand_id),
                    Arg::I32(split.cap as i32),
                    Arg::Ptr(top_v),
                    Arg::Ptr(top_id),
                ],
            )
        },
    )
}

pub fn sample(
    dev: &Arc<GpuDevice>,
    logits: &[f32],
    logits_rows: usize,
    vocab: usize,
    rows: &[SampleRow],
    n_top: usize,
) -> Result<Samples> {
    sample_with_block(dev, logits, logits_rows, vocab, rows, n_top, None)
}

/// `sample` with blocks of `block` threads (tests use small ones to split small rows).
pub fn sample_with_block(
    dev: &Arc<GpuDevice>,
    logits: &[f32],
    logits_rows: usize,
    vocab: usize,
    rows: &[SampleRow],
    n_top: usize,
    block: Option<usize>,
) -> Result<Samples> {
    let op = "sample";
    let n = rows.len();
    let split = Split::new(vocab, dev.runtime().props().warp_size as usize, block)?;
    let window_stride = rows
        .iter()
        .map(|r| r.window().len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut params = Vec::with_capacity(n * PARAM_WORDS);
    let mut windows = vec![0i32; n * window_stride];
    for (r, row) in rows.iter().enumerate() {
        let w = row.window();
        params.extend_from_slice(&param_words(&row.params, &row.key, w.len()));
        for (dst, &t) in windows[r * window_stride..].iter_mut().zip(w) {
            *dst = t as i32;
        }
    }
    let logits_d = DeviceBuffer::from_slice(dev, logits, op)?;
    let params_d = DeviceBuffer::from_slice(dev, &params, op)?;
    let windows_d = DeviceBuffer::from_slice(dev, &windows, op)?;
    let ids_d = DeviceBuffer::alloc(dev, n * 4, op)?;
    let logprobs_d = DeviceBuffer::alloc(dev, n * 4, op)?;
    let top_ids_d = DeviceBuffer::alloc(dev, (n * n_top).max(1) * 4, op)?;
    let top_logprobs_d = DeviceBuffer::alloc(dev, (n * n_top).max(1) * 4, op)?;
    let per_row = split.workspace_bytes(1, n_top).max(1);
    let chunk = (HOST_WORKSPACE_BYTES / per_row).clamp(1, 65535).min(n);
    let arrivals_d = DeviceBuffer::zeros(dev, chunk * 4, op)?;
    let at =
        |buf: &DeviceBuffer, r: usize, per_row_bytes: usize| buf.ptr() + (r * per_row_bytes) as u64;
    for r0 in (0..n).step_by(chunk) {
        let rows_now = chunk.min(n - r0);
        let launch = SampleLaunch {
            logits: if logits_rows == 1 {
                logits_d.ptr()
            } else {
                at(&logits_d, r0, vocab * 4)
            },
            row_stride: if logits_rows == 1 { 0 } else { vocab },
            vocab,
            rows: rows_now,
            params: at(&params_d, r0, PARAM_WORDS * 4),
            window: at(&windows_d, r0, window_stride * 4),
            window_stride,
            out_id: at(&ids_d, r0, 4),
            out_logprob: at(&logprobs_d, r0, 4),
            top_id: at(&top_ids_d, r0, n_top * 4),
            top_logprob: at(&top_logprobs_d, r0, n_top * 4),
            n_top,
            next_step: 0,
            arrivals: arrivals_d.ptr(),
        };
        launch_sample_to(dev, &launch, Some(split.block), Temp::Shared)?;
    }
    let ids: Vec<i32> = ids_d.to_vec(n, op)?;
    let logprobs: Vec<f32> = logprobs_d.to_vec(n, op)?;
    let top_ids: Vec<i32> = top_ids_d.to_vec(n * n_top, op)?;
    let top_logprobs: Vec<f32> = top_logprobs_d.to_vec(n * n_top, op)?;
    if let Some(r) = logprobs.iter().position(|v| v.is_nan()) {
        return Err(Error::runtime(format!(
            "sample: row {r}: the logits hold NaN or +inf, or no finite value; refusing to sample"
        )));
    }
    Ok(Samples {
        ids: ids.into_iter().map(|v| v as u32).collect(),
        logprobs,
        top_ids: top_ids.into_iter().map(|v| v as u32).collect(),
        top_logprobs,
    })
}
