// mma.h: one warp-level matrix multiply-accumulate on f16 inputs with f32 accumulation,
// D[16 x 8] += A[16 x 16] B[16 x 8], in the register layout of NVIDIA's
// `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32` (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"). Each aligned group of 32 lanes does one product; lane l has
// g = l / 4 and t = l % 4 (l = threadIdx.x % 32: the kernels using this are 1-D blocks), and a
// u32 holds two f16 values, the lower-indexed one in the low 16 bits:
//
//   a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]
//   a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]       (B column g: "col" layout)
//   c[0] = D[g][2t]  c[1] = D[g][2t+1]  c[2] = D[g+8][2t]  c[3] = D[g+8][2t+1]
//
// On NVIDIA sm_80 and newer this is the tensor-core instruction (inline PTX). Elsewhere (the
// CPU emulation, older NVIDIA) the same fragment semantics are computed with 32 indexed
// shuffles inside each 32-lane group and f32 multiply-adds: correct anywhere (on 64-wide
// waves each 32-lane half is its own group), but slow.
//
// AMD matrix cores (below): one wave's D[16 x 16] += A[16 x 16] B[16 x 16], f16 or bf16
// inputs, f32 accumulation, on gfx11 (RDNA3) and gfx12 (RDNA4) WMMA at wave 32 and on
// gfx90a / gfx94x (CDNA2/3) MFMA at wave 64. The prefill matmul takes it there (matmul.hip);
// AMD targets without one (gfx1030, older CDNA) leave the tensor-core kernels out.
#pragma once
#include "common.h"

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RF_MMA_TENSOR_CORES 1
#endif

__device__ __forceinline__ float rf_h2_lo(u32 v) { return rf_half_to_float((u16)(v & 0xffffu)); }
__device__ __forceinline__ float rf_h2_hi(u32 v) { return rf_half_to_float((u16)(v >> 16)); }

// Round to nearest even (a NaN stays a NaN: quiet bit set).
__device__ __forceinline__ u16 rf_float_to_bf16(float f) {
    const u32 u = (u32)__float_as_int(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Two floats -> one u32 of two f16 (round to nearest even), `lo` in the low half.
__device__ __forceinline__ u32 rf_pack_half2(float lo, float hi) {
    return (u32)rf_float_to_half(lo) | ((u32)rf_float_to_half(hi) << 16);
}

__device__ __forceinline__ void rf_mma_16x8x16(float c[4], const u32 a[4], const u32 b[2]) {
#if defined(RF_MMA_TENSOR_CORES)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        // Lane 4g + j holds row g (and g + 8) of A at k = 2j, 2j+1, 2j+8, 2j+9; lane 4n + j
        // holds column n of B at the same k.
        u32 ar[4], b0[2], b1[2];
#pragma unroll
        for (int i = 0; i < 4; ++i) ar[i] = rf_shfl_u32(a[i], 4 * g + j, 32);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            b0[i] = rf_shfl_u32(b[i], 4 * (2 * t) + j, 32);
            b1[i] = rf_shfl_u32(b[i], 4 * (2 * t + 1) + j, 32);
        }
        c[0] += rf_h2_lo(ar[0]) * rf_h2_lo(b0[0]) + rf_h2_hi(ar[0]) * rf_h2_hi(b0[0]) +
                rf_h2_lo(ar[2]) * rf_h2_lo(b0[1]) + rf_h2_hi(ar[2]) * rf_h2_hi(b0[1]);
        c[1] += rf_h2_lo(ar[0]) * rf_h2_lo(b1[0]) + rf_h2_hi(ar[0]) * rf_h2_hi(b1[0]) +
                rf_h2_lo(ar[2]) * rf_h2_lo(b1[1]) + rf_h2_hi(ar[2]) * rf_h2_hi(b1[1]);
        c[2] += rf_h2_lo(ar[1]) * rf_h2_lo(b0[0]) + rf_h2_hi(ar[1]) * rf_h2_hi(b0[0]) +
                rf_h2_lo(ar[3]) * rf_h2_lo(b0[1]) + rf_h2_hi(ar[3]) * rf_h2_hi(b0[1]);
        c[3] += rf_h2_lo(ar[1]) * rf_h2_lo(b1[0]) + rf_h2_hi(ar[1]) * rf_h2_hi(b1[0]) +
                rf_h2_lo(ar[3]) * rf_h2_lo(b1[1]) + rf_h2_hi(ar[3]) * rf_h2_hi(b1[1]);
    }
#endif
}

#if defined(RF_MMA_TENSOR_CORES)
// ldmatrix.x4 from shared memory: lanes 8i..8i+7 give the 16-byte aligned row addresses of
// 8 x 8 f16 matrix i, and r[i] is this lane's fragment of it (row lane / 4, columns
// 2 (lane % 4), +1): for an A tile the a[0..3] of rf_mma_16x8x16, for a B tile stored as
// [n][k] two n-tiles' b[0], b[1].
__device__ __forceinline__ void rf_ldmatrix_x4(u32 r[4], const u16* p) {
    u32 addr;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
#endif

// ------------------------------------------------------------------------------------------
// AMD matrix cores. Exactly one of RF_MATRIX_WMMA11, RF_MATRIX_WMMA12, RF_MATRIX_MFMA is
// defined where the target has one (the CPU emulator defines it itself, to check each form).
// A operand: A[16 x 16] row-major in shared memory (row r at a + r * ld f16 / bf16 values);
// B operand: B[16 x 16] given by its columns (column c at b + c * ld: the W tile's [n][k]
// rows). Lane l (l = threadIdx.x % RF_WARP) takes row / column l % 16 of them, at k offset
// RF_FRAG_K0(l), RF_FRAG_K values (2 to a u32, the lower k in the low half), and holds
// RF_FRAG_C elements of D: element e at row rf_frag_c_row(e, l), column l % 16.
//
//   gfx11 WMMA (wave 32): all 16 k of the row / column (lanes 16-31 repeat lanes 0-15, as
//     the instruction requires); D element e at row 2e + l / 16 (AMD's RDNA3 ISA guide, "WMMA").
//   gfx12 WMMA (wave 32): k 8 (l / 16) .. +7; D element e at row e + 8 (l / 16) (RDNA4 ISA).
//   MFMA 16x16x16 (wave 64): k 4 (l / 16) .. +3; D element e at row 4 (l / 16) + e (CDNA3 ISA,
//     "Dependency and layout of MFMA operands").
#if defined(RF_HIP) && !defined(RF_MATRIX_WMMA11) && !defined(RF_MATRIX_WMMA12) && !defined(RF_MATRIX_MFMA)
#if defined(__GFX11__)
#define RF_MATRIX_WMMA11 1
#elif defined(__GFX12__)
#define RF_MATRIX_WMMA12 1
#elif defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || defined(__gfx950__)
#define RF_MATRIX_MFMA 1
#endif
#endif

#if defined(RF_MATRIX_WMMA11) || defined(RF_MATRIX_WMMA12) || defined(RF_MATRIX_MFMA)
#define RF_AMD_MATRIX 1
// Short vectors of the builtins' operands (clang's; the CPU emulator, built by g++, defines
// its own form first).
#if !defined(RF_VECTOR_TYPE)
#define RF_VECTOR_TYPE(T, n) T __attribute__((ext_vector_type(n)))
#endif
#if defined(RF_MATRIX_WMMA11)
#define RF_FRAG_K 16
#define RF_FRAG_C 8
#define RF_FRAG_K0(l) 0
#elif defined(RF_MATRIX_WMMA12)
#define RF_FRAG_K 8
#define RF_FRAG_C 8
#define RF_FRAG_K0(l) (8 * ((l) >> 4))
#else
#define RF_FRAG_K 4
#define RF_FRAG_C 4
#define RF_FRAG_K0(l) (4 * ((l) >> 4))
#endif
#define RF_FRAG_WORDS (RF_FRAG_K / 2)

typedef RF_VECTOR_TYPE(_Float16, RF_FRAG_K) rf_frag_f16;
typedef RF_VECTOR_TYPE(short, RF_FRAG_K) rf_frag_bf16;  // bf16 bits: the builtins' bf16 operand type
typedef RF_VECTOR_TYPE(float, RF_FRAG_C) rf_frag_acc;
struct RfFragWords {
    u32 w[RF_FRAG_WORDS];
};

__device__ __forceinline__ int rf_frag_c_row(int e, int lane) {
#if defined(RF_MATRIX_WMMA11)
    return 2 * e + (lane >> 4);
#elif defined(RF_MATRIX_WMMA12)
    return e + 8 * (lane >> 4);
#else
    return 4 * (lane >> 4) + e;
#endif
}

// This lane's fragment of the 16 x 16 operand whose row (A) or column (B) 0 starts at p.
__device__ __forceinline__ void rf_frag_load(u32 f[RF_FRAG_WORDS], const u16* p, int ld, int lane) {
    const u16* q = p + (lane & 15) * ld + RF_FRAG_K0(lane);
#if RF_FRAG_K == 4
    const uint2 v = *(const uint2*)q;
    f[0] = v.x;
    f[1] = v.y;
#else
#pragma unroll
    for (int i = 0; i < RF_FRAG_K / 8; ++i) {
        const uint4 v = *(const uint4*)(q + 8 * i);
        f[4 * i] = v.x;
        f[4 * i + 1] = v.y;
        f[4 * i + 2] = v.z;
        f[4 * i + 3] = v.w;
    }
#endif
}

// c += A B on this wave's fragments; BF16: the operands are bf16, else f16.
template <bool BF16>
__device__ __forceinline__ void rf_matrix_16x16x16(float c[RF_FRAG_C], const u32 a[RF_FRAG_WORDS],
                                                   const u32 b[RF_FRAG_WORDS]) {
    RfFragWords aw, bw;
#pragma unroll
    for (int i = 0; i < RF_FRAG_WORDS; ++i) {
        aw.w[i] = a[i];
        bw.w[i] = b[i];
    }
    rf_frag_acc acc;
#pragma unroll
    for (int e = 0; e < RF_FRAG_C; ++e) acc[e] = c[e];
    if constexpr (BF16) {
        const rf_frag_bf16 av = __builtin_bit_cast(rf_frag_bf16, aw), bv = __builtin_bit_cast(rf_frag_bf16, bw);
#if defined(RF_MATRIX_WMMA11)
        acc = __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32(av, bv, acc);
#elif defined(RF_MATRIX_WMMA12)
        acc = __builtin_amdgcn_wmma_f32_16x16x16_bf16_w32_gfx12(av, bv, acc);
#else
        acc = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(av, bv, acc, 0, 0, 0);
#endif
    } else {
        const rf_frag_f16 av = __builtin_bit_cast(rf_frag_f16, aw), bv = __builtin_bit_cast(rf_frag_f16, bw);
#if defined(RF_MATRIX_WMMA11)
        acc = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(av, bv, acc);
#elif defined(RF_MATRIX_WMMA12)
        acc = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32_gfx12(av, bv, acc);
#else
        acc = __builtin_amdgcn_mfma_f32_16x16x16f16(av, bv, acc, 0, 0, 0);
#endif
    }
#pragma unroll
    for (int e = 0; e < RF_FRAG_C; ++e) c[e] = acc[e];
}
#endif
