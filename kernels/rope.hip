// rope.hip: rotary position embedding, in place.
//
// rope_f32: x [tokens, heads, head_dim] float32, tokens = batch * seq (token t of a sequence
//   is row b * seq + t). Position of token t: positions[t] (int32 [seq]) or, when positions is
//   null, pos0 + t. For pair i < n_rot / 2:
//     angle = pos * theta^(-2i / n_rot) / freq_factors[i]   (freq_factors null: 1)
//     neox = 0: rotates (x[2i], x[2i+1]) (GGUF llama); neox = 1: rotates (x[i], x[i + n_rot/2]).
//   Dims past n_rot are left as they are. The angle is formed in double precision (positions
//   reach tens of thousands) and reduced before the float32 sin/cos.
//   Launch: grid (tokens, heads), block 64 (any multiple of the warp size); threads stride
//   over the n_rot / 2 pairs.
#include "common.h"

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
rope_f32(float* x, const int* positions, const float* freq_factors, int seq, int heads,
         int head_dim, int n_rot, int pos0, float theta, int neox) {
    const i64 token = blockIdx.x;
    const int head = blockIdx.y;
    const int t = (int)(token % seq);
    const double pos = positions ? (double)positions[t] : (double)pos0 + (double)t;
    float* xh = x + (token * heads + head) * (i64)head_dim;
    const int half = n_rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double angle = pos * pow((double)theta, -2.0 * (double)i / (double)n_rot);
        if (freq_factors) angle /= (double)freq_factors[i];
        const double two_pi = 6.283185307179586476925286766559;
        angle -= two_pi * floor(angle / two_pi);
        const float c = cosf((float)angle), s = sinf((float)angle);
        const int i0 = neox ? i : 2 * i;
        const int i1 = neox ? i + half : 2 * i + 1;
        const float x0 = xh[i0], x1 = xh[i1];
        xh[i0] = x0 * c - x1 * s;
        xh[i1] = x0 * s + x1 * c;
    }
}
