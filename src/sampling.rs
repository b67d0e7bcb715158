//! Picking the next token from logits, in llama.cpp's default order: repeat penalty ->
//! top-k -> top-p -> min-p -> temperature -> random draw. Temperature 0 is greedy (argmax,
//! lowest id on ties) after the repeat penalty.

use crate::error::{Error, Result};

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
    /// How many of the last tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
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

    /// `InvalidArgument` for values outside their domain.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(Error::invalid(format!(
                "min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(Error::invalid(format!(
                "repeat_penalty must be a finite number > 0, got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }

    /// Whether the pick is the plain argmax of the logits (so a backend may do it on device).
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature == 0.0 && self.repeat_penalty == 1.0
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

/// Fail on NaN logits: a NaN is a broken model or kernel, never a token to sample.
pub fn check_logits(logits: &[f32]) -> Result<()> {
    if let Some(i) = logits.iter().position(|v| v.is_nan()) {
        return Err(Error::runtime(format!(
            "the model produced NaN logits (first at token id {i}); refusing to sample"
        )));
    }
    Ok(())
}

/// Apply the repeat penalty in place to the logits of every distinct token in `recent`.
pub fn apply_repeat_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for &t in recent {
        if !seen.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
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

/// Pick the next token from `logits [vocab]` (modified in place by the penalty).
/// `history` is the sequence so far (prompt and generated), for the repeat penalty.
pub fn sample(
    logits: &mut [f32],
    history: &[u32],
    p: &SamplingParams,
    rng: &mut Rng,
) -> Result<u32> {
    check_logits(logits)?;
    let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
    apply_repeat_penalty(logits, recent, p.repeat_penalty);
    if p.temperature == 0.0 {
        return Ok(argmax(logits));
    }

    // Candidates sorted by logit, descending (ties: lower id first).
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, by_logit);
        cand.truncate(p.top_k);
    }
    cand.sort_unstable_by(by_logit);

    // top-p on the probabilities at temperature 1: the shortest prefix reaching top_p.
    if p.top_p < 1.0 {
        let probs = softmax(&cand, 1.0);
        let mut cum = 0.0;
        let mut keep = cand.len();
        for (i, pr) in probs.iter().enumerate() {
            cum += pr;
            if cum >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep.max(1));
    }
    // min-p: p(token) >= min_p * p(best)  <=>  logit >= best_logit + ln(min_p).
    if p.min_p > 0.0 {
        let floor = cand[0].1 + p.min_p.ln();
        let keep = cand.iter().take_while(|c| c.1 >= floor).count();
        cand.truncate(keep.max(1));
    }

    let probs = softmax(&cand, p.temperature);
    let r = rng.next_f64();
    let mut cum = 0.0;
    for (c, pr) in cand.iter().zip(&probs) {
        cum += pr;
        if r < cum {
            return Ok(c.0);
        }
    }
    Ok(cand.last().expect("at least one candidate").0)
}

/// Probabilities of sorted candidates at `temperature` (f64 for a stable cumulative sum).
fn softmax(cand: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cand[0].1 as f64;
    let t = temperature as f64;
    let mut e: Vec<f64> = cand
        .iter()
        .map(|c| ((c.1 as f64 - max) / t).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.iter_mut().for_each(|v| *v /= sum);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_lowest_id_on_ties() {
        let mut l = vec![1.0, 3.0, 3.0, -2.0];
        assert_eq!(
            sample(&mut l, &[], &SamplingParams::greedy(), &mut Rng::new(1)).unwrap(),
            1
        );
    }

    #[test]
    fn nan_is_an_error() {
        let mut l = vec![1.0, f32::NAN];
        let e = sample(&mut l, &[], &SamplingParams::default(), &mut Rng::new(1)).unwrap_err();
        assert!(matches!(e, Error::Runtime(_)));
    }

    #[test]
    fn top_k_one_is_greedy_and_draws_follow_probabilities() {
        let logits = vec![0.5f32, 2.0, 1.0, 2.0, -1.0];
        let p = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        let mut rng = Rng::new(7);
        for _ in 0..20 {
            assert_eq!(sample(&mut logits.clone(), &[], &p, &mut rng).unwrap(), 1);
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
        for _ in 0..n {
            counts[sample(&mut logits.clone(), &[], &p, &mut rng).unwrap() as usize] += 1;
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
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repeat_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
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
