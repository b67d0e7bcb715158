// norm.hip: RMS normalization.
//
// rms_norm_f32: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w[:]
//   x, out: [rows, dim] float32 row-major (out may alias x); w: [dim] float32.
//   Launch: grid (rows), block 256 (any multiple of the warp size up to 1024); each block
//   reduces one row in float32 with a block-wide sum.
#include "common.h"

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
rms_norm_f32(const float* x, const float* w, float* out, int dim, float eps) {
    const i64 row = blockIdx.x;
    const float* xr = x + row * dim;
    float* orow = out + row * dim;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum_sq += xr[i] * xr[i];
    sum_sq = rf_block_sum(sum_sq);
    const float inv_rms = rsqrtf(sum_sq / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * inv_rms * w[i];
}
