//! How a GGUF tensor sits in device memory: the bytes the kernels read (`to_device_layout`)
//! and a weight matrix held in a device buffer (`DeviceWeight`).

use std::borrow::Cow;

use super::gpu::DeviceBuffer;
use crate::gguf::GgmlType;

/// A weight matrix `[rows, cols]` of a GGUF type in device memory (its bytes in the layout
/// `to_device_layout` gives).
#[derive(Clone, Copy)]
pub struct DeviceWeight<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a DeviceBuffer,
}

impl DeviceWeight<'_> {
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }
}

/// A GGUF weight's bytes as the kernels read them (kernels/quants.h), the same bytes per row.
/// The types of the decode matvec family are split per row into sections, so that every
/// 16-byte piece of quants is one aligned load and a piece's dot product is cheap:
///
/// - Q4_0, Q8_0, IQ4_NL: the quants of every block (16 or 32 bytes each), then the fp16 scales.
/// - Q4_1: quants (16 bytes a block), then (d, m) a block.
/// - Q5_0 / Q5_1: quants, the fifth bits (a u32 a block, spread as `spread_q5` says), then d
///   (Q5_1: d, m) a block.
/// - Q4_K / Q5_K: quants, 16 bytes a sub-block of 32 values with byte i holding values i (low
///   nibble) and 16 + i (high nibble) as in a Q4_0 block; Q5_K then the fifth bits (a u32 a
///   sub-block, spread); then per super-block 16 bytes: the 8 sub-blocks' scales and mins
///   (`k_scales`), d, dmin.
/// - Q6_K: the low 4 bits as Q4_K's quants, the high 2 bits (two u32 a sub-block of 32:
///   `spread_q6`), the 16 i8 scales of each super-block, then d a super-block.
/// - IQ4_XS: the quants of every super-block (their 16-byte sub-blocks are pieces already),
///   then per super-block its first 8 bytes (d, scales_h, scales_l).
///
/// Other types keep the file's layout. `cols`: elements per row; `bytes` whole rows.
pub fn to_device_layout(ty: GgmlType, cols: usize, bytes: &[u8]) -> Cow<'_, [u8]> {
    let split: fn(&[u8], &mut [u8], usize) = match ty {
        GgmlType::Q4_0 => split_scales::<18, 16>,
        GgmlType::Q8_0 => split_scales::<34, 32>,
        GgmlType::Q4_1 => q4_1_row,
        GgmlType::Q5_0 => q5_row::<22, 2>,
        GgmlType::Q5_1 => q5_row::<24, 4>,
        GgmlType::Q4_K => q45_k_row::<144>,
        GgmlType::Q5_K => q45_k_row::<176>,
        GgmlType::Q6_K => q6_k_row,
        GgmlType::IQ4_NL => split_scales::<18, 16>,
        GgmlType::IQ4_XS => iq4_xs_row,
        _ => return Cow::Borrowed(bytes),
    };
    let blocks = cols / ty.block_size();
    let row_bytes = blocks * ty.type_size();
    if row_bytes == 0 || cols % ty.block_size() != 0 || bytes.len() % row_bytes != 0 {
        return Cow::Borrowed(bytes); // not whole rows: the launchers reject it
    }
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        split(src, dst, blocks);
    }
    Cow::Owned(out)
}

/// Q4_0 / Q8_0 / IQ4_NL (BYTES-byte blocks: f16 d, then QS bytes of quants): quants, then
/// scales.
fn split_scales<const BYTES: usize, const QS: usize>(src: &[u8], dst: &mut [u8], blocks: usize) {
    let (quants, scales) = dst.split_at_mut(blocks * QS);
    for (b, block) in src.chunks_exact(BYTES).enumerate() {
        scales[2 * b..2 * b + 2].copy_from_slice(&block[..2]);
        quants[b * QS..(b + 1) * QS].copy_from_slice(&block[2..]);
    }
}

/// Q4_1 {f16 d, m; u8 qs[16]}: qs of every block, then (d, m) of every block.
fn q4_1_row(src: &[u8], dst: &mut [u8], blocks: usize) {
    let (quants, dm) = dst.split_at_mut(blocks * 16);
    for (b, block) in src.chunks_exact(20).enumerate() {
        dm[4 * b..4 * b + 4].copy_from_slice(&block[..4]);
        quants[16 * b..16 * b + 16].copy_from_slice(&block[4..]);
    }
}

/// The fifth bits of a piece of 32 values (bit v: value v's) as the kernels take them
/// (quants.h rf_dot_q5): bit 8e + i holds value 4i + e's, bit 8e + 4 + i value 16 + 4i + e's.
fn spread_q5(h: u32) -> u32 {
    let mut out = 0;
    for e in 0..4 {
        for i in 0..4 {
            out |= ((h >> (4 * i + e)) & 1) << (8 * e + i);
            out |= ((h >> (16 + 4 * i + e)) & 1) << (8 * e + 4 + i);
        }
    }
    out
}

/// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]} (BYTES 22, D 2) / Q5_1 {f16 d, m; qh; qs} (24, 4): qs of
/// every block, the spread fifth bits, then d (and m).
fn q5_row<const BYTES: usize, const D: usize>(src: &[u8], dst: &mut [u8], blocks: usize) {
    let (quants, rest) = dst.split_at_mut(blocks * 16);
    let (high, scales) = rest.split_at_mut(blocks * 4);
    for (b, block) in src.chunks_exact(BYTES).enumerate() {
        scales[D * b..D * (b + 1)].copy_from_slice(&block[..D]);
        let h = u32::from_le_bytes(block[D..D + 4].try_into().unwrap());
        high[4 * b..4 * b + 4].copy_from_slice(&spread_q5(h).to_le_bytes());
        quants[16 * b..16 * b + 16].copy_from_slice(&block[D + 4..]);
    }
}

/// 32 codes (4 low bits used) as a piece's 16 bytes: byte i = codes i | codes 16 + i << 4.
fn piece_nibbles(codes: &[u8; 32], out: &mut [u8]) {
    for i in 0..16 {
        out[i] = (codes[i] & 15) | ((codes[16 + i] & 15) << 4);
    }
}

/// The eight 6-bit (scale, min) pairs of a Q4_K / Q5_K block (ggml's packing of 12 bytes).
fn k_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = packed[j] & 0x3F;
        mn[j] = packed[j + 4] & 0x3F;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// The 16 bytes of a Q4_K / Q5_K super-block the kernels read per piece (quants.h
/// rf_k4_scales): byte j = scale_j & 15 | (min_j & 15) << 4; bytes 8..12, a u32 whose bits
/// 4j..4j + 4 are scale_j >> 4 | (min_j >> 4) << 2; then d and dmin (the block's first 4 bytes).
fn k_scales(block: &[u8], out: &mut [u8]) {
    let (sc, mn) = k_scales_mins(&block[4..16]);
    let mut hi = 0u32;
    for j in 0..8 {
        out[j] = (sc[j] & 15) | ((mn[j] & 15) << 4);
        hi |= (((sc[j] >> 4) | ((mn[j] >> 4) << 2)) as u32) << (4 * j);
    }
    out[8..12].copy_from_slice(&hi.to_le_bytes());
    out[12..16].copy_from_slice(&block[..4]);
}

/// Q4_K (BYTES 144) {f16 d, dmin; u8 scales[12]; u8 qs[128]} / Q5_K (176) {d, dmin, scales;
/// u8 qh[32]; qs}: the pieces of every super-block, Q5_K's spread fifth bits, the scales.
fn q45_k_row<const BYTES: usize>(src: &[u8], dst: &mut [u8], blocks: usize) {
    let five = BYTES == 176;
    let (quants, rest) = dst.split_at_mut(blocks * 128);
    let (high, scales) = rest.split_at_mut(if five { blocks * 32 } else { 0 });
    for (b, block) in src.chunks_exact(BYTES).enumerate() {
        let qs = &block[BYTES - 128..];
        for j in 0..8 {
            let piece = 8 * b + j;
            let mut codes = [0u8; 32];
            for (l, c) in codes.iter_mut().enumerate() {
                *c = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
            }
            piece_nibbles(&codes, &mut quants[16 * piece..16 * piece + 16]);
            if five {
                let qh = &block[16..48];
                let h = (0..32).fold(0u32, |h, l| h | ((((qh[l] >> j) & 1) as u32) << l));
                high[4 * piece..4 * piece + 4].copy_from_slice(&spread_q5(h).to_le_bytes());
            }
        }
        k_scales(block, &mut scales[16 * b..16 * b + 16]);
    }
}

/// IQ4_XS {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}: qs of every super-block, then
/// the first 8 bytes of every super-block.
fn iq4_xs_row(src: &[u8], dst: &mut [u8], blocks: usize) {
    let (quants, scales) = dst.split_at_mut(blocks * 128);
    for (b, block) in src.chunks_exact(136).enumerate() {
        quants[128 * b..128 * b + 128].copy_from_slice(&block[8..]);
        scales[8 * b..8 * b + 8].copy_from_slice(&block[..8]);
    }
}

/// The high 2 bits of a Q6_K piece's 32 values (codes >> 4) as the kernels take them
/// (quants.h WQ6_K): word 0 bits 8e + 2i, 8e + 2i + 1 hold value 4i + e's, word 1 the same
/// for values 16 + 4i + e.
fn spread_q6(codes: &[u8; 32]) -> [u32; 2] {
    let mut out = [0u32; 2];
    for (half, word) in out.iter_mut().enumerate() {
        for e in 0..4 {
            for i in 0..4 {
                let hi = (codes[16 * half + 4 * i + e] >> 4) as u32 & 3;
                *word |= hi << (8 * e + 2 * i);
            }
        }
    }
    out
}

/// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: the low 4 bits of every super-block as
/// pieces of 32 values, the high 2 bits (`spread_q6`), the scales, then d.
fn q6_k_row(src: &[u8], dst: &mut [u8], blocks: usize) {
    let (quants, rest) = dst.split_at_mut(blocks * 128);
    let (high, rest) = rest.split_at_mut(blocks * 64);
    let (scales, d) = rest.split_at_mut(blocks * 16);
    for (b, block) in src.chunks_exact(210).enumerate() {
        let (ql, qh) = (&block[..128], &block[128..192]);
        for s in 0..8 {
            let (n, m) = (s / 4, s % 4);
            let mut codes = [0u8; 32];
            for (l, c) in codes.iter_mut().enumerate() {
                let lo = (ql[64 * n + 32 * (m & 1) + l] >> (4 * (m >> 1))) & 15;
                let hi = (qh[32 * n + l] >> (2 * m)) & 3;
                *c = lo | (hi << 4);
            }
            let piece = 8 * b + s;
            piece_nibbles(&codes, &mut quants[16 * piece..16 * piece + 16]);
            let [wa, wb] = spread_q6(&codes);
            high[8 * piece..8 * piece + 4].copy_from_slice(&wa.to_le_bytes());
            high[8 * piece + 4..8 * piece + 8].copy_from_slice(&wb.to_le_bytes());
        }
        scales[16 * b..16 * b + 16].copy_from_slice(&block[192..208]);
        d[2 * b..2 * b + 2].copy_from_slice(&block[208..210]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 bytes.
    fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    /// Every layout keeps each row's bytes and moves its bits without losing or making any
    /// (the kernels' reading of them is checked against the `gguf`-compatible dequantizer on
    /// the emulator and the GPU). Q4_0 and Q8_0: quants then scales, as before the family.
    #[test]
    fn device_layouts_keep_every_bit_of_a_row() {
        let types = [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
        ];
        for (i, ty) in types.into_iter().enumerate() {
            let cols = 3 * 256;
            let row_bytes = cols / ty.block_size() * ty.type_size();
            let rows = 5;
            let bytes = random_bytes(rows * row_bytes, i as u64);
            let dev = to_device_layout(ty, cols, &bytes);
            assert_eq!(dev.len(), bytes.len(), "{ty:?}");
            for (src, dst) in bytes
                .chunks_exact(row_bytes)
                .zip(dev.chunks_exact(row_bytes))
            {
                let ones = |b: &[u8]| b.iter().map(|v| v.count_ones()).sum::<u32>();
                // (Q4_K / Q5_K scale bytes hold 16 six-bit values in both packings)
                assert_eq!(ones(src), ones(dst), "{ty:?}: bits of a row");
                assert_ne!(src, dst, "{ty:?}: a layout of its own");
            }
        }
        // Q4_0: block b's quants at 16 b, its scale at 16 blocks + 2 b
        let bytes = random_bytes(4 * 18, 9);
        let dev = to_device_layout(GgmlType::Q4_0, 128, &bytes);
        assert_eq!(dev[16..32], bytes[20..36]);
        assert_eq!(dev[66..68], bytes[18..20]);
        // IQ4_XS: super-block b's quants at 128 b, its d and scales at 128 blocks + 8 b
        let bytes = random_bytes(2 * 136, 10);
        let dev = to_device_layout(GgmlType::IQ4_XS, 512, &bytes);
        assert_eq!(dev[128..256], bytes[144..272]);
        assert_eq!(dev[264..272], bytes[136..144]);
        // not whole rows: left as they are (the launchers reject them)
        let odd = random_bytes(100, 1);
        assert_eq!(to_device_layout(GgmlType::Q6_K, 256, &odd)[..], odd[..]);
    }
}
