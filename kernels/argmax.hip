// argmax.hip: index of the largest value of each row (lowest index on ties; NaN never wins).
//
// argmax_f32: out[r] = argmax_j x[r, j]; x: [rows, n] float32, out: int32 [rows].
//   A row of only NaN gives 0.
//   Launch: grid (rows), block 1024 (any multiple of the warp size); threads stride over the
//   row, then a block-wide (value, index) reduction in shared memory.
#include "common.h"

// a beats b: larger value, or the same value at a lower index; NaN never beats anything.
__device__ __forceinline__ bool rf_argmax_better(float va, int ia, float vb, int ib) {
    if (va != va) return false;
    if (vb != vb) return true;
    return va > vb || (va == vb && ia < ib);
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
argmax_f32(const float* x, i64 n, int* out) {
    __shared__ float best_val[1024];
    __shared__ int best_idx[1024];
    const float* xr = x + (i64)blockIdx.x * n;
    float bv = __int_as_float(0x7fffffff);  // NaN: loses to any number
    int bi = 0x7fffffff;
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
        const float v = xr[j];
        if (rf_argmax_better(v, (int)j, bv, bi)) { bv = v; bi = (int)j; }
    }
    best_val[threadIdx.x] = bv;
    best_idx[threadIdx.x] = bi;
    __syncthreads();
    // blockDim.x need not be a power of two: fold the tail first.
    int active = blockDim.x;
    while (active > 1) {
        const int half = (active + 1) / 2;
        if (threadIdx.x < active - half) {
            const int o = threadIdx.x + half;
            if (rf_argmax_better(best_val[o], best_idx[o], best_val[threadIdx.x], best_idx[threadIdx.x])) {
                best_val[threadIdx.x] = best_val[o];
                best_idx[threadIdx.x] = best_idx[o];
            }
        }
        __syncthreads();
        active = half;
    }
    if (threadIdx.x == 0) out[blockIdx.x] = best_idx[0] == 0x7fffffff ? 0 : best_idx[0];
}
