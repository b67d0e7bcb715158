//! f32 -> block encoding, byte-identical to the `gguf` package's `gguf.quants.quantize`
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16) and to llama.cpp's reference `quantize_row_q8_K_ref`.
//!
//! What exactness takes, from the `gguf` NumPy code:
//! - all arithmetic in f32: `d = max / -8`, `id = 1 / d` (0 when d == 0), `x * id + 8.5`;
//! - Q4/Q5 quants are truncated (`np.trunc`) then cast to uint8 and clipped to the top value;
//!   the cast wraps modulo 256 and sends NaN/inf to 0 (NumPy's behaviour on x86-64);
//! - Q8_0 rounds half away from zero (`np_roundf`); Q8_K rounds half to even (ggml's
//!   `nearest_int` trick);
//! - the block maximum is the first element of largest magnitude (`argmax`, NaN counting as
//!   largest) for Q4_0/Q5_0; `max`/`min` propagate NaN;
//! - scales are stored as f16 rounded to nearest even (NumPy `astype(np.float16)`).

use super::blocks::*;

/// A block type that encodes from f32.
pub trait Quantize: bytemuck::Pod {
    /// Weights per block.
    const WEIGHTS: usize;
    /// Encode `x` (`x.len() == Self::WEIGHTS`).
    fn quantize(x: &[f32]) -> Self;
}

/// NumPy's float32 -> uint8 cast on x86-64: truncate toward zero, keep the low 8 bits of the
/// integer; NaN and infinities become 0.
#[inline(always)]
fn cast_u8_like_numpy(v: f32) -> u8 {
    cast_i8_like_numpy(v) as u8
}

/// NumPy's float32 -> int8 cast on x86-64 (see `cast_u8_like_numpy`). A finite value of
/// magnitude 2^31 or more is a multiple of 256, so its low 8 bits are 0 as well.
#[inline(always)]
fn cast_i8_like_numpy(v: f32) -> i8 {
    if v.is_finite() && v.abs() < 2_147_483_648.0 {
        v as i32 as i8
    } else {
        0
    }
}

/// `np.max` of a block: NaN if any element is NaN.
fn max_propagating_nan(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| {
        if v.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(v)
        }
    })
}

/// `np.min` of a block: NaN if any element is NaN.
fn min_propagating_nan(x: &[f32]) -> f32 {
    x.iter().fold(f32::INFINITY, |m, &v| {
        if v.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.min(v)
        }
    })
}

/// The element of largest magnitude, the first one on ties (`np.argmax(abs(x))`; a NaN wins).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = 0usize;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            return v;
        }
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    x[best]
}

/// `1 / d`, or 0 when d is 0.
#[inline(always)]
fn inverse_or_zero(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Symmetric 4/5-bit quants: q = min(top, trunc(x * id + offset)).
fn symmetric_quants(x: &[f32], levels: f32, top: u8) -> (f32, [u8; QK]) {
    let d = signed_absmax(x) / -levels;
    let id = inverse_or_zero(d);
    let offset = levels + 0.5;
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = cast_u8_like_numpy((v * id + offset).trunc()).min(top);
    }
    (d, q)
}

/// Affine 4/5-bit quants: q = min(top, trunc((x - min) * id + 0.5)); returns (d, min, q).
fn affine_quants(x: &[f32], top: u8) -> (f32, f32, [u8; QK]) {
    let max = max_propagating_nan(x);
    let min = min_propagating_nan(x);
    let d = (max - min) / top as f32;
    let id = inverse_or_zero(d);
    let mut q = [0u8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = cast_u8_like_numpy(((v - min) * id + 0.5).trunc()).min(top);
    }
    (d, min, q)
}

/// Pack 32 quants below 16 as nibbles: byte j = q[j] | q[j + 16] << 4.
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    std::array::from_fn(|j| (q[j] & 0x0F) | (q[j + QK / 2] << 4))
}

/// Bit 4 of each of 32 quants, as a little-endian u32 (bit j from quant j).
fn pack_fifth_bits(q: &[u8; QK]) -> [u8; 4] {
    let bits = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (j, &q)| acc | ((((q >> 4) & 1) as u32) << j));
    bits.to_le_bytes()
}

impl Quantize for BlockQ4_0 {
    const WEIGHTS: usize = QK;
    fn quantize(x: &[f32]) -> Self {
        let (d, q) = symmetric_quants(x, 8.0, 15);
        BlockQ4_0 {
            d: F16Le::from_f32(d),
            qs: pack_nibbles(&q),
        }
    }
}

impl Quantize for BlockQ5_0 {
    const WEIGHTS: usize = QK;
    fn quantize(x: &[f32]) -> Self {
        let (d, q) = symmetric_quants(x, 16.0, 31);
        BlockQ5_0 {
            d: F16Le::from_f32(d),
            qh: pack_fifth_bits(&q),
            qs: pack_nibbles(&q),
        }
    }
}

impl Quantize for BlockQ4_1 {
    const WEIGHTS: usize = QK;
    fn quantize(x: &[f32]) -> Self {
        let (d, min, q) = affine_quants(x, 15);
        BlockQ4_1 {
            d: F16Le::from_f32(d),
            m: F16Le::from_f32(min),
            qs: pack_nibbles(&q),
        }
    }
}

impl Quantize for BlockQ5_1 {
    const WEIGHTS: usize = QK;
    fn quantize(x: &[f32]) -> Self {
        let (d, min, q) = affine_quants(x, 31);
        BlockQ5_1 {
            d: F16Le::from_f32(d),
            m: F16Le::from_f32(min),
            qh: pack_fifth_bits(&q),
            qs: pack_nibbles(&q),
        }
    }
}

/// Round half away from zero exactly as the `gguf` package's `np_roundf` does.
#[inline(always)]
fn round_half_away(v: f32) -> f32 {
    let a = v.abs();
    let floored = a.floor();
    let rounded = floored + (2.0 * (a - floored)).floor();
    // np.sign: -1, 0 or 1 (NaN stays NaN).
    let sign = if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else if v.is_nan() {
        f32::NAN
    } else {
        0.0
    };
    sign * rounded
}

impl Quantize for BlockQ8_0 {
    const WEIGHTS: usize = QK;
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, &v| {
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(v.abs())
            }
        });
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        let qs = std::array::from_fn(|j| cast_i8_like_numpy(round_half_away(x[j] * id)));
        BlockQ8_0 {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}

/// ggml's `nearest_int`: round half to even by adding 1.5 * 2^23 and reading the mantissa
/// (valid for |v| < 2^22; other inputs give the same garbage ggml gives).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

impl Quantize for BlockQ8_K {
    const WEIGHTS: usize = QK_K;
    fn quantize(x: &[f32]) -> Self {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            return bytemuck::Zeroable::zeroed();
        }
        let iscale = -127.0 / max;
        let qs: [i8; QK_K] = std::array::from_fn(|j| nearest_int(iscale * x[j]).min(127) as i8);
        let bsums = std::array::from_fn(|g| {
            I16Le::new(qs[g * 16..g * 16 + 16].iter().map(|&q| q as i16).sum())
        });
        BlockQ8_K {
            d: F32Le::from_f32(1.0 / iscale),
            qs,
            bsums,
        }
    }
}

/// f32 -> bf16 as the `gguf` package (and ggml's `ggml_compute_fp32_to_bf16`) do it: NaN
/// forced quiet, everything else rounded to nearest even (overflow gives infinity).
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let mut bits = v.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        bits = (bits & 0xFFFF_0000) | (64 << 16);
    }
    ((bits as u64 + 0x7FFF + ((bits >> 16) & 1) as u64) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, want) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (126.5, 126),
            (-127.4, -127),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn round_half_away_matches_f32_round() {
        for v in [0.5f32, 1.5, 2.5, -0.5, -2.5, 3.49, -3.51, 0.0, -0.0, 1e9] {
            assert_eq!(round_half_away(v), v.round(), "{v}");
        }
    }

    #[test]
    fn numpy_casts_wrap() {
        assert_eq!(cast_u8_like_numpy(300.7), 44);
        assert_eq!(cast_u8_like_numpy(-1.0), 255);
        assert_eq!(cast_u8_like_numpy(f32::NAN), 0);
        assert_eq!(cast_u8_like_numpy(f32::INFINITY), 0);
        assert_eq!(cast_u8_like_numpy(3e9), 0);
        assert_eq!(cast_i8_like_numpy(-128.9), -128);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        // Ties to even: 0x3F808000 is halfway between 0x3F80 and 0x3F81.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7F80);
    }
}
