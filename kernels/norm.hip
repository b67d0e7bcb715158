// norm.hip: RMS normalization.
//
// rms_norm_f32: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w[:]
//   x, out: [rows, dim] float32 row-major (out may alias x); w: [dim] float32.
//   Launch: grid (rows), block any multiple of the warp size up to 1024 (the launcher takes
//   one thread per 4 values, at most 1024); each block reduces one row in float32 with a
//   block-wide sum. Where dim % 4 == 0, the rows are 16-byte aligned and dim <= 16 x block,
//   a thread loads its values as float4 once, keeps them in registers for the second pass and
//   issues all its loads before the first use (a decode step's norm is one block, so its time
//   is that of its dependent loads); otherwise it loops over the row twice.
#include "common.h"

#define RMS_NORM_CACHE 4  // float4 per thread kept in registers

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
rms_norm_f32(const float* x, const float* w, float* out, int dim, float eps) {
    rf_grid_wait();
    rf_grid_release();
    const i64 row = blockIdx.x;
    const float* xr = x + row * dim;
    float* orow = out + row * dim;
    const int tid = threadIdx.x, threads = blockDim.x;
    const bool vec = (dim & 3) == 0 && ((((u64)xr) | ((u64)orow) | ((u64)w)) & 15ull) == 0 &&
                     dim <= 4 * RMS_NORM_CACHE * threads;
    float sum_sq = 0.0f;
    if (vec) {
        float4 v[RMS_NORM_CACHE];
#pragma unroll
        for (int c = 0; c < RMS_NORM_CACHE; ++c) {
            const int i = 4 * (c * threads + tid);
            if (i < dim) v[c] = *(const float4*)(xr + i);
        }
#pragma unroll
        for (int c = 0; c < RMS_NORM_CACHE; ++c) {
            if (4 * (c * threads + tid) < dim) {
                sum_sq += v[c].x * v[c].x + v[c].y * v[c].y + v[c].z * v[c].z + v[c].w * v[c].w;
            }
        }
        sum_sq = rf_block_sum(sum_sq);
        const float inv_rms = rsqrtf(sum_sq / (float)dim + eps);
#pragma unroll
        for (int c = 0; c < RMS_NORM_CACHE; ++c) {
            const int i = 4 * (c * threads + tid);
            if (i < dim) {
                const float4 g = *(const float4*)(w + i);
                *(float4*)(orow + i) = make_float4(v[c].x * inv_rms * g.x, v[c].y * inv_rms * g.y,
                                                   v[c].z * inv_rms * g.z, v[c].w * inv_rms * g.w);
            }
        }
        return;
    }
    for (int i = tid; i < dim; i += threads) sum_sq += xr[i] * xr[i];
    sum_sq = rf_block_sum(sum_sq);
    const float inv_rms = rsqrtf(sum_sq / (float)dim + eps);
    for (int i = tid; i < dim; i += threads) orow[i] = xr[i] * inv_rms * w[i];
}
