//! Block -> f32 decoding for every type rocmforge dequantizes.
//!
//! The arithmetic follows the `gguf` package's NumPy dequantizers step by step, so results are
//! bit-identical: f16 scales widened to f32, sub-scales formed first (`d * sc`, `dmin * m`),
//! then `scale * q` and `- min` (or `+ m`) as separate f32 operations (Rust never fuses them).

use super::blocks::*;

/// A block type (or a plain scalar type, as a block of one) that decodes to f32.
pub trait Dequantize: bytemuck::Pod {
    /// Weights per block.
    const WEIGHTS: usize;
    /// Decode this block into `out` (`out.len() == Self::WEIGHTS`).
    fn dequantize(&self, out: &mut [f32]);
}

impl Dequantize for F32Le {
    const WEIGHTS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Dequantize for F16Le {
    const WEIGHTS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Dequantize for Bf16Le {
    const WEIGHTS: usize = 1;
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

impl Dequantize for BlockQ4_0 {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (lo, hi) = out[..QK].split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let b = self.qs[j];
            lo[j] = d * ((b & 0x0F) as i32 - 8) as f32;
            hi[j] = d * ((b >> 4) as i32 - 8) as f32;
        }
    }
}

impl Dequantize for BlockQ4_1 {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let (lo, hi) = out[..QK].split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let b = self.qs[j];
            lo[j] = d * (b & 0x0F) as f32 + m;
            hi[j] = d * (b >> 4) as f32 + m;
        }
    }
}

/// The 5-bit quants of a Q5_0 / Q5_1 block: weight j's low nibble and bit j of `qh`.
#[inline(always)]
fn q5_quants(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        q[j] = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + QK / 2] = (qs[j] >> 4) | ((((qh >> (j + QK / 2)) & 1) as u8) << 4);
    }
    q
}

impl Dequantize for BlockQ5_0 {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let q = q5_quants(self.qh, &self.qs);
        for (o, &q) in out[..QK].iter_mut().zip(&q) {
            *o = d * (q as i32 - 16) as f32;
        }
    }
}

impl Dequantize for BlockQ5_1 {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let q = q5_quants(self.qh, &self.qs);
        for (o, &q) in out[..QK].iter_mut().zip(&q) {
            *o = d * q as f32 + m;
        }
    }
}

impl Dequantize for BlockQ8_0 {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl Dequantize for BlockQ2_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        // out: [half 2][shift 4][l 32]; weight k is in group k / 16.
        for (g, group) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let (half, shift, l0) = (g / 8, (g / 2) % 4, 16 * (g % 2));
            let sc = self.scales[g];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let bytes = &self.qs[half * 32 + l0..half * 32 + l0 + 16];
            for (o, &b) in group.iter_mut().zip(bytes) {
                let q = (b >> (2 * shift)) & 3;
                *o = dl * q as f32 - ml;
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block.
#[inline(always)]
fn q3_k_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut scales = [0i8; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i8 - 32;
    }
    scales
}

impl Dequantize for BlockQ3_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let scales = q3_k_scales(&self.scales);
        // out: [half 2][shift 4][l 32]; the high bit of weight k is bit k / 32 of hmask[l].
        for (g, group) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let (half, shift, l0) = (g / 8, (g / 2) % 4, 16 * (g % 2));
            let dl = d * scales[g] as f32;
            let hbit = g / 2; // = k / 32 for every weight k of the group
            for (i, o) in group.iter_mut().enumerate() {
                let l = l0 + i;
                let low = ((self.qs[half * 32 + l] >> (2 * shift)) & 3) as i8;
                let high_clear = ((self.hmask[l] >> hbit) & 1) ^ 1;
                let q = low - ((high_clear << 2) as i8);
                *o = dl * q as f32;
            }
        }
    }
}

/// The eight 6-bit (scale, min) pairs of a Q4_K / Q5_K block.
#[inline(always)]
fn k_scales_mins(packed: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = packed[j] & 0x3F;
        mn[j] = packed[j + 4] & 0x3F;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

impl Dequantize for BlockQ4_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        let (sc, mn) = k_scales_mins(&self.scales);
        // out: [chunk 4][nibble 2][l 32]; group j = 2 * chunk + nibble.
        for (j, group) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let scale = d * sc[j] as f32;
            let min = dmin * mn[j] as f32;
            let bytes = &self.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            for (o, &b) in group.iter_mut().zip(bytes) {
                *o = scale * ((b >> shift) & 0x0F) as f32 - min;
            }
        }
    }
}

impl Dequantize for BlockQ5_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        let (sc, mn) = k_scales_mins(&self.scales);
        for (j, group) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let scale = d * sc[j] as f32;
            let min = dmin * mn[j] as f32;
            let bytes = &self.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            for l in 0..32 {
                let q = ((bytes[l] >> shift) & 0x0F) | (((self.qh[l] >> j) & 1) << 4);
                group[l] = scale * q as f32 - min;
            }
        }
    }
}

impl Dequantize for BlockQ6_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        // Weight k = 128 * half + r: low nibble from ql[64 * half + r % 64] (shift 4 * (r / 64)),
        // high bits from qh[32 * half + r % 32] (shift 2 * (r / 32)); group k / 16.
        for (g, group) in out[..QK_K].chunks_exact_mut(16).enumerate() {
            let scale = d * self.scales[g] as f32;
            let half = g / 8;
            let ql = &self.ql[half * 64..half * 64 + 64];
            let qh = &self.qh[half * 32..half * 32 + 32];
            for (i, o) in group.iter_mut().enumerate() {
                let r = (g % 8) * 16 + i;
                let low = (ql[r % 64] >> (4 * (r / 64))) & 0x0F;
                let high = (qh[r % 32] >> (2 * (r / 32))) & 3;
                let q = (low | (high << 4)) as i8 - 32;
                *o = scale * q as f32;
            }
        }
    }
}

impl Dequantize for BlockQ8_K {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK_K].iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }
}

impl Dequantize for BlockIQ4_NL {
    const WEIGHTS: usize = QK;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (lo, hi) = out[..QK].split_at_mut(QK / 2);
        for j in 0..QK / 2 {
            let b = self.qs[j];
            lo[j] = d * KVALUES_IQ4NL[(b & 0x0F) as usize] as f32;
            hi[j] = d * KVALUES_IQ4NL[(b >> 4) as usize] as f32;
        }
    }
}

impl Dequantize for BlockIQ4_XS {
    const WEIGHTS: usize = QK_K;
    #[inline]
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, group) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let dl = d * self.scale(j) as f32;
            let qs = &self.qs[16 * j..16 * j + 16];
            let (lo, hi) = group.split_at_mut(16);
            for l in 0..16 {
                lo[l] = dl * KVALUES_IQ4NL[(qs[l] & 0x0F) as usize] as f32;
                hi[l] = dl * KVALUES_IQ4NL[(qs[l] >> 4) as usize] as f32;
            }
        }
    }
}
