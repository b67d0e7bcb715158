// quants.h: GGUF weight types as kernels read them (included by matmul.hip, matvec.hip and
// embedding.hip).
//
// A weight is a row-major matrix [rows, k]: k / BLOCK blocks of BYTES bytes a row (float types:
// k elements), the same bytes per row as the GGUF file. Every type below has
//
//   static void chunk(const u8* row, int c, int k, float y[32])
//
// which dequantizes elements [32c, 32c + 32) of one row into registers (float types zero-fill
// past k; quantized types need k % BLOCK == 0, which the launchers check). The float types
// also have load4(row, i): elements [4i, 4i + 4) with one vector load. Block layouts of ggml
// (little-endian, fp16 scales stored as IEEE half bits):
//   Q4_0 {f16 d; u8 qs[16]}                  x = (nibble - 8) * d
//   Q4_1 {f16 d, m; u8 qs[16]}               x = nibble * d + m
//   Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}        x = (nibble | high bit << 4) - 16) * d
//   Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]}     x = (nibble | high bit << 4) * d + m
//   Q8_0 {f16 d; i8 qs[32]}                  x = q * d
//   Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}            256 per block, 8 sub-blocks of 32
//   Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} 256 per block
//   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}       256 per block, 16 scales of 16
//   Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}             256 per block, 16 groups of 16
//   Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}     256 per block, 16 groups of 16
//   Q8_K {f32 d; i8 qs[256]; i16 bsums[16]}                  256 per block
//   IQ4_NL {f16 d; u8 qs[16]}                x = kvalues[nibble] * d  (nibbles as in Q4_0)
//   IQ4_XS {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]} 256 per block, 8 sub-blocks of 32,
//                                            x = kvalues[nibble] * d * (6-bit scale - 32)
// Q2_K, Q3_K, Q8_K and the float types sit in device memory as in the file. The types of the
// decode matvec (Q4_0 .. Q6_K, IQ4_NL, IQ4_XS) are split per row into sections (`to_device_layout` in
// src/device/layout.rs; each struct's comment): first the quants of the whole row in x order,
// 16 bytes a piece of 32 values (Q8_0: 16), so that consecutive lanes read consecutive 16-byte
// pieces; then their high bits and scales. In a piece, byte j holds values j (low nibble) and
// 16 + j (high nibble), as in a Q4_0 block. Rows whose bytes are not a multiple of 4 (an odd
// number of Q4_0, Q5_0, Q8_0, IQ4_NL blocks or Q6_K super-blocks, and Q2_K, Q3_K) are only
// 2-byte aligned: `chunk` reads those with 16-bit loads.
#pragma once
#include "common.h"

__device__ __forceinline__ u32 rf_ld16(const u8* p) { return *(const u16*)p; }
__device__ __forceinline__ u32 rf_ld32_a2(const u8* p) {
    return rf_ld16(p) | (rf_ld16(p + 2) << 16);
}
__device__ __forceinline__ u32 rf_ld32_a4(const u8* p) { return *(const u32*)p; }
__device__ __forceinline__ float rf_ldh(const u8* p) { return rf_half_to_float((u16)rf_ld16(p)); }

// 16 bytes of 4-bit pairs -> 32 values: byte j gives y[j] (low nibble) and y[j + 16] (high).
__device__ __forceinline__ void rf_unpack_nibbles(const u32 q[4], int lo[32]) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const u32 byte = (q[j / 4] >> (8 * (j % 4))) & 0xffu;
        lo[j] = (int)(byte & 15u);
        lo[j + 16] = (int)(byte >> 4);
    }
}
__device__ __forceinline__ void rf_unpack_nibbles(uint4 q, int lo[32]) {
    const u32 w[4] = {q.x, q.y, q.z, q.w};
    rf_unpack_nibbles(w, lo);
}

// Element 32 c + i of a float row of k values (32 c < k), converted by `conv`, or 0 past the
// row's end. AMD: loaded in bounds (from min(32 c + i, k - 1)) and cleared by an integer mask;
// a compare would give each of a chunk's 32 elements a lane mask, which the compiler keeps live
// in scalar registers while the loads are in flight (two a mask at wave 64: they spilled).
// NVIDIA: the compare (predicated loads).
template <class T, class Conv>
__device__ __forceinline__ float rf_chunk_value(const T* r, int c, int i, int k, Conv conv) {
#if defined(RF_HIP)
    const int last = k - 1 - 32 * c;
    return __int_as_float(__float_as_int(conv(r[32 * c + min(i, last)])) & ~((last - i) >> 31));
#else
    return (32 * c + i < k) ? conv(r[32 * c + i]) : 0.0f;
#endif
}
struct RfAsFloat {
    __device__ float operator()(float v) const { return v; }
};
struct RfHalfToFloat {
    __device__ float operator()(u16 v) const { return rf_half_to_float(v); }
};
struct RfBf16ToFloat {
    __device__ float operator()(u16 v) const { return rf_bf16_to_float(v); }
};

struct WF32 {
    static constexpr int BLOCK = 1, BYTES = 4;
    // Elements [4i, 4i + 4) of a row (rows 16-byte aligned: k % 4 == 0).
    __device__ static float4 load4(const u8* row, int i) { return ((const float4*)row)[i]; }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const float* r = (const float*)row;
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = rf_chunk_value(r, c, i, k, RfAsFloat());
    }
};

struct WF16 {
    static constexpr int BLOCK = 1, BYTES = 2;
    __device__ static float4 load4(const u8* row, int i) {
        const uint2 w = ((const uint2*)row)[i];
        return make_float4(rf_half_to_float((u16)(w.x & 0xffffu)), rf_half_to_float((u16)(w.x >> 16)),
                           rf_half_to_float((u16)(w.y & 0xffffu)), rf_half_to_float((u16)(w.y >> 16)));
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const u16* r = (const u16*)row;
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = rf_chunk_value(r, c, i, k, RfHalfToFloat());
    }
};

struct WBF16 {
    static constexpr int BLOCK = 1, BYTES = 2;
    __device__ static float4 load4(const u8* row, int i) {
        const uint2 w = ((const uint2*)row)[i];
        return make_float4(rf_bf16_to_float((u16)(w.x & 0xffffu)), rf_bf16_to_float((u16)(w.x >> 16)),
                           rf_bf16_to_float((u16)(w.y & 0xffffu)), rf_bf16_to_float((u16)(w.y >> 16)));
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const u16* r = (const u16*)row;
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = rf_chunk_value(r, c, i, k, RfBf16ToFloat());
    }
};

// ------------------------------------------------------------------------------------------
// The decode matvec's piece (kernels/matvec.hip). Each type the family takes also defines:
//   VALUES        values of x one piece covers (32, or 16 for Q8_0). A piece is 16 quant bytes:
//                 piece p of a row is at row + 16 p (every such type's device layout starts with
//                 its quants in x order), one aligned 16-byte load where the rows are 16-byte
//                 aligned. x is quantized to 8 bits per piece (scale max|x| / 127).
//   X_SUMS        sums of the piece's 8-bit x the dot product takes: 1 (over the piece) or 2
//                 (over its halves: Q6_K's scales of 16 values).
//   At(p, k)      where piece p's other data (scales, mins, high bits) sits in a row of k
//                 values: byte offsets from the row's start, each through `off` (RfOffset, or
//                 RfLaneOffset where a block's many rows share them).
//   Aux, aux(row, at)   that data, loaded with the piece's quants (before their use).
//   dot(q, aux, xq, sx, dx)    the piece's contribution to the row's sum: x is dx * xq, xq
//                 VALUES / 4 words of 4 signed bytes (word i: values 4i .. 4i + 3 of the piece),
//                 sx the X_SUMS sums of xq. Integer products (dp4a), as llama.cpp's
//                 vec_dot_*_q8_1; offsets and mins go with the sums of xq.
//   values(q, aux, y)   the piece's 32 values (Q4_K, Q5_K, Q6_K, IQ4_XS: their `chunk` and the
//                 tensor-core prefill's W tile, kernels/matmul.hip MmaWTilePiece, read them so).
// A type whose layout differs from the file's keeps it in every kernel (`chunk` reads it too).

// RF_DOT_IU8: the target's 4-byte dot product is v_dot4_i32_iu8 (RDNA3 and RDNA4: gfx11,
// gfx12, which have no v_dot4_i32_i8), and its IQ4 lookup the byte permutes of rf_iq4_values.
// The CPU emulator defines it at wave 32 (its prelude models the two builtins), so that the
// emulated kernels run these forms as well as the portable ones (wave 64).
#if defined(RF_HIP) && !defined(RF_DOT_IU8) && (defined(__GFX11__) || defined(__GFX12__))
#define RF_DOT_IU8 1
#endif
// RF_PRMT: the target's byte permute is NVIDIA's prmt (__byte_perm: result byte i is byte
// (nibble i of the selector) & 7 of {y, x}, x bytes 0-3), which the IQ4 lookup uses (see
// rf_iq4_nibble_values). The CPU emulator defines it at wave 64 (its prelude models
// __byte_perm), so that the emulated kernels run that form as well as RDNA's (wave 32).
#if defined(RF_CUDA) && !defined(RF_PRMT)
#define RF_PRMT 1
#endif

// 4-byte integer dot product: c + sum of the products of a's and b's signed bytes.
// One instruction where the target has one: NVIDIA dp4a; AMD v_dot4_i32_i8 (sdot4) on the
// CDNA targets and gfx1030, and on RDNA3 and RDNA4 v_dot4_i32_iu8 with both operands signed
// (sudot4), the same sum (no clamp either). The byte-by-byte form is for the other targets;
// on RDNA3/4 it also cost registers (the 16-row Q4_K matvecs spilled to scratch there with it).
__device__ __forceinline__ int rf_dp4a(int a, int b, int c) {
#if defined(RF_CUDA)
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#elif defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
    defined(__gfx941__) || defined(__gfx942__) || defined(__gfx1030__)
    return __builtin_amdgcn_sdot4(a, b, c, false);
#elif defined(RF_DOT_IU8)
    return __builtin_amdgcn_sudot4(true, a, true, b, c, false);
#else
    for (int i = 0; i < 32; i += 8) c += (int)(i8)(a >> i) * (int)(i8)(b >> i);
    return c;
#endif
}

// v << s, or v >> -s for s < 0 (s a constant once unrolled).
__device__ __forceinline__ u32 rf_shift(u32 v, int s) { return s >= 0 ? v << s : v >> -s; }

// Sum of code * xq over a piece of 32 4-bit codes: byte j of word i holds values 4i + j (low
// nibble) and 16 + 4i + j (high nibble).
__device__ __forceinline__ int rf_dot_q4(uint4 q, const int* xq) {
    const u32 w[4] = {q.x, q.y, q.z, q.w};
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        s = rf_dp4a((int)(w[i] & 0x0f0f0f0fu), xq[i], s);
        s = rf_dp4a((int)((w[i] >> 4) & 0x0f0f0f0fu), xq[4 + i], s);
    }
    return s;
}

// The same for 5-bit codes, their fifth bits spread in one word h so that a shift and a mask
// put them in place: bit 8e + i is value 4i + e's, bit 8e + 4 + i value 16 + 4i + e's (i, e < 4).
__device__ __forceinline__ int rf_dot_q5(uint4 q, u32 h, const int* xq) {
    const u32 w[4] = {q.x, q.y, q.z, q.w};
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 lo = (w[i] & 0x0f0f0f0fu) | ((h << (4 - i)) & 0x10101010u);
        const u32 hi = ((w[i] >> 4) & 0x0f0f0f0fu) | ((h >> i) & 0x10101010u);
        s = rf_dp4a((int)lo, xq[i], s);
        s = rf_dp4a((int)hi, xq[4 + i], s);
    }
    return s;
}

// Fifth bit of value v (0..31) of a piece, spread as rf_dot_q5 takes it.
__device__ __forceinline__ int rf_bit5(u32 h, int v) {
    return (int)((h >> (8 * (v & 3) + 4 * (v >> 4) + ((v & 15) >> 2))) & 1u);
}

// A piece's 16 quant bytes at p (4-byte aligned when a4, else 2-byte).
__device__ __forceinline__ uint4 rf_piece_quants(const u8* p, bool a4) {
    u32 q[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = a4 ? rf_ld32_a4(p + 4 * i) : rf_ld32_a2(p + 4 * i);
    return make_uint4(q[0], q[1], q[2], q[3]);
}

// The 32 codes of a piece: 16 quant bytes at p (4-byte aligned when a4, else 2-byte).
__device__ __forceinline__ void rf_piece_nibbles(const u8* p, bool a4, int v[32]) {
    rf_unpack_nibbles(rf_piece_quants(p, a4), v);
}

// What the `At` constructors pass their offsets through: as they are (RfOffset), or through
// rf_per_lane (RfLaneOffset: the row-block matvecs of matvec.hip, whose blocks hold up to 32
// rows). Only there: the empty asm it is on AMD counts as convergent, and a loop holding one is
// not unrolled by a runtime count (matmul.hip's `#pragma unroll 2`).
struct RfOffset {
    __device__ i64 operator()(i64 v) const { return v; }
};
struct RfLaneOffset {
    __device__ i64 operator()(i64 v) const { return rf_per_lane(v); }
};

struct WQ4_0 {  // device layout: qs[k / 32][16], then d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 18, QS = 16;
    static constexpr int VALUES = 32, X_SUMS = 1;  // a piece: one block
    using Aux = float;
    struct At {
        i64 d;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L()) : d(off((i64)(k / 32) * QS + 2 * p)) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) { return rf_ldh(row + at.d); }
    __device__ static float dot(uint4 q, Aux d, const int* xq, const int* sx, float dx) {
        return d * dx * (float)(rf_dot_q4(q, xq) - 8 * sx[0]);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const u8* b = row + (i64)c * QS;
        const float d = rf_ldh(row + (i64)(k / 32) * QS + 2 * c);
        u32 q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = rf_ld32_a2(b + 4 * i);
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)(v[i] - 8) * d;
    }
};

struct WQ4_1 {  // device layout: qs[k / 32][16], then (d, m)[k / 32]
    static constexpr int BLOCK = 32, BYTES = 20;
    static constexpr int VALUES = 32, X_SUMS = 1;
    struct Aux {
        float d, m;
    };
    struct At {
        i64 dm;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L()) : dm(off((i64)(k / 32) * 16 + 4 * p)) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) {
        const u32 dm = rf_ld32_a4(row + at.dm);
        return {rf_half_to_float((u16)(dm & 0xffffu)), rf_half_to_float((u16)(dm >> 16))};
    }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        return dx * (a.d * (float)rf_dot_q4(q, xq) + a.m * (float)sx[0]);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const Aux a = aux(row, At(c, k));
        int v[32];
        rf_piece_nibbles(row + (i64)c * 16, true, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)v[i] * a.d + a.m;
    }
};

struct WQ5_0 {  // device layout: qs[k / 32][16], qh[k / 32] (u32, spread: rf_dot_q5), d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 22;
    static constexpr int VALUES = 32, X_SUMS = 1;
    struct Aux {
        u32 h;
        float d;
    };
    struct At {
        i64 h, d;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : h(off((i64)(k / 32) * 16 + 4 * p)),
              d(off((i64)(k / 32) * 20 + 2 * p)) {}
    };
    // (rows of an odd number of blocks are 2-byte aligned: the decode launchers take none)
    __device__ static Aux aux(const u8* row, const At& at) { return {rf_ld32_a4(row + at.h), rf_ldh(row + at.d)}; }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        return a.d * dx * (float)(rf_dot_q5(q, a.h, xq) - 16 * sx[0]);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const At at(c, k);
        const u32 h = rf_ld32_a2(row + at.h);
        const float d = rf_ldh(row + at.d);
        int v[32];
        rf_piece_nibbles(row + (i64)c * 16, false, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)((v[i] | (rf_bit5(h, i) << 4)) - 16) * d;
    }
};

struct WQ5_1 {  // device layout: qs[k / 32][16], qh[k / 32] (u32, spread: rf_dot_q5), (d, m)[k / 32]
    static constexpr int BLOCK = 32, BYTES = 24;
    static constexpr int VALUES = 32, X_SUMS = 1;
    struct Aux {
        u32 h;
        float d, m;
    };
    struct At {
        i64 h, dm;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : h(off((i64)(k / 32) * 16 + 4 * p)),
              dm(off((i64)(k / 32) * 20 + 4 * p)) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) {
        const u32 dm = rf_ld32_a4(row + at.dm);
        return {rf_ld32_a4(row + at.h), rf_half_to_float((u16)(dm & 0xffffu)), rf_half_to_float((u16)(dm >> 16))};
    }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        return dx * (a.d * (float)rf_dot_q5(q, a.h, xq) + a.m * (float)sx[0]);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const Aux a = aux(row, At(c, k));
        int v[32];
        rf_piece_nibbles(row + (i64)c * 16, true, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)(v[i] | (rf_bit5(a.h, i) << 4)) * a.d + a.m;
    }
};

struct WQ8_0 {  // device layout: qs[k / 32][32], then d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 34, QS = 32;
    static constexpr int VALUES = 16, X_SUMS = 1;  // a piece: half a block
    using Aux = float;
    struct At {
        i64 d;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L()) : d(off((i64)(k / 32) * QS + 2 * (p >> 1))) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) { return rf_ldh(row + at.d); }
    __device__ static float dot(uint4 q, Aux d, const int* xq, const int*, float dx) {
        int s = rf_dp4a((int)q.x, xq[0], 0);
        s = rf_dp4a((int)q.y, xq[1], s);
        s = rf_dp4a((int)q.z, xq[2], s);
        return d * dx * (float)rf_dp4a((int)q.w, xq[3], s);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const u8* b = row + (i64)c * QS;
        const float d = rf_ldh(row + (i64)(k / 32) * QS + 2 * c);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 w = rf_ld32_a2(b + 4 * i);
#pragma unroll
            for (int j = 0; j < 4; ++j) y[4 * i + j] = (float)(i8)((w >> (8 * j)) & 0xffu) * d;
        }
    }
};

// Q4_K / Q5_K: the scales and mins of a super-block's 8 sub-blocks (16 bytes a super-block):
// byte j: scale_j & 15 | (min_j & 15) << 4; bytes 8..11 (u32): bits 4j..4j+3 = scale_j >> 4 |
// (min_j >> 4) << 2; then f16 d and f16 dmin. Sub-block p % 8's d * scale and dmin * min.
__device__ __forceinline__ void rf_k4_scales(const u8* hdr, int j, float* d, float* m) {
    const u32 b = hdr[j], hi = rf_ld32_a4(hdr + 8) >> (4 * j), dm = rf_ld32_a4(hdr + 12);
    *d = rf_half_to_float((u16)(dm & 0xffffu)) * (float)((b & 15u) | ((hi & 3u) << 4));
    *m = rf_half_to_float((u16)(dm >> 16)) * (float)((b >> 4) | ((hi & 12u) << 2));
}

struct WQ4_K {  // device layout: qs[k / 32][16] (piece = sub-block), then 16 bytes a super-block
    static constexpr int BLOCK = 256, BYTES = 144;
    static constexpr int VALUES = 32, X_SUMS = 1;
    struct Aux {
        float d, m;  // d * scale, dmin * min of the piece's sub-block
    };
    struct At {
        i64 s;  // the super-block's scales
        int j;  // the sub-block
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : s(off((i64)(k / 256) * 128 + 16 * (p >> 3))),
              j(p & 7) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) {
        Aux a;
        rf_k4_scales(row + at.s, at.j, &a.d, &a.m);
        return a;
    }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        return dx * (a.d * (float)rf_dot_q4(q, xq) - a.m * (float)sx[0]);
    }
    __device__ static void values(uint4 q, Aux a, float y[32]) {
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = a.d * (float)v[i] - a.m;
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        values(rf_piece_quants(row + (i64)c * 16, true), aux(row, At(c, k)), y);
    }
};

struct WQ5_K {  // device layout: qs[k / 32][16], qh[k / 32] (u32, spread: rf_dot_q5), 16 bytes a super-block
    static constexpr int BLOCK = 256, BYTES = 176;
    static constexpr int VALUES = 32, X_SUMS = 1;
    struct Aux {
        float d, m;
        u32 h;
    };
    struct At {
        i64 h, s;
        int j;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : h(off((i64)(k / 256) * 128 + 4 * p)),
              s(off((i64)(k / 256) * 160 + 16 * (p >> 3))),
              j(p & 7) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) {
        Aux a;
        rf_k4_scales(row + at.s, at.j, &a.d, &a.m);
        a.h = rf_ld32_a4(row + at.h);
        return a;
    }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        return dx * (a.d * (float)rf_dot_q5(q, a.h, xq) - a.m * (float)sx[0]);
    }
    __device__ static void values(uint4 q, Aux a, float y[32]) {
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = a.d * (float)(v[i] | (rf_bit5(a.h, i) << 4)) - a.m;
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        values(rf_piece_quants(row + (i64)c * 16, true), aux(row, At(c, k)), y);
    }
};

// device layout: ql[k / 32][16] (piece = 32 values, low 4 bits as Q4_0's nibbles), qh[k / 32][2]
// (u32 words; word 0: bits 8e + 2i, 8e + 2i + 1 = the high 2 bits of value 4i + e; word 1: the
// same for values 16 + 4i + e), scales[k / 16] (i8, in x order), d[k / 256].
struct WQ6_K {
    static constexpr int BLOCK = 256, BYTES = 210;
    static constexpr int VALUES = 32, X_SUMS = 2;
    struct Aux {
        u32 ha, hb, sc;  // the high bits' words; the two scales (i8, low byte first)
        float d;
    };
    struct At {
        i64 h, sc, d;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : h(off((i64)(k / 256) * 128 + 8 * p)),
              sc(off((i64)(k / 256) * 192 + 2 * p)),
              d(off((i64)(k / 256) * 208 + 2 * (p >> 3))) {}
    };
    // (rows of an odd number of super-blocks are 2-byte aligned: the decode launchers take
    // none; `aux_a2` reads those)
    __device__ static Aux aux(const u8* row, const At& at) {
        return {rf_ld32_a4(row + at.h), rf_ld32_a4(row + at.h + 4), rf_ld16(row + at.sc), rf_ldh(row + at.d)};
    }
    __device__ static Aux aux_a2(const u8* row, const At& at) {
        return {rf_ld32_a2(row + at.h), rf_ld32_a2(row + at.h + 4), rf_ld16(row + at.sc), rf_ldh(row + at.d)};
    }
    __device__ static float dot(uint4 q, Aux a, const int* xq, const int* sx, float dx) {
        const u32 w[4] = {q.x, q.y, q.z, q.w};
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 lo = (w[i] & 0x0f0f0f0fu) | (rf_shift(a.ha, 4 - 2 * i) & 0x30303030u);
            const u32 hi = ((w[i] >> 4) & 0x0f0f0f0fu) | (rf_shift(a.hb, 4 - 2 * i) & 0x30303030u);
            s0 = rf_dp4a((int)lo, xq[i], s0);
            s1 = rf_dp4a((int)hi, xq[4 + i], s1);
        }
        const int c0 = (int)(i8)(a.sc & 0xffu), c1 = (int)(i8)(a.sc >> 8);
        return a.d * dx * (float)(c0 * (s0 - 32 * sx[0]) + c1 * (s1 - 32 * sx[1]));
    }
    __device__ static void values(uint4 q, Aux a, float y[32]) {
        const u32 h[2] = {a.ha, a.hb};
        const float d0 = a.d * (float)(i8)(a.sc & 0xffu), d1 = a.d * (float)(i8)(a.sc >> 8);
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            const int e = i & 3, g = (i & 15) >> 2;
            const int hi = (int)((h[i >> 4] >> (8 * e + 2 * g)) & 3u);
            y[i] = (i < 16 ? d0 : d1) * (float)((v[i] | (hi << 4)) - 32);
        }
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        values(rf_piece_quants(row + (i64)c * 16, false), aux_a2(row, At(c, k)), y);
    }
};

// IQ4_NL / IQ4_XS: a 4-bit code c stands for ggml's kvalues_iq4nl[c], the signed bytes
// {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}. The table is two
// 64-bit constants (byte i of the first: value i, of the second: value 8 + i), so that a lookup
// is a select and a shift in registers, with no memory access (but RDNA3/4's four at once:
// rf_iq4_values, and NVIDIA's eight: rf_iq4_nibble_values).
__device__ __forceinline__ u32 rf_iq4_byte(u32 c) {
    const u64 lo = 0xf6eaddcfbfad9881ull, hi = 0x7159453526190d01ull;
    return (u32)(((c & 8u) ? hi : lo) >> (8 * (c & 7u))) & 0xffu;
}
__device__ __forceinline__ int rf_iq4_value(int c) { return (int)(i8)rf_iq4_byte((u32)c); }

// The values of the codes in the low nibbles of w's 4 bytes, as 4 signed bytes in place.
__device__ __forceinline__ u32 rf_iq4_values(u32 w) {
#if defined(RF_DOT_IU8)
    // RDNA3/4, where rf_dp4a is sudot4 and takes the 4 values packed in a word: three byte
    // permutes (v_perm_b32: selector byte s < 8 picks byte s of {first, second}, the second
    // the low word) look all four up in the table's halves and pick per byte by the code's
    // bit 3. The select-and-shift form below, packed, needed 31 to 41 VGPRs more than a lane
    // has in the 16-row IQ4_NL/IQ4_XS matvecs (and the 8-row GLU ones) there.
    const u32 idx = w & 0x07070707u;
    const u32 lo = __builtin_amdgcn_perm(0xf6eaddcfu, 0xbfad9881u, idx);  // values 0..7
    const u32 hi = __builtin_amdgcn_perm(0x71594535u, 0x26190d01u, idx);  // values 8..15
    return __builtin_amdgcn_perm(hi, lo, 0x03020100u | ((w & 0x08080808u) >> 1));
#else
    u32 out = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) out |= rf_iq4_byte((w >> (8 * j)) & 15u) << (8 * j);
    return out;
#endif
}

#if defined(RF_PRMT)
// The values of all 8 codes of w at once: lo those of the low nibbles of its 4 bytes, hi those
// of the high nibbles (4 signed bytes each, in byte order). __byte_perm reads 3 bits of each
// selector nibble (it masks off prmt's sign-replicate bit), so the codes of two bytes (low,
// high, low, high) are a selector as they stand: one permute looks them up in each half of the
// table, a third picks per byte by the code's bit 3, and two more sort the 8 values into low
// and high nibbles. Eight permutes for 8 values, where the select-and-shift form takes several
// instructions a value.
__device__ __forceinline__ void rf_iq4_nibble_values(u32 w, u32& lo, u32& hi) {
    u32 v[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const u32 c = w >> (16 * h);  // the codes of bytes 2h and 2h + 1
        const u32 a = __byte_perm(0xbfad9881u, 0xf6eaddcfu, c);  // values 0..7
        const u32 b = __byte_perm(0x26190d01u, 0x71594535u, c);  // values 8..15
        v[h] = __byte_perm(a, b, 0x3210u | ((c & 0x8888u) >> 1));
    }
    lo = __byte_perm(v[0], v[1], 0x6420u);
    hi = __byte_perm(v[0], v[1], 0x7531u);
}
#endif

// Signed byte e of w as a float. With prmt: the byte, made unsigned (+ 128), set into the low
// bits of the float 2^23, less 2^23 + 128: exact, and no int-to-float conversion (NVIDIA's I2F
// runs at a quarter of the float rate).
__device__ __forceinline__ float rf_byte_float(u32 w, int e) {
#if defined(RF_PRMT)
    return __int_as_float((int)__byte_perm(w ^ 0x80808080u, 0x4b000000u, 0x7440u | (u32)e)) - 8388736.0f;
#else
    return (float)(i8)(w >> (8 * e));
#endif
}

// Sum of kvalues[code] * xq over a piece of 32 codes packed as rf_dot_q4 takes them.
__device__ __forceinline__ int rf_dot_iq4(uint4 q, const int* xq) {
    const u32 w[4] = {q.x, q.y, q.z, q.w};
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#if defined(RF_PRMT)
        u32 lo, hi;
        rf_iq4_nibble_values(w[i], lo, hi);
        s = rf_dp4a((int)lo, xq[i], s);
        s = rf_dp4a((int)hi, xq[4 + i], s);
#else
        s = rf_dp4a((int)rf_iq4_values(w[i]), xq[i], s);
        s = rf_dp4a((int)rf_iq4_values(w[i] >> 4), xq[4 + i], s);
#endif
    }
    return s;
}

struct WIQ4_NL {  // device layout as Q4_0's: qs[k / 32][16], then d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 18, QS = 16;
    static constexpr int VALUES = 32, X_SUMS = 1;  // a piece: one block (x's sum unused)
    using Aux = float;
    struct At {
        i64 d;
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L()) : d(off((i64)(k / 32) * QS + 2 * p)) {}
    };
    __device__ static Aux aux(const u8* row, const At& at) { return rf_ldh(row + at.d); }
    __device__ static float dot(uint4 q, Aux d, const int* xq, const int*, float dx) {
        return d * dx * (float)rf_dot_iq4(q, xq);
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const float d = rf_ldh(row + (i64)(k / 32) * QS + 2 * c);
        int v[32];
        rf_piece_nibbles(row + (i64)c * QS, false, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = d * (float)rf_iq4_value(v[i]);
    }
};

// device layout: qs[k / 32][16] (piece = sub-block, bytes as in the file), then 8 bytes a
// super-block: f16 d, u16 scales_h, u8 scales_l[4] (the block's first 8 bytes).
struct WIQ4_XS {
    static constexpr int BLOCK = 256, BYTES = 136;
    static constexpr int VALUES = 32, X_SUMS = 1;
    using Aux = float;  // d * (scale - 32) of the piece's sub-block
    struct At {
        i64 s;  // the super-block's d and scales
        int j;  // the sub-block
        template <class L = RfOffset>
        __device__ At(int p, int k, L off = L())
            : s(off((i64)(k / 256) * 128 + 8 * (p >> 3))),
              j(p & 7) {}
    };
    // (rows are whole super-blocks of 136 bytes: 8-byte aligned)
    __device__ static Aux aux(const u8* row, const At& at) {
        const u32 dh = rf_ld32_a4(row + at.s), l = rf_ld32_a4(row + at.s + 4);
        const u32 ls = ((l >> (4 * at.j)) & 15u) | (((dh >> (16 + 2 * at.j)) & 3u) << 4);
        return rf_half_to_float((u16)(dh & 0xffffu)) * (float)((int)ls - 32);
    }
    __device__ static float dot(uint4 q, Aux dl, const int* xq, const int*, float dx) {
        return dl * dx * (float)rf_dot_iq4(q, xq);
    }
    __device__ static void values(uint4 q, Aux dl, float y[32]) {
        const u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            u32 lo, hi;  // the values of word i's low and high nibbles, as signed bytes
#if defined(RF_PRMT)
            rf_iq4_nibble_values(w[i], lo, hi);
#else
            lo = rf_iq4_values(w[i]);
            hi = rf_iq4_values(w[i] >> 4);
#endif
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                y[4 * i + e] = dl * rf_byte_float(lo, e);
                y[16 + 4 * i + e] = dl * rf_byte_float(hi, e);
            }
        }
    }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        values(rf_piece_quants(row + (i64)c * 16, true), aux(row, At(c, k)), y);
    }
};

struct WQ2_K {
    static constexpr int BLOCK = 256, BYTES = 84;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const int sub = c % 8, half = sub / 4, j = sub % 4;
        const float d = rf_ldh(b + 80), dmin = rf_ldh(b + 82);
        const u8* qs = b + 16 + 32 * half;
        const u32 s01 = rf_ld16(b + 8 * half + 2 * j);  // scales of the two groups of 16
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            const u32 sc = (s01 >> (8 * g)) & 0xffu;
            const float dl = d * (float)(sc & 15u), ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const u32 w = rf_ld32_a2(qs + 16 * g + 4 * i);
#pragma unroll
                for (int e = 0; e < 4; ++e) y[16 * g + 4 * i + e] = dl * (float)((w >> (8 * e + 2 * j)) & 3u) - ml;
            }
        }
    }
};

struct WQ3_K {
    static constexpr int BLOCK = 256, BYTES = 110;
    // 6-bit scale s (0..15) of the 12 packed bytes, minus 32.
    __device__ static int scale(const u8* sc, int s) {
        const int group = s / 4, k = s % 4;
        const int nib = (group >> 1) ? (sc[k + 4 * (group & 1)] >> 4) : (sc[k + 4 * (group & 1)] & 15);
        const int hi = (sc[8 + k] >> (2 * group)) & 3;
        return (nib | (hi << 4)) - 32;
    }
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const int sub = c % 8, half = sub / 4, j = sub % 4;
        const float d = rf_ldh(b + 108);
        const u8* hmask = b;
        const u8* qs = b + 32 + 32 * half;
        const u8* scales = b + 96;
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            const float dl = d * (float)scale(scales, 8 * half + 2 * j + g);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const u32 w = rf_ld32_a2(qs + 16 * g + 4 * i);
                const u32 h = rf_ld32_a2(hmask + 16 * g + 4 * i);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int q = (int)((w >> (8 * e + 2 * j)) & 3u);
                    const int high = (int)((h >> (8 * e + sub)) & 1u);
                    y[16 * g + 4 * i + e] = dl * (float)(q - (high ? 0 : 4));
                }
            }
        }
    }
};

struct WQ8_K {
    static constexpr int BLOCK = 256, BYTES = 292;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const float d = *(const float*)b;
        const u8* qs = b + 4 + 32 * (c % 8);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 w = rf_ld32_a4(qs + 4 * i);
#pragma unroll
            for (int e = 0; e < 4; ++e) y[4 * i + e] = (float)(i8)((w >> (8 * e)) & 0xffu) * d;
        }
    }
};

// X(suffix, type): one line per weight type a kernel family is instantiated for.
#define RF_FOR_EACH_WEIGHT_TYPE(X) \
    X(f32, WF32)                   \
    X(f16, WF16)                   \
    X(bf16, WBF16)                 \
    X(q4_0, WQ4_0)                 \
    X(q4_1, WQ4_1)                 \
    X(q5_0, WQ5_0)                 \
    X(q5_1, WQ5_1)                 \
    X(q8_0, WQ8_0)                 \
    X(q4_K, WQ4_K)                 \
    X(q5_K, WQ5_K)                 \
    X(q6_K, WQ6_K)                 \
    X(q2_K, WQ2_K)                 \
    X(q3_K, WQ3_K)                 \
    X(q8_K, WQ8_K)                 \
    X(iq4_nl, WIQ4_NL)             \
    X(iq4_xs, WIQ4_XS)
