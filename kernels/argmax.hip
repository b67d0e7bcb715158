// argmax.hip: index of the largest value of each row (lowest index on ties).
//
// argmax_f32: out[r] = argmax_j x[r, j]; x: [rows, n] float32, out: int32 [rows];
//   out_val (may be null): float32 [rows], the picked value x[r, out[r]] (0 for an empty row).
//   nan_wins == 0 (the op): NaN never wins; a row of only NaN gives 0.
//   nan_wins != 0 (the model's greedy pick): the first NaN wins, as in np.argmax, so that the
//   caller, reading the picked logit, sees the NaN instead of a token. Two passes, so that a long row (a vocabulary) is read by many blocks:
//   pass 1 (n_parts == 0, part_idx != null): block (p, r) reduces the p-th of gridDim.x slices
//     of row r and writes its (value, index) to part_val / part_idx [rows][gridDim.x];
//   pass 2 (n_parts > 0): block (0, r) reduces the n_parts pairs of row r to out[r].
//   With n_parts == 0 and part_idx == null, one block per row reduces the row directly.
//   next_step (may be null; one row): the decode step's state [token id, position]; the final
//   pick also sets it to [the picked index, position + 1], the next step's input, so that the
//   host need not write it when it goes on with that token.
//   Launch: grid (parts, rows), block 1024 (any multiple of the warp size); a block-wide
//   (value, index) reduction in shared memory.
#include "common.h"

#define RF_ARGMAX_NONE 0x7fffffff  // index of "no candidate yet"

// Candidate a beats b: a larger value, or the same value at a lower index. A NaN never becomes
// a candidate unless nan_wins; then it beats every number, and the lower index wins among NaNs.
__device__ __forceinline__ bool rf_argmax_better(float va, int ia, float vb, int ib, int nan_wins) {
    if (ia == RF_ARGMAX_NONE) return false;
    const bool na = va != va, nb = vb != vb;
    if (na && !nan_wins) return false;
    if (ib == RF_ARGMAX_NONE) return true;
    if (na || nb) return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
argmax_f32(const float* x, i64 n, int* out, float* out_val, float* part_val, int* part_idx, int n_parts,
           int nan_wins, int* next_step) {
    rf_grid_wait();
    rf_grid_release();
    __shared__ float best_val[1024];
    __shared__ int best_idx[1024];
    const i64 row = blockIdx.y;
    float bv = 0.0f;
    int bi = RF_ARGMAX_NONE;
    if (n_parts > 0) {
        for (int p = threadIdx.x; p < n_parts; p += blockDim.x) {
            const float v = part_val[row * n_parts + p];
            const int i = part_idx[row * n_parts + p];
            if (rf_argmax_better(v, i, bv, bi, nan_wins)) { bv = v; bi = i; }
        }
    } else {
        const i64 per = (n + gridDim.x - 1) / gridDim.x;
        const i64 begin = blockIdx.x * per, end = begin + per < n ? begin + per : n;
        const float* xr = x + row * n;
        for (i64 j = begin + threadIdx.x; j < end; j += blockDim.x) {
            const float v = xr[j];
            if (rf_argmax_better(v, (int)j, bv, bi, nan_wins)) { bv = v; bi = (int)j; }
        }
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
            if (rf_argmax_better(best_val[o], best_idx[o], best_val[threadIdx.x], best_idx[threadIdx.x],
                                 nan_wins)) {
                best_val[threadIdx.x] = best_val[o];
                best_idx[threadIdx.x] = best_idx[o];
            }
        }
        __syncthreads();
        active = half;
    }
    if (threadIdx.x == 0) {
        if (part_idx != nullptr && n_parts == 0) {
            part_val[row * gridDim.x + blockIdx.x] = best_val[0];
            part_idx[row * gridDim.x + blockIdx.x] = best_idx[0];
        } else {
            const bool none = best_idx[0] == RF_ARGMAX_NONE;
            out[row] = none ? 0 : best_idx[0];
            if (out_val) out_val[row] = none ? 0.0f : best_val[0];
            if (next_step != nullptr) {
                next_step[0] = none ? 0 : best_idx[0];
                next_step[1] += 1;
            }
        }
    }
}
