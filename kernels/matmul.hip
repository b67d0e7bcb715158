// matmul.hip: out = x @ W^T with W kept in its GGUF type in device memory.
//
//   x: [m, k] float32 row-major; W: [n, k] rows of row_bytes bytes in the GGUF layout
//   (quants.h); out: [m, n] float32. Weights are dequantized in registers, never in memory;
//   accumulation is float32.
//
// matvec_<type>: small m (m <= MATVEC_MAX_M), float32 x. Each aligned group of 32 lanes owns one
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
// The model's decode matvecs (m = 1, 8-bit x) are matvec.hip's; rocmforge.ops.matmul at m = 1
//   keeps the exact matvec_<type> above.
//
// matmul_tiled_<type>: the prefill path. A block computes a 64 x 64 tile of out, stepping
//   over k by 64: x (64 x 64) and the dequantized W tile (64 x 64) go to shared memory
//   (k-major), and each of the 256 threads accumulates a 4 x 4 sub-tile.
//   Launch: grid (ceil(n / 64), ceil(m / 64)), block 256.
#include "quants.h"
#include "mma.h"

#define MATVEC_MAX_M 8
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
// mma_prep_x (mma_prep_x_bf16): x (float32) -> xh, f16 (bf16) [mp, kp] (mp = m rounded up to
//   the row tile, kp = k rounded up to MMA_BK; the padding is written as zeros) and inv[mp].
//   Each row r < m is
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
//   across the products, Q4_K / Q5_K / Q6_K / IQ4_XS their pieces and the pieces' `Aux`
//   (`MmaWTilePiece`); other types: each thread dequantizes one 32-element chunk with the
//   type's `chunk` before the products. Shared rows are padded to 72 f16 (36 words) so that
//   the fragment loads (`ldmatrix` on sm_80+: 8 rows of 16 bytes per phase; elsewhere lane
//   (g, t) reads word 36 g + t) and the 16-byte stores hit distinct banks. Epilogue:
//   out = acc * inv[row].
//   Weights are rounded to f16 (exact for F16 and for every quantized type's codes times an
//   f16 scale within f16 range; F32 / BF16 weights above 65504 in magnitude would become inf).
//   Launch: grid (ceil(n / 128), mp / BM), block 256, dynamic shared memory
//   2 * (BM + 128) * 72 * 2 bytes; xh and inv from mma_prep_x with the same BM.
//
// On AMD matrix cores (mma.h's RF_AMD_MATRIX: gfx11 / gfx12 WMMA, gfx90a / gfx94x MFMA) the
//   same kernel, with the warp tile of 16 x 16 products instead: 256 / RF_WARP waves in a 2 x
//   (waves / 2) grid, each (BM / 2) x (128 / (waves / 2)) (32 columns at wave 32, 64 at wave
//   64), and the epilogue writing each lane's column of D. Only the 64-row tile (the 128-row
//   one needs 72 KiB of shared memory; an AMD workgroup has 64 KiB). The k loop inside a step
//   stays rolled there, and the generic W tile holds its chunk as packed operands (16 words,
//   not 32 floats): unrolled, or with floats, the wave-32 kernels spill. Float weights read
//   16-byte pieces (`MmaWTileFloat`), and bf16 weights are multiplied as bf16 (exact weights, x
//   from `mma_prep_x_bf16`). AMD targets without matrix cores (gfx1030, ...) leave these
//   kernels out and keep matmul_tiled_* (src/ops/matmul/gpu.rs `mma_available`).

#define MMA_BN 128
#define MMA_BK 64
#define MMA_LD 72  // shared row length in f16 (MMA_BK + 8)

// The operands of the tensor-core products: bf16 for bf16 weights on AMD matrix cores (exact
// weights, no f16 overflow; those have bf16 forms), f16 everywhere else.
template <class T>
__device__ constexpr bool mma_bf16() {
#if defined(RF_AMD_MATRIX)
    return __is_same(T, WBF16);
#else
    return false;
#endif
}

template <bool BF16>
__device__ __forceinline__ u16 rf_to_operand(float v) {
    if constexpr (BF16) return rf_float_to_bf16(v);
    return rf_float_to_half(v);
}
template <bool BF16>
__device__ __forceinline__ u32 rf_pack_operand2(float lo, float hi) {
    if constexpr (BF16) return (u32)rf_float_to_bf16(lo) | ((u32)rf_float_to_bf16(hi) << 16);
    return rf_pack_half2(lo, hi);
}

template <bool BF16>
__device__ __forceinline__ void mma_prep_rows(const float* __restrict__ x, u16* __restrict__ xh,
                                              float* __restrict__ inv, int m, int k, int kp) {
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
    for (int c = threadIdx.x; c < kp; c += blockDim.x) dst[c] = c < k ? rf_to_operand<BF16>(src[c] * s) : (u16)0;
    if (threadIdx.x == 0) inv[r] = s_inv;
}

RF_KERNEL void RF_LAUNCH_BOUNDS(256)
    mma_prep_x(const float* __restrict__ x, u16* __restrict__ xh, float* __restrict__ inv, int m, int k, int kp) {
    mma_prep_rows<false>(x, xh, inv, m, k, kp);
}
RF_KERNEL void RF_LAUNCH_BOUNDS(256)
    mma_prep_x_bf16(const float* __restrict__ x, u16* __restrict__ xh, float* __restrict__ inv, int m, int k, int kp) {
    mma_prep_rows<true>(x, xh, inv, m, k, kp);
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
#if defined(RF_AMD_MATRIX)
    u32 h[16];  // the chunk as operand pairs: half the registers held across the products
#else
    float y[32];
#endif
    __device__ MmaWTile(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        bj = tid % MMA_BN;
        bc = tid / MMA_BN;
        ok = n0 + bj < n;
        row = w + (i64)(ok ? n0 + bj : 0) * row_bytes;
        chunks = (k + 31) / 32;
    }
    __device__ void load(int step, int k) {
        const int c = step * (MMA_BK / 32) + bc;
#if defined(RF_AMD_MATRIX)
        float y[32];
#endif
        if (ok && c < chunks) {
            T::chunk(row, c, k, y);
        } else {
#pragma unroll
            for (int i = 0; i < 32; ++i) y[i] = 0.0f;
        }
#if defined(RF_AMD_MATRIX)
#pragma unroll
        for (int i = 0; i < 16; ++i) h[i] = rf_pack_operand2<mma_bf16<T>()>(y[2 * i], y[2 * i + 1]);
#endif
    }
    __device__ void store(u16* bs) const {
        u16* b = bs + bj * MMA_LD + 32 * bc;
#if defined(RF_AMD_MATRIX)
#pragma unroll
        for (int q = 0; q < 4; ++q) *(uint4*)(b + 8 * q) = make_uint4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
#else
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            uint4 h;
            h.x = rf_pack_half2(y[8 * q + 0], y[8 * q + 1]);
            h.y = rf_pack_half2(y[8 * q + 2], y[8 * q + 3]);
            h.z = rf_pack_half2(y[8 * q + 4], y[8 * q + 5]);
            h.w = rf_pack_half2(y[8 * q + 6], y[8 * q + 7]);
            *(uint4*)(b + 8 * q) = h;
        }
#endif
    }
};

#if defined(RF_AMD_MATRIX)
// Float weights (F32, F16, BF16) on AMD matrix cores. A chunk inside the row, in rows 16-byte
// aligned, is read with 16-byte loads: F16 and BF16 weights are their own operands (bf16
// weights take bf16 products), F32 ones are rounded to f16. Other chunks (a ragged end,
// unaligned rows) go two values at a time through a loop the compiler keeps rolled: unrolled,
// its 32 predicated loads' addresses stay live across the products and spill.
template <class T>
struct MmaWTileFloat {
    const u8* row;
    int bj, bc, chunks;
    bool ok, a16;
    u32 h[16];  // operand pairs
    __device__ MmaWTileFloat(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        bj = tid % MMA_BN;
        bc = tid / MMA_BN;
        ok = n0 + bj < n;
        row = w + (i64)(ok ? n0 + bj : 0) * row_bytes;
        chunks = (k + 31) / 32;
        a16 = ((row_bytes | (i64)(u64)w) & 15) == 0;
    }
    __device__ u32 value(int e, int k) const {
        if (!ok || e >= k) return 0u;
        if constexpr (T::BYTES == 4) return rf_float_to_half(((const float*)row)[e]);
        return ((const u16*)row)[e];
    }
    __device__ void load(int step, int k) {
        const int c = step * (MMA_BK / 32) + bc;
        if (ok && a16 && 32 * c + 32 <= k) {
            if constexpr (T::BYTES == 4) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float4 v = ((const float4*)(row + 128 * (i64)c))[i];
                    h[2 * i] = rf_pack_half2(v.x, v.y);
                    h[2 * i + 1] = rf_pack_half2(v.z, v.w);
                }
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const uint4 v = ((const uint4*)(row + 64 * (i64)c))[i];
                    h[4 * i] = v.x;
                    h[4 * i + 1] = v.y;
                    h[4 * i + 2] = v.z;
                    h[4 * i + 3] = v.w;
                }
            }
        } else {
#pragma unroll 1
            for (int i = 0; i < 16; ++i) {
                const u32 pair = value(32 * c + 2 * i, k) | (value(32 * c + 2 * i + 1, k) << 16);
#pragma unroll
                for (int j = 0; j < 15; ++j) h[j] = h[j + 1];  // shifted in: no dynamic register index
                h[15] = pair;
            }
        }
    }
    __device__ void store(u16* bs) const {
        uint4* b = (uint4*)(bs + bj * MMA_LD + 32 * bc);
#pragma unroll
        for (int i = 0; i < 4; ++i) b[i] = make_uint4(h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]);
    }
};
template <>
struct MmaWTile<WF32> : MmaWTileFloat<WF32> {
    using MmaWTileFloat<WF32>::MmaWTileFloat;
};
template <>
struct MmaWTile<WF16> : MmaWTileFloat<WF16> {
    using MmaWTileFloat<WF16>::MmaWTileFloat;
};
template <>
struct MmaWTile<WBF16> : MmaWTileFloat<WBF16> {
    using MmaWTileFloat<WBF16>::MmaWTileFloat;
};
#endif

// Q4_0 and Q8_0 tiles: the f16 products of their quants and f16 scale, two at a time (f16x2
// arithmetic, no conversion instruction): an integer c (0 <= c < 1024) set into the low bits of
// the f16 1024 is the f16 1024 + c, so one subtraction gives the quant exactly, and one
// multiplication rounds the product once, as the f32 product (exact) rounded to f16 does: the
// same bits as converting each value.
// Bytes 2j and 2j + 1 of w in the low bytes of a u32's two halves, the other bytes zero.
__device__ __forceinline__ u32 rf_byte_pair(u32 w, int j) {
#if defined(RF_PRMT)
    return __byte_perm(w, 0u, j ? 0x4342u : 0x4140u);
#else
    return ((w >> (16 * j)) & 0xffu) | (((w >> (16 * j + 8)) & 0xffu) << 16);
#endif
}

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
            const u32 s = d[v] | (d[v] << 16);
            const u32 w[4] = {q[v].x, q[v].y, q[v].z, q[v].w};
            u32 h[8];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    // b + 128 in the low 10 bits of the f16 1024: 1152 + b, less 1152 (0x6480)
                    const u32 u = rf_byte_pair(w[i], j) ^ 0x00800080u;
                    h[2 * i + j] = rf_h2_mul(rf_h2_sub(u | 0x64006400u, 0x64806480u), s);
                }
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
        const u32 s = d | (d << 16);
        const u32 w[4] = {q.x, q.y, q.z, q.w};
        u32 lo[8], hi[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                // a nibble c in the low bits of the f16 1024: 1024 + c, less 1032 (0x6408)
                const u32 u = rf_byte_pair(w[i], j);
                lo[2 * i + j] = rf_h2_mul(rf_h2_sub((u & 0x000f000fu) | 0x64006400u, 0x64086408u), s);
                hi[2 * i + j] = rf_h2_mul(rf_h2_sub(((u >> 4) & 0x000f000fu) | 0x64006400u, 0x64086408u), s);
            }
        }
        uint4* b = (uint4*)(bs + r * MMA_LD + 32 * half);
        b[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
        b[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
        b[2] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
        b[3] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
    }
};

// The types with super-blocks of the decode matvec family (Q4_K, Q5_K, Q6_K, IQ4_XS; quants.h):
// a step covers two pieces of each row; thread tid takes piece half = tid % 2 of row tid / 2
// (one 16-byte load: a warp reads 16 rows' 32 consecutive bytes), and with it the piece's
// `Aux` (its scales, mins, high bits). `load` is straight-line code, so that nothing in it
// waits for its loads before the products: a piece out of range reads piece 0 (of row 0 past
// the last row) and is zeroed at the store, where `values` decodes it.
template <class T>
struct MmaWTilePiece {
    const u8* row;
    int r, half, pieces;
    bool ok, a16, live;
    uint4 q;
    typename T::Aux a;
    __device__ MmaWTilePiece(const u8* w, int n0, int n, int k, i64 row_bytes, int tid) {
        r = tid / 2;
        half = tid % 2;
        pieces = k / 32;
        a16 = ((row_bytes | (i64)(u64)w) & 15) == 0;
        ok = n0 + r < n;
        row = w + (i64)(ok ? n0 + r : 0) * row_bytes;
    }
    __device__ void load(int step, int k) {
        const int c = step * 2 + half;
        live = ok && c < pieces;
        const int p = live ? c : 0;
        q = rf_ld128_a2(row + (i64)p * 16, a16);
        // Q6_K rows of an odd number of super-blocks are only 2-byte aligned.
        if constexpr (T::BYTES % 4 == 0) {
            a = T::aux(row, typename T::At(p, k));
        } else {
            a = T::aux_a2(row, typename T::At(p, k));
        }
    }
    __device__ void store(u16* bs) const {
        float y[32];
        T::values(q, a, y);
        u32 h[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) h[i] = live ? rf_pack_half2(y[2 * i], y[2 * i + 1]) : 0u;
        uint4* b = (uint4*)(bs + r * MMA_LD + 32 * half);
#pragma unroll
        for (int i = 0; i < 4; ++i) b[i] = make_uint4(h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]);
    }
};
template <>
struct MmaWTile<WQ4_K> : MmaWTilePiece<WQ4_K> {
    using MmaWTilePiece<WQ4_K>::MmaWTilePiece;
};
template <>
struct MmaWTile<WQ5_K> : MmaWTilePiece<WQ5_K> {
    using MmaWTilePiece<WQ5_K>::MmaWTilePiece;
};
template <>
struct MmaWTile<WQ6_K> : MmaWTilePiece<WQ6_K> {
    using MmaWTilePiece<WQ6_K>::MmaWTilePiece;
};
template <>
struct MmaWTile<WIQ4_XS> : MmaWTilePiece<WIQ4_XS> {
    using MmaWTilePiece<WIQ4_XS>::MmaWTilePiece;
};

template <class T, int BM>
__device__ __forceinline__ void matmul_mma(const u16* __restrict__ xh, const float* __restrict__ inv,
                                           const u8* __restrict__ w, float* __restrict__ out, int m, int n,
                                           int k, int kp, i64 row_bytes) {
#if defined(RF_AMD_MATRIX)
    // Waves of RF_WARP lanes in a 2 (rows) x WGN (columns) grid, each a WM x WN tile of
    // 16 x 16 products (mma.h's AMD forms).
    constexpr int WGN = 256 / RF_WARP / 2, WM = BM / 2, WN = MMA_BN / WGN;
    constexpr int MT = WM / 16, NT = WN / 16, CE = RF_FRAG_C;
    const int tid = threadIdx.x, lane = tid % RF_WARP, warp = tid / RF_WARP;
    const int wm = warp / WGN, wn = warp % WGN;
#else
    constexpr int WM = BM / 2, WN = 32, MT = WM / 16, NT = 4, CE = 4;  // warp tile: WM x 32
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
#endif
    constexpr int A_VECS = BM * (MMA_BK / 8) / 256;     // 16-byte pieces of the xh tile per thread
    extern __shared__ uint4 mma_smem[];
    u16* const as = (u16*)mma_smem;                     // [2][BM][MMA_LD]
    u16* const bs = as + 2 * BM * MMA_LD;               // [2][MMA_BN][MMA_LD]
    const int n0 = blockIdx.x * MMA_BN, m0 = blockIdx.y * BM;
    const int steps = kp / MMA_BK;
    MmaWTile<T> wt(w, n0, n, k, row_bytes, tid);

    float acc[MT][NT][CE];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < CE; ++e) acc[i][j][e] = 0.0f;

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
        const u16* b = bs + buf * MMA_BN * MMA_LD + (wn * WN) * MMA_LD;
#if defined(RF_AMD_MATRIX)
#pragma unroll 1
#else
#pragma unroll
#endif
        for (int kk = 0; kk < MMA_BK; kk += 16) {
#if defined(RF_AMD_MATRIX)
            u32 af[MT][RF_FRAG_WORDS], bf[NT][RF_FRAG_WORDS];
#pragma unroll
            for (int i = 0; i < MT; ++i) rf_frag_load(af[i], a + 16 * i * MMA_LD + kk, MMA_LD, lane);
#pragma unroll
            for (int j = 0; j < NT; ++j) rf_frag_load(bf[j], b + 16 * j * MMA_LD + kk, MMA_LD, lane);
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) rf_matrix_16x16x16<mma_bf16<T>()>(acc[i][j], af[i], bf[j]);
#else
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
#endif
        }
        if (more) store(buf ^ 1);
        __syncthreads();
    }

#if defined(RF_AMD_MATRIX)
#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int e = 0; e < CE; ++e) {
            const int row = m0 + wm * WM + 16 * i + rf_frag_c_row(e, lane);
            if (row < m) {
                const float sc = inv[row];
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    const int col = n0 + wn * WN + 16 * j + (lane & 15);
                    if (col < n) out[(i64)row * n + col] = acc[i][j][e] * sc;
                }
            }
        }
    }
#else
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
#endif
}

#define RF_MATMUL_MMA_KERNEL(suffix, T, BM)                                                       \
    RF_KERNEL void RF_LAUNCH_BOUNDS(256) matmul_mma_##suffix##_m##BM(                              \
        const u16* xh, const float* inv, const u8* w, float* out, int m, int n, int k, int kp,      \
        i64 row_bytes) {                                                                          \
        matmul_mma<T, BM>(xh, inv, w, out, m, n, k, kp, row_bytes);                               \
    }
#define RF_MATMUL_MMA_M64(suffix, T) RF_MATMUL_MMA_KERNEL(suffix, T, 64)
#define RF_MATMUL_MMA_M128(suffix, T) RF_MATMUL_MMA_KERNEL(suffix, T, 128)
// AMD: the matrix-core targets only, and the 64-row tile only (the 128-row one needs 72 KiB of
// shared memory, more than the 64 KiB of an AMD workgroup).
#if !defined(__AMDGCN__) || defined(RF_AMD_MATRIX)
RF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_MMA_M64)
#endif
#if !defined(__AMDGCN__)
RF_FOR_EACH_WEIGHT_TYPE(RF_MATMUL_MMA_M128)
#endif
