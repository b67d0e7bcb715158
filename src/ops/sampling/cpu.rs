//! CPU reference of sampling (semantics in `mod.rs`).
//!
//! Per row, O(vocab) passes (penalties, maximum, log-sum-exp, top-k and min-p by selection)
//! plus the sort of as much of the kept set as top-p needs, then one walk in id order. Rows
//! that share their logits, parameters and window (many draws of one distribution) are
//! prepared once and differ only in their draw. Preparations run in parallel.

use std::cmp::Ordering;
use std::collections::HashMap;

use rayon::prelude::*;

use super::{penalize, SampleParams, SampleRow, Samples};
use crate::error::{Error, Result};

/// `a` before `b` in the sampling order: larger value first, then the lower id.
#[inline]
fn order(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// What a row's draw needs once its distribution is known.
#[derive(Debug)]
enum Draw {
    Greedy(u32),
    /// The kept tokens of nonzero weight in increasing id order, with the inclusive sums of
    /// their weights.
    Weighted {
        ids: Vec<u32>,
        cum: Vec<f64>,
    },
}

#[derive(Debug)]
struct Prepared {
    draw: Draw,
    /// log(sum(exp(l))) of the raw logits.
    lse: f64,
    /// The `n_top` largest raw logits, best first: (id, logit).
    top: Vec<(u32, f32)>,
}

impl Draw {
    fn pick(&self, u: f64) -> u32 {
        match self {
            Draw::Greedy(id) => *id,
            Draw::Weighted { ids, cum } => {
                let total = *cum.last().expect("the argmax has weight 1");
                let at = cum.partition_point(|&c| c <= u * total);
                ids[at.min(ids.len() - 1)]
            }
        }
    }
}

pub fn sample(
    logits: &[f32],
    logits_rows: usize,
    vocab: usize,
    rows: &[SampleRow],
    n_top: usize,
) -> Result<Samples> {
    // Rows that sample the same distribution share one preparation.
    let mut group_of = Vec::with_capacity(rows.len());
    let mut firsts: Vec<usize> = Vec::new();
    if logits_rows == 1 {
        let mut seen: HashMap<([u32; 8], &[u32]), usize> = HashMap::new();
        for (r, row) in rows.iter().enumerate() {
            let g = *seen
                .entry((params_bits(&row.params), row.window()))
                .or_insert_with(|| {
                    firsts.push(r);
                    firsts.len() - 1
                });
            group_of.push(g);
        }
    } else {
        group_of.extend(0..rows.len());
        firsts.extend(0..rows.len());
    }
    let prepared = firsts
        .par_iter()
        .map(|&r| {
            let l = &logits[if logits_rows == 1 { 0 } else { r * vocab }..][..vocab];
            prepare(l, &rows[r].params, rows[r].window(), n_top)
                .map_err(|e| Error::runtime(format!("sample: row {r}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut out = Samples {
        ids: Vec::with_capacity(rows.len()),
        logprobs: Vec::with_capacity(rows.len()),
        top_ids: Vec::with_capacity(rows.len() * n_top),
        top_logprobs: Vec::with_capacity(rows.len() * n_top),
    };
    for (r, row) in rows.iter().enumerate() {
        let p = &prepared[group_of[r]];
        let id = p.draw.pick(row.key.uniform());
        let l = &logits[if logits_rows == 1 { 0 } else { r * vocab }..];
        out.ids.push(id);
        out.logprobs.push((l[id as usize] as f64 - p.lse) as f32);
        for &(t, v) in &p.top {
            out.top_ids.push(t);
            out.top_logprobs.push((v as f64 - p.lse) as f32);
        }
    }
    Ok(out)
}

/// The bits of the parameters that shape a distribution (so that rows can be grouped).
fn params_bits(p: &SampleParams) -> [u32; 8] {
    [
        p.temperature.to_bits(),
        p.top_k.clamp(0, u32::MAX as i64) as u32,
        p.top_p.to_bits(),
        p.min_p.to_bits(),
        p.repeat_penalty.to_bits(),
        p.presence_penalty.to_bits(),
        p.frequency_penalty.to_bits(),
        p.penalty_last_n.clamp(0, u32::MAX as i64) as u32,
    ]
}

/// The distribution of one row of raw logits `l [vocab]` with parameters `p` and penalty
/// window `window`.
fn prepare(l: &[f32], p: &SampleParams, window: &[u32], n_top: usize) -> Result<Prepared> {
    let vocab = l.len();
    // 1. Penalties, on a copy.
    let mut z = l.to_vec();
    if p.penalizes() && !window.is_empty() {
        let mut seen = window.to_vec();
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a == b) {
            let t = run[0] as usize;
            z[t] = penalize(
                l[t],
                run.len() as u32,
                p.repeat_penalty,
                p.presence_penalty,
                p.frequency_penalty,
            );
        }
    }
    // 2. Errors, the maximum and the argmax (lowest id on ties).
    if let Some(i) = z.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
        let what = if l[i].is_nan() || l[i] == f32::INFINITY {
            format!("the logit of token id {i} is {}", l[i])
        } else {
            format!("the penalized logit of token id {i} is {}", z[i])
        };
        return Err(Error::runtime(format!("{what}; refusing to sample")));
    }
    let (mut m, mut a, mut finite) = (f32::NEG_INFINITY, 0usize, 0usize);
    for (i, &v) in z.iter().enumerate() {
        if v > m {
            (m, a) = (v, i);
        }
        finite += (v > f32::NEG_INFINITY) as usize;
    }
    if finite == 0 {
        return Err(Error::runtime(
            "every logit is -inf; there is no token to sample",
        ));
    }
    // 6. Log-probabilities of the raw logits (all finite or -inf here).
    let raw_max = l.iter().fold(f32::NEG_INFINITY, |x, &v| x.max(v)) as f64;
    let sum: f64 = l.iter().map(|&v| (v as f64 - raw_max).exp()).sum();
    let lse = raw_max + sum.ln();
    let top = top_raw(l, n_top);

    let c = p.row_constants();
    if c.inv_temperature == 0.0 {
        return Ok(Prepared {
            draw: Draw::Greedy(a as u32),
            lse,
            top,
        });
    }
    // 4. Filters: the kept set is a prefix of the order, found by selection (top-k), a
    // threshold (min-p) and a sort of only as much as top-p needs.
    let mut cand: Vec<(f32, u32)> = z
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > f32::NEG_INFINITY)
        .map(|(i, &v)| (v, i as u32))
        .collect();
    let k = if p.top_k == 0 || p.top_k as u64 >= vocab as u64 {
        vocab
    } else {
        p.top_k as usize
    };
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, order);
        cand.truncate(k);
    }
    let weight1 = |v: f32| (v as f64 - m as f64).exp();
    let top_p_target =
        (p.top_p < 1.0).then(|| p.top_p as f64 * cand.iter().map(|c| weight1(c.0)).sum::<f64>());
    if c.ln_min_p > f32::NEG_INFINITY {
        let floor = m + c.ln_min_p;
        cand.retain(|c| c.0 >= floor);
    }
    if let Some(target) = top_p_target {
        let mut len = cand.len().min(64);
        loop {
            if len < cand.len() {
                cand.select_nth_unstable_by(len - 1, order);
            }
            cand[..len].sort_unstable_by(order);
            let mut acc = 0.0;
            let reached = cand[..len].iter().position(|c| {
                acc += weight1(c.0);
                acc >= target
            });
            if let Some(i) = reached {
                cand.truncate(i + 1);
                break;
            }
            if len == cand.len() {
                break;
            }
            len = cand.len().min(len * 4);
        }
    }
    // The last kept token of the order: kept = every token at or before it.
    let last = *cand
        .iter()
        .max_by(|x, y| order(x, y))
        .expect("the argmax is always kept");
    // 5. Weights in id order.
    let (mut ids, mut cum) = (Vec::new(), Vec::new());
    let mut acc = 0.0f64;
    for (i, &v) in z.iter().enumerate() {
        if order(&(v, i as u32), &last) == Ordering::Greater || v == f32::NEG_INFINITY {
            continue;
        }
        let w = ((v - m) * c.inv_temperature).exp();
        if w > 0.0 {
            acc += w as f64;
            ids.push(i as u32);
            cum.push(acc);
        }
    }
    Ok(Prepared {
        draw: Draw::Weighted { ids, cum },
        lse,
        top,
    })
}

/// The `n` largest raw logits, best first (lower id first on ties): (id, logit).
fn top_raw(l: &[f32], n: usize) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut all: Vec<(f32, u32)> = l.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all.into_iter().map(|(v, i)| (i, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{DrawKey, SampleParams, SampleRow};
    use super::*;

    fn row(params: SampleParams, position: u32) -> SampleRow<'static> {
        SampleRow {
            params,
            key: DrawKey {
                seed: 7,
                sequence: 0,
                position,
            },
            history: &[],
        }
    }

    /// Exact probabilities of the semantics for small rows (float64, sorting everything).
    fn exact(l: &[f32], p: &SampleParams) -> Vec<f64> {
        let m = l.iter().fold(f32::NEG_INFINITY, |x, &v| x.max(v)) as f64;
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| order(&(l[a], a as u32), &(l[b], b as u32)));
        let k = if p.top_k == 0 {
            l.len()
        } else {
            p.top_k as usize
        }
        .min(l.len());
        let w1: Vec<f64> = idx.iter().map(|&i| (l[i] as f64 - m).exp()).collect();
        let total: f64 = w1[..k].iter().sum();
        let mut c = k;
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, w) in w1[..k].iter().enumerate() {
                acc += w;
                if acc >= p.top_p as f64 * total {
                    c = c.min(i + 1);
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = m + (p.min_p as f64).ln();
            c = c.min(idx.iter().filter(|&&i| l[i] as f64 >= floor).count());
        }
        let mut probs = vec![0.0; l.len()];
        for &i in &idx[..c] {
            probs[i] = ((l[i] as f64 - m) / p.temperature as f64).exp();
        }
        let s: f64 = probs.iter().sum();
        probs.iter().map(|v| v / s).collect()
    }

    #[test]
    fn draws_follow_the_filtered_distribution() {
        let l = [0.5f32, 2.0, 1.0, 2.0, -1.0, f32::NEG_INFINITY, 1.5, 0.0];
        for params in [
            SampleParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            SampleParams {
                temperature: 0.7,
                top_k: 3,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            SampleParams {
                temperature: 1.3,
                top_k: 0,
                top_p: 0.8,
                min_p: 0.0,
                ..Default::default()
            },
            SampleParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.3,
                ..Default::default()
            },
        ] {
            let n = 40_000;
            let rows: Vec<_> = (0..n).map(|i| row(params.clone(), i)).collect();
            let out = sample(&l, 1, l.len(), &rows, 0).unwrap();
            let want = exact(&l, &params);
            let mut counts = vec![0usize; l.len()];
            out.ids.iter().for_each(|&t| counts[t as usize] += 1);
            for (i, (&c, &w)) in counts.iter().zip(&want).enumerate() {
                if w == 0.0 {
                    assert_eq!(c, 0, "{params:?}: token {i} was filtered out");
                }
                let got = c as f64 / n as f64;
                assert!((got - w).abs() < 0.01, "{params:?} token {i}: {got} vs {w}");
            }
        }
    }

    #[test]
    fn greedy_ties_penalties_and_errors() {
        let greedy = SampleParams {
            temperature: 0.0,
            ..Default::default()
        };
        let l = [1.0f32, 3.0, 3.0, -2.0];
        let one = |l: &[f32], p: SampleParams, h: &[u32]| {
            sample(
                l,
                1,
                l.len(),
                &[SampleRow {
                    params: p,
                    key: DrawKey::default(),
                    history: h,
                }],
                2,
            )
        };
        let s = one(&l, greedy.clone(), &[]).unwrap();
        assert_eq!(s.ids, [1]);
        assert_eq!(s.top_ids, [1, 2]);
        // The penalty halves token 1's logit: token 2 wins.
        let p = SampleParams {
            repeat_penalty: 2.0,
            ..greedy.clone()
        };
        assert_eq!(one(&l, p.clone(), &[1]).unwrap().ids, [2]);
        // ... but not when the window is empty.
        let p0 = SampleParams {
            penalty_last_n: 0,
            ..p
        };
        assert_eq!(one(&l, p0, &[1]).unwrap().ids, [1]);
        let e = one(&[1.0, f32::NAN], greedy.clone(), &[]).unwrap_err();
        assert!(matches!(e, Error::Runtime(_)), "{e}");
        let e = one(&[f32::NEG_INFINITY; 3], greedy, &[]).unwrap_err();
        assert!(matches!(e, Error::Runtime(_)), "{e}");
    }
}
