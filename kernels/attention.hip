// attention.hip: the attention ops, unfused and fused.
//
// Layouts (row-major, float32 unless said):
//   q: [B, Sq, H, D]   k, v: [B, kv_rows, KVH, D] (kv_rows = Sk for the ops, n_ctx for a KV
//   cache; only rows < Sk are read)   scores, weights: [B, H, Sq, Sk]   out: [B, Sq, H, D]
//   GQA: head h reads kv head h / (H / KVH). Causal masks are bottom-right aligned: query i
//   sees key j when j <= i + (Sk - Sq); a query with no visible key gets zeros. The fused
//   kernels take a sliding window (`window` > 0, causal only; 0: none): query i, at position
//   p = i + (Sk - Sq), sees key j when j <= p and p - j < window, and the keys before a
//   block's first window are not read.
//
// qkt_matmul_f32:      scores = scale * q k^T.      grid (ceil(Sk/32), ceil(Sq/32), B*H), block 256
// weighted_matmul_f32: out = weights v.             grid (ceil(D/32), ceil(Sq/32), B*H), block 256
//   Both: 32 x 32 output tiles through shared memory, 2 x 2 outputs per thread.
// causal_mask_f32:     scores[.., i, j] = -inf where j > i + Sk - Sq. Grid-stride, block 256.
// softmax_f32:         out[r, :] = softmax(x[r, :]); a row of only -inf gives zeros.
//                      grid (rows), block 256 (any multiple of the warp size).
//
// flash_attn_d<DMAX>_q<RM>_k<CN>_<kv type>: fused attention (FlashAttention-2 style): online
//   softmax over key tiles of BK = 16 * CN keys, float32 accumulation, nothing of size Sq x Sk
//   in memory.
//   The rows of a block are (query, head) pairs of one kv head: row r of kv head g is query
//   r / G of head g * G + r % G (G = H / KVH), so the heads that share a kv head share every
//   K/V tile load. A block of 256 threads (16 x 16) owns BQ = 16 * RM rows; thread (ty, tx)
//   holds rows ty + 16a, the score columns tx + 16c of each key tile and output columns
//   64u + 4tx .. +3. Dynamic shared memory: Q [BQ][DMAX+4], one K-or-V tile [BK][DMAX+4],
//   P [BQ][BK+4] floats. q is pre-scaled by scale * log2(e) so exp2 gives the softmax. A
//   thread issues all its loads of a Q, K or V tile before storing any (one round trip a
//   tile), and one-row blocks (decode) fetch a tile's V with its K, before the scores.
//   D <= DMAX (zero-padded), kv type f32 or f16 (u16 bits).
//   Launch: grid (ceil(Sq * G / BQ), B * KVH, splits), block 256. A block's keys start at 0,
//   or with a window at its first query's window start (its later rows mask the keys before
//   their own). splits > 1 splits a block's keys in ranges of keys_per_split (a multiple of
//   BK) and writes unnormalized partial outputs
//   ([splits, B*KVH, Sq*G, DMAX]) and their (max, sum) pairs; flash_attn_combine merges them:
//   grid (Sq * G, B * KVH), block 128, dynamic shared memory 2 x splits floats.
//   n_past (may be null): the number of keys is read from the device, Sk = n_past[0] + Sq
//   (a decode step's position + 1), and the Sk argument only sized the launch; the keys are
//   then spread over all the splits in whole tiles (keys_per_split is recomputed from the
//   keys a block sees: Sk, or with a window at most window + Sq - 1), and blocks
//   whose key range lies past the keys write an empty partial (max -inf, sum 0), which the
//   combine ignores. One recorded decode step then serves every position. Only the host
//   writes n_past (before the step), so it is read before the wait for the kernel before.
//
// flash_attn_mx_d<DMAX>_k<CN>_<kv type>: flash_attn_d<DMAX>_q4_k<CN> on AMD matrix cores (WMMA,
//   MFMA), for prefill there: see its section at the end of the file.
//
// attn_decode_d<D>_<kv type>: the same attention for one query token (Sq = 1, decode), with
//   less latency: no shared-memory tiles, and the cache rows that the launch before cannot
//   have written are loaded before the wait for it. Same arguments as flash_attn_* and the
//   same results (out, or the split-key partials that flash_attn_combine merges).
//   Grid (B * KVH, splits): a block takes one (batch, kv head) pair and one key range, with
//   32 lanes per query head of that kv head (block 32 G, G = H / KVH <= 8, or more: whole
//   warps, the lanes past the heads idle). Lane l of a head
//   takes key j0 + l of each round of 32 keys: that key's K row, and its own D / 32 output
//   dims of the round's 32 V rows (all loads of a round issued before their first use); then
//   the 32 lanes' online softmax (exp2 of q . k, q pre-scaled by scale_log2) and the head's
//   output, the weights passed by shuffle. Keys: [k_first, n_keys), n_keys = n_past[0] + 1
//   with n_past or Sk without, k_first = max(0, n_keys - window) with a window, else 0. With
//   n_past they are spread over all the splits (ceil((n_keys - k_first) / splits) each), and
//   the rows below n_past[0] (written by earlier steps) loaded before the wait, row
//   n_past[0] (the step's own) after it; without, in ranges of keys_per_split from k_first,
//   all loaded after the wait. Causality needs nothing (one query sees every key up to its
//   own, and a window is one range of them). D = head_dim exactly: 64 or 128 for fp16
//   caches, 32 or 64 for float32 (a lane's dims whole 32-bit words; a round's loads in at
//   most 128 registers); the launcher takes flash_attn_* for the others.
//
// attn_decode_head_d<D>_<kv type>: the same, a block per query head: grid (B * H), block of 1
//   to 8 groups of 32 lanes (the launcher: 8). The keys are spread over the groups in equal
//   parts (every group runs the same number of rounds, so that a wave of 64 lanes runs its
//   shuffles together), each group as a head of attn_decode above; the groups' (max, sum,
//   output) are then merged in shared memory in group order, as the combine merges splits,
//   and the block writes the head's output: one launch, no partials (part_o and part_ml
//   unused; one key range: grid.y 1, keys_per_split >= the keys seen). For short caches (or
//   short windows), where the groups of one block take the place of the key splits and the
//   combine launch.
#include "common.h"
#include "mma.h"

// ------------------------------------------------------------------------------ unfused ops

RF_KERNEL void RF_LAUNCH_BOUNDS(256)
qkt_matmul_f32(const float* q, const float* k, float* scores, int Sq, int Sk, int H, int KVH, int D,
               float scale) {
    __shared__ float qs[32][33];
    __shared__ float ks[32][33];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int bh = blockIdx.z, b = bh / H, h = bh % H, kvh = h / (H / KVH);
    const int i0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
    float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    for (int d0 = 0; d0 < D; d0 += 32) {
        for (int idx = tid; idx < 32 * 32; idx += blockDim.x) {
            const int r = idx / 32, dd = idx % 32, d = d0 + dd;
            const int i = i0 + r, j = j0 + r;
            qs[r][dd] = (i < Sq && d < D) ? q[(((i64)b * Sq + i) * H + h) * D + d] : 0.0f;
            ks[r][dd] = (j < Sk && d < D) ? k[(((i64)b * Sk + j) * KVH + kvh) * D + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int dd = 0; dd < 32; ++dd)
#pragma unroll
            for (int a = 0; a < 2; ++a)
#pragma unroll
                for (int c = 0; c < 2; ++c) acc[a][c] += qs[ty + 16 * a][dd] * ks[tx + 16 * c][dd];
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int i = i0 + ty + 16 * a, j = j0 + tx + 16 * c;
            if (i < Sq && j < Sk) scores[(((i64)b * H + h) * Sq + i) * Sk + j] = acc[a][c] * scale;
        }
}

RF_KERNEL void RF_LAUNCH_BOUNDS(256)
weighted_matmul_f32(const float* w, const float* v, float* out, int Sq, int Sk, int H, int KVH, int D) {
    __shared__ float ws[32][33];  // ws[i][jj]
    __shared__ float vs[32][33];  // vs[jj][d]
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int bh = blockIdx.z, b = bh / H, h = bh % H, kvh = h / (H / KVH);
    const int i0 = blockIdx.y * 32, d0 = blockIdx.x * 32;
    float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    for (int j0 = 0; j0 < Sk; j0 += 32) {
        for (int idx = tid; idx < 32 * 32; idx += blockDim.x) {
            const int r = idx / 32, cc = idx % 32;
            const int i = i0 + r, j = j0 + cc;
            ws[r][cc] = (i < Sq && j < Sk) ? w[(((i64)b * H + h) * Sq + i) * Sk + j] : 0.0f;
            const int jr = j0 + r, d = d0 + cc;
            vs[r][cc] = (jr < Sk && d < D) ? v[(((i64)b * Sk + jr) * KVH + kvh) * D + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int jj = 0; jj < 32; ++jj)
#pragma unroll
            for (int a = 0; a < 2; ++a)
#pragma unroll
                for (int c = 0; c < 2; ++c) acc[a][c] += ws[ty + 16 * a][jj] * vs[jj][tx + 16 * c];
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int i = i0 + ty + 16 * a, d = d0 + tx + 16 * c;
            if (i < Sq && d < D) out[(((i64)b * Sq + i) * H + h) * D + d] = acc[a][c];
        }
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
causal_mask_f32(float* scores, i64 planes, int Sq, int Sk) {
    const i64 n = planes * Sq * (i64)Sk;
    const i64 offset = (i64)Sk - Sq;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (i64)gridDim.x * blockDim.x) {
        const i64 j = idx % Sk, i = (idx / Sk) % Sq;
        if (j > i + offset) scores[idx] = -RF_INF;
    }
}

RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
softmax_f32(const float* x, float* out, int n) {
    const float* xr = x + (i64)blockIdx.x * n;
    float* orow = out + (i64)blockIdx.x * n;
    float mx = -RF_INF;
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, xr[j]);
    mx = rf_block_max(mx);
    if (mx == -RF_INF) {  // nothing visible in this row
        for (int j = threadIdx.x; j < n; j += blockDim.x) orow[j] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) sum += expf(xr[j] - mx);
    sum = rf_block_sum(sum);
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < n; j += blockDim.x) orow[j] = expf(xr[j] - mx) * inv;
}

// ------------------------------------------------------------------------- flash attention

__device__ __forceinline__ float4 rf_load4(const float* p) { return *(const float4*)p; }
__device__ __forceinline__ float4 rf_load4(const u16* p) {
    const uint2 w = *(const uint2*)p;
    return make_float4(rf_half_to_float((u16)(w.x & 0xffffu)), rf_half_to_float((u16)(w.x >> 16)),
                       rf_half_to_float((u16)(w.y & 0xffffu)), rf_half_to_float((u16)(w.y >> 16)));
}
__device__ __forceinline__ float rf_load1(const float* p) { return *p; }
__device__ __forceinline__ float rf_load1(const u16* p) { return rf_half_to_float(*p); }

// The flash kernels' block size (the launcher's FLASH_THREADS).
#define FLASH_BLOCK 256

// Rows [kt, kt + BK) of one kv head, as float4 pieces: thread t holds pieces t + i FLASH_BLOCK
// of the tile [BK][DMAX / 4]; rows >= k_end and dims >= D are 0. All of a thread's loads are
// issued before any is used (one round trip a tile, not one a piece).
template <int DMAX, int BK>
struct FlashTile {
    static constexpr int N = (BK * (DMAX / 4) + FLASH_BLOCK - 1) / FLASH_BLOCK;
    float4 v[N];
};
template <int DMAX, int BK, class KV>
__device__ __forceinline__ void flash_fetch_kv(const KV* base, i64 row_stride, int kt, int k_end, int D,
                                               FlashTile<DMAX, BK>& t) {
    constexpr int D4 = DMAX / 4;
#pragma unroll
    for (int n = 0; n < FlashTile<DMAX, BK>::N; ++n) {
        const int idx = threadIdx.x + n * FLASH_BLOCK;
        const int j = idx / D4, d = 4 * (idx % D4), key = kt + j;
        float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (idx < BK * D4 && key < k_end && d < D) {
            const KV* src = base + (i64)key * row_stride + d;
            if ((D & 3) == 0) {
                val = rf_load4(src);
            } else {
                val.x = rf_load1(src);
                if (d + 1 < D) val.y = rf_load1(src + 1);
                if (d + 2 < D) val.z = rf_load1(src + 2);
                if (d + 3 < D) val.w = rf_load1(src + 3);
            }
        }
        t.v[n] = val;
    }
}
// The fetched tile into dst [BK][DMAX + 4].
template <int DMAX, int BK>
__device__ __forceinline__ void flash_store_kv(const FlashTile<DMAX, BK>& t, float* dst) {
    constexpr int DP = DMAX + 4, D4 = DMAX / 4;
#pragma unroll
    for (int n = 0; n < FlashTile<DMAX, BK>::N; ++n) {
        const int idx = threadIdx.x + n * FLASH_BLOCK;
        if (idx < BK * D4) *(float4*)&dst[(idx / D4) * DP + 4 * (idx % D4)] = t.v[n];
    }
}

template <int DMAX, int RM, int CN, class KV>
__device__ __forceinline__ void flash_attention(const float* q, const KV* k, const KV* v, float* out,
                                                float* part_o, float* part_ml, int Sq, int Sk, int H,
                                                int KVH, int D, i64 kv_rows, float scale_log2, int causal,
                                                int window, int keys_per_split, int n_past) {
    constexpr int BQ = 16 * RM, BK = 16 * CN, DP = DMAX + 4, PP = BK + 4, DV = DMAX / 64;
    if (n_past >= 0) {
        // The keys a block of this launch sees, spread over all the splits in whole tiles
        // (the grid is sized for the most keys there can be).
        Sk = n_past + Sq;
        const int keys_seen = window > 0 ? min(Sk, window + Sq - 1) : Sk;
        const int per_split = (keys_seen + (int)gridDim.z - 1) / (int)gridDim.z;
        keys_per_split = (per_split + BK - 1) / BK * BK;
    }
    extern __shared__ float4 flash_smem[];
    float* Qs = (float*)flash_smem;  // [BQ][DP]
    float* KVs = Qs + BQ * DP;       // [BK][DP]
    float* Ps = KVs + BK * DP;       // [BQ][PP]

    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int G = H / KVH, R = Sq * G;
    const int r0 = blockIdx.x * BQ;
    const int bk = blockIdx.y, b = bk / KVH, kvh = bk % KVH;
    const int split = blockIdx.z;
    const int offset = Sk - Sq;  // query i sees keys j <= i + offset

    // Keys this block visits: from its first query's window start (0 without a window).
    const int k_first = window > 0 ? max(r0 / G + offset + 1 - window, 0) : 0;
    const int k_begin = k_first + split * keys_per_split;
    int k_end = min(Sk, k_begin + keys_per_split);
    if (causal) {
        const int last_query = (min(r0 + BQ, R) - 1) / G;
        k_end = min(k_end, max(last_query + offset + 1, 0));
    }

    const KV* kbase = k + ((i64)b * kv_rows * KVH + kvh) * D;
    const KV* vbase = v + ((i64)b * kv_rows * KVH + kvh) * D;
    const i64 row_stride = (i64)KVH * D;
    // The first key tile (and, for decode's one-row blocks, its V tile too: one round trip for
    // Q, K and V) is requested before Q is stored.
    constexpr bool PREFETCH_V = RM == 1;
    FlashTile<DMAX, BK> kr, vr;
    if (k_begin < k_end) {
        flash_fetch_kv<DMAX, BK>(kbase, row_stride, k_begin, k_end, D, kr);
        if (PREFETCH_V) flash_fetch_kv<DMAX, BK>(vbase, row_stride, k_begin, k_end, D, vr);
    }

    // Q tile, pre-scaled (all of a thread's loads issued before the stores).
    constexpr int QN = (BQ * (DMAX / 4) + FLASH_BLOCK - 1) / FLASH_BLOCK;
    float4 qv_load[QN];
#pragma unroll
    for (int n = 0; n < QN; ++n) {
        const int idx = tid + n * FLASH_BLOCK;
        const int rr = idx / (DMAX / 4), d = 4 * (idx % (DMAX / 4)), r = r0 + rr;
        float4 val = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (idx < BQ * (DMAX / 4) && r < R && d < D) {
            const int i = r / G, h = kvh * G + r % G;
            const float* src = q + (((i64)b * Sq + i) * H + h) * D + d;
            if ((D & 3) == 0) {
                val = *(const float4*)src;
            } else {
                val.x = src[0];
                if (d + 1 < D) val.y = src[1];
                if (d + 2 < D) val.z = src[2];
                if (d + 3 < D) val.w = src[3];
            }
        }
        qv_load[n] = val;
    }
#pragma unroll
    for (int n = 0; n < QN; ++n) {
        const int idx = tid + n * FLASH_BLOCK;
        if (idx >= BQ * (DMAX / 4)) continue;
        const int rr = idx / (DMAX / 4), d = 4 * (idx % (DMAX / 4));
        float4 val = qv_load[n];
        val.x *= scale_log2;
        val.y *= scale_log2;
        val.z *= scale_log2;
        val.w *= scale_log2;
        *(float4*)&Qs[rr * DP + d] = val;
    }

    int key_limit[RM];  // last visible key of each of this thread's rows
    // Key j of row a is masked when key_limit[a] - j, as unsigned, is >= span: j after the
    // row's last key (negative), or a window's length or more before it.
    const u32 span = window > 0 ? (u32)window : 0x80000000u;
    float m_i[RM], l_i[RM], o[RM][DV][4];
#pragma unroll
    for (int a = 0; a < RM; ++a) {
        const int r = r0 + ty + 16 * a;
        key_limit[a] = causal ? (r / G) + offset : 0x7fffffff;
        m_i[a] = -RF_INF;
        l_i[a] = 0.0f;
#pragma unroll
        for (int u = 0; u < DV; ++u)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[a][u][e] = 0.0f;
    }

    const int D4 = (D + 3) / 4;

    for (int kt = k_begin; kt < k_end; kt += BK) {
        if (kt != k_begin) {
            flash_fetch_kv<DMAX, BK>(kbase, row_stride, kt, k_end, D, kr);
            if (PREFETCH_V) flash_fetch_kv<DMAX, BK>(vbase, row_stride, kt, k_end, D, vr);
        }
        __syncthreads();  // Q is written; the previous tile's P and V are no longer read
        flash_store_kv<DMAX, BK>(kr, KVs);
        __syncthreads();

        float s[RM][CN];
#pragma unroll
        for (int a = 0; a < RM; ++a)
#pragma unroll
            for (int c = 0; c < CN; ++c) s[a][c] = 0.0f;
        for (int d4 = 0; d4 < D4; ++d4) {
            float4 qv[RM], kv[CN];
#pragma unroll
            for (int a = 0; a < RM; ++a) qv[a] = *(const float4*)&Qs[(ty + 16 * a) * DP + 4 * d4];
#pragma unroll
            for (int c = 0; c < CN; ++c) kv[c] = *(const float4*)&KVs[(tx + 16 * c) * DP + 4 * d4];
#pragma unroll
            for (int a = 0; a < RM; ++a)
#pragma unroll
                for (int c = 0; c < CN; ++c)
                    s[a][c] += qv[a].x * kv[c].x + qv[a].y * kv[c].y + qv[a].z * kv[c].z + qv[a].w * kv[c].w;
        }

        // Mask, then the online softmax update of each row (a row spans the 16 lanes of one ty).
#pragma unroll
        for (int a = 0; a < RM; ++a) {
            float row_max = -RF_INF;
#pragma unroll
            for (int c = 0; c < CN; ++c) {
                const int key = kt + tx + 16 * c;
                if (key >= k_end || (u32)(key_limit[a] - key) >= span) s[a][c] = -RF_INF;
                row_max = fmaxf(row_max, s[a][c]);
            }
            row_max = rf_group_max<16>(row_max);
            const float m_new = fmaxf(m_i[a], row_max);
            const float m_use = (m_new == -RF_INF) ? 0.0f : m_new;
            const float alpha = exp2f(m_i[a] - m_use);
            float row_sum = 0.0f;
#pragma unroll
            for (int c = 0; c < CN; ++c) {
                const float p = exp2f(s[a][c] - m_use);
                Ps[(ty + 16 * a) * PP + tx + 16 * c] = p;
                row_sum += p;
            }
            row_sum = rf_group_sum<16>(row_sum);
            l_i[a] = l_i[a] * alpha + row_sum;
            m_i[a] = m_new;
#pragma unroll
            for (int u = 0; u < DV; ++u)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[a][u][e] *= alpha;
        }
        __syncthreads();  // K no longer read; P complete
        if (!PREFETCH_V) flash_fetch_kv<DMAX, BK>(vbase, row_stride, kt, k_end, D, vr);
        flash_store_kv<DMAX, BK>(vr, KVs);
        __syncthreads();

#pragma unroll 2
        for (int j4 = 0; j4 < BK / 4; ++j4) {
            float4 pv[RM];
#pragma unroll
            for (int a = 0; a < RM; ++a) pv[a] = *(const float4*)&Ps[(ty + 16 * a) * PP + 4 * j4];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                float4 vv[DV];
#pragma unroll
                for (int u = 0; u < DV; ++u) vv[u] = *(const float4*)&KVs[(4 * j4 + jj) * DP + 64 * u + 4 * tx];
#pragma unroll
                for (int a = 0; a < RM; ++a) {
                    const float p = jj == 0 ? pv[a].x : jj == 1 ? pv[a].y : jj == 2 ? pv[a].z : pv[a].w;
#pragma unroll
                    for (int u = 0; u < DV; ++u) {
                        o[a][u][0] += p * vv[u].x;
                        o[a][u][1] += p * vv[u].y;
                        o[a][u][2] += p * vv[u].z;
                        o[a][u][3] += p * vv[u].w;
                    }
                }
            }
        }
    }

    // Epilogue: normalized output, or this split's partial result.
#pragma unroll
    for (int a = 0; a < RM; ++a) {
        const int r = r0 + ty + 16 * a;
        if (r >= R) continue;
        if (part_o == nullptr) {
            const int i = r / G, h = kvh * G + r % G;
            float* dst = out + (((i64)b * Sq + i) * H + h) * D;
            const float inv = l_i[a] > 0.0f ? 1.0f / l_i[a] : 0.0f;
#pragma unroll
            for (int u = 0; u < DV; ++u)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int d = 64 * u + 4 * tx + e;
                    if (d < D) dst[d] = o[a][u][e] * inv;
                }
        } else {
            const i64 prow = ((i64)split * gridDim.y + bk) * R + r;
            float* dst = part_o + prow * DMAX;
#pragma unroll
            for (int u = 0; u < DV; ++u)
#pragma unroll
                for (int e = 0; e < 4; ++e) dst[64 * u + 4 * tx + e] = o[a][u][e];
            if (tx == 0) {
                part_ml[2 * prow] = m_i[a];
                part_ml[2 * prow + 1] = l_i[a];
            }
        }
    }
}

// Merge the partial results of `splits` key ranges: out = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s.
// The block's threads load the splits' (m, l) pairs at once; the weights 2^(m_s - M) go to
// shared memory (dynamic, 2 x splits floats), and only splits with a weight read their o
// (the empty ones, past the keys, add exactly 0). The sums run in split order.
RF_KERNEL void RF_LAUNCH_BOUNDS(1024)
flash_attn_combine(const float* part_o, const float* part_ml, float* out, int splits, int Sq, int H, int KVH,
                   int D, int dmax) {
    extern __shared__ float combine_smem[];
    float* ws = combine_smem;           // [splits] weights 2^(m_s - M)
    float* ls = combine_smem + splits;  // [splits] l_s
    rf_grid_wait();
    rf_grid_release();
    const int G = H / KVH, R = Sq * G;
    const int r = blockIdx.x, bk = blockIdx.y, b = bk / KVH, kvh = bk % KVH;
    const i64 rows_per_split = (i64)gridDim.y * R;
    const i64 prow0 = (i64)bk * R + r;
    float M = -RF_INF;
    for (int s = threadIdx.x; s < splits; s += blockDim.x) {
        const i64 prow = prow0 + s * rows_per_split;
        const float m = part_ml[2 * prow];
        ws[s] = m;
        ls[s] = part_ml[2 * prow + 1];
        M = fmaxf(M, m);
    }
    M = rf_block_max(M);  // (its barriers also publish ws and ls)
    for (int s = threadIdx.x; s < splits; s += blockDim.x) ws[s] = M != -RF_INF ? exp2f(ws[s] - M) : 0.0f;
    __syncthreads();
    const int i = r / G, h = kvh * G + r % G;
    float* dst = out + (((i64)b * Sq + i) * H + h) * D;
    float L = 0.0f;
    for (int s = 0; s < splits; ++s) L += ws[s] * ls[s];
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float w = ws[s];
            if (w != 0.0f) acc += w * part_o[(prow0 + s * rows_per_split) * dmax + d];
        }
        dst[d] = L > 0.0f ? acc / L : 0.0f;
    }
}

#define RF_FLASH_KERNEL(DMAX, RM, CN, KVNAME, KV)                                                       \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) flash_attn_d##DMAX##_q##RM##_k##CN##_##KVNAME(                 \
        const float* q, const KV* k, const KV* v, float* out, float* part_o, float* part_ml, int Sq,     \
        int Sk, int H, int KVH, int D, i64 kv_rows, float scale_log2, int causal, int window,           \
        int keys_per_split, const int* n_past) {                                                        \
        const int past = n_past ? n_past[0] : -1; /* host-written before the step: read early */      \
        rf_grid_wait();                                                                                 \
        rf_grid_release();                                                                              \
        flash_attention<DMAX, RM, CN, KV>(q, k, v, out, part_o, part_ml, Sq, Sk, H, KVH, D, kv_rows,    \
                                          scale_log2, causal, window, keys_per_split, past);            \
    }
#define RF_FLASH_CONFIGS(DMAX, KVNAME, KV)   \
    RF_FLASH_KERNEL(DMAX, 4, 4, KVNAME, KV) \
    RF_FLASH_KERNEL(DMAX, 4, 2, KVNAME, KV) \
    RF_FLASH_KERNEL(DMAX, 1, 2, KVNAME, KV)
RF_FLASH_CONFIGS(64, f32, float)
RF_FLASH_CONFIGS(128, f32, float)
RF_FLASH_CONFIGS(256, f32, float)
RF_FLASH_CONFIGS(64, f16, u16)
RF_FLASH_CONFIGS(128, f16, u16)
RF_FLASH_CONFIGS(256, f16, u16)

// ------------------------------------------------------------------------ decode attention

// NW 32-bit words at p (4 NW-byte aligned), loaded with rf_ld_l2.
template <int NW>
__device__ __forceinline__ void rf_ld_l2_words(const void* p, u32 (&w)[NW]) {
    static_assert(NW == 1 || NW == 2 || NW == 4, "1, 2 or 4 words");
    if constexpr (NW == 4) {
        const uint4 t = rf_ld_l2((const uint4*)p);
        w[0] = t.x, w[1] = t.y, w[2] = t.z, w[3] = t.w;
    } else if constexpr (NW == 2) {
        const uint2 t = rf_ld_l2((const uint2*)p);
        w[0] = t.x, w[1] = t.y;
    } else {
        w[0] = rf_ld_l2((const u32*)p);
    }
}
// Value i of cache values held as 32-bit words (float32, or two fp16 a word, low half first).
__device__ __forceinline__ float rf_kv_word_value(const float*, const u32* w, int i) {
    return __int_as_float((int)w[i]);
}
__device__ __forceinline__ float rf_kv_word_value(const u16*, const u32* w, int i) {
    return rf_half_to_float((u16)((i & 1) ? w[i >> 1] >> 16 : w[i >> 1] & 0xffffu));
}

// WINDOW: the launch has a sliding window (window > 0). The kernels hold both forms and branch
// once on `window`: with the window's first key computed in one body for both, NVRTC gave the
// no-window head kernel (sm_90) fewer registers and another schedule than before windows, and
// it ran slower (docs/perf/decode-attention-window-branch.md); the no-window form now compiles
// as it did then.
template <class C, int D, bool MERGE, bool WINDOW>
__device__ __forceinline__ void attn_decode(const float* q, const C* k, const C* v, float* out, float* part_o,
                                            float* part_ml, int Sk, int H, int KVH, i64 kv_rows,
                                            float scale_log2, int window, int keys_per_split, int dmax,
                                            int past) {
    constexpr int DL = D / 32;              // output dims a lane
    constexpr int KE = 16 / sizeof(C);      // key values a 16-byte load
    constexpr int ROW16 = D / KE;           // 16-byte loads a key row
    constexpr int VW = DL * sizeof(C) / 4;  // 32-bit words of a lane's V values a key
    static_assert(D % 32 == 0 && DL <= 4 && VW >= 1 && 4 * ROW16 + 32 * VW <= 128, "head size");
    constexpr int QS = MERGE ? 1 : 8;
    __shared__ float qs[QS][D];  // each head's q * scale_log2
    const int tid = (int)threadIdx.x, lane = tid & 31, g = tid >> 5;
    const int G = H / KVH;
    // !MERGE: block (batch, kv head), group g = its query head g. MERGE: block (batch, query
    // head), group g = the g-th of the block's groups' parts of the split's keys.
    int b, h, kvh;
    if (MERGE) {
        const int bh = (int)blockIdx.x;
        b = bh / H, h = bh - b * H, kvh = h / G;
    } else {
        const int bk = (int)blockIdx.x;
        b = bk / KVH, kvh = bk - b * KVH, h = kvh * G + g;
    }
    const int qg = MERGE ? 0 : g;
    const int split = (int)blockIdx.y, splits = (int)gridDim.y;
    const int n_keys = past >= 0 ? past + 1 : Sk;
    const int k_first = WINDOW ? max(n_keys - window, 0) : 0;  // the window's first key
    const int kps = past >= 0 ? (n_keys - k_first + splits - 1) / splits : keys_per_split;
    int j_begin = k_first + (int)min((i64)split * kps, (i64)(n_keys - k_first));
    int j_end = min(n_keys, j_begin + kps);
    int rounds = max(1, (j_end - j_begin + 31) / 32);
    if (MERGE) {  // the split's keys in equal parts, one a group; every group runs the same rounds
        const int groups = (int)blockDim.x >> 5, per = (j_end - j_begin + groups - 1) / groups;
        rounds = max(1, (per + 31) / 32);
        j_begin = min(j_end, j_begin + g * per);
        j_end = min(j_end, j_begin + per);
    }
    const int n_old = past >= 0 ? past : 0;  // rows no kernel of this step writes
    const i64 row_len = (i64)KVH * D;
    const C* kb = k + ((i64)b * kv_rows * KVH + kvh) * D;
    const C* vb = v + ((i64)b * kv_rows * KVH + kvh) * D;
    u32 kw[ROW16][4], vw[32][VW];
    // The loads of round j0's keys in [lo, hi): key j0 + lane's K row and this lane's dims of
    // the V rows (those of other keys stay as they were: zeros, set by clear_v).
    auto load_round = [&](int j0, int lo, int hi) {
        const int key = j0 + lane;
        if (key >= lo && key < hi) {
            const C* kr = kb + (i64)key * row_len;
#pragma unroll
            for (int c = 0; c < ROW16; ++c) rf_ld_l2_words<4>(kr + c * KE, kw[c]);
        }
#if defined(RF_HIP)
        // AMD: key j's V row as an offset from vb stepped a row a key (rf_per_lane), not 32
        // row addresses held in scalar registers (they spilled)
        i64 vo = rf_per_lane((i64)j0 * row_len + DL * lane);
#pragma unroll
        for (int jj = 0; jj < 32; ++jj) {
            const int j = j0 + jj;
            if (j >= lo && j < hi) rf_ld_l2_words<VW>(vb + vo, vw[jj]);
            vo = rf_per_lane(vo + row_len);
        }
#else
#pragma unroll
        for (int jj = 0; jj < 32; ++jj) {
            const int j = j0 + jj;
            if (j >= lo && j < hi) rf_ld_l2_words<VW>(vb + (i64)j * row_len + DL * lane, vw[jj]);
        }
#endif
    };
    auto clear_v = [&]() {
#pragma unroll
        for (int jj = 0; jj < 32; ++jj)
#pragma unroll
            for (int e = 0; e < VW; ++e) vw[jj][e] = 0u;
    };
    clear_v();
    load_round(j_begin, j_begin, min(j_end, n_old));  // rows of earlier steps: before the wait
    rf_grid_wait();
    rf_grid_release();
    load_round(j_begin, max(j_begin, n_old), j_end);  // the rest of the first round
    if (MERGE ? tid < D / 4 : (g < G && lane < D / 4)) {
        const int d4 = MERGE ? tid : lane;
        const float4 t = rf_ld_l2((const float4*)(rf_after_wait(q) + ((i64)b * H + h) * D) + d4);
        *(float4*)&qs[qg][4 * d4] = make_float4(t.x * scale_log2, t.y * scale_log2, t.z * scale_log2,
                                                t.w * scale_log2);
    }
    __syncthreads();
    float m = -RF_INF, l = 0.0f, o[DL];
#pragma unroll
    for (int e = 0; e < DL; ++e) o[e] = 0.0f;
    for (int r = 0, j0 = j_begin;;) {
#if defined(RF_HIP) && RF_WARP == 32
        // RDNA (256 VGPRs a lane), a block a head of 128 dims: q's row in shared memory is at a
        // fixed address there, so the compiler would load all 128 of its floats into registers
        // once, before the loop, and with a round's 128 words of K and V loads in flight that
        // is more than a lane has (it spilled 32 VGPRs to scratch). This compiler barrier
        // (no instruction) keeps q's loads in the round, as the kv-head form has them.
        if constexpr (MERGE && D == 128) asm volatile("" ::: "memory");
#endif
        const int key = j0 + lane;
        float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four partial sums (instruction-level parallelism)
        if (key < j_end) {
#pragma unroll
            for (int c = 0; c < ROW16; ++c)
#pragma unroll
                for (int e = 0; e < KE; e += 4) {
                    const float4 qv = *(const float4*)&qs[qg][c * KE + e];
                    float& acc = s4[((c * KE + e) / 4) & 3];
                    acc += qv.x * rf_kv_word_value(k, kw[c], e) + qv.y * rf_kv_word_value(k, kw[c], e + 1) +
                           qv.z * rf_kv_word_value(k, kw[c], e + 2) + qv.w * rf_kv_word_value(k, kw[c], e + 3);
                }
        }
        // The online softmax over the round's keys (lanes past the keys weigh exactly 0).
        const float sc = key < j_end ? (s4[0] + s4[1]) + (s4[2] + s4[3]) : -RF_INF;
        const float m_new = fmaxf(m, rf_group_max<32>(sc));
        const float m_use = m_new == -RF_INF ? 0.0f : m_new;
        const float alpha = exp2f(m - m_use);
        const float p = exp2f(sc - m_use);
        l = l * alpha + rf_group_sum<32>(p);
        m = m_new;
#pragma unroll
        for (int e = 0; e < DL; ++e) o[e] *= alpha;
#pragma unroll
        for (int jj = 0; jj < 32; ++jj) {
            const float pj = __int_as_float((int)rf_shfl_u32((u32)__float_as_int(p), jj, 32));
#pragma unroll
            for (int e = 0; e < DL; ++e) o[e] += pj * rf_kv_word_value(v, vw[jj], e);
        }
        j0 += 32;
        if (++r >= rounds) break;
        clear_v();
        load_round(j0, j0, j_end);
    }
    if (MERGE) {
        // The groups' (m, l, o) merged as flash_attn_combine merges splits, in group order.
        constexpr int MAXG = 8;
        __shared__ float ms[MAXG], ls[MAXG], os[MAXG][D];
        const int groups = (int)blockDim.x >> 5;
        if (g < MAXG) {
#pragma unroll
            for (int e = 0; e < DL; ++e) os[g][DL * lane + e] = o[e];
            if (lane == 0) ms[g] = m, ls[g] = l;
        }
        __syncthreads();
        const int n_groups = min(groups, MAXG);
        float M = -RF_INF;
        for (int w = 0; w < n_groups; ++w) M = fmaxf(M, ms[w]);
        float L = 0.0f;
        for (int w = 0; w < n_groups; ++w) L += (M != -RF_INF ? exp2f(ms[w] - M) : 0.0f) * ls[w];
        for (int d = tid; d < D; d += (int)blockDim.x) {
            float acc = 0.0f;
            for (int w = 0; w < n_groups; ++w) {
                const float a = M != -RF_INF ? exp2f(ms[w] - M) : 0.0f;
                if (a != 0.0f) acc += a * os[w][d];
            }
            out[((i64)b * H + h) * D + d] = L > 0.0f ? acc / L : 0.0f;
        }
        return;
    }
    if (g >= G) return;
    if (part_o == nullptr) {
        float* dst = out + ((i64)b * H + h) * D + DL * lane;
#pragma unroll
        for (int e = 0; e < DL; ++e) dst[e] = l > 0.0f ? o[e] / l : 0.0f;
    } else {
        const i64 prow = ((i64)split * gridDim.x + blockIdx.x) * G + g;
#pragma unroll
        for (int e = 0; e < DL; ++e) part_o[prow * dmax + DL * lane + e] = o[e];
        if (lane == 0) {
            part_ml[2 * prow] = m;
            part_ml[2 * prow + 1] = l;
        }
    }
}

#define RF_ATTN_DECODE(D, KVNAME, KV)                                                                  \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) attn_decode_d##D##_##KVNAME(                                  \
        const float* q, const KV* k, const KV* v, float* out, float* part_o, float* part_ml, int Sk,   \
        int H, int KVH, i64 kv_rows, float scale_log2, int window, int keys_per_split, int dmax,       \
        const int* n_past) {                                                                           \
        const int past = n_past ? n_past[0] : -1; /* host-written before the step: read early */       \
        if (window > 0)                                                                                \
            attn_decode<KV, D, false, true>(q, k, v, out, part_o, part_ml, Sk, H, KVH, kv_rows,        \
                                            scale_log2, window, keys_per_split, dmax, past);           \
        else                                                                                           \
            attn_decode<KV, D, false, false>(q, k, v, out, part_o, part_ml, Sk, H, KVH, kv_rows,       \
                                             scale_log2, window, keys_per_split, dmax, past);          \
    }                                                                                                  \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) attn_decode_head_d##D##_##KVNAME(                             \
        const float* q, const KV* k, const KV* v, float* out, float* part_o, float* part_ml, int Sk,   \
        int H, int KVH, i64 kv_rows, float scale_log2, int window, int keys_per_split, int dmax,       \
        const int* n_past) {                                                                           \
        const int past = n_past ? n_past[0] : -1;                                                      \
        if (window > 0)                                                                                \
            attn_decode<KV, D, true, true>(q, k, v, out, part_o, part_ml, Sk, H, KVH, kv_rows,         \
                                           scale_log2, window, keys_per_split, dmax, past);            \
        else                                                                                           \
            attn_decode<KV, D, true, false>(q, k, v, out, part_o, part_ml, Sk, H, KVH, kv_rows,        \
                                            scale_log2, window, keys_per_split, dmax, past);           \
    }
RF_ATTN_DECODE(64, f16, u16)
RF_ATTN_DECODE(128, f16, u16)
RF_ATTN_DECODE(32, f32, float)
RF_ATTN_DECODE(64, f32, float)

// ---------------------------------------------------- flash attention on AMD matrix cores
// flash_attn_mx_d<DMAX>_k<CN>_<kv type>: flash_attn_d<DMAX>_q4_k<CN>_<kv type> on WMMA / MFMA
//   (mma.h), for AMD targets with matrix cores (RF_AMD_MATRIX): the same arguments, grid, key
//   ranges, masks, splits and results for the same BQ = 64 rows and BK = 16 CN keys, with f16
//   operands (q pre-scaled by scale_log2, K, P and V rounded to f16), f32 accumulation and an
//   f32 online softmax. A block of 4 waves (4 * RF_WARP threads); wave w owns rows
//   16 w .. 16 w + 15 of the block's 64. Per key tile: S = Q K^T in 16 x 16 fragments; the
//   online softmax on the fragments' rows (the 16 lanes holding a row's columns reduce it);
//   P to shared memory as f16 (a D fragment is not laid out as an A operand); V stored
//   transposed (its columns along the keys, as the B operand is read); O += P V. Each row's
//   sum l adds the f16-rounded p that P V multiplies. Shared memory (f16): Q [64][DMAX + 8],
//   one K [BK][DMAX + 8] or V^T [DMAX][BK + 8] tile, P [4][16][BK + 8]
//   (src/ops/attention/gpu.rs `flash_matrix_shared_bytes`). Launch: grid as flash_attn_*,
//   block 4 * RF_WARP.
#if defined(RF_AMD_MATRIX)
#define FLASH_MX_WAVES 4
template <int DMAX, int CN, class KV>
__device__ __forceinline__ void flash_attention_matrix(const float* q, const KV* k, const KV* v, float* out,
                                                       float* part_o, float* part_ml, int Sq, int Sk, int H,
                                                       int KVH, int D, i64 kv_rows, float scale_log2, int causal,
                                                       int window, int keys_per_split, int n_past) {
    constexpr int BQ = 16 * FLASH_MX_WAVES, BK = 16 * CN, QP = DMAX + 8, KP = DMAX + 8, VP = BK + 8, PP = BK + 8;
    constexpr int NF = DMAX / 16, KF = BK / 16, CE = RF_FRAG_C;
    constexpr int KV_ELEMS = BK * KP > DMAX * VP ? BK * KP : DMAX * VP;
    if (n_past >= 0) {
        // As flash_attention: the keys seen, spread over all the splits in whole tiles.
        Sk = n_past + Sq;
        const int keys_seen = window > 0 ? min(Sk, window + Sq - 1) : Sk;
        const int per_split = (keys_seen + (int)gridDim.z - 1) / (int)gridDim.z;
        keys_per_split = (per_split + BK - 1) / BK * BK;
    }
    extern __shared__ uint4 flash_mx_smem[];
    u16* Qs = (u16*)flash_mx_smem;  // [BQ][QP]
    u16* KVs = Qs + BQ * QP;        // [BK][KP] (K) or [DMAX][VP] (V^T)
    u16* Ps = KVs + KV_ELEMS;       // [waves][16][PP]

    const int tid = threadIdx.x, threads = FLASH_MX_WAVES * RF_WARP;
    const int lane = tid % RF_WARP, wave = tid / RF_WARP, col = lane & 15;
    const int G = H / KVH, R = Sq * G;
    const int r0 = blockIdx.x * BQ;
    const int bk = blockIdx.y, b = bk / KVH, kvh = bk % KVH;
    const int split = blockIdx.z;
    const int offset = Sk - Sq;
    const int k_first = window > 0 ? max(r0 / G + offset + 1 - window, 0) : 0;
    const int k_begin = k_first + split * keys_per_split;
    int k_end = min(Sk, k_begin + keys_per_split);
    if (causal) {
        const int last_query = (min(r0 + BQ, R) - 1) / G;
        k_end = min(k_end, max(last_query + offset + 1, 0));
    }
    const KV* kbase = k + ((i64)b * kv_rows * KVH + kvh) * D;
    const KV* vbase = v + ((i64)b * kv_rows * KVH + kvh) * D;
    const i64 row_stride = (i64)KVH * D;

    for (int idx = tid; idx < BQ * DMAX; idx += threads) {
        const int rr = idx / DMAX, d = idx % DMAX, r = r0 + rr;
        float val = 0.0f;
        if (r < R && d < D) {
            const int i = r / G, h = kvh * G + r % G;
            val = q[(((i64)b * Sq + i) * H + h) * D + d] * scale_log2;
        }
        Qs[rr * QP + d] = rf_float_to_half(val);
    }

    const u32 span = window > 0 ? (u32)window : 0x80000000u;
    int key_limit[CE];  // last visible key of each of this lane's rows
    float m_i[CE], l_i[CE], o[NF][CE];
#pragma unroll
    for (int e = 0; e < CE; ++e) {
        const int r = r0 + 16 * wave + rf_frag_c_row(e, lane);
        key_limit[e] = causal ? (r / G) + offset : 0x7fffffff;
        m_i[e] = -RF_INF;
        l_i[e] = 0.0f;
#pragma unroll
        for (int n = 0; n < NF; ++n) o[n][e] = 0.0f;
    }

    for (int kt = k_begin; kt < k_end; kt += BK) {
        __syncthreads();  // Q is written; the previous tile's V is no longer read
        for (int idx = tid; idx < BK * DMAX; idx += threads) {
            const int j = idx / DMAX, d = idx % DMAX, key = kt + j;
            const float val = (key < k_end && d < D) ? rf_load1(kbase + (i64)key * row_stride + d) : 0.0f;
            KVs[j * KP + d] = rf_float_to_half(val);
        }
        __syncthreads();

        float s[KF][CE];
#pragma unroll
        for (int j = 0; j < KF; ++j)
#pragma unroll
            for (int e = 0; e < CE; ++e) s[j][e] = 0.0f;
#pragma unroll 1
        for (int kk = 0; kk < DMAX; kk += 16) {
            u32 af[RF_FRAG_WORDS];
            rf_frag_load(af, Qs + 16 * wave * QP + kk, QP, lane);
#pragma unroll
            for (int j = 0; j < KF; ++j) {
                u32 bf[RF_FRAG_WORDS];
                rf_frag_load(bf, KVs + 16 * j * KP + kk, KP, lane);
                rf_matrix_16x16x16<false>(s[j], af, bf);
            }
        }

        // Mask, then the online softmax of each of this lane's rows.
#pragma unroll
        for (int e = 0; e < CE; ++e) {
            const int row = 16 * wave + rf_frag_c_row(e, lane);
            float row_max = -RF_INF;
#pragma unroll
            for (int j = 0; j < KF; ++j) {
                const int key = kt + 16 * j + col;
                if (key >= k_end || (u32)(key_limit[e] - key) >= span) s[j][e] = -RF_INF;
                row_max = fmaxf(row_max, s[j][e]);
            }
            row_max = rf_group_max<16>(row_max);
            const float m_new = fmaxf(m_i[e], row_max);
            const float m_use = (m_new == -RF_INF) ? 0.0f : m_new;
            const float alpha = exp2f(m_i[e] - m_use);
            float row_sum = 0.0f;
#pragma unroll
            for (int j = 0; j < KF; ++j) {
                const u16 p = rf_float_to_half(exp2f(s[j][e] - m_use));
                Ps[row * PP + 16 * j + col] = p;
                row_sum += rf_half_to_float(p);
            }
            row_sum = rf_group_sum<16>(row_sum);
            l_i[e] = l_i[e] * alpha + row_sum;
            m_i[e] = m_new;
#pragma unroll
            for (int n = 0; n < NF; ++n) o[n][e] *= alpha;
        }
        __syncthreads();  // K no longer read; P written
        for (int idx = tid; idx < BK * DMAX; idx += threads) {
            const int j = idx / DMAX, d = idx % DMAX, key = kt + j;
            const float val = (key < k_end && d < D) ? rf_load1(vbase + (i64)key * row_stride + d) : 0.0f;
            KVs[d * VP + j] = rf_float_to_half(val);
        }
        __syncthreads();

#pragma unroll 1
        for (int kk = 0; kk < BK; kk += 16) {
            u32 af[RF_FRAG_WORDS];
            rf_frag_load(af, Ps + 16 * wave * PP + kk, PP, lane);
#pragma unroll
            for (int n = 0; n < NF; ++n) {
                u32 bf[RF_FRAG_WORDS];
                rf_frag_load(bf, KVs + 16 * n * VP + kk, VP, lane);
                rf_matrix_16x16x16<false>(o[n], af, bf);
            }
        }
    }

    // Epilogue: normalized output, or this split's partial result.
#pragma unroll
    for (int e = 0; e < CE; ++e) {
        const int r = r0 + 16 * wave + rf_frag_c_row(e, lane);
        if (r >= R) continue;
        if (part_o == nullptr) {
            const int i = r / G, h = kvh * G + r % G;
            float* dst = out + (((i64)b * Sq + i) * H + h) * D;
            const float inv = l_i[e] > 0.0f ? 1.0f / l_i[e] : 0.0f;
#pragma unroll
            for (int n = 0; n < NF; ++n) {
                const int d = 16 * n + col;
                if (d < D) dst[d] = o[n][e] * inv;
            }
        } else {
            const i64 prow = ((i64)split * gridDim.y + bk) * R + r;
            float* dst = part_o + prow * DMAX;
#pragma unroll
            for (int n = 0; n < NF; ++n) dst[16 * n + col] = o[n][e];
            if (col == 0) {
                part_ml[2 * prow] = m_i[e];
                part_ml[2 * prow + 1] = l_i[e];
            }
        }
    }
}

#define RF_FLASH_MATRIX_KERNEL(DMAX, CN, KVNAME, KV)                                                    \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) flash_attn_mx_d##DMAX##_k##CN##_##KVNAME(                      \
        const float* q, const KV* k, const KV* v, float* out, float* part_o, float* part_ml, int Sq,     \
        int Sk, int H, int KVH, int D, i64 kv_rows, float scale_log2, int causal, int window,           \
        int keys_per_split, const int* n_past) {                                                        \
        const int past = n_past ? n_past[0] : -1;                                                       \
        rf_grid_wait();                                                                                 \
        rf_grid_release();                                                                              \
        flash_attention_matrix<DMAX, CN, KV>(q, k, v, out, part_o, part_ml, Sq, Sk, H, KVH, D, kv_rows, \
                                             scale_log2, causal, window, keys_per_split, past);         \
    }
// Key tiles: 64 keys up to 128 dims, 32 at 256 (64 would take 78 KiB of shared memory).
RF_FLASH_MATRIX_KERNEL(64, 4, f32, float)
RF_FLASH_MATRIX_KERNEL(128, 4, f32, float)
RF_FLASH_MATRIX_KERNEL(256, 2, f32, float)
RF_FLASH_MATRIX_KERNEL(64, 4, f16, u16)
RF_FLASH_MATRIX_KERNEL(128, 4, f16, u16)
RF_FLASH_MATRIX_KERNEL(256, 2, f16, u16)
#endif
