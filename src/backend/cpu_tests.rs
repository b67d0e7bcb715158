//! CpuBackend against plain f64 loops written here (independent of `crate::ops`) and against
//! the `crate::ops` reference functions it wraps. Fresh random inputs every run; the seed is
//! printed (rerun with ROCMFORGE_TEST_SEED=<seed>).

use half::f16;

use super::*;
use crate::gguf::quants;
use crate::ops::attention::cpu as attn;
use crate::ops::rope::RopeParams;
use crate::test_rng::TestRng;

/// ||a - b|| / ||b||, with b in f64.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn assert_close(what: &str, a: &[f32], b: &[f64], tol: f64) {
    let e = rel_err(a, b);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `CpuBackend::weight` of a GGUF matrix given by its parts.
fn weight(
    b: &CpuBackend,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: &[u8],
) -> Result<CpuWeight> {
    b.weight(WeightView::new(ty, rows, cols, bytes)?)
}

fn f32_weight(b: &CpuBackend, rows: usize, cols: usize, x: &[f32]) -> CpuWeight {
    weight(b, GgmlType::F32, rows, cols, &f32_bytes(x)).unwrap()
}

/// Plain softmax-attention in f64: q `[seq_q, heads, d]`, k/v `[seq_k, kv_heads, d]`; causal:
/// query i, at position `p = i + seq_k - seq_q`, sees the keys `j <= p`, with a window only
/// those with `p - j < window`.
#[allow(clippy::too_many_arguments)]
fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq_q: usize,
    seq_k: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    scale: f64,
    causal: bool,
    window: Option<usize>,
) -> Vec<f64> {
    let mut out = vec![0f64; seq_q * heads * d];
    for h in 0..heads {
        let g = h / (heads / kv_heads);
        for i in 0..seq_q {
            let p = i as i64 + seq_k as i64 - seq_q as i64;
            let allowed: Vec<usize> = (0..seq_k)
                .filter(|&j| {
                    let age = p - j as i64; // how far key j lies before the query
                    !causal || (age >= 0 && window.is_none_or(|w| age < w as i64))
                })
                .collect();
            if allowed.is_empty() {
                continue;
            }
            let scores: Vec<f64> = allowed
                .iter()
                .map(|&j| {
                    (0..d)
                        .map(|c| {
                            q[(i * heads + h) * d + c] as f64 * k[(j * kv_heads + g) * d + c] as f64
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (p, &j) in e.iter().zip(&allowed) {
                for c in 0..d {
                    out[(i * heads + h) * d + c] += p / sum * v[(j * kv_heads + g) * d + c] as f64;
                }
            }
        }
    }
    out
}

#[test]
fn matmul_f32_and_f16_weights_match_f64_loops() {
    let mut rng = TestRng::for_test("matmul");
    let b = CpuBackend;
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 37, 64),
        (3, 17, 5),
        (7, 33, 96),
        (20, 50, 257),
        (64, 19, 128),
    ] {
        let x = rng.vec(m * k);
        let w = rng.vec(n * k);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let w16_bytes: Vec<u8> = w16.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (ty, bytes, wf) in [
            (GgmlType::F32, f32_bytes(&w), w.clone()),
            (
                GgmlType::F16,
                w16_bytes,
                w16.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            ),
        ] {
            let weight = weight(&b, ty, n, k, &bytes).unwrap();
            let mut out = b.zeros(m * n + 3).unwrap(); // larger than needed: prefix only
            b.matmul(&x, &weight, m, &mut out).unwrap();
            let want: Vec<f64> = (0..m * n)
                .map(|mn| {
                    (0..k)
                        .map(|c| x[mn / n * k + c] as f64 * wf[mn % n * k + c] as f64)
                        .sum()
                })
                .collect();
            assert_close(
                &format!("matmul {ty} {m}x{n}x{k}"),
                &out[..m * n],
                &want,
                1e-6,
            );
            assert_eq!(&out[m * n..], &[0.0; 3]);
            // the float path of the op layer agrees
            let mut out2 = vec![0f32; m * n];
            ops::matmul::matmul_f32(&CPU, &x, &wf, m, n, k, &mut out2).unwrap();
            assert_close("matmul_f32", &out2, &want, 1e-6);
        }
    }
}

#[test]
fn matmul_and_embedding_of_quantized_weights_match_their_dequantized_values() {
    let mut rng = TestRng::for_test("matmul_quantized");
    let b = CpuBackend;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ] {
        // At least 33 outputs: the error, mostly the activations' 8-bit rounding, is small
        // over many outputs, but over a few (one block each) it has a long tail that reaches
        // the bound.
        for &(m, n, k) in &[(33, 1, 32usize), (1, 67, 96), (9, 40, 256)] {
            if !k.is_multiple_of(ty.block_size()) {
                continue;
            }
            let bytes = match ty {
                // no quantizer for these (nor in the `gguf` package): random blocks
                GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
                    crate::ops::bench::random_weight_bytes(ty, n, k, rng.next_u64()).unwrap()
                }
                _ => match quants::quantize(ty, &rng.vec(n * k)) {
                    Ok(bytes) => bytes,
                    Err(Error::Unsupported(_)) => continue, // this build cannot quantize ty
                    Err(e) => panic!("{e}"),
                },
            };
            let mut wf = vec![0f32; n * k];
            quants::dequantize(ty, &bytes, &mut wf).unwrap();
            let weight = weight(&b, ty, n, k, &bytes).unwrap();
            let x = rng.vec(m * k);
            let mut out = b.zeros(m * n).unwrap();
            b.matmul(&x, &weight, m, &mut out).unwrap();
            let want: Vec<f64> = (0..m * n)
                .map(|mn| {
                    (0..k)
                        .map(|c| x[mn / n * k + c] as f64 * wf[mn % n * k + c] as f64)
                        .sum()
                })
                .collect();
            // The backend rounds the activations to 8 bits for quantized weights (cpu_quant, as
            // llama.cpp does): about 0.3% relative error against the exact product.
            assert_close(&format!("matmul {ty} {m}x{n}x{k}"), &out, &want, 1e-2);

            let ids = [n as u32 - 1, 0, (n / 2) as u32];
            let mut rows = b.zeros(ids.len() * k).unwrap();
            b.embedding(&weight, Tokens::Host(&ids), &mut rows).unwrap();
            for (t, &id) in ids.iter().enumerate() {
                assert_eq!(
                    &rows[t * k..(t + 1) * k],
                    &wf[id as usize * k..(id as usize + 1) * k]
                );
            }
        }
    }
}

#[test]
fn matmul_of_undequantizable_type_is_an_error_not_a_panic() {
    let b = CpuBackend;
    let ty = GgmlType::IQ2_XXS;
    if ty.can_dequantize() {
        return;
    }
    let w = weight(&b, ty, 2, 256, &vec![0u8; 2 * ty.type_size()]).unwrap();
    let err = b
        .matmul(&vec![1.0; 256], &w, 1, &mut vec![0.0; 2])
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
}

#[test]
fn weight_sizes_are_checked() {
    let b = CpuBackend;
    assert!(weight(&b, GgmlType::F32, 2, 3, &[0u8; 23]).is_err());
    assert!(weight(&b, GgmlType::Q8_0, 1, 31, &[0u8; 34]).is_err());
    assert!(weight(&b, GgmlType::F32, usize::MAX, 3, &[0u8; 24]).is_err());
}

#[test]
fn embedding_rows_of_float_and_f16_tables() {
    let mut rng = TestRng::for_test("embedding");
    let b = CpuBackend;
    let (vocab, dim) = (53, 24);
    let table = rng.vec(vocab * dim);
    let ids: Vec<u32> = (0..11)
        .map(|_| rng.below(vocab) as u32)
        .chain([0, vocab as u32 - 1])
        .collect();
    let bytes16 = quants::quantize(GgmlType::F16, &table).unwrap();
    for (ty, bytes) in [(GgmlType::F32, f32_bytes(&table)), (GgmlType::F16, bytes16)] {
        let w = weight(&b, ty, vocab, dim, &bytes).unwrap();
        let mut out = b.zeros(ids.len() * dim).unwrap();
        b.embedding(&w, Tokens::Host(&ids), &mut out).unwrap();
        for (t, &id) in ids.iter().enumerate() {
            for c in 0..dim {
                let want = table[id as usize * dim + c];
                let want = if ty == GgmlType::F16 {
                    f16::from_f32(want).to_f32()
                } else {
                    want
                };
                assert_eq!(out[t * dim + c], want);
            }
        }
        assert!(b
            .embedding(&w, Tokens::Host(&[vocab as u32]), &mut out)
            .is_err());
    }
}

#[test]
fn rms_norm_add_bias_add_swiglu_match_f64_loops() {
    let mut rng = TestRng::for_test("elementwise");
    let b = CpuBackend;
    for &(rows, dim) in &[(1, 1), (3, 7), (17, 576), (2, 4099)] {
        let x = rng.vec(rows * dim);
        let wv = rng.vec(dim);
        let w = f32_weight(&b, 1, dim, &wv);
        let eps = 1e-5f32;
        let mut out = b.zeros(rows * dim).unwrap();
        b.rms_norm(&x, &w, eps, rows, &mut out).unwrap();
        let mut want = vec![0f64; rows * dim];
        for r in 0..rows {
            let row = &x[r * dim..(r + 1) * dim];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            for c in 0..dim {
                want[r * dim + c] = row[c] as f64 / (ms + eps as f64).sqrt() * wv[c] as f64;
            }
        }
        assert_close("rms_norm", &out, &want, 1e-6);

        let mut y = x.clone();
        b.add_bias(&mut y, &w, rows).unwrap();
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| x[i] as f64 + wv[i % dim] as f64)
            .collect();
        assert_close("add_bias", &y, &want, 1e-7);

        let other = rng.vec(rows * dim);
        let mut y = x.clone();
        b.add(&mut y, &other, rows * dim).unwrap();
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| x[i] as f64 + other[i] as f64)
            .collect();
        assert_close("add", &y, &want, 1e-7);

        let gate: Vec<f32> = rng.vec(rows * dim).iter().map(|v| v * 12.0).collect();
        b.glu(&gate, &other, rows * dim, Activation::Silu, &mut out)
            .unwrap();
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| gate[i] as f64 / (1.0 + (-gate[i] as f64).exp()) * other[i] as f64)
            .collect();
        assert_close("swiglu", &out, &want, 1e-6);
    }
    assert!(b
        .rms_norm(
            &vec![0.0; 4],
            &f32_weight(&b, 2, 2, &[1.0; 4]),
            1e-5,
            2,
            &mut vec![0.0; 4]
        )
        .is_err());
}

#[test]
fn rope_both_conventions_with_freq_factors_match_f64_loops() {
    let mut rng = TestRng::for_test("rope");
    let b = CpuBackend;
    for &(seq, heads, head_dim, n_rot, pos0) in &[
        (1, 1, 2, 2, 0),
        (5, 3, 64, 64, 7),
        (9, 2, 80, 64, 1000),
        (4, 1, 128, 128, 60000),
    ] {
        for neox in [false, true] {
            for with_ff in [false, true] {
                let x = rng.vec(seq * heads * head_dim);
                let theta = 10000.0 + 490000.0 * rng.uniform().abs();
                let params = RopeParams { theta, neox, n_rot };
                let ffv: Vec<f32> = (0..n_rot / 2)
                    .map(|_| 1.0 + 7.0 * rng.uniform().abs())
                    .collect();
                let ffw = f32_weight(&b, 1, n_rot / 2, &ffv);
                let mut y = x.clone();
                let rope = Rope {
                    params,
                    freq_factors: with_ff.then_some(&ffw),
                };
                b.rope(&mut y, [seq, heads, head_dim], Pos::At(pos0), &rope)
                    .unwrap();
                let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let half = n_rot / 2;
                for t in 0..seq {
                    for h in 0..heads {
                        let base = (t * heads + h) * head_dim;
                        for i in 0..half {
                            let mut angle = (pos0 + t) as f64
                                * (theta as f64).powf(-2.0 * i as f64 / n_rot as f64);
                            if with_ff {
                                angle /= ffv[i] as f64;
                            }
                            let (ia, ib) = if neox {
                                (i, i + half)
                            } else {
                                (2 * i, 2 * i + 1)
                            };
                            let (a, bb) = (x[base + ia] as f64, x[base + ib] as f64);
                            want[base + ia] = a * angle.cos() - bb * angle.sin();
                            want[base + ib] = a * angle.sin() + bb * angle.cos();
                        }
                    }
                }
                assert_close(
                    &format!("rope {seq} {heads} {head_dim} neox={neox} ff={with_ff}"),
                    &y,
                    &want,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn attention_with_f32_and_f16_caches_matches_f64_softmax_attention() {
    let mut rng = TestRng::for_test("attention");
    let b = CpuBackend;
    // (seq_q, seq_k, heads, kv_heads, head_dim): prefill, decode, chunked prefill, GQA 1/3/8
    for &(seq_q, seq_k, heads, kv_heads, d) in &[
        (1, 1, 1, 1, 64),
        (7, 7, 3, 1, 80),
        (1, 131, 8, 1, 64),
        (37, 100, 6, 2, 96),
        (70, 70, 2, 2, 128),
    ] {
        let n_ctx = seq_k + 5;
        let row_len = kv_heads * d;
        let q = rng.vec(seq_q * heads * d);
        let k = rng.vec(seq_k * row_len);
        let v = rng.vec(seq_k * row_len);
        let scale = 1.0 / (d as f32).sqrt();
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let mut kc = b.kv_cache(n_ctx, row_len, dtype).unwrap();
            let mut vc = b.kv_cache(n_ctx, row_len, dtype).unwrap();
            // append in two pieces, as prefill then decode would
            let split = seq_k / 2;
            b.kv_append(&mut kc, &k, Pos::At(0), split).unwrap();
            b.kv_append(&mut vc, &v, Pos::At(0), split).unwrap();
            let (k2, v2) = (k[split * row_len..].to_vec(), v[split * row_len..].to_vec());
            b.kv_append(&mut kc, &k2, Pos::At(split), seq_k - split)
                .unwrap();
            b.kv_append(&mut vc, &v2, Pos::At(split), seq_k - split)
                .unwrap();
            let round = |x: &[f32]| -> Vec<f32> {
                match dtype {
                    KvDtype::F32 => x.to_vec(),
                    KvDtype::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                }
            };
            let (kr, vr) = (round(&k), round(&v));
            // no window, sliding windows of 1 and 5 keys, and one of every key (plain causal)
            for window in [None, Some(1), Some(5), Some(seq_k)] {
                let mut out = b.zeros(seq_q * heads * d).unwrap();
                let a = Attention {
                    seq_q,
                    pos: Pos::At(seq_k - seq_q),
                    heads,
                    kv_heads,
                    head_dim: d,
                    scale,
                    window,
                };
                b.attention(&q, &kc, &vc, &a, &mut out).unwrap();
                let want = attention_f64(
                    &q,
                    &kr,
                    &vr,
                    seq_q,
                    seq_k,
                    heads,
                    kv_heads,
                    d,
                    scale as f64,
                    true,
                    window,
                );
                assert_close(
                    &format!(
                        "attention {dtype:?} {seq_q}x{seq_k} h{heads}/{kv_heads} d{d} \
                         window {window:?}"
                    ),
                    &out,
                    &want,
                    2e-6,
                );
            }
        }
    }
}

#[test]
fn flash_attention_equals_the_unfused_pipeline() {
    let mut rng = TestRng::for_test("flash_vs_unfused");
    // includes seq_q > seq_k (the first queries see no key: zeros) and non-causal
    for &(batch, seq_q, seq_k, heads, kv_heads, d) in &[
        (1, 1, 1, 1, 1, 3),
        (2, 9, 4, 3, 1, 8),
        (1, 33, 130, 8, 1, 16),
        (3, 65, 65, 4, 2, 5),
    ] {
        let s = AttentionShape {
            batch,
            seq_q,
            seq_k,
            heads,
            kv_heads,
            head_dim: d,
        };
        let q = rng.vec(s.q_len());
        let k = rng.vec(s.kv_len());
        let v = rng.vec(s.kv_len());
        let scale = 0.37;
        for causal in [false, true] {
            let mut scores = vec![0f32; s.scores_len()];
            attn::qkt_matmul(&q, &k, &s, scale, &mut scores);
            if causal {
                attn::causal_mask(&mut scores, seq_q, seq_k);
            }
            attn::softmax(&mut scores, seq_k);
            let mut unfused = vec![0f32; s.q_len()];
            attn::weighted_matmul(&scores, &v, &s, &mut unfused);
            let mut fused = vec![0f32; s.q_len()];
            attn::flash_attention(&q, &k, &v, &s, causal, scale, None, &mut fused);
            let want: Vec<f64> = unfused.iter().map(|&x| x as f64).collect();
            assert_close(&format!("{s:?} causal={causal}"), &fused, &want, 1e-6);
            // and against the f64 loops, batch by batch
            let (ql, kl) = (seq_q * heads * d, seq_k * kv_heads * d);
            for bi in 0..batch {
                let want = attention_f64(
                    &q[bi * ql..(bi + 1) * ql],
                    &k[bi * kl..(bi + 1) * kl],
                    &v[bi * kl..(bi + 1) * kl],
                    seq_q,
                    seq_k,
                    heads,
                    kv_heads,
                    d,
                    scale as f64,
                    causal,
                    None,
                );
                assert_close("flash vs f64", &fused[bi * ql..(bi + 1) * ql], &want, 2e-6);
            }
            if causal && seq_q > seq_k {
                let blind = (seq_q - seq_k) * heads * d; // queries before the first key
                assert!(fused[..blind].iter().all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn softmax_of_all_minus_inf_row_is_zeros() {
    let mut x = vec![f32::NEG_INFINITY; 5];
    x.extend([1.0, f32::NEG_INFINITY, 3.0, 2.0, f32::NEG_INFINITY]);
    attn::softmax(&mut x, 5);
    assert_eq!(&x[..5], &[0.0; 5]);
    let e = [1f64.exp(), 3f64.exp(), 2f64.exp()];
    let sum: f64 = e.iter().sum();
    assert_close(
        "softmax",
        &x[5..],
        &[e[0] / sum, 0.0, e[1] / sum, e[2] / sum, 0.0],
        1e-6,
    );
}

#[test]
fn kv_append_bounds_and_f16_rounding() {
    let b = CpuBackend;
    let mut c = b.kv_cache(4, 3, KvDtype::F16).unwrap();
    let src = vec![1.0f32 / 3.0, 65504.0, -2.5, 0.1, 0.2, 0.3];
    b.kv_append(&mut c, &src, Pos::At(2), 2).unwrap();
    let CpuKvData::F16(data) = &c.data else {
        unreachable!()
    };
    assert_eq!(&data[..6], &[f16::ZERO; 6]);
    let got: Vec<f16> = data[6..].to_vec();
    let want: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(got, want);
    assert!(b.kv_append(&mut c, &src, Pos::At(3), 2).is_err());
    assert!(b.kv_append(&mut c, &src, Pos::At(usize::MAX), 2).is_err());
    assert!(b.kv_append(&mut c, &src, Pos::Step, 2).is_err());
    let mut k32 = b.kv_cache(4, 3, KvDtype::F32).unwrap();
    let v16 = b.kv_cache(4, 3, KvDtype::F16).unwrap();
    b.kv_append(&mut k32, &src, Pos::At(0), 2).unwrap();
    let a = Attention {
        seq_q: 1,
        pos: Pos::At(0),
        heads: 1,
        kv_heads: 1,
        head_dim: 3,
        scale: 1.0,
        window: None,
    };
    assert!(b
        .attention(&vec![0.0; 3], &k32, &v16, &a, &mut vec![0.0; 3])
        .is_err());
}

#[test]
fn argmax_first_of_ties_and_first_nan() {
    // Backend::argmax is the model's greedy pick: a NaN wins (as in np.argmax), so that the
    // caller sees the NaN logit instead of a token.
    let b = CpuBackend;
    assert_eq!(b.argmax(&vec![1.0, 3.0, 3.0, -1.0], 4).unwrap().0, 1);
    assert_eq!(
        b.argmax(&vec![-9.0, -5.0, f32::NAN, -4.0, f32::NAN], 5)
            .unwrap()
            .0,
        2
    );
    assert_eq!(b.argmax(&vec![1.0, 2.0, f32::NAN], 2).unwrap().0, 1); // NaN outside the prefix
    assert_eq!(b.argmax(&vec![0.0, 1.0, 9.0], 2).unwrap().0, 1); // only the prefix
    assert_eq!(b.argmax(&vec![f32::NEG_INFINITY; 3], 3).unwrap().0, 0);
    assert!(b.argmax(&vec![], 0).is_err());
    let mut rng = TestRng::for_test("argmax");
    let x = rng.vec(50_000);
    let want = (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best });
    assert_eq!(b.argmax(&x, x.len()).unwrap(), (want as u32, x[want]));
}

#[test]
fn copy_rows_and_download() {
    let b = CpuBackend;
    let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut dst = b.zeros(6).unwrap();
    b.copy_rows(&src, 2, 2, 3, &mut dst, 0).unwrap();
    assert_eq!(dst, vec![6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    b.copy_rows(&src, 0, 1, 3, &mut dst, 1).unwrap();
    assert_eq!(dst, vec![6.0, 7.0, 8.0, 0.0, 1.0, 2.0]);
    assert!(b.copy_rows(&src, 3, 2, 3, &mut dst, 0).is_err());
    assert!(b.copy_rows(&src, 0, 1, 3, &mut dst, 2).is_err());
    assert!(b.copy_rows(&src, usize::MAX, 2, 3, &mut dst, 0).is_err());
    assert!(b.copy_rows(&src, 0, 1, 3, &mut dst, usize::MAX).is_err());
    let mut host = [0f32; 4];
    b.download(&src, &mut host).unwrap();
    assert_eq!(host, [0.0, 1.0, 2.0, 3.0]);
    assert!(b.download(&dst, &mut [0f32; 7]).is_err());
}

#[test]
fn gpu_device_is_a_device_error() {
    assert!(matches!(
        crate::device::resolve_device("cpu"),
        Ok(Device::Cpu)
    ));
    assert!(matches!(
        crate::device::resolve_device("auto"),
        Ok(Device::Cpu)
    ));
    assert!(matches!(
        crate::device::resolve_device("gpu"),
        Err(Error::Device(_))
    ));
    assert!(matches!(
        crate::device::resolve_device("tpu"),
        Err(Error::InvalidArgument(_))
    ));
}
