// activation.hip: activations of the feed-forward block.
//
// swiglu_f32: out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
// geglu_f32:  out[i] = gelu(gate[i]) * up[i], gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
//   (the tanh form llama.cpp and Gemma use)
//   gate, up, out: n float32 (flat; out may alias gate or up).
// gelu_f32:   out[i] = gelu(x[i]) (the same gelu as geglu_f32)
//   x, out: n float32 (flat; out may alias x).
// Launch: grid-stride, block 256, grid min(ceil(n / 256), 65535).
#include "common.h"

// The tanh form of GELU; geglu_f32 and gelu_f32 both call it, so they round alike.
__device__ __forceinline__ float rf_gelu_tanh(float g) {
    const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    return 0.5f * g * (1.0f + tanhf(inner));
}

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
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = rf_gelu_tanh(gate[i]) * up[i];
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
gelu_f32(const float* x, float* out, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = rf_gelu_tanh(x[i]);
}
