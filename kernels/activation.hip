// activation.hip: gated activations.
//
// swiglu_f32: out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
//   gate, up, out: n float32 (flat; out may alias gate or up).
//   Launch: grid-stride, block 256, grid min(ceil(n / 256), 65535).
#include "common.h"

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
swiglu_f32(const float* gate, const float* up, float* out, i64 n) {
    rf_grid_wait();
    rf_grid_release();
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
