// kv_cache.hip: append rows to a layer's K or V cache.
//
// kv_append_f32 / kv_append_f16: cache[pos0 + t, :] = src[t, :] for t < n
//   cache: [n_ctx, row_len] float32 or fp16 (u16 bits, round to nearest even);
//   src: [n, row_len] float32. pos_dev: when not null, pos0 is read from the device
//   (pos_dev[0], so that one recorded decode step serves every position). The caller checks
//   pos0 + n <= n_ctx.
//   Launch: grid-stride over n * row_len, block 256.
#include "common.h"

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
kv_append_f32(float* cache, const float* src, i64 pos0, const int* pos_dev, i64 n, int row_len) {
    rf_grid_wait();
    rf_grid_release();
    if (pos_dev) pos0 = pos_dev[0];
    const i64 total = n * row_len;
    float* dst = cache + pos0 * row_len;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
kv_append_f16(u16* cache, const float* src, i64 pos0, const int* pos_dev, i64 n, int row_len) {
    rf_grid_wait();
    rf_grid_release();
    if (pos_dev) pos0 = pos_dev[0];
    const i64 total = n * row_len;
    u16* dst = cache + pos0 * row_len;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x)
        dst[i] = rf_float_to_half(src[i]);
}
