// microbench-common.h: what the microbenchmarks in this folder share (records of runs, built by
// nothing; each .cu says how it was built). Included after the kernel sources it times (they
// give u8, u16, u32, u64, i64).
//   CK(x)                       exit with the file, line and message on a CUDA error
//   hsh, fill_q4, fill_f, fill_h  deterministic random Q4_0 weights (scales 2^-8 .. 2^-7),
//                               floats in off + [-1, 1), fp16 in +-[2^-4, 2^-3)
//   ST, SMS                     the stream everything runs on; the multiprocessor count
//   launch(kernel, grid, block, dynamic smem, args...)  with programmatic dependent launch,
//                               as the decode step launches its kernels
//   graph_time(body, reps)      us per replay of a graph recorded from body (3 warm-up
//                               replays); reps defaults to RF_MB_REPS (50)
//   rb(k), ncf / nf / nu        a Q4_0 row's bytes; typed null pointers for unused arguments
#pragma once
#ifndef RF_MB_REPS
#define RF_MB_REPS 50
#endif
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)

__device__ u32 hsh(u64 i, u32 seed) { u64 h = i * 0x9E3779B97F4A7C15ull + seed; h ^= h >> 31; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 29; return (u32)h; }
__global__ void fill_q4(u8* w, int rows, int k, u32 seed) {
    const i64 rb = k / 32 * 18, nb = k / 32;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < rows * rb; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / rb, o = i % rb; u32 h = hsh(i, seed);
        if (o < nb * 16) w[i] = (u8)h;
        else { const i64 j = (o - nb * 16) & ~1ll; const u16 half = 0x1C00 | (hsh(r * 1000 + j, seed ^ 7) & 0x3ff); w[i] = (o & 1) ? (u8)(half >> 8) : (u8)half; }
    }
}
__global__ void fill_f(float* x, i64 n, u32 seed, float off) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        x[i] = off + (((hsh(i, seed) & 0xffff) / 32768.0f) - 1.0f);
}
__global__ void fill_h(u16* x, i64 n, u32 seed) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        x[i] = (u16)(0x2C00 | (hsh(i, seed) & 0x3ff) | ((hsh(i, seed) >> 16 & 1) << 15));
}
cudaStream_t ST; int SMS;
template <class Kf, class... Args> void launch(Kf kernel, dim3 grid, int block, int smem, Args... args) {
    cudaLaunchConfig_t cfg = {}; cfg.gridDim = grid; cfg.blockDim = dim3(block); cfg.stream = ST; cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at; cfg.numAttrs = 1;
    CK(cudaLaunchKernelEx(&cfg, kernel, args...));
}
template <class F> float graph_time(F body, int reps = RF_MB_REPS) {
    cudaGraph_t gr; cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(ST, cudaStreamCaptureModeThreadLocal));
    body();
    CK(cudaStreamEndCapture(ST, &gr)); CK(cudaGraphInstantiate(&ge, gr, 0));
    for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, ST));
    CK(cudaStreamSynchronize(ST));
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    cudaEventRecord(a, ST); for (int r = 0; r < reps; ++r) CK(cudaGraphLaunch(ge, ST)); cudaEventRecord(b, ST); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b);
    cudaGraphExecDestroy(ge); cudaGraphDestroy(gr);
    return ms * 1000.f / reps;
}
i64 rb(int k) { return k / 32 * 18; }
const float* ncf = nullptr; float* nf = nullptr; const u8* nu = nullptr;
