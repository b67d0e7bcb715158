// rope.hip: rotary position embedding, in place, and its fusion with the KV-cache append.
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
//
// rope_kv_f32 / rope_kv_f16: one attention block's rope and KV-cache append in one launch.
//   q [t, heads, head_dim] and k [t, kv_heads, head_dim] are rotated in place exactly as
//   rope_f32 does (token t at position p0 + t), then k_cache[p0 + t, :] = k[t, :] (rotated) and
//   v_cache[p0 + t, :] = v[t, :], rows of kv_heads * head_dim, converted as kv_append_f32 /
//   kv_append_f16 do (fp16: round to nearest even). p0 = pos_dev[0] when pos_dev is not null
//   (a decode step's position on the device), else pos0. The caller checks p0 + t <= n_ctx.
//   The same float expressions as rope_f32 + kv_append_*: the results are bit-identical.
//   Launch: grid (t, heads + kv_heads), block 64 (any multiple of the warp size): block y <
//   heads turns q head y; block heads + h turns k head h and stores k and v head h.
#include "rope.h"

// Pair i's two indices in a head.
__device__ __forceinline__ int rf_rope_i0(int i, int half, int neox) { return neox ? i : 2 * i; }
__device__ __forceinline__ int rf_rope_i1(int i, int half, int neox) {
    return neox ? i + half : 2 * i + 1;
}

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
        float c, s;
        rf_rope_cs(pos, i, n_rot, theta, freq_factors, &c, &s);
        const int i0 = rf_rope_i0(i, half, neox), i1 = rf_rope_i1(i, half, neox);
        const float x0 = xh[i0], x1 = xh[i1];
        xh[i0] = x0 * c - x1 * s;
        xh[i1] = x0 * s + x1 * c;
    }
}

template <typename C>
__device__ __forceinline__ void rope_kv(float* q, float* k, const float* v, C* k_cache,
                                        C* v_cache, const int* pos_dev,
                                        const float* freq_factors, int heads, int kv_heads,
                                        int head_dim, int n_rot, int pos0, float theta,
                                        int neox) {
    const int t = blockIdx.x;
    const int y = blockIdx.y;
    const int p0 = pos_dev ? pos_dev[0] : pos0;
    const double pos = (double)p0 + (double)t;
    const int half = n_rot / 2;
    if (y < heads) {
        float* xh = q + ((i64)t * heads + y) * (i64)head_dim;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float c, s;
            rf_rope_cs(pos, i, n_rot, theta, freq_factors, &c, &s);
            const int i0 = rf_rope_i0(i, half, neox), i1 = rf_rope_i1(i, half, neox);
            const float x0 = xh[i0], x1 = xh[i1];
            xh[i0] = x0 * c - x1 * s;
            xh[i1] = x0 * s + x1 * c;
        }
        return;
    }
    const int h = y - heads;
    const i64 head_off = ((i64)t * kv_heads + h) * (i64)head_dim;
    const i64 cache_off = ((i64)p0 + t) * ((i64)kv_heads * head_dim) + (i64)h * head_dim;
    float* kh = k + head_off;
    C* kc = k_cache + cache_off;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float c, s;
        rf_rope_cs(pos, i, n_rot, theta, freq_factors, &c, &s);
        const int i0 = rf_rope_i0(i, half, neox), i1 = rf_rope_i1(i, half, neox);
        const float x0 = kh[i0], x1 = kh[i1];
        const float y0 = x0 * c - x1 * s;
        const float y1 = x0 * s + x1 * c;
        kh[i0] = y0;
        kh[i1] = y1;
        rf_kv_store(kc + i0, y0);
        rf_kv_store(kc + i1, y1);
    }
    // Dims past n_rot pass unturned (no thread writes them in k).
    for (int d = n_rot + threadIdx.x; d < head_dim; d += blockDim.x) rf_kv_store(kc + d, kh[d]);
    const float* vh = v + head_off;
    C* vc = v_cache + cache_off;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) rf_kv_store(vc + d, vh[d]);
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
rope_kv_f32(float* q, float* k, const float* v, float* k_cache, float* v_cache,
            const int* pos_dev, const float* freq_factors, int heads, int kv_heads,
            int head_dim, int n_rot, int pos0, float theta, int neox) {
    rf_grid_wait();
    rf_grid_release();
    rope_kv<float>(q, k, v, k_cache, v_cache, pos_dev, freq_factors, heads, kv_heads, head_dim,
                   n_rot, pos0, theta, neox);
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
rope_kv_f16(float* q, float* k, const float* v, u16* k_cache, u16* v_cache, const int* pos_dev,
            const float* freq_factors, int heads, int kv_heads, int head_dim, int n_rot,
            int pos0, float theta, int neox) {
    rf_grid_wait();
    rf_grid_release();
    rope_kv<u16>(q, k, v, k_cache, v_cache, pos_dev, freq_factors, heads, kv_heads, head_dim,
                 n_rot, pos0, theta, neox);
}
