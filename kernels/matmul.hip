// matmul.hip: out = x @ W^T with W kept in its GGUF type in device memory.
//
//   x: [m, k] float32 row-major; W: [n, k] rows of row_bytes bytes in the GGUF layout
//   (quants.h); out: [m, n] float32. Weights are dequantized in registers, never in memory;
//   accumulation is float32.
//
// matvec_<type>: the decode path (m <= MATVEC_MAX_M). Each aligned group of 32 lanes owns one
//   weight row: lane l takes 32-element chunks l, l + 32, ... of that row, dequantizes each
//   once and dots it with all m rows of x; a 32-lane butterfly sums the partials. When
//   `staged` is set, the block first copies x into shared memory, each 32-element chunk
//   padded to 33 floats, so that the lanes (each reading its own chunk) hit 32 different
//   banks; otherwise x is read from global memory (when x does not fit in shared memory).
//   Float weights with k % 4 == 0 take a third path: lanes read consecutive float4 pieces of
//   the row and of x (coalesced), no staging.
//   Launch: grid (ceil(n / (block / 32))), block 256 (a multiple of 32 and of the warp size),
//   dynamic shared memory m * ceil(k / 32) * 33 floats when staged, else 0.
//
// matvec_fast_q4_0 / matvec_fast_q8_0: the decode path for m = 1 and the two types the
//   benchmark models use (suffix _r<MV_ROWS>: 1, 2 or 4 rows per block). A block of
//   MV_GROUPS x 32 threads owns MV_ROWS consecutive weight
//   rows, and its 32-lane groups split k between them: group g takes stripes g, g + MV_GROUPS,
//   ..., a stripe being 32 lanes x 4 quant bytes (Q4_0: 8 blocks, 4 lanes per block; Q8_0: 4
//   blocks, 8 lanes per block). Per stripe a lane loads the x values its 4 bytes multiply (two
//   or one float4, shared by the MV_ROWS rows), and per row its block's scale and 4 quant bytes
//   (split device layout, quants.h: a group's quant loads are 128 contiguous bytes). Quants
//   become floats exactly by the 2^23 trick (the byte in the low mantissa bits of 2^23, minus
//   2^23 plus the type's offset). Group partials are summed by a 32-lane butterfly, then
//   across groups through shared memory; the sum order differs from the CPU's only by float32
//   rounding. Launch: grid (ceil(n / MV_ROWS)), block MV_GROUPS x 32, no dynamic shared memory;
//   k % 32 == 0 (always so for these types) and row_bytes % 4 == 0 (k / 32 even).
//
// matvec_multi_<type>_r<R>, matvec_swiglu_<type>: fused m = 1 kernels of the decode step
//   built on matvec_fast's sums (see their comments below).
//
// matvec_wide_*: the default m = 1 kernels of Q4_0 and Q8_0 (16-byte quant loads, x loaded
//   once per block for all its rows; plain, multi and swiglu forms); the matvec_fast family
//   above stays for comparison (ROCMFORGE_MATVEC_KERNEL=v5). See their comment below.
//   matvec_wide_*_q8x_*: the same with x quantized to 8 bits in registers and integer dot
//   products, the model's decode path (rocmforge.ops.matmul keeps the float32 ones). The
//   multi and swiglu forms can also take an RMS norm's weight and fold the norm in.
//
// matvec_qkv_rope_q8x_*: the model's m = 1 q/k/v projections with their rope and KV-cache
//   append in the epilogue (see its comment below).
//
// matvec_stream_swiglu_*: the model's m = 1 gate/up + SwiGLU for rows of 2048 values or more
//   (persistent blocks, the next row group's loads in flight; see its comment below).
//
// matmul_tiled_<type>: the prefill path. A block computes a 64 x 64 tile of out, stepping
//   over k by 64: x (64 x 64) and the dequantized W tile (64 x 64) go to shared memory
//   (k-major), and each of the 256 threads accumulates a 4 x 4 sub-tile.
//   Launch: grid (ceil(n / 64), ceil(m / 64)), block 256.
#include "quants.h"
#include "mma.h"
#include "rope.h"

#define MATVEC_MAX_M 8
#define MV_GROUPS 4
#define TILE 64
#define TILE_K 64

template <class T>
__device__ __forceinline__ void matvec(const float* x, const u8* w, float* out, int m, int n, int k,
                                       i64 row_bytes, int staged) {
    extern __shared__ float matvec_x[];  // [m][chunks][33] when staged
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    const bool row_ok = row < n;  // no early return: the whole group takes part in the shuffles
    const u8* wrow = w + (i64)(row_ok ? row : 0) * row_bytes;
    const int chunks = (k + 31) / 32;
    float acc[MATVEC_MAX_M];
#pragma unroll
    for (int r = 0; r < MATVEC_MAX_M; ++r) acc[r] = 0.0f;
    if constexpr (T::BLOCK == 1) {
        if ((k & 3) == 0) {
            // Float weights: lanes read consecutive 4-element pieces of the row and of x
            // (coalesced vector loads); x stays in global memory (cached).
            for (int i = lane; row_ok && i < k / 4; i += 32) {
                const float4 wv = T::load4(wrow, i);
#pragma unroll
                for (int r = 0; r < MATVEC_MAX_M; ++r) {
                    if (r < m) {
                        const float4 xv = ((const float4*)(x + (i64)r * k))[i];
                        acc[r] += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
                    }
                }
            }
            staged = -1;  // done: skip the chunk loop below
        }
    }
    if (staged == 1) {
        if ((k & 3) == 0) {
            const int k4 = k / 4;
#pragma unroll 4
            for (int idx = threadIdx.x; idx < m * chunks * 8; idx += blockDim.x) {
                const int r = idx / (chunks * 8), e4 = idx % (chunks * 8);
                const float4 v = e4 < k4 ? ((const float4*)(x + (i64)r * k))[e4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                float* dst = matvec_x + (r * chunks + e4 / 8) * 33 + 4 * (e4 % 8);
                dst[0] = v.x;
                dst[1] = v.y;
                dst[2] = v.z;
                dst[3] = v.w;
            }
        } else {
            for (int idx = threadIdx.x; idx < m * chunks * 32; idx += blockDim.x) {
                const int r = idx / (chunks * 32), e = idx % (chunks * 32);
                matvec_x[(r * chunks + e / 32) * 33 + e % 32] = e < k ? x[(i64)r * k + e] : 0.0f;
            }
        }
        __syncthreads();
    }
#pragma unroll 2
    for (int c = lane; row_ok && staged >= 0 && c < chunks; c += 32) {
        float y[32];
        T::chunk(wrow, c, k, y);
        const bool vector_ok = (k & 3) == 0 && 32 * c + 32 <= k;
#pragma unroll
        for (int r = 0; r < MATVEC_MAX_M; ++r) {
            if (r < m) {
                float s = 0.0f;
                if (staged == 1) {
                    const float* xr = matvec_x + (r * chunks + c) * 33;
#pragma unroll
                    for (int i = 0; i < 32; ++i) s += y[i] * xr[i];
                } else if (vector_ok) {
                    const float* xr = x + (i64)r * k + 32 * c;
#pragma unroll
                    for (int i = 0; i < 8; ++i) {
                        const float4 xv = ((const float4*)xr)[i];
                        s += y[4 * i] * xv.x + y[4 * i + 1] * xv.y + y[4 * i + 2] * xv.z + y[4 * i + 3] * xv.w;
                    }
                } else {
                    const float* xr = x + (i64)r * k + 32 * c;
#pragma unroll
                    for (int i = 0; i < 32; ++i) s += (32 * c + i < k) ? y[i] * xr[i] : 0.0f;
                }
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < MATVEC_MAX_M; ++r) {
        const float s = rf_group_sum<32>(acc[r]);
        if (lane == 0 && row_ok && r < m) out[(i64)r * n + row] = s;
    }
}

// Four quant bytes -> four floats: byte i of `q` (masked to 8 bits) minus `offset`, exactly.
__device__ __forceinline__ float rf_byte_float(u32 q, int i, float magic_plus_offset) {
    return __int_as_float(0x4B000000 | ((q >> (8 * i)) & 0xffu)) - magic_plus_offset;
}

// Rows in the split device layout (quants.h): quants of block `blk` at row + QS blk, its scale
// at row + QS nblocks + 2 blk; rows 4-byte aligned (row_bytes % 4 == 0).
struct FastQ4_0 {
    static constexpr int QS = 16, LANES_PER_BLOCK = 4;
    // Lane part `sub` of one block: bytes 4 sub .. 4 sub + 3 of qs, i.e. elements
    // 4 sub + i (low nibbles) and 16 + 4 sub + i (high nibbles); x: [xa, xb] of those.
    __device__ static float part(const u8* __restrict__ row, int blk, int nblocks, int sub, float4 xa,
                                 float4 xb) {
        const float d = rf_ldh(row + (i64)nblocks * QS + 2 * blk);
        const u32 q = rf_ld32_a4(row + (i64)blk * QS + 4 * sub);
        const u32 lo = q & 0x0f0f0f0fu, hi = (q >> 4) & 0x0f0f0f0fu;
        const float off = 8388616.0f;  // 2^23 + 8
        float s = rf_byte_float(lo, 0, off) * xa.x;
        s += rf_byte_float(lo, 1, off) * xa.y;
        s += rf_byte_float(lo, 2, off) * xa.z;
        s += rf_byte_float(lo, 3, off) * xa.w;
        s += rf_byte_float(hi, 0, off) * xb.x;
        s += rf_byte_float(hi, 1, off) * xb.y;
        s += rf_byte_float(hi, 2, off) * xb.z;
        s += rf_byte_float(hi, 3, off) * xb.w;
        return d * s;
    }
};

struct FastQ8_0 {
    static constexpr int QS = 32, LANES_PER_BLOCK = 8;
    // Lane part `sub` of one block: elements 4 sub .. 4 sub + 3; xb unused.
    __device__ static float part(const u8* __restrict__ row, int blk, int nblocks, int sub, float4 xa,
                                 float4) {
        const float d = rf_ldh(row + (i64)nblocks * QS + 2 * blk);
        const u32 q = rf_ld32_a4(row + (i64)blk * QS + 4 * sub) ^ 0x80808080u;  // int8 -> uint8 + 128
        const float off = 8388736.0f;                             // 2^23 + 128
        float s = rf_byte_float(q, 0, off) * xa.x;
        s += rf_byte_float(q, 1, off) * xa.y;
        s += rf_byte_float(q, 2, off) * xa.z;
        s += rf_byte_float(q, 3, off) * xa.w;
        return d * s;
    }
};

// The dot products of x with MV_ROWS weight rows (`rows`, each k elements of type Q), by a
// block of MV_GROUPS x 32 threads: on return (after a barrier) partial[g][r] summed over the
// groups g is row r's result.
template <class Q, int MV_ROWS>
__device__ __forceinline__ void matvec_fast_sums(const float* __restrict__ x, const u8* const (&rows)[MV_ROWS],
                                                 int k, float (&partial)[MV_GROUPS][MV_ROWS]) {
    constexpr int BLOCKS_PER_STRIPE = 32 / Q::LANES_PER_BLOCK;
    const int lane = threadIdx.x & 31, group = threadIdx.x >> 5;
    const int sub = lane % Q::LANES_PER_BLOCK;
    const int nblocks = k / 32;
    const int stripes = (nblocks + BLOCKS_PER_STRIPE - 1) / BLOCKS_PER_STRIPE;
    float acc[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
#pragma unroll 2
    for (int s = group; s < stripes; s += MV_GROUPS) {
        const int blk = s * BLOCKS_PER_STRIPE + lane / Q::LANES_PER_BLOCK;
        if (blk < nblocks) {
            const float* xb = x + 32 * blk + 4 * sub;
            const float4 xa = *(const float4*)xb;
            const float4 xh = Q::LANES_PER_BLOCK == 4 ? *(const float4*)(xb + 16) : xa;
#pragma unroll
            for (int r = 0; r < MV_ROWS; ++r) acc[r] += Q::part(rows[r], blk, nblocks, sub, xa, xh);
        }
    }
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) {
        const float v = rf_group_sum<32>(acc[r]);
        if (lane == 0) partial[group][r] = v;
    }
    __syncthreads();
}

template <int MV_ROWS>
__device__ __forceinline__ float matvec_fast_total(const float (&partial)[MV_GROUPS][MV_ROWS], int r) {
    float v = 0.0f;
#pragma unroll
    for (int g = 0; g < MV_GROUPS; ++g) v += partial[g][r];
    return v;
}

template <class Q, int MV_ROWS>
__device__ __forceinline__ void matvec_fast(const float* __restrict__ x, const u8* __restrict__ w,
                                            float* __restrict__ out, int n, int k, i64 row_bytes) {
    __shared__ float partial[MV_GROUPS][MV_ROWS];
    const int row0 = blockIdx.x * MV_ROWS;
    const u8* rows[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) rows[r] = w + (i64)min(row0 + r, n - 1) * row_bytes;
    matvec_fast_sums<Q, MV_ROWS>(x, rows, k, partial);
    if ((int)threadIdx.x < MV_ROWS && row0 + (int)threadIdx.x < n) {
        out[row0 + threadIdx.x] = matvec_fast_total<MV_ROWS>(partial, threadIdx.x);
    }
}

#define RF_MATVEC_FAST(suffix, Q, R)                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32)                                               \
        matvec_fast_##suffix##_r##R(const float* x, const u8* w, float* out, int n, int k,        \
                                    i64 row_bytes) {                                               \
        matvec_fast<Q, R>(x, w, out, n, k, row_bytes);                                             \
    }
RF_MATVEC_FAST(q4_0, FastQ4_0, 1)
RF_MATVEC_FAST(q4_0, FastQ4_0, 2)
RF_MATVEC_FAST(q4_0, FastQ4_0, 4)
RF_MATVEC_FAST(q8_0, FastQ8_0, 1)
RF_MATVEC_FAST(q8_0, FastQ8_0, 2)
RF_MATVEC_FAST(q8_0, FastQ8_0, 4)

// matvec_multi_<type>_r<R>: the decode step's fused projections (m = 1). Up to three weight
//   matrices of one type and one k (w0 [n0, k], w1 [n1, k], w2 [n2, k]; n1 or n2 may be 0)
//   in one launch: out_i[r] = (accumulate ? out_i[r] : 0) + (x . w_i[r] + (bias_i ? bias_i[r] : 0)).
//   Used for q/k/v (with qwen2's biases) and for the output and down projections added into
//   the residual stream. Each block takes R rows of one matrix, as matvec_fast does; the
//   first ceil(n0 / R) blocks take w0, the next ceil(n1 / R) w1, the rest w2.
template <class Q, int MV_ROWS>
__device__ __forceinline__ void matvec_multi(const float* __restrict__ x, int k, i64 row_bytes, int accumulate,
                                             const u8* w0, float* out0, const float* bias0, int n0,
                                             const u8* w1, float* out1, const float* bias1, int n1,
                                             const u8* w2, float* out2, const float* bias2, int n2) {
    __shared__ float partial[MV_GROUPS][MV_ROWS];
    int b = blockIdx.x;
    const int nb0 = (n0 + MV_ROWS - 1) / MV_ROWS, nb1 = (n1 + MV_ROWS - 1) / MV_ROWS;
    const u8* w = w0;
    float* out = out0;
    const float* bias = bias0;
    int n = n0;
    if (b >= nb0 + nb1) {
        b -= nb0 + nb1;
        w = w2, out = out2, bias = bias2, n = n2;
    } else if (b >= nb0) {
        b -= nb0;
        w = w1, out = out1, bias = bias1, n = n1;
    }
    const int row0 = b * MV_ROWS;
    const u8* rows[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) rows[r] = w + (i64)min(row0 + r, n - 1) * row_bytes;
    matvec_fast_sums<Q, MV_ROWS>(x, rows, k, partial);
    const int row = row0 + (int)threadIdx.x;
    if ((int)threadIdx.x < MV_ROWS && row < n) {
        float v = matvec_fast_total<MV_ROWS>(partial, threadIdx.x);
        if (bias != nullptr) v += bias[row];
        out[row] = accumulate ? out[row] + v : v;
    }
}

#define RF_MATVEC_MULTI(suffix, Q, R)                                                             \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32) matvec_multi_##suffix##_r##R(                 \
        const float* x, int k, i64 row_bytes, int accumulate, const u8* w0, float* out0,          \
        const float* bias0, int n0, const u8* w1, float* out1, const float* bias1, int n1,        \
        const u8* w2, float* out2, const float* bias2, int n2) {                                  \
        matvec_multi<Q, R>(x, k, row_bytes, accumulate, w0, out0, bias0, n0, w1, out1, bias1, n1, \
                           w2, out2, bias2, n2);                                                   \
    }
RF_MATVEC_MULTI(q4_0, FastQ4_0, 1)
RF_MATVEC_MULTI(q4_0, FastQ4_0, 2)
RF_MATVEC_MULTI(q4_0, FastQ4_0, 4)
RF_MATVEC_MULTI(q8_0, FastQ8_0, 1)
RF_MATVEC_MULTI(q8_0, FastQ8_0, 2)
RF_MATVEC_MULTI(q8_0, FastQ8_0, 4)

// matvec_swiglu_<type>: the feed-forward's gate and up projections and the SwiGLU between
//   them (m = 1): out[r] = silu(x . w_gate[r]) * (x . w_up[r]), silu(g) = g / (1 + exp(-g)),
//   the same expression as activation.hip's swiglu_f32. Block r takes row r of both
//   matrices (so x is loaded once for the two). Launch: grid (n), block MV_GROUPS x 32.
template <class Q>
__device__ __forceinline__ void matvec_swiglu(const float* __restrict__ x, const u8* __restrict__ w_gate,
                                              const u8* __restrict__ w_up, float* __restrict__ out, int n, int k,
                                              i64 row_bytes) {
    __shared__ float partial[MV_GROUPS][2];
    const int row = blockIdx.x;
    const u8* rows[2] = {w_gate + (i64)row * row_bytes, w_up + (i64)row * row_bytes};
    matvec_fast_sums<Q, 2>(x, rows, k, partial);
    if (threadIdx.x == 0 && row < n) {
        const float g = matvec_fast_total<2>(partial, 0);
        out[row] = g / (1.0f + expf(-g)) * matvec_fast_total<2>(partial, 1);
    }
}

#define RF_MATVEC_SWIGLU(suffix, Q)                                                               \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32) matvec_swiglu_##suffix(                       \
        const float* x, const u8* w_gate, const u8* w_up, float* out, int n, int k,               \
        i64 row_bytes) {                                                                           \
        matvec_swiglu<Q>(x, w_gate, w_up, out, n, k, row_bytes);                                   \
    }
RF_MATVEC_SWIGLU(q4_0, FastQ4_0)
RF_MATVEC_SWIGLU(q8_0, FastQ8_0)

// ------------------------------------------------------------------------------------------
// matvec_wide_*: the m = 1 decode kernels of Q4_0 and Q8_0 (v6), built so that each lane has
//   many bytes of weights in flight and x is read once per chunk for all rows of a block.
//   A "piece" is 16 quant bytes of a row (split device layout): Q4_0 one whole block (32
//   elements), Q8_0 half a block (16 elements). A block of G x 32 threads (G = 1, 2 or 4,
//   chosen by the launcher from k: G = min(4, ceil(k / 1024))) owns MV_ROWS rows and walks k
//   in chunks of G x 32 x PIECES pieces; thread t takes pieces chunk + j G 32 + t (j < PIECES:
//   Q4_0 1, Q8_0 2, so that a thread holds 32 x values), i.e. consecutive threads read
//   consecutive 16-byte pieces. Per chunk a thread loads its x values once (float4), then
//   issues the 16-byte quant loads and the scale loads of all rows before the first use, then
//   computes each row's dot products. Rows whose pointer and row_bytes are 16-byte aligned load
//   a piece as one uint4, others as four 4-byte words (same bytes). Quants become floats
//   exactly (2^23 trick); each row's sum depends only on k and the thread count, not on
//   MV_ROWS, so the fused kernels below equal the unfused ones bit for bit.
//   Partials: a 32-lane butterfly, then the G groups' sums in order through shared memory.
//   Launch: grid (ceil(n / MV_ROWS)) (fused: see each), block G x 32, no dynamic shared memory.
//   QX (the *_q8x_* kernels): after loading its x piece, a thread quantizes it once for all
//   rows: d = max|x| / 127 (a NaN kept, so that it reaches the result), q = x * 127 / max|x|
//   rounded to the nearest integer (ties to even, one fma with 1.5 x 2^23), 4 values a word;
//   a row's piece then adds d_w * d * (sum of dp4a products) (Q4_0: minus 8 * sum(q)). The
//   instruction count per quant byte drops ~4x (ncu: the float Q4_0 kernel was issue/L1
//   bound). Numerics: those of llama.cpp's and the CPU backend's 8-bit activations, except
//   that the scale stays float32 and Q8_0's pieces (16 values) are half a block.
//   norm_w (multi and swiglu): x * norm_w replaces x and the block also sums x^2; the results
//   are scaled by rsqrt(sum(x^2) / k + eps): rms_norm folded in, one launch fewer. Each block
//   then reads norm_w as well as x, so the launcher uses it only where that traffic is small
//   (matmul/gpu.rs fused_norm_pays).
//   ss_parts (multi and swiglu; norm_w null): x is already x * norm_w, and sum(x^2) is the sum
//   of the n_parts floats at ss_parts: both written by the kernel before, a multi launch with
//   norm_out (the residual projection that produced x), so the norm costs neither a launch nor
//   extra reads of norm_w; the results are scaled as above.
//   norm_out_w, xw_out, ss_out (multi, one matrix): after out[row] is written, also
//   xw_out[row] = out[row] * norm_out_w[row], and block b's sum of out[row]^2 over its rows goes
//   to ss_out[b] (the next norm's input, for a launch with ss_parts = ss_out).

// 16 bytes at p (16-byte aligned when aligned16, else 4-byte aligned).
__device__ __forceinline__ uint4 rf_ld128_a4(const u8* p, bool aligned16) {
    if (aligned16) return *(const uint4*)p;
    return make_uint4(rf_ld32_a4(p), rf_ld32_a4(p + 4), rf_ld32_a4(p + 8), rf_ld32_a4(p + 12));
}

// rf_ld128_a4 for the kernels that read their weights in several passes (the uncapped 16-row
// multi kernels, which the launchers take for rows longer than a block's one pass, and
// matvec_stream_*): read-only and not kept in L1 (NVIDIA sm_80+: ld.global.nc with
// L1::no_allocate). On an H200, Llama-3-8B's down projection 13.75 -> 13.30 us and its
// gate/up 19.27 -> 18.80 us; the one-pass register-capped kernels were slower with it
// (bench/NOTES.md), so they keep rf_ld128_a4.
__device__ __forceinline__ uint4 rf_ld128_a4_na(const u8* p, bool aligned16) {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (aligned16) {
        uint4 v;
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
            : "l"(p));
        return v;
    }
#endif
    return rf_ld128_a4(p, aligned16);
}

// rf_byte_float with the magic float built by one byte permute on NVIDIA (PRMT: byte i of q,
// two zero bytes, 0x4B); the same value everywhere.
__device__ __forceinline__ float rf_byte_float_p(u32 q, int i, float magic_plus_offset) {
#if defined(RF_CUDA)
    return __int_as_float((int)__byte_perm(q, 0x4B000000u, 0x7540u + (u32)i)) - magic_plus_offset;
#else
    return rf_byte_float(q, i, magic_plus_offset);
#endif
}

// 4-byte integer dot product: c + sum of the products of a's and b's signed bytes.
__device__ __forceinline__ int rf_dp4a(int a, int b, int c) {
#if defined(RF_CUDA)
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#elif defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
    defined(__gfx941__) || defined(__gfx942__) || defined(__gfx1030__)
    return __builtin_amdgcn_sdot4(a, b, c, false);
#else
    for (int i = 0; i < 32; i += 8) c += (int)(i8)(a >> i) * (int)(i8)(b >> i);
    return c;
#endif
}

// max(m, |v|) that keeps a NaN (of m or v): a NaN in x must reach the result.
__device__ __forceinline__ float rf_absmax_nan(float m, float v) {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(fabsf(v)));
    return r;
#else
    const float a = fabsf(v);
    return (a > m || a != a) ? a : m;
#endif
}

// Four floats times inv, each rounded to the nearest integer (ties to even; |v inv| <= 127),
// packed as signed bytes (first in the low byte): adding 1.5 x 2^23 in the same fma leaves the
// integer in the low mantissa bits.
__device__ __forceinline__ int rf_q8_word(float4 v, float inv) {
    const float magic = 12582912.0f;
    const u32 a = (u32)__float_as_int(fmaf(v.x, inv, magic)), b = (u32)__float_as_int(fmaf(v.y, inv, magic));
    const u32 c = (u32)__float_as_int(fmaf(v.z, inv, magic)), d = (u32)__float_as_int(fmaf(v.w, inv, magic));
#if defined(RF_CUDA)
    return (int)__byte_perm(__byte_perm(a, b, 0x0040u), __byte_perm(c, d, 0x0040u), 0x5410u);
#else
    return (int)((a & 0xffu) | ((b & 0xffu) << 8) | ((c & 0xffu) << 16) | (d << 24));
#endif
}

struct WideQ4_0 {
    static constexpr int QS = 16, PIECE_ELEMS = 32, PIECES = 1;
    __device__ static int block_of(int piece) { return piece; }
    // 8-bit x (xq word i: elements 4 i .. 4 i + 3 of the piece, sx the sum of its 32 values):
    // sum((nibble - 8) * xq).
    __device__ static int dot_i8(uint4 q, const int* xq, int sx) {
        const u32 w[4] = {q.x, q.y, q.z, q.w};
        int s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            s = rf_dp4a((int)(w[i] & 0x0f0f0f0fu), xq[i], s);
            s = rf_dp4a((int)((w[i] >> 4) & 0x0f0f0f0fu), xq[4 + i], s);
        }
        return s - 8 * sx;
    }
    // One piece (a whole block): word i, byte j -> elements 4 i + j (low), 16 + 4 i + j (high).
    __device__ static float dot(uint4 q, const float4 (&xv)[8]) {
        const u32 w[4] = {q.x, q.y, q.z, q.w};
        const float off = 8388616.0f;  // 2^23 + 8
        float lo = 0.0f, hi = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 l = w[i] & 0x0f0f0f0fu, h = (w[i] >> 4) & 0x0f0f0f0fu;
            const float4 a = xv[i], b = xv[4 + i];
            lo += rf_byte_float_p(l, 0, off) * a.x;
            lo += rf_byte_float_p(l, 1, off) * a.y;
            lo += rf_byte_float_p(l, 2, off) * a.z;
            lo += rf_byte_float_p(l, 3, off) * a.w;
            hi += rf_byte_float_p(h, 0, off) * b.x;
            hi += rf_byte_float_p(h, 1, off) * b.y;
            hi += rf_byte_float_p(h, 2, off) * b.z;
            hi += rf_byte_float_p(h, 3, off) * b.w;
        }
        return lo + hi;
    }
};

struct WideQ8_0 {
    static constexpr int QS = 32, PIECE_ELEMS = 16, PIECES = 2;
    __device__ static int block_of(int piece) { return piece >> 1; }
    // 8-bit x (xq word i: elements 4 i .. 4 i + 3 of the piece): sum(q * xq).
    __device__ static int dot_i8(uint4 q, const int* xq, int) {
        int s = rf_dp4a((int)q.x, xq[0], 0);
        s = rf_dp4a((int)q.y, xq[1], s);
        s = rf_dp4a((int)q.z, xq[2], s);
        return rf_dp4a((int)q.w, xq[3], s);
    }
    // One piece (half a block): word i, byte j -> element 4 i + j of the piece.
    __device__ static float dot(uint4 q, const float4* xv) {
        const u32 w[4] = {q.x ^ 0x80808080u, q.y ^ 0x80808080u, q.z ^ 0x80808080u, q.w ^ 0x80808080u};
        const float off = 8388736.0f;  // 2^23 + 128
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i += 2) {
            const float4 a = xv[i], b = xv[i + 1];
            s0 += rf_byte_float_p(w[i], 0, off) * a.x;
            s0 += rf_byte_float_p(w[i], 1, off) * a.y;
            s0 += rf_byte_float_p(w[i], 2, off) * a.z;
            s0 += rf_byte_float_p(w[i], 3, off) * a.w;
            s1 += rf_byte_float_p(w[i + 1], 0, off) * b.x;
            s1 += rf_byte_float_p(w[i + 1], 1, off) * b.y;
            s1 += rf_byte_float_p(w[i + 1], 2, off) * b.z;
            s1 += rf_byte_float_p(w[i + 1], 3, off) * b.w;
        }
        return s0 + s1;
    }
};

// The dot products of x with MV_ROWS rows by the whole block: on return (after a barrier)
// matvec_wide_total(partial, r) is row r's result. With norm_w (the fused RMS norm of the
// multi and swiglu kernels), x * norm_w takes x's place and matvec_wide_total(partial,
// MV_ROWS) is sum(x^2): the callers scale the results by rsqrt(sum(x^2) / k + eps).
template <class Q, int MV_ROWS, bool QX, bool NA = false>
__device__ __forceinline__ void matvec_wide_sums(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                 const float* ss_parts, int n_parts,
                                                 const u8* const (&rows)[MV_ROWS], int k,
                                                 float (&partial)[MV_GROUPS][MV_ROWS + 1]) {
    constexpr int P = Q::PIECES;
    const int tid = threadIdx.x, lane = tid & 31, group = tid >> 5;
    const int threads = blockDim.x;
    const int nblocks = k / 32, pieces = k / Q::PIECE_ELEMS;
    bool aligned16 = true;
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) aligned16 = aligned16 && (((unsigned long long)rows[r] & 15ull) == 0);
    aligned16 = aligned16 && ((nblocks * Q::QS) & 15) == 0;  // every row's pieces then aligned too
    float acc[MV_ROWS], ss = 0.0f;
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) acc[r] = 0.0f;
    for (int c = 0; c < pieces; c += threads * P) {
        float4 xv[P][8];
        uint4 q[MV_ROWS][P];
        float d[MV_ROWS][P];
#pragma unroll
        for (int j = 0; j < P; ++j) {
            const int p = c + j * threads + tid;
            if (p < pieces) {
#pragma unroll
                for (int r = 0; r < MV_ROWS; ++r) {
                    q[r][j] = NA ? rf_ld128_a4_na(rows[r] + (i64)p * 16, aligned16)
                                 : rf_ld128_a4(rows[r] + (i64)p * 16, aligned16);
                    d[r][j] = rf_ldh(rows[r] + (i64)nblocks * Q::QS + 2 * Q::block_of(p));
                }
            }
        }
        if (c == 0) {
            rf_grid_wait();  // the first weights are on their way; x may come from the last kernel
            rf_grid_release();
            if (ss_parts != nullptr) {
                // x is already x * norm_w (written by the kernel before, matvec_wide_multi's
                // norm_out); sum(x^2) comes as that kernel's per-block sums, loaded with x by
                // all threads (a few each, independent loads).
#pragma unroll 4
                for (int i = tid; i < n_parts; i += threads) ss += ss_parts[i];
            }
        }
#pragma unroll
        for (int j = 0; j < P; ++j) {
            const int p = c + j * threads + tid;
            if (p < pieces) {
                const float4* xp = (const float4*)(rf_after_wait(x) + (i64)p * Q::PIECE_ELEMS);
#pragma unroll
                for (int i = 0; i < Q::PIECE_ELEMS / 4; ++i) xv[j][i] = xp[i];
            }
        }
        if (norm_w != nullptr) {
#pragma unroll
            for (int j = 0; j < P; ++j) {
                const int p = c + j * threads + tid;
                if (p < pieces) {
                    const float4* gp = (const float4*)(norm_w + (i64)p * Q::PIECE_ELEMS);
#pragma unroll
                    for (int i = 0; i < Q::PIECE_ELEMS / 4; ++i) {
                        const float4 g = gp[i];
                        float4& v = xv[j][i];
                        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                        v = make_float4(v.x * g.x, v.y * g.y, v.z * g.z, v.w * g.w);
                    }
                }
            }
        }
        if (QX) {
            // x to 8 bits, once per piece for all rows: d_x = max|x| / 127.
            int xq[P][Q::PIECE_ELEMS / 4], sx[P];
            float dx[P];
#pragma unroll
            for (int j = 0; j < P; ++j) {
                float amax = 0.0f;
#pragma unroll
                for (int i = 0; i < Q::PIECE_ELEMS / 4; ++i) {
                    amax = rf_absmax_nan(amax, xv[j][i].x);
                    amax = rf_absmax_nan(amax, xv[j][i].y);
                    amax = rf_absmax_nan(amax, xv[j][i].z);
                    amax = rf_absmax_nan(amax, xv[j][i].w);
                }
                const float inv = amax != 0.0f ? 127.0f / amax : 0.0f;
                dx[j] = amax / 127.0f;
                sx[j] = 0;
#pragma unroll
                for (int i = 0; i < Q::PIECE_ELEMS / 4; ++i) {
                    xq[j][i] = rf_q8_word(xv[j][i], inv);
                    sx[j] = rf_dp4a(xq[j][i], 0x01010101, sx[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < P; ++j) {
                if (c + j * threads + tid < pieces) {
#pragma unroll
                    for (int r = 0; r < MV_ROWS; ++r) {
                        acc[r] += d[r][j] * dx[j] * (float)Q::dot_i8(q[r][j], xq[j], sx[j]);
                    }
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < P; ++j) {
                if (c + j * threads + tid < pieces) {
#pragma unroll
                    for (int r = 0; r < MV_ROWS; ++r) acc[r] += d[r][j] * Q::dot(q[r][j], xv[j]);
                }
            }
        }
    }
    if (pieces <= 0) rf_grid_wait();  // (the loop waits before its first x load)
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) {
        const float v = rf_group_sum<32>(acc[r]);
        if (lane == 0) partial[group][r] = v;
    }
    if (norm_w != nullptr || ss_parts != nullptr) {
        const float v = rf_group_sum<32>(ss);
        if (lane == 0) partial[group][MV_ROWS] = v;
    }
    __syncthreads();
}

template <int MV_ROWS>
__device__ __forceinline__ float matvec_wide_total(const float (&partial)[MV_GROUPS][MV_ROWS + 1], int r) {
    const int groups = blockDim.x >> 5;
    float v = partial[0][r];
    for (int g = 1; g < groups; ++g) v += partial[g][r];
    return v;
}

template <class Q, int MV_ROWS, bool QX>
__device__ __forceinline__ void matvec_wide(const float* __restrict__ x, const u8* __restrict__ w,
                                            float* __restrict__ out, int n, int k, i64 row_bytes) {
    __shared__ float partial[MV_GROUPS][MV_ROWS + 1];
    const int row0 = blockIdx.x * MV_ROWS;
    const u8* rows[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) rows[r] = w + (i64)min(row0 + r, n - 1) * row_bytes;
    matvec_wide_sums<Q, MV_ROWS, QX>(x, nullptr, nullptr, 0, rows, k, partial);
    if ((int)threadIdx.x < MV_ROWS && row0 + (int)threadIdx.x < n) {
        out[row0 + threadIdx.x] = matvec_wide_total<MV_ROWS>(partial, threadIdx.x);
    }
}

#define RF_MATVEC_WIDE(suffix, Q, R)                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32)                                               \
        matvec_wide_##suffix##_r##R(const float* x, const u8* w, float* out, int n, int k,        \
                                    i64 row_bytes) {                                               \
        matvec_wide<Q, R, false>(x, w, out, n, k, row_bytes);                                      \
    }                                                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32)                                               \
        matvec_wide_q8x_##suffix##_r##R(const float* x, const u8* w, float* out, int n, int k,    \
                                        i64 row_bytes) {                                           \
        matvec_wide<Q, R, true>(x, w, out, n, k, row_bytes);                                       \
    }
// matvec_wide_q8x_<type>_r16_o3 (and the multi and qkv_rope forms below): the r16 kernels with
//   registers capped for 3 blocks per multiprocessor (NVIDIA; 2 otherwise, ~220-245 registers),
//   for rows read in one pass of the block (pieces <= threads): on an H200, Llama-3-8B's LM head
//   103 -> 88 us, q/k/v 9.5 -> 7.8 us, o 5.5 -> 5.1 us (bench/NOTES.md); the multi-pass down
//   projection keeps the uncapped form (slower capped).
#define RF_MATVEC_WIDE_O3(suffix, Q)                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS_MIN(MV_GROUPS * 32, 3)                                        \
        matvec_wide_q8x_##suffix##_r16_o3(const float* x, const u8* w, float* out, int n, int k,  \
                                          i64 row_bytes) {                                         \
        matvec_wide<Q, 16, true>(x, w, out, n, k, row_bytes);                                     \
    }
RF_MATVEC_WIDE_O3(q4_0, WideQ4_0)
RF_MATVEC_WIDE_O3(q8_0, WideQ8_0)
RF_MATVEC_WIDE(q4_0, WideQ4_0, 1)
RF_MATVEC_WIDE(q4_0, WideQ4_0, 2)
RF_MATVEC_WIDE(q4_0, WideQ4_0, 4)
RF_MATVEC_WIDE(q4_0, WideQ4_0, 8)
RF_MATVEC_WIDE(q4_0, WideQ4_0, 16)
RF_MATVEC_WIDE(q8_0, WideQ8_0, 1)
RF_MATVEC_WIDE(q8_0, WideQ8_0, 2)
RF_MATVEC_WIDE(q8_0, WideQ8_0, 4)
RF_MATVEC_WIDE(q8_0, WideQ8_0, 8)
RF_MATVEC_WIDE(q8_0, WideQ8_0, 16)

// matvec_wide_multi_<type>_r<R>: matvec_multi on the wide core (same arguments and grid), and
//   accumulate = 2: out is added as with 1, but loaded before the wait for the kernel before
//   (with the weights' first loads, not a round trip after the sums). For a caller whose out
//   no kernel wrote since the one before the kernel just before (a decode step's residual
//   stream, written by the projection two or more launches back): those have completed
//   when this kernel starts (rf_grid_release comes after rf_grid_wait everywhere).
template <class Q, int MV_ROWS, bool QX, bool NA = false>
__device__ __forceinline__ void matvec_wide_multi(const float* __restrict__ x, int k, i64 row_bytes,
                                                  int accumulate, const float* norm_w, float eps,
                                                  const float* ss_parts, int n_parts,
                                                  const float* norm_out_w, float* xw_out, float* ss_out,
                                                  const u8* w0, float* out0, const float* bias0,
                                                  int n0, const u8* w1, float* out1, const float* bias1, int n1,
                                                  const u8* w2, float* out2, const float* bias2, int n2) {
    __shared__ float partial[MV_GROUPS][MV_ROWS + 1];
    int b = blockIdx.x;
    const int nb0 = (n0 + MV_ROWS - 1) / MV_ROWS, nb1 = (n1 + MV_ROWS - 1) / MV_ROWS;
    const u8* w = w0;
    float* out = out0;
    const float* bias = bias0;
    int n = n0;
    if (b >= nb0 + nb1) {
        b -= nb0 + nb1;
        w = w2, out = out2, bias = bias2, n = n2;
    } else if (b >= nb0) {
        b -= nb0;
        w = w1, out = out1, bias = bias1, n = n1;
    }
    const int row0 = b * MV_ROWS;
    const u8* rows[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; ++r) rows[r] = w + (i64)min(row0 + r, n - 1) * row_bytes;
    const int row = row0 + (int)threadIdx.x;
    const bool mine = (int)threadIdx.x < MV_ROWS && row < n;
    // The weights this thread's row takes at the end, loaded now (before the sums' wait for
    // the kernel before): not a round trip after the sums.
    const float bias_v = (mine && bias != nullptr) ? bias[row] : 0.0f;
    const float next_w = (mine && xw_out != nullptr) ? norm_out_w[row] : 0.0f;
    const float early = (mine && accumulate == 2) ? rf_ld_l2(out + row) : 0.0f;
    matvec_wide_sums<Q, MV_ROWS, QX, NA>(x, norm_w, ss_parts, n_parts, rows, k, partial);
    float o = 0.0f;
    if (mine) {
        float v = matvec_wide_total<MV_ROWS>(partial, threadIdx.x);
        if (norm_w != nullptr || ss_parts != nullptr)
            v *= rsqrtf(matvec_wide_total<MV_ROWS>(partial, MV_ROWS) / (float)k + eps);
        v += bias_v;
        o = accumulate == 2 ? early + v : accumulate ? out[row] + v : v;
        out[row] = o;
        if (xw_out != nullptr) xw_out[row] = o * next_w;
    }
    if (ss_out != nullptr && threadIdx.x < 32) {  // the first 32 lanes (MV_ROWS <= 16): this block's sum(o^2)
        const float s = rf_group_sum<32>(o * o);
        if (threadIdx.x == 0) ss_out[blockIdx.x] = s;
    }
}

// (The uncapped 16-row forms read their weights with rf_ld128_a4_na: the launchers take them
// for rows read in several passes.)
#define RF_MATVEC_WIDE_MULTI_AS(name, Q, R, QX) \
    RF_MATVEC_WIDE_MULTI_B(name, Q, R, QX, R == 16, RF_LAUNCH_BOUNDS(MV_GROUPS * 32))
#define RF_MATVEC_WIDE_MULTI_B(name, Q, R, QX, NA, BOUNDS)                                        \
    RF_KERNEL void BOUNDS name(                                                                   \
        const float* x, int k, i64 row_bytes, int accumulate, const float* norm_w, float eps,     \
        const float* ss_parts, int n_parts, const float* norm_out_w, float* xw_out, float* ss_out, \
        const u8* w0, float* out0, const float* bias0, int n0, const u8* w1, float* out1,         \
        const float* bias1, int n1, const u8* w2, float* out2, const float* bias2, int n2) {      \
        matvec_wide_multi<Q, R, QX, NA>(x, k, row_bytes, accumulate, norm_w, eps, ss_parts, n_parts, \
                                    norm_out_w, xw_out, ss_out, w0, out0, bias0, n0, w1, out1,     \
                                    bias1, n1, w2, out2, bias2, n2);                               \
    }
#define RF_MATVEC_WIDE_MULTI(suffix, Q, R)                                                        \
    RF_MATVEC_WIDE_MULTI_AS(matvec_wide_multi_##suffix##_r##R, Q, R, false)                       \
    RF_MATVEC_WIDE_MULTI_AS(matvec_wide_multi_q8x_##suffix##_r##R, Q, R, true)
RF_MATVEC_WIDE_MULTI_B(matvec_wide_multi_q8x_q4_0_r16_o3, WideQ4_0, 16, true, false, RF_LAUNCH_BOUNDS_MIN(MV_GROUPS * 32, 3))
RF_MATVEC_WIDE_MULTI_B(matvec_wide_multi_q8x_q8_0_r16_o3, WideQ8_0, 16, true, false, RF_LAUNCH_BOUNDS_MIN(MV_GROUPS * 32, 3))
RF_MATVEC_WIDE_MULTI(q4_0, WideQ4_0, 1)
RF_MATVEC_WIDE_MULTI(q4_0, WideQ4_0, 2)
RF_MATVEC_WIDE_MULTI(q4_0, WideQ4_0, 4)
RF_MATVEC_WIDE_MULTI(q4_0, WideQ4_0, 8)
RF_MATVEC_WIDE_MULTI(q4_0, WideQ4_0, 16)
RF_MATVEC_WIDE_MULTI(q8_0, WideQ8_0, 1)
RF_MATVEC_WIDE_MULTI(q8_0, WideQ8_0, 2)
RF_MATVEC_WIDE_MULTI(q8_0, WideQ8_0, 4)
RF_MATVEC_WIDE_MULTI(q8_0, WideQ8_0, 8)
RF_MATVEC_WIDE_MULTI(q8_0, WideQ8_0, 16)

// matvec_qkv_rope_q8x_<type>_r<R>_<f32|f16>: a decode step's q, k and v projections with
//   their rope and KV-cache append in the epilogue, one launch where there were two (the
//   q/k/v matvec_wide_multi_q8x_* launch, then rope.hip's rope_kv_*). The sums are
//   matvec_wide_multi's (8-bit x, the same norm inputs: norm_w, or ss_parts from the launch
//   before); then q and k rows are turned as rope_kv turns them (rope.h, n_rot = head_dim) at
//   position p0 = pos_dev[0], q stored to q_out [nq], k and v to row p0 of the caches
//   ([n_ctx, nkv], float32 or fp16 bits). Only the host writes the position, before the
//   step, so it is read, and the rotation's cos and sin computed, before the wait for the
//   kernel before. A block owns R rows of one matrix that hold both halves of each rope pair
//   it touches: R consecutive rows for neox = 0 (pairs 2i, 2i + 1) and for v; for neox = 1
//   (pairs i, i + head_dim / 2) R / 2 consecutive rows of each half of a head. Each rotated
//   value needs its partner's sum, so the R results go through shared memory. Needs
//   head_dim % R == 0 and R even (the launcher checks; the caller, that row p0 exists).
//   Launch: grid ((nq + 2 nkv) / R), block as matvec_wide_multi.
template <class Q, int R, class C>
__device__ __forceinline__ void matvec_qkv_rope(const float* __restrict__ x, int k, i64 row_bytes,
                                                const float* norm_w, float eps, const float* ss_parts,
                                                int n_parts, const u8* wq, const u8* wk, const u8* wv,
                                                const float* bq, const float* bk, const float* bv,
                                                int nq, int nkv, float* q_out, C* k_cache, C* v_cache,
                                                const int* pos_dev, const float* freq_factors,
                                                int head_dim, float theta, int neox) {
    __shared__ float partial[MV_GROUPS][R + 1];
    __shared__ float result[R];
    int b = blockIdx.x;
    const int nbq = nq / R, nbk = nkv / R;
    int which = 0;  // 0: q, 1: k, 2: v
    const u8* w = wq;
    const float* bias = bq;
    if (b >= nbq + nbk) {
        b -= nbq + nbk;
        which = 2, w = wv, bias = bv;
    } else if (b >= nbq) {
        b -= nbq;
        which = 1, w = wk, bias = bk;
    }
    const bool split = which < 2 && neox;  // rows from both halves of a head
    const int per_head = head_dim / R;
    const int head = b / per_head, j = b - head * per_head;
    const int half = head_dim / 2;
    const u8* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = split ? head * head_dim + (r < R / 2 ? j * (R / 2) + r : half + j * (R / 2) + r - R / 2)
                              : b * R + r;
        rows[r] = w + (i64)row * row_bytes;
    }
    const int r = (int)threadIdx.x;
    const bool mine = r < R;
    const int row = !mine ? 0
                    : split ? head * head_dim + (r < R / 2 ? j * (R / 2) + r : half + j * (R / 2) + r - R / 2)
                            : b * R + r;
    // What the epilogue takes besides the sums, loaded and computed before the sums' wait for
    // the kernel before: the bias, the position (written by the host before the step, never
    // by a kernel of it) and the rotation's cos and sin (pair i of the row's head).
    const float bias_v = (mine && bias != nullptr) ? bias[row] : 0.0f;
    const int p0 = mine ? pos_dev[0] : 0;
    const int dim = row - (row / head_dim) * head_dim;
    const int pair = neox ? (dim < half ? dim : dim - half) : dim >> 1;
    float c = 1.0f, s = 0.0f;
    if (mine && which < 2) {
        const float factor = freq_factors != nullptr ? freq_factors[pair] : 1.0f;
        rf_rope_cs_at((double)p0, rf_rope_inv_freq(pair, head_dim, theta),
                      freq_factors != nullptr ? &factor : nullptr, &c, &s);
    }
    matvec_wide_sums<Q, R, true>(x, norm_w, ss_parts, n_parts, rows, k, partial);
    float v = 0.0f;
    if (mine) {
        v = matvec_wide_total<R>(partial, r);
        if (norm_w != nullptr || ss_parts != nullptr)
            v *= rsqrtf(matvec_wide_total<R>(partial, R) / (float)k + eps);
        v += bias_v;
        result[r] = v;
    }
    __syncthreads();
    if (!mine) return;
    const i64 cache_row = (i64)p0 * nkv;
    if (which == 2) {
        rf_kv_store(v_cache + cache_row + row, v);
        return;
    }
    const bool first = neox ? r < R / 2 : (r & 1) == 0;  // the pair's x0
    const float other = result[neox ? (r + R / 2) % R : r ^ 1];
    const float x0 = first ? v : other, x1 = first ? other : v;
    const float y = first ? x0 * c - x1 * s : x0 * s + x1 * c;
    if (which == 0) {
        q_out[row] = y;
    } else {
        rf_kv_store(k_cache + cache_row + row, y);
    }
}

#define RF_MATVEC_QKV_ROPE_AS(name, Q, R, C) RF_MATVEC_QKV_ROPE_B(name, Q, R, C, RF_LAUNCH_BOUNDS(MV_GROUPS * 32))
#define RF_MATVEC_QKV_ROPE_B(name, Q, R, C, BOUNDS)                                               \
    RF_KERNEL void BOUNDS name(                                                                   \
        const float* x, int k, i64 row_bytes, const float* norm_w, float eps,                     \
        const float* ss_parts, int n_parts, const u8* wq, const u8* wk, const u8* wv,             \
        const float* bq, const float* bk, const float* bv, int nq, int nkv, float* q_out,         \
        C* k_cache, C* v_cache, const int* pos_dev, const float* freq_factors, int head_dim,      \
        float theta, int neox) {                                                                   \
        matvec_qkv_rope<Q, R, C>(x, k, row_bytes, norm_w, eps, ss_parts, n_parts, wq, wk, wv, bq,  \
                                 bk, bv, nq, nkv, q_out, k_cache, v_cache, pos_dev, freq_factors,  \
                                 head_dim, theta, neox);                                           \
    }
#define RF_MATVEC_QKV_ROPE(suffix, Q, R)                                                          \
    RF_MATVEC_QKV_ROPE_AS(matvec_qkv_rope_q8x_##suffix##_r##R##_f32, Q, R, float)                 \
    RF_MATVEC_QKV_ROPE_AS(matvec_qkv_rope_q8x_##suffix##_r##R##_f16, Q, R, u16)
RF_MATVEC_QKV_ROPE(q4_0, WideQ4_0, 2)
RF_MATVEC_QKV_ROPE(q4_0, WideQ4_0, 4)
RF_MATVEC_QKV_ROPE(q4_0, WideQ4_0, 8)
RF_MATVEC_QKV_ROPE(q4_0, WideQ4_0, 16)
RF_MATVEC_QKV_ROPE(q8_0, WideQ8_0, 2)
RF_MATVEC_QKV_ROPE(q8_0, WideQ8_0, 4)
RF_MATVEC_QKV_ROPE(q8_0, WideQ8_0, 8)
RF_MATVEC_QKV_ROPE(q8_0, WideQ8_0, 16)
#define RF_MATVEC_QKV_ROPE_O3(suffix, Q)                                                           \
    RF_MATVEC_QKV_ROPE_B(matvec_qkv_rope_q8x_##suffix##_r16_o3_f32, Q, 16, float,                 \
                         RF_LAUNCH_BOUNDS_MIN(MV_GROUPS * 32, 3))                                  \
    RF_MATVEC_QKV_ROPE_B(matvec_qkv_rope_q8x_##suffix##_r16_o3_f16, Q, 16, u16,                   \
                         RF_LAUNCH_BOUNDS_MIN(MV_GROUPS * 32, 3))
RF_MATVEC_QKV_ROPE_O3(q4_0, WideQ4_0)
RF_MATVEC_QKV_ROPE_O3(q8_0, WideQ8_0)

// matvec_wide_swiglu_<type>_r<R>: matvec_swiglu on the wide core, R rows of both matrices per
//   block (2R rows in flight). Launch: grid (ceil(n / R)), block G x 32.
template <class Q, int R, bool QX>
__device__ __forceinline__ void matvec_wide_swiglu(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                   float eps, const float* ss_parts, int n_parts,
                                                   const u8* __restrict__ w_gate,
                                                   const u8* __restrict__ w_up, float* __restrict__ out, int n,
                                                   int k, i64 row_bytes) {
    __shared__ float partial[MV_GROUPS][2 * R + 1];
    const int row0 = blockIdx.x * R;
    const u8* rows[2 * R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const i64 off = (i64)min(row0 + r, n - 1) * row_bytes;
        rows[r] = w_gate + off;
        rows[R + r] = w_up + off;
    }
    matvec_wide_sums<Q, 2 * R, QX>(x, norm_w, ss_parts, n_parts, rows, k, partial);
    const int row = row0 + (int)threadIdx.x;
    if ((int)threadIdx.x < R && row < n) {
        float g = matvec_wide_total<2 * R>(partial, threadIdx.x);
        float u = matvec_wide_total<2 * R>(partial, R + threadIdx.x);
        if (norm_w != nullptr || ss_parts != nullptr) {
            const float inv_rms = rsqrtf(matvec_wide_total<2 * R>(partial, 2 * R) / (float)k + eps);
            g *= inv_rms;
            u *= inv_rms;
        }
        out[row] = g / (1.0f + expf(-g)) * u;
    }
}

#define RF_MATVEC_WIDE_SWIGLU_AS(name, Q, R, QX)                                                  \
    RF_KERNEL void RF_LAUNCH_BOUNDS(MV_GROUPS * 32) name(                                         \
        const float* x, const float* norm_w, float eps, const float* ss_parts, int n_parts,       \
        const u8* w_gate, const u8* w_up, float* out, int n, int k, i64 row_bytes) {              \
        matvec_wide_swiglu<Q, R, QX>(x, norm_w, eps, ss_parts, n_parts, w_gate, w_up, out, n, k,   \
                                     row_bytes);                                                   \
    }
#define RF_MATVEC_WIDE_SWIGLU(suffix, Q, R)                                                       \
    RF_MATVEC_WIDE_SWIGLU_AS(matvec_wide_swiglu_##suffix##_r##R, Q, R, false)                     \
    RF_MATVEC_WIDE_SWIGLU_AS(matvec_wide_swiglu_q8x_##suffix##_r##R, Q, R, true)
RF_MATVEC_WIDE_SWIGLU(q4_0, WideQ4_0, 1)
RF_MATVEC_WIDE_SWIGLU(q4_0, WideQ4_0, 2)
RF_MATVEC_WIDE_SWIGLU(q4_0, WideQ4_0, 4)
RF_MATVEC_WIDE_SWIGLU(q4_0, WideQ4_0, 8)
RF_MATVEC_WIDE_SWIGLU(q8_0, WideQ8_0, 1)
RF_MATVEC_WIDE_SWIGLU(q8_0, WideQ8_0, 2)
RF_MATVEC_WIDE_SWIGLU(q8_0, WideQ8_0, 4)
RF_MATVEC_WIDE_SWIGLU(q8_0, WideQ8_0, 8)

// ------------------------------------------------------------------------------------------
// matvec_stream_swiglu_*: the m = 1 gate/up + SwiGLU kernel for long rows (v7), streaming
//   the weights with the next loads always in flight. The block's threads span k once:
//   thread t owns piece t of every row (a piece as in matvec_wide: 16 quant bytes; at most
//   512 pieces a row), so each thread loads and quantizes its 32 (Q4_0) or 16 (Q8_0) values
//   of x once (8-bit, as the *_q8x_* kernels) and keeps them in registers for all its rows.
//   The weight rows are taken in groups of R (R / 2 gate rows and the same up rows), group g
//   by block g mod grid (a few blocks per multiprocessor, chosen by the launcher); while a
//   group's dot products are summed, the loads of the block's next group are already issued.
//   A 32-lane group's R partial sums are reduced by a reduce-scatter butterfly (lane l ends
//   with row l >> (5 - log2 R); the same pairs are added as by rf_group_sum, so a row's sum
//   is the same float), written to shared memory, and summed over the block's 32-lane groups
//   once at the end, where the SwiGLU runs. (On an H200 the same core was slower than
//   matvec_wide_multi for the 8B's q/k/v, o, down and LM head launches, bench/NOTES.md.)
//   Launch: grid (blocks), block ceil(pieces / 64) x 64 (whole 64-wide waves on AMD too; the
//   threads past the pieces idle), dynamic shared memory ceil(groups / blocks) x R x
//   (block / 32) floats.

// The sums of R values over a 32-lane group, spread: on return lane l's v[0] is the group's
// sum of v[l >> (5 - log2 R)] (R a power of two, 1 <= R <= 32).
template <int R>
__device__ __forceinline__ float rf_reduce_scatter32(float (&v)[R], int lane) {
    int off = 16;
#pragma unroll
    for (int n = R; n > 1; n >>= 1, off >>= 1) {
        const bool upper = (lane & off) != 0;
#pragma unroll
        for (int i = 0; i < n / 2; ++i) {
            const float send = upper ? v[i] : v[i + n / 2];
            const float keep = upper ? v[i + n / 2] : v[i];
            v[i] = keep + rf_shfl_xor(send, off, 32);
        }
    }
#pragma unroll
    for (; off > 0; off >>= 1) v[0] += rf_shfl_xor(v[0], off, 32);
    return v[0];
}

// The weight rows of the streaming gate/up kernel: group g's first R / 2 rows are gate rows
// g R / 2 .. + R / 2 - 1, the next R / 2 the same up rows.
template <int R>
struct StreamRows {
    const u8 *gate, *up;
    int n;
    i64 row_bytes;
    // Weight row r of group g (clamped to the last row: loads stay in bounds).
    __device__ const u8* row(int g, int r) const {
        const int i = min(g * (R / 2) + (r % (R / 2)), n - 1);
        return (r < R / 2 ? gate : up) + (i64)i * row_bytes;
    }
};

// The streaming core: part[(it R + r) (block / 32) + group] = 32-lane group `group`'s share of
// weight row r of the block's it-th group (it = 0, 1, ...: groups blockIdx.x + it gridDim.x);
// returns this thread's share of sum(x^2) where norm_w or ss_parts is given (else 0). The
// caller sums part over the groups after a barrier. S: groups whose loads are in flight
// (S - 1 loaded ahead of the one being summed), in a ring of registers.
template <class Q, int R, int S>
__device__ __forceinline__ float matvec_stream_core(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                    const float* ss_parts, int n_parts,
                                                    const StreamRows<R>& rows, int groups, int k,
                                                    float* part) {
    static_assert(S >= 2, "at least one group loaded ahead");
    const int tid = threadIdx.x, lane = tid & 31, group = tid >> 5, nwarps = blockDim.x >> 5;
    const int pieces = k / Q::PIECE_ELEMS, nblocks = k / 32;
    const int p = tid;
    const bool active = p < pieces;
    const bool aligned16 = ((unsigned long long)rows.gate & 15ull) == 0 && ((unsigned long long)rows.up & 15ull) == 0 &&
                           ((nblocks * Q::QS) & 15) == 0 && (rows.row_bytes & 15) == 0;
    const i64 qoff = (i64)p * 16, soff = (i64)nblocks * Q::QS + 2 * Q::block_of(p);
    uint4 q[S][R];
    float d[S][R];
#pragma unroll
    for (int j = 0; j < S - 1; ++j) {
        const int g = blockIdx.x + j * gridDim.x;
        if (active && g < groups) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const u8* w = rows.row(g, r);
                q[j][r] = rf_ld128_a4_na(w + qoff, aligned16);
                d[j][r] = rf_ldh(w + soff);
            }
        }
    }
    rf_grid_wait();  // the first weights are on their way; x may come from the last kernel
    rf_grid_release();
    float ss = 0.0f;
    if (ss_parts != nullptr) {
        for (int i = tid; i < n_parts; i += blockDim.x) ss += ss_parts[i];
    }
    constexpr int XW = Q::PIECE_ELEMS / 4;  // float4s (and 8-bit words) of x a piece
    int xq[XW], sx = 0;
    float dx = 0.0f;
    if (active) {
        float4 xv[XW];
        const float4* xp = (const float4*)(rf_after_wait(x) + (i64)p * Q::PIECE_ELEMS);
#pragma unroll
        for (int i = 0; i < XW; ++i) xv[i] = xp[i];
        if (norm_w != nullptr) {
            const float4* gp = (const float4*)(norm_w + (i64)p * Q::PIECE_ELEMS);
#pragma unroll
            for (int i = 0; i < XW; ++i) {
                const float4 w = gp[i];
                float4& v = xv[i];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                v = make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w);
            }
        }
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < XW; ++i) {
            amax = rf_absmax_nan(amax, xv[i].x);
            amax = rf_absmax_nan(amax, xv[i].y);
            amax = rf_absmax_nan(amax, xv[i].z);
            amax = rf_absmax_nan(amax, xv[i].w);
        }
        const float inv = amax != 0.0f ? 127.0f / amax : 0.0f;
        dx = amax / 127.0f;
#pragma unroll
        for (int i = 0; i < XW; ++i) {
            xq[i] = rf_q8_word(xv[i], inv);
            sx = rf_dp4a(xq[i], 0x01010101, sx);
        }
    } else {
#pragma unroll
        for (int i = 0; i < XW; ++i) xq[i] = 0;
    }
    // Iteration it sums ring slot it % S after loading group it + S - 1 into the slot summed
    // the iteration before; unrolled S at a time so that the slots are registers.
    for (int base = 0;; base += S) {
#pragma unroll
        for (int j = 0; j < S; ++j) {
            const int it = base + j;
            const int g = blockIdx.x + it * gridDim.x;
            if (g >= groups) return ss;
            const int gn = g + (S - 1) * gridDim.x;
            const int ln = (j + S - 1) % S;
            if (active && gn < groups) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const u8* w = rows.row(gn, r);
                    q[ln][r] = rf_ld128_a4_na(w + qoff, aligned16);
                    d[ln][r] = rf_ldh(w + soff);
                }
            }
            float v[R];
#pragma unroll
            for (int r = 0; r < R; ++r) v[r] = active ? d[j][r] * dx * (float)Q::dot_i8(q[j][r], xq, sx) : 0.0f;
            const float sum = rf_reduce_scatter32<R>(v, lane);
            if ((lane & (32 / R - 1)) == 0) part[(it * R + lane / (32 / R)) * nwarps + group] = sum;
        }
    }
}

// Row s of the block's rows (s = it R + r): the sum over the block's 32-lane groups.
__device__ __forceinline__ float matvec_stream_total(const float* part, int s) {
    const int nwarps = blockDim.x >> 5;
    float v = 0.0f;
    for (int w = 0; w < nwarps; ++w) v += part[s * nwarps + w];
    return v;
}

// matvec_stream_swiglu_<type>_r<R>: matvec_wide_swiglu's result on the streaming core, R / 2
//   rows of each matrix a group, the next group's loads in flight while one is summed (512
//   threads' registers a multiprocessor). ..._r<R>_s3: the next two groups' loads in flight
//   (384 threads' registers: fewer blocks, more bytes in flight each).
template <class Q, int R, int S>
__device__ __forceinline__ void matvec_stream_swiglu(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                     float eps, const float* ss_parts, int n_parts,
                                                     const u8* __restrict__ w_gate, const u8* __restrict__ w_up,
                                                     float* __restrict__ out, int n, int k, i64 row_bytes) {
    extern __shared__ float stream_part[];
    const int groups = (n + R / 2 - 1) / (R / 2);
    const StreamRows<R> rows{w_gate, w_up, n, row_bytes};
    float ss = matvec_stream_core<Q, R, S>(x, norm_w, ss_parts, n_parts, rows, groups, k, stream_part);
    const bool normed = norm_w != nullptr || ss_parts != nullptr;
    if (normed) ss = rf_block_sum(ss);
    else __syncthreads();
    const float scale = normed ? rsqrtf(ss / (float)k + eps) : 1.0f;
    const int its = (groups - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;
    for (int s = threadIdx.x; s < its * (R / 2); s += blockDim.x) {
        const int it = s / (R / 2), r = s % (R / 2);
        const int i = ((int)blockIdx.x + it * (int)gridDim.x) * (R / 2) + r;
        if (i >= n) continue;
        const float g = matvec_stream_total(stream_part, it * R + r) * scale;
        const float u = matvec_stream_total(stream_part, it * R + R / 2 + r) * scale;
        out[i] = g / (1.0f + expf(-g)) * u;
    }
}

#define RF_MATVEC_STREAM(suffix, Q, R)                                                            \
    RF_KERNEL void RF_LAUNCH_BOUNDS(512) matvec_stream_swiglu_q8x_##suffix##_r##R(               \
        const float* x, const float* norm_w, float eps, const float* ss_parts, int n_parts,       \
        const u8* w_gate, const u8* w_up, float* out, int n, int k, i64 row_bytes) {              \
        matvec_stream_swiglu<Q, R, 2>(x, norm_w, eps, ss_parts, n_parts, w_gate, w_up, out, n, k,  \
                                      row_bytes);                                                  \
    }                                                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS(384) matvec_stream_swiglu_q8x_##suffix##_r##R##_s3(          \
        const float* x, const float* norm_w, float eps, const float* ss_parts, int n_parts,       \
        const u8* w_gate, const u8* w_up, float* out, int n, int k, i64 row_bytes) {              \
        matvec_stream_swiglu<Q, R, 3>(x, norm_w, eps, ss_parts, n_parts, w_gate, w_up, out, n, k,  \
                                      row_bytes);                                                  \
    }
RF_MATVEC_STREAM(q4_0, WideQ4_0, 8)
RF_MATVEC_STREAM(q8_0, WideQ8_0, 8)

template <class T>
__device__ __forceinline__ void matmul_tiled(const float* x, const u8* w, float* out, int m, int n, int k,
                                             i64 row_bytes) {
    __shared__ float xs[TILE_K][TILE + 4];  // xs[kk][i] = x[m0 + i, k0 + kk]
    __shared__ float ws[TILE_K][TILE + 4];  // ws[kk][j] = W[n0 + j, k0 + kk]
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int n0 = blockIdx.x * TILE, m0 = blockIdx.y * TILE;
    const int chunks = (k + 31) / 32;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += TILE_K) {
        // x tile: consecutive threads take consecutive rows (conflict-free shared stores).
        for (int idx = tid; idx < TILE * TILE_K; idx += blockDim.x) {
            const int i = idx % TILE, kk = idx / TILE;
            const int gm = m0 + i, gk = k0 + kk;
            xs[kk][i] = (gm < m && gk < k) ? x[(i64)gm * k + gk] : 0.0f;
        }
        // W tile: one 32-element chunk per thread, dequantized in registers.
        for (int job = tid; job < TILE * (TILE_K / 32); job += blockDim.x) {
            const int j = job % TILE, ch = job / TILE;
            const int gn = n0 + j, c = k0 / 32 + ch;
            float y[32];
            if (gn < n && c < chunks) {
                T::chunk(w + (i64)gn * row_bytes, c, k, y);
            } else {
#pragma unroll
                for (int i = 0; i < 32; ++i) y[i] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 32; ++i) ws[32 * ch + i][j] = y[i];
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < TILE_K; ++kk) {
            const float4 a = *(const float4*)&xs[kk][4 * ty];
            const float4 b = *(const float4*)&ws[kk][4 * tx];
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int gm = m0 + 4 * ty + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int gn = n0 + 4 * tx + j;
            if (gm < m && gn < n) out[(i64)gm * n + gn] = acc[i][j];
        }
    }
}

#define RF_MATMUL_KERNELS(suffix, T)                                                              \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) matvec_##suffix(const float* x, const u8* w, float* out,  \
                                                        int m, int n, int k, i64 row_bytes,      \
                                                        int staged) {                            \
        matvec<T>(x, w, out, m, n, k, row_bytes, staged);                                         \
    }                                                                                             \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) matmul_tiled_##suffix(                                    \
        const float* x, const u8* w, float* out, int m, int n, int k, i64 row_bytes) {            \
        matmul_tiled<T>(x, w, out, m, n, k, row_bytes);                                           \
    }
RF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_KERNELS)

// ------------------------------------------------------------------------------------------
// Prefill on tensor cores (mma.h): out[m, n] = x[m, k] @ dequant(W)[n, k]^T, f16 products,
// f32 accumulation. Two kernels:
//
// mma_prep_x: x (float32) -> xh, f16 [mp, kp] (mp = m rounded up to the row tile, kp = k
//   rounded up to MMA_BK; the padding is written as zeros) and inv[mp]. Each row r < m is
//   scaled by a power of two s_r = 2^(141 - E) (E: the biased exponent of max_c |x[r, c]|) so
//   that its largest magnitude lands in [2^14, 2^15): no f16 overflow (max 65504) whatever
//   the activations' range, and the same relative rounding (2^-11) for every row.
//   inv[r] = 1 / s_r (exact: powers of two). Rows of zeros, or with an inf, get s_r = 1 (a
//   NaN is skipped by the max and stays a NaN). Shifts are clamped to the normal float
//   exponents [-126, 127]. Launch: grid (mp), block 256.
//
// matmul_mma_<type>_m<BM>: a block computes a BM x MMA_BN tile of out (BM 64 or 128, MMA_BN
//   128), 8 warps of 32 lanes in a 2 (rows) x 4 (columns) grid, each a (BM / 2) x 32 tile of
//   m16n8k16 products. k goes in steps of MMA_BK = 64: the xh tile (BM x 64 f16, 16-byte
//   loads) and the W tile (128 rows x 64 as f16, `MmaWTile`) go to shared memory, double
//   buffered: the next step's global loads are issued before the current step's products, and
//   stored (W decoded to f16) into the other buffer after them (one barrier per step). W tile:
//   Q4_0 / Q8_0 lanes read consecutive 16-byte pieces of the same rows and hold the raw quants
//   across the products; other types: each thread dequantizes one 32-element chunk with the
//   type's `chunk` before the products. Shared rows are padded to 72 f16 (36 words) so that
//   the fragment loads (`ldmatrix` on sm_80+: 8 rows of 16 bytes per phase; elsewhere lane
//   (g, t) reads word 36 g + t) and the 16-byte stores hit distinct banks. Epilogue:
//   out = acc * inv[row].
//   Weights are rounded to f16 (exact for F16 and for every quantized type's codes times an
//   f16 scale within f16 range; F32 / BF16 weights above 65504 in magnitude would become inf).
//   Launch: grid (ceil(n / 128), mp / BM), block 256, dynamic shared memory
//   2 * (BM + 128) * 72 * 2 bytes; xh and inv from mma_prep_x with the same BM.

#define MMA_BN 128
#define MMA_BK 64
#define MMA_LD 72  // shared row length in f16 (MMA_BK + 8)

RF_KERNEL void RF_LAUNCH_BOUNDS(256)
    mma_prep_x(const float* __restrict__ x, u16* __restrict__ xh, float* __restrict__ inv, int m, int k, int kp) {
    const int r = blockIdx.x;
    u16* dst = xh + (i64)r * kp;
    if (r >= m) {  // padding rows: zeros (uniform per block: no barrier is skipped by part of it)
        for (int c = threadIdx.x; c < kp; c += blockDim.x) dst[c] = 0;
        if (threadIdx.x == 0) inv[r] = 0.0f;
        return;
    }
    const float* src = x + (i64)r * k;
    float mx = 0.0f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) mx = fmaxf(mx, fabsf(src[c]));
    mx = rf_block_max(mx);
    const int e = (__float_as_int(mx) >> 23) & 255;
    int p = (e == 0 || e == 255) ? 0 : 141 - e;  // zero / subnormal max, inf: no scaling
    if (e == 0 && mx > 0.0f) p = 127;             // subnormal max: the largest shift
    p = max(-126, min(127, p));
    const float s = __int_as_float((127 + p) << 23), s_inv = __int_as_float((127 - p) << 23);
    for (int c = threadIdx.x; c < kp; c += blockDim.x) dst[c] = c < k ? rf_float_to_half(src[c] * s) : (u16)0;
    if (threadIdx.x == 0) inv[r] = s_inv;
}

// The W tile of one k step (MMA_BN rows x MMA_BK) as 256 threads load it: `load` issues the
// step's global loads into registers (before the current step's products), `store` decodes
// them to f16 into the shared tile (after the products). Generic form: each thread decodes one
// 32-element chunk of one row with the type's `chunk` in `load` (a warp touches 32 rows).
template <class T>
struct MmaWTile {
    const u8* row;
    int bj, bc, chunks;
    bool ok;
    float y[32];
    __device__ MmaWTile(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        bj = tid % MMA_BN;
        bc = tid / MMA_BN;
        ok = n0 + bj < n;
        row = w + (i64)(ok ? n0 + bj : 0) * row_bytes;
        chunks = (k + 31) / 32;
    }
    __device__ void load(int step, int k) {
        const int c = step * (MMA_BK / 32) + bc;
        if (ok && c < chunks) {
            T::chunk(row, c, k, y);
        } else {
#pragma unroll
            for (int i = 0; i < 32; ++i) y[i] = 0.0f;
        }
    }
    __device__ void store(u16* bs) const {
        u16* b = bs + bj * MMA_LD + 32 * bc;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            uint4 h;
            h.x = rf_pack_half2(y[8 * q + 0], y[8 * q + 1]);
            h.y = rf_pack_half2(y[8 * q + 2], y[8 * q + 3]);
            h.z = rf_pack_half2(y[8 * q + 4], y[8 * q + 5]);
            h.w = rf_pack_half2(y[8 * q + 6], y[8 * q + 7]);
            *(uint4*)(b + 8 * q) = h;
        }
    }
};

// 16 bytes at p (16-byte aligned when a16, else 2-byte aligned).
__device__ __forceinline__ uint4 rf_ld128_a2(const u8* p, bool a16) {
    if (a16) return *(const uint4*)p;
    uint4 r;
    r.x = rf_ld32_a2(p);
    r.y = rf_ld32_a2(p + 4);
    r.z = rf_ld32_a2(p + 8);
    r.w = rf_ld32_a2(p + 12);
    return r;
}

// Q8_0 (split device layout: qs[k / 32][32], then d[k / 32]): a step covers two blocks of each
// row, 64 quant bytes = 4 pieces of 16; the tile's 512 pieces go 2 per thread, piece
// p = tid + 256 v: row p / 4, quarter p % 4, so 4 lanes read a row's 64 consecutive bytes
// (16-byte loads where the rows are 16-byte aligned) and a warp reads 8 whole rows. Only raw
// quants and the scale's bits are held across the products.
template <>
struct MmaWTile<WQ8_0> {
    const u8* row[2];
    int r0, quarter, nb;
    bool ok[2], a16;
    uint4 q[2];
    u32 d[2];
    __device__ MmaWTile(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        r0 = tid / 4;
        quarter = tid % 4;
        nb = k / 32;
        a16 = ((row_bytes | (i64)(u64)w) & 15) == 0;
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            ok[v] = n0 + r0 + 64 * v < n;
            row[v] = w + (i64)(ok[v] ? n0 + r0 + 64 * v : 0) * row_bytes;
        }
    }
    __device__ void load(int step, int) {
        const int c = step * 2 + quarter / 2;
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            if (ok[v] && c < nb) {
                q[v] = rf_ld128_a2(row[v] + (i64)c * 32 + 16 * (quarter & 1), a16);
                d[v] = rf_ld16(row[v] + (i64)nb * 32 + 2 * c);
            } else {
                q[v] = make_uint4(0u, 0u, 0u, 0u);
                d[v] = 0u;
            }
        }
    }
    __device__ void store(u16* bs) const {
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            const float s = rf_half_to_float((u16)d[v]);
            const u32 w[4] = {q[v].x, q[v].y, q[v].z, q[v].w};
            u32 h[8];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                h[2 * i] = rf_pack_half2((float)(i8)(w[i] & 0xffu) * s, (float)(i8)((w[i] >> 8) & 0xffu) * s);
                h[2 * i + 1] = rf_pack_half2((float)(i8)((w[i] >> 16) & 0xffu) * s, (float)(i8)(w[i] >> 24) * s);
            }
            uint4* b = (uint4*)(bs + (r0 + 64 * v) * MMA_LD + 16 * quarter);
            b[0] = make_uint4(h[0], h[1], h[2], h[3]);
            b[1] = make_uint4(h[4], h[5], h[6], h[7]);
        }
    }
};

// Q4_0 (split device layout: qs[k / 32][16], then d[k / 32]): a step covers two blocks of each
// row, 2 x 16 quant bytes; thread tid takes block half = tid % 2 of row tid / 2 (one 16-byte
// load: a warp reads 16 rows' 32 consecutive bytes). Byte j of a block holds elements j (low
// nibble) and j + 16 (high).
template <>
struct MmaWTile<WQ4_0> {
    const u8* row;
    int r, half, nb;
    bool ok, a16;
    uint4 q;
    u32 d;
    __device__ MmaWTile(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        r = tid / 2;
        half = tid % 2;
        nb = k / 32;
        a16 = ((row_bytes | (i64)(u64)w) & 15) == 0;
        ok = n0 + r < n;
        row = w + (i64)(ok ? n0 + r : 0) * row_bytes;
    }
    __device__ void load(int step, int) {
        const int c = step * 2 + half;
        if (ok && c < nb) {
            q = rf_ld128_a2(row + (i64)c * 16, a16);
            d = rf_ld16(row + (i64)nb * 16 + 2 * c);
        } else {
            q = make_uint4(0u, 0u, 0u, 0u);
            d = 0u;
        }
    }
    __device__ void store(u16* bs) const {
        const float s = rf_half_to_float((u16)d);
        const u32 w[4] = {q.x, q.y, q.z, q.w};
        u32 lo[8], hi[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const u32 b0 = (w[i] >> (16 * j)) & 0xffu, b1 = (w[i] >> (16 * j + 8)) & 0xffu;
                lo[2 * i + j] = rf_pack_half2((float)((int)(b0 & 15u) - 8) * s, (float)((int)(b1 & 15u) - 8) * s);
                hi[2 * i + j] = rf_pack_half2((float)((int)(b0 >> 4) - 8) * s, (float)((int)(b1 >> 4) - 8) * s);
            }
        }
        uint4* b = (uint4*)(bs + r * MMA_LD + 32 * half);
        b[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
        b[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
        b[2] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
        b[3] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
    }
};

template <class T, int BM>
__device__ __forceinline__ void matmul_mma(const u16* __restrict__ xh, const float* __restrict__ inv,
                                           const u8* __restrict__ w, float* __restrict__ out, int m, int n,
                                           int k, int kp, i64 row_bytes) {
    constexpr int WM = BM / 2, MT = WM / 16, NT = 4;    // warp tile: WM x 32
    constexpr int A_VECS = BM * (MMA_BK / 8) / 256;     // 16-byte pieces of the xh tile per thread
    extern __shared__ uint4 mma_smem[];
    u16* const as = (u16*)mma_smem;                     // [2][BM][MMA_LD]
    u16* const bs = as + 2 * BM * MMA_LD;               // [2][MMA_BN][MMA_LD]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    const int n0 = blockIdx.x * MMA_BN, m0 = blockIdx.y * BM;
    const int steps = kp / MMA_BK;
    MmaWTile<T> wt(w, n0, n, k, row_bytes, tid);

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    uint4 areg[A_VECS];
    auto load = [&](int step) {
#pragma unroll
        for (int v = 0; v < A_VECS; ++v) {
            const int idx = tid + 256 * v, row = idx / (MMA_BK / 8), piece = idx % (MMA_BK / 8);
            areg[v] = *(const uint4*)(xh + (i64)(m0 + row) * kp + step * MMA_BK + 8 * piece);
        }
        wt.load(step, k);
    };
    auto store = [&](int buf) {
        u16* a = as + buf * BM * MMA_LD;
#pragma unroll
        for (int v = 0; v < A_VECS; ++v) {
            const int idx = tid + 256 * v, row = idx / (MMA_BK / 8), piece = idx % (MMA_BK / 8);
            *(uint4*)(a + row * MMA_LD + 8 * piece) = areg[v];
        }
        wt.store(bs + buf * MMA_BN * MMA_LD);
    };

    load(0);
    store(0);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1;
        const bool more = step + 1 < steps;
        if (more) load(step + 1);
        const u16* a = as + buf * BM * MMA_LD + (wm * WM) * MMA_LD;
        const u16* b = bs + buf * MMA_BN * MMA_LD + (wn * 32) * MMA_LD;
#pragma unroll
        for (int kk = 0; kk < MMA_BK; kk += 16) {
            u32 af[MT][4], bf[NT][2];
#if defined(RF_MMA_TENSOR_CORES)
            // ldmatrix: lane l gives the address of row l % 16, column kk + 8 (l / 16) of A
            // (matrices a[0..3]); for B two n-tiles per x4: row 8 (l / 16) + l % 8, column
            // kk + 8 ((l / 8) % 2) (matrices b[j][0], b[j][1], b[j+1][0], b[j+1][1]).
#pragma unroll
            for (int i = 0; i < MT; ++i)
                rf_ldmatrix_x4(af[i], a + (16 * i + (lane & 15)) * MMA_LD + kk + 8 * (lane >> 4));
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                u32 r[4];
                rf_ldmatrix_x4(r, b + (8 * j + 8 * (lane >> 4) + (lane & 7)) * MMA_LD + kk + 8 * ((lane >> 3) & 1));
                bf[j][0] = r[0];
                bf[j][1] = r[1];
                bf[j + 1][0] = r[2];
                bf[j + 1][1] = r[3];
            }
#else
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const u16* p = a + (16 * i + g) * MMA_LD + kk + 2 * t;
                af[i][0] = *(const u32*)p;
                af[i][1] = *(const u32*)(p + 8 * MMA_LD);
                af[i][2] = *(const u32*)(p + 8);
                af[i][3] = *(const u32*)(p + 8 * MMA_LD + 8);
            }
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const u16* p = b + (8 * j + g) * MMA_LD + kk + 2 * t;
                bf[j][0] = *(const u32*)p;
                bf[j][1] = *(const u32*)(p + 8);
            }
#endif
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) rf_mma_16x8x16(acc[i][j], af[i], bf[j]);
        }
        if (more) store(buf ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = m0 + wm * WM + 16 * i + g + 8 * h;
            if (row < m) {
                const float sc = inv[row];
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    const int col = n0 + wn * 32 + 8 * j + 2 * t;
                    float* o = out + (i64)row * n + col;
                    if (col < n) o[0] = acc[i][j][2 * h] * sc;
                    if (col + 1 < n) o[1] = acc[i][j][2 * h + 1] * sc;
                }
            }
        }
    }
}

#define RF_MATMUL_MMA_KERNELS(suffix, T)                                                          \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) matmul_mma_##suffix##_m64(                                \
        const u16* xh, const float* inv, const u8* w, float* out, int m, int n, int k, int kp,      \
        i64 row_bytes) {                                                                          \
        matmul_mma<T, 64>(xh, inv, w, out, m, n, k, kp, row_bytes);                               \
    }                                                                                             \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) matmul_mma_##suffix##_m128(                               \
        const u16* xh, const float* inv, const u8* w, float* out, int m, int n, int k, int kp,      \
        i64 row_bytes) {                                                                          \
        matmul_mma<T, 128>(xh, inv, w, out, m, n, k, kp, row_bytes);                              \
    }
RF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_MMA_KERNELS)
