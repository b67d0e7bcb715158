//! Fast CPU matmul for quantized weights, in the manner of llama.cpp's CPU backend: the
//! activations are quantized to 8-bit blocks of 32 (`q = round(x / d)`, `d = max|x| / 127`),
//! each output is a sum over blocks of `d_w * d_x * (integer dot of the block)`, and the
//! integer dots run on AVX2 when the CPU has it (detected at run time, scalar otherwise).
//! Weight rows are split across rayon's threads.
//!
//! `out [m, n] = x [m, k] @ W^T`, W `[n, k]` of type Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0.
//! Results differ from the f32 reference by the activation rounding only (relative error
//! around 1e-3), as llama.cpp's do.

use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Elements per block of every supported type.
const QK: usize = 32;

/// Whether `matmul` handles weights of `ty`.
pub fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0)
}

/// 32 activations quantized to int8: `x[i] ~= d * qs[i]`; `s = d * sum(qs)` (for the
/// weight types with an offset `m`, whose dot needs `m * sum(x)`).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8 {
    qs: [i8; QK],
    d: f32,
    s: f32,
}

/// Quantize one row `x [k]` (k a multiple of 32) to `out [k / 32]`. The scale is rounded to
/// f16 as ggml stores it, and values round half to even as its AVX2 code does.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        b.d = f16::from_f32(d).to_f32();
        b.s = f16::from_f32(d * sum as f32).to_f32();
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dot product of one weight row (`bytes` of `ty`) with quantized activations `x`.
type RowDot = fn(&[u8], &[BlockQ8]) -> f32;

fn scalar_dot(ty: GgmlType) -> RowDot {
    match ty {
        GgmlType::Q4_0 => scalar::q4_0,
        GgmlType::Q4_1 => scalar::q4_1,
        GgmlType::Q5_0 => scalar::q5_0,
        GgmlType::Q5_1 => scalar::q5_1,
        GgmlType::Q8_0 => scalar::q8_0,
        _ => unreachable!("checked by supports()"),
    }
}

/// The fastest dot product this CPU runs for `ty`.
fn row_dot(ty: GgmlType) -> RowDot {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return match ty {
                GgmlType::Q4_0 => avx2::q4_0,
                GgmlType::Q4_1 => avx2::q4_1,
                GgmlType::Q5_0 => avx2::q5_0,
                GgmlType::Q5_1 => avx2::q5_1,
                GgmlType::Q8_0 => avx2::q8_0,
                _ => unreachable!("checked by supports()"),
            };
        }
    }
    scalar_dot(ty)
}

/// Quantize the activations `x [m, k]` to 8-bit blocks `[m, k / 32]`.
pub fn quantize_activations(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8> {
    let nb = k / QK;
    let zero = BlockQ8 { qs: [0; QK], d: 0.0, s: 0.0 };
    let mut q = vec![zero; m * nb];
    q.par_chunks_mut(nb)
        .zip(x[..m * k].par_chunks(k))
        .with_min_len(8)
        .for_each(|(qr, xr)| quantize_row_q8(xr, qr));
    q
}

/// `out [m, n] = x [m, k] @ W^T` for a quantized `W [n, k]` given as its bytes.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    if !supports(ty) || k % QK != 0 {
        return Err(Error::unsupported(format!("quantized CPU matmul of {ty} with k = {k}")));
    }
    let row_bytes = k / QK * ty.type_size();
    if w.len() != n * row_bytes || x.len() < m * k || out.len() < m * n {
        return Err(Error::invalid(format!(
            "quantized matmul: W [{n}, {k}] {ty} ({} bytes), x {} floats for m = {m}, out {} floats",
            w.len(),
            x.len(),
            out.len()
        )));
    }
    let xq = quantize_activations(x, m, k);
    let nb = k / QK;
    let dot = row_dot(ty);
    // Rows per task: enough work per task to amortize scheduling, several tasks per thread.
    let rows_per_task = (n / (rayon::current_num_threads() * 8)).clamp(8, 256);

    if m == 1 {
        out[..n]
            .par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(c, o)| {
                let r0 = c * rows_per_task;
                for (j, oj) in o.iter_mut().enumerate() {
                    let r = r0 + j;
                    *oj = dot(&w[r * row_bytes..(r + 1) * row_bytes], &xq);
                }
            });
        return Ok(());
    }
    // Several activation rows: each task reads its weight rows once and dots them with every
    // activation row, then the [m, rows] tile is scattered into out.
    let tiles: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(rows_per_task)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|r0| {
            let rows = rows_per_task.min(n - r0);
            let mut tile = vec![0.0f32; m * rows];
            for j in 0..rows {
                let wr = &w[(r0 + j) * row_bytes..(r0 + j + 1) * row_bytes];
                for i in 0..m {
                    tile[i * rows + j] = dot(wr, &xq[i * nb..(i + 1) * nb]);
                }
            }
            (r0, tile)
        })
        .collect();
    for (r0, tile) in tiles {
        let rows = tile.len() / m;
        for i in 0..m {
            out[i * n + r0..i * n + r0 + rows].copy_from_slice(&tile[i * rows..(i + 1) * rows]);
        }
    }
    Ok(())
}

/// Plain Rust dots: the reference the SIMD versions are tested against, and the fallback.
mod scalar {
    use super::{f16_at, BlockQ8, QK};

    pub fn q4_0(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(18).zip(x) {
            let qs = &b[2..18];
            let mut acc = 0i32;
            for j in 0..QK / 2 {
                acc += ((qs[j] & 0x0F) as i32 - 8) * xb.qs[j] as i32;
                acc += ((qs[j] >> 4) as i32 - 8) * xb.qs[j + QK / 2] as i32;
            }
            sum += f16_at(b, 0) * xb.d * acc as f32;
        }
        sum
    }

    pub fn q4_1(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(20).zip(x) {
            let qs = &b[4..20];
            let mut acc = 0i32;
            for j in 0..QK / 2 {
                acc += (qs[j] & 0x0F) as i32 * xb.qs[j] as i32;
                acc += (qs[j] >> 4) as i32 * xb.qs[j + QK / 2] as i32;
            }
            sum += f16_at(b, 0) * xb.d * acc as f32 + f16_at(b, 2) * xb.s;
        }
        sum
    }

    /// The 5-bit value j of a Q5 block: low nibble from qs, fifth bit from qh.
    #[inline]
    fn q5(qs: &[u8], qh: u32, j: usize) -> i32 {
        let nib = if j < QK / 2 { qs[j] & 0x0F } else { qs[j - QK / 2] >> 4 };
        (nib as i32) | ((((qh >> j) & 1) as i32) << 4)
    }

    pub fn q5_0(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(22).zip(x) {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            let acc: i32 = (0..QK).map(|j| (q5(qs, qh, j) - 16) * xb.qs[j] as i32).sum();
            sum += f16_at(b, 0) * xb.d * acc as f32;
        }
        sum
    }

    pub fn q5_1(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(24).zip(x) {
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..24];
            let acc: i32 = (0..QK).map(|j| q5(qs, qh, j) * xb.qs[j] as i32).sum();
            sum += f16_at(b, 0) * xb.d * acc as f32 + f16_at(b, 2) * xb.s;
        }
        sum
    }

    pub fn q8_0(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(34).zip(x) {
            let acc: i32 = (0..QK).map(|j| (b[2 + j] as i8) as i32 * xb.qs[j] as i32).sum();
            sum += f16_at(b, 0) * xb.d * acc as f32;
        }
        sum
    }
}

/// AVX2 + FMA (+ F16C for the block scales) dots. Each block's 32 weights are expanded to 32 int8 lanes (low nibbles in the
/// low 128 bits: elements 0..16; high nibbles in the high 128 bits: elements 16..32), then
/// `maddubs` (u8 x i8 pairs -> i16) and `madd` (i16 pairs -> i32) sum them, and the block's
/// `d_w * d_x` scales the 8 partial sums into a float accumulator.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BlockQ8;

    /// The f16 at byte `i` of `b` as f32, with the F16C instruction.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Sum of the 8 floats of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 16 bytes of packed nibbles -> 32 bytes 0..15 (elements 0..16 low, 16..32 high).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// 32 bits -> 32 bytes: 0xFF where the bit is set (byte j <- bit j).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let shuffle = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0x0000_0000_0000_0000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
        // Byte j of each 8-byte group keeps every bit but bit j set: all ones iff bit j is set.
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
    }

    /// Sum of products of 32 unsigned `u` and signed `s` bytes, as 8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_us(u: __m256i, s: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// Sum of products of 32 signed bytes `a` and `b` (sign moved onto `b`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_ss(a: __m256i, b: __m256i) -> __m256 {
        dot_us(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_x(xb: &BlockQ8) -> __m256i {
        _mm256_load_si256(xb.qs.as_ptr() as *const __m256i)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0_impl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in w.chunks_exact(18).zip(x) {
            let q = _mm256_sub_epi8(nibbles(b.as_ptr().add(2)), _mm256_set1_epi8(8));
            let d = _mm256_set1_ps(f16_at(b, 0) * xb.d);
            acc = _mm256_fmadd_ps(d, dot_ss(q, load_x(xb)), acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_impl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0f32;
        for (b, xb) in w.chunks_exact(20).zip(x) {
            let q = nibbles(b.as_ptr().add(4));
            let d = _mm256_set1_ps(f16_at(b, 0) * xb.d);
            acc = _mm256_fmadd_ps(d, dot_us(q, load_x(xb)), acc);
            offsets += f16_at(b, 2) * xb.s;
        }
        hsum(acc) + offsets
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_impl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in w.chunks_exact(22).zip(x) {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            // value - 16 as a signed byte: the nibble with 0xF0 or'ed in where the fifth bit is 0.
            let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
            let q = _mm256_or_si256(nibbles(b.as_ptr().add(6)), high);
            let d = _mm256_set1_ps(f16_at(b, 0) * xb.d);
            acc = _mm256_fmadd_ps(d, dot_ss(q, load_x(xb)), acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_1_impl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0f32;
        for (b, xb) in w.chunks_exact(24).zip(x) {
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
            let q = _mm256_or_si256(nibbles(b.as_ptr().add(8)), high);
            let d = _mm256_set1_ps(f16_at(b, 0) * xb.d);
            acc = _mm256_fmadd_ps(d, dot_us(q, load_x(xb)), acc);
            offsets += f16_at(b, 2) * xb.s;
        }
        hsum(acc) + offsets
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_impl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in w.chunks_exact(34).zip(x) {
            let q = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
            let d = _mm256_set1_ps(f16_at(b, 0) * xb.d);
            acc = _mm256_fmadd_ps(d, dot_ss(q, load_x(xb)), acc);
        }
        hsum(acc)
    }

    // Safe entry points: `row_dot` hands these out only after detecting AVX2 and FMA.
    macro_rules! entry {
        ($name:ident, $imp:ident) => {
            pub fn $name(w: &[u8], x: &[BlockQ8]) -> f32 {
                // SAFETY: only reachable through `row_dot`, which checked the CPU features (AVX2, FMA, F16C).
                unsafe { $imp(w, x) }
            }
        };
    }
    entry!(q4_0, q4_0_impl);
    entry!(q4_1, q4_1_impl);
    entry!(q5_0, q5_0_impl);
    entry!(q5_1, q5_1_impl);
    entry!(q8_0, q8_0_impl);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simple deterministic generator for test data.
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Random bytes of `nb` blocks of `ty`, with finite f16 scales.
    fn random_blocks(ty: GgmlType, nb: usize, seed: &mut u64) -> Vec<u8> {
        let ts = ty.type_size();
        let mut out = vec![0u8; nb * ts];
        for b in out.chunks_exact_mut(ts) {
            for byte in b.iter_mut() {
                *byte = (lcg(seed) * 128.0 + 128.0) as u8;
            }
            b[0..2].copy_from_slice(&f16::from_f32(lcg(seed) * 0.1).to_le_bytes());
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                b[2..4].copy_from_slice(&f16::from_f32(lcg(seed) * 0.1).to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn simd_matches_scalar() {
        let mut seed = 42u64;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            for nb in [1usize, 3, 17] {
                let w = random_blocks(ty, nb, &mut seed);
                let x: Vec<f32> = (0..nb * QK).map(|_| lcg(&mut seed) * 3.0).collect();
                let xq = quantize_activations(&x, 1, nb * QK);
                let (a, b) = (row_dot(ty)(&w, &xq), scalar_dot(ty)(&w, &xq));
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{ty} nb={nb}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matmul_rows_agree_for_any_m() {
        // Row i of a batched matmul equals the single-row matmul of x[i]: decode and prefill
        // see the same numbers.
        let mut seed = 7u64;
        let (n, k, m) = (37, 96, 5);
        let w = random_blocks(GgmlType::Q4_1, n * k / QK, &mut seed);
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let mut out = vec![0.0; m * n];
        matmul(GgmlType::Q4_1, &w, n, k, &x, m, &mut out).unwrap();
        for i in 0..m {
            let mut one = vec![0.0; n];
            matmul(GgmlType::Q4_1, &w, n, k, &x[i * k..(i + 1) * k], 1, &mut one).unwrap();
            assert_eq!(&out[i * n..(i + 1) * n], &one[..]);
        }
    }
}
