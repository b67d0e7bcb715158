// elementwise.hip: flat float32 arithmetic.
//
// add_f32:      out[i] = a[i] + b[i]                      (n elements; out may alias a or b)
// add_bias_f32: out[r, j] = x[r, j] + bias[j]             (x, out: [rows, cols]; out may alias x)
// scale_f32:    out[i] = x[i] * factor                    (n elements; out may alias x)
// softcap_f32:  out[i] = cap * tanh(x[i] / cap)           (n elements; out may alias x)
// Launch: grid-stride over the flat index, block 256, grid min(ceil(n / 256), 65535).
#include "common.h"

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
add_f32(const float* a, const float* b, float* out, i64 n) {
    rf_grid_wait();
    rf_grid_release();
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
add_bias_f32(const float* x, const float* bias, float* out, i64 rows, int cols) {
    const i64 n = rows * cols;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = x[i] + bias[i % cols];
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
scale_f32(const float* x, float* out, float factor, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = x[i] * factor;
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
softcap_f32(const float* x, float* out, float cap, i64 n) {
    rf_grid_wait();
    rf_grid_release();
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = cap * tanhf(x[i] / cap);
}
