//! Sampling the next token from logits, the same on every device.
//!
//! # Semantics (one row of logits `l [vocab]`, its parameters and its history)
//!
//! 1. **Penalties** (llama.cpp's): over the row's window, the last `penalty_last_n` tokens of its
//!    history, each distinct token `t` seen `c > 0` times gets
//!    `z_t = (l_t <= 0 ? l_t * repeat : l_t / repeat) - (c * frequency + presence)`, where
//!    `c * frequency + presence` is one fused multiply-add and so is `l_t * repeat - that` (so
//!    that every device rounds the same way). Every other token keeps `z_t = l_t`.
//!    A `z` that is NaN or +inf (a NaN logit, a +inf logit) or a row whose `z` are all -inf is an
//!    error: `Error::Runtime` (Python `RocmForgeError`), never a token.
//! 2. **Order**: tokens sorted by `z` descending, the lower id first on ties. `M` = the largest
//!    `z`; `a` = the first token of the order (the argmax).
//! 3. **Temperature 0** (or one so small that `1 / T` overflows float32) is greedy: the pick is
//!    `a`, the filters below change nothing.
//! 4. **Filters**, in llama.cpp's order, each keeping a prefix of the order, so that the kept set
//!    is the first `c = min(c_k, c_p, c_m)` tokens (always at least `a`):
//!    - top-k: `c_k = k` (`k = 0` or `k >= vocab`: every token);
//!    - top-p: with `w_i = exp(z_i - M)` (temperature 1) over the top-k set and `W` their sum,
//!      `c_p` = the shortest prefix whose sum of `w` reaches `p * W` (`p = 1`: off);
//!    - min-p: `c_m` = the number of tokens with `z >= M + ln(min_p)` (float32 arithmetic,
//!      `ln(min_p)` computed once in float32; `min_p = 0`: off).
//! 5. **Draw**: weights `exp((z - M) * (1 / T))` (float32 `1 / T`) over the kept set (a -inf
//!    `z` has weight 0 and is never drawn); `u` in [0, 1) from one Philox4x32-10 block
//!    (`philox`) keyed by `(seed, sequence, position)`: key = the seed's two 32-bit halves,
//!    counter = `[position, sequence low, sequence high, 0]`, `u` = (first output word >> 8) /
//!    2^24. Walking the kept tokens in increasing id order, the pick is the first whose
//!    cumulative weight exceeds `u` times the total. The same key and logits give the same
//!    token on every run, batch size and row of a batch; devices sum in different orders, so
//!    they agree except where `u` falls within rounding of a boundary.
//! 6. **Log-probabilities** are those of the model's distribution: `log_softmax(l)` of the raw
//!    logits, before penalties, temperature and filters (what OpenAI's and vLLM's `logprobs`
//!    report by default). Each row returns its pick's, and with `n_top > 0` the `n_top` tokens
//!    of the largest raw logits (lower id first on ties), best first, with theirs.
//!
//! Parameter checks (`SampleParams::check`, both devices): temperature >= 0 and finite,
//! top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, penalties finite, repeat_penalty > 0,
//! penalty_last_n >= 0; history ids inside the vocabulary; n_top <= `MAX_TOP`.

pub mod cpu;
#[cfg(test)]
mod emulator_tests;
pub mod gpu;

use super::check_len;
use crate::device::Device;
use crate::error::{Error, Result};

/// Most top-n log-probabilities a row returns (OpenAI's `top_logprobs` limit).
pub const MAX_TOP: usize = 20;

/// One row's sampling parameters (see the module's semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = all.
    pub top_k: i64,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p; 1 = all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 = none.
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens in the window; 1 = off.
    pub repeat_penalty: f32,
    /// Subtracted from the logit of every token in the window; 0 = off.
    pub presence_penalty: f32,
    /// Times a token's count in the window, subtracted from its logit; 0 = off.
    pub frequency_penalty: f32,
    /// How many of the last tokens of the history the penalties look at; 0 = none.
    pub penalty_last_n: i64,
}

impl Default for SampleParams {
    /// llama.cpp's defaults (the SPEC's `generate` defaults).
    fn default() -> Self {
        SampleParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
        }
    }
}

impl SampleParams {
    /// `InvalidArgument` naming the first parameter outside its domain (NaN included).
    pub fn check(&self) -> Result<()> {
        let bad = |name: &str, want: &str, got: String| {
            Err(Error::invalid(format!("{name} must be {want}, got {got}")))
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                "a finite number >= 0",
                self.temperature.to_string(),
            );
        }
        if self.top_k < 0 {
            return bad("top_k", ">= 0", self.top_k.to_string());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "in (0, 1]", self.top_p.to_string());
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad("min_p", "in [0, 1]", self.min_p.to_string());
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(
                "repeat_penalty",
                "a finite number > 0",
                self.repeat_penalty.to_string(),
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad(
                "presence_penalty",
                "finite",
                self.presence_penalty.to_string(),
            );
        }
        if !self.frequency_penalty.is_finite() {
            return bad(
                "frequency_penalty",
                "finite",
                self.frequency_penalty.to_string(),
            );
        }
        if self.penalty_last_n < 0 {
            return bad("penalty_last_n", ">= 0", self.penalty_last_n.to_string());
        }
        Ok(())
    }

    /// Whether the pick is the plain argmax of the raw logits (no penalty changes a logit).
    pub fn is_plain_greedy(&self) -> bool {
        self.row_constants().inv_temperature == 0.0 && !self.penalizes()
    }

    /// Whether any penalty can change a logit.
    pub fn penalizes(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }

    /// The float32 values both devices derive from the parameters, computed once here so that
    /// they are the same bits everywhere.
    pub fn row_constants(&self) -> RowConstants {
        let inv = 1.0 / self.temperature;
        RowConstants {
            inv_temperature: if self.temperature > 0.0 && inv.is_finite() {
                inv
            } else {
                0.0
            },
            ln_min_p: self.min_p.ln(),
        }
    }
}

/// Values derived from `SampleParams` (see `row_constants`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowConstants {
    /// `1 / temperature`; 0 means greedy.
    pub inv_temperature: f32,
    /// `ln(min_p)`; -inf means min-p is off.
    pub ln_min_p: f32,
}

/// What keys a row's draw: the same key gives the same draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DrawKey {
    pub seed: u64,
    /// The sequence (request) the row belongs to.
    pub sequence: u64,
    /// The position in the sequence of the token being sampled.
    pub position: u32,
}

impl DrawKey {
    /// The uniform in [0, 1) of this key (module docs, step 5): a multiple of 2^-24, exact in
    /// float32 and float64.
    pub fn uniform(&self) -> f64 {
        let out = philox4x32_10(
            [
                self.position,
                self.sequence as u32,
                (self.sequence >> 32) as u32,
                0,
            ],
            [self.seed as u32, (self.seed >> 32) as u32],
        );
        (out[0] >> 8) as f64 * (1.0 / (1u64 << 24) as f64)
    }
}

/// Philox4x32 with 10 rounds (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
/// as 1, 2, 3", SC 2011): each round multiplies counter words 0 and 2 by two fixed odd
/// constants, swaps the halves and mixes in the key, which is bumped by two Weyl constants
/// between rounds. kernels/sampling.hip computes the same function.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = M0 * c[0] as u64;
        let p1 = M1 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The penalized logit of a token seen `count > 0` times in the window (module docs, step 1).
#[inline]
pub fn penalize(l: f32, count: u32, repeat: f32, presence: f32, frequency: f32) -> f32 {
    let pen = (count as f32).mul_add(frequency, presence);
    if l <= 0.0 {
        l.mul_add(repeat, -pen)
    } else {
        l / repeat - pen
    }
}

/// One row to sample: its parameters, its draw key and its history (prompt and generated
/// tokens so far, oldest first; the penalties look at the last `penalty_last_n`).
#[derive(Clone, Debug)]
pub struct SampleRow<'a> {
    pub params: SampleParams,
    pub key: DrawKey,
    pub history: &'a [u32],
}

impl SampleRow<'_> {
    /// The tokens the penalties look at.
    pub fn window(&self) -> &[u32] {
        let n = (self.params.penalty_last_n.max(0) as usize).min(self.history.len());
        &self.history[self.history.len() - n..]
    }
}

/// How a decode step picks the token after it (`DecodePlan::set_pick`): the argmax of the
/// logits, or this op on them with the draw keyed by (`seed`, `sequence`, the new token's
/// position) and the penalties over the history's last `penalty_last_n` tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum StepPick {
    /// (id, its logit), lowest id on ties.
    Greedy,
    /// (id, its log-probability).
    Sample {
        params: SampleParams,
        seed: u64,
        sequence: u64,
    },
}

impl StepPick {
    /// Greedy where `params` pick the plain argmax, else sampling.
    pub fn new(params: &SampleParams, seed: u64, sequence: u64) -> StepPick {
        if params.is_plain_greedy() {
            StepPick::Greedy
        } else {
            StepPick::Sample {
                params: params.clone(),
                seed,
                sequence,
            }
        }
    }

    /// Whether the pick reads the history (so a step cannot be queued before the one before
    /// it is read).
    pub fn penalizes(&self) -> bool {
        matches!(self, StepPick::Sample { params, .. } if params.penalizes())
    }

    /// The tokens of `history` the penalties look at (empty when there are none).
    pub fn window<'h>(&self, history: &'h [u32]) -> &'h [u32] {
        match self {
            StepPick::Sample { params, .. } if params.penalizes() => {
                let n = (params.penalty_last_n.max(0) as usize).min(history.len());
                &history[history.len() - n..]
            }
            _ => &[],
        }
    }
}

/// Per row: the pick, its log-probability, and `n_top` (id, log-probability) pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// `[rows, n_top]`
    pub top_ids: Vec<u32>,
    /// `[rows, n_top]`
    pub top_logprobs: Vec<f32>,
}

/// Sample one token for each of `rows`, from `logits [logits_rows, vocab]` where
/// `logits_rows` is `rows.len()` (row r samples from row r) or 1 (every row samples from the
/// one row: many draws of one distribution). See the module docs for the semantics.
pub fn sample(
    device: &Device,
    logits: &[f32],
    logits_rows: usize,
    vocab: usize,
    rows: &[SampleRow],
    n_top: usize,
) -> Result<Samples> {
    check_args(logits.len(), logits_rows, vocab, rows, n_top)?;
    if rows.is_empty() {
        return Ok(Samples::default());
    }
    match device {
        Device::Cpu => cpu::sample(
            &logits[..logits_rows * vocab],
            logits_rows,
            vocab,
            rows,
            n_top,
        ),
        Device::Gpu(dev) => gpu::sample(
            dev,
            &logits[..logits_rows * vocab],
            logits_rows,
            vocab,
            rows,
            n_top,
        ),
    }
}

/// The checks both devices share.
fn check_args(
    len: usize,
    logits_rows: usize,
    vocab: usize,
    rows: &[SampleRow],
    n_top: usize,
) -> Result<()> {
    if vocab == 0 {
        return Err(Error::invalid("sample: vocab must be at least 1"));
    }
    if vocab > gpu::MAX_VOCAB {
        return Err(Error::invalid(format!(
            "sample: a vocabulary of {vocab} is over the {} supported",
            gpu::MAX_VOCAB
        )));
    }
    if logits_rows != 1 && logits_rows != rows.len() {
        return Err(Error::invalid(format!(
            "sample: logits has {logits_rows} rows for {} rows to sample (give one row or one per row)",
            rows.len()
        )));
    }
    let needed = logits_rows
        .checked_mul(vocab)
        .ok_or_else(|| Error::invalid("sample: logits has too many elements"))?;
    check_len("sample", "logits", len, needed)?;
    if n_top > MAX_TOP.min(vocab) {
        return Err(Error::invalid(format!(
            "logprobs must be in [0, {}] (the vocabulary holds {vocab}), got {n_top}",
            MAX_TOP
        )));
    }
    for (r, row) in rows.iter().enumerate() {
        row.params.check()?;
        if let Some(&t) = row.window().iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid(format!(
                "history of row {r} holds token id {t}, outside the vocabulary (size {vocab})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_published_known_answers() {
        // Random123's known-answer vectors for Philox4x32-10 (counter, key, output).
        let cases = [
            (
                [0u32; 4],
                [0u32; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (counter, key, want) in cases {
            assert_eq!(philox4x32_10(counter, key), want);
        }
    }

    #[test]
    fn bad_params_name_the_parameter() {
        let d = SampleParams::default;
        let cases = [
            (
                SampleParams {
                    temperature: -0.1,
                    ..d()
                },
                "temperature",
            ),
            (
                SampleParams {
                    temperature: f32::NAN,
                    ..d()
                },
                "temperature",
            ),
            (
                SampleParams {
                    temperature: f32::INFINITY,
                    ..d()
                },
                "temperature",
            ),
            (SampleParams { top_k: -1, ..d() }, "top_k"),
            (SampleParams { top_p: 0.0, ..d() }, "top_p"),
            (SampleParams { top_p: 1.5, ..d() }, "top_p"),
            (
                SampleParams {
                    top_p: f32::NAN,
                    ..d()
                },
                "top_p",
            ),
            (SampleParams { min_p: -1.0, ..d() }, "min_p"),
            (
                SampleParams {
                    min_p: f32::NAN,
                    ..d()
                },
                "min_p",
            ),
            (
                SampleParams {
                    repeat_penalty: 0.0,
                    ..d()
                },
                "repeat_penalty",
            ),
            (
                SampleParams {
                    repeat_penalty: f32::NAN,
                    ..d()
                },
                "repeat_penalty",
            ),
            (
                SampleParams {
                    presence_penalty: f32::NAN,
                    ..d()
                },
                "presence_penalty",
            ),
            (
                SampleParams {
                    frequency_penalty: f32::INFINITY,
                    ..d()
                },
                "frequency_penalty",
            ),
            (
                SampleParams {
                    penalty_last_n: -1,
                    ..d()
                },
                "penalty_last_n",
            ),
        ];
        for (p, name) in cases {
            match p.check() {
                Err(Error::InvalidArgument(m)) => assert!(m.starts_with(name), "{m}"),
                other => panic!("{p:?}: {other:?}"),
            }
        }
        assert!(d().check().is_ok());
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        assert_eq!(penalize(2.0, 1, 2.0, 0.0, 0.0), 1.0);
        assert_eq!(penalize(-2.0, 3, 2.0, 0.0, 0.0), -4.0);
        assert_eq!(penalize(2.0, 3, 1.0, 0.5, 0.25), 2.0 - 0.75 - 0.5);
        assert_eq!(
            penalize(f32::NEG_INFINITY, 2, 1.5, 1.0, 1.0),
            f32::NEG_INFINITY
        );
    }

    #[test]
    fn tiny_temperatures_are_greedy() {
        let p = SampleParams {
            temperature: 1e-40,
            ..Default::default()
        };
        assert_eq!(p.row_constants().inv_temperature, 0.0);
        assert!(p.is_plain_greedy());
        assert_eq!(
            SampleParams {
                min_p: 0.0,
                ..Default::default()
            }
            .row_constants()
            .ln_min_p,
            f32::NEG_INFINITY
        );
    }
}
