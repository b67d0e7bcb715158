//! Fast CPU matmul for quantized weights, in the manner of llama.cpp's CPU backend: the
//! activations are quantized to 8-bit blocks of 32 (`q = round(x / d)`, `d = max|x| / 127`),
//! each output is a sum over blocks of `d_w * d_x * (integer dot of the block)`, and the
//! integer dots run on AVX2 when the CPU has it (detected at run time, scalar otherwise).
//! Weight rows are split across rayon's threads.
//!
//! `out [m, n] = x [m, k] @ W^T`, W `[n, k]` of type Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL
//! (activations in blocks of 32, `BlockQ8`: llama.cpp's Q8_0 / Q8_1) or Q4_K, Q5_K, Q6_K, IQ4_XS
//! (blocks of 256 with 16-element sums, `BlockQ8K`: its Q8_K). Results differ from the f32
//! reference by the activation rounding only (relative error around 1e-3), as llama.cpp's do.

use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::quants::blocks::KVALUES_IQ4NL;
use crate::gguf::GgmlType;

/// Elements per block of every supported type.
const QK: usize = 32;

/// Elements per K-quant super-block.
const QK_K: usize = 256;

/// Whether `matmul` handles weights of `ty`.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | Q4_K | Q5_K | Q6_K | IQ4_XS
    )
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features this copy is compiled for.
        return unsafe { quantize_row_q8_avx2(x, out) };
    }
    quantize_row_q8_body(x, out)
}

/// `quantize_row_q8` compiled for AVX2 (rounding becomes one instruction, not a libm call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_avx2(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_body(x, out)
}

#[inline(always)]
fn quantize_row_q8_body(x: &[f32], out: &mut [BlockQ8]) {
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

/// 256 activations quantized to int8 (`x[i] ~= d * qs[i]`) with the sums of each 16.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BlockQ8K {
    qs: [i8; QK_K],
    bsums: [i16; QK_K / 16],
    d: f32,
}

/// Quantize one row `x [k]` (k a multiple of 256) to `out [k / 256]`.
pub fn quantize_row_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features this copy is compiled for.
        return unsafe { quantize_row_q8k_avx2(x, out) };
    }
    quantize_row_q8k_body(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    quantize_row_q8k_body(x, out)
}

#[inline(always)]
fn quantize_row_q8k_body(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        b.d = amax / 127.0;
    }
}

/// How far ahead of the block in use weights are prefetched (bytes).
const PREFETCH_AHEAD: usize = 1024;

/// `prefetch` of every cache line of a block longer than one (the K-quants' super-blocks):
/// one line a block left the rest to the hardware prefetchers, which fell behind.
#[inline(always)]
fn prefetch_block(b: &[u8]) {
    let mut at = 0;
    while at < b.len() {
        prefetch(b, PREFETCH_AHEAD + at);
        at += 64;
    }
}

/// Ask the CPU to start loading `b[ahead..]` into the cache (weights stream from memory once
/// per matmul; hardware prefetchers alone leave the loads waiting). No-op off x86_64.
#[inline(always)]
fn prefetch(b: &[u8], ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch(b.as_ptr().wrapping_add(ahead) as *const i8, _MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (b, ahead);
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dot product of one weight row (the bytes of its blocks) with quantized activations.
type RowDot<A> = fn(&[u8], &[A]) -> f32;
/// The same for four activation rows at once (the weight blocks unpacked once), with results
/// identical to four `RowDot` calls.
type RowDot4<A> = fn(&[u8], [&[A]; 4]) -> [f32; 4];

/// The dot products of one weight type: one activation row, and four at once if there is a
/// kernel for it.
struct Kernel<A> {
    one: RowDot<A>,
    four: Option<RowDot4<A>>,
}

fn scalar_dot(ty: GgmlType) -> RowDot<BlockQ8> {
    match ty {
        GgmlType::Q4_0 => scalar::q4_0,
        GgmlType::Q4_1 => scalar::q4_1,
        GgmlType::Q5_0 => scalar::q5_0,
        GgmlType::Q5_1 => scalar::q5_1,
        GgmlType::Q8_0 => scalar::q8_0,
        GgmlType::IQ4_NL => scalar::iq4_nl,
        _ => unreachable!("a type with 32-element activation blocks"),
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The fastest dot products this CPU runs for `ty` (a type with 32-element blocks).
fn row_dot(ty: GgmlType) -> Kernel<BlockQ8> {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            let (one, four): (RowDot<BlockQ8>, RowDot4<BlockQ8>) = match ty {
                GgmlType::Q4_0 => (avx2::q4_0, avx2::q4_0_x4),
                GgmlType::Q4_1 => (avx2::q4_1, avx2::q4_1_x4),
                GgmlType::Q5_0 => (avx2::q5_0, avx2::q5_0_x4),
                GgmlType::Q5_1 => (avx2::q5_1, avx2::q5_1_x4),
                GgmlType::Q8_0 => (avx2::q8_0, avx2::q8_0_x4),
                GgmlType::IQ4_NL => (avx2::iq4_nl, avx2::iq4_nl_x4),
                _ => unreachable!("a type with 32-element activation blocks"),
            };
            return Kernel {
                one,
                four: Some(four),
            };
        }
    }
    Kernel {
        one: scalar_dot(ty),
        four: None,
    }
}

/// The dot product for `ty` with 256-element activation blocks: AVX2 intrinsics where the CPU
/// has them, else plain Rust.
fn row_dot_k(ty: GgmlType) -> Kernel<BlockQ8K> {
    Kernel {
        one: row_dot_k_one(ty),
        four: None,
    }
}

fn row_dot_k_one(ty: GgmlType) -> RowDot<BlockQ8K> {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            return match ty {
                GgmlType::Q4_K => avx2::q4_k,
                GgmlType::Q5_K => avx2::q5_k,
                GgmlType::Q6_K => avx2::q6_k,
                GgmlType::IQ4_XS => avx2::iq4_xs,
                _ => unreachable!("a type with 256-element activation blocks"),
            };
        }
    }
    match ty {
        GgmlType::Q4_K => kquants::q4_k,
        GgmlType::Q5_K => kquants::q5_k,
        GgmlType::Q6_K => kquants::q6_k,
        GgmlType::IQ4_XS => kquants::iq4_xs,
        _ => unreachable!("a type with 256-element activation blocks"),
    }
}

/// Quantize the activations `x [m, k]` row by row to blocks `[m, k / block]`.
fn quantize_activations<A: Copy + Send + Sync>(
    x: &[f32],
    m: usize,
    k: usize,
    block: usize,
    zero: A,
    quantize_row: fn(&[f32], &mut [A]),
) -> Vec<A> {
    let nb = k / block;
    let mut q = vec![zero; m * nb];
    if m == 1 {
        quantize_row(&x[..k], &mut q);
    } else {
        q.par_chunks_mut(nb)
            .zip(x[..m * k].par_chunks(k))
            .for_each(|(qr, xr)| quantize_row(xr, qr));
    }
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
    let block = ty.block_size();
    if !supports(ty) || !k.is_multiple_of(block) {
        return Err(Error::unsupported(format!(
            "quantized CPU matmul of {ty} with k = {k}"
        )));
    }
    let row_bytes = k / block * ty.type_size();
    if w.len() != n * row_bytes || x.len() < m * k || out.len() < m * n {
        return Err(Error::invalid(format!(
            "quantized matmul: W [{n}, {k}] {ty} ({} bytes), x {} floats for m = {m}, out {} floats",
            w.len(),
            x.len(),
            out.len()
        )));
    }
    if block == QK_K {
        let zero = BlockQ8K {
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            d: 0.0,
        };
        let xq = quantize_activations(x, m, k, QK_K, zero, quantize_row_q8k);
        rows_times_activations(w, row_bytes, n, &xq, k / QK_K, m, row_dot_k(ty), out);
    } else {
        let zero = BlockQ8 {
            qs: [0; QK],
            d: 0.0,
            s: 0.0,
        };
        let xq = quantize_activations(x, m, k, QK, zero, quantize_row_q8);
        rows_times_activations(w, row_bytes, n, &xq, k / QK, m, row_dot(ty), out);
    }
    Ok(())
}

/// `out[i, r] = dot(W row r, xq row i)`: weight rows split across threads; each task reads
/// its rows once and dots them with every activation row (four at a time where the type has
/// a kernel for it).
#[allow(clippy::too_many_arguments)]
fn rows_times_activations<A: Sync>(
    w: &[u8],
    row_bytes: usize,
    n: usize,
    xq: &[A],
    nb: usize,
    m: usize,
    kernel: Kernel<A>,
    out: &mut [f32],
) {
    // Rows per task: enough work per task to amortize scheduling, several tasks per thread.
    let rows_per_task = (n / (rayon::current_num_threads() * 8)).clamp(8, 256);
    let w_row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    let x_row = |i: usize| &xq[i * nb..(i + 1) * nb];
    if m == 1 {
        out[..n]
            .par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(c, o)| {
                for (j, oj) in o.iter_mut().enumerate() {
                    *oj = (kernel.one)(w_row(c * rows_per_task + j), xq);
                }
            });
        return;
    }
    let tiles: Vec<(usize, Vec<f32>)> = (0..n)
        .into_par_iter()
        .step_by(rows_per_task)
        .map(|r0| {
            let rows = rows_per_task.min(n - r0);
            let mut tile = vec![0.0f32; m * rows]; // [m, rows]
            for j in 0..rows {
                let wr = w_row(r0 + j);
                let mut i = 0;
                if let Some(four) = kernel.four {
                    while i + 4 <= m {
                        let dots = four(wr, [x_row(i), x_row(i + 1), x_row(i + 2), x_row(i + 3)]);
                        for (t, v) in dots.into_iter().enumerate() {
                            tile[(i + t) * rows + j] = v;
                        }
                        i += 4;
                    }
                }
                for i in i..m {
                    tile[i * rows + j] = (kernel.one)(wr, x_row(i));
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
}

/// K-quant dots: each super-block of 256 weights is unpacked to integers in plain Rust, whose
/// loops LLVM vectorizes: the fallback, and the reference the intrinsic forms in `avx2` are
/// tested equal to.
mod kquants {
    use super::{f16_at, prefetch_block, BlockQ8K, KVALUES_IQ4NL, QK_K};

    /// Scale and min of sub-block `j` (of 8) from Q4_K/Q5_K's 12 packed 6-bit values.
    #[inline(always)]
    pub(super) fn scale_min(j: usize, s: &[u8]) -> (i32, i32) {
        if j < 4 {
            ((s[j] & 63) as i32, (s[j + 4] & 63) as i32)
        } else {
            (
                ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4)) as i32,
                ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as i32,
            )
        }
    }

    #[inline(always)]
    fn dot32(q: &[u8; 32], x: &[i8]) -> i32 {
        let mut acc = 0i32;
        for l in 0..32 {
            acc += q[l] as i32 * x[l] as i32;
        }
        acc
    }

    /// Q4_K: `w = d * sc * q - dmin * m` per sub-block of 32, q in 0..16.
    #[inline(always)]
    fn q4_k_body(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(144).zip(x) {
            prefetch_block(b);
            let (d, dmin) = (f16_at(b, 0) * xb.d, f16_at(b, 2) * xb.d);
            let (scales, qs) = (&b[4..16], &b[16..144]);
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in 0..4 {
                let q = &qs[32 * j..32 * j + 32];
                let (mut lo, mut hi) = ([0u8; 32], [0u8; 32]);
                for l in 0..32 {
                    lo[l] = q[l] & 0x0F;
                    hi[l] = q[l] >> 4;
                }
                let (sc1, m1) = scale_min(2 * j, scales);
                let (sc2, m2) = scale_min(2 * j + 1, scales);
                isum +=
                    sc1 * dot32(&lo, &xb.qs[64 * j..]) + sc2 * dot32(&hi, &xb.qs[64 * j + 32..]);
                let bs = &xb.bsums[4 * j..4 * j + 4];
                msum += m1 * (bs[0] as i32 + bs[1] as i32) + m2 * (bs[2] as i32 + bs[3] as i32);
            }
            sum += d * isum as f32 - dmin * msum as f32;
        }
        sum
    }

    /// Q5_K: as Q4_K with a fifth bit per weight from `qh` (q in 0..32).
    #[inline(always)]
    fn q5_k_body(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(176).zip(x) {
            prefetch_block(b);
            let (d, dmin) = (f16_at(b, 0) * xb.d, f16_at(b, 2) * xb.d);
            let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
            let (mut isum, mut msum) = (0i32, 0i32);
            for j in 0..4 {
                let q = &qs[32 * j..32 * j + 32];
                let (mut lo, mut hi) = ([0u8; 32], [0u8; 32]);
                for l in 0..32 {
                    lo[l] = (q[l] & 0x0F) | (((qh[l] >> (2 * j)) & 1) << 4);
                    hi[l] = (q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4);
                }
                let (sc1, m1) = scale_min(2 * j, scales);
                let (sc2, m2) = scale_min(2 * j + 1, scales);
                isum +=
                    sc1 * dot32(&lo, &xb.qs[64 * j..]) + sc2 * dot32(&hi, &xb.qs[64 * j + 32..]);
                let bs = &xb.bsums[4 * j..4 * j + 4];
                msum += m1 * (bs[0] as i32 + bs[1] as i32) + m2 * (bs[2] as i32 + bs[3] as i32);
            }
            sum += d * isum as f32 - dmin * msum as f32;
        }
        sum
    }

    /// Q6_K: `w = d * sc * (q - 32)` per sub-block of 16, q in 0..64 (4 bits in ql, 2 in qh).
    #[inline(always)]
    fn q6_k_body(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(210).zip(x) {
            prefetch_block(b);
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208) * xb.d;
            let mut isum = 0i32;
            for half in 0..2 {
                let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                // The four runs of 32 weights of this half, in element order.
                let mut runs = [[0u8; 32]; 4];
                for l in 0..32 {
                    runs[0][l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                    runs[1][l] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                    runs[2][l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    runs[3][l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
                for (r, run) in runs.iter().enumerate() {
                    let x0 = 128 * half + 32 * r;
                    for g in 0..2 {
                        // sub-block of 16: scale index 8 * half + 2 * r + g
                        let s = sc[8 * half + 2 * r + g] as i8 as i32;
                        let mut acc = 0i32;
                        for l in 0..16 {
                            acc += run[16 * g + l] as i32 * xb.qs[x0 + 16 * g + l] as i32;
                        }
                        // (q - 32) * x summed = sum(q * x) - 32 * sum(x)
                        acc -= 32 * xb.bsums[x0 / 16 + g] as i32;
                        isum += s * acc;
                    }
                }
            }
            sum += d * isum as f32;
        }
        sum
    }

    /// IQ4_XS (no AVX2 copy here: `avx2::iq4_xs` is its SIMD form, with the same result):
    /// `w = d * (ls - 32) * KVALUES_IQ4NL[q]` per sub-block of 32; the integer sums of the
    /// super-block's sub-blocks times their scales, then one float product.
    pub fn iq4_xs(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(136).zip(x) {
            prefetch_block(b);
            let d = f16_at(b, 0) * xb.d;
            let scales_h = u16::from_le_bytes([b[2], b[3]]) as i32;
            let (scales_l, qs) = (&b[4..8], &b[8..136]);
            let mut isum = 0i32;
            for j in 0..8 {
                let q = &qs[16 * j..16 * j + 16];
                let ls = ((scales_l[j / 2] >> (4 * (j % 2))) & 0x0F) as i32
                    | (((scales_h >> (2 * j)) & 3) << 4);
                let xs = &xb.qs[32 * j..32 * j + 32];
                let mut acc = 0i32;
                for l in 0..16 {
                    acc += KVALUES_IQ4NL[(q[l] & 0x0F) as usize] as i32 * xs[l] as i32;
                    acc += KVALUES_IQ4NL[(q[l] >> 4) as usize] as i32 * xs[l + 16] as i32;
                }
                isum += (ls - 32) * acc;
            }
            sum += d * isum as f32;
        }
        sum
    }

    pub fn q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        q4_k_body(w, x)
    }
    pub fn q5_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        q5_k_body(w, x)
    }
    pub fn q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        q6_k_body(w, x)
    }

    const _: () = assert!(QK_K == 256);
}

/// Plain Rust dots: the reference the SIMD versions are tested against, and the fallback.
#[allow(clippy::needless_range_loop)] // element j pairs with x[j] and x[j + 16]
mod scalar {
    use super::{f16_at, BlockQ8, KVALUES_IQ4NL, QK};

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
        let nib = if j < QK / 2 {
            qs[j] & 0x0F
        } else {
            qs[j - QK / 2] >> 4
        };
        (nib as i32) | ((((qh >> j) & 1) as i32) << 4)
    }

    pub fn q5_0(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(22).zip(x) {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            let acc: i32 = (0..QK)
                .map(|j| (q5(qs, qh, j) - 16) * xb.qs[j] as i32)
                .sum();
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
            let acc: i32 = (0..QK)
                .map(|j| (b[2 + j] as i8) as i32 * xb.qs[j] as i32)
                .sum();
            sum += f16_at(b, 0) * xb.d * acc as f32;
        }
        sum
    }

    /// IQ4_NL: Q4_0's block with each nibble standing for `KVALUES_IQ4NL[nibble]`.
    pub fn iq4_nl(w: &[u8], x: &[BlockQ8]) -> f32 {
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(18).zip(x) {
            let qs = &b[2..18];
            let mut acc = 0i32;
            for j in 0..QK / 2 {
                acc += KVALUES_IQ4NL[(qs[j] & 0x0F) as usize] as i32 * xb.qs[j] as i32;
                acc += KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32 * xb.qs[j + QK / 2] as i32;
            }
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

    use super::kquants::scale_min;
    use super::{prefetch, prefetch_block, BlockQ8, BlockQ8K, KVALUES_IQ4NL, PREFETCH_AHEAD};

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

    /// One weight block unpacked: 32 weights as bytes, the scale `d` and the offset `m`
    /// (types without one: 0).
    struct Unpacked {
        q: __m256i,
        d: f32,
        m: f32,
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q4_0(b: &[u8]) -> Unpacked {
        let q = _mm256_sub_epi8(nibbles(b.as_ptr().add(2)), _mm256_set1_epi8(8));
        Unpacked {
            q,
            d: f16_at(b, 0),
            m: 0.0,
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q4_1(b: &[u8]) -> Unpacked {
        Unpacked {
            q: nibbles(b.as_ptr().add(4)),
            d: f16_at(b, 0),
            m: f16_at(b, 2),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q5_0(b: &[u8]) -> Unpacked {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        // value - 16 as a signed byte: the nibble with 0xF0 or'ed in where the fifth bit is 0.
        let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
        Unpacked {
            q: _mm256_or_si256(nibbles(b.as_ptr().add(6)), high),
            d: f16_at(b, 0),
            m: 0.0,
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q5_1(b: &[u8]) -> Unpacked {
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles(b.as_ptr().add(8)), high);
        Unpacked {
            q,
            d: f16_at(b, 0),
            m: f16_at(b, 2),
        }
    }

    /// `KVALUES_IQ4NL` in both 128-bit lanes: `shuffle_epi8` with it maps 32 codes 0..15 to
    /// their values.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn iq4_table() -> __m256i {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_iq4_nl(b: &[u8]) -> Unpacked {
        Unpacked {
            q: _mm256_shuffle_epi8(iq4_table(), nibbles(b.as_ptr().add(2))),
            d: f16_at(b, 0),
            m: 0.0,
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_q8_0(b: &[u8]) -> Unpacked {
        let q = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
        Unpacked {
            q,
            d: f16_at(b, 0),
            m: 0.0,
        }
    }

    /// Dot products of one weight row (blocks of `SIZE` bytes) with `R` activation rows.
    /// Each block is unpacked once and used for every row. Per row the arithmetic is the same
    /// whatever `R`: two accumulators take alternate blocks (so consecutive multiply-adds
    /// overlap), then `hsum(acc0 + acc1) + offsets0 + offsets1` - so a token's numbers do not
    /// depend on how many tokens share its batch. `SIGNED`: the weights are signed bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows<const SIZE: usize, const SIGNED: bool, const R: usize>(
        w: &[u8],
        x: [&[BlockQ8]; R],
        unpack: unsafe fn(&[u8]) -> Unpacked,
    ) -> [f32; R] {
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let (mut off0, mut off1) = ([0.0f32; R], [0.0f32; R]);
        // One block into one accumulator set, for every activation row.
        #[inline(always)]
        unsafe fn step<const SIGNED: bool, const R: usize>(
            u: &Unpacked,
            x: &[&[BlockQ8]; R],
            i: usize,
            acc: &mut [__m256; R],
            off: &mut [f32; R],
        ) {
            for r in 0..R {
                let xb = &x[r][i];
                let p = if SIGNED {
                    dot_ss(u.q, load_x(xb))
                } else {
                    dot_us(u.q, load_x(xb))
                };
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(u.d * xb.d), p, acc[r]);
                off[r] += u.m * xb.s;
            }
        }
        let n = w.len() / SIZE;
        for (pair, b) in w.chunks_exact(2 * SIZE).enumerate() {
            // The weights stream from memory once: ask for them well ahead of use.
            prefetch(b, PREFETCH_AHEAD);
            let (u0, u1) = (unpack(&b[..SIZE]), unpack(&b[SIZE..]));
            step::<SIGNED, R>(&u0, &x, 2 * pair, &mut acc0, &mut off0);
            step::<SIGNED, R>(&u1, &x, 2 * pair + 1, &mut acc1, &mut off1);
        }
        if n % 2 == 1 {
            let u = unpack(&w[(n - 1) * SIZE..]);
            step::<SIGNED, R>(&u, &x, n - 1, &mut acc0, &mut off0);
        }
        std::array::from_fn(|r| hsum(_mm256_add_ps(acc0[r], acc1[r])) + off0[r] + off1[r])
    }

    // Safe entry points, one and four activation rows per type: `row_dot` hands these out
    // only after detecting the CPU features (AVX2, FMA, F16C).
    macro_rules! entry {
        ($one:ident, $four:ident, $size:expr, $signed:expr, $unpack:ident) => {
            pub fn $one(w: &[u8], x: &[BlockQ8]) -> f32 {
                // SAFETY: only reachable through `row_dot`, which checked the CPU features.
                unsafe { dot_rows::<$size, $signed, 1>(w, [x], $unpack)[0] }
            }
            pub fn $four(w: &[u8], x: [&[BlockQ8]; 4]) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { dot_rows::<$size, $signed, 4>(w, x, $unpack) }
            }
        };
    }
    entry!(q4_0, q4_0_x4, 18, true, unpack_q4_0);
    entry!(q4_1, q4_1_x4, 20, false, unpack_q4_1);
    entry!(q5_0, q5_0_x4, 22, true, unpack_q5_0);
    entry!(q5_1, q5_1_x4, 24, false, unpack_q5_1);
    entry!(q8_0, q8_0_x4, 34, true, unpack_q8_0);
    entry!(iq4_nl, iq4_nl_x4, 18, true, unpack_iq4_nl);

    /// Sum of the 8 i32 lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
        _mm_cvtsi128_si32(s)
    }

    /// IQ4_XS (136-byte super-blocks) with Q8_K activations: per sub-block of 32 the values
    /// from the table, signed byte products summed to i32 lanes times the sub-block's scale;
    /// the super-block's lanes are summed as integers, so the result is `kquants::iq4_xs`'s to
    /// the bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn iq4_xs_rows(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let table = iq4_table();
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(136).zip(x) {
            prefetch_block(b);
            let scales_h = u16::from_le_bytes([b[2], b[3]]) as i32;
            let mut sumi = _mm256_setzero_si256();
            for j in 0..8 {
                let ls = ((b[4 + j / 2] >> (4 * (j % 2))) & 0x0F) as i32
                    | (((scales_h >> (2 * j)) & 3) << 4);
                let q = _mm256_shuffle_epi8(table, nibbles(b.as_ptr().add(8 + 16 * j)));
                let xv = _mm256_loadu_si256(xb.qs.as_ptr().add(32 * j) as *const __m256i);
                // (|q| unsigned, x with q's sign: maddubs's u8 x i8; |q| <= 127, no saturation)
                let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q));
                let scaled = _mm256_madd_epi16(pairs, _mm256_set1_epi16((ls - 32) as i16));
                sumi = _mm256_add_epi32(sumi, scaled);
            }
            sum += f16_at(b, 0) * xb.d * hsum_i32(sumi) as f32;
        }
        sum
    }

    pub fn iq4_xs(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only reachable through `row_dot_k`, which checked the CPU features.
        unsafe { iq4_xs_rows(w, x) }
    }

    /// Q4_K (144-byte super-blocks) and, with `FIFTH`, Q5_K (176 bytes: `qh`, 32 bytes, before
    /// the nibbles) with Q8_K activations: per 32 bytes of nibbles, the low ones (a sub-block)
    /// and the high ones (the next), with Q5_K's fifth bit from `qh` (bit 2j of a byte for
    /// chunk j's low nibbles, 2j + 1 for its high ones), times x as u8 x i8 pairs, times their
    /// sub-blocks' scales, summed as integers; the mins go with x's block sums. The integer
    /// sums are `kquants::q4_k`'s / `q5_k`'s, and so is the result, to the bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q45_k_rows<const FIFTH: bool>(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let (nibble, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
        let (size, qs) = if FIFTH { (176, 48) } else { (144, 16) };
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(size).zip(x) {
            prefetch_block(b);
            let scales = &b[4..16];
            // Q5_K's qh, shifted right by 2 a chunk (masked to bit 0 before use: no bit
            // crosses bytes)
            let mut qh = if FIFTH {
                _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let mut sumi = _mm256_setzero_si256();
            let mut msum = 0i32;
            for j in 0..4 {
                let q = _mm256_loadu_si256(b.as_ptr().add(qs + 32 * j) as *const __m256i);
                let mut lo = _mm256_and_si256(q, nibble);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
                if FIFTH {
                    let bit_lo = _mm256_slli_epi16(_mm256_and_si256(qh, one), 4);
                    let bit_hi =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4);
                    qh = _mm256_srli_epi16(qh, 2);
                    lo = _mm256_or_si256(lo, bit_lo);
                    hi = _mm256_or_si256(hi, bit_hi);
                }
                let x_lo = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j) as *const __m256i);
                let x_hi = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * j + 32) as *const __m256i);
                let (sc1, m1) = scale_min(2 * j, scales);
                let (sc2, m2) = scale_min(2 * j + 1, scales);
                // (values <= 31 as maddubs's u8: a pair's sum is under 2^13, no saturation)
                let p1 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(lo, x_lo),
                    _mm256_set1_epi16(sc1 as i16),
                );
                let p2 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi, x_hi),
                    _mm256_set1_epi16(sc2 as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p1, p2));
                let bs = &xb.bsums[4 * j..4 * j + 4];
                msum += m1 * (bs[0] as i32 + bs[1] as i32) + m2 * (bs[2] as i32 + bs[3] as i32);
            }
            let (d, dmin) = (f16_at(b, 0) * xb.d, f16_at(b, 2) * xb.d);
            sum += d * hsum_i32(sumi) as f32 - dmin * msum as f32;
        }
        sum
    }

    pub fn q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only reachable through `row_dot_k`, which checked the CPU features.
        unsafe { q45_k_rows::<false>(w, x) }
    }

    pub fn q5_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: as above.
        unsafe { q45_k_rows::<true>(w, x) }
    }

    /// Q6_K (210-byte super-blocks) with Q8_K activations: per half of 128 weights, the four
    /// runs of 32 six-bit values put together from `ql`'s nibbles and `qh`'s bit pairs, times
    /// x as u8 x i8 pairs, times the scales of their two sub-blocks of 16 (one per 128-bit
    /// lane); the offset of 32 goes with x's block sums. The integer sums are
    /// `kquants::q6_k`'s, and so is the result, to the bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k_rows(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let (nibble, pair) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        let mut sum = 0.0f32;
        for (b, xb) in w.chunks_exact(210).zip(x) {
            prefetch_block(b);
            let sc = &b[192..208];
            let mut sumi = _mm256_setzero_si256();
            let mut offset = 0i32;
            for half in 0..2 {
                let ql = b.as_ptr().add(64 * half);
                let q_lo = _mm256_loadu_si256(ql as *const __m256i);
                let q_hi = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                let h = _mm256_loadu_si256(b.as_ptr().add(128 + 32 * half) as *const __m256i);
                // qh's bit pairs 0..3 as bits 4..5 of each byte (masked before the shift left,
                // so no bit crosses into the next byte)
                let high = [
                    _mm256_slli_epi16(_mm256_and_si256(h, pair), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), pair), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), pair), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), pair), 4),
                ];
                let runs = [
                    _mm256_or_si256(_mm256_and_si256(q_lo, nibble), high[0]),
                    _mm256_or_si256(_mm256_and_si256(q_hi, nibble), high[1]),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(q_lo, 4), nibble),
                        high[2],
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(q_hi, 4), nibble),
                        high[3],
                    ),
                ];
                for (r, run) in runs.into_iter().enumerate() {
                    let x0 = 128 * half + 32 * r;
                    let xv = _mm256_loadu_si256(xb.qs.as_ptr().add(x0) as *const __m256i);
                    let s0 = sc[8 * half + 2 * r] as i8 as i16;
                    let s1 = sc[8 * half + 2 * r + 1] as i8 as i16;
                    // (6-bit values as maddubs's u8: a pair's sum is under 2^15, no saturation)
                    let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(run, xv), scale);
                    sumi = _mm256_add_epi32(sumi, p);
                    offset += s0 as i32 * xb.bsums[x0 / 16] as i32
                        + s1 as i32 * xb.bsums[x0 / 16 + 1] as i32;
                }
            }
            sum += f16_at(b, 208) * xb.d * (hsum_i32(sumi) - 32 * offset) as f32;
        }
        sum
    }

    pub fn q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only reachable through `row_dot_k`, which checked the CPU features.
        unsafe { q6_k_rows(w, x) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quants;

    /// A simple deterministic generator for test data.
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Random bytes of `nb` blocks of `ty` with small finite f16 scales where ggml keeps them.
    fn random_blocks(ty: GgmlType, nb: usize, seed: &mut u64) -> Vec<u8> {
        let ts = ty.type_size();
        let mut out = vec![0u8; nb * ts];
        let scale_bytes: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[0],
        };
        for b in out.chunks_exact_mut(ts) {
            for byte in b.iter_mut() {
                *byte = (lcg(seed) * 128.0 + 128.0) as u8;
            }
            for &at in scale_bytes {
                b[at..at + 2].copy_from_slice(&f16::from_f32(lcg(seed) * 0.05).to_le_bytes());
            }
        }
        out
    }

    const TYPES: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ];

    #[test]
    fn matmul_matches_dequantized_reference() {
        // Against the gguf module's dequantizer (bit-exact with the `gguf` package): the only
        // difference is the 8-bit rounding of the activations.
        let mut seed = 3u64;
        for ty in TYPES {
            let (n, k) = (13usize, 3 * ty.block_size());
            let w = random_blocks(ty, n * k / ty.block_size(), &mut seed);
            let x: Vec<f32> = (0..k).map(|_| lcg(&mut seed) * 2.0).collect();
            let mut out = vec![0.0; n];
            matmul(ty, &w, n, k, &x, 1, &mut out).unwrap();
            let mut wf = vec![0.0f32; n * k];
            quants::dequantize(ty, &w, &mut wf).unwrap();
            for r in 0..n {
                let want: f64 = (0..k).map(|i| wf[r * k + i] as f64 * x[i] as f64).sum();
                let scale: f64 = (0..k)
                    .map(|i| (wf[r * k + i] as f64 * x[i] as f64).abs())
                    .sum();
                let err = (out[r] as f64 - want).abs();
                assert!(
                    err <= 1e-2 * scale + 1e-6,
                    "{ty} row {r}: {} vs {want} (scale {scale})",
                    out[r]
                );
            }
        }
    }

    #[test]
    fn simd_matches_scalar() {
        let mut seed = 42u64;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::IQ4_NL,
        ] {
            for nb in [1usize, 3, 17] {
                let w = random_blocks(ty, nb, &mut seed);
                let x: Vec<f32> = (0..nb * QK).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut xq = vec![
                    BlockQ8 {
                        qs: [0; QK],
                        d: 0.0,
                        s: 0.0
                    };
                    nb
                ];
                quantize_row_q8(&x, &mut xq);
                let (a, b) = ((row_dot(ty).one)(&w, &xq), scalar_dot(ty)(&w, &xq));
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{ty} nb={nb}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn intrinsic_k_dots_equal_the_plain_ones() {
        // Both sum a super-block's integer products exactly, then multiply once.
        let mut seed = 11u64;
        let plain: [(GgmlType, RowDot<BlockQ8K>); 4] = [
            (GgmlType::IQ4_XS, kquants::iq4_xs),
            (GgmlType::Q4_K, kquants::q4_k),
            (GgmlType::Q5_K, kquants::q5_k),
            (GgmlType::Q6_K, kquants::q6_k),
        ];
        for (ty, reference) in plain {
            for nb in [1usize, 2, 9] {
                let w = random_blocks(ty, nb, &mut seed);
                let x: Vec<f32> = (0..nb * QK_K).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut xq = vec![q8k_zero(); nb];
                quantize_row_q8k(&x, &mut xq);
                let (a, b) = (row_dot_k_one(ty)(&w, &xq), reference(&w, &xq));
                assert_eq!(a.to_bits(), b.to_bits(), "{ty} nb={nb}: {a} vs {b}");
            }
        }
    }

    fn q8k_zero() -> BlockQ8K {
        BlockQ8K {
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            d: 0.0,
        }
    }

    /// The 8-bit activations as the dot products see them, in float64: `d * q` per block.
    fn q8_values(ty: GgmlType, x: &[f32]) -> Vec<f64> {
        if ty.block_size() == QK_K {
            let mut xq = vec![q8k_zero(); x.len() / QK_K];
            quantize_row_q8k(x, &mut xq);
            xq.iter()
                .flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64))
                .collect()
        } else {
            let zero = BlockQ8 {
                qs: [0; QK],
                d: 0.0,
                s: 0.0,
            };
            let mut xq = vec![zero; x.len() / QK];
            quantize_row_q8(x, &mut xq);
            xq.iter()
                .flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64))
                .collect()
        }
    }

    #[test]
    fn matmul_matches_a_float64_reference_of_the_same_8_bit_x() {
        // The weights dequantized by the gguf module times x rounded as `matmul` rounds it: what
        // is left is float32 arithmetic. (Q4_1 / Q5_1 are left out: their offset term takes
        // `s`, d * sum(q) rounded to f16 as ggml's Q8_1 keeps it, not the exact sum.)
        let mut seed = 5u64;
        for ty in TYPES {
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                continue;
            }
            let (n, m, k) = (11usize, 3usize, 3 * QK_K);
            let w = random_blocks(ty, n * k / ty.block_size(), &mut seed);
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 2.0).collect();
            let mut out = vec![0.0; m * n];
            matmul(ty, &w, n, k, &x, m, &mut out).unwrap();
            let mut wf = vec![0.0f32; n * k];
            quants::dequantize(ty, &w, &mut wf).unwrap();
            for i in 0..m {
                let xq = q8_values(ty, &x[i * k..(i + 1) * k]);
                for r in 0..n {
                    let terms = (0..k).map(|c| wf[r * k + c] as f64 * xq[c]);
                    let want: f64 = terms.clone().sum();
                    let scale: f64 = terms.map(f64::abs).sum();
                    let got = out[i * n + r] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * scale,
                        "{ty} [{i}, {r}]: {got} vs {want} (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_rows_agree_for_any_m() {
        // Row i of a batched matmul equals the single-row matmul of x[i]: decode and prefill
        // see the same numbers.
        let mut seed = 7u64;
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
        ] {
            let (n, k, m) = (37, 512, 7);
            let w = random_blocks(ty, n * k / ty.block_size(), &mut seed);
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let mut out = vec![0.0; m * n];
            matmul(ty, &w, n, k, &x, m, &mut out).unwrap();
            for i in 0..m {
                let mut one = vec![0.0; n];
                matmul(ty, &w, n, k, &x[i * k..(i + 1) * k], 1, &mut one).unwrap();
                assert_eq!(&out[i * n..(i + 1) * n], &one[..]);
            }
        }
    }
}
