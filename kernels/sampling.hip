// sampling.hip: one token per row of logits, with penalties, top-k, top-p, min-p, temperature
// and a Philox draw (the semantics are written once, in src/ops/sampling/mod.rs; the CPU
// reference is src/ops/sampling/cpu.rs).
//
// sample_f32: logits [rows, vocab] float32 (row r at logits + r * row_stride; row_stride 0:
//   every row reads the same logits), params u32 [rows, 16] (RfSampleParams below, written by
//   src/ops/sampling/gpu.rs), window int32 [rows, window_stride] (row r's penalty window: its
//   first window_len entries, in any order: only the counts matter, so a decode step may keep
//   it as a ring). Outputs: out_id int32 [rows], out_logprob float32 [rows] (NaN: the row's
//   logits hold NaN or +inf, or no finite value: the caller raises), top_id int32 /
//   top_logprob float32 [rows, n_top] (n_top may be 0). next_step (may be null; one row): a
//   decode step's [token id, position]: the draw's position is position + 1 (the new token's),
//   and the kernel leaves [the pick, position + 1] there, as argmax does.
//
// Launch: grid (parts, rows), block B threads (a multiple of the warp size, at most 1024;
// sample_f32_block512, the same kernel for blocks of at most 512, may take more registers).
// Each row is split into `parts` slices of S = B * RF_SAMPLE_ITEMS tokens, one block a slice,
// so that a decode step's one row is read by many multiprocessors at once (one block would
// read a 262,144-token row, 1 MiB, through one multiprocessor, and the slow path below reads
// it several times). The last block of a row to finish (a per-row arrival counter,
// `arrivals`: zero before the launch, left zero) merges the slices' summaries and picks, so
// one launch does it all. Workspace per row and slice: a 16-word summary, `cap` candidates
// (value, id) and n_top raw top values; parts * cap <= S, as the last block gathers every
// slice's candidates RF_SAMPLE_ITEMS a thread.
//
// Design. Every block of a row:
//   1. counts the row's window tokens that fall in its slice (shared-memory histogram), loads
//      its slice (RF_SAMPLE_ITEMS consecutive tokens a thread) and applies the penalties;
//   2. reduces the slice: its maximum z and argmax, sum exp(z - max) (top-p's temperature 1),
//      sum exp((z - max) / T) (the draw's), the raw maximum and sum exp(l - max) (log-softmax),
//      and whether any z is NaN or +inf;
//   3. picks its candidates: a histogram of z in bins of 1/8 nat below the slice's maximum
//      gives the most leading bins holding at most `cap` tokens (where the top bin alone holds
//      more, its tokens are binned again, finer); those tokens are written out,
//      and so is the largest z left out (t): the slice's candidates are exactly its tokens
//      with z > t, whatever the bin arithmetic rounds to;
//   4. with n_top > 0, its n_top largest raw logits (n_top rounds of a block argmax).
// The last block then
//   5. merges the summaries (maximum M, argmax a, log-sum-exp, the sums rescaled to M) and
//      the top-n lists; theta = the largest t of all slices: every token with z > theta is
//      among the candidates;
//   6. keeps the candidates with z > theta, and of those at most RF_SAMPLE_SORTED by the same
//      histogram (relative to M); what it keeps is exactly the tokens with z > theta', a
//      prefix of the sampling order, which it sorts by ranking (each item counts the items
//      before it, blockDim / n threads an item);
//   7. reads top-k, top-p and min-p off that prefix when their cut-off falls inside it (top-k
//      of at most its length; top-p reaching p * W inside it, W from the slices' sums or the
//      prefix; min-p whose floor is above theta'), and draws from it in id order with a
//      block-wide prefix sum (the fast path: every decode step with a usual top-k, or a
//      peaked distribution);
//   8. otherwise finds the cut-offs on the whole row (slow path: a top-k or nucleus longer
//      than the prefix, many ties): radix selection over the order-preserving bits of z then
//      the id, 8 bits a pass, with counts and 32.32 fixed-point weights in shared memory
//      (integer atomics, so the result does not depend on the order threads add in; a token
//      weighing under 2^-32 of the maximum's counts 0 towards the nucleus), then sums the
//      kept weight of each slice, takes the slice the draw falls in and scans it.
//      With no filter at all (top_k 0, top_p 1, min_p 0) the slices' own sums serve and only
//      one slice is read again.
// Every sum is a fixed-order tree (no float atomics), so the same inputs give the same pick on
// every run. No assumption of warp size: reductions and scans go through RF_WARP.
#include "common.h"

#define RF_SAMPLE_ITEMS 4           // consecutive tokens a thread loads from a slice
#define RF_SAMPLE_BINS 256          // candidate bins and radix digits (8 bits)
#define RF_SAMPLE_BINS_PER_NAT 8.0f // candidate bin width: 1/8 nat below a maximum
#define RF_SAMPLE_LEVELS 3          // candidate binnings, each 256 times finer than the last
#define RF_SAMPLE_SORTED 256        // most candidates the last block ranks
#define RF_SAMPLE_PARAM_WORDS 16
#define RF_SAMPLE_PART_WORDS 16
#define RF_SAMPLE_NONE 0x7fffffff   // id of "no token"
#define RF_SAMPLE_FIXED 4294967296.0f  // 2^32: weights in [0, 1] as 32.32 fixed point

// The words of params [row]: see src/ops/sampling/gpu.rs `param_words`.
struct RfSampleParams {
    float inv_temp;    // 0: greedy
    u32 top_k;         // 0: all
    float top_p;       // 1: off
    float ln_min_p;    // -inf: off
    float repeat, presence, frequency;
    u32 window_len;
    u32 seed_lo, seed_hi, seq_lo, seq_hi, position;
};

__device__ __forceinline__ RfSampleParams rf_sample_params(const u32* w) {
    RfSampleParams p;
    p.inv_temp = __int_as_float((int)w[0]);
    p.top_k = w[1];
    p.top_p = __int_as_float((int)w[2]);
    p.ln_min_p = __int_as_float((int)w[3]);
    p.repeat = __int_as_float((int)w[4]);
    p.presence = __int_as_float((int)w[5]);
    p.frequency = __int_as_float((int)w[6]);
    p.window_len = w[7];
    p.seed_lo = w[8];
    p.seed_hi = w[9];
    p.seq_lo = w[10];
    p.seq_hi = w[11];
    p.position = w[12];
    return p;
}

// Slice summary words (workspace, per row and slice).
#define RF_PART_MAX 0        // largest z
#define RF_PART_ARGMAX 1     // its id (lowest on ties)
#define RF_PART_SUM1 2       // sum exp(z - max)
#define RF_PART_SUMT 3       // sum exp((z - max) * inv_temp)
#define RF_PART_RAW_MAX 4    // largest raw logit
#define RF_PART_RAW_SUM 5    // sum exp(l - raw max)
#define RF_PART_LEFT_OUT 6   // largest z not among the candidates (-inf: none)
#define RF_PART_COUNT 7      // candidates written
#define RF_PART_BAD 8        // a z is NaN or +inf
#define RF_PART_KEPT 9       // the last block's kept weight of the slice (slow path)

// Philox4x32-10 (Salmon et al., SC 2011); src/ops/sampling/mod.rs `philox4x32_10` is the same.
__device__ __forceinline__ u32 rf_philox_first_word(u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        const u64 p0 = (u64)0xD2511F53u * c0;
        const u64 p1 = (u64)0xCD9E8D57u * c2;
        const u32 n0 = (u32)(p1 >> 32) ^ c1 ^ k0;
        const u32 n2 = (u32)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (u32)p1;
        c2 = n2;
        c3 = (u32)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c0;
}

// The penalized logit of a token seen `count` times (mod.rs `penalize`: the same fused
// multiply-adds, so no compiler contraction changes the rounding).
__device__ __forceinline__ float rf_penalize(float l, u32 count, const RfSampleParams& p) {
    if (count == 0) return l;
    const float pen = fmaf((float)count, p.frequency, p.presence);
    return l <= 0.0f ? fmaf(l, p.repeat, -pen) : l / p.repeat - pen;
}

// a before b in the sampling order: the larger value, then the lower id. NaN is never before.
__device__ __forceinline__ bool rf_before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

// Bits of z whose unsigned order is z's order (-0 and +0 alike).
__device__ __forceinline__ u32 rf_order_key(float z) {
    const u32 u = (u32)__float_as_int(z == 0.0f ? 0.0f : z);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float rf_order_value(u32 key) {
    return __int_as_float((int)((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key));
}

// --------------------------------------------------------------------------- block utilities

__device__ __forceinline__ float rf_shfl_f32(float v, int src) {
    return __int_as_float((int)rf_shfl_u32((u32)__float_as_int(v), src, RF_WARP));
}

// Inclusive scans over the calling warp's lanes. (The lane through rf_per_lane: each scan
// computes its own lane masks, rather than the compiler keeping them all live between the
// kernel's many scans.)
__device__ __forceinline__ u32 rf_warp_scan_u32(u32 v) {
    const int lane = rf_per_lane((int)(threadIdx.x % RF_WARP));
    for (int d = 1; d < RF_WARP; d <<= 1) {
        const u32 o = rf_shfl_u32(v, lane >= d ? lane - d : lane, RF_WARP);
        if (lane >= d) v += o;
    }
    return v;
}
__device__ __forceinline__ float rf_warp_scan_f32(float v) {
    const int lane = rf_per_lane((int)(threadIdx.x % RF_WARP));
    for (int d = 1; d < RF_WARP; d <<= 1) {
        const float o = rf_shfl_f32(v, lane >= d ? lane - d : lane);
        if (lane >= d) v += o;
    }
    return v;
}
__device__ __forceinline__ u64 rf_warp_scan_u64(u64 v) {
    const int lane = rf_per_lane((int)(threadIdx.x % RF_WARP));
    for (int d = 1; d < RF_WARP; d <<= 1) {
        const int src = lane >= d ? lane - d : lane;
        const u64 o = ((u64)rf_shfl_u32((u32)(v >> 32), src, RF_WARP) << 32) | rf_shfl_u32((u32)v, src, RF_WARP);
        if (lane >= d) v += o;
    }
    return v;
}

// Exclusive scan of v over the block (thread order); *total gets the sum. Every thread calls.
__device__ u32 rf_block_scan_u32(u32 v, u32* total) {
    __shared__ u32 warp_sum[1024 / 32];
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP, warps = blockDim.x / RF_WARP;
    const u32 incl = rf_warp_scan_u32(v);
    __syncthreads();
    if (lane == RF_WARP - 1) warp_sum[warp] = incl;
    __syncthreads();
    u32 before = 0, all = 0;
    for (int w = 0; w < warps; ++w) {
        if (w < warp) before += warp_sum[w];
        all += warp_sum[w];
    }
    *total = all;
    return before + incl - v;
}
__device__ float rf_block_scan_f32(float v, float* total) {
    __shared__ float warp_sum[1024 / 32];
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP, warps = blockDim.x / RF_WARP;
    const float incl = rf_warp_scan_f32(v);
    __syncthreads();
    if (lane == RF_WARP - 1) warp_sum[warp] = incl;
    __syncthreads();
    float before = 0.0f, all = 0.0f;
    for (int w = 0; w < warps; ++w) {
        if (w < warp) before += warp_sum[w];
        all += warp_sum[w];
    }
    *total = all;
    return before + (incl - v);
}
__device__ __forceinline__ u32 rf_block_sum_u32(u32 v) {
    u32 total;
    rf_block_scan_u32(v, &total);
    return total;
}

// The block's first (value, id) in the sampling order; every thread gets it.
__device__ void rf_block_first(float& v, int& id) {
    __shared__ float wv[1024 / 32];
    __shared__ int wi[1024 / 32];
    for (int m = RF_WARP / 2; m > 0; m >>= 1) {
        const float ov = rf_shfl_xor(v, m, RF_WARP);
        const int oi = rf_shfl_xor_int(id, m, RF_WARP);
        if (rf_before(ov, oi, v, id)) {
            v = ov;
            id = oi;
        }
    }
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP, warps = blockDim.x / RF_WARP;
    __syncthreads();
    if (lane == 0) {
        wv[warp] = v;
        wi[warp] = id;
    }
    __syncthreads();
    v = wv[0];
    id = wi[0];
    for (int w = 1; w < warps; ++w)
        if (rf_before(wv[w], wi[w], v, id)) {
            v = wv[w];
            id = wi[w];
        }
}

// In one exchange: the block's first (v, id) in the sampling order and the maxima of a, b and
// c (NaN ignored); every thread gets them.
__device__ void rf_block_first_max3(float& v, int& id, float& a, float& b, float& c) {
    __shared__ float wv[1024 / 32], wa[1024 / 32], wb[1024 / 32], wc[1024 / 32];
    __shared__ int wi[1024 / 32];
    for (int m = RF_WARP / 2; m > 0; m >>= 1) {
        const float ov = rf_shfl_xor(v, m, RF_WARP);
        const int oi = rf_shfl_xor_int(id, m, RF_WARP);
        if (rf_before(ov, oi, v, id)) {
            v = ov;
            id = oi;
        }
        a = fmaxf(a, rf_shfl_xor(a, m, RF_WARP));
        b = fmaxf(b, rf_shfl_xor(b, m, RF_WARP));
        c = fmaxf(c, rf_shfl_xor(c, m, RF_WARP));
    }
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP, warps = blockDim.x / RF_WARP;
    __syncthreads();
    if (lane == 0) {
        wv[warp] = v;
        wi[warp] = id;
        wa[warp] = a;
        wb[warp] = b;
        wc[warp] = c;
    }
    __syncthreads();
    v = wv[0];
    id = wi[0];
    a = wa[0];
    b = wb[0];
    c = wc[0];
    for (int w = 1; w < warps; ++w) {
        if (rf_before(wv[w], wi[w], v, id)) {
            v = wv[w];
            id = wi[w];
        }
        a = fmaxf(a, wa[w]);
        b = fmaxf(b, wb[w]);
        c = fmaxf(c, wc[w]);
    }
}

// In one exchange: the block's sums of a, b and c (a fixed order: deterministic).
__device__ void rf_block_sum3(float& a, float& b, float& c) {
    __shared__ float wa[1024 / 32], wb[1024 / 32], wc[1024 / 32];
    a = rf_group_sum<RF_WARP>(a);
    b = rf_group_sum<RF_WARP>(b);
    c = rf_group_sum<RF_WARP>(c);
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP, warps = blockDim.x / RF_WARP;
    __syncthreads();
    if (lane == 0) {
        wa[warp] = a;
        wb[warp] = b;
        wc[warp] = c;
    }
    __syncthreads();
    a = b = c = 0.0f;
    for (int w = 0; w < warps; ++w) {
        a += wa[w];
        b += wb[w];
        c += wc[w];
    }
}

// --------------------------------------------------------------------------- slice loading

// Thread t's RF_SAMPLE_ITEMS tokens of the slice at `begin`: raw l and penalized z (-inf past
// the vocabulary). `counts` (shared, a slice's worth) is the scratch of the window count.
__device__ void rf_sample_load(const float* x, int vocab, int begin, const RfSampleParams& p, bool penalized,
                               const int* win, u32* counts, float* l, float* z) {
    const int slice = blockDim.x * RF_SAMPLE_ITEMS;
    if (penalized) {
        for (int i = threadIdx.x; i < slice; i += blockDim.x) counts[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < (int)p.window_len; i += blockDim.x) {
            const int t = win[i];
            if (t >= begin && t < begin + slice && t < vocab) atomicAdd(&counts[t - begin], 1u);
        }
        __syncthreads();
    }
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        const int j = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
        l[e] = j < vocab ? x[j] : -RF_INF;
        z[e] = penalized && j < vocab ? rf_penalize(l[e], counts[j - begin], p) : l[e];
    }
    if (penalized) __syncthreads();  // the next call clears counts
}

// Candidate bin of z below the maximum `top`, in bins of 1 / scale nat: 0 is the top bin;
// the last bin takes everything further down.
__device__ __forceinline__ int rf_sample_bin(float top, float z, float scale) {
    const float d = (top - z) * scale;
    return d < (float)(RF_SAMPLE_BINS - 1) ? (int)d : RF_SAMPLE_BINS - 1;
}

// Of the finite items z[] (ids[]; all <= top), write to out_z / out_id those of the most
// leading bins that hold at most `cap` of them; returns how many, and in *left_out the largest
// z not written (-inf: none). The written ones are exactly the items with z > *left_out.
// Bins are 1/8 nat wide; where the top bin alone holds more than `cap` items (a flat
// distribution), its items are binned again 256 times finer, up to RF_SAMPLE_LEVELS times, so
// that a flat row still yields candidates and keeps the draw off the slow path.
__device__ int rf_sample_select(const float* z, const int* ids, float top, int cap, float* out_z, int* out_id,
                                float* left_out) {
    __shared__ u32 hist[RF_SAMPLE_BINS];
    __shared__ int cut_bins;
    int bin[RF_SAMPLE_ITEMS];
    bool alive[RF_SAMPLE_ITEMS];  // in the top bin of every level so far
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) alive[e] = z[e] > -RF_INF;
    float scale = RF_SAMPLE_BINS_PER_NAT;
    int cut = 0;
    for (int level = 0;; ++level) {
#pragma unroll
        for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) bin[e] = alive[e] ? rf_sample_bin(top, z[e], scale) : -1;
        for (int i = threadIdx.x; i < RF_SAMPLE_BINS; i += blockDim.x) hist[i] = 0;
        __syncthreads();
#pragma unroll
        for (int e = 0; e < RF_SAMPLE_ITEMS; ++e)
            if (bin[e] >= 0) atomicAdd(&hist[bin[e]], 1u);
        __syncthreads();
        if (threadIdx.x < RF_WARP) {
            // cut = how many leading bins have an inclusive count <= cap (a prefix of the bins).
            const int per = RF_SAMPLE_BINS / RF_WARP, b0 = threadIdx.x * per;
            u32 mine = 0;
            for (int b = 0; b < per; ++b) mine += hist[b0 + b];
            u32 acc = rf_warp_scan_u32(mine) - mine;
            int fits = 0;
            for (int b = 0; b < per; ++b) {
                acc += hist[b0 + b];
                fits += acc <= (u32)cap;
            }
            for (int m = RF_WARP / 2; m > 0; m >>= 1) fits += rf_shfl_xor_int(fits, m, RF_WARP);
            if (threadIdx.x == 0) cut_bins = fits;
        }
        __syncthreads();
        cut = cut_bins;
        // (every thread reads the same cut and hist[0]: the loop's trip count is uniform)
        if (cut > 0 || hist[0] == 0 || level + 1 == RF_SAMPLE_LEVELS) break;
        __syncthreads();  // hist and cut_bins are read before the next level clears them
#pragma unroll
        for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) alive[e] = bin[e] == 0;
        scale *= (float)RF_SAMPLE_BINS;
    }
    u32 mine = 0;
    float out = -RF_INF;
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        if (!(z[e] > -RF_INF)) continue;
        if (bin[e] >= 0 && bin[e] < cut) ++mine;
        else out = fmaxf(out, z[e]);
    }
    *left_out = rf_block_max(out);
    u32 total;
    u32 at = rf_block_scan_u32(mine, &total);
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e)
        if (bin[e] >= 0 && bin[e] < cut) {
            out_z[at] = z[e];
            out_id[at] = ids[e];
            ++at;
        }
    return (int)total;
}

// --------------------------------------------------------------------------- the last block

// What the last block of a row works with.
struct RfSampleRow {
    const float* x;  // the row's raw logits
    int vocab, parts;
    RfSampleParams p;
    bool penalized;
    const int* win;
    u32* counts;   // shared scratch of rf_sample_load
    float* stats;  // the row's slice summaries [parts][RF_SAMPLE_PART_WORDS]
    float top;     // M, the largest z
    int first;     // a, the argmax
};

__device__ __forceinline__ float rf_stat(const float* stats, int part, int word) {
    return rf_ld_l2(stats + part * RF_SAMPLE_PART_WORDS + word);
}

// A cut: the tokens at or before (z, id) in the sampling order are kept.
struct RfCut {
    float z;
    int id;
};
__device__ __forceinline__ bool rf_kept(float z, int id, RfCut c) { return z > c.z || (z == c.z && id <= c.id); }
// The cut keeping what both keep.
__device__ __forceinline__ RfCut rf_stricter(RfCut a, RfCut b) { return rf_before(a.z, a.id, b.z, b.id) ? a : b; }
__device__ __forceinline__ RfCut rf_cut_all() {
    RfCut c;
    c.z = -RF_INF;
    c.id = RF_SAMPLE_NONE;
    return c;
}
__device__ __forceinline__ bool rf_is_all(RfCut c) { return c.z == -RF_INF && c.id == RF_SAMPLE_NONE; }

// Weight of a finite z in 32.32 fixed point: exp(z - M) <= 1.
__device__ __forceinline__ u64 rf_fixed_weight(float z, float top) {
    return (u64)(expf(z - top) * RF_SAMPLE_FIXED);
}

// One pass of radix selection over the whole row. Of the finite tokens that `within` keeps
// and whose field (the order key of z; with by_id, the id of those whose key is key_fixed)
// matches `prefix` above bit shift + 8, histogram the 8-bit digit at `shift`: counts, and
// measures (1 each with `unit`, else fixed-point exp(z - M)). Walking the digits in the
// sampling order (keys descending, ids ascending), find the digit where the running measure
// first reaches *need (with fraction >= 0, *need becomes ceil(fraction * the pass's total)
// first). Returns the digit, or -1 if the total falls short; *before gets the measure of the
// digits before it, *count and *measure the digit's own.
__device__ int rf_radix_pass(const RfSampleRow& r, RfCut within, bool by_id, u32 key_fixed, u32 prefix, int shift,
                             bool unit, float fraction, u64* need, u64* before, u32* count, u64* measure) {
    __shared__ u32 hc[RF_SAMPLE_BINS];
    __shared__ u64 hm[RF_SAMPLE_BINS];
    __shared__ int found;
    __shared__ u64 found_before, need_used;
    for (int i = threadIdx.x; i < RF_SAMPLE_BINS; i += blockDim.x) {
        hc[i] = 0;
        hm[i] = 0;
    }
    if (threadIdx.x == 0) found = -1;
    __syncthreads();
    const int slice = blockDim.x * RF_SAMPLE_ITEMS;
    const u32 high = shift >= 24 ? 0u : ~0u << (shift + 8);
    for (int part = 0; part < r.parts; ++part) {
        float l[RF_SAMPLE_ITEMS], z[RF_SAMPLE_ITEMS];
        const int begin = part * slice;
        rf_sample_load(r.x, r.vocab, begin, r.p, r.penalized, r.win, r.counts, l, z);
#pragma unroll
        for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
            const int id = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
            if (!(z[e] > -RF_INF) || !rf_kept(z[e], id, within)) continue;
            const u32 key = rf_order_key(z[e]);
            if (by_id && key != key_fixed) continue;
            const u32 field = by_id ? (u32)id : key;
            if ((field & high) != (prefix & high)) continue;
            const int digit = (field >> shift) & 0xff;
            atomicAdd(&hc[digit], 1u);
            atomicAdd(&hm[digit], unit ? (u64)1 : rf_fixed_weight(z[e], r.top));
        }
    }
    __syncthreads();
    if (threadIdx.x < RF_WARP) {
        const int per = RF_SAMPLE_BINS / RF_WARP, q0 = threadIdx.x * per;
        u64 mine = 0;
        for (int q = 0; q < per; ++q) mine += hm[by_id ? q0 + q : RF_SAMPLE_BINS - 1 - (q0 + q)];
        const u64 incl = rf_warp_scan_u64(mine);
        u64 want = *need;
        if (fraction >= 0.0f) {
            const u64 total = ((u64)rf_shfl_u32((u32)(incl >> 32), RF_WARP - 1, RF_WARP) << 32) |
                              rf_shfl_u32((u32)incl, RF_WARP - 1, RF_WARP);
            want = (u64)ceil((double)fraction * (double)total);
            if (want == 0) want = 1;
        }
        u64 acc = incl - mine;
        for (int q = 0; q < per; ++q) {
            const int d = by_id ? q0 + q : RF_SAMPLE_BINS - 1 - (q0 + q);
            if (acc < want && acc + hm[d] >= want) {
                found = d;
                found_before = acc;
            }
            acc += hm[d];
        }
        if (threadIdx.x == 0) need_used = want;
    }
    __syncthreads();
    const int d = found;
    *need = need_used;
    if (d >= 0) {
        *before = found_before;
        *count = hc[d];
        *measure = hm[d];
    }
    __syncthreads();  // the next pass clears the histograms
    return d;
}

// The cut that, together with `within`, keeps the shortest prefix of the sampling order whose
// measure (unit: a count; else fixed-point exp(z - M)) reaches `need`, or with fraction >= 0,
// fraction times the measure of all `within` keeps. `within` itself when that needs it all.
__device__ RfCut rf_select_cut(const RfSampleRow& r, RfCut within, bool unit, u64 need, float fraction) {
    u32 key = 0, count = 0;
    u64 before = 0, measure = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        const int d = rf_radix_pass(r, within, false, 0, key, shift, unit, shift == 24 ? fraction : -1.0f, &need,
                                    &before, &count, &measure);
        if (d < 0) return within;
        need -= before;
        key |= (u32)d << shift;
    }
    // The tokens of this key share z and so their weight: take as many of them, lowest ids
    // first, as the rest of `need` asks for.
    const u64 each = measure / count;
    u64 take = unit ? need : (need + each - 1) / each;
    if (take < 1) take = 1;
    if (take > count) take = count;
    u32 id = 0;
    need = take;
    for (int shift = 16; shift >= 0; shift -= 8) {
        const int d = rf_radix_pass(r, within, true, key, id, shift, true, -1.0f, &need, &before, &count, &measure);
        if (d < 0) break;  // not reached: take <= the key's count
        need -= before;
        id |= (u32)d << shift;
    }
    RfCut c;
    c.z = rf_order_value(key);
    c.id = (int)id;
    return c;
}

// The smallest of the block's values of i (an index below 2^24, or RF_SAMPLE_NONE: none).
__device__ __forceinline__ int rf_block_min_index(int i) {
    const float none = (float)(1 << 30);  // indices below 2^24 are exact in float
    const float m = -rf_block_max(-(i == RF_SAMPLE_NONE ? none : (float)i));
    return m >= none ? RF_SAMPLE_NONE : (int)m;
}

// Of w[i * stride] (i < n, all >= 0): the first i of positive weight whose inclusive prefix
// sum exceeds u * the total (*target gets that), else the last of positive weight; -1 when
// all are 0. *before gets the prefix sum before it. The sums run in a fixed order (the same
// pick every run); asking for positive weight keeps a rounding step between two threads'
// chunks from landing on a token of weight 0.
__device__ int rf_pick_prefix(const float* w, int n, int stride, float u, float* target, float* before) {
    __shared__ float before_pick;
    const int per = (n + blockDim.x - 1) / blockDim.x, i0 = threadIdx.x * per;
    float mine = 0.0f;
    int last = -1;
    for (int q = 0; q < per; ++q) {
        const int i = i0 + q;
        if (i >= n) break;
        const float v = w[i * stride];
        mine += v;
        if (v > 0.0f) last = i;
    }
    float total;
    const float start = rf_block_scan_f32(mine, &total);
    const float want = u * total;
    int above = RF_SAMPLE_NONE;
    float acc = start;
    for (int q = 0; q < per; ++q) {
        const int i = i0 + q;
        if (i >= n) break;
        const float v = w[i * stride];
        acc += v;
        if (v > 0.0f && acc > want && above == RF_SAMPLE_NONE) above = i;
    }
    int pick = rf_block_min_index(above);
    const int last_positive = (int)rf_block_max((float)last);
    if (pick == RF_SAMPLE_NONE) pick = last_positive;
    acc = start;
    for (int q = 0; q < per; ++q) {
        const int i = i0 + q;
        if (i >= n) break;
        if (i == pick) before_pick = acc;
        acc += w[i * stride];
    }
    __syncthreads();
    *target = want;
    *before = before_pick;
    __syncthreads();  // before_pick is read before anyone calls again
    return pick;
}

// The draw over the whole row (the slow path): the kept weight of each slice (with `all`, the
// slices' own sums), the slice the draw falls in, then the token inside it.
__device__ int rf_draw_row(const RfSampleRow& r, RfCut cut, bool all, float u) {
    const int slice = blockDim.x * RF_SAMPLE_ITEMS;
    if (all) {
        for (int part = threadIdx.x; part < r.parts; part += blockDim.x) {
            const float m = rf_stat(r.stats, part, RF_PART_MAX);
            r.stats[part * RF_SAMPLE_PART_WORDS + RF_PART_KEPT] =
                m > -RF_INF ? rf_stat(r.stats, part, RF_PART_SUMT) * expf((m - r.top) * r.p.inv_temp) : 0.0f;
        }
    } else {
        for (int part = 0; part < r.parts; ++part) {
            float l[RF_SAMPLE_ITEMS], z[RF_SAMPLE_ITEMS];
            const int begin = part * slice;
            rf_sample_load(r.x, r.vocab, begin, r.p, r.penalized, r.win, r.counts, l, z);
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
                const int id = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
                if (z[e] > -RF_INF && rf_kept(z[e], id, cut)) s += expf((z[e] - r.top) * r.p.inv_temp);
            }
            s = rf_block_sum(s);
            if (threadIdx.x == 0) r.stats[part * RF_SAMPLE_PART_WORDS + RF_PART_KEPT] = s;
        }
    }
    __syncthreads();
    float target, before;
    const int part = rf_pick_prefix(r.stats + RF_PART_KEPT, r.parts, RF_SAMPLE_PART_WORDS, u, &target, &before);
    if (part < 0) return r.first;
    float l[RF_SAMPLE_ITEMS], z[RF_SAMPLE_ITEMS], w[RF_SAMPLE_ITEMS];
    const int begin = part * slice;
    rf_sample_load(r.x, r.vocab, begin, r.p, r.penalized, r.win, r.counts, l, z);
    float mine = 0.0f, last = -1.0f;
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        const int id = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
        w[e] = z[e] > -RF_INF && (all || rf_kept(z[e], id, cut)) ? expf((z[e] - r.top) * r.p.inv_temp) : 0.0f;
        mine += w[e];
        if (w[e] > 0.0f) last = (float)id;
    }
    float total;
    float acc = rf_block_scan_f32(mine, &total);
    const float want = target - before;
    int above = RF_SAMPLE_NONE;
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        acc += w[e];
        if (w[e] > 0.0f && acc > want && above == RF_SAMPLE_NONE) above = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
    }
    const int pick = rf_block_min_index(above);
    const int last_positive = (int)rf_block_max(last);
    if (pick != RF_SAMPLE_NONE) return pick;
    return last_positive < 0 ? r.first : last_positive;
}

// rank[i] (shared, n <= RF_SAMPLE_SORTED) = how many of the n items (z[], id[]) come before
// item i: in the sampling order, or with by_id by id. Every thread helps: blockDim / n threads
// split the comparisons of an item.
__device__ void rf_rank(const float* z, const int* id, int n, bool by_id, u32* rank) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) rank[i] = 0;
    __syncthreads();
    const int share = n > 0 && (int)blockDim.x > n ? (int)blockDim.x / n : 1;
    const int at_once = (int)blockDim.x / share;
    for (int base = 0; base < n; base += at_once) {
        const int i = base + (int)threadIdx.x / share, sub = (int)threadIdx.x % share;
        if ((int)threadIdx.x / share < at_once && i < n) {
            u32 before = 0;
            for (int j = sub; j < n; j += share)
                before += by_id ? id[j] < id[i] : rf_before(z[j], id[j], z[i], id[i]);
            atomicAdd(&rank[i], before);
        }
    }
    __syncthreads();
}

// Steps 6 to 8 of the header: the pick of a row sampled at temperature > 0.
__device__ int rf_sample_pick(const RfSampleRow& r, const float* cand_z, const int* cand_id, int cap, float theta,
                              float sum1, float u) {
    __shared__ float list_z[RF_SAMPLE_SORTED], sorted_z[RF_SAMPLE_SORTED], prefix1[RF_SAMPLE_SORTED],
        draw_w[RF_SAMPLE_SORTED];
    __shared__ int list_id[RF_SAMPLE_SORTED], sorted_id[RF_SAMPLE_SORTED], draw_id[RF_SAMPLE_SORTED];
    __shared__ u32 rank[RF_SAMPLE_SORTED];
    // 6. The candidates above theta, then at most RF_SAMPLE_SORTED of them, ranked.
    float z[RF_SAMPLE_ITEMS];
    int ids[RF_SAMPLE_ITEMS];
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        const int g = threadIdx.x * RF_SAMPLE_ITEMS + e, part = g / cap, k = g % cap;
        z[e] = -RF_INF;
        ids[e] = RF_SAMPLE_NONE;
        if (part < r.parts && k < __float_as_int(rf_stat(r.stats, part, RF_PART_COUNT))) {
            const float v = rf_ld_l2(cand_z + g);
            if (v > theta) {
                z[e] = v;
                ids[e] = (int)rf_ld_l2((const u32*)cand_id + g);
            }
        }
    }
    float left_out;
    const int n = rf_sample_select(z, ids, r.top, RF_SAMPLE_SORTED, list_z, list_id, &left_out);
    const float theta2 = fmaxf(theta, left_out);
    __syncthreads();
    rf_rank(list_z, list_id, n, false, rank);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        sorted_z[rank[i]] = list_z[i];
        sorted_id[rank[i]] = list_id[i];
    }
    __syncthreads();
    // sorted_z/sorted_id[0, n) is the order's prefix of the tokens with z > theta2 (all
    // finite tokens when theta2 is -inf).
    // 7. The cut-offs, where they fall inside the prefix.
    const bool complete = !(theta2 > -RF_INF);
    const u32 vocab = (u32)r.vocab;
    const u32 k = r.p.top_k == 0 || r.p.top_k >= vocab ? vocab : r.p.top_k;
    int c = complete ? n : RF_SAMPLE_NONE;  // RF_SAMPLE_NONE: past the prefix
    bool unknown = false;
    if (k < vocab && (int)k <= n) c = min(c, (int)k);
    if (r.p.ln_min_p > -RF_INF) {
        const float floor_z = r.top + r.p.ln_min_p;
        if (floor_z > theta2) {
            u32 mine = 0;
            for (int i = threadIdx.x; i < n; i += blockDim.x) mine += sorted_z[i] >= floor_z;
            c = min(c, (int)rf_block_sum_u32(mine));
        }
    }
    if (r.p.top_p < 1.0f) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) prefix1[i] = expf(sorted_z[i] - r.top);
        __syncthreads();
        // Inclusive prefix sums in place, a contiguous chunk a thread.
        const int per = (n + blockDim.x - 1) / blockDim.x, i0 = threadIdx.x * per;
        float mine = 0.0f;
        for (int q = 0; q < per && i0 + q < n; ++q) mine += prefix1[i0 + q];
        float total;
        float acc = rf_block_scan_f32(mine, &total);
        for (int q = 0; q < per && i0 + q < n; ++q) {
            acc += prefix1[i0 + q];
            prefix1[i0 + q] = acc;
        }
        __syncthreads();
        // The first index of the prefix whose inclusive sum reaches `want` (RF_SAMPLE_NONE: none
        // below lim).
        auto reach_of = [&](float want, int lim) {
            int reach = RF_SAMPLE_NONE;
            for (int i = threadIdx.x; i < lim; i += blockDim.x)
                if (prefix1[i] >= want) reach = min(reach, i);
            return rf_block_min_index(reach);
        };
        float w_all = 0.0f;
        bool known = true;
        if (k >= vocab && !complete) w_all = sum1;
        else if ((int)k <= n) w_all = prefix1[k - 1];
        else if (complete) w_all = prefix1[n - 1];
        else known = false;
        if (known) {
            const int lim = min((int)k, n);
            const int reach = reach_of(r.p.top_p * w_all, lim);
            if (reach < lim) c = min(c, reach + 1);
        } else if (n == 0) {
            unknown = true;  // no prefix to bound the weight with (all tokens tied at the top)
        } else {
            // Top-k reaches past the prefix: its weight W is the prefix's and at most k - n more
            // tokens', each at most exp(theta2 - M) (they are not above theta2), and at most the
            // row's. The nucleus ends between the reaches of top_p times those bounds; where
            // they agree (a peaked row: the tokens past the prefix weigh nothing), or the other
            // filters cut no later than the lower one, the cut-off is known.
            const float lo = prefix1[n - 1];
            const float hi = fminf(sum1, lo + (float)(k - (u32)n) * expf(theta2 - r.top));
            const int reach_lo = reach_of(r.p.top_p * lo, n), reach_hi = reach_of(r.p.top_p * hi, n);
            if (reach_hi < n && reach_lo == reach_hi) c = min(c, reach_lo + 1);
            else if (c > reach_lo + 1) unknown = true;
        }
    }
    if (!unknown && c <= n) {
        // The fast path: draw from the prefix's first c tokens in id order.
        rf_rank(sorted_z, sorted_id, c, true, rank);
        for (int i = threadIdx.x; i < c; i += blockDim.x) {
            draw_w[rank[i]] = expf((sorted_z[i] - r.top) * r.p.inv_temp);
            draw_id[rank[i]] = sorted_id[i];
        }
        __syncthreads();
        float target, before;
        const int i = rf_pick_prefix(draw_w, c, 1, u, &target, &before);
        return i < 0 ? r.first : draw_id[i];
    }
    // 8. The slow path: the cut-offs on the whole row.
    RfCut cut = rf_cut_all();
    if (k < vocab) {
        if ((int)k <= n) {
            cut.z = sorted_z[k - 1];
            cut.id = sorted_id[k - 1];
        } else {
            cut = rf_select_cut(r, cut, true, (u64)k, -1.0f);
        }
    }
    if (r.p.top_p < 1.0f) cut = rf_stricter(cut, rf_select_cut(r, cut, false, 0, r.p.top_p));
    if (r.p.ln_min_p > -RF_INF) {
        RfCut floor_cut;
        floor_cut.z = r.top + r.p.ln_min_p;
        floor_cut.id = RF_SAMPLE_NONE;
        cut = rf_stricter(cut, floor_cut);
    }
    return rf_draw_row(r, cut, rf_is_all(cut), u);
}

// ----------------------------------------------------------------------------- the kernel

// The kernel's body, for blocks of at most MAX_BLOCK threads.
template <int MAX_BLOCK>
__device__ __forceinline__ void rf_sample_rows(const float* logits, i64 row_stride, int vocab, const u32* params,
                                               const int* window, int window_stride, int* out_id,
                                               float* out_logprob, int* top_id, float* top_logprob, int n_top,
                                               int* next_step, u32* arrivals, float* part_stats, float* cand_z,
                                               int* cand_id, int cap, float* part_top_v, int* part_top_id) {
    rf_grid_wait();
    rf_grid_release();
    __shared__ u32 counts[MAX_BLOCK * RF_SAMPLE_ITEMS];
    __shared__ int last_block;
    const int part = blockIdx.x, parts = gridDim.x, slice = blockDim.x * RF_SAMPLE_ITEMS;
    const i64 row = blockIdx.y;
    const float* x = logits + row * row_stride;
    const RfSampleParams p = rf_sample_params(params + row * RF_SAMPLE_PARAM_WORDS);
    const bool penalized = p.window_len > 0 && (p.repeat != 1.0f || p.presence != 0.0f || p.frequency != 0.0f);
    const int* win = window + row * window_stride;
    float* stats = part_stats + row * parts * RF_SAMPLE_PART_WORDS;
    const i64 mine = row * parts + part;  // this block's workspace slot

    // 1. The slice, penalized.
    const int begin = part * slice;
    float l[RF_SAMPLE_ITEMS], z[RF_SAMPLE_ITEMS];
    int ids[RF_SAMPLE_ITEMS];
    rf_sample_load(x, vocab, begin, p, penalized, win, counts, l, z);
    // 2. Its summary.
    float top = -RF_INF, raw_top = -RF_INF, bad = 0.0f;
    int first = RF_SAMPLE_NONE;
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        ids[e] = begin + threadIdx.x * RF_SAMPLE_ITEMS + e;
        if (ids[e] >= vocab) continue;
        if (z[e] != z[e] || z[e] == RF_INF) bad = 1.0f;
        if (rf_before(z[e], ids[e], top, first)) {
            top = z[e];
            first = ids[e];
        }
        raw_top = fmaxf(raw_top, l[e]);
    }
    float unused = 0.0f;
    rf_block_first_max3(top, first, raw_top, bad, unused);
    float sum1 = 0.0f, sumt = 0.0f, raw_sum = 0.0f;
#pragma unroll
    for (int e = 0; e < RF_SAMPLE_ITEMS; ++e) {
        if (z[e] > -RF_INF) {
            sum1 += expf(z[e] - top);
            sumt += expf((z[e] - top) * p.inv_temp);
        }
        if (l[e] > -RF_INF) raw_sum += expf(l[e] - raw_top);
    }
    rf_block_sum3(sum1, sumt, raw_sum);
    // 3. Its candidates (a greedy pick needs none).
    float left_out = -RF_INF;
    int n_cand = 0;
    if (p.inv_temp > 0.0f) n_cand = rf_sample_select(z, ids, top, cap, cand_z + mine * cap, cand_id + mine * cap, &left_out);
    // 4. Its largest raw logits: each round takes the first one after the last round's.
    float prev_v = 0.0f;
    int prev_id = 0;
    for (int k = 0; k < n_top; ++k) {
        float v = -RF_INF;
        int id = RF_SAMPLE_NONE;
#pragma unroll
        for (int e = 0; e < RF_SAMPLE_ITEMS; ++e)
            if (ids[e] < vocab && (k == 0 || rf_before(prev_v, prev_id, l[e], ids[e])) && rf_before(l[e], ids[e], v, id)) {
                v = l[e];
                id = ids[e];
            }
        rf_block_first(v, id);
        if (threadIdx.x == 0) {
            part_top_v[mine * n_top + k] = v;
            part_top_id[mine * n_top + k] = id == RF_SAMPLE_NONE ? -1 : id;
        }
        prev_v = v;
        prev_id = id;
    }
    if (threadIdx.x == 0) {
        float* s = stats + part * RF_SAMPLE_PART_WORDS;
        s[RF_PART_MAX] = top;
        s[RF_PART_ARGMAX] = __int_as_float(first);
        s[RF_PART_SUM1] = sum1;
        s[RF_PART_SUMT] = sumt;
        s[RF_PART_RAW_MAX] = raw_top;
        s[RF_PART_RAW_SUM] = raw_sum;
        s[RF_PART_LEFT_OUT] = left_out;
        s[RF_PART_COUNT] = __int_as_float(n_cand);
        s[RF_PART_BAD] = bad;
    }
    // The last block of the row to get here goes on; its counter goes back to 0 for the next launch.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last_block = atomicAdd(&arrivals[row], 1u) == (u32)(parts - 1);
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    if (threadIdx.x == 0) arrivals[row] = 0;

    // 5. Merge the summaries.
    RfSampleRow r;
    r.x = x;
    r.vocab = vocab;
    r.parts = parts;
    r.p = p;
    r.penalized = penalized;
    r.win = win;
    r.counts = counts;
    r.stats = stats;
    top = -RF_INF;
    first = RF_SAMPLE_NONE;
    raw_top = -RF_INF;
    bad = 0.0f;
    float theta = -RF_INF;
    for (int q = threadIdx.x; q < parts; q += blockDim.x) {
        const float m = rf_stat(stats, q, RF_PART_MAX);
        const int a = __float_as_int(rf_stat(stats, q, RF_PART_ARGMAX));
        if (rf_before(m, a, top, first)) {
            top = m;
            first = a;
        }
        raw_top = fmaxf(raw_top, rf_stat(stats, q, RF_PART_RAW_MAX));
        bad = fmaxf(bad, rf_stat(stats, q, RF_PART_BAD));
        theta = fmaxf(theta, rf_stat(stats, q, RF_PART_LEFT_OUT));
    }
    rf_block_first_max3(top, first, raw_top, bad, theta);
    raw_sum = 0.0f;
    sum1 = 0.0f;
    for (int q = threadIdx.x; q < parts; q += blockDim.x) {
        const float rm = rf_stat(stats, q, RF_PART_RAW_MAX), m = rf_stat(stats, q, RF_PART_MAX);
        if (rm > -RF_INF) raw_sum += rf_stat(stats, q, RF_PART_RAW_SUM) * expf(rm - raw_top);
        if (m > -RF_INF) sum1 += rf_stat(stats, q, RF_PART_SUM1) * expf(m - top);
    }
    float unused_sum = 0.0f;
    rf_block_sum3(raw_sum, sum1, unused_sum);
    const float lse = raw_top + logf(raw_sum);
    const bool error = bad > 0.0f || !(top > -RF_INF);
    const float nan = __int_as_float(0x7fc00000);
    r.top = top;
    r.first = first;
    // The row's largest raw logits, merged the same way as a slice's.
    float prev_v2 = 0.0f;
    int prev_id2 = 0;
    for (int k = 0; k < n_top; ++k) {
        float v = -RF_INF;
        int id = RF_SAMPLE_NONE;
        for (int g = threadIdx.x; g < parts * n_top; g += blockDim.x) {
            const i64 at = row * parts * n_top + g;
            const int gi = (int)rf_ld_l2((const u32*)part_top_id + at);
            if (gi < 0) continue;
            const float gv = rf_ld_l2(part_top_v + at);
            if ((k == 0 || rf_before(prev_v2, prev_id2, gv, gi)) && rf_before(gv, gi, v, id)) {
                v = gv;
                id = gi;
            }
        }
        rf_block_first(v, id);
        if (threadIdx.x == 0) {
            top_id[row * n_top + k] = error || id == RF_SAMPLE_NONE ? -1 : id;
            top_logprob[row * n_top + k] = error ? nan : v - lse;
        }
        prev_v2 = v;
        prev_id2 = id;
    }
    int pick = error ? 0 : first;
    if (!error && p.inv_temp > 0.0f) {
        const u32 position = next_step != nullptr ? (u32)next_step[1] + 1 : p.position;
        const u32 word = rf_philox_first_word(position, p.seq_lo, p.seq_hi, 0, p.seed_lo, p.seed_hi);
        const float u = (float)(word >> 8) * (1.0f / 16777216.0f);
        pick = rf_sample_pick(r, cand_z + row * parts * cap, cand_id + row * parts * cap, cap, theta, sum1, u);
    }
    __syncthreads();  // every thread has read next_step
    if (threadIdx.x == 0) {
        out_id[row] = pick;
        out_logprob[row] = error ? nan : x[pick] - lse;
        if (next_step != nullptr) {
            next_step[0] = pick;
            next_step[1] += 1;
        }
    }
}

// One body, two bounds on the block: the bound caps the registers a thread may take (at 1024
// threads, 64 on NVIDIA), and src/ops/sampling/gpu.rs takes the 512 one for blocks that fit it
// (Tuning::sample_block).
#define RF_SAMPLE_ENTRY(name, max_block)                                                                         \
    RF_KERNEL void RF_LAUNCH_BOUNDS(max_block)                                                                  \
    name(const float* logits, i64 row_stride, int vocab, const u32* params, const int* window, int window_stride, \
         int* out_id, float* out_logprob, int* top_id, float* top_logprob, int n_top, int* next_step,            \
         u32* arrivals, float* part_stats, float* cand_z, int* cand_id, int cap, float* part_top_v,              \
         int* part_top_id) {                                                                                     \
        rf_sample_rows<max_block>(logits, row_stride, vocab, params, window, window_stride, out_id, out_logprob,  \
                                  top_id, top_logprob, n_top, next_step, arrivals, part_stats, cand_z, cand_id, \
                                  cap, part_top_v, part_top_id);                                                 \
    }
RF_SAMPLE_ENTRY(sample_f32, 1024)
RF_SAMPLE_ENTRY(sample_f32_block512, 512)
