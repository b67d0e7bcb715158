// attention_decode.h: one block's decode attention of one query head over a KV cache (one
// query token), run in the tail of the launch that wrote the token's q, k and v (matmul.hip
// matvec_qkv_rope with ATT), so that a decode step needs no attention launch of its own.
//
// rf_decode_attention<C, D>(q, k, v, row_len, n_keys, scale_log2, out, smem):
//   out = softmax(scale * q . K^T) V over the cache rows [0, n_keys) of one kv head. q, out:
//   float32 [D]; k, v: that kv head's values of cache row 0 (row j at j * row_len), float32
//   or fp16 bits (C = float or u16), rows 16-byte aligned (D * sizeof(C) and row_len *
//   sizeof(C) multiples of 16). q and the cache rows may have been written by other blocks
//   of the same launch (rf_block_arrive): they are read with rf_ld_l2. scale_log2 = scale *
//   log2(e): q is pre-scaled so that exp2 gives the softmax.
//   The block's 32-lane groups ("warps": blockDim.x / 32 of them) take the keys in rounds of
//   32 each: lane l of warp w takes key j0 + l (j0 = 32 w, then + 32 warps a round), loads
//   that key's K row and, for the warp's output, its own D/32 dims of the round's 32 V rows
//   (all loads of a round issued before the first use: one round trip), scores its key
//   against q (in shared memory), then the warp's online softmax (max and sum over its 32
//   lanes) and the warp's output over the round's keys (the weights by shuffle). The warps'
//   (max, sum, output) are merged through shared memory as flash_attn_combine merges key
//   splits. Every thread of the block calls it; smem: RF_DECODE_ATTENTION_SMEM_FLOATS(D,
//   warps) floats of dynamic shared memory.
#pragma once
#include "common.h"

// Floats of shared memory rf_decode_attention<C, D> takes with `warps` 32-lane groups.
#define RF_DECODE_ATTENTION_SMEM_FLOATS(D, warps) ((D) + (warps) * (2 + (D)))

// NW 32-bit words at p (4 * NW-byte aligned), loaded with rf_ld_l2.
template <int NW>
__device__ __forceinline__ void rf_ld_l2_words(const void* p, u32 (&w)[NW]) {
    static_assert(NW == 1 || NW == 2 || NW == 4, "1, 2 or 4 words");
    if constexpr (NW == 4) {
        const uint4 v = rf_ld_l2((const uint4*)p);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if constexpr (NW == 2) {
        const uint2 v = rf_ld_l2((const uint2*)p);
        w[0] = v.x, w[1] = v.y;
    } else {
        w[0] = rf_ld_l2((const u32*)p);
    }
}
// Value i of cache values held as 32-bit words (float32, or two fp16 a word, low half first).
__device__ __forceinline__ float rf_kv_value(const float*, const u32* w, int i) {
    return __int_as_float((int)w[i]);
}
__device__ __forceinline__ float rf_kv_value(const u16*, const u32* w, int i) {
    return rf_half_to_float((u16)((i & 1) ? w[i >> 1] >> 16 : w[i >> 1] & 0xffffu));
}

template <class C, int D>
__device__ __forceinline__ void rf_decode_attention(const float* q, const C* k, const C* v, i64 row_len,
                                                    int n_keys, float scale_log2, float* out, float* smem) {
    constexpr int DL = D / 32;                // output dims a lane
    constexpr int KE = 16 / sizeof(C);        // key values a 16-byte load
    constexpr int ROW16 = D / KE;             // 16-byte loads a key row
    constexpr int VW = DL * sizeof(C) / 4;    // 32-bit words of a lane's V values a key
    static_assert(D % 32 == 0 && DL <= 4 && (D * sizeof(C)) % 16 == 0, "head size");
    static_assert(4 * ROW16 + 32 * VW <= 128, "a round's loads take at most 128 registers");
    const int tid = (int)threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = (int)blockDim.x >> 5;
    float* qs = smem;               // [D]: q * scale_log2
    float* wm = qs + D;             // [warps]: a warp's running max
    float* wl = wm + warps;         // [warps]: its running sum
    float* wo = wl + warps;         // [warps][D]: its unnormalized output
    u32 kw[ROW16][4], vw[32][VW];
    // A round's loads: key j0 + lane's K row, and this lane's dims of the V rows j0 .. j0 + 31
    // (zeros past the keys: their weights are exactly 0).
    auto load_round = [&](int j0) {
        if (j0 + lane < n_keys) {
            const C* kr = k + (i64)(j0 + lane) * row_len;
#pragma unroll
            for (int c = 0; c < ROW16; ++c) rf_ld_l2_words<4>(kr + c * KE, kw[c]);
        }
#pragma unroll
        for (int jj = 0; jj < 32; ++jj) {
            if (j0 + jj < n_keys) {
                rf_ld_l2_words<VW>(v + (i64)(j0 + jj) * row_len + DL * lane, vw[jj]);
            } else {
#pragma unroll
                for (int e = 0; e < VW; ++e) vw[jj][e] = 0u;
            }
        }
    };
    float m = -RF_INF, l = 0.0f, o[DL];
#pragma unroll
    for (int e = 0; e < DL; ++e) o[e] = 0.0f;
    // Every warp takes the first round (a warp past the keys loads nothing and adds exactly 0),
    // whose loads go out before q's (they do not depend on it): one round trip.
    for (int j0 = 32 * warp, first = 1; first || j0 < n_keys; j0 += 32 * warps, first = 0) {
        load_round(j0);
        if (first) {
            for (int i = tid; i < D; i += blockDim.x) qs[i] = rf_ld_l2(q + i) * scale_log2;
            __syncthreads();
        }
        const int key = j0 + lane;
        // Score of key `key` (four partial sums for instruction-level parallelism).
        float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (key < n_keys) {
#pragma unroll
            for (int c = 0; c < ROW16; ++c)
#pragma unroll
                for (int e = 0; e < KE; e += 4) {
                    const float4 qv = *(const float4*)&qs[c * KE + e];
                    float& acc = s4[((c * KE + e) / 4) & 3];
                    acc += qv.x * rf_kv_value(k, kw[c], e) + qv.y * rf_kv_value(k, kw[c], e + 1) +
                           qv.z * rf_kv_value(k, kw[c], e + 2) + qv.w * rf_kv_value(k, kw[c], e + 3);
                }
        }
        // The warp's online softmax over its 32 keys of this round.
        const float s = key < n_keys ? (s4[0] + s4[1]) + (s4[2] + s4[3]) : -RF_INF;
        const float m_new = fmaxf(m, rf_group_max<32>(s));
        const float m_use = m_new == -RF_INF ? 0.0f : m_new;
        const float alpha = exp2f(m - m_use);
        const float p = exp2f(s - m_use);
        l = l * alpha + rf_group_sum<32>(p);
        m = m_new;
#pragma unroll
        for (int e = 0; e < DL; ++e) o[e] *= alpha;
        // Output dims DL * lane ..: the round's keys, their weights by shuffle.
#pragma unroll
        for (int jj = 0; jj < 32; ++jj) {
            const float pj = __int_as_float((int)rf_shfl_u32((u32)__float_as_int(p), jj, 32));
#pragma unroll
            for (int e = 0; e < DL; ++e) o[e] += pj * rf_kv_value(v, vw[jj], e);
        }
    }
    // Merge the warps' partial results (as flash_attn_combine merges key splits).
    if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
    for (int e = 0; e < DL; ++e) wo[warp * D + DL * lane + e] = o[e];
    __syncthreads();
    for (int d = tid; d < D; d += blockDim.x) {
        float M = -RF_INF;
        for (int w = 0; w < warps; ++w) M = fmaxf(M, wm[w]);
        float L = 0.0f, acc = 0.0f;
        for (int w = 0; w < warps; ++w) {
            const float wt = M != -RF_INF ? exp2f(wm[w] - M) : 0.0f;
            if (wt != 0.0f) {
                L += wt * wl[w];
                acc += wt * wo[w * D + d];
            }
        }
        out[d] = L > 0.0f ? acc / L : 0.0f;
    }
    __syncthreads();  // qs, wm, wl, wo are rewritten by the next call
}
