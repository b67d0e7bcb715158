// matvec.hip: the decode matrix-vector products (m = 1) of every quantized type the family
// takes (quants.h: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K IQ4_NL IQ4_XS), with x quantized
// to 8 bits.
//
//   out = epilogue(x @ W^T), W [n, k] kept in its type in the device layout (quants.h), x [k]
//   float32. A type gives its 16-byte piece (VALUES values of x), what the piece needs besides
//   its quants (`aux`) and the piece's integer dot product with 8-bit x (`dot`); the two cores
//   and the epilogues below never name a type. Every kernel takes one `MatvecArgs` by value.
//   The instances (type, rows per block, core, epilogue, launch bounds) are listed once, in
//   src/device/matvec_table.rs; build.rs writes them into matvec_instances.h.
//
// 8-bit x: after loading its x values, a thread quantizes each piece once for all its rows:
//   d = max|x| / 127 (a NaN kept, so that it reaches the result), q = x * 127 / max|x| rounded
//   to the nearest integer (ties to even, one fma with 1.5 x 2^23), 4 values a word. A row's
//   piece then adds `Q::dot`: the integer products times the scales, offsets and mins with the
//   sums of q (llama.cpp's vec_dot_*_q8_1, except that x's scale stays float32).
//
// RMS norm of x (any epilogue, `norm`): 1, folded in by weight: x * norm_w takes x's place
//   and the block also sums x^2; the results are scaled by rsqrt(sum(x^2) / k + eps) (each
//   block then reads norm_w as well as x: the launcher uses it only where that traffic is
//   small). 2, handed over: x is already x * norm_w and sum(x^2) is the sum of the n_parts
//   floats at ss_parts, both written by the launch before (EpiProj with next_w), so the norm
//   costs neither a launch nor extra reads.
//
// The row-block core (`matvec_row_block`): a block of G x 32 threads (G = min(4, ceil(k /
//   1024)), chosen by the launcher) owns the R rows `Epi` picks and walks k in chunks of G x 32 x P pieces (P =
//   32 / VALUES, so that a thread holds 32 x values); thread t takes pieces chunk + j G 32 + t,
//   i.e. consecutive threads read consecutive 16-byte pieces. Per chunk a thread issues the
//   quant and aux loads of all rows first (one 16-byte load a piece where the rows are 16-byte
//   aligned, else four 4-byte words), calls rf_grid_wait after the first chunk's, then loads
//   its x once (float4), quantizes it and computes each row's dot products. Partials: a 32-lane
//   butterfly, then the G groups' sums in order through shared memory; each row's sum depends
//   only on k and the thread count, not on R. Launch: block G x 32, no dynamic shared memory.
//
// The streaming core (`matvec_stream_glu`, gate/up rows of 2048 values or more): the block's
//   threads span k once (thread t owns piece t of every row, at most 512 pieces a row), so each
//   thread loads and quantizes its x once and keeps it in registers for all its rows. Rows go
//   in groups of R (R / 2 gate rows and the same up rows), group g by block g mod grid
//   (persistent blocks, a few a multiprocessor); S groups' loads are in flight in a ring of
//   registers while one is summed. A 32-lane group's R partial sums are reduced by a
//   reduce-scatter butterfly (the same pairs added as by rf_group_sum), written to shared
//   memory, and summed over the block's 32-lane groups at the end. Rows 16-byte aligned (the
//   launcher takes the row-block core for others). Launch: grid (blocks), block ceil(pieces / 64) x
//   64, dynamic shared memory ceil(groups / blocks) x R x (block / 32) floats.
//
// Epilogues (row-block core; Glu also streaming), `mat[i]` = (w, out, bias, n):
//   EpiProj      up to three matrices of one type and k (q/k/v): the first ceil(n0 / R) blocks
//                take mat[0], the next mat[1], the rest mat[2]; out = y + bias (mode 0), out +=
//                (mode 1), or out += with out loaded before the wait for the kernel before (mode
//                2: for an out that no kernel wrote since the one before the kernel just
//                before, such as the decode step's residual stream; rf_grid_release comes after
//                rf_grid_wait everywhere, so those have completed). EmitNorm (next_w, one
//                matrix): also xw_out[row] = out[row] * next_w[row] and block b's sum of
//                out[row]^2 over its rows to ss_out[b], the next norm's input (ss_parts).
//   EpiGlu       gate = mat[0], up = mat[1] (R rows of each a block, 2R in flight), out =
//                act(g) * u into mat[0].out; act (mode) 0: SiLU g / (1 + exp(-g)), 1: GELU
//                0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3))), activation.hip's forms.
//   EpiQkvRope   q = mat[0], k = mat[1], v = mat[2] (+ biases); q and k rows turned as rope_kv
//                turns them (rope.h, n_rot = head_dim) at position p0 = pos[0], q stored to
//                mat[0].out, k and v to row p0 of the caches ([n_ctx, n_kv], float32 or fp16
//                bits). Only the host writes the position, before the step, so it is read and
//                the rotation's cos and sin computed before the wait. A block owns R rows that
//                hold both halves of each rope pair it turns: R consecutive rows for neox = 0
//                (pairs 2i, 2i + 1) and for v; for neox = 1 (pairs i, i + head_dim / 2) R / 2
//                consecutive rows of each half of a head; the R results go through shared
//                memory. Needs head_dim % R == 0, R even. Grid (nq + 2 nkv) / R.
#include "quants.h"
#include "rope.h"

#define MV_GROUPS 4

// One matrix of a launch.
struct MatvecMat {
    const u8* w;        // [n, k] in the device layout, rows of row_bytes
    float* out;         // [n]
    const float* bias;  // [n], or null
    int n, pad;
};

// The arguments of every kernel of this file (mirrored by `MatvecArgs` in src/ops/matmul/gpu.rs).
struct MatvecArgs {
    const float* x;         // [k]
    const float* norm_w;    // norm 1: [k], the RMS norm's weight, folded in (else any pointer)
    const float* ss_parts;  // norm 2: n_parts sums of squares, the norm handed over (x is x * w)
    i64 row_bytes;
    int k, n_parts;
    float eps;
    int mode;  // EpiProj: 0 out =, 1 out +=, 2 out += loaded early; EpiGlu: 0 SiLU, 1 GELU
    MatvecMat mat[3];
    const float* next_w;  // EmitNorm: [n0], or null
    float* xw_out;        // [n0]
    float* ss_out;        // [blocks]
    void* k_cache;        // EpiQkvRope: [n_ctx, n1] of float or u16 (fp16 bits)
    void* v_cache;
    const int* pos;             // the step's position
    const float* freq_factors;  // [head_dim / 2], or null
    int head_dim, neox;
    float theta;
    int norm;  // the RMS norm of x: 0 none, 1 by weight (norm_w), 2 handed over (ss_parts)
};
static_assert(sizeof(MatvecArgs) == 216 && alignof(MatvecArgs) == 8, "MatvecArgs: see gpu.rs");

// The argument struct's pointers as the kernels take them. rf_global(p), p not null: p
// points to global memory (NVIDIA: pointers inside a struct parameter are otherwise generic,
// and generic loads are not the global loads that scalar pointer parameters give). rf_pick(v):
// v opaque, so that a field picked at run time (by a block's matrix) is a pick of loaded
// values, not a load from a picked address in parameter space (more instructions).
template <class T>
__device__ __forceinline__ T* rf_global(T* p) {
#if defined(RF_CUDA)
    __builtin_assume(__isGlobal(p));
#endif
    return p;
}
template <class T>
__device__ __forceinline__ T rf_pick(T v) {
#if defined(RF_CUDA)
    if constexpr (sizeof(T) == 8) {
        asm volatile("" : "+l"(v));
    } else {
        asm volatile("" : "+r"(v));
    }
#endif
    return v;
}

// 16 bytes at p (16-byte aligned when aligned16, else 4-byte aligned).
__device__ __forceinline__ uint4 rf_ld128_a4(const u8* p, bool aligned16) {
    if (aligned16) return *(const uint4*)p;
    return make_uint4(rf_ld32_a4(p), rf_ld32_a4(p + 4), rf_ld32_a4(p + 8), rf_ld32_a4(p + 12));
}

// rf_ld128_a4, read-only and not kept in L1 (NVIDIA sm_80+: ld.global.nc with L1::no_allocate):
// for the kernels that read their weights in several passes (the uncapped 16-row Proj forms,
// which the launchers take for rows longer than a block's one pass, and the streaming core);
// the one-pass register-capped forms were slower with it (docs/perf).
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

// max(m, |v|) that keeps a NaN (of m or v): a NaN in x must reach the result.
__device__ __forceinline__ float rf_absmax_nan(float m, float v) {
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(fabsf(v)));
    return r;
#else
    // As unsigned integers, the bits of non-negative floats order as their values, and every
    // NaN's (|NaN|: exponent all ones, mantissa not zero) above infinity's: one integer max,
    // where a float compare for NaN would keep a lane mask per value live (scalar registers).
    const u32 a = (u32)__float_as_int(v) & 0x7fffffffu, b = (u32)__float_as_int(m);
    return __int_as_float((int)(a > b ? a : b));
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

// x (W words of float4: a piece) to 8 bits: xq, the X sums of xq over equal parts, its scale.
template <int W, int X>
__device__ __forceinline__ void rf_quantize_x(const float4 (&xv)[W], int (&xq)[W], int (&sx)[X], float& dx) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < W; ++i) {
        amax = rf_absmax_nan(amax, xv[i].x);
        amax = rf_absmax_nan(amax, xv[i].y);
        amax = rf_absmax_nan(amax, xv[i].z);
        amax = rf_absmax_nan(amax, xv[i].w);
    }
    const float inv = amax != 0.0f ? 127.0f / amax : 0.0f;
    dx = amax / 127.0f;
#pragma unroll
    for (int s = 0; s < X; ++s) sx[s] = 0;
#pragma unroll
    for (int i = 0; i < W; ++i) {
        xq[i] = rf_q8_word(xv[i], inv);
        sx[i / (W / X)] = rf_dp4a(xq[i], 0x01010101, sx[i / (W / X)]);
    }
}

__device__ __forceinline__ float rf_act(float g, int gelu) {
    if (gelu) return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    return g / (1.0f + expf(-g));
}

// ------------------------------------------------------------------------------ the row-block core

// The dot products of x with R rows by the whole block: on return (after a barrier)
// mv_total(partial, r) is row r's result; with a norm (norm_w or ss_parts not null),
// mv_total(partial, R) is sum(x^2) (the callers scale by rsqrt(sum(x^2) / k + eps)).
template <class Q, int R, bool NA>
__device__ __forceinline__ void mv_row_block_sums(const float* __restrict__ x, const float* __restrict__ norm_w,
                                             const float* ss_parts, int n_parts, const u8* const (&rows)[R],
                                             int k, float (&partial)[MV_GROUPS][R + 1]) {
    constexpr int P = 32 / Q::VALUES, XW = Q::VALUES / 4;
    const int tid = threadIdx.x, lane = tid & 31, group = tid >> 5;
    const int threads = blockDim.x;
    const int pieces = k / Q::VALUES;
    bool aligned16 = true;
#pragma unroll
    for (int r = 0; r < R; ++r) aligned16 = aligned16 && (((unsigned long long)rows[r] & 15ull) == 0);
    float acc[R], ss = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    for (int c = 0; c < pieces; c += threads * P) {
        float4 xv[P][XW];
        uint4 q[R][P];
        typename Q::Aux aux[R][P];
#pragma unroll
        for (int j = 0; j < P; ++j) {
            const int p = c + j * threads + tid;
            if (p < pieces) {
                const typename Q::At at(p, k, RfLaneOffset());
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    q[r][j] = NA ? rf_ld128_a4_na(rows[r] + (i64)p * 16, aligned16)
                                 : rf_ld128_a4(rows[r] + (i64)p * 16, aligned16);
                    aux[r][j] = Q::aux(rows[r], at);
                }
            }
        }
        if (c == 0) {
            rf_grid_wait();  // the first weights are on their way; x may come from the last kernel
            rf_grid_release();
            if (ss_parts != nullptr) {
                // x is already x * norm_w; sum(x^2) comes as the last kernel's per-block sums,
                // loaded with x by all threads (a few each, independent loads).
#pragma unroll 4
                for (int i = tid; i < n_parts; i += threads) ss += ss_parts[i];
            }
        }
#pragma unroll
        for (int j = 0; j < P; ++j) {
            const int p = c + j * threads + tid;
            if (p < pieces) {
                const float4* xp = (const float4*)(rf_after_wait(x) + (i64)p * Q::VALUES);
#pragma unroll
                for (int i = 0; i < XW; ++i) xv[j][i] = xp[i];
            }
        }
        if (norm_w != nullptr) {
#pragma unroll
            for (int j = 0; j < P; ++j) {
                const int p = c + j * threads + tid;
                if (p < pieces) {
                    const float4* gp = (const float4*)(norm_w + (i64)p * Q::VALUES);
#pragma unroll
                    for (int i = 0; i < XW; ++i) {
                        const float4 g = gp[i];
                        float4& v = xv[j][i];
                        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                        v = make_float4(v.x * g.x, v.y * g.y, v.z * g.z, v.w * g.w);
                    }
                }
            }
        }
        // x to 8 bits, once per piece for all rows
        int xq[P][XW], sx[P][Q::X_SUMS];
        float dx[P];
#pragma unroll
        for (int j = 0; j < P; ++j) rf_quantize_x<XW, Q::X_SUMS>(xv[j], xq[j], sx[j], dx[j]);
#pragma unroll
        for (int j = 0; j < P; ++j) {
            if (c + j * threads + tid < pieces) {
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r] += Q::dot(q[r][j], aux[r][j], xq[j], sx[j], dx[j]);
            }
        }
    }
    if (pieces <= 0) rf_grid_wait();  // (the loop waits before its first x load)
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float v = rf_group_sum<32>(acc[r]);
        if (lane == 0) partial[group][r] = v;
    }
    if (norm_w != nullptr || ss_parts != nullptr) {
        const float v = rf_group_sum<32>(ss);
        if (lane == 0) partial[group][R] = v;
    }
    __syncthreads();
}

template <int R>
__device__ __forceinline__ float mv_total(const float (&partial)[MV_GROUPS][R + 1], int r) {
    const int groups = blockDim.x >> 5;
    float v = partial[0][r];
    for (int g = 1; g < groups; ++g) v += partial[g][r];
    return v;
}

// The norm's inputs the cores take: the weight (norm 1) or the handed-over sums (norm 2),
// else null. (The struct holds valid pointers in both fields: so they can be declared global.)
__device__ __forceinline__ const float* mv_norm_w(const MatvecArgs& a) {
    return a.norm == 1 ? rf_global(a.norm_w) : nullptr;
}
__device__ __forceinline__ const float* mv_ss_parts(const MatvecArgs& a) {
    return a.norm == 2 ? rf_global(a.ss_parts) : nullptr;
}

// The norm's scale of the sums (1 without a norm).
template <int R>
__device__ __forceinline__ float mv_norm_scale(const MatvecArgs& a, const float (&partial)[MV_GROUPS][R + 1]) {
    return rsqrtf(mv_total<R>(partial, R) / (float)a.k + a.eps);
}

// A row-block kernel: the epilogue picks the block's Epi::ROWS rows and loads what its end takes
// (before the sums' wait), the core sums them, the epilogue writes.
template <class Q, int R, class Epi, bool NA>
__device__ __forceinline__ void matvec_row_block(const MatvecArgs& a) {
    constexpr int ROWS = Epi::template Rows<R>::value;
    __shared__ float partial[MV_GROUPS][ROWS + 1];
    Epi e;
    const u8* rows[ROWS];
    e.template begin<R>(a, rows);
    mv_row_block_sums<Q, ROWS, NA>(a.x, mv_norm_w(a), mv_ss_parts(a), a.n_parts, rows, a.k, partial);
    e.template end<R>(a, partial);
}

struct EpiProj {
    template <int R>
    struct Rows {
        static constexpr int value = R;
    };
    float* out;
    int row;
    bool mine;
    float bias_v, next_w, early;
    template <int R>
    __device__ __forceinline__ void begin(const MatvecArgs& a, const u8* (&rows)[R]) {
        int b = blockIdx.x;
        const int nb0 = (a.mat[0].n + R - 1) / R, nb1 = (a.mat[1].n + R - 1) / R;
        const u8* w = rf_pick(a.mat[0].w);
        const float* bias = rf_pick(a.mat[0].bias);
        int n = rf_pick(a.mat[0].n);
        out = rf_pick(a.mat[0].out);
        if (b >= nb0 + nb1) {
            b -= nb0 + nb1;
            w = rf_pick(a.mat[2].w), out = rf_pick(a.mat[2].out), bias = rf_pick(a.mat[2].bias);
            n = rf_pick(a.mat[2].n);
        } else if (b >= nb0) {
            b -= nb0;
            w = rf_pick(a.mat[1].w), out = rf_pick(a.mat[1].out), bias = rf_pick(a.mat[1].bias);
            n = rf_pick(a.mat[1].n);
        }
        w = rf_global(w);
        out = rf_global(out);
        const int row0 = b * R;
#pragma unroll
        for (int r = 0; r < R; ++r) rows[r] = w + (i64)min(row0 + r, n - 1) * a.row_bytes;
        row = row0 + (int)threadIdx.x;
        mine = (int)threadIdx.x < R && row < n;
        // What this thread's row takes at the end, loaded now (before the sums' wait for the
        // kernel before): not a round trip after the sums.
        bias_v = (mine && bias != nullptr) ? rf_global(bias)[row] : 0.0f;
        next_w = (mine && a.xw_out != nullptr) ? rf_global(a.next_w)[row] : 0.0f;
        early = (mine && a.mode == 2) ? rf_ld_l2(out + row) : 0.0f;
    }
    template <int R>
    __device__ __forceinline__ void end(const MatvecArgs& a, const float (&partial)[MV_GROUPS][R + 1]) {
        float o = 0.0f;
        if (mine) {
            float v = mv_total<R>(partial, threadIdx.x);
            if (a.norm != 0) v *= mv_norm_scale<R>(a, partial);
            v += bias_v;
            o = a.mode == 2 ? early + v : a.mode ? out[row] + v : v;
            out[row] = o;
            if (a.xw_out != nullptr) rf_global(a.xw_out)[row] = o * next_w;
        }
        if (a.ss_out != nullptr && threadIdx.x < 32) {  // the first 32 lanes (R <= 16): sum(o^2)
            const float s = rf_group_sum<32>(o * o);
            if (threadIdx.x == 0) rf_global(a.ss_out)[blockIdx.x] = s;
        }
    }
};

struct EpiGlu {
    template <int R>
    struct Rows {
        static constexpr int value = 2 * R;
    };
    int row;
    template <int R>
    __device__ __forceinline__ void begin(const MatvecArgs& a, const u8* (&rows)[2 * R]) {
        const int row0 = blockIdx.x * R, n = a.mat[0].n;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const i64 off = (i64)min(row0 + r, n - 1) * a.row_bytes;
            rows[r] = rf_global(a.mat[0].w) + off;
            rows[R + r] = rf_global(a.mat[1].w) + off;
        }
        row = row0 + (int)threadIdx.x;
    }
    template <int R>
    __device__ __forceinline__ void end(const MatvecArgs& a, const float (&partial)[MV_GROUPS][2 * R + 1]) {
        constexpr int R2 = 2 * R;
        if ((int)threadIdx.x < R && row < a.mat[0].n) {
            float g = mv_total<R2>(partial, threadIdx.x);
            float u = mv_total<R2>(partial, R + threadIdx.x);
            if (a.norm != 0) {
                const float inv_rms = mv_norm_scale<R2>(a, partial);
                g *= inv_rms;
                u *= inv_rms;
            }
            rf_global(a.mat[0].out)[row] = rf_act(g, a.mode) * u;
        }
    }
};

template <class C>
struct EpiQkvRope {
    template <int R>
    struct Rows {
        static constexpr int value = R;
    };
    int which, row, p0;  // which: 0 q, 1 k, 2 v
    float bias_v, c, s;
    template <int R>
    __device__ __forceinline__ void begin(const MatvecArgs& a, const u8* (&rows)[R]) {
        int b = blockIdx.x;
        const int nbq = a.mat[0].n / R, nbk = a.mat[1].n / R;
        which = 0;
        const u8* w = rf_pick(a.mat[0].w);
        const float* bias = rf_pick(a.mat[0].bias);
        if (b >= nbq + nbk) {
            b -= nbq + nbk;
            which = 2, w = rf_pick(a.mat[2].w), bias = rf_pick(a.mat[2].bias);
        } else if (b >= nbq) {
            b -= nbq;
            which = 1, w = rf_pick(a.mat[1].w), bias = rf_pick(a.mat[1].bias);
        }
        w = rf_global(w);
        const int head_dim = a.head_dim, neox = a.neox;
        const bool split = which < 2 && neox;  // rows from both halves of a head
        const int per_head = head_dim / R;
        const int head = b / per_head, j = b - head * per_head;
        const int half = head_dim / 2;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int row = split ? head * head_dim + (r < R / 2 ? j * (R / 2) + r : half + j * (R / 2) + r - R / 2)
                                  : b * R + r;
            rows[r] = w + (i64)row * a.row_bytes;
        }
        const int r = (int)threadIdx.x;
        const bool mine = r < R;
        row = !mine ? 0
              : split ? head * head_dim + (r < R / 2 ? j * (R / 2) + r : half + j * (R / 2) + r - R / 2)
                      : b * R + r;
        // What the end takes besides the sums, loaded and computed before the sums' wait: the
        // bias, the position (written by the host before the step, never by a kernel of it)
        // and the rotation's cos and sin (pair i of the row's head).
        bias_v = (mine && bias != nullptr) ? rf_global(bias)[row] : 0.0f;
        p0 = mine ? rf_global(a.pos)[0] : 0;
        const int dim = row - (row / head_dim) * head_dim;
        const int pair = neox ? (dim < half ? dim : dim - half) : dim >> 1;
        c = 1.0f;
        s = 0.0f;
        if (mine && which < 2) {
            const float factor = a.freq_factors != nullptr ? rf_global(a.freq_factors)[pair] : 1.0f;
            rf_rope_cs_at((double)p0, rf_rope_inv_freq(pair, head_dim, a.theta),
                          a.freq_factors != nullptr ? &factor : nullptr, &c, &s);
        }
    }
    template <int R>
    __device__ __forceinline__ void end(const MatvecArgs& a, const float (&partial)[MV_GROUPS][R + 1]) {
        __shared__ float result[R];
        const int r = (int)threadIdx.x;
        const bool mine = r < R;
        float v = 0.0f;
        if (mine) {
            v = mv_total<R>(partial, r);
            if (a.norm != 0) v *= mv_norm_scale<R>(a, partial);
            v += bias_v;
            result[r] = v;
        }
        __syncthreads();
        if (!mine) return;
        const i64 cache_row = (i64)p0 * a.mat[1].n;
        if (which == 2) {
            rf_kv_store((C*)rf_global(a.v_cache) + cache_row + row, v);
            return;
        }
        const bool first = a.neox ? r < R / 2 : (r & 1) == 0;  // the pair's x0
        const float other = result[a.neox ? (r + R / 2) % R : r ^ 1];
        const float x0 = first ? v : other, x1 = first ? other : v;
        const float y = first ? x0 * c - x1 * s : x0 * s + x1 * c;
        if (which == 0) {
            rf_global(a.mat[0].out)[row] = y;
        } else {
            rf_kv_store((C*)rf_global(a.k_cache) + cache_row + row, y);
        }
    }
};

// ------------------------------------------------------------------------- the streaming core

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
// returns this thread's share of sum(x^2) where there is a norm (else 0). The
// caller sums part over the groups after a barrier. S: groups whose loads are in flight
// (S - 1 loaded ahead of the one being summed), in a ring of registers. Rows 16-byte aligned
// (the launcher takes the row-block core for others).
template <class Q, int R, int S>
__device__ __forceinline__ float mv_stream_core(const float* __restrict__ x, const float* __restrict__ norm_w,
                                                const float* ss_parts, int n_parts, const StreamRows<R>& rows,
                                                int groups, int k, float* part) {
    static_assert(S >= 2, "at least one group loaded ahead");
    constexpr int XW = Q::VALUES / 4;  // float4s (and 8-bit words) of x a piece
    const int tid = threadIdx.x, lane = tid & 31, group = tid >> 5, nwarps = blockDim.x >> 5;
    const int pieces = k / Q::VALUES;
    const int p = tid;
    const bool active = p < pieces;
    const i64 qoff = (i64)p * 16;
    const typename Q::At at(p, k);
    uint4 q[S][R];
    typename Q::Aux aux[S][R];
#pragma unroll
    for (int j = 0; j < S - 1; ++j) {
        const int g = blockIdx.x + j * gridDim.x;
        if (active && g < groups) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const u8* w = rows.row(g, r);
                q[j][r] = rf_ld128_a4_na(w + qoff, true);
                aux[j][r] = Q::aux(w, at);
            }
        }
    }
    rf_grid_wait();  // the first weights are on their way; x may come from the last kernel
    rf_grid_release();
    float ss = 0.0f;
    if (ss_parts != nullptr) {
        for (int i = tid; i < n_parts; i += blockDim.x) ss += ss_parts[i];
    }
    int xq[XW], sx[Q::X_SUMS];
    float dx = 0.0f;
    if (active) {
        float4 xv[XW];
        const float4* xp = (const float4*)(rf_after_wait(x) + (i64)p * Q::VALUES);
#pragma unroll
        for (int i = 0; i < XW; ++i) xv[i] = xp[i];
        if (norm_w != nullptr) {
            const float4* gp = (const float4*)(norm_w + (i64)p * Q::VALUES);
#pragma unroll
            for (int i = 0; i < XW; ++i) {
                const float4 w = gp[i];
                float4& v = xv[i];
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                v = make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w);
            }
        }
        rf_quantize_x<XW, Q::X_SUMS>(xv, xq, sx, dx);
    } else {
#pragma unroll
        for (int i = 0; i < XW; ++i) xq[i] = 0;
#pragma unroll
        for (int s = 0; s < Q::X_SUMS; ++s) sx[s] = 0;
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
                    q[ln][r] = rf_ld128_a4_na(w + qoff, true);
                    aux[ln][r] = Q::aux(w, at);
                }
            }
            float v[R];
#pragma unroll
            for (int r = 0; r < R; ++r) v[r] = active ? Q::dot(q[j][r], aux[j][r], xq, sx, dx) : 0.0f;
            const float sum = rf_reduce_scatter32<R>(v, lane);
            if ((lane & (32 / R - 1)) == 0) part[(it * R + lane / (32 / R)) * nwarps + group] = sum;
        }
    }
}

// Row s of the block's rows (s = it R + r): the sum over the block's 32-lane groups.
__device__ __forceinline__ float mv_stream_total(const float* part, int s) {
    const int nwarps = blockDim.x >> 5;
    float v = 0.0f;
    for (int w = 0; w < nwarps; ++w) v += part[s * nwarps + w];
    return v;
}

// EpiGlu on the streaming core: R / 2 rows of each matrix a group.
template <class Q, int R, int S>
__device__ __forceinline__ void matvec_stream_glu(const MatvecArgs& a) {
    extern __shared__ float stream_part[];
    const int n = a.mat[0].n, k = a.k;
    const int groups = (n + R / 2 - 1) / (R / 2);
    const StreamRows<R> rows{rf_global(a.mat[0].w), rf_global(a.mat[1].w), n, a.row_bytes};
    float ss = mv_stream_core<Q, R, S>(a.x, mv_norm_w(a), mv_ss_parts(a), a.n_parts, rows, groups, k, stream_part);
    const bool normed = a.norm != 0;
    if (normed) ss = rf_block_sum(ss);
    else __syncthreads();
    const float scale = normed ? rsqrtf(ss / (float)k + a.eps) : 1.0f;
    const int its = (groups - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;
    for (int s = threadIdx.x; s < its * (R / 2); s += blockDim.x) {
        const int it = s / (R / 2), r = s % (R / 2);
        const int i = ((int)blockIdx.x + it * (int)gridDim.x) * (R / 2) + r;
        if (i >= n) continue;
        const float g = mv_stream_total(stream_part, it * R + r) * scale;
        const float u = mv_stream_total(stream_part, it * R + R / 2 + r) * scale;
        rf_global(a.mat[0].out)[i] = rf_act(g, a.mode) * u;
    }
}

// The kernels: one line each, generated from src/device/matvec_table.rs.
#include "matvec_instances.h"
