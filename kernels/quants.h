// quants.h: GGUF weight types as kernels read them (included by matmul.hip and embedding.hip).
//
// A weight is a row-major matrix [rows, k] whose rows are stored exactly as in the GGUF file:
// k / BLOCK blocks of BYTES bytes each (float types: k elements). Every type below has
//
//   static void chunk(const u8* row, int c, int k, float y[32])
//
// which dequantizes elements [32c, 32c + 32) of one row into registers (float types zero-fill
// past k; quantized types need k % BLOCK == 0, which the launchers check). The float types
// also have load4(row, i): elements [4i, 4i + 4) with one vector load. Block layouts follow
// ggml (little-endian, fp16 scales stored as IEEE half bits):
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
// Except: Q4_0 and Q8_0 rows are stored on the device with their blocks split (the same bytes
// per row, see `to_device_layout` in src/device/layout.rs): first the quants of every
// block (16 or 32 bytes each), then the fp16 scales, so that consecutive lanes read
// consecutive 4-byte words of quants.
// Rows of Q4_0, Q5_0, Q8_0, Q6_K, Q2_K and Q3_K are only 2-byte aligned: their loads are 16-bit.
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

struct WF32 {
    static constexpr int BLOCK = 1, BYTES = 4;
    // Elements [4i, 4i + 4) of a row (rows 16-byte aligned: k % 4 == 0).
    __device__ static float4 load4(const u8* row, int i) { return ((const float4*)row)[i]; }
    __device__ static void chunk(const u8* row, int c, int k, float y[32]) {
        const float* r = (const float*)row;
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (32 * c + i < k) ? r[32 * c + i] : 0.0f;
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
        for (int i = 0; i < 32; ++i) y[i] = (32 * c + i < k) ? rf_half_to_float(r[32 * c + i]) : 0.0f;
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
        for (int i = 0; i < 32; ++i) y[i] = (32 * c + i < k) ? rf_bf16_to_float(r[32 * c + i]) : 0.0f;
    }
};

struct WQ4_0 {  // device layout: qs[k / 32][16], then d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 18, QS = 16;
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

struct WQ4_1 {
    static constexpr int BLOCK = 32, BYTES = 20;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)c * BYTES;
        const float d = rf_ldh(b), m = rf_ldh(b + 2);
        u32 q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = rf_ld32_a4(b + 4 + 4 * i);
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)v[i] * d + m;
    }
};

struct WQ5_0 {
    static constexpr int BLOCK = 32, BYTES = 22;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)c * BYTES;
        const float d = rf_ldh(b);
        const u32 qh = rf_ld32_a2(b + 2);
        u32 q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = rf_ld32_a2(b + 6 + 4 * i);
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)((v[i] | (int)(((qh >> i) & 1u) << 4)) - 16) * d;
    }
};

struct WQ5_1 {
    static constexpr int BLOCK = 32, BYTES = 24;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)c * BYTES;
        const float d = rf_ldh(b), m = rf_ldh(b + 2);
        const u32 qh = rf_ld32_a4(b + 4);
        u32 q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = rf_ld32_a4(b + 8 + 4 * i);
        int v[32];
        rf_unpack_nibbles(q, v);
#pragma unroll
        for (int i = 0; i < 32; ++i) y[i] = (float)(v[i] | (int)(((qh >> i) & 1u) << 4)) * d + m;
    }
};

struct WQ8_0 {  // device layout: qs[k / 32][32], then d[k / 32]
    static constexpr int BLOCK = 32, BYTES = 34, QS = 32;
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

// 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block (12 packed bytes).
__device__ __forceinline__ void rf_scale_min_k4(int j, const u8* s, float* sc, float* mn) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *mn = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

struct WQ4_K {
    static constexpr int BLOCK = 256, BYTES = 144;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const int sub = c % 8;
        float sc, mn;
        rf_scale_min_k4(sub, b + 4, &sc, &mn);
        const float d = rf_ldh(b) * sc, dm = rf_ldh(b + 2) * mn;
        const u8* qs = b + 16 + 32 * (sub / 2);
        const int shift = 4 * (sub & 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 w = rf_ld32_a4(qs + 4 * i);
#pragma unroll
            for (int j = 0; j < 4; ++j) y[4 * i + j] = d * (float)((w >> (8 * j + shift)) & 15u) - dm;
        }
    }
};

struct WQ5_K {
    static constexpr int BLOCK = 256, BYTES = 176;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const int sub = c % 8;
        float sc, mn;
        rf_scale_min_k4(sub, b + 4, &sc, &mn);
        const float d = rf_ldh(b) * sc, dm = rf_ldh(b + 2) * mn;
        const u8* qh = b + 16;
        const u8* qs = b + 48 + 32 * (sub / 2);
        const int shift = 4 * (sub & 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 w = rf_ld32_a4(qs + 4 * i);
            const u32 h = rf_ld32_a4(qh + 4 * i);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const u32 lo = (w >> (8 * j + shift)) & 15u;
                const u32 hi = (h >> (8 * j + sub)) & 1u;
                y[4 * i + j] = d * (float)(lo | (hi << 4)) - dm;
            }
        }
    }
};

struct WQ6_K {
    static constexpr int BLOCK = 256, BYTES = 210;
    __device__ static void chunk(const u8* row, int c, int, float y[32]) {
        const u8* b = row + (i64)(c / 8) * BYTES;
        const int sub = c % 8, half = sub / 4, part = sub % 4;
        const float d = rf_ldh(b + 208);
        const u8* ql = b + 64 * half + 32 * (part & 1);
        const u8* qh = b + 128 + 32 * half;
        const i8* scales = (const i8*)(b + 192 + 8 * half + 2 * part);
        const int lshift = 4 * (part >> 1), hshift = 2 * part;
        const float d0 = d * (float)scales[0], d1 = d * (float)scales[1];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const u32 w = rf_ld32_a2(ql + 4 * i);
            const u32 h = rf_ld32_a2(qh + 4 * i);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int lo = (int)((w >> (8 * j + lshift)) & 15u);
                const int hi = (int)((h >> (8 * j + hshift)) & 3u);
                y[4 * i + j] = (i < 4 ? d0 : d1) * (float)((lo | (hi << 4)) - 32);
            }
        }
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
    X(q8_K, WQ8_K)
