// activation.hip: gated activations.
//
// swiglu_f32: out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
// geglu_f32:  out[i] = gelu(gate[i]) * up[i], gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
//   (the tanh form llama.cpp and Gemma use)
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

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
geglu_f32(const float* gate, const float* up, float* out, i64 n) {
    rf_grid_wait();
    rf_grid_release();
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float g = gate[i];
        const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
        out[i] = 0.5f * g * (1.0f + tanhf(inner)) * up[i];
    }
}
