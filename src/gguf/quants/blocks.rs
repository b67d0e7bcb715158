//! ggml's block layouts, byte for byte (as `ggml-common.h` defines them): one `#[repr(C)]`
//! struct per quant type, with compile-time size checks.
//!
//! Scalars inside blocks are little-endian byte arrays (`F16Le`, `F32Le`, `I16Le`), so every
//! struct has alignment 1 and any `&[u8]` holding whole blocks can be viewed as `&[Block]`
//! (tensor data may start at any offset, and a Q4_0 block is 18 bytes).

use std::mem::size_of;

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

/// Weights per block of the legacy types (Q4_0 .. Q8_1).
pub const QK: usize = 32;
/// Weights per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K / Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// The 16 values a 4-bit code of IQ4_NL / IQ4_XS stands for (ggml's `kvalues_iq4nl`): a
/// non-linear grid, denser near zero, where the weights of a trained matrix mostly are.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// An IEEE half stored little-endian.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f16::from_le_bytes(self.0).to_f32()
    }
    /// Round to nearest even (overflow gives infinity), like NumPy's `astype(np.float16)`.
    #[inline(always)]
    pub fn from_f32(v: f32) -> Self {
        F16Le(f16::from_f32(v).to_le_bytes())
    }
}

/// A bfloat16 stored little-endian (the upper half of an f32).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Bf16Le(pub [u8; 2]);

impl Bf16Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        bf16::from_le_bytes(self.0).to_f32()
    }
}

/// An f32 stored little-endian.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct F32Le(pub [u8; 4]);

impl F32Le {
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_le_bytes(self.0)
    }
    #[inline(always)]
    pub fn from_f32(v: f32) -> Self {
        F32Le(v.to_le_bytes())
    }
}

/// An i16 stored little-endian.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct I16Le(pub [u8; 2]);

impl I16Le {
    #[inline(always)]
    pub fn get(self) -> i16 {
        i16::from_le_bytes(self.0)
    }
    #[inline(always)]
    pub fn new(v: i16) -> Self {
        I16Le(v.to_le_bytes())
    }
}

/// Q4_0: weight = d * (q - 8), q in 0..16. Byte j holds weight j (low nibble) and j + 16 (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}

/// Q4_1: weight = d * q + m, q in 0..16; nibbles as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; QK / 2],
}

/// Q5_0: weight = d * (q - 16), q in 0..32: low 4 bits as Q4_0's nibbles, bit 4 of weight j is
/// bit j of `qh` (a little-endian u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q5_1: weight = d * q + m, q in 0..32, bits as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q8_0: weight = d * q, q an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; QK],
}

/// Q8_1 (activations only, never dequantized): d, and s = d * sum(qs). ggml's current layout is
/// 36 bytes; the `gguf` package's size table (and `GgmlType::type_size`) still says 40, the
/// size of an older layout with f32 `d` and `s`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: F16Le,
    pub s: F16Le,
    pub qs: [i8; QK],
}

/// Q2_K: 16 groups of 16 weights; weight = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..4.
/// `qs` holds two halves of 128 weights; in each, byte l carries weights l, l+32, l+64, l+96
/// in bit pairs 0-1, 2-3, 4-5, 6-7.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2_K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: F16Le,
    pub dmin: F16Le,
}

/// Q3_K: 16 groups of 16 weights; weight = d * (scale - 32) * (q - 4 * !hbit), q in 0..4
/// packed as in Q2_K, the high bit of weight k in bit k / 32 of `hmask[k % 32]`, 6-bit scales
/// packed into 12 bytes (low nibbles in bytes 0..8, high bit pairs in bytes 8..12).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3_K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: F16Le,
}

/// Q4_K: 8 groups of 32 weights; weight = d * sc * q - dmin * m, q in 0..16, 6-bit sc/m
/// packed into 12 bytes. Byte l of each 32-byte chunk c holds weights 64c + l (low nibble)
/// and 64c + 32 + l (high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: Q4_K plus a fifth bit: bit 4 of weight k is bit k / 32 of `qh[k % 32]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 16 groups of 16 weights; weight = d * scale * (q - 32), q in 0..64: low 4 bits in
/// `ql`, high 2 bits in `qh`, i8 scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16Le,
}

/// Q8_K (activations for K-quant dot products): weight = d * q, with the sums of each group
/// of 16 quants kept in `bsums`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_K {
    pub d: F32Le,
    pub qs: [i8; QK_K],
    pub bsums: [I16Le; QK_K / 16],
}

/// IQ4_NL: weight = d * KVALUES_IQ4NL[q], q in 0..16; nibbles as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4_NL {
    pub d: F16Le,
    pub qs: [u8; QK / 2],
}

/// IQ4_XS: 8 groups of 32 weights; weight = d * (ls - 32) * KVALUES_IQ4NL[q], with group j's
/// 6-bit `ls` = nibble j % 2 of `scales_l[j / 2]` | bits 2j..2j+2 of `scales_h` (a little-endian
/// u16) << 4. Group j's 16 bytes `qs[16j..]`: byte l holds weight 32j + l (low nibble) and
/// 32j + 16 + l (high nibble), as an IQ4_NL block does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4_XS {
    pub d: F16Le,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

impl BlockIQ4_XS {
    /// The signed scale `ls - 32` of group `j` (of 8).
    #[inline(always)]
    pub fn scale(&self, j: usize) -> i32 {
        let low = (self.scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
        let high = (u16::from_le_bytes(self.scales_h) >> (2 * j)) & 3;
        (low as i32 | (high as i32) << 4) - 32
    }
}

// Sizes as ggml's static_asserts state them.
const _: () = assert!(size_of::<BlockQ4_0>() == 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ4_1>() == 2 * 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_0>() == 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_1>() == 2 * 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ8_0>() == 2 + QK);
const _: () = assert!(size_of::<BlockQ8_1>() == 2 * 2 + QK);
const _: () = assert!(size_of::<BlockQ2_K>() == 2 * 2 + QK_K / 16 + QK_K / 4);
const _: () = assert!(size_of::<BlockQ3_K>() == 2 + QK_K / 4 + QK_K / 8 + 12);
const _: () = assert!(size_of::<BlockQ4_K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2);
const _: () = assert!(size_of::<BlockQ5_K>() == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8);
const _: () = assert!(size_of::<BlockQ6_K>() == 2 + QK_K / 16 + 3 * QK_K / 4);
const _: () = assert!(size_of::<BlockQ8_K>() == 4 + QK_K + 2 * QK_K / 16);
const _: () = assert!(size_of::<BlockIQ4_NL>() == 2 + QK / 2);
const _: () = assert!(size_of::<BlockIQ4_XS>() == 2 + 2 + QK_K / 64 + QK_K / 2);
