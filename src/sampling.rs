//! Picking the next token of a generation from the host copy of its logits: a thin caller of
//! `ops::sampling` (one op, the same on every device; its semantics, in llama.cpp's order of
//! penalties -> top-k -> top-p -> min-p -> temperature -> draw, are written in
//! src/ops/sampling/mod.rs). Temperature 0 is greedy (argmax, lowest id on ties) after the
//! penalties. The draw is keyed by (seed, sequence, position), so a seed gives the same text
//! on every run.

use crate::device::Device;
use crate::error::Result;
use crate::ops::sampling::{self as op, DrawKey, SampleParams, SampleRow};

/// Sampling parameters of one generation (validated by `check`).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p; 1 = all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 = none.
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens; 1 = off.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted from the logits of recently seen tokens; 0 = off.
    pub presence_penalty: f32,
    /// Times a recent token's count, subtracted from its logit; 0 = off.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// The op's parameters.
    pub fn op_params(&self) -> SampleParams {
        SampleParams {
            temperature: self.temperature,
            top_k: self.top_k.min(i64::MAX as usize) as i64,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: self.repeat_last_n.min(i64::MAX as usize) as i64,
        }
    }

    /// `InvalidArgument` for values outside their domain (the op's checks).
    pub fn check(&self) -> Result<()> {
        self.op_params().check()
    }

    /// Whether the pick is the plain argmax of the logits (so a backend may do it on device).
    pub fn is_plain_greedy(&self) -> bool {
        self.op_params().is_plain_greedy()
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same draws on every
/// platform and version, which "same seed, same output" needs.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A seed from the clock, for runs without one.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (std::process::id() as u64).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The index of the largest value, lowest index on ties.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Pick the next token from `logits [vocab]` on the CPU. `history` is the sequence so far
/// (prompt and generated), for the penalties; `key` keys the draw (a generation uses its seed,
/// sequence 0 and the new token's position).
pub fn sample(logits: &[f32], history: &[u32], p: &SamplingParams, key: DrawKey) -> Result<u32> {
    let row = SampleRow {
        params: p.op_params(),
        key,
        history,
    };
    let out = op::sample(&Device::Cpu, logits, 1, logits.len(), &[row], 0)?;
    Ok(out.ids[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn key(position: u32) -> DrawKey {
        DrawKey {
            seed: 7,
            sequence: 0,
            position,
        }
    }

    #[test]
    fn greedy_lowest_id_on_ties() {
        let l = vec![1.0, 3.0, 3.0, -2.0];
        assert_eq!(
            sample(&l, &[], &SamplingParams::greedy(), key(0)).unwrap(),
            1
        );
    }

    #[test]
    fn nan_is_an_error() {
        let l = vec![1.0, f32::NAN];
        let e = sample(&l, &[], &SamplingParams::default(), key(0)).unwrap_err();
        assert!(matches!(e, Error::Runtime(_)));
    }

    #[test]
    fn top_k_one_is_greedy_and_draws_follow_probabilities() {
        let logits = vec![0.5f32, 2.0, 1.0, 2.0, -1.0];
        let p = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        for i in 0..20 {
            assert_eq!(sample(&logits, &[], &p, key(i)).unwrap(), 1);
        }
        // No truncation at temperature 1: frequencies match softmax within sampling noise.
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let mut counts = [0usize; 5];
        let n = 40000;
        for i in 0..n {
            counts[sample(&logits, &[], &p, key(i as u32)).unwrap() as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let want = (l as f64).exp() / z;
            let got = counts[i] as f64 / n as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn repeat_penalty_signs() {
        // Token 0 (seen twice) halves from 2 to 1, token 1 doubles from -2 to -4: greedy then
        // picks token 2 (1.5).
        let p = SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        assert_eq!(
            sample(&[2.0, -2.0, 1.5], &[0, 1, 0], &p, key(0)).unwrap(),
            2
        );
        assert_eq!(sample(&[2.0, -2.0, 1.5], &[], &p, key(0)).unwrap(), 0);
    }

    #[test]
    fn same_key_same_token() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams::default();
        for i in 0..50 {
            assert_eq!(
                sample(&logits, &[], &p, key(i)).unwrap(),
                sample(&logits, &[], &p, key(i)).unwrap()
            );
        }
    }

    #[test]
    fn bad_params() {
        for p in [
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                min_p: -1.0,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(p.check(), Err(Error::InvalidArgument(_))), "{p:?}");
        }
    }
}
