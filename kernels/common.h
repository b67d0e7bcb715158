// common.h: the portability layer every kernel file includes (one source for AMD and NVIDIA).
//
// Compiled three ways: NVRTC for NVIDIA (CUDA dialect), hipRTC / hipcc for AMD (HIP dialect).
// The runtime inlines this header into each kernel file before compiling it, so no include
// path is needed and no vendor header is required on NVIDIA.
//
// What it gives:
//   RF_KERNEL                extern "C" __global__ (unmangled names, looked up by the runtime)
//   RF_LAUNCH_BOUNDS(n)      the largest block size a kernel is launched with
//   RF_LAUNCH_BOUNDS_MIN(n, b)  the same, and at least b blocks resident per multiprocessor
//                            (NVIDIA: caps the registers; AMD: as RF_LAUNCH_BOUNDS(n))
//   RF_WARP                  hardware warp size: 32 on NVIDIA and RDNA, 64 on CDNA/GCN
//   rf_shfl_xor(v, m, w)     butterfly shuffle inside aligned groups of w lanes (w <= RF_WARP)
//   rf_shfl_u32(v, src, w)   lane src (0 <= src < w) of the caller's aligned group of w lanes
//   rf_group_sum/max<W>      reduction over aligned groups of W lanes (W a power of two
//                            <= RF_WARP; kernels use W <= 32 or RF_WARP itself, so the same
//                            code is right on 32- and 64-wide hardware)
//   rf_block_sum/max         reduction over a whole 1-D block (any multiple of RF_WARP)
//   rf_half_to_float / rf_float_to_half / rf_bf16_to_float   fp16 / bf16 storage (u16 bits)
//   rf_h2_sub / rf_h2_mul    two f16 in a u32 (lower-indexed in the low half), lane by lane,
//                            each result rounded once to f16 (nearest even)
//   rf_grid_wait / rf_grid_release   programmatic dependent launch (NVIDIA sm_90+, no-ops
//                            elsewhere): see their comment below
//   rf_per_lane(v)           v kept in vector registers and opaque to the compiler on AMD
//                            (no instruction; see its comment)
//   rf_ld_l2(p)              a global load served from L2 or memory, never from a line the
//                            multiprocessor's L1 holds from earlier (NVIDIA ld.global.cg)
//   u8, i8, u16, u32, i64    fixed-width integers (no <stdint.h> under NVRTC)
#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define RF_KERNEL extern "C" __global__
#define RF_LAUNCH_BOUNDS(n) __launch_bounds__(n)
#define RF_INF __int_as_float(0x7f800000)

#if defined(__HIP__) || defined(__HIPCC__) || defined(__HIPCC_RTC__)
// ---------------------------------------------------------------------------------- AMD / HIP
#define RF_HIP 1
#define RF_LAUNCH_BOUNDS_MIN(n, b) __launch_bounds__(n)
#if !defined(__HIPCC_RTC__)
#include <hip/hip_runtime.h>
#endif
#if defined(__AMDGCN_WAVEFRONT_SIZE__)
#define RF_WARP __AMDGCN_WAVEFRONT_SIZE__
#elif defined(__AMDGCN_WAVEFRONT_SIZE)
#define RF_WARP __AMDGCN_WAVEFRONT_SIZE
#elif defined(__GFX10__) || defined(__GFX11__) || defined(__GFX12__)
#define RF_WARP 32
#else
#define RF_WARP 64
#endif

__device__ __forceinline__ float rf_shfl_xor(float v, int mask, int width) {
    return __shfl_xor(v, mask, width);
}
__device__ __forceinline__ int rf_shfl_xor_int(int v, int mask, int width) {
    return __shfl_xor(v, mask, width);
}
__device__ __forceinline__ u32 rf_shfl_u32(u32 v, int src, int width) {
    return (u32)__shfl((int)v, src, width);
}
__device__ __forceinline__ float rf_half_to_float(u16 h) {
#if defined(__HIP_DEVICE_COMPILE__)
    return (float)__builtin_bit_cast(_Float16, h);
#else
    return 0.0f;  // host pass of hipcc: never executed
#endif
}
__device__ __forceinline__ u16 rf_float_to_half(float f) {
#if defined(__HIP_DEVICE_COMPILE__)
    return __builtin_bit_cast(u16, (_Float16)f);
#else
    return 0;
#endif
}
#if defined(__HIP_DEVICE_COMPILE__)
typedef _Float16 rf_h2v __attribute__((vector_size(4)));
#endif
__device__ __forceinline__ u32 rf_h2_sub(u32 a, u32 b) {
#if defined(__HIP_DEVICE_COMPILE__)
    return __builtin_bit_cast(u32, __builtin_bit_cast(rf_h2v, a) - __builtin_bit_cast(rf_h2v, b));
#else
    return 0;
#endif
}
__device__ __forceinline__ u32 rf_h2_mul(u32 a, u32 b) {
#if defined(__HIP_DEVICE_COMPILE__)
    return __builtin_bit_cast(u32, __builtin_bit_cast(rf_h2v, a) * __builtin_bit_cast(rf_h2v, b));
#else
    return 0;
#endif
}

#else
// --------------------------------------------------------------------------- NVIDIA / NVRTC
#define RF_CUDA 1
#define RF_WARP 32
#define RF_LAUNCH_BOUNDS_MIN(n, b) __launch_bounds__(n, b)

__device__ __forceinline__ float rf_shfl_xor(float v, int mask, int width) {
    return __shfl_xor_sync(0xffffffffu, v, mask, width);
}
__device__ __forceinline__ int rf_shfl_xor_int(int v, int mask, int width) {
    return __shfl_xor_sync(0xffffffffu, v, mask, width);
}
__device__ __forceinline__ u32 rf_shfl_u32(u32 v, int src, int width) {
    return __shfl_sync(0xffffffffu, v, src, width);
}
__device__ __forceinline__ float rf_half_to_float(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 rf_float_to_half(float f) {
    u16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}
// (.rn: never contracted into a fused multiply-add. Before sm_53, which has no f16
// arithmetic, through float: exact products and differences of the operands the kernels pass.)
__device__ __forceinline__ u32 rf_h2_sub(u32 a, u32 b) {
    u32 r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 530
    r = (u32)rf_float_to_half(rf_half_to_float((u16)a) - rf_half_to_float((u16)b)) |
        ((u32)rf_float_to_half(rf_half_to_float((u16)(a >> 16)) - rf_half_to_float((u16)(b >> 16))) << 16);
#else
    asm("{ sub.rn.f16x2 %0, %1, %2; }" : "=r"(r) : "r"(a), "r"(b));
#endif
    return r;
}
__device__ __forceinline__ u32 rf_h2_mul(u32 a, u32 b) {
    u32 r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 530
    r = (u32)rf_float_to_half(rf_half_to_float((u16)a) * rf_half_to_float((u16)b)) |
        ((u32)rf_float_to_half(rf_half_to_float((u16)(a >> 16)) * rf_half_to_float((u16)(b >> 16))) << 16);
#else
    asm("{ mul.rn.f16x2 %0, %1, %2; }" : "=r"(r) : "r"(a), "r"(b));
#endif
    return r;
}
#endif

// Programmatic dependent launch. A kernel the runtime launches with the "programmatic stream
// serialization" attribute (only those that call rf_grid_wait: see `Kernel::overlaps` in
// src/device/kernels.rs) may start while the kernel before it in the stream still runs;
// rf_grid_wait() returns once that kernel has completed and its writes are visible, so such a
// kernel touches nothing an earlier kernel writes or reads before calling it (reading the
// weights is fine). rf_grid_release() lets the next such kernel start its own prologue early;
// every block calls it after rf_grid_wait, never before: then a kernel starts only once every
// kernel but the one just before it has completed, and the wait covers that one. (Released
// before the wait, launches chain further ahead, and a kernel may read what the kernel two
// back wrote through a stale cache line: a GPU test failed that way,
// docs/perf/overlapped-launches.md.)
// Both are no-ops where the launch did not ask for the overlap, and on AMD and before sm_90.
__device__ __forceinline__ void rf_grid_wait() {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void rf_grid_release() {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// p, made opaque to the compiler: loads through the result stay after this point. Kernels take
// their `const __restrict__` inputs through it after rf_grid_wait: the compiler may treat loads
// through such pointers as invariant and move them above the wait's memory clobber.
template <class T>
__device__ __forceinline__ T* rf_after_wait(T* p) {
#if defined(RF_CUDA)
    asm volatile("" : "+l"(p));
#endif
    return p;
}

// v kept whole in vector registers on AMD, opaque to the compiler: an empty asm, no
// instruction. For a value the compiler would otherwise take apart or keep in scalar registers
// beside many others, and run out of them (they spill):
// - an offset that differs between a block's threads (a piece's place in a weight row, a key
//   row's distance from the first), which it splits into a part common to the block, added to
//   a base address in scalar registers for each of the many rows a thread loads (a register
//   pair per row), and a per-thread rest;
// - a lane index, whose compares (lane masks, two scalar registers each at wave 64) it
//   computes once and keeps live between the uses.
// The compiler counts the asm as convergent: a loop holding one is not unrolled by a runtime
// count. Elsewhere v as it is.
template <class T>
__device__ __forceinline__ T rf_per_lane(T v) {
#if defined(__AMDGCN__)
    asm volatile("" : "+v"(v));
#endif
    return v;
}

// A global load from L2 (or memory), past any line the multiprocessor's L1 cached earlier: on
// NVIDIA ld.global.cg; on AMD a plain load. T: float, float4, u32, uint2 or uint4.
template <class T>
__device__ __forceinline__ T rf_ld_l2(const T* p) {
#if defined(RF_CUDA)
    return __ldcg(p);
#else
    return *p;
#endif
}

__device__ __forceinline__ float rf_bf16_to_float(u16 b) {
    return __int_as_float(((int)b) << 16);
}

// Reductions over aligned groups of W lanes (W a power of two <= RF_WARP; W <= 32 divides
// every warp size).
template <int W>
__device__ __forceinline__ float rf_group_sum(float v) {
#pragma unroll
    for (int m = W / 2; m > 0; m >>= 1) v += rf_shfl_xor(v, m, W);
    return v;
}
template <int W>
__device__ __forceinline__ float rf_group_max(float v) {
#pragma unroll
    for (int m = W / 2; m > 0; m >>= 1) v = fmaxf(v, rf_shfl_xor(v, m, W));
    return v;
}

// Whole-block reductions (1-D block, blockDim.x a multiple of RF_WARP, at most 1024).
// Every thread of the block must call them; every thread gets the result.
__device__ __forceinline__ float rf_block_sum(float v) {
    __shared__ float partial[1024 / 32];
    v = rf_group_sum<RF_WARP>(v);
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP;
    const int warps = blockDim.x / RF_WARP;
    __syncthreads();  // an earlier call may still be reading `partial`
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += partial[w];
    return total;
}
__device__ __forceinline__ float rf_block_max(float v) {
    __shared__ float partial[1024 / 32];
    v = rf_group_max<RF_WARP>(v);
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP;
    const int warps = blockDim.x / RF_WARP;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float best = -RF_INF;
    for (int w = 0; w < warps; ++w) best = fmaxf(best, partial[w]);
    return best;
}
