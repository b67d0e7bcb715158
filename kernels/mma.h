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
// waves each 32-lane half is its own group), but slow. AMD code objects leave out the kernels
// that use it (matmul.hip): the prefill launcher keeps the FP32 tiled kernel there (MFMA /
// WMMA paths are future work).
#pragma once
#include "common.h"

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RF_MMA_TENSOR_CORES 1
#endif

__device__ __forceinline__ float rf_h2_lo(u32 v) { return rf_half_to_float((u16)(v & 0xffffu)); }
__device__ __forceinline__ float rf_h2_hi(u32 v) { return rf_half_to_float((u16)(v >> 16)); }

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
